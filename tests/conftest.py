"""Shared fixtures: users, the real processes (Celery worker, ASGI web server) tests run against,
and headless Debian Chromium driven by Playwright (no browser download: executable_path)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from websockets.sync.client import ClientConnection, connect

from scripts.harness import Process, WebServer, celery_housekeeping, process_env
from scripts.harness import celery_worker as start_celery_worker

ROOT = Path(__file__).resolve().parent.parent
_usernames = itertools.count(1)


def _flush_retrying_on_deadlock(flush: Callable[[Any], None]) -> Callable[[Any], None]:
    """A transactional test's teardown TRUNCATEs every table; on PostgreSQL that can deadlock with
    a live web or worker process of the session locking a row meanwhile (a heartbeat's credential
    check, a counter lock). PostgreSQL ends one side; if that is the flush, wait and flush again."""

    def teardown(self: Any) -> None:
        from django.core.management.base import CommandError
        from django.db import OperationalError

        for attempt in range(1, 6):
            try:
                flush(self)
                return
            except CommandError as exc:
                cause = exc.__cause__
                if attempt == 5 or not (isinstance(cause, OperationalError) and "deadlock" in str(cause)):
                    raise
                time.sleep(0.2 * attempt)

    return teardown


def pytest_configure(config: pytest.Config) -> None:
    from django.test import TransactionTestCase

    TransactionTestCase._fixture_teardown = _flush_retrying_on_deadlock(  # type: ignore[method-assign]
        TransactionTestCase._fixture_teardown
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's, plus: before the test database is dropped, close the connection the
    sockets' shared database thread keeps (dashboard/db.py) after in-process consumer tests;
    PostgreSQL refuses to drop a database someone is connected to."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connection, connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
    # Behind PgBouncer (scripts/pgbouncer.py), the pooler still holds server connections to the
    # test database that this session's processes used: released, or the drop would be refused.
    from scripts.pgbouncer import release

    if connection.vendor == "postgresql":
        release(connection.settings_dict["NAME"])


def grant_powers(user: Any, *powers: Any) -> Any:
    """Give ``user`` operator powers (all of them by default) through a Django group, as an
    administrator would (jobs/permissions.py)."""
    from django.contrib.auth.models import Group, Permission

    from jobs.permissions import Power

    wanted = powers or tuple(Power)
    name = "operators" if not powers else "powers:" + ",".join(sorted(p.codename for p in wanted))
    group, _ = Group.objects.get_or_create(name=name)
    group.permissions.set(
        Permission.objects.filter(content_type__app_label="jobs", codename__in=[p.codename for p in wanted])
    )
    user.groups.add(group)
    return type(user).objects.get(pk=user.pk)  # a fresh object: no stale permission cache


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    """``make_user(operator=True)``: a staff user holding every operator power through a group;
    ``is_staff=True`` alone grants no power (it only opens the Django admin)."""

    def make(username: str | None = None, *, operator: bool = False, **fields: Any) -> Any:
        username = username or f"user{next(_usernames)}"
        if operator:
            fields.setdefault("is_staff", True)
        user = django_user_model.objects.create_user(username=username, password="pw-" + username, **fields)
        return grant_powers(user) if operator else user

    return make


def session_cookie(user: Any) -> str:
    """A real session for ``user`` (committed, so the web server process can read it)."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise RuntimeError(f"no subprocess support for {connection.vendor}")


@pytest.fixture(scope="session")
def server_env(django_db_setup: None) -> dict[str, str]:
    """Environment for processes that must share this session's Redis and test database."""
    # The fake push service (tests/notifications/push_service.py) is on http://127.0.0.1, which
    # the worker may send to only with this documented local-testing escape hatch (off by default).
    return process_env(
        DJANGO_SETTINGS_MODULE="dashboard.settings.test",
        DATABASE_URL=_database_url(),
        RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL="1",
    )


def _log_dir() -> Path:
    return Path(os.environ["RUNBOARD_VAR_DIR"])


class ManagedProcess(Process):
    """``args`` run with their log in the session's scratch folder (scripts/harness.py)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        super().__init__(name, args, env=env, log_path=_log_dir() / f"{name}.log")


_worker_started = False


@pytest.fixture(autouse=True)
def _quiet_worker_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that leaves unfinished jobs, end them and wait until the session's worker is
    idle, so the database flush that follows (TRUNCATE on PostgreSQL) never races a job's writes.

    Set up after pytest-django's database fixtures (conftest autouse runs after the plugin's), so
    it is torn down before their flush.
    """
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    from django.utils import timezone

    from jobs.models import Job, JobState

    unfinished = Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING])
    if not unfinished.exists():
        return
    unfinished.update(state=JobState.CANCELLED, finished_at=timezone.now())
    if not _worker_started:
        return
    from dashboard.celery import app

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        active = app.control.inspect(timeout=0.5).active() or {}
        if not any(active.values()):
            return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def celery_worker(server_env: dict[str, str]) -> Iterator[Process]:
    """A real Celery worker (prefork, 2 processes) consuming this session's Redis."""
    global _worker_started
    worker = start_celery_worker("worker", server_env, log_dir=_log_dir(), hostname=f"test-{os.getpid()}")
    _worker_started = True
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def housekeeping_worker(server_env: dict[str, str]) -> Iterator[Process]:
    """The Procfile's housekeeping process (its own queue: the reaper, admission passes asked
    for later, retention) on this session's Redis."""
    process = celery_housekeeping("housekeeping", server_env, log_dir=_log_dir())
    yield process
    process.stop()


class LiveServer(WebServer):
    """The real ASGI server, started with the Procfile's own ``web`` command, on a free port;
    restartable on it (``web``: the current process)."""

    def __init__(self, env: dict[str, str], name: str = "web") -> None:
        super().__init__(env, log_dir=_log_dir(), name=name)


@pytest.fixture(scope="session")
def web_server(server_env: dict[str, str]) -> Iterator[LiveServer]:
    server = LiveServer(server_env)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_server_url(web_server: LiveServer) -> str:
    return web_server.url


@pytest.fixture
def ws_connect(live_server_url: str) -> Iterator[Callable[..., ClientConnection]]:
    """Open a WebSocket to the live server, as ``user`` (or anonymously), from ``origin``."""
    stack = contextlib.ExitStack()

    def open_socket(
        path: str = "/ws/notifications/", *, user: Any = None, origin: str | None = "same"
    ) -> ClientConnection:
        headers = {"Cookie": session_cookie(user)} if user is not None else {}
        return stack.enter_context(
            connect(
                live_server_url.replace("http", "ws", 1) + path,
                origin=live_server_url if origin == "same" else origin,  # type: ignore[arg-type]
                additional_headers=headers,
                open_timeout=10,
            )
        )

    with stack:
        yield open_socket


def receive_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def receive_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    """Collect events until one satisfies ``done`` (included); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; received {[event.get('type') for event in seen]}: {seen[-3:]}")
        try:
            event = receive_json(ws, timeout=remaining)
        except TimeoutError:
            continue
        seen.append(event)
        if done(event):
            return seen


CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Chromium's background services would try the (closed) network at every start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found; `make test` installs Debian's chromium package")
    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls (creating
    # users) are still plain blocking code, so tell Django not to refuse them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    # As the actions' default below: on 2 shared cores under a full suite, a live update can take
    # longer than expect()'s 5 s default (a header test failed so in a CI run, passing alone).
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_server_url: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
