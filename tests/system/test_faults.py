"""Faults, for real (issue 7): a killed worker process, a killed and restarted worker, SIGTERM,
Redis and web server restarts, a repeated delivery, the hard time limit, a slow reader and group
expiry. The tests run on private stacks (tests/system/stack.py: their own redis-server, worker,
beat, web server), so killing things here cannot disturb the rest of the suite; only the test
database is shared. Each test states its pass criterion in its docstring."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.test import override_settings
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from jobs.kinds.registry import get_kind
from jobs.models import FINAL_STATES, Job, JobLogLine, JobState
from jobs.selectors import job_payload
from notifications.events import CLOSE_EVENTS_INTERRUPTED
from notifications.inbox import notify
from notifications.models import Notification
from tests.system.stack import Stack, wait_until

# `-m faults` selects these (about 2.5 minutes); the default run and .ci/run include them.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]

# Short intervals so recovery shows within seconds: a heartbeat at least every second, stale
# after 8 s without one, the reaper every second (when beat runs), web processes check their
# channel layer every second.
FAST = {
    "RUNBOARD_HEARTBEAT_MAX_SILENCE": "1",
    "RUNBOARD_STALE_AFTER": "8",
    "RUNBOARD_REAPER_INTERVAL": "1",
    "RUNBOARD_LAYER_CHECK_INTERVAL": "1",
    "RUNBOARD_MAX_RUNNING_PER_USER": "10",
}


@pytest.fixture(scope="module")
def shared_stack(server_env: dict[str, str]) -> Iterator[Stack]:
    """For the faults that leave the stack whole (a pool process dies and is replaced)."""
    stack = Stack(server_env, env=FAST)
    yield stack
    stack.close()


@pytest.fixture
def client_of() -> Iterator[Any]:
    """``client_of(stack, user)``: a connected Client, stopped after the test whatever happens."""
    started: list[Client] = []

    def start(stack: Stack, user: Any, **options: Any) -> Client:
        client = Client(stack, user, **options)
        started.append(client)
        client.wait_connected()
        return client

    yield start
    for client in started:
        client.stop()


@contextlib.contextmanager
def publishing_to(stack: Stack) -> Iterator[None]:
    """Make this test process publish (notifications.push) to the stack's Redis."""
    from django.conf import settings

    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    for host in layers["default"]["CONFIG"]["hosts"]:
        host["address"] = stack.redis.url
    with override_settings(CHANNEL_LAYERS=layers):
        yield


class Client:
    """The documented client (docs/protocol.md), in a thread: keeps the highest notification id
    it has seen, reconnects with capped exponential backoff and jitter, and resumes with
    ?last_notification_id=N; applies job updates only when their version is newer, as the
    dashboard does (frontend/static/.../socket.js)."""

    def __init__(self, stack: Stack, user: Any, *, base_delay: float = 0.2, max_delay: float = 2.0) -> None:
        self.stack, self.base_delay, self.max_delay = stack, base_delay, max_delay
        self.cookie = stack.cookie(user)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.notification_ids: list[int] = []
        self.last_notification_id: int | None = None
        self.closes: list[int | None] = []
        self.connections = 0
        self.failed_attempts = 0
        self.delays: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            resume = self.last_notification_id
            query = "" if resume is None else f"?last_notification_id={resume}"
            try:
                with self.stack.socket(self.cookie, query=query) as ws:
                    self.connections += 1
                    attempt = 0
                    while not self._stop.is_set():
                        try:
                            self._handle(json.loads(ws.recv(timeout=0.5)))
                        except TimeoutError:
                            continue
            except ConnectionClosed as closed:
                self.closes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, InvalidHandshake, TimeoutError):
                self.failed_attempts += 1
            if self._stop.is_set():
                return
            ceiling = min(self.max_delay, self.base_delay * 2**attempt)
            delay = random.uniform(ceiling / 2, ceiling)
            self.delays.append(delay)
            attempt += 1
            self._stop.wait(delay)

    def _handle(self, event: dict[str, Any]) -> None:
        with self._lock:
            if event["type"] == "snapshot":
                for job in event["jobs"]:
                    self._apply(job)
                self.notification_ids.extend(n["id"] for n in event["notifications"])
                self._seen(event["last_notification_id"])
            elif event["type"] == "notification.new":
                self.notification_ids.append(event["notification"]["id"])
                self._seen(event["notification"]["id"])
            elif event["type"] == "job.update":
                self._apply(event["job"])

    def _apply(self, job: dict[str, Any]) -> None:
        known = self.jobs.get(job["id"])
        if known is None or job["version"] > known["version"]:
            self.jobs[job["id"]] = job

    def _seen(self, notification_id: int) -> None:
        self.last_notification_id = max(self.last_notification_id or 0, notification_id)

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.jobs.get(job_id)

    def shows(self, job_ids: list[str]) -> bool:
        """The client shows what the database holds for these jobs (state and version)."""
        for job in Job.objects.filter(pk__in=job_ids):
            shown = self.job(str(job.pk))
            if shown is None or shown["state"] != job.state or shown["version"] < job_payload(job)["version"]:
                return False
        return True

    def wait_connected(self, timeout: float = 15) -> None:
        wait_until(lambda: self.last_notification_id is not None, timeout=timeout, message="never connected")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def final(job_id: str) -> Job | None:
    job = Job.objects.get(pk=job_id)
    return job if job.state in FINAL_STATES else None


