"""A live connection lives only as long as its credential (issue 11 §1, design.md §5b): every
WebSocket and SSE stream, on every web process, closes within 2 s with its documented code when
the session or token it was opened with ends or changes, or the user's privileges change, and
receives nothing after that. Two real web processes (uvicorn) share the session's Redis and
database; the credential is ended through real entry points (HTTP logout, the `tokens` command
in its own process, model saves, group permissions)."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.models import Session
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobs.models import AccessToken
from jobs.tokens import token_create
from notifications import events, inbox
from notifications.models import SocketConnection
from notifications.push import flush, push_event
from tests.conftest import ROOT, LiveServer, receive_json, session_cookie
from tests.notifications.test_sse import EventSource

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN = 2.0  # the required bound, seconds


@pytest.fixture(scope="module")
def web_b(server_env):
    """A second web process, so every close must cross processes through the channel layer."""
    server = LiveServer(server_env, name="web-b")
    yield server.url
    server.stop()


def ws_url(base):
    return base.replace("http", "ws", 1) + "/ws/notifications/"


class Watcher:
    """A socket read in a thread: every frame with its arrival time, and the close code."""

    def __init__(self, base, *, cookie=None, token=None):
        headers = {"Cookie": cookie} if cookie else {"Authorization": f"Bearer {token}"}
        self.ws = connect(ws_url(base), origin=base if cookie else None, additional_headers=headers)
        assert receive_json(self.ws)["type"] == "hello"
        assert receive_json(self.ws)["type"] == "snapshot"
        self.frames: list[dict] = []
        self.code: int | None = None
        self.closed_at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                self.frames.append(json.loads(self.ws.recv()))
        except ConnectionClosed as closed:
            self.closed_at = time.monotonic()
            self.code = closed.rcvd.code if closed.rcvd else None

    def wait_closed(self, timeout=10.0):
        self.thread.join(timeout)
        return self.code

    def close(self):
        with contextlib.suppress(Exception):
            self.ws.close()


class StreamWatcher:
    """An SSE stream read in a thread, recording the `closed` frame's code and its time."""

    def __init__(self, base, *, cookie=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.source = EventSource(base, cookie=cookie, headers=headers)
        assert self.source.response.status == 200
        self.source.until(lambda e: e["type"] == "snapshot")
        self.frames: list[dict] = []
        self.code: int | None = None
        self.closed_at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with contextlib.suppress(Exception):
            while True:
                event = self.source.next_event(timeout=30)
                self.frames.append(event)
                if event["type"] == "closed":
                    self.closed_at = time.monotonic()
                    self.code = event["code"]
                    return

    def wait_closed(self, timeout=10.0):
        self.thread.join(timeout)
        return self.code

    def close(self):
        self.source.close()


@pytest.fixture
def watchers():
    opened: list = []

    def track(watcher):
        opened.append(watcher)
        return watcher

    yield track
    for watcher in opened:
        watcher.close()


def assert_all_closed(connections, code, since):
    for connection in connections:
        assert connection.wait_closed() == code, f"{type(connection).__name__} got {connection.code}"
        assert connection.closed_at - since < WITHIN, f"closed after {connection.closed_at - since:.2f} s"


def test_revoking_a_token_with_the_cli_closes_its_socket_and_stream_on_both_web_processes(
    live_server_url, web_b, make_user, server_env, watchers
):
    user = make_user()
    token, raw = token_create(user=user, name="script")
    other_token, other_raw = token_create(user=user, name="kept")
    on_a = watchers(Watcher(live_server_url, token=raw))
    stream_on_b = watchers(StreamWatcher(web_b, token=raw))
    kept = watchers(Watcher(web_b, token=other_raw))

    # The real command, in its own short-lived process: it must publish the close before exiting.
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "manage.py", "tokens", "revoke", "--user", user.username, str(token.pk)],
        cwd=ROOT, env=server_env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    process_exited = time.monotonic()
    for connection in (on_a, stream_on_b):
        assert connection.wait_closed() == events.CLOSE_NOT_AUTHENTICATED
        # Within 2 s of the command's own work (its interpreter start-up is not the server's).
        assert connection.closed_at - process_exited < WITHIN
    # Nothing is delivered after the close: a notification right after reaches only the kept one.
    inbox.notify(recipient_id=user.pk, title="after the revoke")
    deadline = time.monotonic() + 5
    while not any(f["type"] == "notification.new" for f in kept.frames) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(f["type"] == "notification.new" for f in kept.frames)
    assert kept.code is None
    assert not any(f["type"] == "notification.new" for f in on_a.frames)
    assert not any(f["type"] == "notification.new" for f in stream_on_b.frames)
    with pytest.raises(ConnectionClosed):  # the socket cannot mark_all_read any more
        on_a.ws.send('{"type": "mark_all_read"}')
    assert AccessToken.objects.filter(pk=other_token.pk).exists()
    del started


