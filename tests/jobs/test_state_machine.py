from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from jobs import housekeeping, runner, selectors, states
from jobs.models import Job, JobState
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db


def test_a_queued_job_starts_once(make_user):
    job = make_job(owner=make_user())

    assert states.job_start(job_id=job.id).state == JobState.RUNNING
    assert states.job_start(job_id=job.id) is None  # a duplicate delivery cannot start it again


@pytest.mark.parametrize("final", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_a_finished_job_never_moves_back_to_running(make_user, final):
    job = make_job(owner=make_user(), state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=final)

    assert states.job_start(job_id=job.id) is None
    assert states.job_heartbeat(job_id=job.id, current=1, total=2, message="late") is None
    job.refresh_from_db()
    assert job.state == final
    assert job.progress_message == ""


def test_a_job_finishes_exactly_once(make_user):
    job = make_job(owner=make_user(), state=JobState.RUNNING)

    first = states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result={"ok": True})
    late = states.job_finish(job_id=job.id, state=JobState.FAILED, error="late duplicate")

    assert first is not None and late is None
    job.refresh_from_db()
    assert (job.state, job.error, job.result) == (JobState.SUCCEEDED, "", {"ok": True})


def test_a_queued_job_cannot_succeed_without_running(make_user):
    job = make_job(owner=make_user())

    assert states.job_finish(job_id=job.id, state=JobState.SUCCEEDED) is None
    assert Job.objects.get(pk=job.id).state == JobState.QUEUED


def test_every_write_increases_the_version(make_user):
    job = make_job(owner=make_user())
    versions = [job.version]
    versions.append(states.job_start(job_id=job.id).version)
    versions.append(states.job_heartbeat(job_id=job.id, current=1, total=3, message="one")[0])
    versions.append(states.job_finish(job_id=job.id, state=JobState.SUCCEEDED).version)

    assert versions == sorted(set(versions)), versions


def test_the_database_rejects_a_final_state_without_a_finish_time(make_user):
    job = make_job(owner=make_user())
    with pytest.raises(IntegrityError):
        Job.objects.filter(pk=job.id).update(state=JobState.SUCCEEDED)


def test_the_reaper_fails_running_jobs_whose_worker_went_silent(make_user):
    owner = make_user()
    stale = make_job(owner=owner, state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=5))
    fresh = make_job(owner=owner, state=JobState.RUNNING)

    assert housekeeping.job_reap_stale(stale_after=60) == 1

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == JobState.FAILED and "Worker lost" in stale.error
    assert fresh.state == JobState.RUNNING


def test_a_rerunnable_job_the_reaper_requeues_keeps_its_lost_attempt_in_its_history(make_user, monkeypatch):
    """The attempts are grouped on the job (issue 14 §3): a lost worker's attempt is one too."""
    monkeypatch.setattr(runner, "_enqueue", lambda job, **_: True)
    job = make_job(
        owner=make_user(), state=JobState.RUNNING, kind="test_rerun", params={},
        heartbeat_at=timezone.now() - timedelta(minutes=5), attempts=1,
    )  # fmt: skip

    assert housekeeping.job_reap_stale(stale_after=60) == 1

    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    assert [(e["attempt"], e["retry_in"]) for e in job.attempt_errors] == [(1, 0)]
    assert job.attempt_errors[0]["error"].startswith("Worker lost")
    assert [step["state"] for step in selectors.job_payload(job)["timeline"]] == ["queued", "retrying"]


def test_only_queued_jobs_silent_past_the_requeue_limit_are_enqueued_again(make_user, monkeypatch, settings):
    settings.RUNBOARD_MAX_RUNNING_PER_USER = 1
    sent: list[str] = []
    monkeypatch.setattr(housekeeping, "_enqueue", lambda job, **_: sent.append(str(job.id)) or True)
    owner = make_user()
    long_ago = timezone.now() - timedelta(seconds=700)
    silent = make_job(owner=owner)
    make_job(owner=make_user())  # queued just now
    running = make_job(owner=owner, state=JobState.RUNNING)
    waiting = make_job(owner=owner)  # at its owner's cap: deferred, its message being retried
    Job.objects.filter(pk__in=[silent.pk, running.pk, waiting.pk]).update(enqueued_at=long_ago)

    assert isinstance(states.job_start(job_id=waiting.id), states.Deferred)
    assert housekeeping.job_requeue_lost(requeue_after=600) == 1
    assert sent == [str(silent.id)]
    # Once enqueued again it counts as fresh: the next pass leaves it alone.
    assert housekeeping.job_requeue_lost(requeue_after=600) == 0
