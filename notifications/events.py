"""Typed realtime event payloads and group names: the protocol's vocabulary (docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any, Literal, NotRequired, TypedDict

PROTOCOL_VERSION = 1

# WebSocket close codes of the protocol.
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_REPLACED = 4409  # the user opened more sockets than allowed; the oldest goes
# The user's privileges changed (staff flag, groups, permissions): reconnect at once, and the new
# connection carries what the user may now see.
CLOSE_PRIVILEGES_CHANGED = 4412
CLOSE_TOO_MANY_MESSAGES = 4429
# This server's event feed (the channel layer's Redis) was interrupted, so live events may have
# been missed: reconnect with backoff and resume from the database.
CLOSE_EVENTS_INTERRUPTED = 4503

# The channel layer messages notifications.push sends to the consumers and SSE streams (their
# ``type``: Channels calls the consumer's event_relay, socket_close, socket_recheck).
RELAY_TYPE = "event.relay"  # an event, already serialized, to forward as it is
CLOSE_TYPE = "socket.close"  # the credential ended or changed: close with "code"
RECHECK_TYPE = "socket.recheck"  # the credential changed in a way only a fresh look can judge


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


# Operators: every job's updates also go to these groups. Holders of the "view all jobs" power
# join OPS_JOBS_GROUP, whose copy of a finished job's update leaves out its result; holders of
# "view all results" too join OPS_RESULTS_GROUP instead, which gets the owner's copy
# (jobs/permissions.py; one text per group, serialized once).
OPS_JOBS_GROUP = "ops.jobs"
OPS_RESULTS_GROUP = "ops.results"


def groups_for(user_id: int, *, all_jobs: bool = False, all_results: bool = False) -> list[str]:
    """The groups a connection joins, on every transport (WebSocket and SSE alike): the user's
    own, and one operator group if they may see every job (with results or without)."""
    if not all_jobs:
        return [user_group(user_id)]
    return [user_group(user_id), OPS_RESULTS_GROUP if all_results else OPS_JOBS_GROUP]


def job_update_groups(owner_id: int) -> list[str]:
    """Where a job's update goes when it carries nothing only its owner's peers may see."""
    return [user_group(owner_id), OPS_RESULTS_GROUP, OPS_JOBS_GROUP]


def job_group(job_id: object) -> str:
    """A job's log stream; only its owner (or staff) may join it."""
    return f"job.{job_id}"


class ProgressPayload(TypedDict):
    current: int
    total: int | None
    message: str


class NotificationPayload(TypedDict):
    id: int
    level: str
    title: str
    body: str
    link: str
    job_id: str | None
    created_at: str
    read: bool


class JobPayload(TypedDict):
    """A job as every transport shows it: at most 4 KiB of JSON whatever the job holds (built and
    bounded by ``jobs.selectors.job_payload``; docs/protocol.md, "Size bounds"). The result is
    only summarized; ``result_url`` serves it whole."""

    id: str
    kind: str
    kind_title: str
    # What tells this job from others of its kind ("sales.csv (12.4 MB)"); "" when its kind
    # gives none (issue 16 §4).
    label: str
    owner: str
    state: str
    cancel_requested: bool
    # Queued, but the broker could not be reached yet: it is sent when the broker is back.
    waiting_for_queue: bool
    # Queued jobs (jobs.admission): why it waits, one of "paused", "user_limit", "kind_limit",
    # "global_limit", "behind_own", "in_line" (admitted, waiting for a worker), "retry" (backing
    # off after a failed attempt, until retry_at), "waiting_for_queue" (the broker could not
    # take its message: waiting_for_queue is true); the sentence shown ("2 of your jobs are
    # running, limit 2.", "3rd in line for a worker.", "Attempt 1 of 3 failed: … — retrying in
    # 30 s."); its place in that line (in_line, global_limit). Null when not queued or not yet
    # looked at.
    wait_code: str | None
    wait_reason: str | None
    queue_position: int | None
    # Attempts (jobs/retries.py): how many have started, how many it may have in all (1: the
    # kind does not retry), and while it backs off after a failed attempt, when the next may
    # start (ISO 8601; null otherwise). The timeline has a "retrying" entry per failed attempt;
    # GET result_url's "attempts" lists each one's error.
    attempt: int
    max_attempts: int
    retry_at: str | None
    params: dict[str, Any]
    progress: ProgressPayload
    # What progress counts, from the job's kind: a plural noun ("bytes", "rows", "numbers",
    # "steps"; "items" when the kind declares none). ``rate`` is this many per second.
    unit: str
    rate: float | None  # null while stalled
    eta_seconds: float | None  # null while stalled
    # Running jobs: seconds since its worker last showed life (a heartbeat or a push), as of when
    # this payload was built (0 in a push from the worker); null otherwise. A client adds the time
    # since it received the payload: a frozen worker pushes nothing.
    silent_for: float | None
    # Running jobs: past this many seconds of silence the job is stalled (shown as "no progress
    # for N s", no rate or ETA; the reaper ends it after RUNBOARD_STALE_AFTER); null otherwise.
    stall_after: float | None
    stalled: bool  # silent_for > stall_after when the payload was built
    version: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_wait_seconds: float | None
    error: str
    # The failure's exception class ("UnicodeDecodeError", "TimeLimitExceeded"...); "" otherwise.
    error_class: str
    # At most 768 bytes: the kind's summary of the result, or its start (the whole result when
    # result_complete); None without a result.
    result_summary: Any
    result_complete: bool
    result_bytes: int | None  # the whole result, compact UTF-8 JSON
    result_url: str | None  # GET: the whole result (and the whole error), owner or staff only
    download_url: str | None
    retry_of: str | None
    timeline: list[dict[str, str]]
    truncated: list[str]  # the fields above that were cut to fit (e.g. "params", "error")


