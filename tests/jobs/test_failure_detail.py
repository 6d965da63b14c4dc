"""A failed job says why where people look (issue 16 §2): the reason is its log's last line, and
its traceback is kept for those who may see every user's results, never shown to anyone else."""

from __future__ import annotations

import pytest
from django.test import Client

from jobs import launch
from jobs.models import JobLogLine, JobState
from jobs.permissions import Power
from jobs.states import TRACEBACK_MAX_CHARS, job_finish
from tests.conftest import grant_powers
from tests.jobs.factories import make_job
from tests.jobs.live import wait_for_job

live = pytest.mark.django_db(transaction=True)


def _result(user, job):
    client = Client()
    client.force_login(user)
    return client.get(f"/api/v1/jobs/{job.id}/result/")


@live
def test_a_failed_jobs_log_ends_with_the_reason_and_only_permitted_staff_get_the_traceback(
    celery_worker, make_user
):
    owner, stranger = make_user(), make_user()
    staff = grant_powers(make_user(is_staff=True), Power.VIEW_ALL_RESULTS)
    staff_without = grant_powers(make_user(is_staff=True), Power.VIEW_ALL_JOBS)
    job = launch.job_create(
        owner=owner, kind="simulate", params={"steps": 3, "step_ms": 0, "fail_at_step": 2}, rate_limit=False
    )
    final = wait_for_job(job.id, lambda j: j.is_final, timeout=30)
    assert final.state == JobState.FAILED

    last = JobLogLine.objects.filter(job_id=job.id).order_by("-seq").first()
    assert last is not None
    assert last.text.startswith("Failed (attempt 1 of 3): SimulatedFailure: "), last.text
    assert final.error in last.text

    seen = _result(staff, job).json()
    assert "Traceback (most recent call last)" in seen["traceback"]
    assert "simulate.py" in seen["traceback"] and "SimulatedFailure" in seen["traceback"]
    assert _result(owner, job).json()["traceback"] is None  # server detail: not the owner's
    assert _result(staff_without, job).status_code == 404
    assert _result(stranger, job).status_code == 404


@live
def test_a_traceback_is_kept_to_its_tail_so_a_deep_recursion_cannot_grow_the_row(make_user):
    job = make_job(owner=make_user(), state=JobState.RUNNING)
    long = "Traceback (most recent call last):\n" + "  frame\n" * 20_000 + "RecursionError: too deep"
    job_finish(job_id=job.id, state=JobState.FAILED, error="too deep", traceback=long)
    job.refresh_from_db()
    assert len(job.traceback) == TRACEBACK_MAX_CHARS
    assert job.traceback.endswith("RecursionError: too deep")
