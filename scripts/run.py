#!/usr/bin/env python
"""`make run`: make sure Redis answers, migrate, create the demo login, start web + worker + beat.

Uses REDIS_URL when a Redis answers there (default redis://127.0.0.1:6379/0); otherwise starts a
private redis-server on a free port with its files under var/redis/. Ctrl-C stops everything it
started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VAR = ROOT / "var"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

sys.path.insert(0, str(ROOT / "scripts"))
import system_deps  # noqa: E402


def say(message: str) -> None:
    print(f"runboard | {message}", flush=True)


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers do: a port whose old connections linger in TIME_WAIT is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(start: int) -> int:
    for port in range(start, start + 200):
        if port_is_free(port):
            return port
    raise SystemExit(f"No free port found from {start}.")


def start_private_redis() -> tuple[subprocess.Popen[bytes], str]:
    if not system_deps.ensure("redis-server"):
        raise SystemExit(1)
    data_dir = VAR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(6390)
    proc = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "60 1", "--appendonly", "no", "--logfile", str(data_dir / "redis.log"),
        ]
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"redis-server did not start; see {data_dir / 'redis.log'}")


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, text=True,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    return done.stdout.strip()


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    VAR.mkdir(exist_ok=True)

    redis_proc = None
    redis_url = env.get("REDIS_URL", DEFAULT_REDIS_URL)
    if redis_answers(redis_url):
        say(f"Using the Redis at {redis_url}")
    else:
        say(f"No Redis answers at {redis_url}; starting a private redis-server")
        redis_proc, redis_url = start_private_redis()
        say(f"Started redis-server at {redis_url} (files in var/redis/)")
    env["REDIS_URL"] = redis_url

    honcho = None
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
        env["HOST"] = env.get("HOST", "127.0.0.1")
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", "Procfile", "start", "-p", str(port), "web", "worker", "beat"],
            cwd=ROOT, env=env,
        )  # fmt: skip

        stopping = False

        def stop(signum: int, frame: object) -> None:
            # Ctrl-C reaches the whole process group, honcho included; a signal sent to this
            # process alone must still stop it. Either way honcho stops web, worker and beat.
            nonlocal stopping
            stopping = True
            honcho.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        url = f"http://127.0.0.1:{port}/"
        if wait_for_http(f"{url}login/", honcho):
            bar = "=" * 64
            print(
                f"\n{bar}\n  Runboard is up: {url}\n  {login}\n  Ctrl-C stops everything.\n{bar}\n",
                flush=True,
            )
        code = honcho.wait()
        return 0 if stopping else code
    except KeyboardInterrupt:  # Ctrl-C before honcho started
        return 130
    finally:
        if honcho and honcho.poll() is None:
            honcho.terminate()
            honcho.wait(timeout=30)
        if redis_proc and redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            say("Stopped the private redis-server")


if __name__ == "__main__":
    sys.exit(main())
