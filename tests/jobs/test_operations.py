"""Operators' tools: schedules fired by a real beat, admin actions, retention."""

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import housekeeping, launch, schedules
from jobs.models import Job, JobSchedule, JobState, Upload
from notifications.models import Notification
from scripts.harness import celery_housekeeping
from tests.conftest import ManagedProcess
from tests.jobs.factories import make_job
from tests.jobs.live import wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def admin_client(make_user):
    admin = make_user(operator=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


def test_a_schedule_fires_in_beat_and_each_run_is_an_ordinary_job(
    celery_worker, server_env, make_user, settings
):
    settings.RUNBOARD_SCHEDULE_MIN_SECONDS = 1  # a run a second, to see several in the test
    owner = make_user()
    schedule = schedules.schedule_save(
        schedule=JobSchedule(
            name="every second",
            kind="simulate",
            params={"steps": 1, "step_ms": 0},
            owner=owner,
            every_seconds=1,
        )
    )
    assert schedule.periodic_task.task == "jobs.run_schedule"
    beat = ManagedProcess(
        "beat", [sys.executable, "-m", "celery", "-A", "dashboard", "beat", "--loglevel", "INFO"], server_env
    )
    # A schedule fires in the housekeeping process (its queue); the job runs on the session's worker.
    firing = celery_housekeeping("housekeeping", server_env, log_dir=Path(os.environ["RUNBOARD_VAR_DIR"]))
    try:
        deadline = time.monotonic() + 30
        while Job.objects.filter(owner=owner, state=JobState.SUCCEEDED).count() < 2:
            assert time.monotonic() < deadline, beat.log()[-3000:]
            time.sleep(0.2)
    finally:
        beat.stop()
        firing.stop()
    job = Job.objects.filter(owner=owner).first()
    assert job.kind == "simulate" and job.params == {
        "steps": 1,
        "step_ms": 0,
        "fail_at_step": None,
        "fail_attempts": 0,
    }
    assert JobSchedule.objects.get(pk=schedule.pk).last_job is not None


@pytest.mark.parametrize(
    ("kind", "params", "every", "cron", "field"),
    [
        ("nope", {}, 5, "", "kind"),
        ("simulate", {"steps": -1}, 5, "", "params"),
        ("simulate", {}, None, "", "every_seconds"),
        ("simulate", {}, 5, "0 3 * * *", "every_seconds"),
        ("simulate", {}, None, "every day", "crontab"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_field_named(kind, params, every, cron, field):
    with pytest.raises(ValidationError) as refused:
        schedules.schedule_validate(kind=kind, params=params, every_seconds=every, crontab=cron)
    assert field in refused.value.message_dict


def test_a_crontab_schedule_and_its_deletion_keep_beat_in_step(make_user):
    schedule = schedules.schedule_save(
        schedule=JobSchedule(
            name="nightly", kind="export_jobs", params={}, owner=make_user(), crontab="0 3 * * *"
        )
    )
    assert schedule.periodic_task.crontab.hour == "3"
    periodic_id = schedule.periodic_task_id
    schedules.schedule_delete(schedule=schedule)

    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(pk=periodic_id).exists()


def test_the_admin_launches_a_kind_for_selected_users_and_they_see_it(make_user):
    client = admin_client(make_user)
    alice, bob = make_user(), make_user()

    response = client.post(
        "/admin/auth/user/",
        {"action": "launch_for_users", "_selected_action": [alice.pk, bob.pk], "kind": "simulate",
         "params": '{"steps": 2, "step_ms": 0}'},
        follow=True,
    )  # fmt: skip

    assert "Launched simulate for 2 user(s)." in response.content.decode()
    assert {job.owner_id for job in Job.objects.all()} == {alice.pk, bob.pk}


def test_launching_for_users_from_the_admin_stays_within_each_users_launch_limit(make_user, settings):
    """45 launches for one user in 4 s went through, then locked the user out (a review)."""
    settings.RUNBOARD_LAUNCHES_PER_MINUTE = 2
    client = admin_client(make_user)
    alice = make_user()
    body = {"action": "launch_for_users", "_selected_action": [alice.pk], "kind": "simulate",
            "params": '{"steps": 1, "step_ms": 0}'}  # fmt: skip
    answers = [client.post("/admin/auth/user/", body, follow=True).content.decode() for _ in range(3)]
    assert "Launched simulate for 1 user(s)." in answers[1]
    assert "Launched simulate for 0 user(s); 1 not: at their launch limit." in answers[2]
    assert Job.objects.filter(owner=alice).count() == 2


def test_the_admin_cancels_and_retries_selected_jobs(make_user):
    client = admin_client(make_user)
    user = make_user()
    queued, failed = make_job(owner=user), make_job(owner=user, state=JobState.FAILED)

    client.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [queued.pk]})
    client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [failed.pk]})

    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    retry = Job.objects.get(retry_of=failed)
    assert retry.owner == user


def test_a_job_page_in_the_admin_links_its_celery_task_result(celery_worker, make_user):
    client = admin_client(make_user)
    job = launch.job_create(owner=make_user(), kind="simulate", params={"steps": 1, "step_ms": 0})
    wait_for_job(job.id, lambda j: j.is_final)
    deadline = time.monotonic() + 10
    while not TaskResult.objects.filter(task_id=job.celery_task_id).exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    page = client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert "/admin/django_celery_results/taskresult/" in page and "SUCCESS" in page


def test_retention_removes_old_finished_jobs_read_notifications_and_task_results(make_user, settings):
    settings.RUNBOARD_JOB_RETENTION_DAYS = 30
    settings.RUNBOARD_NOTIFICATION_RETENTION_DAYS = 30
    user = make_user()
    long_ago = timezone.now() - timedelta(days=40)
    old = make_job(owner=user, state=JobState.SUCCEEDED, finished_at=long_ago)
    recent = make_job(owner=user, state=JobState.SUCCEEDED)
    running = make_job(owner=user, state=JobState.RUNNING)
    read_old = Notification.objects.create(recipient=user, title="old read", read_at=long_ago)
    Notification.objects.filter(pk=read_old.pk).update(created_at=long_ago)
    unread_old = Notification.objects.create(recipient=user, title="old unread")
    Notification.objects.filter(pk=unread_old.pk).update(created_at=long_ago)
    TaskResult.objects.create(task_id="old-task", status="SUCCESS")
    TaskResult.objects.filter(task_id="old-task").update(date_done=long_ago)
    Upload.objects.create(owner=user, original_name="a.csv", size=1, file="uploads/none.csv")
    Upload.objects.filter(owner=user).update(created_at=long_ago)

    removed = housekeeping.retention_apply()

    assert removed["jobs"] == 1 and removed["notifications"] == 1 and removed["task_results"] == 1
    assert removed["uploads"] == 1
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}
    assert not Job.objects.filter(pk=old.pk).exists()
    assert Notification.objects.filter(pk=unread_old.pk).exists()  # unread stays until read
