"""Operational reads: job, queue, socket and notification figures, and the readiness checks.

Every function returns plain dicts/lists/numbers computed from the database (the truth) or from
Redis at call time, so any number of web processes agree and an operator's page can reuse them.
"""

from __future__ import annotations

import contextlib
import re
import time
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import redis
from django.conf import settings
from django.db import connection, connections
from django.db.models import Count, Q, Sum
from django.utils import timezone

from dashboard.celery import app
from jobs.conf import app_settings
from jobs.kinds.registry import all_kinds
from jobs.models import FINAL_STATES, Job, JobState
from jobs.selectors import EXACT_COUNT_LIMIT, value_estimates
from notifications.models import NotificationState, SocketConnection
from notifications.realtime.presence import socket_fresh_for

# Each readiness check gets this long to answer (socket timeouts, the worker ping), and the whole
# probe answers within READY_DEADLINE however a dependency hangs.
CHECK_TIMEOUT = 1.0
READY_DEADLINE = 2.0
MAX_ERROR_CHARS = 300

# kombu's Redis transport keeps one list per queue and priority step: the queue's own name for
# the lowest step, "<queue>\x06\x16<step>" for the others (kombu.transport.redis).
KOMBU_PRIORITY_STEPS = [0, 3, 6, 9]
KOMBU_PRIORITY_SEP = "\x06\x16"

ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)


# --- Jobs ---------------------------------------------------------------------------------------


class JobStateCounts(NamedTuple):
    """Jobs per state (every state present, zero included) and which of those counts are
    PostgreSQL's estimates (the final states', once the table is large), oldest state first."""

    counts: dict[str, int]
    estimated: list[str]


def job_state_counts() -> JobStateCounts:
    """How many jobs are in each state, at a cost that does not grow with history (issue 15 §4:
    a GROUP BY over every row took 4.6 -> 103 ms from 1,000 to 100,000 jobs, on every scrape and
    every 3 s per operator socket).

    Queued and running are exact (index probes: what is active now). The final states are exact
    while the table holds at most ``EXACT_COUNT_LIMIT`` rows, and beyond, PostgreSQL's estimates
    from its statistics (``jobs.selectors.value_estimates``: one catalog read, off by what changed
    since autovacuum last analyzed the table): totals of finished history, for a trend; what
    finished lately is counted exactly by ``finished_last_hour``. On SQLite (no statistics) every
    count is exact and grows with the table.
    """
    counts = dict.fromkeys(JobState.values, 0)
    estimates = value_estimates(Job, "state")
    if estimates is None or estimates.rows <= EXACT_COUNT_LIMIT:
        for row in Job.objects.order_by().values("state").annotate(n=Count("pk")):
            counts[row["state"]] = row["n"]
        return JobStateCounts(counts, [])
    for row in Job.objects.order_by().filter(state__in=ACTIVE_STATES).values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    estimated = [state for state in JobState.values if state in FINAL_STATES]
    for state in estimated:
        counts[state] = estimates.by_value.get(state, 0)
    return JobStateCounts(counts, estimated)


def job_counts_by_state() -> dict[str, int]:
    """How many jobs are in each state, every state present (zero included); the final states'
    may be estimates (see ``job_state_counts``)."""
    return job_state_counts().counts


def active_job_counts_by_kind() -> list[dict[str, Any]]:
    """Queued and running jobs per kind: ``[{"kind", "state", "count"}]``, sorted."""
    rows = (
        Job.objects.order_by().filter(state__in=ACTIVE_STATES).values("kind", "state").annotate(n=Count("pk"))
    )
    return sorted(
        ({"kind": row["kind"], "state": row["state"], "count": row["n"]} for row in rows),
        key=lambda row: (row["kind"], row["state"]),
    )


def finished_last_hour(*, now: datetime | None = None) -> dict[str, int]:
    """Jobs that reached each final state in the last hour (every final state present)."""
    since = (now or timezone.now()) - timedelta(hours=1)
    states = [state.value for state in JobState if state in FINAL_STATES]
    # Only the finish time in the WHERE and no GROUP BY, so the last hour's rows are found by
    # job_finished_idx: with the state in the WHERE, or grouped by it, SQLite's planner (no
    # statistics) read every finished job by a state index instead (46 ms at 100,000 jobs).
    counts = (
        Job.objects.order_by()
        .filter(finished_at__gte=since)
        .aggregate(**{state: Count("pk", filter=Q(state=state)) for state in states})
    )
    return {state: counts[state] or 0 for state in states}


def failure_ratio(finished: Mapping[str, int]) -> float:
    """Failed / (succeeded + failed); cancellations are a user's choice, not a failure. 0 when none."""
    failed = finished.get(JobState.FAILED.value, 0)
    decided = failed + finished.get(JobState.SUCCEEDED.value, 0)
    return failed / decided if decided else 0.0


