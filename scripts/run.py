#!/usr/bin/env python
"""`make run`: make sure Redis answers, migrate, create the demo login, start web + worker + beat.

Uses REDIS_URL when a Redis answers there (default redis://127.0.0.1:6379/0); otherwise starts a
private redis-server on a free port with its files under var/redis/. Web, worker and beat are the
Procfile's own lines (scripts/harness.py), their logs in var/log/ and, prefixed, on this terminal.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import system_deps  # noqa: E402
from scripts.harness import (  # noqa: E402
    Process,
    RedisServer,
    WebServer,
    celery_beat,
    celery_worker,
    free_port,
    port_is_free,
    process_env,
    redis_answers,
    wait_for_http,
)

VAR = ROOT / "var"
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


def follow(processes: dict[str, Process], stop: threading.Event) -> None:
    """Print each process's new log lines with its name in front, as honcho does."""
    width = max(map(len, processes))
    offsets = dict.fromkeys(processes, 0)
    while True:
        for name, process in processes.items():
            with process.log_path.open("rb") as f:
                f.seek(offsets[name])
                text = f.read()
            end = text.rfind(b"\n") + 1
            offsets[name] += end
            for line in text[:end].decode(errors="replace").splitlines():
                print(f"{name:<{width}} | {line}", flush=True)
        if stop.is_set():
            return
        time.sleep(0.2)


def main() -> int:
    env = process_env(dict(os.environ))
    env.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")
    VAR.mkdir(exist_ok=True)

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

    processes: dict[str, Process] = {}
    followed = threading.Event()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        # Ctrl-C reaches the whole process group; a signal sent to this process alone must
        # still stop everything. Either way the loop below stops web, worker and beat.
        nonlocal stopping
        stopping = True

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
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        logs, level = VAR / "log", env.get("LOG_LEVEL", "INFO")
        web = WebServer(env, log_dir=logs, port=port, host=env.get("HOST", "127.0.0.1"), start=False)
        processes["web"] = web.launch()
        processes["worker"] = celery_worker(
            "worker", env, log_dir=logs, hostname=f"worker-{os.getpid()}", gossip=True, wait=False,
            concurrency=int(env.get("WORKER_CONCURRENCY", "2")), loglevel=level,
        )  # fmt: skip
        processes["beat"] = celery_beat("beat", env, log_dir=logs, loglevel=level, wait=False)
        threading.Thread(target=follow, args=(processes, followed), daemon=True).start()

        url = f"http://127.0.0.1:{port}/"
        if wait_for_http(f"{url}login/", timeout=60, proc=web.proc) and not stopping:
            bar = "=" * 64
            print(
                f"\n{bar}\n  Runboard is up: {url}\n  {login}\n  Ctrl-C stops everything.\n{bar}\n",
                flush=True,
            )
        while not stopping:
            ended = [name for name, process in processes.items() if not process.running]
            if ended:
                say(f"{ended[0]} exited ({processes[ended[0]].proc.returncode}); stopping the rest")
                return processes[ended[0]].proc.returncode or 1
            time.sleep(0.3)
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the handlers were set
        return 130
    finally:
        for process in reversed(processes.values()):
            process.stop(timeout=30)
        followed.set()
        if redis_server is not None:
            redis_server.stop(timeout=10)
            say("Stopped the private redis-server")


if __name__ == "__main__":
    sys.exit(main())
