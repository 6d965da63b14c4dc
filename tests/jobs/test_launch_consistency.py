"""What a launch answers is what the database holds (issue 12, section 5).

A launch the broker cannot take is not failed: it stays queued, waiting for the queue, and the
API, the CLI and the page say so; the reaper's next pass sends it, once. The per-user launch
limit is exact however many launches race (PostgreSQL; SQLite runs one writer at a time).
The whole path with a real Redis stopped and restarted and a real worker is in
tests/system/test_faults.py (`test_a_launch_while_redis_is_down_...`).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from dashboard.celery import app as celery_app
from jobs import housekeeping, runner, states
from jobs.launch import job_create
from jobs.models import Job, JobState
from jobs.selectors import job_payload
from notifications.models import Notification
from tests.jobs.factories import make_job
from tests.support.net import free_port


class Broker:
    """Where ``run_job`` messages go: a closed port (a real kombu connection, refused), or,
    once ``up``, a list of the task ids that would have been sent."""

    def __init__(self) -> None:
        self.url = f"redis://127.0.0.1:{free_port()}/0"
        self.down = True
        self.attempts = 0
        self.sent: list[str] = []

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:
        if name != "jobs.run_job":
            return original_send_task(name, *args, **options)
        self.attempts += 1
        if not self.down:
            self.sent.append(options["task_id"])
            return None
        with celery_app.connection_for_write(self.url) as unreachable:
            return original_send_task(name, *args, connection=unreachable, **options)


original_send_task = celery_app.send_task


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    broker = Broker()
    monkeypatch.setattr(celery_app, "send_task", broker.send_task)
    yield broker


def waiting_for_queue(job: Job) -> bool:
    return job_payload(job)["waiting_for_queue"]


def api_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def launch(client: Client, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/jobs/", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db(transaction=True)  # real commits: the enqueue runs on commit, as in production
def test_with_the_broker_down_a_launch_answers_queued_waiting_for_the_queue_as_the_row_holds(
    make_user, broker
):
    user = make_user()

    response = launch(api_client(user), {"kind": "simulate", "params": {"steps": 1}})

    assert response.status_code == 201, response.content
    body = response.json()
    assert broker.attempts == 1
    job = Job.objects.get(pk=body["id"])
    assert body == json.loads(json.dumps(job_payload(job)))  # the answer is the row, after the enqueue
    assert (body["state"], body["waiting_for_queue"], body["error"]) == ("queued", True, "")
    # One story, not two (found by review: "1st in line for a worker." beside it).
    assert (body["wait_code"], body["queue_position"]) == ("waiting_for_queue", None)
    assert body["wait_reason"].startswith("Waiting for the queue")
    assert (job.state, job.finished_at) == (JobState.QUEUED, None)  # before: failed
    assert not Notification.objects.filter(job_id=job.id).exists()
    # The page shows what the API answered.
    page = api_client(user).get(f"/jobs/{job.id}/")
    assert page.status_code == 200
    assert page.context["payload"]["waiting_for_queue"] is True


@pytest.mark.django_db(transaction=True)
def test_with_a_frozen_broker_a_launch_still_answers_waiting_for_the_queue(make_user, monkeypatch):
    """Found by review: a Redis that accepts connections but never answers (SIGSTOP) held
    `POST /api/v1/jobs/` forever, with the row already committed. Now the send times out."""
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(16)  # accepts (the kernel's backlog) and never says a word
    url = f"redis://127.0.0.1:{frozen.getsockname()[1]}/0"

    def send_task(name: str, *args: Any, **options: Any) -> Any:
        if name != "jobs.run_job":
            return original_send_task(name, *args, **options)
        with celery_app.connection_for_write(url) as hanging:
            return original_send_task(name, *args, connection=hanging, **options)

    monkeypatch.setattr(celery_app, "send_task", send_task)
    answers: list[Any] = []
    user = make_user()
    thread = threading.Thread(
        target=lambda: answers.append(launch(api_client(user), {"kind": "simulate", "params": {"steps": 1}})),
        daemon=True,
    )
    started = time.monotonic()
    thread.start()
    thread.join(30)
    frozen.close()
    assert answers, "no answer in 30 s"
    elapsed = time.monotonic() - started
    body = answers[0].json()
    assert answers[0].status_code == 201 and body["waiting_for_queue"] is True, body
    assert elapsed < 15, f"answered after {elapsed:.1f} s"
    assert Job.objects.get(pk=body["id"]).state == JobState.QUEUED


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_up_a_launch_answers_queued_and_not_waiting(make_user, broker):
    broker.down = False
    response = launch(api_client(make_user()), {"kind": "simulate", "params": {"steps": 1}})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body == json.loads(json.dumps(job_payload(Job.objects.get(pk=body["id"]))))
    # Version 2: inserted (1), then admitted by the scheduler and told where it stands (2).
    assert (body["state"], body["waiting_for_queue"], body["version"]) == ("queued", False, 2000)
    assert (body["wait_code"], body["wait_reason"], body["queue_position"]) == (
        "in_line",
        "1st in line for a worker.",
        1,
    )
    assert broker.sent == [Job.objects.get(pk=body["id"]).celery_task_id]


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_the_launch_command_says_waiting_for_the_queue(make_user, broker):
    user = make_user()
    out, err = io.StringIO(), io.StringIO()
    args = ["simulate", f"--user={user.username}", "--param=steps=1"]

    call_command("launch_job", *args, stdout=out, stderr=err)

    job = Job.objects.get(pk=out.getvalue().strip())
    assert job.state == JobState.QUEUED and waiting_for_queue(job)
    assert "queued, waiting for the queue" in err.getvalue()  # before: "queued", over a failed row


@pytest.mark.django_db(transaction=True)
def test_jobs_waiting_for_the_queue_are_sent_at_the_reapers_next_pass_once_the_broker_is_back(
    make_user, broker, settings
):
    settings.RUNBOARD_REQUEUE_AFTER = 600
    # All three admitted at once (by default the scheduler lines up one job of a user at a time).
    settings.RUNBOARD_MAX_RUNNING_PER_USER = settings.RUNBOARD_ADMIT_AHEAD_PER_USER = 10
    owner = make_user()
    waiting = [job_create(owner=owner, kind="simulate", params={"steps": 1}) for _ in range(3)]
    # A job whose message went missing long ago: its resend fails too, so now it waits as well.
    silent = make_job(owner=owner, enqueued_at=timezone.now() - timedelta(seconds=700))
    assert all(job.state == JobState.QUEUED and waiting_for_queue(job) for job in waiting)
    versions = {job.pk: job.version for job in waiting}

    broker.attempts = 0
    assert housekeeping.job_requeue_lost() == 0
    assert broker.attempts == 1  # the first refusal ends the pass: the broker is down
    broker.attempts = 0
    assert housekeeping.job_requeue_lost() == 0  # ... and again at the next tick
    assert broker.attempts == 1
    for job in waiting:
        job.refresh_from_db()
        # Still queued and waiting, unchanged: a failed attempt writes nothing a client would see.
        assert job.state == JobState.QUEUED and waiting_for_queue(job) and job.version == versions[job.pk]

    broker.down = False
    assert housekeeping.job_requeue_lost() == 4  # the next tick, not RUNBOARD_REQUEUE_AFTER later
    assert housekeeping.job_requeue_lost() == 0
    jobs = {job.pk: job for job in Job.objects.filter(owner=owner)}
    assert sorted(broker.sent) == sorted(job.celery_task_id for job in jobs.values())  # once each
    assert not any(waiting_for_queue(job) for job in jobs.values())
    assert all(jobs[job.pk].version == versions[job.pk] + 1 for job in waiting)
    assert silent.pk in jobs


@pytest.mark.django_db(transaction=True)
def test_a_job_waiting_for_the_queue_runs_once_and_a_duplicate_message_is_skipped(make_user, broker):
    job = job_create(owner=make_user(), kind="simulate", params={"steps": 1, "step_ms": 0})
    assert waiting_for_queue(job)
    broker.down = False
    assert housekeeping.job_requeue_lost() == 1

    assert runner.job_run(job_id=job.id) is None  # the message the reaper sent
    assert runner.job_run(job_id=job.id) is None  # a duplicate (the launch's, had it got through)

    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert Notification.objects.filter(job_id=job.id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_waiting_job_whose_message_reached_a_worker_after_all_no_longer_shows_waiting(make_user, settings):
    settings.RUNBOARD_MAX_RUNNING_PER_USER = 1
    owner = make_user()
    make_job(owner=owner, state=JobState.RUNNING)
    # The broker refused the launch, yet a message got through (the refusal came after the send).
    job = make_job(owner=owner, enqueued_at=None)
    version = job_payload(job)["version"]

    assert isinstance(states.job_start(job_id=job.id), states.Deferred)  # at the cap: waits

    job.refresh_from_db()
    assert job.state == JobState.QUEUED and not waiting_for_queue(job)
    assert job_payload(job)["version"] > version  # a change clients are told of


# --- The launch limit under concurrency --------------------------------------------------------

LAUNCHERS = 50
LIMIT = 30


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite runs one writer at a time")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_fifty_parallel_launches_against_a_limit_of_30_create_exactly_30(make_user, broker, settings, round_):
    """50 threads, each with its own database connection and session, launch at once through the
    API. Before: 31 to 35 jobs on PostgreSQL (every launch counted before any committed)."""
    broker.down = False
    settings.RUNBOARD_LAUNCHES_PER_MINUTE = LIMIT
    user = make_user()
    clients = [api_client(user) for _ in range(LAUNCHERS)]
    start = threading.Barrier(LAUNCHERS)
    statuses: list[Any] = []

    def run(client: Client) -> None:
        try:
            connection.ensure_connection()
            start.wait(timeout=30)
            statuses.append(launch(client, {"kind": "simulate", "params": {"steps": 1}}).status_code)
        except Exception as exc:  # reported in the assertion below
            statuses.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Counter(statuses) == {201: LIMIT, 429: LAUNCHERS - LIMIT}, Counter(statuses)
    assert Job.objects.filter(owner=user).count() == LIMIT
