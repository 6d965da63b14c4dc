#!/usr/bin/env python
"""`make run`: make sure Redis answers, migrate, create the demo login, start web, worker,
housekeeping and beat, and keep them up.

Uses REDIS_URL when a Redis answers there (default redis://127.0.0.1:6379/0); otherwise starts a
private redis-server on a free port with its files under var/redis/. Web, worker and beat are the
Procfile's own lines (scripts/harness.py), their logs in var/log/ and, prefixed, on this terminal.
A process that exits is started again (said on the console, with a growing delay while it keeps
crashing). Ctrl-C stops everything it started: workers warmly (a running job finishes), a
second Ctrl-C at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import system_deps  # noqa: E402
from scripts.harness import (  # noqa: E402
    METRICS_DIR_ENV,
    Process,
    RedisServer,
    WebServer,
    celery_beat,
    celery_housekeeping,
    celery_worker,
    free_port,
    fresh_metrics_dir,
    port_is_free,
    process_env,
    redis_answers,
    wait_for_http,
)

# The local state directory, where the app keeps it too (RUNBOARD_VAR_DIR moves both).
VAR = Path(os.environ.get("RUNBOARD_VAR_DIR") or ROOT / "var")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def say(message: str) -> None:
    print(f"runboard | {message}", flush=True)


def start_private_redis() -> RedisServer:
    if not system_deps.ensure("redis-server"):
        raise SystemExit(1)
    try:
        return RedisServer(VAR / "redis", port=free_port(6390), save="60 1")
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, text=True,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    return done.stdout.strip()


class Supervised:
    """One of `make run`'s processes, started again when it exits on its own: after 1 s, then
    2, 4... up to ``max_delay`` while it keeps crashing (a crash loop does not spin), back to 1 s
    once a start has lasted ``healthy_after`` seconds. Each start logs to its own file."""

    def __init__(
        self,
        name: str,
        start: Callable[[int], Process],
        *,
        say: Callable[[str], None],
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self.name = name
        self._start = start
        self._say = say
        self.first_delay, self.max_delay, self.healthy_after = first_delay, max_delay, healthy_after
        self.delay = first_delay
        self.starts = 0
        self.restart_at: float | None = None
        self.process = self._launch()

    def _launch(self) -> Process:
        self.starts += 1
        self.started_at = time.monotonic()
        self.process = self._start(self.starts)
        return self.process

    def check(self) -> None:
        """Called every few tenths of a second: notice an exit, restart when its delay is over."""
        now = time.monotonic()
        if self.restart_at is None:
            if self.process.running:
                if now - self.started_at >= self.healthy_after:
                    self.delay = self.first_delay
                return
            code = self.process.proc.returncode
            self._say(f"{self.name} exited ({code}); restarting it in {self.delay:g} s")
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, self.max_delay)
        elif now >= self.restart_at:
            self.restart_at = None
            self.process.stop(timeout=1)  # closes its log
            self._launch()
            self._say(f"{self.name} restarted (start {self.starts}, pid {self.process.pid})")


def log_name(name: str, start: int) -> str:
    return name if start == 1 else f"{name}-{start}"


def follow(processes: dict[str, Supervised], stop: threading.Event) -> None:
    """Print each process's new log lines with its name in front, as honcho does."""
    width = max(map(len, processes))
    offsets: dict[str, tuple[Process, int]] = {}
    while True:
        for name, supervised in processes.items():
            process = supervised.process
            last, offset = offsets.get(name, (process, 0))
            if last is not process:
                offset = 0  # a restart: a new log file
            with contextlib.suppress(OSError), process.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read()
                end = text.rfind(b"\n") + 1
                offset += end
                for line in text[:end].decode(errors="replace").splitlines():
                    print(f"{name:<{width}} | {line}", flush=True)
            offsets[name] = (process, offset)
        if stop.is_set():
            return
        time.sleep(0.2)


def stop_all(processes: dict[str, Supervised], interrupts: Callable[[], int]) -> None:
    """SIGTERM to each (warm for Celery: a running job finishes and is acknowledged); a second
    Ctrl-C while they finish stops the workers cold (SIGQUIT, the job is left to the reaper)."""
    seen = interrupts()
    for supervised in reversed(processes.values()):
        if supervised.process.running:
            supervised.process.proc.send_signal(signal.SIGTERM)
    waiting = [s.process for s in processes.values() if s.process.running]
    if waiting:
        say("Stopping: running jobs finish first (Ctrl-C again to stop now)")
    cold = False
    while any(p.running for p in waiting):
        if not cold and interrupts() > seen:
            cold = True
            say("Stopping now")
            for process in waiting:
                if process.running:
                    process.proc.send_signal(signal.SIGQUIT)
        time.sleep(0.2)
    for supervised in processes.values():
        supervised.process.stop(timeout=10)