def test_a_password_change_closes_every_session_socket_and_stream_of_the_user(
    live_server_url, web_b, make_user, watchers
):
    user, bystander = make_user(), make_user()
    cookie = session_cookie(user)
    connections = [
        watchers(Watcher(live_server_url, cookie=cookie)),
        watchers(Watcher(web_b, cookie=session_cookie(user))),
        watchers(StreamWatcher(web_b, cookie=cookie)),
    ]
    _, raw = token_create(user=user, name="survives")
    token_socket = watchers(Watcher(web_b, token=raw))  # a token is its own credential
    other = watchers(Watcher(web_b, cookie=session_cookie(bystander)))

    started = time.monotonic()
    user.set_password("a-brand-new-password")
    user.save()
    assert_all_closed(connections, events.CLOSE_NOT_AUTHENTICATED, started)
    time.sleep(0.5)
    assert token_socket.code is None and other.code is None


def test_logging_out_over_http_on_one_process_closes_that_sessions_connections_on_the_other(
    live_server_url, web_b, make_user, watchers
):
    user = make_user()
    cookie, other_session = session_cookie(user), session_cookie(user)
    on_b = watchers(Watcher(web_b, cookie=cookie))
    stream_on_b = watchers(StreamWatcher(web_b, cookie=cookie))
    same_user_other_session = watchers(Watcher(web_b, cookie=other_session))

    # Log out on web A with the same cookie (Django's LogoutView: a POST with the CSRF token).
    url = urlparse(live_server_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", "/", headers={"Cookie": cookie})
    response = conn.getresponse()
    response.read()
    csrf = next(
        value.split(";")[0].split("=", 1)[1]
        for name, value in response.getheaders()
        if name.lower() == "set-cookie" and value.startswith("csrftoken=")
    )
    started = time.monotonic()
    conn.request(
        "POST", "/logout/", body=f"csrfmiddlewaretoken={csrf}",
        headers={"Cookie": f"{cookie}; csrftoken={csrf}", "Content-Type": "application/x-www-form-urlencoded",
                 "Origin": live_server_url, "Referer": live_server_url + "/"},
    )  # fmt: skip
    assert conn.getresponse().status in (200, 302)
    assert_all_closed([on_b, stream_on_b], events.CLOSE_NOT_AUTHENTICATED, started)
    time.sleep(0.3)
    assert same_user_other_session.code is None


def test_deleting_or_expiring_a_session_closes_its_connections(live_server_url, web_b, make_user, watchers):
    user = make_user()
    deleted_cookie, expiring_cookie = session_cookie(user), session_cookie(user)
    deleted = [
        watchers(Watcher(live_server_url, cookie=deleted_cookie)),
        watchers(StreamWatcher(web_b, cookie=deleted_cookie)),
    ]
    started = time.monotonic()
    # As the admin or `clearsessions` would: a queryset delete.
    Session.objects.filter(session_key=deleted_cookie.split("=", 1)[1]).delete()
    assert_all_closed(deleted, events.CLOSE_NOT_AUTHENTICATED, started)

    # A session that simply runs out: its connections close at its expiry, with no event at all.
    key = expiring_cookie.split("=", 1)[1]
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() + timedelta(seconds=3))
    expires = time.monotonic() + 3
    expiring = [
        watchers(Watcher(web_b, cookie=expiring_cookie)),
        watchers(StreamWatcher(live_server_url, cookie=expiring_cookie)),
    ]
    assert_all_closed(expiring, events.CLOSE_NOT_AUTHENTICATED, expires)


def test_an_expiring_token_closes_its_connections_at_its_expiry(live_server_url, web_b, make_user, watchers):
    user = make_user()
    _, raw = token_create(user=user, name="short", expires_in_days=3 / 86400)
    expires = time.monotonic() + 3
    connections = [watchers(Watcher(live_server_url, token=raw)), watchers(StreamWatcher(web_b, token=raw))]
    assert_all_closed(connections, events.CLOSE_NOT_AUTHENTICATED, expires)


