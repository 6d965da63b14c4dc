"""The WebSocket consumers. ``NotificationConsumer`` authenticates, joins groups, says hello,
catches the client up (snapshot or resume: ``snapshot.py``, shared with the SSE stream), then
relays events; presence, heartbeats and the channel layer's health are ``presence.py``'s. This
only speaks the protocol (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from dashboard import metrics
from dashboard.db import database_sync_to_async
from dashboard.operator import operator_snapshot
from jobs.permissions import Power
from notifications.conf import app_settings

from .. import credentials, events, inbox, selectors
from . import presence, snapshot
from .snapshot import MAX_ID, Delivery, ReplyBudget, resume_point

logger = logging.getLogger(__name__)

MAX_WATCHED = 20
# Flood control: more than this many client messages within the window closes the socket.
MAX_MESSAGES, MESSAGE_WINDOW = 60, 10.0
OPS_INTERVAL = 3.0
# The close code recorded for a client found gone by a failed send (its own code never reached
# the consumer): RFC 6455 §7.4.1's 1006, closed abnormally.
CLIENT_GONE = 1006


def _job_id(message: dict[str, Any]) -> str | None:
    try:
        return str(uuid.UUID(str(message.get("job_id"))))
    except ValueError:
        return None


# The requests whose replies can be large, paid from the user's budget as well as the socket's.
LARGE_REPLIES = frozenset({"resume", "watch"})


class _ClientGone(Exception):
    """The server refused a send: the client has gone."""


class NotificationConsumer(AsyncWebsocketConsumer):
    expiry: asyncio.TimerHandle  # set by _check_at: the credential's next check

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, minus its ``aclose_old_connections()`` before every handler: a hop
        to the database thread and back for each frame relayed, which was most of a relayed
        frame's server CPU. Every database call here goes through ``database_sync_to_async``,
        which closes stale connections itself, in that thread, around the call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except _ClientGone as gone:
            # A client gone while a handler sent to it (e.g. while its connect caught it up): the
            # application ends here and its websocket.disconnect is never dispatched, so leave as
            # a disconnect does (found by review: the socket's row stayed, counted open).
            if message["type"] == "websocket.disconnect":
                raise
            logger.info("%s: the client went away (%r)", self.channel_name, gone.__cause__)
            await self.disconnect(CLIENT_GONE)
            raise StopConsumer() from None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_to_client(message: dict[str, Any]) -> None:
            # ASGI: send() on a connection the client closed raises the server's own OSError
            # (uvicorn's ClientDisconnected) while the close is under way, and a RuntimeError
            # ("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'") once
            # the server has recorded it: both are a client gone (the RuntimeError ended the
            # application without disconnect(), leaving the socket's row counted open: found by
            # CI, issue 15). Only the server's send is wrapped, not what a handler meets elsewhere.
            try:
                await send(message)
            except (OSError, RuntimeError) as error:
                raise _ClientGone() from error

        await super().__call__(scope, receive, send_to_client)

    async def connect(self) -> None:
        metrics.socket_connected("websocket")
        user = self.scope.get("user")
        credential: credentials.Credential | None = self.scope.get("credential")
        if user is None or not user.is_authenticated or credential is None:
            # Accept first so the client sees the protocol's close code, not a bare HTTP 403.
            await self.accept()
            await self.close(code=events.CLOSE_NOT_AUTHENTICATED)
            return
        self.user = user
        self.credential = credential
        self.closed = False
        self.watching: set[str] = set()
        # What this connection has sent (to drop a live event a snapshot or replay already
        # covered), and, while a catch-up pages (replay.more sent, resume awaited), the live
        # notifications that wait.
        self.delivery = Delivery()
        # Times of the client's latest messages, for flood control, and the reply budget (made on
        # the first one: most sockets never send any, and an idle socket's memory is the budget).
        self.received: deque[float] | None = None
        self.budget: ReplyBudget | None = None
        self.joined: list[str] = credentials.connection_groups(credential)
        # Join before reading anything: an event racing the connect is then either in what we
        # read or delivered after it (and dropped if already sent, by id or version).
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        presence.LayerWatch.get(self.channel_layer).add(self)
        await self.accept()
        await self._send(selectors.hello_for(user, powers=credential.powers))
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        expires_at = await self._catch_up(
            resume_point((query.get("last_notification_id") or [None])[0]), connecting=True
        )
        if self.closed:
            return  # the credential ended while it connected
        self._check_at(expires_at)
        presence.Heartbeats.get().add(self)
        expiry = getattr(self.channel_layer, "group_expiry", None)
        if expiry:
            # Renew well within the expiry however short it is set, so a long-lived socket never
            # silently drops out of its groups (the PubSub layer has no expiry).
            self.renewal = asyncio.ensure_future(
                self._renew_groups(min(app_settings.SOCKET_HEARTBEAT, expiry / 3))
            )

    async def disconnect(self, code: int) -> None:
        sent = getattr(self, "close_code_sent", None)
        metrics.socket_closed("websocket", code if sent is None else sent, by_client=sent is None)
        if not hasattr(self, "user"):
            return
        self.closed = True
        presence.LayerWatch.get(self.channel_layer).discard(self)
        presence.Heartbeats.get().discard(self)
        if getattr(self, "expiry", None) is not None:
            self.expiry.cancel()
        for task in (getattr(self, name, None) for name in ("renewal", "ops_task")):
            if task is not None:
                task.cancel()
        try:
            for group in [*self.joined, *(events.job_group(job_id) for job_id in self.watching)]:
                await self.channel_layer.group_discard(group, self.channel_name)
        except Exception:
            # Redis is down: the subscriptions went with the connection; record the close anyway.
            logger.warning("Could not leave the groups of %s", self.channel_name, exc_info=True)
        await database_sync_to_async(presence.socket_closed)(channel_name=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        now = time.monotonic()
        if self.received is None or self.budget is None:  # both made together
            self.received = deque(maxlen=MAX_MESSAGES + 1)
            self.budget = ReplyBudget(now)
        self.received.append(now)
        if len(self.received) > MAX_MESSAGES and now - self.received[0] < MESSAGE_WINDOW:
            await self._error(
                "too_many_messages", f"More than {MAX_MESSAGES} messages in {MESSAGE_WINDOW:g} s."
            )
            await self.close(code=events.CLOSE_TOO_MANY_MESSAGES)
            return
        if text_data is None:
            await self._error("binary_not_supported", "Send JSON text frames.")
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's limit
            await self._error("invalid_json", "The frame is not valid JSON.")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error("invalid_message", "Expected a JSON object with a string 'type'.")
            return
        handler = self.handlers.get(message["type"])
        if handler is None:
            await self._error("unknown_type", f"Unknown message type {message['type'][:64]!r}.")
            return
        # This socket's reply budget, and for the requests with large replies (a catch-up, a log
        # tail) its user's in this process too, shared by all their connections: a new socket's
        # full budget must not make a reconnect loop free (found by review: 29.9 MiB/s of log
        # tails from sockets opened again and again).
        wait = self.budget.refill(now) or 0.0
        if message["type"] in LARGE_REPLIES:
            wait = max(wait, snapshot.user_budgets.wait(self.user.pk, now))
        if wait > 0:
            await self._send(
                events.error(
                    code="rate_limited", detail="Too much asked of the server: retry later.", retry_after=wait
                )
            )
            return
        self.charging = True
        try:
            await handler(self, message)
        finally:
            self.charging = False

    # --- client messages ---------------------------------------------------------------------

    async def on_ping(self, message: dict[str, Any]) -> None:
        await self._send(events.pong(server_time=timezone.now().isoformat()))

    async def on_resume(self, message: dict[str, Any]) -> None:
        point = resume_point(message.get("last_notification_id"))
        if point is None:
            await self._error("invalid_message", "'resume' needs last_notification_id (an integer >= 0).")
            return
        # The client says what it has: replay everything after it, even what a snapshot showed.
        self.delivery.restart(point)
        await self._catch_up(point)

    async def on_mark_read(self, message: dict[str, Any]) -> None:
        ids = message.get("ids")
        if (
            not isinstance(ids, list)
            or not ids
            or len(ids) > 1000
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_ID for i in ids)
        ):
            await self._error("invalid_message", "'mark_read' needs ids: a list of 1 to 1000 integers.")
            return
        # Every tab (this one included) hears notification.read from the service.
        await database_sync_to_async(inbox.notification_mark_read)(user_id=self.user.pk, ids=ids)

    async def on_mark_all_read(self, message: dict[str, Any]) -> None:
        await database_sync_to_async(inbox.notification_mark_all_read)(user_id=self.user.pk)

    async def on_watch(self, message: dict[str, Any]) -> None:
        job_id = _job_id(message)
        if job_id is None:
            await self._error("invalid_message", "'watch' needs a job_id (a UUID).")
            return
        if len(self.watching) >= MAX_WATCHED and job_id not in self.watching:
            await self._error("too_many_watches", f"Watch at most {MAX_WATCHED} jobs at once.")
            return
        tail = await database_sync_to_async(selectors.log_tail_for_watcher)(user=self.user, job_id=job_id)
        if tail is None:
            await self._error("forbidden", "No such job, or not yours to watch.")
            return
        await self.channel_layer.group_add(events.job_group(job_id), self.channel_name)
        self.watching.add(job_id)
        await self._send(events.watching(job_id=job_id, watching=True))
        # Lines after joining arrive as job.log events; duplicates by seq are the client's to drop.
        for lines in tail:
            await self._send(events.job_log(job_id=job_id, lines=lines))

    async def on_ops_subscribe(self, message: dict[str, Any]) -> None:
        """The operator's view, now and every OPS_INTERVAL seconds on this socket: for holders of
        the "use the operator view" power as the socket was granted it (a change closes it: 4412)."""
        if Power.USE_OPERATOR_VIEW not in self.credential.powers:
            await self._error(
                "forbidden", "The operator's view takes the 'use the operator view' permission."
            )
            return
        if getattr(self, "ops_task", None) is None:
            self.ops_task = asyncio.ensure_future(self._ops_loop())

    async def _ops_loop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                started = time.monotonic()
                ops = await database_sync_to_async(operator_snapshot)()
                ops["channel_layer_rtt_ms"] = await self._layer_round_trip()
                await self.send(text_data=json.dumps({"type": "ops.update", "ops": ops}))
                await asyncio.sleep(max(0.5, OPS_INTERVAL - (time.monotonic() - started)))

    async def _layer_round_trip(self) -> float | None:
        """Channel-layer health: a message to this socket's own channel and back, through Redis."""
        self.ops_pong = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        try:
            await self.channel_layer.send(self.channel_name, {"type": "ops.echo"})
            await asyncio.wait_for(asyncio.shield(self.ops_pong), 2.0)
        except Exception:
            return None
        return round((time.monotonic() - started) * 1000, 2)

    async def ops_echo(self, message: dict[str, Any]) -> None:
        pong = getattr(self, "ops_pong", None)
        if pong is not None and not pong.done():
            pong.set_result(True)

    async def on_unwatch(self, message: dict[str, Any]) -> None:
        job_id = _job_id(message)
        if job_id is None:
            await self._error("invalid_message", "'unwatch' needs a job_id (a UUID).")
            return
        if job_id in self.watching:
            self.watching.discard(job_id)
            await self.channel_layer.group_discard(events.job_group(job_id), self.channel_name)
        await self._send(events.watching(job_id=job_id, watching=False))

    handlers: ClassVar[dict[str, Callable[[Any, dict[str, Any]], Awaitable[None]]]] = {
        "ping": on_ping,
        "resume": on_resume,
        "mark_read": on_mark_read,
        "mark_all_read": on_mark_all_read,
        "watch": on_watch,
        "unwatch": on_unwatch,
        "ops.subscribe": on_ops_subscribe,
    }

    # --- channel layer messages --------------------------------------------------------------

    async def event_relay(self, message: dict[str, Any]) -> None:
        """An event published by notifications.push, already serialized: forward it as it is."""
        if self.closed or not self.delivery.live(message):
            return
        await self.send(text_data=message["text"])

    async def socket_close(self, message: dict[str, Any]) -> None:
        """The credential ended or changed, or this user opened too many sockets: close with the
        given code, and send nothing after it."""
        await self.close_with(int(message.get("code", events.CLOSE_FORBIDDEN)))

    async def socket_recheck(self, message: dict[str, Any]) -> None:
        """The session was saved (its end date may have moved): check it now and re-arm."""
        await self._check_credential()

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Channels' close, remembering the code the server chose (the metrics tell it from a
        client's own)."""
        if getattr(self, "close_code_sent", None) is None:
            self.close_code_sent = 1000 if code is None or isinstance(code, bool) else code
        await super().close(code=code, reason=reason)

    async def close_with(self, code: int) -> None:
        """Close with ``code`` and send nothing after it (once)."""
        if self.closed:
            return
        self.closed = True
        await self.close(code=code)

    # --- the credential ----------------------------------------------------------------------

    def _check_at(self, expires_at: float | None) -> None:
        """Check the credential again at the instant it expires (a session or token end date)."""
        if getattr(self, "expiry", None) is not None:
            self.expiry.cancel()
        if expires_at is None or self.closed:
            return
        delay = max(0.0, expires_at - time.time()) + 0.05
        self.expiry = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._check_credential())
        )

    async def _wait_checking(self, seconds: float) -> None:
        """Wait for the user's budget, then look at the credential: this handler holds up the
        socket's channel messages (a close among them) while it waits."""
        await asyncio.sleep(seconds)
        await self._check_credential()

    async def _check_credential(self) -> None:
        try:
            problem, expires_at = await database_sync_to_async(credentials.credential_check)(
                self.channel_name, self.credential
            )
            if problem is not None:
                await self.close_with(problem)
            elif self.credential.token_id is None:
                # Still valid: the session was extended meanwhile; look again at its new end.
                self._check_at(expires_at)
        except Exception:  # the database is away: the heartbeat's re-check is the safety net
            logger.warning("Could not re-check the credential of %s", self.channel_name, exc_info=True)

    # --- helpers -----------------------------------------------------------------------------

    async def _catch_up(self, after_id: int | None, *, connecting: bool = False) -> float | None:
        """Every notification after ``after_id`` (if given), a page at a time, then a fresh
        snapshot (``snapshot.py``); on connect, the socket is recorded first, in the same trip to
        the database thread, and its credential's end (epoch seconds, or None) is returned.

        A page that is not the last ends with ``replay.more``: the client asks for the next with
        ``resume``, and live notifications are held until the last page, so every one arrives
        exactly once and in order whatever the gap (docs/protocol.md, *Resume*)."""
        delivery = self.delivery
        first_page = delivery.held is None  # not a page asked for after replay.more
        if after_id is not None:
            delivery.hold()
        await snapshot.user_budget_wait(self.user.pk, lambda: self.closed, check=self._wait_checking)
        if self.closed:
            return None
        if connecting:
            step = await database_sync_to_async(snapshot.open_and_catch_up)(
                channel_name=self.channel_name,
                user=self.user,
                credential=self.credential,
                after_id=after_id,
                sent_up_to=delivery.sent_up_to,
            )
        else:
            step = await database_sync_to_async(snapshot.checked_catch_up_step)(
                channel_name=self.channel_name,
                user=self.user,
                credential=self.credential,
                after_id=after_id,
                sent_up_to=delivery.sent_up_to,
                first_page=first_page,
            )
        if step.problem is not None:
            await self.close_with(step.problem)
            return None
        # Encoded once, and its length is what the budget is charged: encoding it again to measure
        # it was ~6 % of a connect's CPU with a user's 50 jobs in it (py-spy, issue 15 §2).
        snapshot_text = events.dumps(step.snapshot) if step.snapshot is not None else ""
        if not getattr(self, "charging", False):
            # A connect's catch-up (no request of the client's: _send charges those frame by
            # frame) costs its user at least a step.
            page_bytes = snapshot.step_bytes(step._replace(snapshot=None)) if step.page is not None else 0
            snapshot.user_budgets.charge(
                self.user.pk, page_bytes + len(snapshot_text.encode()), time.monotonic()
            )
        if step.page is not None:
            for _, event in delivery.replayed(step.page):
                await self._send(event)
            if delivery.more_pages(step):
                # More to come (or live ones were dropped meanwhile): the client asks again.
                await self._send(events.replay_more(last_notification_id=delivery.sent_up_to))
                return step.expires_at
        assert step.snapshot is not None
        delivery.snapshot_sent(step.snapshot)
        await self._send_text(snapshot_text)
        for message in delivery.release():
            await self.event_relay(message)
        return step.expires_at

    async def _renew_groups(self, every: float) -> None:
        """On layers whose groups expire: join them again before they do."""
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(every)
                try:
                    for group in [*self.joined, *(events.job_group(job_id) for job_id in self.watching)]:
                        await self.channel_layer.group_add(group, self.channel_name)
                except Exception:
                    logger.warning("Could not renew the groups of %s", self.channel_name, exc_info=True)

    async def _send(self, event: events.Event) -> None:
        await self._send_text(events.dumps(event))

    async def _send_text(self, text: str) -> None:
        """Send an encoded event (charged to the budgets if a client's request is answered)."""
        if self.closed:
            return
        if getattr(self, "charging", False) and self.budget is not None:
            size = self.budget.charge(text)
            snapshot.user_budgets.charge(self.user.pk, size, time.monotonic(), minimum=0)
        await self.send(text_data=text)

    async def _error(self, code: str, detail: str) -> None:
        await self._send(events.error(code=code, detail=detail))
