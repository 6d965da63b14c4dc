"""The whole stack for socket benchmarks, each part a real process on this machine.

- a private ``redis-server`` and a throwaway migrated SQLite DB (bench.support.bench_environment),
  with the project's test settings (``dashboard.settings.test``) and ``bench.kinds``;
- the ASGI server exactly as the Procfile runs it (its ``web`` line: uvicorn with the HTTP limits
  protocol, ``--ws-max-size 65536 --ws-per-message-deflate false --proxy-headers``...) serving
  ``bench.asgi_bench:application``
  (the project's application plus the ceiling and celery-progress routes);
- Celery workers as the Procfile runs them (all three from scripts/harness.py);
- WebSocket load clients in a separate process (``python -m bench.clients``).

The calling process (the scenario script) has Django set up on the same DB and Redis, so it can
create users and sessions, launch jobs through ``jobs.launch`` and push through
``notifications.push`` like a worker does.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.support import BenchEnvironment, bench_environment  # noqa: E402
from scripts.harness import Process, WebServer, celery_worker, process_env, raise_fd_limit  # noqa: E402

LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}


def set_results_dir(path: str | None) -> None:
    """Where write_results puts <name>.md (default bench/results; $BENCH_RESULTS_DIR or --results-dir)."""
    chosen = path or os.environ.get("BENCH_RESULTS_DIR")
    if chosen:
        common.RESULTS_DIR = Path(chosen).resolve()


def write_json(name: str, data: dict[str, Any]) -> Path:
    """The figures as JSON next to the results file (the smoke test reads delivery from it)."""
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = common.RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


# --- statistics -------------------------------------------------------------------------------


# Samples a printed percentile needs (design.md §5b "Honest benchmarks"): a "p99" over 30 samples
# is the maximum of a small sample, not a percentile.
MIN_PERCENTILE_SAMPLES = 1000


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan when empty, and for 0 < q < 100 over fewer
    than MIN_PERCENTILE_SAMPLES values (min and max are always exact)."""
    if not values or (0 < q < 100 and len(values) < MIN_PERCENTILE_SAMPLES):
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


# --- processes --------------------------------------------------------------------------------


