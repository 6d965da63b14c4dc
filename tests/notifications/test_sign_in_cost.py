"""A socket's sign-in is cheap (issue 15 §2, the sign-in storm): one trip to Channels' database
thread, powers in one query, on a kept connection, with the same answers as before.

Every connect of a web process runs its database work on one thread, one connect after another,
so each statement and each trip there delays every other connect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Permission
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.permissions import Power, has_power, powers_by_user, powers_of
from notifications import auth, events
from notifications.credentials import session_sign_in
from tests.conftest import grant_powers, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _scope_for(cookie: str) -> dict:
    key = cookie.split("=", 1)[1]
    return {"session": SessionStore(key)}


def test_a_session_sign_in_reads_session_user_and_powers_in_three_statements(make_user):
    user = make_user()
    grant_powers(user, Power.VIEW_ALL_JOBS)
    scope = _scope_for(session_cookie(user))

    with CaptureQueriesContext(connection) as queries:
        signed_in, credential = session_sign_in(scope)

    # The session row, the user row, the powers (direct or through a group): before, the powers
    # were two more queries through the auth backends, in a second trip to the database thread.
    assert len(queries) == 3, [q["sql"] for q in queries]
    assert signed_in.pk == user.pk
    assert credential is not None and credential.powers == frozenset({Power.VIEW_ALL_JOBS})
    assert credential.session_key == scope["session"].session_key


def test_a_sign_in_with_a_changed_password_is_anonymous_and_has_no_credential(make_user):
    user = make_user()
    scope = _scope_for(session_cookie(user))
    user.set_password("another-password-123")
    user.save()

    signed_in, credential = session_sign_in(scope)

    assert not signed_in.is_authenticated
    assert credential is None


def test_the_socket_middleware_signs_in_with_one_trip_to_the_database_thread(make_user, monkeypatch):
    user = make_user()
    cookie = session_cookie(user)
    trips: list[str] = []
    real = auth.database_sync_to_async

    def counting(func):
        trips.append(getattr(func, "__name__", repr(func)))
        return real(func)

    monkeypatch.setattr(auth, "database_sync_to_async", counting)
    seen: dict = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    middleware = auth.SocketAuthMiddleware(inner)
    scope = {"type": "websocket", "headers": [(b"cookie", cookie.encode())], "path": "/ws/notifications/"}
    # In a thread of its own: a browser test earlier in the run may leave an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(async_to_sync(middleware), scope, None, None).result(timeout=30)

    assert trips == ["session_sign_in"]
    assert seen["user"].pk == user.pk
    assert seen["credential"].user_id == user.pk
    # The socket keeps the session's key, not its loaded data.
    assert seen["session"].session_key == cookie.split("=", 1)[1]


@pytest.mark.parametrize("how", ["none", "direct", "group", "superuser", "inactive"])
def test_powers_of_one_user_agree_with_has_perm_and_with_the_heartbeats_batch_read(make_user, how):
    user = make_user(is_superuser=how == "superuser", is_active=how != "inactive")
    if how == "direct":
        user.user_permissions.add(Permission.objects.get(codename=Power.BROADCAST.codename))
    if how in ("group", "inactive"):
        grant_powers(user, Power.USE_OPERATOR_VIEW, Power.CONTROL_QUEUES)
    user = type(user).objects.get(pk=user.pk)  # no permission cache

    with CaptureQueriesContext(connection) as queries:
        powers = powers_of(user)

    assert len(queries) == (1 if how in ("none", "direct", "group") else 0)
    assert powers == frozenset(p for p in Power if has_power(user, p))
    assert powers == powers_by_user([user.pk]).get(user.pk, frozenset())


def test_web_processes_open_a_database_connection_per_use_under_asgi():
    # A default of 60 s (tried for the sign-in storm) kept a connection per HTTP request thread
    # until garbage collection and pinned one per open SSE stream: Django's ASGI handler gives
    # each request, and so each stream, a thread of its own (found by review).
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0


def test_a_connects_credential_recheck_reads_the_sessions_end_in_the_same_three_statements(make_user):
    from django.contrib.sessions.models import Session

    from notifications.credentials import credential_check

    user = make_user()
    _, credential = session_sign_in(_scope_for(session_cookie(user)))
    assert credential is not None

    with CaptureQueriesContext(connection) as queries:
        problem, expires_at = credential_check("specific.channel!1", credential)

    # The user, the session (with its end date), the powers: the end date was a fourth query.
    assert len(queries) == 3, [q["sql"] for q in queries]
    assert problem is None
    row = Session.objects.get(session_key=credential.session_key)
    assert expires_at == row.expire_date.timestamp()

    Session.objects.filter(session_key=credential.session_key).delete()
    assert credential_check("specific.channel!1", credential)[0] == events.CLOSE_NOT_AUTHENTICATED