def test_deactivation_closes_with_4403_and_changed_privileges_with_4412(
    live_server_url, web_b, make_user, watchers
):
    staff, member, deactivated = make_user(is_staff=True), make_user(), make_user()
    group = Group.objects.create(name="operators")
    group.permissions.add(Permission.objects.get(codename="view_job"))
    member.groups.add(group)
    staff_connections = [
        watchers(Watcher(live_server_url, cookie=session_cookie(staff))),
        watchers(StreamWatcher(web_b, cookie=session_cookie(staff))),
    ]
    member_sockets = [watchers(Watcher(web_b, cookie=session_cookie(member)))]
    deactivated_sockets = [watchers(Watcher(live_server_url, cookie=session_cookie(deactivated)))]
    # A login (which saves last_login) changes nothing: nobody is closed by it.
    staff.last_login = timezone.now()
    staff.save(update_fields=["last_login"])
    time.sleep(0.3)
    assert all(c.code is None for c in staff_connections)

    started = time.monotonic()
    staff.is_staff = False
    staff.save()
    group.permissions.clear()  # the group's permissions change: its members' connections close
    deactivated.is_active = False
    deactivated.save()
    assert_all_closed(staff_connections, events.CLOSE_PRIVILEGES_CHANGED, started)
    assert_all_closed(member_sockets, events.CLOSE_PRIVILEGES_CHANGED, started)
    assert_all_closed(deactivated_sockets, events.CLOSE_FORBIDDEN, started)


@pytest.fixture(scope="module")
def fast_heartbeat(server_env):
    server = LiveServer(dict(server_env, RUNBOARD_SOCKET_HEARTBEAT="1"), name="web-fast-heartbeat")
    yield server.url
    server.stop()


def test_a_credential_ended_behind_the_services_back_is_caught_by_the_heartbeat(
    fast_heartbeat, make_user, watchers
):
    """The safety net: a token deleted by raw SQL (no signal, no close message) and a staff flag
    cleared by a queryset update still close their connections at the next heartbeat."""
    user, staff = make_user(), make_user(is_staff=True)
    token, raw = token_create(user=user, name="raw")
    token_socket = watchers(Watcher(fast_heartbeat, token=raw))
    stream = watchers(StreamWatcher(fast_heartbeat, token=raw))
    staff_socket = watchers(Watcher(fast_heartbeat, cookie=session_cookie(staff)))
    started = time.monotonic()
    AccessToken.objects.filter(pk=token.pk)._raw_delete(AccessToken.objects.db)
    type(staff).objects.filter(pk=staff.pk).update(is_staff=False)
    assert token_socket.wait_closed() == events.CLOSE_NOT_AUTHENTICATED
    assert staff_socket.wait_closed() == events.CLOSE_PRIVILEGES_CHANGED
    assert stream.wait_closed() == events.CLOSE_NOT_AUTHENTICATED
    # One heartbeat interval (1 s) and its batching margin, plus the close itself.
    assert max(token_socket.closed_at, staff_socket.closed_at, stream.closed_at) - started < 1 + WITHIN
    deadline = time.monotonic() + 5
    while SocketConnection.objects.filter(token_id=token.pk).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not SocketConnection.objects.filter(token_id=token.pk).exists()


def test_a_busy_stream_keeps_its_heartbeat_so_a_credential_ended_behind_the_services_back_closes_it(
    fast_heartbeat, make_user, watchers
):
    """Found by review: an SSE stream ran its heartbeat only after a quiet keepalive interval, so
    while events flowed its presence row went stale and a raw-SQL revoke never closed it (465
    events in 20 s after). Now the heartbeat comes on time, busy or not."""
    user = make_user()
    token, raw = token_create(user=user, name="busy")
    stream = watchers(StreamWatcher(fast_heartbeat, token=raw))
    busy = threading.Event()

    def keep_it_busy():
        while not busy.is_set():
            push_event(group=events.user_group(user.pk), event={"type": "test.busy"})
            flush(timeout=1)
            time.sleep(0.1)

    pusher = threading.Thread(target=keep_it_busy, daemon=True)
    pusher.start()
    try:
        time.sleep(3)  # three heartbeats of 1 s, each with events in between
        seen = SocketConnection.objects.filter(token_id=token.pk).values_list("seen_at", flat=True).first()
        assert seen is not None and (timezone.now() - seen).total_seconds() < 2 + WITHIN
        started = time.monotonic()
        AccessToken.objects.filter(pk=token.pk)._raw_delete(AccessToken.objects.db)
        assert stream.wait_closed() == events.CLOSE_NOT_AUTHENTICATED
        assert stream.closed_at - started < 1 + WITHIN
    finally:
        busy.set()
        pusher.join(5)
    assert sum(1 for frame in stream.frames if frame["type"] == "test.busy") > 10


