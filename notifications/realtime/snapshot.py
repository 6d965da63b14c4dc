"""What a connection is sent before its live events, written once for both transports (the
WebSocket consumer and the SSE stream): the snapshot, the catch-up after a resume point
(``?last_notification_id=`` or a ``resume`` message on a socket, ``Last-Event-ID`` on a stream),
a page at a time, and which notifications the connection has already been sent, so a live event
a snapshot or replay covered is dropped (docs/protocol.md, *Resume*). Also the reply budget of a
socket's own requests (docs/protocol.md, *Limits*).

The two transports differ only in who asks for the next page: a socket's client (``replay.more``,
then ``resume``: meanwhile live notifications are held here), an SSE stream itself, as its client
reads.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

from dashboard import metrics
from jobs.results import wire_size

from .. import credentials, events, selectors
from .presence import socket_open

SENT_IDS_KEPT = 2000
# Live notifications that arrive while a catch-up is paging wait here (they are in the database
# too: beyond this many, they are dropped and fetched by the next page instead).
HELD_KEPT = selectors.REPLAY_PAGE
# Notification ids are 64-bit: a larger integer from a client would overflow the database driver.
MAX_ID = 2**63 - 1
# Cost control: what the server sends in answer to a client's own requests (replays, snapshots,
# log tails, pongs) is paid from a per-socket budget of bytes, refilled at REPLY_BYTES_PER_SECOND
# up to REPLY_BURST_BYTES. A request that finds the budget spent gets `rate_limited` with
# `retry_after` instead of its answer, so no sequence of frames makes one socket cost more than
# REPLY_BURST_BYTES + one reply + REPLY_BYTES_PER_SECOND per second (docs/protocol.md, *Limits*).
REPLY_BURST_BYTES = 2 * 1024 * 1024
REPLY_BYTES_PER_SECOND = 1024 * 1024


def resume_point(value: Any) -> int | None:
    """A client's resume point (a query parameter, a header or a JSON value) as a notification
    id, or None if it is not one (negative, beyond 64 bits, not an integer, a boolean)."""
    if isinstance(value, bool):
        return None
    try:
        point = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return None
    return point if 0 <= point <= MAX_ID else None


class CatchUp(NamedTuple):
    """One step of a catch-up: the ``page`` of notifications after the resume point (None
    without one) and, if that page ends the catch-up, the ``snapshot`` (None: more pages
    follow); ``expires_at``: the credential's end (epoch seconds, or None) when the step also
    recorded the connection; ``problem``: the close code if the credential ended before the
    connection was recorded (then there is no page and no snapshot)."""

    page: selectors.ReplayPage | None
    snapshot: events.SnapshotEvent | None
    expires_at: float | None = None
    problem: int | None = None


class Opened(NamedTuple):
    expires_at: float | None  # the credential's end, epoch seconds (None: none)
    problem: int | None  # a close code: the credential ended before the row was written


def connection_open(*, channel_name: str, user: Any, credential: credentials.Credential) -> Opened:
    """Record an open socket or stream (its presence row, bound to its credential), then check
    the credential once more: a logout or revoke that committed between the sign-in check and the
    row found no row to close (found by review: 36 of 56 racing sockets stayed open until the
    heartbeat), so it is caught here; one that commits later finds the row. Returns when the
    credential ends (a token's own end date, a session's as its row says) and the close code if
    it already has."""
    socket_open(
        channel_name=channel_name,
        user_id=user.pk,
        session_key=credential.session_key,
        token_id=credential.token_id,
        auth_hash=credential.auth_hash,
        privileges=credential.privileges,
    )
    problem, expires_at = credentials.credential_check(channel_name, credential)
    return Opened(expires_at, problem)


def catch_up_step(*, user: Any, after_id: int | None, sent_up_to: int, first_page: bool = True) -> CatchUp:
    """The page of notifications after ``after_id`` (none without one) and, if that page ends
    the catch-up, the snapshot, whose ``last_notification_id`` is the most the connection has
    then been sent (``sent_up_to`` or the page's last id). ``first_page``: the catch-up starts
    here (only then may a short page pop toasts)."""
    if after_id is None:
        return CatchUp(None, selectors.snapshot_for_user(user=user))
    page = selectors.replay_after(user_id=user.pk, after_id=after_id, first_page=first_page)
    metrics.catch_up_page(rows=len(page.rows), more=page.more)
    if page.more:
        return CatchUp(page, None)
    up_to = max([sent_up_to, *(row["id"] for row in page.rows)])
    return CatchUp(page, selectors.snapshot_for_user(user=user, replayed_up_to=up_to))


def checked_catch_up_step(
    *,
    channel_name: str,
    user: Any,
    credential: credentials.Credential,
    after_id: int | None,
    sent_up_to: int,
    first_page: bool = True,
) -> CatchUp:
    """A later step of a connection's catch-up (a socket's ``resume``, a stream's next page),
    after checking its credential in the same trip to the database thread: the close message of
    a revoke that just committed may still be on its way (found by review: a ``resume`` sent
    right after a revoke got a page of 100 in 17 of 20 trials). ``problem`` is then set, with no
    page."""
    problem = credentials.credential_problems({channel_name: credential}).get(channel_name)
    if problem is not None:
        return CatchUp(None, None, problem=problem)
    return catch_up_step(user=user, after_id=after_id, sent_up_to=sent_up_to, first_page=first_page)


def open_and_catch_up(
    *, channel_name: str, user: Any, credential: credentials.Credential, after_id: int | None, sent_up_to: int
) -> CatchUp:
    """What a connect needs, in one trip to the database thread: record the connection, then
    the first step of its catch-up (none if the credential ended meanwhile)."""
    opened = connection_open(channel_name=channel_name, user=user, credential=credential)
    if opened.problem is not None:
        return CatchUp(None, None, opened.expires_at, opened.problem)
    return catch_up_step(user=user, after_id=after_id, sent_up_to=sent_up_to)._replace(
        expires_at=opened.expires_at
    )


class Delivery:
    """What one connection has sent of the user's notifications: the ids of the latest
    SENT_IDS_KEPT (a dict as an ordered set; by exact id, since concurrent commits can arrive out
    of id order) and the highest, so a live event that a snapshot or replay already covered is
    dropped; and, while a socket's catch-up pages, the live notifications held back until its
    last page (or dropped beyond HELD_KEPT, for that page to fetch)."""

    __slots__ = ("held", "held_overflow", "sent_ids", "sent_up_to")

    def __init__(self, sent_up_to: int = 0) -> None:
        self.sent_ids: dict[int, None] = {}
        self.sent_up_to = sent_up_to
        self.held: deque[dict[str, Any]] | None = None
        self.held_overflow = False

    def restart(self, point: int) -> None:
        """The client says it has everything up to ``point``: replay all after it, even what a
        snapshot showed."""
        self.sent_ids.clear()
        self.sent_up_to = point

    def mark(self, notification_id: int) -> None:
        if notification_id not in self.sent_ids and len(self.sent_ids) >= SENT_IDS_KEPT:
            del self.sent_ids[next(iter(self.sent_ids))]
        self.sent_ids[notification_id] = None
        self.sent_up_to = max(self.sent_up_to, notification_id)

    def replayed(self, page: selectors.ReplayPage) -> Iterator[tuple[int, events.NotificationNewEvent]]:
        """The page's notifications not yet sent, as ``(id, notification.new)``; each is marked
        sent as it is taken."""
        for row in page.rows:
            if row["id"] not in self.sent_ids:
                self.mark(row["id"])
                yield (
                    row["id"],
                    events.notification_new(
                        notification=row, unread_count=page.unread_count, toast=page.toast, replayed=True
                    ),
                )

    def snapshot_sent(self, snapshot: events.SnapshotEvent) -> None:
        for notification in snapshot["notifications"]:
            self.mark(notification["id"])

    def hold(self) -> None:
        """A catch-up starts paging: live notifications wait for its last page."""
        if self.held is None:
            self.held, self.held_overflow = deque(), False

    def more_pages(self, step: CatchUp) -> bool:
        """Whether the client must ask for another page: the step has no snapshot, or live
        notifications were dropped while it paged (the next page fetches them)."""
        if step.snapshot is None or self.held_overflow:
            self.held_overflow = False
            return True
        return False

    def release(self) -> list[dict[str, Any]]:
        """The catch-up ended: the live messages held meanwhile, to relay now, in order."""
        held, self.held = self.held, None
        return list(held or ())

    def live(self, message: dict[str, Any]) -> bool:
        """Whether a relayed message (``notifications.push``) is to be forwarded now: not a
        notification already sent, nor one held back while a catch-up pages."""
        notification_id = message.get("notification_id")
        if notification_id is None:
            return True
        if self.held is not None:
            # A catch-up is paging: this one waits for the last page (or that page fetches it).
            if len(self.held) < HELD_KEPT:
                self.held.append(message)
            else:
                self.held_overflow = True
            return False
        if notification_id in self.sent_ids:
            return False  # already sent by a snapshot or a replay
        self.mark(notification_id)
        return True


# Every catch-up step (a connect's snapshot, a replay page, on either transport) is also paid
# from its user's budget in this web process, shared by all their connections: a reconnect loop
# or SSE streams with `Last-Event-ID: 0` cannot send more than USER_BURST_BYTES + one step +
# REPLY_BYTES_PER_SECOND per user per second from one process (found by review: 9-12 MiB/s). A
# step costs at least STEP_MIN_BYTES, so its CPU is bounded too (at most 8 steps a second after
# the burst). When it is spent the connection waits (no error: the client just gets it later).
USER_BURST_BYTES = 2 * 1024 * 1024
STEP_MIN_BYTES = 128 * 1024
USER_BUDGETS_KEPT = 10_000


class UserBudgets:
    """The per-user catch-up budgets of this process (least recently used beyond
    USER_BUDGETS_KEPT forgotten: a forgotten user starts with a full budget)."""

    def __init__(self) -> None:
        self._budgets: OrderedDict[int, ReplyBudget] = OrderedDict()

    def wait(self, user_id: int, now: float) -> float:
        """Seconds to wait before the user's next catch-up step may be sent (0: now)."""
        budget = self._budgets.get(user_id)
        if budget is None:
            return 0.0
        self._budgets.move_to_end(user_id)
        return budget.refill(now) or 0.0

    def charge(self, user_id: int, nbytes: int, now: float, *, minimum: int = STEP_MIN_BYTES) -> None:
        """Pay ``nbytes`` (at least ``minimum``: a catch-up step's least cost) from the user's
        budget."""
        budget = self._budgets.get(user_id)
        if budget is None:
            budget = self._budgets[user_id] = ReplyBudget(now, burst=USER_BURST_BYTES)
            while len(self._budgets) > USER_BUDGETS_KEPT:
                self._budgets.popitem(last=False)
        budget.refill(now)
        budget.bytes -= max(nbytes, minimum)


user_budgets = UserBudgets()


# A connection waiting for its user's budget looks at its credential at least this often (in
# seconds): the wait must not outlast a revoke (found by review: a stream kept paging after one).
BUDGET_WAIT_SLICE = 0.5


async def user_budget_wait(
    user_id: int, closed: Callable[[], bool], *, check: Callable[[float], Awaitable[None]]
) -> None:
    """Wait until the user's catch-up budget allows another step or the connection closed;
    ``check(seconds)`` waits that long (at most BUDGET_WAIT_SLICE) while handling what may end
    the connection (a close message, a credential re-check), then returns."""
    while not closed():
        wait = user_budgets.wait(user_id, time.monotonic())
        if wait <= 0:
            return
        await check(min(wait, BUDGET_WAIT_SLICE))


def step_bytes(step: CatchUp) -> int:
    """What a catch-up step sends, in wire bytes (about: the page's rows and the snapshot)."""
    size = 0
    if step.page is not None:
        size += wire_size(step.page.rows)
    if step.snapshot is not None:
        size += wire_size(step.snapshot)
    return size


class ReplyBudget:
    """A socket's budget of reply bytes (see REPLY_BURST_BYTES), made on its first request."""

    __slots__ = ("at", "burst", "bytes")

    def __init__(self, now: float, *, burst: int = REPLY_BURST_BYTES) -> None:
        self.bytes, self.at, self.burst = float(burst), now, burst

    def refill(self, now: float) -> float | None:
        """Refill for the time passed; returns None if a request may be answered, else how many
        seconds until it may."""
        self.bytes = min(float(self.burst), self.bytes + (now - self.at) * REPLY_BYTES_PER_SECOND)
        self.at = now
        if self.bytes <= 0:
            return -self.bytes / REPLY_BYTES_PER_SECOND
        return None

    def charge(self, text: str) -> int:
        """Pay for ``text``; returns its size in bytes."""
        size = len(text.encode())
        self.bytes -= size
        return size