def _stalled_queryset(stale_after: float | None, now: datetime | None) -> Any:
    stale_after = app_settings.STALE_AFTER if stale_after is None else stale_after
    cutoff = (now or timezone.now()) - timedelta(seconds=stale_after)
    # The reaper's own condition (jobs.housekeeping.job_reap_stale), so the gauge shows what it will act on.
    return Job.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff)


def stalled_job_count(*, stale_after: float | None = None, now: datetime | None = None) -> int:
    """Running jobs whose heartbeat is older than ``stale_after`` (RUNBOARD_STALE_AFTER) seconds."""
    return _stalled_queryset(stale_after, now).count()


def stalled_jobs(
    *, stale_after: float | None = None, now: datetime | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The stalled jobs themselves, longest silent first.

    A parallel job (``chunks > 0``) may be silent only because its chunks wait for a free worker;
    the reaper gives those their time limit per chunk before it acts.
    """
    now = now or timezone.now()
    jobs = (
        _stalled_queryset(stale_after, now)
        .select_related("owner")
        .order_by("heartbeat_at")
        .only("id", "kind", "owner__username", "started_at", "heartbeat_at", "attempts", "chunks_total")
    )[:limit]
    return [
        {
            "id": str(job.id),
            "kind": job.kind,
            "owner": job.owner.get_username(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "heartbeat_at": job.heartbeat_at.isoformat(),
            "silent_for_s": round((now - job.heartbeat_at).total_seconds(), 1),
            "attempts": job.attempts,
            "chunks": job.chunks_total,
        }
        for job in jobs
    ]


# --- Queues -------------------------------------------------------------------------------------


def queue_names() -> list[str]:
    """The Celery queues Runboard uses: every registered kind's, plus the default queue and
    housekeeping's (a backlog there means the housekeeping process is down or stuck)."""
    names = {kind.queue for kind in all_kinds()}
    names.update({"default", settings.CELERY_TASK_DEFAULT_QUEUE, settings.HOUSEKEEPING_QUEUE})
    return sorted(names)


@contextmanager
def _redis_client(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        yield client
    finally:
        client.close()


def queue_depths(queues: Iterable[str] | None = None) -> dict[str, int]:
    """Messages waiting in each queue on the broker (not counting ones a worker has reserved).

    Raises redis.RedisError / OSError when the broker does not answer.
    """
    names = sorted(set(queue_names() if queues is None else queues))
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    steps = sorted(options.get("priority_steps", KOMBU_PRIORITY_STEPS))
    prefix = options.get("global_keyprefix", "")
    # The keys a message can land in, as kombu maps a priority to its step.
    used_steps = sorted({steps[bisect(steps, step) - 1] for step in steps})
    with _redis_client(settings.CELERY_BROKER_URL) as client, client.pipeline(transaction=False) as pipe:
        for name in names:
            for step in used_steps:
                pipe.llen(f"{prefix}{name}{KOMBU_PRIORITY_SEP}{step}" if step else f"{prefix}{name}")
        sizes = pipe.execute()
    per_queue = len(used_steps)
    return {name: sum(sizes[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(names)}


# --- Sockets and notifications ------------------------------------------------------------------


def open_socket_count(*, now: datetime | None = None) -> int:
    """WebSockets some web process has seen lately (rows of dead processes age out)."""
    return SocketConnection.objects.filter(seen_at__gte=(now or timezone.now()) - socket_fresh_for()).count()


def unread_notifications_total() -> int:
    """Unread notifications over all users (the maintained per-user counters, summed)."""
    return NotificationState.objects.aggregate(total=Sum("unread_count"))["total"] or 0


def overview(*, now: datetime | None = None) -> dict[str, Any]:
    """Everything above in one dict (what /metrics exposes); ``queues`` is None if Redis is down."""
    now = now or timezone.now()
    finished = finished_last_hour(now=now)
    try:
        queues: dict[str, int] | None = queue_depths()
    except (redis.RedisError, OSError):
        queues = None
    by_state = job_state_counts()
    return {
        "jobs_by_state": by_state.counts,
        # The states whose count above is PostgreSQL's estimate ("about"; see job_state_counts).
        "jobs_by_state_estimated": by_state.estimated,
        "active_jobs_by_kind": active_job_counts_by_kind(),
        "finished_last_hour": finished,
        "failure_ratio_last_hour": failure_ratio(finished),
        "stalled_jobs": stalled_job_count(now=now),
        "queue_depths": queues,
        "open_sockets": open_socket_count(now=now),
        "unread_notifications": unread_notifications_total(),
    }


# --- Readiness ----------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A dependency answered, but not as needed (e.g. no worker replied)."""


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        if cursor.fetchone() != (1,):
            raise CheckFailed("SELECT 1 did not return 1")


def check_redis(url: str | None = None) -> None:
    """Ping the Celery broker (or ``url``)."""
    with _redis_client(url or settings.CELERY_BROKER_URL) as client:
        client.ping()


def _channel_layer_hosts() -> list[dict[str, Any]] | None:
    """The Redis hosts of a channels_redis layer, decoded as channels_redis does; None otherwise."""
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    if not str(layer.get("BACKEND", "")).startswith("channels_redis."):
        return None
    from channels_redis.utils import decode_hosts

    return decode_hosts(layer.get("CONFIG", {}).get("hosts"))


def check_channel_layer() -> None:
    """Ping every Redis the channel layer publishes through (sync redis-py, bounded timeouts)."""
    timeouts: dict[str, Any] = {"socket_timeout": CHECK_TIMEOUT, "socket_connect_timeout": CHECK_TIMEOUT}
    for host in _channel_layer_hosts() or []:
        host = {key: value for key, value in host.items() if key not in ("max_connections", *timeouts)}
        if "address" in host:
            client = redis.Redis.from_url(host.pop("address"), **host, **timeouts)
        elif "master_name" in host:
            from redis.sentinel import Sentinel

            sentinel = Sentinel(host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None))
            client = sentinel.master_for(host.pop("master_name"), **host, **timeouts)
        else:
            client = redis.Redis(**host, **timeouts)
        try:
            client.ping()
        finally:
            client.close()


def celery_app() -> Any:
    return app


def job_queues() -> set[str]:
    """The queues the registered kinds send their jobs to."""
    return {kind.queue for kind in all_kinds()}


class _Covered(Exception):
    """Every queue asked for has a consumer: stop collecting replies."""


def consumed_queues(needed: set[str], app: Any = None, timeout: float = CHECK_TIMEOUT) -> set[str]:
    """Which of ``needed`` some Celery worker consumes, asked of every worker (``active_queues``
    over the broadcast mailbox): returns as soon as all are covered, else once no worker has
    replied for ``timeout`` seconds."""
    app = app or celery_app()
    found: set[str] = set()

    def on_reply(body: Mapping[str, Any]) -> None:
        for queues in body.values():
            found.update(str(queue.get("name")) for queue in queues or () if isinstance(queue, dict))
        if needed <= found:
            # kombu's reply collector has no "enough" predicate, only a count; an exception
            # from the callback leaves it (its `finally` releases the reply queue).
            raise _Covered

    with contextlib.suppress(_Covered):
        app.control.broadcast("active_queues", reply=True, timeout=timeout, callback=on_reply)
    return needed & found


def check_workers(app: Any = None, timeout: float = CHECK_TIMEOUT) -> None:
    """Every job queue (the kinds' queues) has a worker consuming it that answers within
    ``timeout`` seconds (the housekeeping process does not count: it runs no job)."""
    needed = job_queues()
    missing = needed - consumed_queues(needed, app, timeout)
    if missing:
        raise CheckFailed(
            f"no worker consumes the job queue(s) {', '.join(sorted(missing))} (asked for {timeout:g} s)"
        )


def check_housekeeping(app: Any = None, timeout: float = CHECK_TIMEOUT) -> None:
    """The housekeeping process (the reaper, re-queue, retention, admission timer) answers."""
    queue = settings.HOUSEKEEPING_QUEUE
    if not consumed_queues({queue}, app, timeout):
        raise CheckFailed(f"no process consumes the {queue!r} queue (asked for {timeout:g} s)")


def default_checks() -> dict[str, Callable[[], object]]:
    checks: dict[str, Callable[[], object]] = {"database": check_database, "redis": check_redis}
    if _channel_layer_hosts() is not None:
        checks["channel_layer"] = check_channel_layer
    checks["workers"] = check_workers
    checks["housekeeping"] = check_housekeeping
    return checks


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def _safe_error(exc: BaseException) -> str:
    """The exception as a one-line message, with any URL credentials masked."""
    message = " ".join(str(exc).split()) or "failed"
    if not isinstance(exc, CheckFailed):
        message = f"{type(exc).__name__}: {message}"
    message = _URL_CREDENTIALS.sub(r"\g<scheme>***@", message)
    return message[:MAX_ERROR_CHARS]


def _run_check(check: Callable[[], object]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
        result: dict[str, Any] = {"ok": True}
    except Exception as exc:
        result = {"ok": False, "error": _safe_error(exc)}
    finally:
        # The check ran in a pool thread: don't leave its database connection open.
        connections.close_all()
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def readiness(
    checks: Mapping[str, Callable[[], object]] | None = None, *, deadline: float = READY_DEADLINE
) -> dict[str, Any]:
    """Run the checks concurrently; ``{"ready", "checks": {name: {"ok", "ms"[, "error"]}}}``.

    A check still running at ``deadline`` counts as failed; its thread is left to finish on its
    own (every check has its own timeouts) so the caller always gets an answer in time.
    """
    checks = default_checks() if checks is None else checks
    pool = ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="readyz")
    try:
        futures = {name: pool.submit(_run_check, check) for name, check in checks.items()}
        wait_for_futures(futures.values(), timeout=deadline)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        if future.done():
            results[name] = future.result()
        else:
            results[name] = {"ok": False, "ms": deadline * 1000, "error": f"timed out after {deadline:g} s"}
    return {"ready": all(result["ok"] for result in results.values()), "checks": results}