def wait_final(job_id: str, timeout: float) -> Job:
    return wait_until(lambda: final(job_id), timeout=timeout, message=f"job {job_id} never finished")


def pids(job_id: str) -> list[int]:
    """The pool process of each run of a test kind (each run logs ``pid N`` first)."""
    lines = JobLogLine.objects.filter(job_id=job_id, text__startswith="pid ").order_by("seq")
    return [int(line.text.split()[1]) for line in lines]


def wait_running(job_id: str, runs: int = 1, timeout: float = 30) -> int:
    """Wait until the job's ``runs``-th run has started; returns its process id."""
    wait_until(lambda: len(pids(job_id)) >= runs, timeout=timeout, message=f"job {job_id} never started")
    return pids(job_id)[-1]


def notifications_of(job_id: str) -> list[int]:
    return list(Notification.objects.filter(job_id=job_id).values_list("id", flat=True))


def assert_heard_once(client: Client, job_ids: list[str], timeout: float = 20) -> None:
    """The owner's client ends showing each job's final state, and each job has exactly one
    completion notification, which the client received exactly once."""
    expected = {job_id: notifications_of(job_id) for job_id in job_ids}
    assert all(len(ids) == 1 for ids in expected.values()), expected
    wanted = {ids[0] for ids in expected.values()}
    wait_until(
        lambda: client.shows(job_ids) and wanted <= set(client.notification_ids),
        timeout=timeout,
        message=f"client shows {client.jobs} and notifications {client.notification_ids}; wanted {wanted}",
    )
    time.sleep(0.5)  # a duplicate would arrive right behind
    assert len(client.notification_ids) == len(set(client.notification_ids)), client.notification_ids


# --- 1. A pool process is SIGKILLed mid-job ----------------------------------------------------


def test_a_killed_pool_process_fails_its_job_or_reruns_it_and_the_owner_hears_once(
    shared_stack, make_user, client_of
):
    """Pass: within 30 s the non-re-runnable job is `failed` ("Worker lost") after one run and the
    re-runnable one `succeeded` after exactly two; neither is left running; the owner's socket
    shows both final states and received exactly one completion notification for each."""
    user = make_user()
    client = client_of(shared_stack, user)
    lost = shared_stack.launch(user, "test_block", {"seconds": 60})
    rerun = shared_stack.launch(user, "test_rerun", {"seconds": 2})
    victims = [wait_running(lost), wait_running(rerun)]

    killed_at = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)

    failed, succeeded = wait_final(lost, timeout=30), wait_final(rerun, timeout=30)
    elapsed = time.monotonic() - killed_at
    assert failed.state == JobState.FAILED and failed.error.startswith("Worker lost"), failed.error
    assert len(pids(lost)) == 1
    assert succeeded.state == JobState.SUCCEEDED and succeeded.attempts == 2
    assert len(pids(rerun)) == 2 and pids(rerun)[0] == victims[1]
    assert elapsed < 30
    assert_heard_once(client, [lost, rerun])
    print(f"\n[faults] pool process killed: both jobs final {elapsed:.1f} s after the kill")


