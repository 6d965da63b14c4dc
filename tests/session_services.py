"""Pytest plugin (loaded with -p, before Django reads its settings): every test session gets its
own redis-server on a free port and its own scratch folder, so runs never share state with a
developer's Redis or with each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.support.net import free_port, wait_for_redis

_redis: subprocess.Popen[bytes] | None = None
_scratch: str | None = None


def start_redis_server(
    directory: str, *, port: int | None = None, extra_args: tuple[str, ...] = (), log_name: str = "redis.log"
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server (no persistence unless ``extra_args`` ask for it) on ``port`` or a free one,
    answering PING; returns the process and its URL. Also used by tests that restart Redis."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it")
    for _attempt in range(1 if port else 5):
        chosen = port or free_port()
        proc = subprocess.Popen(
            [redis_server, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory, "--logfile", os.path.join(directory, log_name), *extra_args],
        )  # fmt: skip
        url = f"redis://127.0.0.1:{chosen}/0"
        if wait_for_redis(url, timeout=10, proc=proc):
            return proc, url
        proc.kill()
        proc.wait()
        time.sleep(0.2)
    raise RuntimeError(f"could not start redis-server; see {directory}/{log_name}")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: object, args: list[str]) -> None:
    global _redis, _scratch
    if early_config.known_args_namespace.help or getattr(early_config.known_args_namespace, "version", False):
        return
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise pytest.UsageError(
            "redis-server is not installed; `make test` installs it, or: sudo apt-get install redis-server"
        )
    _scratch = tempfile.mkdtemp(prefix="runboard-test-")
    try:
        _redis, url = start_redis_server(_scratch)
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ["REDIS_URL"] = url
    os.environ["RUNBOARD_VAR_DIR"] = os.path.join(_scratch, "var")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.test")
    # Kinds defined by the tests (time limits, a kind that appears everywhere by registering).
    os.environ.setdefault("RUNBOARD_KIND_MODULES", "tests.jobs.kinds_for_tests")
    # One running job per user, so the fairness tests can see the cap with two worker processes.
    os.environ.setdefault("RUNBOARD_MAX_RUNNING_PER_USER", "1")
    os.environ.setdefault("RUNBOARD_STALE_AFTER", "30")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"runboard: private redis-server at {os.environ.get('REDIS_URL')}, scratch {_scratch}"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None and _redis.poll() is None:
        _redis.terminate()
        try:
            _redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _redis.kill()
    if _scratch and not os.environ.get("RUNBOARD_KEEP_SCRATCH"):
        shutil.rmtree(_scratch, ignore_errors=True)
