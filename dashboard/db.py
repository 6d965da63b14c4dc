"""Database calls from async code: Channels' ``database_sync_to_async``, with one kept connection for
the sockets' shared database thread.

Why: a connect storm is bound by Channels' single database thread, and with ``CONN_MAX_AGE = 0``
(the default under ASGI, see settings) every trip to it opened and closed a connection: on SQLite,
41.4 ms of CPU per connect against 38.5 ms with this thread's connection kept (bench/
socket_db_connection.py, 1,000 clients at once; issue 15). Keeping them for every thread is unsafe
under ASGI (Django gives each HTTP request, and so each SSE stream, a thread of its own: a kept
connection there leaks or pins a backend for hours). The sockets' thread is different: asgiref
runs every thread-sensitive call made outside a request (WebSocket consumers and their middleware)
in one process-wide thread, so a connection kept there is one per web process, reused by every
socket.

So: on that thread the connection is reused by every call for ``RUNBOARD_SOCKET_DB_CONN_MAX_AGE``
seconds (default 60) from its opening, and replaced by the first call after that (an idle
process keeps its one connection until then); Django's health check runs before each call's first
query (one ``SELECT 1``, so a database restart costs no failed call), and PostgreSQL connections
carry libpq timeouts (settings: a silent host fails them in ~10 s, not the kernel's ~15 min). An
error, Django's autocommit left off, or a transaction left open on the server (a raw ``BEGIN``)
closes it. Calls on this path must not change session state (``SET``, session advisory locks,
held cursors): it would carry over to the next user's call, as under a transaction-mode pooler.
On every other thread this is Channels' own class, unchanged.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from asgiref.sync import SyncToAsync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from channels.db import DatabaseSyncToAsync
from django.db import close_old_connections, connections

from dashboard.conf import app_settings


def on_the_shared_thread() -> bool:
    """Whether this is asgiref's process-wide thread for thread-sensitive calls made outside any
    request (``SyncToAsync.single_thread_executor``): where Channels' consumers reach the database.
    False if asgiref no longer exposes it (then connections are per use, as before)."""
    threads = getattr(SyncToAsync.single_thread_executor, "_threads", ())
    return threading.current_thread() in threads


def keep_connections(max_age: float) -> None:
    """Give each connection this thread opened since the last call a life of ``max_age`` seconds
    from now, with a health check before each use; a connection already given one keeps its end.
    Does nothing to a connection whose settings keep it longer (``CONN_MAX_AGE`` None or larger).
    Closes instead a PostgreSQL connection left inside a transaction (a raw ``BEGIN``)."""
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is not None and _in_a_server_transaction(raw):
            conn.close()  # the next user's call must not run inside this one's transaction
            continue
        # The object itself, not its id(): a new connection can reuse a closed one's id.
        if raw is None or getattr(conn, "_runboard_kept", None) is raw:
            continue
        conn._runboard_kept = raw  # type: ignore[attr-defined]  # our mark on Django's wrapper
        configured = conn.settings_dict["CONN_MAX_AGE"]
        if configured is None or configured >= max_age:
            continue
        conn.close_at = time.monotonic() + max_age
        conn.health_check_enabled = True  # type: ignore[attr-defined]  # set by connect(); stubs lack it


def _in_a_server_transaction(raw: Any) -> bool:
    """Whether a PostgreSQL connection is inside a transaction (psycopg tracks it client-side: no
    round trip). Django's ``close_old_connections`` only sees its own autocommit flag."""
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)
    return status is not None and status.name != "IDLE"


class SocketDatabaseSyncToAsync(DatabaseSyncToAsync):
    """``channels.db.DatabaseSyncToAsync`` that keeps the shared thread's connection (see above)."""

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        max_age = app_settings.SOCKET_DB_CONN_MAX_AGE if on_the_shared_thread() else 0.0
        close_old_connections()
        try:
            # Channels' parent would close the connection around the call; skip to asgiref's.
            return SyncToAsync.thread_handler(self, loop, *args, **kwargs)
        finally:
            if max_age > 0:
                keep_connections(max_age)
            close_old_connections()


# Used as Channels' is: a callable or a decorator.
database_sync_to_async = SocketDatabaseSyncToAsync


class CloseConnectionsBeforeStreaming:
    """Django middleware (outermost): a streaming response (a file or log download, an SSE stream)
    is sent after the view returns, for as long as the client takes, and Django closes the
    request's database connections only when it ends. Close them when the view is done instead
    (as ``close_old_connections`` would at the end: an operator's ``CONN_MAX_AGE`` still
    applies), so a slow reader holds no database connection. Found in review (issue 15): 10 slow
    downloads held 10 PostgreSQL connections for 60-90 s each, with nothing capping them."""

    sync_capable = True
    async_capable = True  # no thread hop added to requests that stream nothing

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self._acall(request)
        response = self.get_response(request)
        if getattr(response, "streaming", False):
            close_old_connections()
        return response

    async def _acall(self, request: Any) -> Any:
        response = await self.get_response(request)
        if getattr(response, "streaming", False):
            # Thread-sensitive: the request's own thread, whose connection it is.
            await sync_to_async(close_old_connections)()
        return response