# --- 7. The hard time limit --------------------------------------------------------------------


def test_a_job_that_ignores_the_soft_limit_is_killed_at_the_hard_limit_and_fails(
    shared_stack, make_user, client_of
):
    """Pass: a job that swallows its soft limit (1 s) is `failed` with the hard-limit message
    within the hard limit (3 s) plus 10 s, and the owner hears of it once."""
    user = make_user()
    client = client_of(shared_stack, user)
    launched = time.monotonic()
    job_id = shared_stack.launch(user, "test_sleep", {"seconds": 30, "ignore_soft_limit": True})

    job = wait_final(job_id, timeout=20)
    elapsed = time.monotonic() - launched
    assert job.state == JobState.FAILED
    assert job.error == "Time limit exceeded (hard limit 3 s).", job.error
    assert elapsed < 3 + 10
    assert_heard_once(client, [job_id])
    print(f"\n[faults] hard time limit: failed {elapsed:.1f} s after launch")


# --- 8. A slow reader while a job reports 100,000 times ----------------------------------------


def test_a_slow_reader_ends_showing_the_final_state_of_a_job_reporting_100000_times(shared_stack, make_user):
    """Pass: a client with a 4 KiB receive buffer that reads nothing for 3 s, then one frame
    every 200 ms, ends showing the job `succeeded` at 100000/100000 (within 90 s), having
    received versions that only ever increase."""
    user = make_user()
    raw = socket.create_connection(("127.0.0.1", shared_stack.web.port))  # type: ignore[union-attr]
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    versions, shown, frames = [], None, 0
    with shared_stack.socket(shared_stack.cookie(user), sock=raw, max_queue=1, close_timeout=1) as ws:
        launched = time.monotonic()
        job_id = shared_stack.launch(user, "test_chatty", {"reports": 100_000, "seconds": 3})
        time.sleep(3)  # reads nothing at first: the buffers between fill up
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            event = json.loads(ws.recv(timeout=30))
            frames += 1
            time.sleep(0.2)  # then slower than the job's ten pushes a second
            if event["type"] == "job.update" and event["job"]["id"] == job_id:
                versions.append(event["job"]["version"])
                if shown is None or event["job"]["version"] > shown["version"]:
                    shown = event["job"]
                if shown["state"] in FINAL_STATES:
                    break
        elapsed = time.monotonic() - launched
    assert shown is not None and shown["state"] == "succeeded", shown
    assert shown["progress"]["current"] == shown["progress"]["total"] == 100_000
    assert versions == sorted(versions)
    job = Job.objects.get(pk=job_id)
    assert job.state == JobState.SUCCEEDED and shown["version"] == job_payload(job)["version"]
    ran = (job.finished_at - job.started_at).total_seconds()
    waited = (job.started_at - job.created_at).total_seconds()
    print(f"\n[faults] slow reader: final state shown {elapsed:.1f} s after launch (queued {waited:.1f} s, "
          f"ran {ran:.1f} s), {frames} frames read")  # fmt: skip


# --- 2. The whole worker is SIGKILLed and restarted --------------------------------------------


def test_a_killed_and_restarted_worker_loses_no_job_and_reruns_only_rerunnable_ones(
    stacks, make_user, client_of
):
    """Pass: after SIGKILL of the worker's main process (its pool dies with it) and a restart,
    every job is final within the reaper's timeout (8 s stale + 1 s interval) plus 20 s: the
    running non-re-runnable job `failed` ("Worker lost") after one run, the running re-runnable
    one `succeeded` after two, the queued ones `succeeded` after one; each with exactly one
    completion notification, which the owner's socket received once."""
    stack = stacks(beat=True, env=FAST)
    user = make_user()
    client = client_of(stack, user)
    lost = stack.launch(user, "test_block", {"seconds": 60})
    rerun = stack.launch(user, "test_rerun", {"seconds": 1})
    wait_running(lost), wait_running(rerun)
    queued = [stack.launch(user, "test_block", {"seconds": 0.5}) for _ in range(3)]

    killed_at = time.monotonic()
    stack.worker.stop(signal.SIGKILL)
    stack.start_worker()

    jobs = [wait_final(job_id, timeout=8 + 1 + 20) for job_id in [lost, rerun, *queued]]
    elapsed = time.monotonic() - killed_at
    assert jobs[0].state == JobState.FAILED and jobs[0].error.startswith("Worker lost"), jobs[0].error
    assert jobs[1].state == JobState.SUCCEEDED and len(pids(rerun)) == 2
    assert [job.state for job in jobs[2:]] == [JobState.SUCCEEDED] * 3
    assert [len(pids(job_id)) for job_id in [lost, *queued]] == [1, 1, 1, 1]  # none ran twice
    assert_heard_once(client, [lost, rerun, *queued])
    print(f"\n[faults] worker killed and restarted: all jobs final {elapsed:.1f} s after the kill")


