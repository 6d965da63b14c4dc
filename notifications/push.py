"""THE one place that talks to the channel layer from outside a consumer.

Events are serialized once, here, at the call site, and published only after the surrounding
transaction commits: a client never hears of a row it could not read back. Publishing goes
through one long-lived event loop per process, running in a daemon thread, so a worker pays
neither ``async_to_sync``'s per-call loop setup nor a new Redis connection per event
(design.md §3.4, §5): ``push_event`` only enqueues and returns in microseconds.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from channels.layers import channel_layers, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import transaction

from dashboard import metrics
from dashboard.process_local import ProcessLocal

from . import events

# The message types this sends (the consumers and SSE streams read them from events).
from .events import CLOSE_TYPE as CLOSE_TYPE
from .events import RECHECK_TYPE as RECHECK_TYPE
from .events import RELAY_TYPE as RELAY_TYPE

logger = logging.getLogger(__name__)
# A publish that cannot reach Redis in this time is dropped: the database stays the truth and
# clients catch up from the snapshot on their next (re)connect.
PUBLISH_TIMEOUT = 5.0
# A process that exits (normally, or on SIGTERM) waits at most this long for what it published
# to reach Redis, then logs what it gave up.
EXIT_FLUSH_TIMEOUT = 5.0
# A fork waits at most this long for the publisher thread to finish what it is doing.
FORK_QUIESCE_TIMEOUT = 2.0


def _forget_inherited_layers() -> None:
    """A forked child (a Celery pool process, including one respawned while its parent was
    publishing) must not reuse the parent's channel layer instances: their connections, loops and
    locks belong to the parent, and a lock held at the moment of the fork stays held. The child
    makes its own layer on first use."""
    channel_layers.backends = {}


def _quiesce_before_fork() -> None:
    """A fork copies the publisher thread's locks but not the thread. Wait (bounded) until it is
    idle, so it is not mid-way through something whose lock the child would inherit held: an
    import above all (Python's per-module import locks survive a fork owned by the dead thread,
    and the child's own publisher then hangs for ever on that module, publishing nothing). The
    Celery worker's main process is the case: it publishes when a pool process dies (the job's
    end) and at once forks the replacement."""
    publisher = _publisher.peek()
    if publisher is not None:
        publisher.flush(FORK_QUIESCE_TIMEOUT)


os.register_at_fork(before=_quiesce_before_fork, after_in_child=_forget_inherited_layers)


def push_event(
    *, group: str | Sequence[str], event: events.Event, notification_id: int | None = None
) -> None:
    """Publish ``event`` to ``group`` (or to each of several groups) once the current transaction
    commits (at once outside one). The event is serialized once, whatever the number of groups.

    ``notification_id`` rides along so a consumer replaying a resume can drop what it already sent.
    """
    message: dict[str, Any] = {"type": RELAY_TYPE, "text": events.dumps(event)}
    if notification_id is not None:
        message["notification_id"] = notification_id
    for target in [group] if isinstance(group, str) else group:
        transaction.on_commit(partial(_publisher.get().submit, target, message), robust=True)


def close_sockets(*, channel_names: list[str], code: int) -> None:
    """Ask specific consumers (in any web process) to close, once the transaction commits."""
    for channel_name in channel_names:
        transaction.on_commit(
            partial(_publisher.get().submit, channel_name, {"type": CLOSE_TYPE, "code": code}, direct=True),
            robust=True,
        )


def recheck_sockets(*, channel_names: list[str]) -> None:
    """Ask specific consumers (in any web process) to check their credential again, once the
    transaction commits (a session's end date moved)."""
    for channel_name in channel_names:
        transaction.on_commit(
            partial(_publisher.get().submit, channel_name, {"type": RECHECK_TYPE}, direct=True), robust=True
        )


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event submitted so far in this process has been handed to Redis."""
    publisher = _publisher.peek()
    return True if publisher is None else publisher.flush(timeout)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_normally_on_termination() -> None:
    """A process that publishes and is stopped (SIGTERM; SIGHUP: its SSH session dropped) runs
    its atexit handlers, the flush above among them, instead of dying with its events: for a
    plain script as for manage.py (which does the same before Django starts). Called when the
    app is ready (on the main thread, where a script's first publish may not be: found by
    review, a thread's publish was lost) and when the publisher is made. Only where nobody set a
    handler: servers and Celery's main processes set theirs after, and Celery's pool processes
    (which flush after each task) reset theirs."""
    if threading.current_thread() is not threading.main_thread():
        return
    pool = sys.modules.get("billiard.process")
    if pool is not None and pool.current_process().name != "MainProcess":
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _exit)


class _Publisher:
    def __init__(self) -> None:
        self.published = 0
        self.failed = 0
        self._pending: deque[Future[None]] = deque()  # the batches not yet known to be sent
        self._lock = threading.Lock()  # guards the batch being filled (submit, from any thread)
        self._buffer: list[tuple[str, dict[str, Any], bool]] = []
        self._batch: Future[None] | None = None
        # The loop's side: batches closed and waiting, and whether a task is sending them.
        self._batches: deque[tuple[list[tuple[str, dict[str, Any], bool]], Future[None]]] = deque()
        self._sending = False
        self._loop = asyncio.new_event_loop()
        # Make the layer (importing its backend) here, in the caller's thread, not lazily in the
        # publisher thread, where a fork mid-import would leave the child's imports locked.
        get_channel_layer()
        self._thread = threading.Thread(target=self._run, name="runboard-push", daemon=True)
        self._thread.start()
        # The thread is a daemon (it must never keep a process alive), so a short-lived process
        # (a management command, `manage.py shell`, a script) would exit before its last events
        # reached Redis: flush them at exit (manage.py turns SIGTERM into a normal exit too).
        self._pid = os.getpid()
        atexit.register(self._flush_at_exit)
        exit_normally_on_termination()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, target: str, message: dict[str, Any], direct: bool = False) -> None:
        """Queue ``message`` for ``target`` (a group, or with ``direct`` one channel); returns at once.

        Everything submitted before the publisher thread next runs leaves as one batch, in
        submission order: the messages of one commit (a job's update to its owner's and the
        operators' groups, its completion notification) cost one wake-up of the thread and, on the
        PubSub layer, one pipelined write per Redis shard instead of a round trip each (issue 15
        §3: a zero-step job made 16 publishes in a worker, each its own round trip)."""
        with self._lock:
            self._buffer.append((target, message, direct))
            wake = self._batch is None
            if wake:
                self._batch = Future()
                self._pending.append(self._batch)
            # Forget what has completed so the deque stays as short as the backlog.
            while self._pending and self._pending[0].done():
                self._pending.popleft()
        if wake:
            self._loop.call_soon_threadsafe(self._take_batch)

    def _take_batch(self) -> None:
        """On the loop: close the batch being filled and send it after those before it."""
        with self._lock:
            items, self._buffer = self._buffer, []
            batch, self._batch = self._batch, None
        if batch is None:
            return
        self._batches.append((items, batch))
        if not self._sending:
            self._sending = True
            self._loop.create_task(self._send_batches())

    async def _send_batches(self) -> None:
        # One batch at a time, in order: a group's messages never overtake each other.
        try:
            while self._batches:
                items, batch = self._batches.popleft()
                try:
                    await self._send_batch(items)
                except Exception:  # e.g. a message the layer cannot serialize: the batch is lost
                    self.failed += len(items)
                    for *_, direct in items:
                        metrics.push_failed(direct=direct)
                    logger.warning(
                        "Could not publish %d event(s); clients will resync.", len(items), exc_info=True
                    )
                finally:
                    batch.set_result(None)
        finally:
            self._sending = False

    async def _send_batch(self, items: list[tuple[str, dict[str, Any], bool]]) -> None:
        try:
            layer = get_channel_layer()
        except Exception:
            layer = None
            logger.warning("No channel layer to publish %d event(s) to", len(items), exc_info=True)
        if layer is None:
            return
        plan = _pubsub_plan(layer, items)
        if plan is None:  # another layer: its own send and group_send, one message at a time
            for target, message, direct in items:
                await self._send(layer, target, message, direct)
            return
        await asyncio.gather(*(self._publish(shard, entries) for shard, entries in plan.items()))

    async def _send(self, layer: Any, target: str, message: dict[str, Any], direct: bool) -> None:
        try:
            send = layer.send if direct else layer.group_send
            await asyncio.wait_for(send(target, message), PUBLISH_TIMEOUT)
            self.published += 1
            metrics.push_published(direct=direct)
        except Exception:
            self.failed += 1
            metrics.push_failed(direct=direct)
            logger.warning("Could not publish an event to %s; clients will resync.", target, exc_info=True)

    async def _publish(self, shard: Any, entries: list[tuple[str, bytes, bool]]) -> None:
        """PUBLISH ``entries`` (channel, serialized message, direct) on one shard's connection in
        one pipeline, under the shard's lock as its own ``publish`` takes it."""

        async def publish() -> None:
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, payload, _ in entries:
                    pipe.publish(channel, payload)
                await pipe.execute()

        try:
            await asyncio.wait_for(publish(), PUBLISH_TIMEOUT)
        except Exception:
            self.failed += len(entries)
            for *_, direct in entries:
                metrics.push_failed(direct=direct)
            logger.warning(
                "Could not publish %d event(s) to %s; clients will resync.",
                len(entries),
                ", ".join(sorted({channel for channel, _, _ in entries})),
                exc_info=True,
            )
        else:
            self.published += len(entries)
            for *_, direct in entries:
                metrics.push_published(direct=direct)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for future in list(self._pending):
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
            except Exception:  # a publish that failed is done: _send logged it
                continue
        return True

    def _flush_at_exit(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child inherits the handler, not this publisher's thread
        if not self.flush(EXIT_FLUSH_TIMEOUT):
            waiting = sum(1 for future in self._pending if not future.done())
            logger.warning(
                "Exiting with %d batch(es) of events not yet handed to Redis after %.0f s; clients "
                "will resync.",
                waiting,
                EXIT_FLUSH_TIMEOUT,
            )


def _pubsub_plan(
    layer: Any, items: list[tuple[str, dict[str, Any], bool]]
) -> dict[Any, list[tuple[str, bytes, bool]]] | None:
    """For channels-redis's PubSub layer: ``items`` as (Redis channel, serialized message, direct)
    per shard, in order, exactly as its ``group_send`` and ``send`` would publish them; None for
    any other layer (or a version whose internals differ: then each message goes through the
    layer's own API). Pinned channels-redis 4.3.0, channels_redis/pubsub.py."""
    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    try:
        loop_layer = layer._get_layer()
        plan: dict[Any, list[tuple[str, bytes, bool]]] = {}
        for target, message, direct in items:
            channel = target if direct else loop_layer._get_group_channel_name(target)
            shard = loop_layer._get_shard(channel)
            if not all(hasattr(shard, name) for name in ("_lock", "_ensure_redis", "_redis")):
                return None
            plan.setdefault(shard, []).append((channel, layer.serialize(message), direct))
    except AttributeError:
        return None
    return plan


_publisher: ProcessLocal[_Publisher] = ProcessLocal(_Publisher)
