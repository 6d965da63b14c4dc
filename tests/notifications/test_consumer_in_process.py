"""The WebSocket consumer in this process (asgiref's ApplicationCommunicator, what Channels'
WebsocketCommunicator wraps), without a server: a resume that pages, with live notifications
held back until the last page, exactly once and in order (docs/protocol.md, *Resume*)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.test import Client

from notifications import events, inbox, selectors
from notifications.credentials import session_credential
from notifications.models import Notification, NotificationState, SocketConnection
from notifications.realtime.consumer import NotificationConsumer
from tests.support.slow_clients import run_async

pytestmark = pytest.mark.django_db(transaction=True)


class Socket:
    def __init__(self, user, credential, query=b""):
        scope = {
            "type": "websocket",
            "path": "/ws/notifications/",
            "query_string": query,
            "headers": [],
            "subprotocols": [],
            "user": user,
            "credential": credential,
        }
        self.communicator = ApplicationCommunicator(NotificationConsumer.as_asgi(), scope)

    async def open(self):
        await self.communicator.send_input({"type": "websocket.connect"})
        assert (await self.communicator.receive_output(10))["type"] == "websocket.accept"

    async def receive(self, timeout=10):
        message = await self.communicator.receive_output(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def send(self, event):
        await self.communicator.send_input({"type": "websocket.receive", "text": json.dumps(event)})

    async def close(self):
        await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait(10)


def test_a_paged_resume_holds_live_notifications_until_its_last_page(make_user):
    user = make_user()
    Notification.objects.bulk_create([Notification(recipient=user, title=f"n{i}") for i in range(250)])
    NotificationState.objects.create(user=user, unread_count=250)
    missed = list(Notification.objects.filter(recipient=user).order_by("pk").values_list("pk", flat=True))

    client = Client()
    client.force_login(user)
    credential = session_credential(user, client.session.session_key)

    async def run():
        socket = Socket(user, credential, b"last_notification_id=0")
        await socket.open()
        assert (await socket.receive())["type"] == "hello"
        ids, live, pages = [], [], 0
        while True:
            event = await socket.receive()
            if event["type"] == "notification.new":
                ids.append(event["notification"]["id"])
            elif event["type"] == "replay.more":
                pages += 1
                if pages == 1:  # created while the catch-up pages: held, then sent once
                    for i in range(3):
                        live.append(
                            (await sync_to_async(inbox.notify)(recipient_id=user.pk, title=f"live {i}")).pk
                        )
                    await asyncio.sleep(0.5)  # let them reach the socket (held) before it resumes
                await socket.send({"type": "resume", "last_notification_id": event["last_notification_id"]})
            elif event["type"] == "snapshot":
                break
        # Live ones held during the catch-up come right after the snapshot, unless a page had them.
        while len(set(ids)) < len(missed) + len(live):
            event = await socket.receive()
            if event["type"] == "notification.new":
                ids.append(event["notification"]["id"])
        assert await socket.communicator.receive_nothing(0.5)
        await socket.close()
        return ids, pages

    # A thread of its own: a browser test earlier in the session leaves Playwright's event loop
    # set on this one, where asyncio.run() refuses to start another.
    ids, pages = run_async(run(), timeout=120)
    assert pages == len(missed) // selectors.REPLAY_PAGE
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 253


def test_a_credential_that_ends_between_the_sign_in_check_and_the_socket_row_closes_the_socket(make_user):
    """The race found by review: the sign-in was checked, then a logout committed before the
    socket's row existed, so the logout found no connection to close (36 of 56 racing sockets
    stayed open until the heartbeat). The consumer checks again once its row is written."""
    user = make_user()
    client = Client()
    client.force_login(user)
    credential = session_credential(user, client.session.session_key)  # what the middleware saw
    client.logout()  # commits before the consumer records its row

    async def run():
        socket = Socket(user, credential)
        await socket.open()
        assert (await socket.receive())["type"] == "hello"
        closing = await socket.communicator.receive_output(10)
        assert closing == {"type": "websocket.close", "code": events.CLOSE_NOT_AUTHENTICATED}
        assert await socket.communicator.receive_nothing(0.3)  # no snapshot, nothing after
        await socket.close()  # the server's disconnect after the close: the row goes

    # In a thread of its own: an earlier browser test may leave an event loop set on this one.
    run_async(run(), timeout=60)
    assert not SocketConnection.objects.filter(user=user).exists()


def test_a_resume_sent_right_after_the_credential_ended_gets_no_page(make_user):
    """Found by review: a `resume` that arrived before the revoke's close message got a page of
    100 (17 of 20 trials). A later catch-up step checks the credential in its own trip."""
    user = make_user()
    Notification.objects.bulk_create([Notification(recipient=user, title=f"n{i}") for i in range(250)])
    NotificationState.objects.create(user=user, unread_count=250)
    client = Client()
    client.force_login(user)
    credential = session_credential(user, client.session.session_key)

    async def run():
        socket = Socket(user, credential, b"last_notification_id=0")
        await socket.open()
        while (event := await socket.receive())["type"] != "replay.more":
            pass
        await sync_to_async(client.logout)()  # the close message may come after the resume
        await socket.send({"type": "resume", "last_notification_id": event["last_notification_id"]})
        after = []
        while (output := await socket.communicator.receive_output(10))["type"] == "websocket.send":
            after.append(json.loads(output["text"])["type"])
        assert output == {"type": "websocket.close", "code": events.CLOSE_NOT_AUTHENTICATED}
        assert "notification.new" not in after and "snapshot" not in after, after
        await socket.close()

    run_async(run(), timeout=60)  # (a browser test may leave a loop set on this one)


def test_a_close_code_the_client_chose_is_not_counted_as_the_servers_decision(make_user):
    """Found by review: a client closing with 4503 or 4403 raised the counts alerts watch for the
    server's own closes; the server's codes are counted as sent, a client's Runboard code as other."""
    from prometheus_client import generate_latest

    from dashboard import metrics
    from tests.dashboard.test_metrics import samples, value

    user = make_user()
    client = Client()
    client.force_login(user)
    credential = session_credential(user, client.session.session_key)

    def closes(code: str) -> float:
        text = generate_latest(metrics.scrape_registry()).decode()
        return value(samples(text), "runboard_socket_closes_total", transport="websocket", code=code)

    async def scenario():
        socket = Socket(user, credential)
        await socket.open()
        await socket.receive()  # hello
        await socket.receive()  # snapshot
        await socket.communicator.send_input({"type": "websocket.disconnect", "code": 4503})
        await socket.communicator.wait(10)

    before = closes("4503"), closes("other")
    run_async(scenario(), timeout=60)  # (a browser test may leave a loop set on this one)
    assert (closes("4503"), closes("other")) == (before[0], before[1] + 1)


