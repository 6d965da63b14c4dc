"""Launch jobs through the service and watch them on a real socket, run by a real Celery worker."""

import pytest

from jobs import launch
from jobs.models import Job, JobState
from tests.conftest import receive_json, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def updates_for(events, job_id):
    return [
        event["job"] for event in events if event["type"] == "job.update" and event["job"]["id"] == job_id
    ]


def is_final_update(job_id):
    return lambda e: e["type"] == "job.update" and e["job"]["id"] == job_id and e["job"]["state"] in (
        "succeeded", "failed", "cancelled")  # fmt: skip


def test_a_simulated_job_streams_increasing_versions_until_it_succeeds(celery_worker, ws_connect, make_user):
    user = make_user()
    ws = ws_connect(user=user)
    assert receive_json(ws)["type"] == "hello"
    snapshot = receive_json(ws)
    assert snapshot["type"] == "snapshot" and snapshot["jobs"] == [] and snapshot["unread_count"] == 0

    job = launch.job_create(owner=user, kind="simulate", params={"steps": 10, "step_ms": 50})
    updates = updates_for(receive_until(ws, is_final_update(str(job.id))), str(job.id))

    versions = [update["version"] for update in updates]
    assert versions == sorted(set(versions)), versions
    states = [update["state"] for update in updates]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"
    assert any(
        0 < update["progress"]["current"] < 10 for update in updates
    )  # live progress, not just the end
    assert updates[-1]["progress"] == {"current": 10, "total": 10, "message": "Step 10 of 10"}
    assert Job.objects.get(pk=job.id).state == JobState.SUCCEEDED


def test_fail_at_step_ends_failed_with_the_error_message(celery_worker, ws_connect, make_user):
    user = make_user()
    ws = ws_connect(user=user)

    job = launch.job_create(
        owner=user, kind="simulate", params={"steps": 5, "step_ms": 10, "fail_at_step": 3}
    )
    final = updates_for(receive_until(ws, is_final_update(str(job.id))), str(job.id))[-1]

    assert final["state"] == "failed"
    assert final["error"] == "Simulated failure at step 3 of 5"
    assert final["progress"]["current"] == 2
    assert Job.objects.get(pk=job.id).error == "Simulated failure at step 3 of 5"


def test_the_task_result_is_recorded_by_django_celery_results(celery_worker, ws_connect, make_user):
    from django_celery_results.models import TaskResult

    user = make_user()
    ws = ws_connect(user=user)
    job = launch.job_create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0})
    receive_until(ws, is_final_update(str(job.id)))

    # The task result is written just after the job's final state; give it a moment.
    import time

    deadline = time.monotonic() + 10
    while not TaskResult.objects.filter(task_id=job.celery_task_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert TaskResult.objects.get(task_id=job.celery_task_id).status == "SUCCESS"