def test_a_session_shortened_through_the_session_api_closes_its_connections_at_the_new_end(
    live_server_url, web_b, make_user, watchers
):
    """Found by review: ``set_expiry`` moved the end date, but the connections kept the one
    they opened with until the next heartbeat, and meanwhile received and acted."""
    from django.contrib.sessions.backends.db import SessionStore

    user = make_user()
    cookie = session_cookie(user)
    connections = [
        watchers(Watcher(live_server_url, cookie=cookie)),
        watchers(StreamWatcher(web_b, cookie=cookie)),
    ]
    store = SessionStore(cookie.split("=", 1)[1])
    store.load()
    store.set_expiry(2)
    store.save()
    assert_all_closed(connections, events.CLOSE_NOT_AUTHENTICATED, time.monotonic() + 2)


def test_a_basic_authorization_header_from_a_proxy_in_front_leaves_the_session_sign_in_alone(
    live_server_url, make_user
):
    """Found by review: behind a proxy using HTTP Basic auth, every socket closed with 4401."""
    import requests

    user = make_user()
    cookie = session_cookie(user)
    basic = {"Authorization": "Basic cHJveHk6cGFzcw==", "Cookie": cookie}
    with connect(ws_url(live_server_url), origin=live_server_url, additional_headers=basic) as ws:
        assert receive_json(ws)["type"] == "hello"
    assert requests.get(f"{live_server_url}/api/v1/jobs/", headers=basic, timeout=10).status_code == 200
    stream = EventSource(live_server_url, cookie=cookie, headers={"Authorization": basic["Authorization"]})
    assert stream.response.status == 200
    stream.close()
    # Without Origin, a Basic header is not a token: a cookie still needs the browser's Origin.
    with pytest.raises(Exception):  # noqa: B017 - websockets' InvalidStatus (HTTP 403)
        connect(ws_url(live_server_url), additional_headers=basic, open_timeout=5)


def spend_catch_up_budget(base, user, loops=3):
    """Read the user's whole history from 0 a few times over SSE: their catch-up budget on that
    web process is then spent, so the next catch-up has to wait for it."""
    for _ in range(loops):
        source = EventSource(base, cookie=session_cookie(user), last_event_id=0)
        source.until(lambda e: e["type"] == "snapshot", timeout=60)
        source.close()


def test_a_credential_that_ends_during_a_catch_up_stops_it_on_both_transports(live_server_url, make_user):
    """Found by review: a stream revoked while its catch-up paged (waiting on the user's budget)
    went on to send 999 notifications and the snapshot, and closed 5.6 s later; a socket paging
    with `resume` sent two more pages. Now the close is acted on between frames and while waiting."""
    from tests.notifications.test_catch_up import missed

    user = make_user()
    missed(user, 1000, body="x" * 4000)
    spend_catch_up_budget(live_server_url, user)
    _, raw = token_create(user=user, name="paging")
    source = EventSource(live_server_url, headers={"Authorization": f"Bearer {raw}"}, last_event_id=0)
    assert source.next_event(timeout=30)["type"] == "hello"
    while source.next_event(timeout=30)["type"] != "notification.new":
        pass
    revoked_at = time.monotonic()
    AccessToken.objects.filter(user=user).delete()
    after = []
    while (event := source.next_event(timeout=30))["type"] != "closed":
        after.append(event["type"])
    closed_after = time.monotonic() - revoked_at
    source.close()
    assert event["code"] == events.CLOSE_NOT_AUTHENTICATED
    assert "snapshot" not in after and closed_after < WITHIN, (closed_after, len(after))
    # What was on its way when the revoke landed (a page in the socket's buffers), not the rest.
    assert after.count("notification.new") < 999, len(after)

    spend_catch_up_budget(live_server_url, user)
    _, raw = token_create(user=user, name="paging socket")
    url = ws_url(live_server_url) + "?last_notification_id=0"
    with connect(url, additional_headers={"Authorization": f"Bearer {raw}"}) as ws:
        assert receive_json(ws, timeout=30)["type"] == "hello"  # its catch-up waits on the budget
        AccessToken.objects.filter(user=user).delete()
        revoked_at = time.monotonic()
        later = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                later.append(receive_json(ws, timeout=30)["type"])
    assert closed.value.rcvd.code == events.CLOSE_NOT_AUTHENTICATED
    assert time.monotonic() - revoked_at < WITHIN and "snapshot" not in later, later
    assert later.count("notification.new") <= 100, later