def test_a_send_the_server_refuses_after_the_client_closed_removes_the_socket_s_row(make_user):
    """uvicorn answers a send after it has recorded the client's close with a RuntimeError, not
    an OSError: the consumer took it for a crash, never ran disconnect(), and the socket's row
    stayed, counted open, until the heartbeat's sweep (1 of 10 sockets closed right after
    ``hello`` in a CI run)."""
    user = make_user()
    client = Client()
    client.force_login(user)
    credential = session_credential(user, client.session.session_key)
    sent: list[dict] = []

    async def run():
        incoming: asyncio.Queue = asyncio.Queue()
        await incoming.put({"type": "websocket.connect"})

        async def send(message):
            if message["type"] == "websocket.send" and any(m["type"] == "websocket.send" for m in sent):
                raise RuntimeError(
                    "Unexpected ASGI message 'websocket.send', after sending 'websocket.close' "
                    "or response already completed."
                )
            sent.append(message)

        scope = {
            "type": "websocket", "path": "/ws/notifications/", "query_string": b"", "headers": [],
            "subprotocols": [], "user": user, "credential": credential,
        }  # fmt: skip
        await asyncio.wait_for(NotificationConsumer.as_asgi()(scope, incoming.get, send), 30)

    run_async(run(), timeout=60)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]  # hello, then gone
    assert json.loads(sent[1]["text"])["type"] == "hello"
    assert not SocketConnection.objects.filter(user=user).exists()
