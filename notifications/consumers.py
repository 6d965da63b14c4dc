"""The WebSocket consumer: authenticate, join groups, say hello, catch the client up (snapshot or
resume), then relay events. The logic lives in services and selectors; this only speaks the
protocol (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from jobs.permissions import Power

from . import credentials, events, selectors, services

logger = logging.getLogger(__name__)

MAX_WATCHED = 20
# Flood control: more than this many client messages within the window closes the socket.
MAX_MESSAGES, MESSAGE_WINDOW = 60, 10.0
SENT_IDS_KEPT = 2000
# Cost control: what the server sends in answer to a client's own requests (replays, snapshots,
# log tails, pongs) is paid from a per-socket budget of bytes, refilled at REPLY_BYTES_PER_SECOND
# up to REPLY_BURST_BYTES. A request that finds the budget spent gets `rate_limited` with
# `retry_after` instead of its answer, so no sequence of frames makes one socket cost more than
# REPLY_BURST_BYTES + one reply + REPLY_BYTES_PER_SECOND per second (docs/protocol.md, *Limits*).
REPLY_BURST_BYTES = 2 * 1024 * 1024
REPLY_BYTES_PER_SECOND = 1024 * 1024
# Live notifications that arrive while a catch-up is paging wait here (they are in the database
# too: beyond this many, they are dropped and fetched by the next page instead).
HELD_KEPT = selectors.REPLAY_PAGE
# Notification ids are 64-bit: a larger integer from a client would overflow the database driver.
MAX_ID = 2**63 - 1
OPS_INTERVAL = 3.0
# A layer check (a message to ourselves through Redis and back) fails after this long; it takes
# this many failures in a row to close the sockets, so a busy event loop alone never does.
LAYER_CHECK_TIMEOUT, LAYER_CHECK_FAILURES = 5.0, 2


def _job_id(message: dict[str, Any]) -> str | None:
    try:
        return str(uuid.UUID(str(message.get("job_id"))))
    except ValueError:
        return None


def _open_and_catch_up(
    *, user: Any, after_id: int | None, sent_up_to: int, socket: dict[str, Any] | None = None
) -> tuple[selectors.ReplayPage | None, events.SnapshotEvent | None, float | None]:
    """One trip to the database thread for what a connect (``socket``: record it first, and read
    its session's expiry) or a resume needs: the page of notifications after ``after_id`` (none
    without one) and, if that page ends the catch-up, the snapshot, whose
    ``last_notification_id`` is the most this connection has then been sent."""
    expires_at = None
    if socket is not None:
        services.socket_open(**socket)
        expires_at = credentials.session_expiry(socket["session_key"])
    if after_id is None:
        return None, selectors.snapshot_for_user(user=user), expires_at
    page = selectors.replay_after(user_id=user.pk, after_id=after_id)
    if page.more:
        return page, None, expires_at
    up_to = max([sent_up_to, *(row["id"] for row in page.rows)])
    return page, selectors.snapshot_for_user(user=user, replayed_up_to=up_to), expires_at


def _resume_point(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        point = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return None
    return point if 0 <= point <= MAX_ID else None


class NotificationConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, minus its ``aclose_old_connections()`` before every handler: a hop
        to the database thread and back for each frame relayed, which was most of a relayed
        frame's server CPU. Every database call here goes through ``database_sync_to_async``,
        which closes stale connections itself, in that thread, around the call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
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
        # Ids this connection has sent (the latest SENT_IDS_KEPT; a dict as an ordered set), to
        # drop a live event a snapshot or replay already covered; by exact id, since concurrent
        # commits can arrive out of id order.
        self.sent_ids: dict[int, None] = {}
        self.sent_notification_id = 0
        # Times of the client's latest messages, for flood control (made on the first one: most
        # sockets never send any, and an idle socket's memory is the budget).
        self.received: deque[float] | None = None
        self.joined: list[str] = credentials.connection_groups(credential)
        # While a catch-up pages (replay.more sent, resume awaited), live notifications wait.
        self.held: deque[dict[str, Any]] | None = None
        self.held_overflow = False
        # Join before reading anything: an event racing the connect is then either in what we
        # read or delivered after it (and dropped if already sent, by id or version).
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        LayerWatch.get(self.channel_layer).add(self)
        await self.accept()
        await self._send(selectors.hello_for(user, powers=credential.powers))
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        expires_at = await self._catch_up(
            _resume_point((query.get("last_notification_id") or [None])[0]),
            socket={
                "channel_name": self.channel_name,
                "user_id": user.pk,
                "session_key": credential.session_key,
                "token_id": credential.token_id,
                "auth_hash": credential.auth_hash,
                "privileges": credential.privileges,
            },
        )
        self._check_at(credential.expires_at if credential.token_id is not None else expires_at)
        Heartbeats.get().add(self)
        expiry = getattr(self.channel_layer, "group_expiry", None)
        if expiry:
            # Renew well within the expiry however short it is set, so a long-lived socket never
            # silently drops out of its groups (the PubSub layer has no expiry).
            self.renewal = asyncio.ensure_future(
                self._renew_groups(min(settings.RUNBOARD_SOCKET_HEARTBEAT, expiry / 3))
            )

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "user"):
            return
        self.closed = True
        LayerWatch.get(self.channel_layer).discard(self)
        Heartbeats.get().discard(self)
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
        await database_sync_to_async(services.socket_closed)(channel_name=self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        now = time.monotonic()
        if self.received is None:
            self.received = deque(maxlen=MAX_MESSAGES + 1)
            self.budget, self.budget_at = float(REPLY_BURST_BYTES), now
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
        self.budget = min(
            float(REPLY_BURST_BYTES), self.budget + (now - self.budget_at) * REPLY_BYTES_PER_SECOND
        )
        self.budget_at = now
        if self.budget <= 0:
            wait = -self.budget / REPLY_BYTES_PER_SECOND
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
        point = _resume_point(message.get("last_notification_id"))
        if point is None:
            await self._error("invalid_message", "'resume' needs last_notification_id (an integer >= 0).")
            return
        # The client says what it has: replay everything after it, even what a snapshot showed.
        self.sent_ids.clear()
        self.sent_notification_id = point
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
        await database_sync_to_async(services.notification_mark_read)(user_id=self.user.pk, ids=ids)

    async def on_mark_all_read(self, message: dict[str, Any]) -> None:
        await database_sync_to_async(services.notification_mark_all_read)(user_id=self.user.pk)

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
        from dashboard.operator import operator_snapshot

        with contextlib.suppress(asyncio.CancelledError):
            while True:
                started = time.monotonic()
                snapshot = await database_sync_to_async(operator_snapshot)()
                snapshot["channel_layer_rtt_ms"] = await self._layer_round_trip()
                await self.send(text_data=json.dumps({"type": "ops.update", "ops": snapshot}))
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
        if self.closed:
            return
        notification_id = message.get("notification_id")
        if notification_id is not None:
            if self.held is not None:
                # A catch-up is paging: this one waits for the last page (or that page fetches it).
                if len(self.held) < HELD_KEPT:
                    self.held.append(message)
                else:
                    self.held_overflow = True
                return
            if notification_id in self.sent_ids:
                return  # already sent by a snapshot or a replay
            self._sent(notification_id)
        await self.send(text_data=message["text"])

    async def socket_close(self, message: dict[str, Any]) -> None:
        """The credential ended or changed, or this user opened too many sockets: close with the
        given code, and send nothing after it."""
        await self._close(int(message.get("code", events.CLOSE_FORBIDDEN)))

    async def socket_recheck(self, message: dict[str, Any]) -> None:
        """The session was saved (its end date may have moved): check it now and re-arm."""
        await self._check_credential()

    async def _close(self, code: int) -> None:
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

    async def _check_credential(self) -> None:
        try:
            problems = await database_sync_to_async(credentials.credential_problems)(
                {self.channel_name: self.credential}
            )
            if self.channel_name in problems:
                await self._close(problems[self.channel_name])
            elif self.credential.token_id is None:
                # Still valid: the session was extended meanwhile; look again at its new end.
                session_key = self.credential.session_key
                self._check_at(await database_sync_to_async(credentials.session_expiry)(session_key))
        except Exception:  # the database is away: the heartbeat's re-check is the safety net
            logger.warning("Could not re-check the credential of %s", self.channel_name, exc_info=True)

    # --- helpers -----------------------------------------------------------------------------

    async def _catch_up(self, after_id: int | None, *, socket: dict[str, Any] | None = None) -> float | None:
        """Every notification after ``after_id`` (if given), a page at a time, then a fresh
        snapshot; on connect, ``socket`` is recorded first, in the same trip to the database
        thread, and the session's expiry (epoch seconds, or None) is returned.

        A page that is not the last ends with ``replay.more``: the client asks for the next with
        ``resume``, and live notifications are held until the last page, so every one arrives
        exactly once and in order whatever the gap (docs/protocol.md, *Resume*)."""
        if after_id is not None and self.held is None:
            self.held, self.held_overflow = deque(), False
        page, snapshot, expires_at = await database_sync_to_async(_open_and_catch_up)(
            user=self.user, after_id=after_id, sent_up_to=self.sent_notification_id, socket=socket
        )
        if page is not None:
            toast = page.toast
            for row in page.rows:
                if row["id"] not in self.sent_ids:
                    await self._send(
                        events.notification_new(
                            notification=row, unread_count=page.unread_count, toast=toast, replayed=True
                        )
                    )
                    self._sent(row["id"])
            if snapshot is None or self.held_overflow:
                # More to come (or live ones were dropped meanwhile): the client asks again.
                self.held_overflow = False
                await self._send(events.replay_more(last_notification_id=self.sent_notification_id))
                return expires_at
        assert snapshot is not None
        for notification in snapshot["notifications"]:
            self._sent(notification["id"])
        await self._send(snapshot)
        held, self.held = self.held, None
        for message in held or ():
            await self.event_relay(message)
        return expires_at

    def _sent(self, notification_id: int) -> None:
        if notification_id not in self.sent_ids and len(self.sent_ids) >= SENT_IDS_KEPT:
            del self.sent_ids[next(iter(self.sent_ids))]
        self.sent_ids[notification_id] = None
        self.sent_notification_id = max(self.sent_notification_id, notification_id)

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
        if self.closed:
            return
        text = events.dumps(event)
        if getattr(self, "charging", False):
            self.budget -= len(text.encode())
        await self.send(text_data=text)

    async def _error(self, code: str, detail: str) -> None:
        await self._send(events.error(code=code, detail=detail))


class LayerWatch:
    """One per channel layer and event loop (so one per web process): notices when the layer's
    Redis connection was lost and closes this process's sockets with 4503, so their clients
    reconnect and resume from the database instead of silently missing what was published
    meanwhile. Two signals: a check every RUNBOARD_LAYER_CHECK_INTERVAL seconds (a message to
    ourselves through Redis and back; catches an outage on any layer), and, on the PubSub layer,
    its Redis connection coming back (redis-py resubscribes by itself, but events published in
    between are gone, and channels-redis 4.3 never calls its on_disconnect/on_reconnect hooks)."""

    _watches: ClassVar[dict[tuple[int, asyncio.AbstractEventLoop], LayerWatch]] = {}

    @classmethod
    def get(cls, layer: Any) -> LayerWatch:
        key = (id(layer), asyncio.get_running_loop())
        watch = cls._watches.get(key)
        if watch is None:
            watch = cls._watches[key] = cls(layer)
        return watch

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.consumers: weakref.WeakSet[NotificationConsumer] = weakref.WeakSet()
        self.probe_channel: str | None = None
        self.hooked: list[Any] = []  # redis connections we hear reconnects of
        self.interruptions = 0
        self.closing: set[asyncio.Future[None]] = set()
        self.task = asyncio.ensure_future(self._run())

    def add(self, consumer: NotificationConsumer) -> None:
        self.consumers.add(consumer)
        self._hook_reconnects()

    def discard(self, consumer: NotificationConsumer) -> None:
        self.consumers.discard(consumer)

    async def _run(self) -> None:
        failures = 0
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(settings.RUNBOARD_LAYER_CHECK_INTERVAL)
                if not self.consumers:
                    continue
                self._hook_reconnects()
                failures = 0 if await self._check() else failures + 1
                if failures >= LAYER_CHECK_FAILURES:
                    failures = 0
                    self.interrupted(f"the channel layer failed {LAYER_CHECK_FAILURES} checks in a row")

    async def _check(self) -> bool:
        try:
            if self.probe_channel is None:
                # The layer's own prefix: the default layer serves a process's channels from one
                # list per prefix, read by whichever receive holds its lock.
                self.probe_channel = await asyncio.wait_for(self.layer.new_channel(), LAYER_CHECK_TIMEOUT)
            sent = self.layer.send(self.probe_channel, {"type": "check"})
            await asyncio.wait_for(sent, LAYER_CHECK_TIMEOUT)
        except Exception:
            return False
        try:
            await asyncio.wait_for(self.layer.receive(self.probe_channel), LAYER_CHECK_TIMEOUT)
        except Exception:
            self.probe_channel = None  # a cancelled receive drops the channel
            return False
        return True

    def _hook_reconnects(self) -> None:
        # The PubSub layer's internals (channels-redis 4.3): one pubsub connection per shard and
        # loop. Absent on other layers or versions, where the periodic check still works.
        loop_layer = getattr(self.layer, "_layers", {}).get(asyncio.get_running_loop())
        for shard in getattr(loop_layer, "_shards", ()):
            connection = getattr(getattr(shard, "_pubsub", None), "connection", None)
            if connection is None or not getattr(connection, "is_connected", False):
                continue  # hooking a connection still connecting would count its first connect
            if not any(connection is hooked for hooked in self.hooked):
                connection.register_connect_callback(self._reconnected)
                self.hooked.append(connection)

    def _reconnected(self, connection: Any) -> None:
        self.interrupted("the channel layer's Redis connection was re-established")

    def interrupted(self, reason: str) -> None:
        consumers = list(self.consumers)
        self.consumers.clear()
        self.interruptions += 1
        if consumers:
            logger.warning("%s: closing %d socket(s) so their clients resume", reason, len(consumers))
        for consumer in consumers:
            task = asyncio.ensure_future(self._close(consumer))
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    @staticmethod
    async def _close(consumer: NotificationConsumer) -> None:
        try:
            await consumer.close(code=events.CLOSE_EVENTS_INTERRUPTED)
        except Exception:  # the client went away meanwhile
            logger.debug("Socket %s was already gone", consumer.channel_name, exc_info=True)


class Heartbeats:
    """One per event loop (so one per web process): every RUNBOARD_SOCKET_HEARTBEAT seconds after
    it opened, each socket gets a ``heartbeat`` (so its client can tell a live server from a
    half-open connection) and its presence row is refreshed. One task for all sockets instead of
    one per socket, and one UPDATE for every socket due at once instead of one each (at 5,000
    sockets that was 200 trips a second to the single database thread)."""

    _instances: ClassVar[dict[asyncio.AbstractEventLoop, Heartbeats]] = {}

    @classmethod
    def get(cls) -> Heartbeats:
        loop = asyncio.get_running_loop()
        beats = cls._instances.get(loop)
        if beats is None:
            beats = cls._instances[loop] = cls()
        return beats

    def __init__(self) -> None:
        # Socket -> when it is due. Every socket has the same interval, so insertion order is due
        # order: a socket that beats moves to the end. Weak, so a consumer that died without
        # its disconnect running is not kept alive here.
        self.due: weakref.WeakKeyDictionary[NotificationConsumer, float] = weakref.WeakKeyDictionary()
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def add(self, consumer: NotificationConsumer) -> None:
        self.due[consumer] = time.monotonic() + settings.RUNBOARD_SOCKET_HEARTBEAT
        self.wake.set()

    def discard(self, consumer: NotificationConsumer) -> None:
        self.due.pop(consumer, None)

    async def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.wake.clear()
                first = next(iter(self.due.items()), None)
                if first is None:
                    await self.wake.wait()
                    continue
                delay = first[1] - time.monotonic()
                if delay > 0:
                    # Sockets added meanwhile are due later; one discarded is skipped on waking.
                    await asyncio.sleep(delay)
                    continue
                await self._beat()

    async def _beat(self) -> None:
        now = time.monotonic()
        # Those due within a tenth of an interval too (at most a second early), so sockets opened
        # close together share one UPDATE. Only the due ones are looked at, however many sockets.
        horizon = now + min(1.0, settings.RUNBOARD_SOCKET_HEARTBEAT / 10)
        due: list[NotificationConsumer] = []
        for consumer, at in self.due.items():
            if at > horizon:
                break
            due.append(consumer)
        for consumer in due:
            del self.due[consumer]
            self.due[consumer] = now + settings.RUNBOARD_SOCKET_HEARTBEAT
        text = events.dumps(events.heartbeat(server_time=timezone.now().isoformat()))
        for i, consumer in enumerate(due, 1):
            try:
                await consumer.send(text_data=text)
            except Exception:  # the client went away meanwhile; its disconnect removes it
                logger.debug("No heartbeat for %s", consumer.channel_name, exc_info=True)
            if i % 200 == 0:
                await asyncio.sleep(0)  # thousands due at once: let relayed events through
        try:
            problems = await database_sync_to_async(services.sockets_heartbeat)(
                due={consumer.channel_name: consumer.credential for consumer in due}
            )
        except Exception:
            logger.warning("Could not refresh %d socket rows", len(due), exc_info=True)
            return
        for consumer in due:
            code = problems.get(consumer.channel_name)
            if code is not None:
                # The safety net: a credential that ended without its close reaching us.
                logger.info("Closing %s (%s): its credential ended or changed", consumer.channel_name, code)
                with contextlib.suppress(Exception):
                    await consumer._close(code)


class EchoConsumer(AsyncWebsocketConsumer):
    """The Channels tutorial's echo: a connectivity and round-trip diagnostic (signed-in users)."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=events.CLOSE_NOT_AUTHENTICATED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)
