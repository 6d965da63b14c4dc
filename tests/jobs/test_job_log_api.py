"""A job's log over HTTP like a CI run page (issue 16, item 8): every line with its time, and the
whole kept log as a text download, for exactly those who may read the log."""

import datetime as dt
import json

import pytest
import requests
from django.test import Client

from jobs import launch, states
from jobs.models import JobLogLine, JobState
from jobs.permissions import Power
from jobs.tokens import token_create
from notifications.selectors import log_tail_for_watcher
from tests.conftest import grant_powers, receive_until
from tests.jobs.factories import make_job
from tests.jobs.live import signed_in_socket

pytestmark = pytest.mark.django_db


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def download(base_url: str, job, raw_token: str) -> requests.Response:
    """The download from the real ASGI server (the Procfile's ``web``), read as it streams."""
    return requests.get(
        f"{base_url}/api/v1/jobs/{job.id}/log/download/",
        headers={"Authorization": f"Bearer {raw_token}"},
        stream=True,
        timeout=10,
    )


def test_each_log_line_carries_the_time_it_was_written(make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=["first", "second"])
    stored = {line.seq: line.created_at for line in JobLogLine.objects.filter(job=job)}

    lines = logged_in(owner).get(f"/api/v1/jobs/{job.id}/log/").json()["lines"]

    assert [(line["seq"], line["text"]) for line in lines] == [(1, "first"), (2, "second")]
    assert {line["seq"]: dt.datetime.fromisoformat(line["at"]) for line in lines} == stored


def test_a_watchers_log_tail_carries_each_lines_time(make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=["only line"])
    created = JobLogLine.objects.get(job=job).created_at

    [[line]] = log_tail_for_watcher(user=owner, job_id=str(job.id))

    assert dt.datetime.fromisoformat(line["at"]) == created


@pytest.mark.django_db(transaction=True)
def test_the_whole_log_downloads_as_streamed_text_with_each_lines_time(live_server_url, make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=[f"line {i}" for i in range(1, 451)])
    stored = list(JobLogLine.objects.filter(job=job).order_by("seq"))
    _, token = token_create(user=owner, name="script")

    response = download(live_server_url, job, token)

    assert response.status_code == 200
    assert "Content-Length" not in response.headers  # streamed, a chunk of lines at a time
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="job-{str(job.id)[:8]}-log.txt"'
    expected = [f"{line.created_at.isoformat()} {line.text}" for line in stored]
    assert response.content.decode().splitlines() == expected


@pytest.mark.django_db(transaction=True)
def test_the_download_holds_at_most_the_kept_lines(live_server_url, make_user, settings):
    settings.RUNBOARD_LOG_LINES_KEPT = 300  # trims what is stored; the server keeps its default
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=[f"line {i}" for i in range(1, 1001)])
    _, token = token_create(user=owner, name="script")

    shown = download(live_server_url, job, token).content.decode().splitlines()

    assert len(shown) == 300 and shown[0].endswith(" line 701") and shown[-1].endswith(" line 1000")


def test_another_users_log_download_is_a_404_by_session_and_by_token(make_user):
    alice, bob = make_user(), make_user()
    job = make_job(owner=alice, state=JobState.SUCCEEDED)
    states.job_log_append(job_id=job.id, lines=["alice's secret"])
    _, bobs_token = token_create(user=bob, name="script")
    url = f"/api/v1/jobs/{job.id}/log/download/"

    by_session = logged_in(bob).get(url)
    by_token = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {bobs_token}")

    for response in (by_session, by_token):
        assert response.status_code == 404
        assert json.loads(response.content) == {"detail": "No such job."}
    assert Client().get(url).status_code == 401
    # Seeing every job is not reading its log: the log may hold the job's data.
    viewer = grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    assert logged_in(viewer).get(url).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_owners_token_and_view_all_results_read_the_log_download(live_server_url, make_user):
    alice = make_user()
    job = make_job(owner=alice, state=JobState.SUCCEEDED)
    states.job_log_append(job_id=job.id, lines=["done"])
    _, alices_token = token_create(user=alice, name="script")
    _, readers_token = token_create(user=grant_powers(make_user(), Power.VIEW_ALL_RESULTS), name="ops")

    for token in (alices_token, readers_token):
        response = download(live_server_url, job, token)
        assert response.status_code == 200 and response.text.endswith(" done\n")


@pytest.mark.django_db(transaction=True)
def test_watchers_get_each_live_log_line_with_its_time(celery_worker, ws_connect, make_user):
    owner = make_user()
    ws = signed_in_socket(ws_connect, owner)
    job = launch.job_create(owner=owner, kind="simulate", params={"steps": 5, "step_ms": 200})
    ws.send(json.dumps({"type": "watch", "job_id": str(job.id)}))

    sent = receive_until(
        ws, lambda e: e["type"] == "job.log" and any("step 5 of 5" in line["text"] for line in e["lines"])
    )

    lines = [line for e in sent if e["type"] == "job.log" for line in e["lines"]]
    stored = {line.seq: line.created_at for line in JobLogLine.objects.filter(job=job)}
    assert lines and all(set(line) == {"seq", "text", "at"} for line in lines)
    # Stamped in the transaction that stores the line: the same moment as its created_at, give or
    # take the time of a query or two.
    assert all(
        abs(dt.datetime.fromisoformat(line["at"]) - stored[line["seq"]]) < dt.timedelta(seconds=1)
        for line in lines
    )