# --- A frozen worker (issue 14) ----------------------------------------------------------------

# Stale after 6 s without a heartbeat, the reaper every 2 s (in the housekeeping process); a
# heartbeat at least every second, so a job is shown stalled after 1 + 2 s of silence.
FROZEN = {**FAST, "RUNBOARD_STALE_AFTER": "6", "RUNBOARD_REAPER_INTERVAL": "2"}


def pool_pids(worker_pid: int) -> list[int]:
    """The worker's pool processes: the children of its main process."""
    return [int(pid) for pid in open(f"/proc/{worker_pid}/task/{worker_pid}/children").read().split()]


def test_a_job_of_a_frozen_worker_is_shown_stalled_then_ended_within_the_stale_limit_and_one_check(
    stacks, make_user, client_of
):
    """Pass: with both pool processes of the worker running a job SIGSTOPped, the job's payload
    says it is stalled (no rate, no ETA, ``silent_for`` past ``stall_after``) once its heartbeat
    is late, and the job is `failed` ("Worker lost") within RUNBOARD_STALE_AFTER + one reaper
    interval (+ 2 s for the processes) of the freeze, though no job worker can run anything; after
    SIGCONT nothing moves backwards (same state, version and progress in the database and on the
    owner's socket) and the owner heard of it once."""
    stack = stacks(beat=True, env=FROZEN)
    user = make_user()
    client = client_of(stack, user)
    job_id = stack.launch(user, "simulate", {"steps": 600, "step_ms": 100})
    path = f"/api/v1/jobs/{job_id}/"
    live = wait_until(
        lambda: (body := stack.api(user, "GET", path)[1])["eta_seconds"] is not None and body,
        timeout=30, message="the job never showed an ETA",
    )  # fmt: skip
    assert live["state"] == "running" and live["rate"] and not live["stalled"]
    assert live["silent_for"] is not None and live["silent_for"] <= live["stall_after"]

    frozen = pool_pids(stack.worker.pid)
    assert len(frozen) == 2, frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        stalled = wait_until(
            lambda: (body := stack.api(user, "GET", path)[1])["stalled"] and body,
            timeout=6, message="the payload never said the job stalled",
        )  # fmt: skip
        assert stalled["state"] == "running", stalled
        assert stalled["rate"] is None and stalled["eta_seconds"] is None
        assert stalled["silent_for"] > stalled["stall_after"]

        ended = wait_final(job_id, timeout=6 + 2 + 10)
        elapsed = time.monotonic() - frozen_at
        assert ended.state == JobState.FAILED and ended.error.startswith("Worker lost"), ended.error
        assert elapsed < 6 + 2 + 2, elapsed
        shown = job_payload(ended)
        wait_until(lambda: (c := client.job(job_id)) and c["state"] == "failed", timeout=10,
                   message="the owner's socket never showed the job failed")  # fmt: skip
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    time.sleep(3)  # the woken pool process tries its next heartbeat and its end
    after = Job.objects.get(pk=job_id)
    fields = ("state", "version", "progress_current", "error")
    assert [getattr(after, f) for f in fields] == [getattr(ended, f) for f in fields]
    assert job_payload(after)["version"] == shown["version"]
    assert client.job(job_id)["state"] == "failed" and client.job(job_id)["version"] == shown["version"]
    assert len(notifications_of(job_id)) == 1
    print(f"\n[faults] both pool processes frozen: job stalled, then failed {elapsed:.1f} s after the freeze")


