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
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.harness import CLK_TCK, RedisServer, process_env  # noqa: E402

# Variables that would point Django at something other than the private Redis and temporary DB.
_OVERRIDING_ENV = (
    "DATABASE_URL",
    "CHANNEL_LAYER_REDIS_URL",
    "CELERY_BROKER_URL",
    "CHANNEL_LAYER_PREFIX",
)


def setup_django(
    *,
    var_dir: Path,
    redis_url: str,
    settings_module: str = "dashboard.settings.test",
    channel_layer_backend: str | None = None,
    migrate: bool = True,
    database_url: str | None = None,
) -> None:
    """Point Django at ``redis_url`` and a SQLite DB in ``var_dir`` (or ``database_url``), set it
    up and migrate.

    Must run before anything imports Django settings; the environment is set first because the
    settings read it at import time.
    """
    for name in _OVERRIDING_ENV:
        os.environ.pop(name, None)
    if database_url is not None:
        os.environ["DATABASE_URL"] = database_url
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
    database: str = "sqlite"  # or "postgresql"

    @property
    def redis_url(self) -> str:
        return self.redis.url


def postgres_server_url() -> str | None:
    """The PostgreSQL server `make test` uses (TEST_POSTGRES_URL, default the local one, trust
    auth), if one answers; the database part of the URL is ignored."""
    try:
        import psycopg
    except ImportError:
        return None
    url = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/runboard")
    base = url.rsplit("/", 1)[0]
    try:
        with psycopg.connect(base + "/postgres", connect_timeout=2):
            return base
    except Exception:
        return None


@contextlib.contextmanager
def throwaway_postgres(server_url: str) -> Iterator[str]:
    """A new, empty database on ``server_url`` (dropped on exit, with whoever is still connected)."""
    import psycopg

    name = f"runboard_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_environment(*, database: str = "sqlite", **django_options: object) -> Iterator[BenchEnvironment]:
    """A private redis-server and a migrated throwaway database, removed on exit.

    ``database="sqlite"`` (default): a SQLite file in the temporary directory. ``"postgresql"``: a
    new database on the PostgreSQL server `make test` uses (see ``postgres_server_url``), dropped
    at the end; RuntimeError if none answers.
    """
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="runboard-bench-"))
        redis_server = stack.enter_context(RedisServer(tmp))
        if database == "postgresql":
            server = postgres_server_url()
            if server is None:
                raise RuntimeError("no PostgreSQL server answers (set TEST_POSTGRES_URL)")
            django_options["database_url"] = stack.enter_context(throwaway_postgres(server))
        elif database != "sqlite":
            raise ValueError(f"unknown database {database!r}")
        var_dir = Path(tmp)
        setup_django(var_dir=var_dir, redis_url=redis_server.url, **django_options)  # type: ignore[arg-type]
        try:
            yield BenchEnvironment(var_dir=var_dir, redis=redis_server, database=database)
        finally:
            from django.db import connections

            connections.close_all()


# --- Real Celery workers and /proc accounting -------------------------------------------------------


def worker_environment(*, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess (a Celery worker) sharing this process's DB and Redis.

    Call after ``setup_django``/``bench_environment``: it passes this process's database on.
    """
    from django.db import connection

    env = process_env(LOG_LEVEL="INFO")
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{connection.settings_dict['NAME']}"
    return {**env, **(extra or {})}


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used: user + system) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None:
            out[pid] = stat[1]
    return out


def children_of(ppid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[0] == ppid:
                kids.append(int(entry.name))
    return sorted(kids)


def system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat, everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
