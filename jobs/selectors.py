"""Reads, always scoped to the user asking."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

from django.db import connections, router
from django.db.models import Model, Q, QuerySet
from django.urls import get_script_prefix, reverse
from django.utils import timezone

from jobs.conf import app_settings
from notifications.events import JobPayload, LogLinePayload, ProgressPayload

from .kinds.registry import UnknownKind, get_kind, kind_unit
from .models import Job, JobLogLine, JobState
from .permissions import Power, has_power
from .results import clip_text, json_preview, wire_size

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Pushed versions are ``row version * VERSION_STEP + n``: the row's version counts database
# writes, and n counts the in-memory pushes made since the last write (jobs.reporter).
VERSION_STEP = 1000

# --- Size bounds (docs/protocol.md, "Size bounds") ---------------------------------------------
# Every job payload, on every transport, is at most JOB_PAYLOAD_MAX_BYTES wire bytes
# (jobs.results.wire_size), whatever the job holds: each field a user or a kind can make long is
# cut to its own budget below (and named in the payload's ``truncated``), every other field is
# fixed-size, and job_payload checks the total. A quarter of the 16 KiB design ceiling (issue 11),
# so that a snapshot's SNAPSHOT_JOBS payloads take at most 200 KiB of its 256 KiB.
JOB_PAYLOAD_MAX_BYTES = 4 * 1024
# A list of job payloads (an API page, a snapshot) is at most this many wire bytes.
JOB_LIST_MAX_BYTES = 256 * 1024
# The jobs a snapshot carries: the newest the user may see (staff: anyone's).
SNAPSHOT_JOBS = 50
NAME_BYTES = 128  # each of kind, kind_title and owner
LABEL_BYTES = 160  # the job's label (jobs.models.LABEL_MAX characters, cut to this in UTF-8)
ERROR_CLASS_BYTES = 64  # a failure's exception class name
PARAMS_BYTES = 448
MESSAGE_BYTES = 288
ERROR_BYTES = 448
# "retrying" steps in a payload's timeline: the latest failed attempts (each about 50 bytes).
RETRY_STEPS_SHOWN = 3
# Progress counters beyond a signed 64-bit integer are shown clamped (the column's own range).
_INT_MAX = 2**63 - 1


# The wait code and sentence of a queued job whose message the broker could not take (it is
# sent again at the reaper's next tick once the broker answers: jobs.housekeeping).
WAITING_FOR_QUEUE = "waiting_for_queue"
WAITING_FOR_QUEUE_NOTE = (
    "Waiting for the queue: the job broker could not be reached; it is sent once it answers."
)


class InvalidCursor(ValueError):
    pass


def job_visible_to(user: User) -> QuerySet[Job]:
    """The jobs ``user`` may see: their own, or every job with the "view all jobs" power."""
    if has_power(user, Power.VIEW_ALL_JOBS):
        return Job.objects.select_related("owner")
    return Job.objects.filter(owner=user).select_related("owner")


def _jobs_with_power(user: User, power: Power) -> QuerySet[Job]:
    """The user's own jobs, or, with ``power``, everyone's."""
    if has_power(user, power):
        return Job.objects.select_related("owner")
    return Job.objects.filter(owner=user).select_related("owner")


def jobs_with_results_visible_to(user: User) -> QuerySet[Job]:
    """The jobs whose result and log ``user`` may read: their own, or every job with the "view
    all results" power (by id: listing them is "view all jobs")."""
    return _jobs_with_power(user, Power.VIEW_ALL_RESULTS)


def job_for_action(*, user: User, job_id: UUID | str) -> Job:
    """A job ``user`` may cancel, retry or re-run: their own, or any with the "act on any job"
    power; raises Job.DoesNotExist otherwise (a 404, as for a job one cannot see)."""
    return _jobs_with_power(user, Power.ACT_ON_ANY_JOB).defer("result").get(pk=job_id)


def results_visible(user: User, job: Job) -> bool:
    """Whether ``user`` may see ``job``'s result, log and error detail: its owner, or the
    "view all results" power."""
    return job.owner_id == user.pk or has_power(user, Power.VIEW_ALL_RESULTS)