# --- 3. SIGTERM during a job -------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_and_the_queued_one_runs_after_the_restart(
    stacks, make_user, client_of
):
    """Pass: SIGTERM while a job runs is a warm shutdown: the running job `succeeded` (one run)
    before the worker exits with status 0; the job queued behind it stays queued, then
    `succeeded` (one run) on the restarted worker; one notification each, heard once."""
    stack = stacks(env=FAST, concurrency=1)
    user = make_user()
    client = client_of(stack, user)
    running = stack.launch(user, "test_block", {"seconds": 3})
    wait_running(running)
    waiting = stack.launch(user, "test_block", {"seconds": 0.5})

    stack.worker.proc.send_signal(signal.SIGTERM)
    assert stack.worker.proc.wait(timeout=30) == 0
    stopped_at = time.monotonic()
    job = Job.objects.get(pk=running)
    assert job.state == JobState.SUCCEEDED and len(pids(running)) == 1
    assert Job.objects.get(pk=waiting).state == JobState.QUEUED

    stack.start_worker()
    later = wait_final(waiting, timeout=30)
    assert later.state == JobState.SUCCEEDED and len(pids(waiting)) == 1
    assert_heard_once(client, [running, waiting])
    print(f"\n[faults] SIGTERM: queued job done {time.monotonic() - stopped_at:.1f} s after the exit")


# --- 4. Redis restarts mid-job -----------------------------------------------------------------


@pytest.mark.parametrize(
    "check_interval",
    [pytest.param("1", id="layer-check"), pytest.param("600", id="reconnect-hook")],
)
def test_after_a_redis_restart_workers_consume_and_sockets_resume_with_nothing_missed(
    stacks, make_user, client_of, check_interval
):
    """Pass: Redis is SIGKILLed (down 3 s) mid-job and restarted: jobs enqueued afterwards all
    `succeed` within 30 s (a worker alive but idle fails here); the job running at the time is
    final within 30 s (`succeeded`, or `failed` "Worker lost" after one run: Celery cancels
    running tasks on connection loss and the reaper ends them); the socket was closed with 4503,
    the client resumed and ends showing every final state and every notification (including
    one created while Redis was down) exactly once; a job launched after that reaches the same
    socket live. Run once with the web process's periodic layer check (two failed checks close
    the sockets), once with only the PubSub layer's reconnect hook."""
    stack = stacks(beat=True, env={**FAST, "RUNBOARD_LAYER_CHECK_INTERVAL": check_interval})
    user = make_user()
    client = client_of(stack, user)
    running = stack.launch(user, "test_block", {"seconds": 6})
    wait_running(running)

    started = time.monotonic()
    stack.redis.stop(signal.SIGKILL)
    with publishing_to(stack):
        during = notify(recipient_id=user.pk, title="While Redis was down")  # its push is lost
    time.sleep(3)
    stack.redis.start()
    after = [stack.launch(user, "test_block", {"seconds": 0.2}) for _ in range(3)]
    for job_id in after:
        assert wait_final(job_id, timeout=30).state == JobState.SUCCEEDED
    recovered = wait_final(running, timeout=30)
    elapsed = time.monotonic() - started
    assert recovered.state == JobState.SUCCEEDED or recovered.error.startswith("Worker lost"), recovered.error
    assert len(pids(running)) == 1 and all(len(pids(job_id)) == 1 for job_id in after)

    assert_heard_once(client, [running, *after])
    assert during is not None and during.id in client.notification_ids
    assert CLOSE_EVENTS_INTERRUPTED in client.closes, client.closes
    assert stack.web is not None
    reason = "checks in a row" if check_interval == "1" else "Redis connection was re-established"
    assert reason in stack.web.web.log()

    # And live again: a job now reaches the socket as pushes (from the worker's pool processes and
    # their reconnected publishers), not through another resume.
    connections = client.connections
    live = stack.launch(user, "test_block", {"seconds": 0.2})
    wait_final(live, timeout=30)
    assert_heard_once(client, [live])
    assert client.connections == connections
    print(
        f"\n[faults] Redis restart ({check_interval=}): all final {elapsed:.1f} s after the kill; "
        f"running job {recovered.state}; socket closes {client.closes}"
    )


