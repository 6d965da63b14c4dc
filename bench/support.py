"""Helpers for benchmarks that need the real parts: a private redis-server and Django on a throwaway DB.

Typical use, from a script run as ``.venv/bin/python bench/<name>.py``::

    with bench_environment() as env:   # redis-server on a free port + Django set up and migrated
        ...                             # env.redis_url, env.var_dir

Nothing here touches the developer's ``var/`` directory or a shared Redis: each run gets a temporary
directory (SQLite DB, private files) and its own redis-server, both removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Variables that would point Django at something other than the private Redis and temporary DB.
_OVERRIDING_ENV = (
    "DATABASE_URL",
    "CHANNEL_LAYER_REDIS_URL",
    "CELERY_BROKER_URL",
    "CHANNEL_LAYER_PREFIX",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` (no persistence) on a free local port."""

    def __init__(self, *, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", *extra_args,
        ]  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not self._wait(timeout):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        return self

    def _wait(self, timeout: float) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except (redis.RedisError, OSError):
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def setup_django(
    *,
    var_dir: Path,
    redis_url: str,
    settings_module: str = "dashboard.settings.test",
    channel_layer_backend: str | None = None,
    migrate: bool = True,
) -> None:
    """Point Django at ``redis_url`` and a SQLite DB in ``var_dir``, set it up and migrate.

    Must run before anything imports Django settings; the environment is set first because the
    settings read it at import time.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name in _OVERRIDING_ENV:
        os.environ.pop(name, None)
    os.environ["REDIS_URL"] = redis_url
    os.environ["RUNBOARD_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if channel_layer_backend is not None:
        os.environ["CHANNEL_LAYER_BACKEND"] = channel_layer_backend

    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


@dataclass
class BenchEnvironment:
    var_dir: Path
    redis: RedisServer

    @property
    def redis_url(self) -> str:
        return self.redis.url


@contextlib.contextmanager
def bench_environment(**django_options: object) -> Iterator[BenchEnvironment]:
    """A private redis-server and a migrated throwaway SQLite DB, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="runboard-bench-") as tmp, RedisServer() as redis_server:
        var_dir = Path(tmp)
        setup_django(var_dir=var_dir, redis_url=redis_server.url, **django_options)  # type: ignore[arg-type]
        try:
            yield BenchEnvironment(var_dir=var_dir, redis=redis_server)
        finally:
            from django.db import connections

            connections.close_all()