class Clients:
    """The load-client process (bench/clients.py), one JSON command and reply per line."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "clients") -> None:
        self.name = name
        self.process = Process(
            name, [sys.executable, "-m", "bench.clients"], env=env, log_path=log_dir / f"{name}.log",
            pipes=True, many_files=True,
        )  # fmt: skip
        self.proc = self.process.proc
        self.pid = self.process.pid
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.call("ping", timeout=60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def open_all(self, **fields: Any) -> dict[str, Any]:
        """Open sockets (the ``open`` command); every one must open, or the scenario is void."""
        opened = self.call("open", **fields)
        if opened["failed"]:
            raise RuntimeError(f"could not open the sockets: {opened['failures']}")
        return opened

    def call(self, cmd: str, timeout: float = 120, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no reply to {cmd!r} within {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited; see its log")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {cmd}: {reply['error']}")
        return reply

    def wait_count(self, done: Any, timeout: float, interval: float = 0.1) -> dict[str, Any]:
        """Poll ``count`` until ``done(counts)`` or the timeout; returns the last counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.call("count")
            if done(counts) or time.monotonic() >= deadline:
                return counts
            time.sleep(interval)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("exit", timeout=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.process.stop(signal.SIGKILL)


# --- users ------------------------------------------------------------------------------------


@dataclass
class BenchUser:
    id: int
    username: str
    cookie: str


def make_users(count: int, *, prefix: str = "bench", staff: bool = False) -> list[BenchUser]:
    """``count`` users, each with a real session in the database (the cookie a browser would send)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import transaction

    user_model = get_user_model()
    password = make_password("bench-password")
    names = [f"{prefix}{i:05d}" for i in range(count)]
    with transaction.atomic():
        user_model.objects.bulk_create(
            [user_model(username=n, password=password, is_staff=staff, is_superuser=staff) for n in names]
        )
    users = []
    with transaction.atomic():
        for user in user_model.objects.filter(username__in=names).order_by("username"):
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            users.append(
                BenchUser(user.pk, user.username, f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
            )
    return users


def project_socket(user: BenchUser, *, tag: str = "p", trace: bool = False) -> dict[str, Any]:
    return {"path": "/ws/notifications/", "cookie": user.cookie, "tag": tag, "hello": True, "trace": trace}


def ceiling_socket(group: str | int, *, tag: str = "c", trace: bool = False) -> dict[str, Any]:
    return {"path": f"/ws/ceiling/{group}/", "tag": tag, "hello": False, "trace": trace}


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    env: BenchEnvironment
    child_env: dict[str, str]
    log_dir: Path
    layer: str
    started: list[Any]

    def web(self, *, deflate: bool = False, name: str = "web") -> WebServer:
        """uvicorn from the Procfile's own ``web`` line, serving ``bench.asgi_bench`` in place of
        ``dashboard.asgi`` (per-message compression can be turned on to measure its cost)."""
        replace = {"dashboard.asgi:application": "bench.asgi_bench:application"}
        if deflate:
            replace["--ws-per-message-deflate false"] = "--ws-per-message-deflate true"
        server = WebServer(self.child_env, log_dir=self.log_dir, name=name, replace=replace, many_files=True)
        self.started.append(server)
        return server

    def worker(self, *, concurrency: int = 1, name: str = "worker") -> Process:
        worker = celery_worker(
            name, self.child_env, log_dir=self.log_dir, hostname=f"{name}-{os.getpid()}",
            concurrency=concurrency, timeout=90, many_files=True,
        )  # fmt: skip
        self.started.append(worker)
        return worker

    def clients(self, name: str = "clients") -> Clients:
        clients = Clients(self.child_env, self.log_dir, name=name)
        self.started.append(clients)
        return clients

    def stop(self, part: Any) -> None:
        part.stop()
        if part in self.started:
            self.started.remove(part)

    def error_lines(self, part: Process | WebServer) -> list[str]:
        """Lines of a process's log that report an error or a traceback."""
        return [
            line
            for line in part.log().splitlines()
            if "Traceback" in line or " ERROR " in line or "ERROR:" in line or " CRITICAL " in line
        ]


@contextlib.contextmanager
def bench_stack(*, layer: str = "pubsub", keep_logs: bool = False) -> Iterator[Stack]:
    """Redis, the scratch DB and Django in this process; start the web server, workers and
    clients with the returned Stack. Everything started is stopped on exit."""
    raise_fd_limit()
    os.environ["RUNBOARD_KIND_MODULES"] = "bench.kinds"
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    with bench_environment(channel_layer_backend=LAYERS[layer]) as env:
        child_env = process_env(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            child_env.pop(name, None)
        # The Procfile caps a web process at 4,000 connections (uvicorn's --limit-concurrency,
        # WEB_MAX_CONNECTIONS): the memory scenario opens 5,000 sockets in one (it got 503s past
        # 3,999). Raised here, for the benchmarks only.
        child_env.setdefault("WEB_MAX_CONNECTIONS", "20000")
        log_dir = env.var_dir / "logs"
        log_dir.mkdir()
        stack = Stack(env=env, child_env=child_env, log_dir=log_dir, layer=layer, started=[])
        try:
            yield stack
        finally:
            for part in reversed(stack.started):
                with contextlib.suppress(Exception):
                    part.stop()
            if keep_logs:
                import shutil

                kept = Path(os.environ.get("TMPDIR", "/tmp")) / f"runboard-bench-logs-{os.getpid()}"
                shutil.copytree(log_dir, kept, dirs_exist_ok=True)
                print(f"logs kept in {kept}")


class Pacer:
    """Calls ``send(k)`` at a fixed rate (absolute schedule: a late call is made at once, not skipped)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.max_lag = 0.0

    def run(self, count: int, send: Any) -> float:
        start = time.perf_counter() + 0.02
        for k in range(count):
            delay = start + k / self.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                self.max_lag = max(self.max_lag, -delay)
            send(k)
        return time.perf_counter() - start