def test_queued_jobs_whose_messages_were_lost_are_enqueued_again_and_run_once(stacks, make_user):
    """Pass: jobs queued while no worker runs lose their messages (Redis emptied, as a restart
    without persistence does); once a worker and beat run, the reaper enqueues them again after
    RUNBOARD_REQUEUE_AFTER and each `succeeds` within 30 s, having run exactly once. A job that
    was never lost (launched after) runs once too, though it may get a second message."""
    import redis

    stack = stacks(beat=True, worker=False, env={**FAST, "RUNBOARD_REQUEUE_AFTER": "3"})
    user = make_user()
    lost = [stack.launch(user, "test_block", {"seconds": 0.2}) for _ in range(3)]
    redis.Redis.from_url(stack.redis.url).flushall()

    started = time.monotonic()
    stack.start_worker()
    fresh = stack.launch(user, "test_block", {"seconds": 0.2})
    for job_id in [*lost, fresh]:
        assert wait_final(job_id, timeout=30).state == JobState.SUCCEEDED
    elapsed = time.monotonic() - started

    assert all(len(pids(job_id)) == 1 for job_id in [*lost, fresh])
    assert all(len(notifications_of(job_id)) == 1 for job_id in [*lost, fresh])
    assert "queued with no sign of its message" in stack.housekeeping_log()  # the re-queue's own line
    print(f"\n[faults] lost queued messages: all succeeded {elapsed:.1f} s after the worker started")


# --- 5. The web server is killed and restarted while a client streams --------------------------


def test_a_client_reconnects_after_a_web_server_restart_and_misses_and_repeats_nothing(
    stacks, make_user, client_of
):
    """Pass: notifications are created before, during and right after a SIGKILL of the web server
    and its restart; the client reconnects with growing (capped, jittered) delays and ends with
    exactly the user's notifications, in order, each once. The dashboard's own client does the
    same in tests/frontend (test_the_page_reconnects_after_the_server_restarts_and_catches_up)."""
    stack = stacks(worker=False)
    user = make_user()
    client = client_of(stack, user, base_delay=0.1, max_delay=1.0)
    assert stack.web is not None

    with publishing_to(stack):

        def burst(label: str) -> None:
            for i in range(10):
                notify(recipient_id=user.pk, title=f"{label} {i}")
                time.sleep(0.03)

        burst("before")
        stack.web.web.stop(signal.SIGKILL)
        down_at = time.monotonic()
        burst("while down")
        time.sleep(1)  # several failed attempts, with backoff
        stack.web.start()
        burst("after")  # races the client's reconnect and resume

    expected = list(Notification.objects.filter(recipient=user).order_by("id").values_list("id", flat=True))
    assert len(expected) == 30
    wait_until(lambda: set(expected) <= set(client.notification_ids), timeout=15, message="missing")
    time.sleep(0.5)
    assert client.notification_ids == expected  # none missing, none twice, in order
    assert client.connections >= 2 and client.failed_attempts >= 2
    retries = client.delays[: client.failed_attempts + 1]
    assert max(retries) > min(retries) * 1.5  # the delays grew
    print(
        f"\n[faults] web restart: back {time.monotonic() - down_at:.1f} s after the kill; "
        f"{client.failed_attempts} failed attempts, delays {[round(d, 2) for d in retries]}"
    )


# --- 6. A delivery is repeated -----------------------------------------------------------------


def test_a_redelivered_job_never_moves_backwards_and_is_notified_once(stacks, make_user, client_of):
    """Pass: with a 2 s visibility timeout Redis hands the running job's message out again; the
    copy runs after the job `succeeded` and changes nothing (same version, still `succeeded`,
    one run), and the job has exactly one completion notification, heard once."""
    stack = stacks(
        concurrency=1,
        env={**FAST, "CELERY_VISIBILITY_TIMEOUT": "2", "CELERY_UNACKED_RESTORE_INTERVAL": "1"},
    )
    user = make_user()
    client = client_of(stack, user)
    job_id = stack.launch(user, "test_block", {"seconds": 5})
    task_id = Job.objects.get(pk=job_id).celery_task_id

    job = wait_final(job_id, timeout=30)
    assert job.state == JobState.SUCCEEDED
    done = re.escape(f"jobs.run_job[{task_id}] succeeded")
    wait_until(lambda: len(re.findall(done, stack.worker.log())) >= 2, timeout=30, message="no redelivery")
    assert "is not queued (duplicate delivery" in stack.worker.log()
    again = Job.objects.get(pk=job_id)
    assert again.state == JobState.SUCCEEDED and again.version == job.version and again.attempts == 1
    assert len(pids(job_id)) == 1
    assert_heard_once(client, [job_id])
    print(
        f"\n[faults] redelivery: the message was delivered {len(re.findall(done, stack.worker.log()))} times"
    )


