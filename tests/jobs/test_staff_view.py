"""Operators (staff) see and steer every user's jobs; nobody else does."""

import json

import pytest
from django.test import Client

from jobs import launch
from jobs.models import Job, JobState
from tests.conftest import receive_json
from tests.jobs.factories import make_job
from tests.jobs.live import until_final

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_staff_see_every_users_jobs_with_the_owner_and_users_still_only_theirs(make_user):
    alice, bob, operator = make_user(), make_user(), make_user(operator=True)
    alices = make_job(owner=alice, state=JobState.SUCCEEDED)
    make_job(owner=bob)

    listed = logged_in(operator).get("/api/v1/jobs/").json()["results"]
    assert {job["owner"] for job in listed} == {alice.username, bob.username}
    assert logged_in(operator).get(f"/api/v1/jobs/{alices.id}/").status_code == 200
    assert logged_in(bob).get(f"/api/v1/jobs/{alices.id}/").status_code == 404


def test_staff_sockets_get_every_jobs_live_updates(celery_worker, ws_connect, make_user):
    user, operator = make_user(), make_user(operator=True)
    ws = ws_connect(user=operator)
    receive_json(ws), receive_json(ws)

    job = launch.job_create(owner=user, kind="simulate", params={"steps": 3, "step_ms": 50})

    updates = until_final(ws, job.id)
    assert updates[-1]["state"] == "succeeded" and updates[-1]["owner"] == user.username
    assert any(u["state"] == "running" and 0 < u["progress"]["current"] < 3 for u in updates)


def test_a_staff_retry_keeps_the_original_owner(make_user):
    user, operator = make_user(), make_user(operator=True)
    failed = make_job(owner=user, state=JobState.FAILED)

    response = logged_in(operator).post(f"/api/v1/jobs/{failed.id}/retry/", "{}", "application/json")

    assert response.status_code == 201
    assert Job.objects.get(pk=response.json()["id"]).owner == user


def test_downloads_stay_owner_only_even_for_staff(make_user):
    user, operator = make_user(), make_user(operator=True)
    job = make_job(owner=user, state=JobState.SUCCEEDED, result_file="results/x/runboard-jobs.csv")

    assert logged_in(operator).get(f"/api/v1/jobs/{job.id}/download/").status_code == 404
    assert json.loads(logged_in(operator).get(f"/api/v1/jobs/{job.id}/").content)["download_url"]
