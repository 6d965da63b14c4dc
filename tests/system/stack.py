"""A private stack for tests that kill or restart processes: its own redis-server (persistent, so it
can be restarted like a production one), Celery worker, beat (with its housekeeping process) and
uvicorn web server, sharing only the session's test database. Killing any of them cannot disturb
the rest of the suite."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from jobs.tokens import token_create
from scripts.harness import Process, RedisServer, WebServer, celery_beat, celery_housekeeping, celery_worker
from tests.conftest import LiveServer, session_cookie

_stacks = itertools.count(1)
# Settings that would point a process at another Redis than the stack's own.
_REDIS_SETTINGS = ("CELERY_BROKER_URL", "CHANNEL_LAYER_REDIS_URL", "CHANNEL_LAYER_REDIS_URLS")


class Stack:
    """Redis + worker(s) + web (+ beat) with ``env`` overrides; ``close()`` stops all of it."""

    def __init__(
        self,
        server_env: dict[str, str],
        *,
        env: dict[str, str] | None = None,
        web: bool = True,
        worker: bool = True,
        beat: bool = False,
        concurrency: int = 2,
    ) -> None:
        self.name = f"faults{next(_stacks)}"
        self.directory = Path(server_env["RUNBOARD_VAR_DIR"]) / self.name
        self.directory.mkdir(parents=True, exist_ok=True)
        # Persistent, so it can be restarted like a production one (the same port each time).
        self.redis = RedisServer(self.directory, aof=True)
        self.env = private_env(server_env, **{"REDIS_URL": self.redis.url, **(env or {})})
        self.concurrency = concurrency
        self.workers: list[Process] = []
        self.beat: Process | None = None
        self.housekeeping: Process | None = None
        self.web: WebServer | None = None
        self._tokens: dict[int, str] = {}
        try:
            # Start everything at once (each takes seconds to import Django), then wait for each.
            if worker:
                self.start_worker(wait=False)
            if beat:
                self.start_beat(wait=False)
            if web:
                self.web = LiveServer(self.env, name=f"{self.name}-web")
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    # --- processes ---------------------------------------------------------------------------

    def start_worker(self, *, wait: bool = True, queues: str | None = None) -> Process:
        """A worker named ``<stack>-<n>``, consuming ``queues`` (comma-separated; default: the
        Procfile's, ``default``)."""
        index = len(self.workers) + 1
        env = self.env if queues is None else {**self.env, "WORKER_QUEUES": queues}
        worker = celery_worker(
            f"{self.name}-worker-{index}", env, log_dir=self.directory,
            hostname=f"{self.name}-{index}", concurrency=self.concurrency, wait=wait,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def wait_ready(self) -> None:
        """Wait until every worker, beat and housekeeping process started says it is ready."""
        for process in self.workers:
            process.wait_for_log(" ready.", timeout=60)
        if self.beat is not None:
            self.beat.wait_for_log("beat: Starting", timeout=60)
        if self.housekeeping is not None:
            self.housekeeping.wait_for_log(" ready.", timeout=60)

    @property
    def worker(self) -> Process:
        return self.workers[-1]

    def start_beat(self, *, wait: bool = True) -> Process:
        """Beat and the housekeeping process that runs what it schedules (the reaper and co.)."""
        # The file scheduler: the test database's beat tables are left to the session's own beat.
        self.beat = celery_beat(
            f"{self.name}-beat", self.env, log_dir=self.directory,
            schedule_file=self.directory / "beat-schedule", wait=wait,
        )  # fmt: skip
        self.housekeeping = celery_housekeeping(
            f"{self.name}-housekeeping", self.env, log_dir=self.directory, wait=wait
        )
        return self.beat

    def close(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.beat is not None:
            self.beat.stop()
        if self.housekeeping is not None:
            self.housekeeping.stop()
        for worker in self.workers:
            # Warm shutdown waits for running jobs; a test that leaves one running does not care.
            worker.stop(signal.SIGQUIT)
        self.redis.stop()

    def housekeeping_log(self) -> str:
        """What the housekeeping process (the reaper, re-queue) logged; empty without beat."""
        return self.housekeeping.log() if self.housekeeping is not None else ""

    def logs(self) -> str:
        parts = [(w.name, w.log()) for w in self.workers]
        if self.web is not None:
            parts.append(("web", self.web.web.log()))
        if self.beat is not None:
            parts.append(("beat", self.beat.log()))
        if self.housekeeping is not None:
            parts.append(("housekeeping", self.housekeeping.log()))
        return "\n".join(f"--- {name} ---\n{text[-3000:]}" for name, text in parts)

    # --- clients -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.web is not None
        return self.web.url

    def cookie(self, user: Any) -> str:
        """A session cookie for ``user`` (the session lives in the shared database)."""
        return session_cookie(user)

    def socket(
        self, cookie: str, *, query: str = "", url: str | None = None, **options: Any
    ) -> ClientConnection:
        """A browser-like socket (a session cookie from ``cookie()``, our Origin) to the stack's web
        server or the one at ``url``; close it yourself."""
        base = url or self.url
        return connect(
            base.replace("http", "ws", 1) + "/ws/notifications/" + query,
            origin=base,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            open_timeout=10,
            **options,
        )

    def token(self, user: Any) -> str:
        """The personal access token the stack's API calls use for ``user`` (made once)."""
        if user.pk not in self._tokens:
            self._tokens[user.pk] = token_create(user=user, name="faults")[1]
        return self._tokens[user.pk]

    def api(
        self, user: Any, method: str, path: str, body: Any = None, *, url: str | None = None
    ) -> tuple[int, Any]:
        """Call the HTTP API as ``user`` with a personal access token (through the web server at
        ``url``, default the stack's)."""
        request = urllib.request.Request(
            (url or self.url) + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token(user)}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def launch(self, user: Any, kind: str, params: dict[str, Any], *, url: str | None = None) -> str:
        """Launch a job through the stack's web server, or the one at ``url`` (so it is enqueued on
        the stack's broker)."""
        status, body = self.api(user, "POST", "/api/v1/jobs/", {"kind": kind, "params": params}, url=url)
        assert status == 201, (status, body)
        return str(body["id"])


def private_env(server_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """``server_env`` without any setting that points at another Redis than the stack's own, with
    launches unthrottled, and ``overrides`` (``REDIS_URL`` and co.) on top."""
    env = {k: v for k, v in server_env.items() if k not in _REDIS_SETTINGS}
    return {**env, "RUNBOARD_LAUNCHES_PER_MINUTE": "1000", **overrides}


def wait_until(condition: Callable[[], Any], *, timeout: float, message: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(0.1)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
