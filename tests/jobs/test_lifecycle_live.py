"""Cancel, retry, re-run, time limits, fairness and logs, on the real worker."""

import itertools
import json
import time

import pytest
from django.test import Client

from jobs import launch
from jobs.models import Job, JobState
from tests.conftest import receive_json, receive_until
from tests.jobs.live import signed_in_socket, until_final, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def api_client(user):
    client = Client()
    client.force_login(user)
    return client


def post(client, path, body=None):
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


def test_cancelling_a_running_job_shows_cancelling_then_cancelled(celery_worker, ws_connect, make_user):
    user = make_user()
    ws = signed_in_socket(ws_connect, user)
    job = launch.job_create(owner=user, kind="simulate", params={"steps": 200, "step_ms": 20})
    wait_for_job(job.id, lambda j: j.state == JobState.RUNNING)

    response = post(api_client(user), f"/api/v1/jobs/{job.id}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True

    updates = until_final(ws, job.id)
    assert any(u["state"] == "running" and u["cancel_requested"] for u in updates)
    assert updates[-1]["state"] == "cancelled"
    assert updates[-1]["progress"]["current"] < 200


def test_cancelling_a_queued_job_ends_it_before_any_worker_starts_it(celery_worker, make_user):
    user = make_user()
    blocker = launch.job_create(owner=user, kind="test_block", params={"seconds": 3})
    queued = launch.job_create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0})
    # The per-user cap (1 in the tests) holds the second job in the queue while the first runs.
    wait_for_job(blocker.id, lambda j: j.state == JobState.RUNNING)
    assert Job.objects.get(pk=queued.id).state == JobState.QUEUED

    assert post(api_client(user), f"/api/v1/jobs/{queued.id}/cancel/").json()["state"] == "cancelled"
    wait_for_job(blocker.id, lambda j: j.is_final)
    time.sleep(1.5)  # long enough for the worker to have picked the task up
    job = Job.objects.get(pk=queued.id)
    assert job.state == JobState.CANCELLED and job.started_at is None


def test_cancelling_a_finished_job_is_a_409(celery_worker, make_user):
    user = make_user()
    job = launch.job_create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0})
    wait_for_job(job.id, lambda j: j.is_final)

    response = post(api_client(user), f"/api/v1/jobs/{job.id}/cancel/")
    assert response.status_code == 409
    assert "already succeeded" in response.json()["detail"]


def test_retry_and_rerun_make_new_jobs_linked_to_the_old_one(celery_worker, ws_connect, make_user):
    user = make_user()
    ws = signed_in_socket(ws_connect, user)
    failed = launch.job_create(
        owner=user, kind="simulate", params={"steps": 3, "step_ms": 0, "fail_at_step": 2}
    )
    assert until_final(ws, failed.id)[-1]["state"] == "failed"
    client = api_client(user)

    retry = post(client, f"/api/v1/jobs/{failed.id}/retry/").json()
    assert retry["retry_of"] == str(failed.id) and retry["params"] == failed.params
    assert until_final(ws, retry["id"])[-1]["state"] == "failed"  # same parameters, same failure

    rerun = post(client, f"/api/v1/jobs/{failed.id}/retry/", {"params": {"steps": 3, "step_ms": 0}}).json()
    assert rerun["retry_of"] == str(failed.id)
    assert until_final(ws, rerun["id"])[-1]["state"] == "succeeded"

    bad = post(client, f"/api/v1/jobs/{failed.id}/retry/", {"params": {"steps": -5}})
    assert bad.status_code == 400 and "params.steps" in bad.json()["fields"]
    assert Job.objects.filter(retry_of=failed).count() == 2


def test_retrying_an_unfinished_job_is_a_409(make_user):
    user = make_user()
    job = Job.objects.create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0})
    assert post(api_client(user), f"/api/v1/jobs/{job.id}/retry/").status_code == 409


def test_the_soft_time_limit_fails_the_job_with_a_clear_message(celery_worker, ws_connect, make_user):
    user = make_user()
    ws = signed_in_socket(ws_connect, user)
    job = launch.job_create(owner=user, kind="test_sleep", params={"seconds": 10})

    final = until_final(ws, job.id, timeout=15)[-1]
    assert final["state"] == "failed" and final["error"] == "Time limit exceeded (1 s)."


# The hard time limit and a killed pool process: tests/system/test_faults.py (issue 7).


def test_one_user_at_the_cap_cannot_starve_another(celery_worker, make_user):
    alice, bob = make_user(), make_user()
    alices = [launch.job_create(owner=alice, kind="test_block", params={"seconds": 2}) for _ in range(3)]
    bobs = launch.job_create(owner=bob, kind="simulate", params={"steps": 1, "step_ms": 0})

    bob_done = wait_for_job(bobs.id, lambda j: j.is_final, timeout=30)
    # Alice's deferred jobs are retried in no promised order, so wait for every one of them.
    done = [wait_for_job(j.id, lambda j: j.is_final, timeout=30) for j in alices]
    assert bob_done.state == JobState.SUCCEEDED
    assert all(j.state == JobState.SUCCEEDED for j in done)
    # Bob's job did not wait behind Alice's queue (at least 6 s at one running job a user): it
    # started before her last one did.
    assert bob_done.started_at < max(j.started_at for j in done)
    # Alice never had two running at once.
    spans = sorted((j.started_at, j.finished_at) for j in done)
    assert all(prev_end <= next_start for (_, prev_end), (next_start, _) in itertools.pairwise(spans))


def test_watchers_receive_the_log_live_and_others_are_refused(celery_worker, ws_connect, make_user):
    owner, stranger = make_user(), make_user()
    ws = signed_in_socket(ws_connect, owner)
    job = launch.job_create(owner=owner, kind="simulate", params={"steps": 5, "step_ms": 100})
    ws.send(json.dumps({"type": "watch", "job_id": str(job.id)}))

    events = receive_until(
        ws, lambda e: e["type"] == "job.log" and any("step 5 of 5" in line["text"] for line in e["lines"])
    )
    assert {"type": "watching", "job_id": str(job.id), "watching": True} in events
    lines = [line for e in events if e["type"] == "job.log" for line in e["lines"]]
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(set(seqs)) and lines[-1]["text"] == "Finished step 5 of 5"

    other = signed_in_socket(ws_connect, stranger)
    other.send(json.dumps({"type": "watch", "job_id": str(job.id)}))
    assert receive_json(other)["code"] == "forbidden"

    log = api_client(owner).get(f"/api/v1/jobs/{job.id}/log/?after=2").json()["lines"]
    assert next(line["seq"] for line in log) == 3
    assert api_client(stranger).get(f"/api/v1/jobs/{job.id}/log/").status_code == 404
