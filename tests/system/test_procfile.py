"""The Procfile's processes for real: two web processes, two workers, housekeeping and beat,
sharing this session's Redis (a separate database for the broker) and test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from celery import Celery
from websockets.sync.client import connect

from dashboard.celery import app as celery_app
from jobs import schedules
from jobs.kinds.registry import all_kinds
from jobs.models import Job, JobSchedule, JobState
from jobs.tokens import token_create
from tests.conftest import ROOT, receive_json
from tests.jobs.live import until_final, wait_for_job
from tests.support.net import free_port, wait_for_http
from tests.support.procfile import procfile

pytestmark = pytest.mark.django_db(transaction=True)


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = Path(env["RUNBOARD_VAR_DIR"])

    def start(self, name: str, command: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"procfile-{name}.log").open("wb")
        proc = subprocess.Popen(
            ["sh", "-c", command], cwd=ROOT, env={**self.env, **extra}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group per entry, like a platform's dyno
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"procfile-{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def stack(server_env):
    # The broker on its own Redis database, so the session's test worker never takes these jobs.
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    env = {
        **server_env,
        "CELERY_BROKER_URL": redis_url,
        "HOST": "127.0.0.1",
        "WORKER_CONCURRENCY": "1",
        "RUNBOARD_STALE_AFTER": "4",
        "RUNBOARD_REAPER_INTERVAL": "1",
        "RUNBOARD_HEARTBEAT_MAX_SILENCE": "1",
        "LOG_LEVEL": "INFO",
    }
    processes = Stack(env)
    entries = procfile()
    assert set(entries) == {"release", "web", "worker", "housekeeping", "beat"}
    assert subprocess.run(["sh", "-c", entries["release"]], cwd=ROOT, env=env, timeout=120).returncode == 0
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports, 1):
        processes.start(f"web.{i}", entries["web"], PORT=str(port))
    for i in (1, 2):
        processes.start(f"worker.{i}", entries["worker"], WORKER_NAME=f"procfile-{i}")
    processes.start("housekeeping", entries["housekeeping"])
    processes.start("beat", entries["beat"])
    processes.urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in processes.urls:
        assert wait_for_http(f"{url}/login/", timeout=60)
    # Control commands (ping, inspect) from this process must reach those workers: a Celery app of
    # its own on their broker (the project app's connection pool keeps the session broker).
    processes.control = Celery("procfile-control", broker=redis_url, set_as_current=False).control
    try:
        deadline = time.monotonic() + 60
        while len(processes.control.ping(timeout=1.0) or []) < 3:
            assert time.monotonic() < deadline, processes.log("worker.1")[-3000:]
        # Job workers take jobs only; the housekeeping process takes housekeeping only.
        queues = {
            name.split("@")[0]: {q["name"] for q in found}
            for name, found in (processes.control.inspect(timeout=2.0).active_queues() or {}).items()
        }
        assert queues == {
            "procfile-1": {"default"},
            "procfile-2": {"default"},
            next(n for n in queues if n.startswith("housekeeping")): {"housekeeping"},
        }, queues
        yield processes
    finally:
        processes.stop()


def test_housekeeping_runs_in_a_process_of_its_own_that_no_job_can_occupy():
    """The reaper, re-queue and retention go to the `housekeeping` queue; the Procfile consumes it
    with one process of its own (solo pool: the task runs in the process that holds the broker
    connection, so it has no pool process a job could freeze), and job workers only take the
    queues they are given (default: `default`, the queue of every built-in kind)."""
    entries = procfile()
    assert "-Q housekeeping" in entries["housekeeping"] and "--pool solo" in entries["housekeeping"]
    assert "-Q ${WORKER_QUEUES:-default}" in entries["worker"]
    for task in ("jobs.reap_stale_jobs", "jobs.run_schedule", "jobs.apply_retention",
                 "jobs.purge_expired_result_files", "celery.backend_cleanup"):  # fmt: skip
        assert celery_app.amqp.router.route({}, task)["queue"].name == "housekeeping"
    for task in ("jobs.run_job", "jobs.run_job_chunk"):
        assert celery_app.amqp.router.route({}, task)["queue"].name == "default"
    assert {kind.queue for kind in all_kinds()} == {"default"}


def launch(url: str, token: str, params: dict) -> str:
    """Launch a simulate job through a web process of the stack (so it reaches the stack's broker)."""
    request = urllib.request.Request(
        f"{url}/api/v1/jobs/",
        data=json.dumps({"kind": "simulate", "params": params}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


def test_the_procfile_runs_a_whole_deployment(stack, make_user, settings):
    user = make_user()
    _, token = token_create(user=user, name="system test")
    ws_url = stack.urls[1].replace("http", "ws", 1) + "/ws/notifications/"

    # 1. Launched through web.1, watched live on a socket of web.2.
    with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        receive_json(ws), receive_json(ws)
        job_id = launch(stack.urls[0], token, {"steps": 5, "step_ms": 50})
        updates = until_final(ws, job_id, timeout=30)
    assert updates[-1]["state"] == "succeeded" and updates[-1]["progress"]["current"] == 5

    # 2. A schedule fires in beat and produces an ordinary job (a run a second, not to wait a minute).
    settings.RUNBOARD_SCHEDULE_MIN_SECONDS = 1
    schedules.schedule_save(
        schedule=JobSchedule(name="system", kind="simulate", params={"steps": 1, "step_ms": 0}, owner=user,
                             every_seconds=1)
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not Job.objects.filter(owner=user, state=JobState.SUCCEEDED).exclude(pk=job_id).exists():
        assert time.monotonic() < deadline, stack.log("beat")[-3000:]
        time.sleep(0.2)
    JobSchedule.objects.all().delete()

    # 3. A job whose whole worker is SIGKILLed (no warm shutdown, no failure signal) is reaped.
    long = Job.objects.get(pk=launch(stack.urls[1], token, {"steps": 300, "step_ms": 100}))
    wait_for_job(long.id, lambda j: j.state == JobState.RUNNING and j.progress_current > 0)
    active = stack.control.inspect(timeout=2.0).active() or {}
    owner_worker = next(
        name for name, tasks in active.items() if any(t["id"] == long.celery_task_id for t in tasks)
    )
    stack.kill("worker.1" if owner_worker.startswith("procfile-1") else "worker.2")
    reaped = wait_for_job(long.id, lambda j: j.is_final, timeout=30)
    assert reaped.state == JobState.FAILED and reaped.error.startswith("Worker lost")
    # The reaper logs just after its write commits: give the line a moment to reach the log.
    deadline = time.monotonic() + 10
    while "Reaped job" not in stack.log("housekeeping"):
        assert time.monotonic() < deadline, "the reaper did not log what it did"
        time.sleep(0.1)
