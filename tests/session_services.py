"""Pytest plugin (loaded with -p, before Django reads its settings): every test session gets its
own redis-server on a free port and its own scratch folder, so runs never share state with a
developer's Redis or with each other."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from scripts.harness import RedisServer

_redis: RedisServer | None = None
_scratch: str | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: object, args: list[str]) -> None:
    global _redis, _scratch
    if early_config.known_args_namespace.help or getattr(early_config.known_args_namespace, "version", False):
        return
    if shutil.which("redis-server") is None:
        raise pytest.UsageError(
            "redis-server is not installed; `make test` installs it, or: sudo apt-get install redis-server"
        )
    _scratch = tempfile.mkdtemp(prefix="runboard-test-")
    try:
        _redis = RedisServer(_scratch)
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ["REDIS_URL"] = _redis.url
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
    if _redis is not None:
        _redis.stop(timeout=10)
    if _scratch and not os.environ.get("RUNBOARD_KEEP_SCRATCH"):
        shutil.rmtree(_scratch, ignore_errors=True)