def job_search_q(search: str) -> Q:
    """The job list's search: ``search`` in the kind, the label ("sales.csv (12.4 MB)"), the
    progress message, the error or its class, case-insensitively (the page's own filter,
    frontend/static/frontend/dashboard.js ``matches``, looks at the same fields)."""
    return (
        Q(kind__icontains=search)
        | Q(label__icontains=search)
        | Q(progress_message__icontains=search)
        | Q(error__icontains=search)
        | Q(error_class__icontains=search)
    )


def job_list_for_user(
    *,
    user: User,
    limit: int = SNAPSHOT_JOBS,
    states: Sequence[str] = (),
    kinds: Sequence[str] = (),
    cursor: str | None = None,
    search: str = "",
    error_class: str = "",
) -> QuerySet[Job]:
    """Newest first; ``cursor`` (from ``job_cursor``) continues after the job it names;
    ``search`` matches the kind, the label, the progress message, the error or its class;
    ``error_class`` is exactly the failure's class (the Operations page's failure groups link
    here). Results are not loaded (payloads show their stored summary)."""
    jobs = job_visible_to(user).defer("result")
    if search:
        jobs = jobs.filter(job_search_q(search))
    if error_class:
        jobs = jobs.filter(error_class=error_class)
    if states:
        jobs = jobs.filter(state__in=states)
    if kinds:
        jobs = jobs.filter(kind__in=kinds)
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        jobs = jobs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id))
    return jobs.order_by("-created_at", "-id")[:limit]