# --- 9. A socket open longer than the layer's group expiry -------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("channels_redis.core.RedisChannelLayer", id="default-layer"),
        pytest.param("channels_redis.pubsub.RedisPubSubChannelLayer", id="pubsub-layer"),
    ],
)
def test_a_socket_open_longer_than_the_group_expiry_still_receives_events(stacks, make_user, backend):
    """Pass: with groups expiring after 1 s (the default layer; the PubSub layer has no expiry),
    a socket open for 4 s still receives a job's final state and its notification, and was
    never closed."""
    stack = stacks(env={**FAST, "CHANNEL_LAYER_BACKEND": backend, "CHANNEL_LAYER_GROUP_EXPIRY": "1"})
    user = make_user()
    seen: list[dict[str, Any]] = []
    with stack.socket(stack.cookie(user)) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        time.sleep(4)

        job_id = stack.launch(user, "test_block", {"seconds": 0.2})
        deadline = time.monotonic() + 20
        while not any(e["type"] == "notification.new" for e in seen) or not any(
            e["type"] == "job.update" and e["job"]["state"] == "succeeded" for e in seen
        ):
            assert time.monotonic() < deadline, [e["type"] for e in seen]
            with contextlib.suppress(TimeoutError):
                seen.append(json.loads(ws.recv(timeout=1)))
    assert [e["notification"]["job_id"] for e in seen if e["type"] == "notification.new"] == [job_id]


# --- 10. The broker is down when a job is launched ---------------------------------------------


def test_a_launch_while_redis_is_down_answers_waiting_for_the_queue_and_runs_once_when_it_is_back(
    stacks, make_user
):
    """Pass: with the stack's Redis stopped, POST /api/v1/jobs/ answers 201 with exactly what the
    row holds: `queued`, `waiting_for_queue` (before: 201 `queued` over a row already `failed`
    "Could not reach the job queue", never sent). Once Redis is back the reaper sends it at its
    next tick (1 s here; RUNBOARD_REQUEUE_AFTER stays 600 s) and a real worker runs it to
    `succeeded` once, with one notification; a duplicate message sent afterwards is skipped."""
    stack = stacks(beat=True, env=FAST)
    user = make_user()
    assert stack.api(user, "GET", "/api/v1/kinds/")[0] == 200  # the token exists before the outage

    stack.redis.stop()
    launch = {"kind": "test_block", "params": {"seconds": 0.2}}
    status, body = stack.api(user, "POST", "/api/v1/jobs/", launch)
    assert status == 201, body
    assert body["state"] == JobState.QUEUED and body["waiting_for_queue"] is True
    job = Job.objects.get(pk=body["id"])
    assert body == json.loads(json.dumps(job_payload(job)))  # the answer is the committed row
    time.sleep(2)  # a down broker: nothing can send it, and nothing fails it
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job_payload(job)["waiting_for_queue"]

    back = time.monotonic()
    stack.redis.start()
    done = wait_final(body["id"], timeout=60)
    elapsed = time.monotonic() - back
    assert done.state == JobState.SUCCEEDED, done.error
    assert len(pids(body["id"])) == 1 and len(notifications_of(body["id"])) == 1
    assert "which was waiting for the queue" in stack.housekeeping_log()  # the re-queue's own line

    # A second message for the finished job (as a redelivery or a duplicate send would be).
    version = done.version
    with Celery("duplicate", broker=stack.redis.url, set_as_current=False) as other:
        other.send_task("jobs.run_job", args=[body["id"]], queue=get_kind("test_block").queue)
    wait_until(
        lambda: any(f"Job {body['id']} is not queued" in worker.log() for worker in stack.workers),
        timeout=20,
        message="the duplicate was never delivered",
    )
    done.refresh_from_db()
    assert (done.state, done.version) == (JobState.SUCCEEDED, version)
    assert len(pids(body["id"])) == 1 and len(notifications_of(body["id"])) == 1
    print(f"\n[faults] launched with Redis down: answered waiting; ran {elapsed:.1f} s after it was back")