class LogLinePayload(TypedDict):
    seq: int
    text: str
    at: str  # when the line was written: ISO 8601, UTC


class UserPayload(TypedDict):
    id: int
    username: str
    is_staff: bool
    powers: list[str]  # the operator permissions' codenames (jobs/permissions.py)


class HelloEvent(TypedDict):
    type: Literal["hello"]
    protocol: int
    user: UserPayload
    server_time: str


class SnapshotEvent(TypedDict):
    type: Literal["snapshot"]
    jobs: list[JobPayload]
    unread_count: int
    notifications: list[NotificationPayload]
    last_notification_id: int


class JobUpdateEvent(TypedDict):
    type: Literal["job.update"]
    job: JobPayload


class JobsDeletedEvent(TypedDict):
    """Jobs that no longer exist (deleted in bulk, or by retention): a client drops them. At most
    DELETED_IDS_PER_EVENT ids; one deletion of more sends several."""

    type: Literal["jobs.deleted"]
    ids: list[str]


class JobLogEvent(TypedDict):
    type: Literal["job.log"]
    job_id: str
    lines: list[LogLinePayload]


class ErrorEvent(TypedDict):
    type: Literal["error"]
    code: str
    detail: str
    retry_after: NotRequired[float]


class ReplayMoreEvent(TypedDict):
    """A catch-up stopped after one page: ask for the next with ``resume`` from this id."""

    type: Literal["replay.more"]
    last_notification_id: int


class PongEvent(TypedDict):
    type: Literal["pong"]
    server_time: str


class WatchingEvent(TypedDict):
    type: Literal["watching"]
    job_id: str
    watching: bool


class NotificationNewEvent(TypedDict):
    type: Literal["notification.new"]
    notification: NotificationPayload
    unread_count: int
    toast: bool
    replayed: NotRequired[bool]


class NotificationReadEvent(TypedDict):
    """Notifications were read (or removed): ``ids`` those marked read, and after "mark all read"
    ``up_to``, every notification of the user with an id up to it is read (``ids`` is then
    empty: one small event however many were marked). ``unread_count`` is exact at its commit."""

    type: Literal["notification.read"]
    ids: list[int]
    unread_count: int
    up_to: NotRequired[int]


class HeartbeatEvent(TypedDict):
    type: Literal["heartbeat"]
    server_time: str


Event = (
    NotificationNewEvent
    | NotificationReadEvent
    | HeartbeatEvent
    | HelloEvent
    | SnapshotEvent
    | JobUpdateEvent
    | JobLogEvent
    | JobsDeletedEvent
    | ErrorEvent
    | PongEvent
    | WatchingEvent
    | ReplayMoreEvent
)


def hello(*, user: UserPayload, server_time: str) -> HelloEvent:
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "user": user, "server_time": server_time}


def snapshot(
    *,
    jobs: list[JobPayload],
    unread_count: int,
    notifications: list[NotificationPayload],
    last_notification_id: int,
) -> SnapshotEvent:
    return {
        "type": "snapshot",
        "jobs": jobs,
        "unread_count": unread_count,
        "notifications": notifications,
        "last_notification_id": last_notification_id,
    }


def notification_new(
    *, notification: Any, unread_count: int, toast: bool = True, replayed: bool = False
) -> NotificationNewEvent:
    event: NotificationNewEvent = {
        "type": "notification.new",
        "notification": notification,
        "unread_count": unread_count,
        "toast": toast,
    }
    if replayed:
        event["replayed"] = True
    return event


def replay_more(*, last_notification_id: int) -> ReplayMoreEvent:
    return {"type": "replay.more", "last_notification_id": last_notification_id}


def notification_read(
    *, ids: list[int], unread_count: int, up_to: int | None = None
) -> NotificationReadEvent:
    event: NotificationReadEvent = {"type": "notification.read", "ids": ids, "unread_count": unread_count}
    if up_to is not None:
        event["up_to"] = up_to
    return event


def heartbeat(*, server_time: str) -> HeartbeatEvent:
    return {"type": "heartbeat", "server_time": server_time}


def job_update(job: JobPayload) -> JobUpdateEvent:
    return {"type": "job.update", "job": job}


# A jobs.deleted event's ids: 200 x 38 bytes, ~7.6 KiB, within the 16 KiB design ceiling.
DELETED_IDS_PER_EVENT = 200


def jobs_deleted(ids: list[str]) -> JobsDeletedEvent:
    return {"type": "jobs.deleted", "ids": ids[:DELETED_IDS_PER_EVENT]}


def job_log(*, job_id: str, lines: list[LogLinePayload]) -> JobLogEvent:
    return {"type": "job.log", "job_id": job_id, "lines": lines}


def watching(*, job_id: str, watching: bool) -> WatchingEvent:
    return {"type": "watching", "job_id": job_id, "watching": watching}


def error(*, code: str, detail: str, retry_after: float | None = None) -> ErrorEvent:
    event: ErrorEvent = {"type": "error", "code": code, "detail": detail}
    if retry_after is not None:
        event["retry_after"] = round(retry_after, 2)
    return event


def pong(*, server_time: str) -> PongEvent:
    return {"type": "pong", "server_time": server_time}


def dumps(event: Event) -> str:
    """Serialize once, compactly; consumers forward the text as it is."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