def job_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(created), UUID(job_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor("Invalid cursor.") from None


def job_get_for_user(*, user: User, job_id: UUID | str) -> Job:
    """The user's job, its result not loaded (``job_result_for_user`` loads it); raises
    Job.DoesNotExist for anything else (another user's job is a 404)."""
    return job_visible_to(user).defer("result").get(pk=job_id)


def job_result_for_user(*, user: User, job_id: UUID | str) -> Job:
    """The job with its whole result, for its owner or a holder of the "view all results" power;
    raises Job.DoesNotExist for anyone else."""
    return _jobs_with_power(user, Power.VIEW_ALL_RESULTS).get(pk=job_id)


def job_log_for_user(
    *, user: User, job_id: UUID | str, after: int = 0, limit: int = 1000
) -> list[JobLogLine]:
    """A job's log lines after ``after``: its owner's, or with "view all results" (a log may
    hold the job's data); raises Job.DoesNotExist otherwise."""
    job = _jobs_with_power(user, Power.VIEW_ALL_RESULTS).defer("result").get(pk=job_id)
    return list(JobLogLine.objects.filter(job=job, seq__gt=after).order_by("seq")[:limit])


def log_line_payload(line: JobLogLine) -> LogLinePayload:
    """A stored log line as the API and ``job.log`` events show it: its number, text and time."""
    return {"seq": line.seq, "text": line.text, "at": line.created_at.isoformat()}


def running_count(*, owner_id: int, kind: str | None = None) -> int:
    """The owner's running jobs (of ``kind``): a probe of ``job_owner_state_idx``, so it costs
    what the owner runs now, not every job they ever ran (issue 15 §4)."""
    jobs = Job.objects.filter(owner_id=owner_id, state=JobState.RUNNING)
    return (jobs.filter(kind=kind) if kind else jobs).count()


# --- Counts that do not grow with history (issue 15 §4) -------------------------------------------
# A count shown to people is exact up to this many rows; beyond, counting exactly would read every
# row on each page view (the admin's job list: 45 -> 181 ms from 1,000 to 100,000 jobs), so it is
# PostgreSQL's planner estimate, shown as "about". Counting at most this many index entries costs
# a few milliseconds on PostgreSQL.
EXACT_COUNT_LIMIT = 10_000


class BoundedCount(NamedTuple):
    """A row count and whether it is exact (False: an estimate, at least EXACT_COUNT_LIMIT + 1)."""

    rows: int
    exact: bool


def planner_row_estimate(queryset: QuerySet[Any]) -> int | None:
    """How many rows ``queryset`` returns by PostgreSQL's planner (``EXPLAIN``: its table
    statistics, no row read, well under a millisecond at any size); None on other databases
    (SQLite keeps no row statistics). An estimate: off by the changes since autovacuum last
    analyzed the table (it does so after 10 % of the rows changed)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # psycopg decodes json; a driver that does not gives text
        plan = json.loads(plan)
    return max(0, round(plan[0]["Plan"]["Plan Rows"]))


class ValueEstimates(NamedTuple):
    """PostgreSQL's statistics for one column: the table's rows now (``rows``) and how many
    rows hold each of the column's common values (``by_value``)."""

    rows: int
    by_value: dict[str, int]


def value_estimates(model: type[Model], field: str) -> ValueEstimates | None:
    """How many rows ``model``'s table holds, and how many hold each common value of ``field``,
    from PostgreSQL's statistics in one catalog read (no row of the table is read); None on
    other databases, or before the table was ever analyzed. The row count is scaled to the
    table's size now, as the planner does (statistics are from the last ANALYZE)."""
    connection = connections[router.db_for_read(model)]
    if connection.vendor != "postgresql":
        return None
    table = model._meta.db_table
    column = model._meta.get_field(field).column  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE WHEN c.relpages > 0
                        THEN c.reltuples / c.relpages
                             * (pg_relation_size(c.oid) / current_setting('block_size')::int)
                        ELSE c.reltuples END,
                   s.most_common_vals::text::text[], s.most_common_freqs
            FROM pg_class c
            LEFT JOIN pg_stats s ON s.schemaname = c.relnamespace::regnamespace::text
                 AND s.tablename = c.relname AND s.attname = %s
            WHERE c.oid = to_regclass(%s)
            """,
            [column, connection.ops.quote_name(table)],
        )
        found = cursor.fetchone()
    if found is None or found[0] is None or found[0] < 0:  # -1: never analyzed
        return None
    rows, values, freqs = found
    by_value = {str(v): round(rows * f) for v, f in zip(values or [], freqs or [], strict=False)}
    return ValueEstimates(round(rows), by_value)


def bounded_count(queryset: QuerySet[Any], *, limit: int | None = None) -> BoundedCount:
    """``queryset``'s row count, read from at most ``limit`` (default EXACT_COUNT_LIMIT) + 1
    rows: exact when there are at most ``limit``; else PostgreSQL's estimate
    (``planner_row_estimate``, at least ``limit`` + 1) with ``exact`` False. Where the database
    has no estimate (SQLite) the count is exact and grows with the rows."""
    limit = EXACT_COUNT_LIMIT if limit is None else limit
    capped = queryset.order_by()[: limit + 1].count()
    if capped <= limit:
        return BoundedCount(capped, True)
    estimate = planner_row_estimate(queryset)
    if estimate is None:
        return BoundedCount(queryset.count(), True)
    return BoundedCount(max(estimate, limit + 1), False)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def kind_title(name: str) -> str:
    try:
        return get_kind(name).title
    except UnknownKind:
        return name


def progress_rate(
    current: int, total: int | None, started_ts: float | None, now_ts: float
) -> tuple[float | None, float | None]:
    """Average items per second since the start, and the seconds left at that rate."""
    if started_ts is None or current <= 0:
        return None, None
    elapsed = now_ts - started_ts
    if elapsed <= 0:
        return None, None
    rate = current / elapsed
    eta = max(0.0, (total - current) / rate) if total else None
    return round(rate, 3), (round(eta, 1) if eta is not None else None)


def stall_after() -> float:
    """Seconds of silence after which a running job is shown stalled ("no progress for N s")
    instead of a rate and an ETA: its worker writes a heartbeat at least every
    RUNBOARD_HEARTBEAT_MAX_SILENCE seconds, so this is that with a margin for a slow write."""
    silence = float(app_settings.HEARTBEAT_MAX_SILENCE)
    return silence + max(silence, 2.0)


def progress_payload(current: Any, total: Any, message: Any) -> tuple[ProgressPayload, bool]:
    """Progress as shown: counters clamped to [0, 2**63 - 1], the message cut to MESSAGE_BYTES
    wire bytes; and whether the message was cut."""
    shown, cut = clip_text(str(message or ""), MESSAGE_BYTES)
    shown_total = None if total is None else _clamp(total)
    return {"current": _clamp(current), "total": shown_total, "message": shown}, cut


def _clamp(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), _INT_MAX)


def job_payload(job: Job, *, push_seq: int = 0) -> JobPayload:
    """The job's full current state as sent to clients (never a delta), at most
    JOB_PAYLOAD_MAX_BYTES wire bytes whatever the job holds.

    The result is never in it: ``result_summary`` (at most 768 bytes, stored with the result) and
    ``result_bytes`` describe it and ``result_url`` serves it whole. ``params``, ``error``, the
    progress message, ``kind``, ``kind_title``, ``label`` and ``owner`` are cut to their budgets (see the
    constants above); ``truncated`` names the fields that were.
    """
    return _job_payload_sized(job, push_seq=push_seq)[0]


def _job_payload_sized(job: Job, *, push_seq: int = 0) -> tuple[JobPayload, int]:
    """``job_payload`` and its wire size (measured once: the bound's check is the page's measure)."""
    running = job.state == JobState.RUNNING
    queued = job.state == JobState.QUEUED
    waiting_for_queue = queued and job.enqueued_at is None
    started_ts = job.started_at.timestamp() if job.started_at else None
    # Progress in the row is as of the last heartbeat: measure the rate at that moment, so it
    # does not sag between heartbeats.
    now = time.time()
    measured_at = job.heartbeat_at.timestamp() if job.heartbeat_at else now
    # Seconds since its worker last showed life: past stall_after() the worker may be frozen or
    # gone, and a rate or an ETA would be a confident guess about work nobody is doing.
    last_sign = job.heartbeat_at or job.started_at
    silent_for = round(max(0.0, now - last_sign.timestamp()), 1) if running and last_sign else None
    stalled = silent_for is not None and silent_for > stall_after()
    rate, eta = (
        progress_rate(job.progress_current, job.progress_total, started_ts, measured_at)
        if running and not stalled
        else (None, None)
    )
    queue_wait = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    truncated: list[str] = []

    def clip(field: str, text: str, max_bytes: int) -> str:
        shown, cut = clip_text(text, max_bytes)
        if cut:
            truncated.append(field)
        return shown

    params, params_complete = json_preview(job.params, PARAMS_BYTES)
    if not isinstance(params, dict):
        params, params_complete = {}, False
    if not params_complete:
        truncated.append("params")
    progress, message_cut = progress_payload(job.progress_current, job.progress_total, job.progress_message)
    if message_cut:
        truncated.append("progress")
    has_result = job.result_bytes is not None
    error = clip("error", job.error, ERROR_BYTES)
    payload: JobPayload = {
        "id": str(job.id),
        "kind": clip("kind", job.kind, NAME_BYTES),
        "kind_title": clip("kind_title", kind_title(job.kind), NAME_BYTES),
        "label": clip("label", job.label, LABEL_BYTES),
        "owner": clip("owner", job.owner.get_username(), NAME_BYTES),
        "state": job.state,
        "cancel_requested": job.cancel_requested_at is not None,
        # Queued, but its message has not reached the broker yet (jobs.dispatch._enqueue).
        "waiting_for_queue": waiting_for_queue,
        # While the broker is away that is the reason, not the place in line it was given.
        "wait_code": (WAITING_FOR_QUEUE if waiting_for_queue else job.wait_code or None) if queued else None,
        "wait_reason": (WAITING_FOR_QUEUE_NOTE if waiting_for_queue else job.wait_note or None)
        if queued
        else None,
        "queue_position": job.wait_position if queued and not waiting_for_queue else None,
        "attempt": job.attempts,
        "max_attempts": job.max_attempts,
        "retry_at": _iso(job.retry_at) if queued else None,
        "params": params,
        "progress": progress,
        "unit": kind_unit(job.kind),
        "rate": rate,
        "eta_seconds": eta,
        "silent_for": silent_for,
        "stall_after": stall_after() if running else None,
        "stalled": stalled,
        "version": job.version * VERSION_STEP + push_seq,
        "created_at": _iso(job.created_at),  # type: ignore[typeddict-item]
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "queue_wait_seconds": round(queue_wait, 3) if queue_wait is not None else None,
        "error": error,
        "error_class": clip("error_class", job.error_class, ERROR_CLASS_BYTES),
        # Stored within jobs.results.RESULT_SUMMARY_BYTES by the state machine (checked below too).
        "result_summary": job.result_summary if has_result else None,
        "result_complete": has_result and job.result_summary_complete,
        "result_bytes": job.result_bytes,
        "result_url": (
            _job_url("api:job-result", job.id)
            if has_result or job.attempt_errors or "error" in truncated
            else None
        ),
        "download_url": _job_url("api:job-download", job.id) if job.result_file else None,
        "retry_of": str(job.retry_of_id) if job.retry_of_id else None,
        "timeline": _timeline(job),
        "truncated": truncated,
    }
    return _bounded_sized(payload)


_URL_ID = "00000000-0000-0000-0000-000000000000"


@functools.lru_cache(maxsize=64)
def _job_url_parts(name: str, script_prefix: str) -> tuple[str, str]:
    before, _, after = reverse(name, args=[_URL_ID]).partition(_URL_ID)
    return before, after


def _job_url(name: str, job_id: Any) -> str:
    """``reverse(name, args=[job_id])`` without its cost (~60 us, paid per payload in a list)."""
    before, after = _job_url_parts(name, get_script_prefix())
    return f"{before}{job_id}{after}"


def job_payload_progressed(
    base: JobPayload,
    *,
    progress: tuple[Any, Any, Any],
    version: int,
    cancel_requested: bool,
    rate: float | None,
    eta: float | None,
) -> JobPayload:
    """``base`` (a ``job_payload``) with live progress from a worker's memory, bounded the same way
    (sent by the job's live worker, so it is not silent)."""
    shown, cut = progress_payload(*progress)
    truncated = [field for field in base["truncated"] if field != "progress"] + (["progress"] if cut else [])
    payload: JobPayload = {
        **base,
        "progress": shown,
        "version": version,
        "cancel_requested": cancel_requested,
        "rate": rate,
        "eta_seconds": eta,
        "silent_for": 0.0 if base["state"] == JobState.RUNNING else None,
        "stalled": False,
        "truncated": truncated,
    }
    return _bounded(payload)


def _bounded(payload: JobPayload) -> JobPayload:
    return _bounded_sized(payload)[0]


def _bounded_sized(payload: JobPayload) -> tuple[JobPayload, int]:
    """The one check of the bound, and the payload's wire size. The budgets above keep every
    payload within it; should a future field break that, the long fields are emptied rather than
    the bound broken."""
    size = wire_size(payload)
    if size <= JOB_PAYLOAD_MAX_BYTES:
        return payload, size
    logger.error("Job %s payload is %d bytes, over %d: emptying its long fields", payload["id"], size,
                 JOB_PAYLOAD_MAX_BYTES)  # fmt: skip
    emptied: JobPayload = {
        **payload,
        "params": {},
        "error": "",
        "progress": {**payload["progress"], "message": ""},
        "result_summary": None,
        "result_complete": False,
        "truncated": sorted({*payload["truncated"], "params", "error", "progress", "result_summary"}),
    }
    return emptied, wire_size(emptied)


def job_payload_for(job: Job, viewer: User) -> JobPayload:
    """``job_payload`` as ``viewer`` may see it: without its result (summary, links) unless
    ``results_visible``."""
    return _payload_for_sized(job, viewer)[0]


def _payload_for_sized(job: Job, viewer: User) -> tuple[JobPayload, int]:
    payload, size = _job_payload_sized(job)
    if results_visible(viewer, job):
        return payload, size
    redacted = job_payload_redacted(payload)
    return (payload, size) if redacted is payload else (redacted, wire_size(redacted))


def job_payload_redacted(payload: JobPayload) -> JobPayload:
    """The copy of a payload for operators who may see every job but not other users' results."""
    if not _shows_result(payload):
        return payload
    return {
        **payload,
        "result_summary": None,
        "result_complete": False,
        "result_bytes": None,
        "result_url": None,
        "download_url": None,
    }


def _shows_result(payload: JobPayload) -> bool:
    return bool(payload["result_url"] or payload["download_url"] or payload["result_summary"] is not None)


def job_payload_page(
    jobs: Iterable[Job], *, max_bytes: int = JOB_LIST_MAX_BYTES, viewer: User | None = None
) -> tuple[list[JobPayload], bool]:
    """The payloads of ``jobs`` (as ``viewer`` may see them, see ``job_payload_for``), in order,
    while their JSON list fits in ``max_bytes`` wire bytes; and whether every job fitted (if not,
    the caller's next page starts after the last one)."""
    payloads: list[JobPayload] = []
    size = 2  # []
    for job in jobs:
        payload, payload_size = _job_payload_sized(job) if viewer is None else _payload_for_sized(job, viewer)
        added = payload_size + (2 if payloads else 0)
        if size + added > max_bytes:
            return payloads, False
        payloads.append(payload)
        size += added
    return payloads, True


# One job.log event carries at most this many wire bytes of lines: what a job logs in a burst, or
# a watcher's tail, goes out as several small events, never one large one (docs/protocol.md,
# "Size bounds").
LOG_EVENT_MAX_BYTES = 16 * 1024
LOG_EVENT_ENVELOPE = 128  # {"type": "job.log", "job_id": ..., "lines": []}


def log_line_batches(lines: Sequence[Mapping[str, Any]]) -> list[list[LogLinePayload]]:
    """``lines`` in order, split so each batch's ``job.log`` event is at most LOG_EVENT_MAX_BYTES
    (a stored line is at most 8 KiB, so every batch holds at least one); ``[[]]`` for none.

    A line given without its time (``at``) gets the present moment: lines are batched in the
    transaction that stores them, within milliseconds of their ``created_at``."""
    batches: list[list[LogLinePayload]] = [[]]
    size = 0
    now = timezone.now().isoformat()
    for given in lines:
        line: LogLinePayload = {"seq": given["seq"], "text": given["text"], "at": given.get("at") or now}
        line_size = wire_size(line) + 2
        if batches[-1] and size + line_size > LOG_EVENT_MAX_BYTES - LOG_EVENT_ENVELOPE:
            batches.append([])
            size = 0
        batches[-1].append(line)
        size += line_size
    return batches


def _attempt_failed_at(entry: Any) -> str | None:
    """An attempt history entry's time, as ISO 8601 (None if it has none that parses: the
    timeline's size stays fixed whatever the row holds)."""
    try:
        return dt.datetime.fromisoformat(str(entry["failed_at"])[:64]).isoformat()
    except (TypeError, KeyError, ValueError):
        return None


def _timeline(job: Job) -> list[dict[str, str]]:
    """The job's state changes, oldest first."""
    # The latest failed attempts only (the payload's bound: jobs/retries.py allows 10); every
    # one is at the job's result_url.
    retried = [
        {"state": "retrying", "at": at}
        for at in (_attempt_failed_at(entry) for entry in (job.attempt_errors or [])[-RETRY_STEPS_SHOWN:])
        if at is not None
    ]
    steps = [("running", job.started_at), ("cancelling", job.cancel_requested_at)]
    if job.is_final:
        steps.append((job.state, job.finished_at))
    return [
        {"state": "queued", "at": job.created_at.isoformat()},
        *retried,
        *({"state": state, "at": at.isoformat()} for state, at in steps if at is not None),
    ]
