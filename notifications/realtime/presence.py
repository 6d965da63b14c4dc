"""Socket presence: who has a live socket or stream, and how they are closed or re-checked.

- The presence rows (``SocketConnection``): one per open socket or SSE stream, recorded with the
  credential it was opened with, refreshed by the heartbeat; a row not refreshed within
  ``socket_fresh_for()`` belongs to a web process that died. ``online_user_ids`` reads them (the
  inbox sends browser pushes only to users with none).
- Closing and re-checking connections in any web process, through ``notifications.push`` (the
  signal receivers call these when a credential ends or changes).
- In each web process: ``Heartbeats`` (one task beats every socket and refreshes their rows in one
  UPDATE) and ``LayerWatch`` (closes the sockets with 4503 when the channel layer's Redis was
  interrupted, so their clients resume from the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Protocol

from django.db import transaction
from django.utils import timezone

from dashboard.db import database_sync_to_async
from notifications.conf import app_settings

from .. import credentials, events
from ..models import SocketConnection
from ..push import close_sockets as push_close
from ..push import recheck_sockets as push_recheck

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# A layer check (a message to ourselves through Redis and back) fails after this long; it takes
# this many failures in a row to close the sockets, so a busy event loop alone never does.
LAYER_CHECK_TIMEOUT, LAYER_CHECK_FAILURES = 5.0, 2


# --- Presence rows -------------------------------------------------------------------------------

MAX_SOCKETS_PER_USER = 20


def socket_fresh_for() -> timedelta:
    """How long a presence row counts without a refresh: two heartbeats and a margin (at most
    5 s), so a web process that died stops counting as its users' open socket within about two
    heartbeats (55 s with the default 25 s heartbeat), and browser push reaches them again."""
    beat = app_settings.SOCKET_HEARTBEAT
    return timedelta(seconds=2 * beat + min(5.0, beat))


def online_user_ids(*, user_ids: Iterable[int]) -> set[int]:
    """The users among ``user_ids`` with a socket or stream whose process is alive (its presence
    row was refreshed within ``socket_fresh_for()``)."""
    return set(
        SocketConnection.objects.filter(
            user_id__in=set(user_ids), seen_at__gte=timezone.now() - socket_fresh_for()
        )
        .values_list("user_id", flat=True)
        .distinct()
    )


@transaction.atomic
def socket_open(
    *,
    channel_name: str,
    user_id: int,
    session_key: str,
    token_id: int | None = None,
    auth_hash: str = "",
    privileges: str = "",
) -> list[str]:
    """Record an open socket or stream and the credential it was opened with; beyond
    MAX_SOCKETS_PER_USER the user's oldest ones are closed.

    Every connect runs this, so it is one upsert, one read of the user's rows and, only when
    some must go, one delete (it was eight statements with savepoints)."""
    now = timezone.now()
    SocketConnection.objects.bulk_create(
        [
            SocketConnection(
                channel_name=channel_name,
                user_id=user_id,
                session_key=session_key,
                token_id=token_id,
                auth_hash=auth_hash,
                privileges=privileges,
                seen_at=now,
            )
        ],
        update_conflicts=True,
        unique_fields=["channel_name"],
        update_fields=["user_id", "session_key", "token_id", "auth_hash", "privileges", "seen_at"],
    )
    rows = list(
        SocketConnection.objects.filter(user_id=user_id).values_list("channel_name", "opened_at", "seen_at")
    )
    fresh_since = now - socket_fresh_for()
    fresh = sorted(((opened, name) for name, opened, seen in rows if seen >= fresh_since), reverse=True)
    oldest = [name for _, name in fresh[MAX_SOCKETS_PER_USER:]]
    # Rows of web processes that died without saying goodbye go too.
    gone = oldest + [name for name, _, seen in rows if seen < fresh_since]
    if gone:
        SocketConnection.objects.filter(channel_name__in=gone).delete()
    if oldest:
        push_close(channel_names=oldest, code=events.CLOSE_REPLACED)
    return oldest


def socket_seen(*, channel_name: str | Sequence[str]) -> None:
    """Refresh the presence row of one socket, or of many at once (the heartbeat's batch)."""
    names = [channel_name] if isinstance(channel_name, str) else list(channel_name)
    now = timezone.now()
    for start in range(0, len(names), BATCH_SIZE):
        batch = names[start : start + BATCH_SIZE]
        SocketConnection.objects.filter(channel_name__in=batch).update(seen_at=now)


def sockets_heartbeat(*, due: dict[str, credentials.Credential]) -> dict[str, int]:
    """A heartbeat's one trip for the sockets and streams ``due`` (channel name -> credential):
    refresh their presence rows and re-check their credentials; returns the close code of each
    whose credential ended or changed (the safety net behind the closes sent by the services)."""
    socket_seen(channel_name=list(due))
    return credentials.credential_problems(due)


def socket_closed(*, channel_name: str) -> None:
    SocketConnection.objects.filter(channel_name=channel_name).delete()


@transaction.atomic
def sockets_close(*, code: int, **match: Any) -> int:
    """Close every socket and stream (in every web process) whose row matches ``match`` (e.g.
    ``session_key=…``, ``token_id=…``, ``user_id=…``), with close code ``code``, once the caller's
    transaction commits; returns how many. The rows go at once, so the same credential cannot
    be matched twice."""
    if not match or any(value in ("", None) for value in match.values()):
        return 0
    rows = SocketConnection.objects.filter(**match)
    names = list(rows.values_list("channel_name", flat=True))
    rows.delete()
    push_close(channel_names=names, code=code)
    return len(names)


def sockets_close_for_session(*, session_key: str) -> int:
    """Logging out, or the session being deleted, flushed or cycled, closes its sockets (4401)."""
    return sockets_close(session_key=session_key, code=events.CLOSE_NOT_AUTHENTICATED)


def sockets_recheck_for_session(*, session_key: str) -> int:
    """A session was saved (its end date may have moved, say by ``set_expiry``): its connections
    check it again and re-arm their expiry, on every web process. Returns how many were asked."""
    if not session_key:
        return 0
    names = list(
        SocketConnection.objects.filter(session_key=session_key).values_list("channel_name", flat=True)
    )
    push_recheck(channel_names=names)
    return len(names)


def sockets_close_for_token(*, token_id: int) -> int:
    """A revoked, deleted or changed token closes the sockets and streams opened with it (4401)."""
    return sockets_close(token_id=token_id, code=events.CLOSE_NOT_AUTHENTICATED)


def sockets_close_for_user(*, user_id: int, code: int = events.CLOSE_FORBIDDEN) -> int:
    """Every socket of the user: deactivated or deleted (4403), or privileges changed (4412)."""
    return sockets_close(user_id=user_id, code=code)


@transaction.atomic
def sockets_close_changed(*, user: Any) -> int:
    """After ``user`` was saved: close the connections whose credential no longer matches it
    (deactivated: all, 4403; staff or superuser flag changed: all, 4412; password changed: the
    session ones, whose auth hash it changes, 4401). A save that changes none of these (say
    ``last_login``) closes nothing. Returns how many were closed."""
    if not user.is_active:
        return sockets_close_for_user(user_id=user.pk)
    rows = SocketConnection.objects.filter(user_id=user.pk)
    changed = list(
        rows.exclude(privileges=credentials.privileges_of(user)).values_list("channel_name", flat=True)
    )
    closed = sockets_close(channel_name__in=changed, code=events.CLOSE_PRIVILEGES_CHANGED) if changed else 0
    stale = list(
        rows.filter(token_id__isnull=True)
        .exclude(auth_hash=user.get_session_auth_hash())
        .values_list("channel_name", flat=True)
    )
    if stale:
        closed += sockets_close(channel_name__in=stale, code=events.CLOSE_NOT_AUTHENTICATED)
    return closed


# --- In each web process: heartbeats and the channel layer's health ------------------------------


class Connection(Protocol):
    """What the heartbeat and the layer watch need of a socket (the WebSocket consumer)."""

    channel_name: str
    credential: credentials.Credential
    joined: list[str]  # its groups, and the jobs it watches (their log groups)
    watching: set[str]

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None: ...

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None: ...

    async def close_with(self, code: int) -> None:
        """Close with ``code`` and send nothing after it (once)."""
        ...


class LayerWatch:
    """One per channel layer and event loop (so one per web process): notices when the layer's
    Redis connection was lost and closes this process's sockets with 4503, so their clients
    reconnect and resume from the database instead of silently missing what was published
    meanwhile. Two signals: a check every RUNBOARD_LAYER_CHECK_INTERVAL seconds (a message to
    ourselves through Redis and back; catches an outage on any layer), and, on the PubSub layer,
    its Redis connection coming back (redis-py resubscribes by itself, but events published in
    between are gone, and channels-redis 4.3 never calls its on_disconnect/on_reconnect hooks:
    django/channels_redis#406).

    On a layer sharded over several Redis servers (CHANNEL_LAYER_REDIS_URLS), only the sockets
    that receive through the shard that was interrupted (their own channel or one of their groups
    lives there) are closed: the others missed nothing (issue 17: every socket of the process
    was closed, users of the other shard too)."""

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
        self.consumers: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.probe_channel: str | None = None
        self.hooked: list[Any] = []  # redis connections we hear reconnects of
        self.interruptions = 0
        self.closing: set[asyncio.Future[None]] = set()
        self.task = asyncio.ensure_future(self._run())

    def add(self, consumer: Connection) -> None:
        self.consumers.add(consumer)
        self._hook_reconnects()

    def discard(self, consumer: Connection) -> None:
        self.consumers.discard(consumer)

    async def _run(self) -> None:
        failures = 0
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(app_settings.LAYER_CHECK_INTERVAL)
                if not self.consumers:
                    continue
                self._hook_reconnects()
                # The probe's shard, if known before the check (a probe made anew may land anywhere).
                shard = self._shard_of(self.probe_channel)
                failures = 0 if await self._check() else failures + 1
                if failures >= LAYER_CHECK_FAILURES:
                    failures = 0
                    self.interrupted(
                        f"the channel layer failed {LAYER_CHECK_FAILURES} checks in a row", shard
                    )

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
        shards = getattr(self._loop_layer(), "_shards", ())
        found = [
            index for index, shard in enumerate(shards)
            if getattr(getattr(shard, "_pubsub", None), "connection", None) is connection
        ]  # fmt: skip
        shard = found[0] if len(found) == 1 and len(shards) > 1 else None
        self.interrupted("the channel layer's Redis connection was re-established", shard)

    def _loop_layer(self) -> Any:
        # The PubSub layer's internals (channels-redis 4.3): one layer per event loop, one
        # connection per shard, a consistent hash of the Redis channel's name picking the shard.
        return getattr(self.layer, "_layers", {}).get(asyncio.get_running_loop())

    def _shard_of(self, redis_channel: str | None) -> int | None:
        """The shard of a sharded PubSub layer that carries ``redis_channel``; None when unknown,
        with one shard or on another layer (then everything depends on what failed)."""
        loop_layer = self._loop_layer()
        shards = getattr(loop_layer, "_shards", ())
        if redis_channel is None or len(shards) < 2:
            return None
        try:
            return int(shards.index(loop_layer._get_shard(redis_channel)))
        except (AttributeError, ValueError):
            return None

    def _depends_on(self, consumer: Connection, shard: int | None) -> bool:
        """Whether ``consumer`` receives through ``shard`` (None: the whole layer): its own channel
        (closes, re-checks) or one of its groups (its user's, the operators', a watched job's)."""
        if shard is None:
            return True
        try:
            group_channel = self._loop_layer()._get_group_channel_name
            groups = [*consumer.joined, *(events.job_group(job_id) for job_id in consumer.watching)]
            channels = [consumer.channel_name, *(group_channel(group) for group in groups)]
        except AttributeError:
            return True
        return any(self._shard_of(channel) in (shard, None) for channel in channels)

    def interrupted(self, reason: str, shard: int | None = None) -> None:
        """Close the sockets that depend on ``shard`` of the layer (None: every socket)."""
        consumers = [consumer for consumer in self.consumers if self._depends_on(consumer, shard)]
        for consumer in consumers:
            self.consumers.discard(consumer)
        self.interruptions += 1
        if consumers:
            where = "" if shard is None else f" (shard {shard + 1} of the layer)"
            logger.warning(
                "%s%s: closing %d socket(s) so their clients resume", reason, where, len(consumers)
            )
        for consumer in consumers:
            task = asyncio.ensure_future(self._close(consumer))
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    @staticmethod
    async def _close(consumer: Connection) -> None:
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
        self.due: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    def add(self, consumer: Connection) -> None:
        self.due[consumer] = time.monotonic() + app_settings.SOCKET_HEARTBEAT
        self.wake.set()

    def discard(self, consumer: Connection) -> None:
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
        horizon = now + min(1.0, app_settings.SOCKET_HEARTBEAT / 10)
        due: list[Connection] = []
        for consumer, at in self.due.items():
            if at > horizon:
                break
            due.append(consumer)
        for consumer in due:
            del self.due[consumer]
            self.due[consumer] = now + app_settings.SOCKET_HEARTBEAT
        text = events.dumps(events.heartbeat(server_time=timezone.now().isoformat()))
        for i, consumer in enumerate(due, 1):
            try:
                await consumer.send(text_data=text)
            except Exception:  # the client went away meanwhile; its disconnect removes it
                logger.debug("No heartbeat for %s", consumer.channel_name, exc_info=True)
            if i % 200 == 0:
                await asyncio.sleep(0)  # thousands due at once: let relayed events through
        try:
            problems = await database_sync_to_async(sockets_heartbeat)(
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
                    await consumer.close_with(code)
