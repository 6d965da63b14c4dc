"""What every connect and every idle socket costs the server, kept honest: who the socket belongs
to (session or token), its presence row (the per-user cap, dead processes' rows), and the
heartbeat one shared task sends to every socket."""

import contextlib
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobs.tokens import token_create
from notifications.models import SocketConnection
from notifications.realtime import presence
from tests.conftest import LiveServer, receive_json, receive_until, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT = 0.5


def greet(ws):
    assert receive_json(ws)["type"] == "hello"
    assert receive_json(ws)["type"] == "snapshot"


# --- presence rows ---------------------------------------------------------------------------


def test_socket_open_caps_fresh_sockets_and_clears_only_this_users_dead_rows(make_user):
    user, other = make_user(), make_user()
    long_ago = timezone.now() - presence.socket_fresh_for() - timedelta(minutes=1)
    for owner, name in [(user, "dead.user!1"), (other, "dead.other!1")]:
        presence.socket_open(channel_name=name, user_id=owner.pk, session_key="")
        SocketConnection.objects.filter(channel_name=name).update(seen_at=long_ago)
    names = [f"live.user!{i:02d}" for i in range(presence.MAX_SOCKETS_PER_USER)]
    for name in names:
        assert presence.socket_open(channel_name=name, user_id=user.pk, session_key="s") == []
    assert not SocketConnection.objects.filter(channel_name="dead.user!1").exists()
    assert SocketConnection.objects.filter(channel_name="dead.other!1").exists()  # not this user's

    # Opening the same channel again only refreshes its row (no duplicate, no error).
    SocketConnection.objects.filter(channel_name=names[0]).update(seen_at=long_ago + timedelta(seconds=1))
    assert presence.socket_open(channel_name=names[0], user_id=user.pk, session_key="s2") == []
    row = SocketConnection.objects.get(channel_name=names[0])
    assert row.session_key == "s2" and row.seen_at > timezone.now() - timedelta(minutes=1)

    # One socket over the cap: the oldest opened goes (ties broken by channel name, newest first).
    SocketConnection.objects.filter(user=user).update(opened_at=timezone.now() - timedelta(hours=1))
    SocketConnection.objects.filter(channel_name=names[5]).update(
        opened_at=timezone.now() - timedelta(hours=2)
    )
    assert presence.socket_open(channel_name="live.user!new", user_id=user.pk, session_key="") == [names[5]]
    assert SocketConnection.objects.filter(user=user).count() == presence.MAX_SOCKETS_PER_USER


def test_socket_seen_refreshes_one_row_or_a_batch(make_user):
    user = make_user()
    long_ago = timezone.now() - timedelta(hours=1)
    names = [f"seen!{i}" for i in range(presence.BATCH_SIZE + 3)]
    SocketConnection.objects.bulk_create(
        [SocketConnection(channel_name=n, user=user, seen_at=long_ago) for n in names]
    )
    presence.socket_seen(channel_name=names[0])
    assert SocketConnection.objects.filter(seen_at__gt=long_ago).count() == 1
    presence.socket_seen(channel_name=names[1:])
    assert not SocketConnection.objects.filter(seen_at=long_ago).exists()


# --- who the socket belongs to ---------------------------------------------------------------


def test_a_session_whose_password_changed_is_refused(ws_connect, live_server_url, make_user):
    user = make_user()
    cookie = session_cookie(user)
    user.set_password("a-new-password")
    user.save()
    url = live_server_url.replace("http", "ws", 1) + "/ws/notifications/"
    with connect(url, origin=live_server_url, additional_headers={"Cookie": cookie}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 4401


def test_a_token_wins_over_a_session_cookie_and_its_socket_is_no_sessions(live_server_url, make_user):
    owner, someone = make_user(), make_user()
    _, raw = token_create(user=owner, name="ws")
    url = live_server_url.replace("http", "ws", 1) + "/ws/notifications/"
    headers = {"Authorization": f"Bearer {raw}", "Cookie": session_cookie(someone)}
    with connect(url, additional_headers=headers) as ws:
        assert receive_json(ws)["user"]["id"] == owner.pk
        assert receive_json(ws)["type"] == "snapshot"
        row = SocketConnection.objects.get(user=owner)
        assert row.session_key == ""  # logging the cookie's session out does not close it
        assert not SocketConnection.objects.filter(user=someone).exists()


# --- heartbeats ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_heartbeat_url(server_env):
    server = LiveServer(dict(server_env, RUNBOARD_SOCKET_HEARTBEAT=str(HEARTBEAT)), name="web-heartbeat")
    yield server.url
    server.stop()


def test_every_socket_gets_heartbeats_and_its_row_stays_fresh(fast_heartbeat_url, make_user):
    url = fast_heartbeat_url.replace("http", "ws", 1) + "/ws/notifications/"
    users = [make_user() for _ in range(2)]
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(
                connect(url, origin=fast_heartbeat_url, additional_headers={"Cookie": session_cookie(u)})
            )
            for u in users
            for _ in range(2)
        ]
        for ws in sockets:
            greet(ws)
        sockets.pop(0).close()  # one socket leaves: the others keep beating
        long_ago = timezone.now() - timedelta(hours=1)
        SocketConnection.objects.update(seen_at=long_ago)
        started = time.monotonic()
        for ws in sockets:
            beats = [receive_until(ws, lambda e: e["type"] == "heartbeat", timeout=10)[-1] for _ in range(3)]
            assert all(set(beat) == {"type", "server_time"} for beat in beats)
        # Three beats each within a few intervals (generous: the machine is shared).
        assert time.monotonic() - started < 20 * HEARTBEAT
        rows = SocketConnection.objects.filter(user__in=users)
        assert rows.count() == 3 and not rows.filter(seen_at=long_ago).exists()
    deadline = time.monotonic() + 10
    while SocketConnection.objects.filter(user__in=users).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not SocketConnection.objects.filter(user__in=users).exists()
