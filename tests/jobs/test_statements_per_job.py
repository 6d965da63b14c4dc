"""Issue 15 §3, a job's start-to-finish overhead: what a zero-step job costs the database and the
channel layer in a Celery pool process, as benchmark scenario 7 runs it (one owner, jobs lined up
behind each other), and that the cheaper path still runs, finishes, notifies and pushes each job
exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from unittest import mock

import pytest
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisSingleShardConnection
from django.db import connection
from django.test.utils import CaptureQueriesContext
from redis.asyncio.client import Pipeline

from dashboard.celery import app as celery_app
from jobs import launch, runner
from jobs.models import Job, JobState
from notifications import events, push
from notifications.models import Notification
from tests.jobs import test_job_path_queries as path_queries

# The publisher's stand-in, and how its statements are shown: test_job_path_queries' own.
published = path_queries.published
_sql = path_queries._sql

# Measured when set (SQLite; PostgreSQL adds the pass's advisory lock): a launch behind its
# owner's waiting job took 5 statements, now 4 (BEGIN, one read for "older job waiting?" and
# "anything paused?", INSERT, COMMIT); a job's run in a pool process took 23, now 22 (the
# worker's "anything lined up? anything queued?" after the job is one statement, not two).
BEHIND_OWN_LAUNCH = 4
RUN_IN_A_POOL_PROCESS = {"sqlite": 22, "postgresql": 23}


def _launch(owner):
    return launch.job_create(owner=owner, kind="simulate", params={"steps": 0}, rate_limit=False)


@pytest.mark.django_db(transaction=True)
def test_a_launch_behind_its_owners_waiting_job_reads_once_before_its_insert(make_user, published):
    owner = make_user()
    with mock.patch.object(celery_app, "send_task"):
        for _ in range(3):  # the first is admitted, the next waits at the cap, the third behind it
            _launch(owner)
        with CaptureQueriesContext(connection) as create:
            job = _launch(owner)
    assert Job.objects.get(pk=job.pk).wait_code == "behind_own"
    assert len(create) <= BEHIND_OWN_LAUNCH, f"job_create took {len(create)}:\n{_sql(create)}"


@pytest.mark.django_db(transaction=True)
def test_a_zero_step_job_in_a_pool_process_runs_in_a_bounded_number_of_statements(
    make_user, published, monkeypatch
):
    """In a pool process (not the worker's main process) the end of a job asks whether anything
    is lined up and whether anything waits in one statement, then runs the pass at once."""
    monkeypatch.setattr(runner.billiard_process, "current_process", lambda: mock.Mock(name="pool"))
    owner = make_user()
    with mock.patch.object(celery_app, "send_task") as send:
        jobs = [_launch(owner) for _ in range(4)]
        first = Job.objects.filter(admitted_at__isnull=False).order_by("created_at").first()
        published.sent.clear()
        with CaptureQueriesContext(connection) as run:
            assert runner.job_run(job_id=first.id) is None
    assert send.call_count == 2  # the launch's admission, then the pass after the job

    done = Job.objects.get(pk=first.pk)
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 1)
    assert Notification.objects.filter(job_id=first.pk).count() == 1
    mine = [e for group, e in published.sent if group == events.user_group(owner.pk)]
    assert [
        e["job"]["state"] for e in mine if e["type"] == "job.update" and e["job"]["id"] == str(first.pk)
    ] == [
        "running",
        "succeeded",
    ]  # no progress push on the heels of the running one
    assert sum(e["type"] == "notification.new" for e in mine) == 1
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], admitted_at__isnull=False).count() == 2
    bound = RUN_IN_A_POOL_PROCESS[connection.vendor]
    assert len(run) <= bound, f"job_run took {len(run)}:\n{_sql(run)}"


def test_the_events_of_one_burst_leave_in_one_pipelined_write_in_order():
    """A job's update to three groups and its notification, submitted together (one commit's
    callbacks), reach Redis as one pipeline, not a PUBLISH round trip each, and arrive in order."""
    layer = get_channel_layer()
    texts = [events.dumps({"type": "job.update", "n": i}) for i in range(4)]
    publisher = push._Publisher()
    single = mock.patch.object(
        RedisSingleShardConnection, "publish", autospec=True, side_effect=AssertionError
    )
    executed = []
    real_execute = Pipeline.execute

    async def execute(self, *args, **kwargs):
        executed.append(len(self.command_stack))
        return await real_execute(self, *args, **kwargs)

    async def receive_all() -> list[str]:
        channel = await layer.new_channel()
        for group in ("t.a", "t.b"):
            await layer.group_add(group, channel)
        await asyncio.sleep(0.2)  # subscribed before anything is sent
        ready.set()
        got = []
        while len(got) < len(texts):
            got.append((await asyncio.wait_for(layer.receive(channel), 10))["text"])
        return got

    ready = threading.Event()
    result: dict[str, list[str]] = {}
    receiver = threading.Thread(target=lambda: result.setdefault("got", asyncio.run(receive_all())))
    receiver.start()
    assert ready.wait(10)
    with single, mock.patch.object(Pipeline, "execute", execute):
        publisher._loop.call_soon_threadsafe(time.sleep, 0.2)  # a burst: thread busy
        for i, text in enumerate(texts):
            publisher.submit("t.a" if i % 2 == 0 else "t.b", {"type": push.RELAY_TYPE, "text": text})
        assert publisher.flush(10)
    receiver.join(15)
    assert executed == [len(texts)]
    assert (publisher.published, publisher.failed) == (len(texts), 0)
    assert result["got"] == texts


def test_a_batch_that_cannot_be_published_is_counted_failed_and_later_batches_still_leave():
    """Found by review: an error outside the pipeline (a message the layer cannot serialize)
    lost its batch silently and stopped the sending task, so later batches waited."""
    publisher = push._Publisher()
    publisher.submit("t.c", {"type": push.RELAY_TYPE, "text": object()})  # not serializable
    assert publisher.flush(10)
    assert (publisher.published, publisher.failed) == (0, 1)

    publisher.submit("t.c", {"type": push.RELAY_TYPE, "text": "fine"})
    assert publisher.flush(10)
    assert (publisher.published, publisher.failed) == (1, 1)
