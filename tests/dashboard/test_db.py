"""The sockets' shared database thread keeps one connection; every other thread opens one per call
(dashboard/db.py, issue 15 §2). Counted by Django's ``connection_created`` signal, per thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.test import override_settings

from dashboard.db import database_sync_to_async
from tests.support.slow_clients import run_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The name of the thread of each database connection opened while the test runs."""
    names: list[str] = []

    def record(sender: Any, connection: Any, **kwargs: Any) -> None:
        names.append(threading.current_thread().name)

    connection_created.connect(record)
    # Start from no kept connection: an earlier test may have left one on the shared thread.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
    yield names
    connection_created.disconnect(record)
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


def query() -> str:
    """One real statement, as a socket's trip makes; the thread it ran on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return threading.current_thread().name


def test_the_sockets_shared_database_thread_reuses_one_connection_across_calls(opened):
    async def main() -> list[str]:
        return [await database_sync_to_async(query)() for _ in range(5)]

    threads = run_async(main(), timeout=60)

    assert len(set(threads)) == 1  # Channels' single database thread
    assert opened == threads[:1]  # before: one connection per call, 5


def test_a_request_s_thread_still_opens_a_connection_per_call(opened):
    # Django's ASGI handler runs each request (each SSE stream) in a ThreadSensitiveContext: a
    # thread of its own, where a kept connection would leak or pin a backend for hours.
    async def main() -> list[str]:
        async with ThreadSensitiveContext():
            return [await database_sync_to_async(query)() for _ in range(3)]

    threads = run_async(main(), timeout=60)

    shared = SyncToAsync.single_thread_executor.submit(lambda: threading.current_thread().name).result()
    assert shared not in threads
    assert len(opened) == 3 and set(opened) == set(threads)


def test_the_kept_connection_is_replaced_after_its_maximum_age(opened):
    async def main() -> None:
        await database_sync_to_async(query)()
        time.sleep(0.3)
        await database_sync_to_async(query)()
        await database_sync_to_async(query)()

    with override_settings(RUNBOARD_SOCKET_DB_CONN_MAX_AGE=0.2):
        run_async(main(), timeout=60)

    assert len(opened) == 2


def test_a_setting_of_zero_opens_a_connection_per_call_on_the_shared_thread_too(opened):
    async def main() -> None:
        for _ in range(3):
            await database_sync_to_async(query)()

    with override_settings(RUNBOARD_SOCKET_DB_CONN_MAX_AGE=0):
        run_async(main(), timeout=60)

    assert len(opened) == 3


def test_a_kept_connection_the_database_ended_costs_no_failed_call(opened):
    # As after a database restart or an idle timeout: the server ends the kept connection. Django's
    # health check (on for the kept connection) notices before the next call's first query.
    if connection.vendor != "postgresql":
        pytest.skip("a server that ends connections: SQLite has none")

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    def terminate(pid: int) -> None:  # from another connection, as an administrator would
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            connection.close()
        time.sleep(0.2)

    async def main() -> None:
        pid = await database_sync_to_async(backend_pid)()
        await asyncio.to_thread(terminate, pid)
        assert await database_sync_to_async(backend_pid)() != pid

    run_async(main(), timeout=60)

    assert len(opened) == 3  # the kept one, its replacement, and the administrator's


def test_a_call_that_fails_in_a_transaction_leaves_no_broken_connection_behind(opened):
    from django.db import DatabaseError, transaction

    def fail_in_a_transaction() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    async def main() -> str:
        await database_sync_to_async(query)()
        with pytest.raises(DatabaseError):
            await database_sync_to_async(fail_in_a_transaction)()
        return await database_sync_to_async(query)()

    assert run_async(main(), timeout=60)


def test_a_transaction_left_open_on_the_server_does_not_carry_into_the_next_call(opened):
    # Found by review: a raw BEGIN (not Django's atomic()) left the kept connection inside a
    # transaction, and the next user's call ran in it; Django only checks its own autocommit flag.
    if connection.vendor != "postgresql":
        pytest.skip("psycopg's transaction status: SQLite's module keeps no such flag")

    def begin_and_leave() -> None:
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")

    def in_transaction() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now() = statement_timestamp()")
            return not cursor.fetchone()[0]  # inside a transaction, now() is its start

    async def main() -> bool:
        await database_sync_to_async(begin_and_leave)()
        await asyncio.sleep(0.05)
        return await database_sync_to_async(in_transaction)()

    assert run_async(main(), timeout=60) is False
    assert len(opened) == 2


def test_a_postgresql_connection_carries_timeouts_so_a_silent_host_fails_in_seconds():
    # Found by review: the kept connection's health check on a host that went silent (a failover
    # moving the address) would block the sockets' thread for the kernel's ~15 min of retries,
    # and every socket's database call behind it. libpq's timeouts bound it; read back from the
    # live connection, so a setting libpq ignored would fail here.
    if connection.vendor != "postgresql":
        pytest.skip("libpq's parameters")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    given = {o.keyword.decode(): o.val for o in connection.connection.pgconn.info if o.val is not None}
    assert given["tcp_user_timeout"] == b"10000"
    assert given["connect_timeout"] == b"10"
    assert given["keepalives"] == b"1" and int(given["keepalives_idle"]) <= 30


def test_a_download_holds_no_database_connection_while_the_client_reads_it(make_user):
    # Found by review: Django closes a request's connection when its response ends, so each slow
    # download held one (10 slow readers, 10 PostgreSQL connections for 60-90 s).
    from django.test import Client

    from tests.jobs.factories import make_job_with_file

    user = make_user()
    job = make_job_with_file(owner=user, name="export.csv", content=b"a,b\n" * 100_000)
    client = Client()
    client.force_login(user)

    response = client.get(f"/api/v1/jobs/{job.id}/download/")

    assert response.status_code == 200 and response.streaming
    assert connection.connection is None  # closed before the first byte is read
    assert b"".join(response.streaming_content).startswith(b"a,b\n")
    response.close()