def main() -> int:
    # The processes' counters, added up by /metrics: emptied at each start, as a deploy does
    # (docs/operations.md, "Metrics across processes"); PROMETHEUS_MULTIPROC_DIR moves it.
    metrics_dir = fresh_metrics_dir(os.environ.get(METRICS_DIR_ENV) or VAR / "metrics")
    env = process_env({**os.environ, METRICS_DIR_ENV: metrics_dir})
    env.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")
    VAR.mkdir(parents=True, exist_ok=True)

    redis_server = None
    redis_url = env.get("REDIS_URL", DEFAULT_REDIS_URL)
    if redis_answers(redis_url, timeout=1):
        say(f"Using the Redis at {redis_url}")
    else:
        say(f"No Redis answers at {redis_url}; starting a private redis-server")
        redis_server = start_private_redis()
        redis_url = redis_server.url
        say(f"Started redis-server at {redis_url} (files in var/redis/)")
    env["REDIS_URL"] = redis_url

    processes: dict[str, Supervised] = {}
    followed = threading.Event()
    signals = 0

    def stop(signum: int, frame: object) -> None:
        # The processes run in process groups of their own, so Ctrl-C reaches only this one,
        # which stops each of them once (and a signal sent to this process alone does the same).
        nonlocal signals
        signals += 1

    try:
        say("Applying migrations")
        manage("migrate", "--noinput", "-v", "0", env=env)
        login = manage("ensure_demo_user", env=env)
        # Keys for browser push, kept in var/vapid.json (production sets them in the environment).
        manage("generate_vapid_keys", "--quiet", env=env)

        port = int(env.get("PORT", "8000"))
        if not port_is_free(port):
            busy, port = port, free_port(port + 1)
            say(f"Port {busy} is busy; using {port}")
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the terminal closed
            signal.signal(signum, stop)
        logs = VAR / "log"
        # Quiet by default: the job worker and web at INFO (a line per job), housekeeping and beat
        # at WARNING (what they do every few seconds is news only when it goes wrong); LOG_LEVEL
        # sets all four.
        level, quiet = env.get("LOG_LEVEL", "INFO"), env.get("LOG_LEVEL", "WARNING")
        web = WebServer(env, log_dir=logs, port=port, host=env.get("HOST", "127.0.0.1"), own_group=True,
                        start=False)  # fmt: skip
        concurrency = int(env.get("WORKER_CONCURRENCY", "2"))
        starters: dict[str, Callable[[int], Process]] = {
            "web": lambda n: web.launch(),
            "worker": lambda n: celery_worker(
                log_name("worker", n), env, log_dir=logs, hostname=f"worker-{os.getpid()}", gossip=True,
                wait=False, concurrency=concurrency, loglevel=level, own_group=True,
            ),
            "housekeeping": lambda n: celery_housekeeping(
                log_name("housekeeping", n), env, log_dir=logs, hostname=f"housekeeping-{os.getpid()}",
                loglevel=quiet, wait=False, own_group=True,
            ),
            "beat": lambda n: celery_beat(
                log_name("beat", n), env, log_dir=logs, loglevel=quiet, wait=False, own_group=True
            ),
        }  # fmt: skip
        for name, starter in starters.items():
            processes[name] = Supervised(name, starter, say=say)
        threading.Thread(target=follow, args=(processes, followed), daemon=True).start()

        url = f"http://127.0.0.1:{port}/"
        if wait_for_http(f"{url}login/", timeout=60, proc=web.proc) and not signals:
            bar = "=" * 64
            print(
                f"\n{bar}\n  Runboard is up: {url}\n  {login}\n  Ctrl-C stops everything.\n{bar}\n",
                flush=True,
            )
        while not signals:
            for supervised in processes.values():
                supervised.check()
            time.sleep(0.3)
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the handlers were set
        return 130
    finally:
        stop_all(processes, lambda: signals)
        followed.set()
        if redis_server is not None:
            redis_server.stop(timeout=10)
            say("Stopped the private redis-server")


if __name__ == "__main__":
    sys.exit(main())
