"""Job history over time for the Operations charts and failure groups (issue 16 §11, §13).

Read from the ``jobs.models.Job`` table only, and only the window asked for (the last hour or
the last day): every query is a range on ``finished_at`` (``job_finished_idx``) or on
``created_at`` (``job_created_idx``), so the cost grows with the jobs *in the window*, never with
history. Counts are aggregated per bucket in SQL (``Trunc``, SQLite and PostgreSQL alike);
percentiles are computed here from at most ``SAMPLE_ROWS`` rows per measure (when a window holds
more, each bucket is read newest first up to its share, and the payload says ``sampled``).

Served by ``GET /api/v1/ops/history/`` (dashboard/api.py), which the Operations page polls; the
3-second ``ops.update`` never computes any of it.
"""

from __future__ import annotations

import math
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict

from django.db.models import Count, Max, Q
from django.db.models.functions import Right, Substr, TruncHour, TruncMinute
from django.urls import reverse
from django.utils import timezone

from jobs.kinds.registry import UnknownKind, get_kind
from jobs.models import Job, JobState

# --- Bounds ------------------------------------------------------------------------------------

# Rows read to compute one measure's percentiles (runtime; queue wait) in one window.
SAMPLE_ROWS = 10_000
# Kinds drawn one by one; the rest are summed (and pooled, for percentiles) as OTHER_KINDS.
MAX_KINDS = 8
OTHER_KINDS = "(other)"
# Failure groups returned, largest first, and the kinds named in each.
MAX_FAILURE_GROUPS = 20
MAX_GROUP_KINDS = 10
# Failed jobs without an error class read (newest first) to group them by their error's first line.
UNCLASSED_ROWS = 1_000
UNKNOWN_CLASS = "(unknown)"
# UTF-8 bytes of each group's latest message, traceback (its end: where the exception is) and of
# the first line an unclassed group is named by.
MESSAGE_BYTES = 300
TRACEBACK_BYTES = 8 * 1024
FIRST_LINE_BYTES = 80

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    bucket_seconds: int
    trunc: Callable[..., Any]  # the Trunc function whose unit is one bucket


WINDOWS: dict[str, Window] = {
    "hour": Window("hour", timedelta(hours=1), 60, TruncMinute),
    "day": Window("day", timedelta(days=1), 3600, TruncHour),
}


# --- Payload shapes ----------------------------------------------------------------------------


class KindSeries(TypedDict):
    """One kind's figures: each list has one value per bucket (``HistoryPayload.buckets``);
    percentiles are ``None`` for a bucket without a job to measure. Durations in seconds."""

    kind: str
    finished: list[int]  # jobs that ended (succeeded, failed or cancelled) in the bucket
    failed: list[int]
    runtime_p50_s: list[float | None]  # started_at -> finished_at of succeeded and failed jobs
    runtime_p95_s: list[float | None]
    finished_in_window: int
    failed_in_window: int
    runtime_p50_s_in_window: float | None
    runtime_p95_s_in_window: float | None


class QueueSeries(TypedDict):
    """One queue's wait per bucket of creation: ``started_at - created_at``, or, for a job still
    queued, how long it has waited so far (a backlog shows while it builds). Seconds."""

    queue: str
    jobs: list[int]  # jobs measured in the bucket (of the sample, when sampled)
    wait_p50_s: list[float | None]
    wait_p95_s: list[float | None]
    jobs_in_window: int
    wait_p50_s_in_window: float | None
    wait_p95_s_in_window: float | None


class FailureGroup(TypedDict):
    """Failed jobs of the window with one error class (or, for jobs failed before classes were
    recorded, one first line of their error). What the jobs said (``latest_message``, the
    latest's id, an unclassed group's first line) only for those who may see every user's jobs
    (the "view all jobs" power): the class and the counts are the operator view's; ``traceback``
    (the latest one's end, at most ``TRACEBACK_BYTES``) only with "see all results"."""

    error_class: str  # "" for an unclassed group
    label: str  # the class, or "(unknown): <first line>" ("(unknown)" without the jobs' words)
    count: int
    kinds: list[str]  # most failures first, at most MAX_GROUP_KINDS
    latest_at: str  # ISO 8601
    latest_job_id: str  # "" without "view all jobs"
    latest_message: str  # the latest one's error, at most MESSAGE_BYTES; "" without "view all jobs"
    search: str  # the dashboard's search for an unclassed group's jobs; "" for a class
    # The dashboard's list of exactly these jobs: "/?state=failed&error_class=<class>" (an
    # unclassed group: "/?state=failed&q=<its first line>").
    jobs_url: str
    # The Bulk actions page's preview of retrying exactly these jobs (failed in the window's
    # bounds, with this class): "/operations/bulk/?preview=1&action=retry&states=failed&error_class=
    # …&finished_after=…&finished_before=…"; "" for an unclassed group (no exact filter for it).
    bulk_url: str
    traceback: NotRequired[str]


class HistoryPayload(TypedDict):
    """The Operations page's charts and failure groups for one window (``hour``: 60 one-minute
    buckets; ``day``: 24 one-hour buckets, in UTC; the last bucket is the current, partial one)."""

    window: str
    at: str  # ISO 8601: when this was read
    bucket_seconds: int
    buckets: list[int]  # each bucket's start, Unix seconds, oldest first
    kinds: list[KindSeries]  # most finished first; at most MAX_KINDS, then OTHER_KINDS
    queues: list[QueueSeries]  # by name
    finished_total: int
    failed_total: int
    sampled: bool  # percentiles come from a sample of the window (SAMPLE_ROWS rows per measure)
    sample_rows: int  # rows read for the percentiles
    failures: list[FailureGroup]  # most failures first, at most MAX_FAILURE_GROUPS
    failure_groups_total: int  # groups before the cap
    failures_sampled: bool  # unclassed failures were grouped from their newest UNCLASSED_ROWS


# --- Helpers -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ascending values; ``None`` if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def cut_bytes(text: str, max_bytes: int, *, keep_end: bool = False) -> str:
    """``text`` within ``max_bytes`` of UTF-8, an ellipsis marking the cut (at the end, or at the
    start with ``keep_end``); never a broken character."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    room = max_bytes - len("…".encode())
    if keep_end:
        return "…" + encoded[len(encoded) - room :].decode(errors="ignore")
    return encoded[:room].decode(errors="ignore") + "…"


def queue_of(kind: str) -> str:
    """The queue a kind's jobs run on; an unknown kind's (an app removed, a renamed kind): default."""
    try:
        return get_kind(kind).queue
    except UnknownKind:
        return DEFAULT_QUEUE


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class _Buckets:
    """A window's buckets: ``count`` of ``seconds`` each, the last holding ``now``."""

    def __init__(self, window: Window, now: datetime) -> None:
        self.seconds = window.bucket_seconds
        self.count = int(window.span.total_seconds()) // self.seconds
        now_s = int(now.timestamp())
        last = now_s - now_s % self.seconds
        self.first_s = last - (self.count - 1) * self.seconds
        self.start = datetime.fromtimestamp(self.first_s, UTC)
        self.end = datetime.fromtimestamp(last + self.seconds, UTC)

    def starts(self) -> list[int]:
        return [self.first_s + i * self.seconds for i in range(self.count)]

    def index(self, moment: datetime) -> int | None:
        i = (int(moment.timestamp()) - self.first_s) // self.seconds
        return i if 0 <= i < self.count else None

    def bounds(self, i: int) -> tuple[datetime, datetime]:
        start = self.first_s + i * self.seconds
        return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + self.seconds, UTC)


def _per_bucket(field: str, buckets: _Buckets, window: Window) -> list[int]:
    """Jobs per bucket of ``field`` (an indexed time), counted in SQL."""
    counts = [0] * buckets.count
    rows = (
        Job.objects.order_by()
        .filter(**{f"{field}__gte": buckets.start, f"{field}__lt": buckets.end})
        .annotate(bucket=window.trunc(field, tzinfo=UTC))
        .values("bucket")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        i = buckets.index(row["bucket"])
        if i is not None:
            counts[i] += row["n"]
    return counts


def _sample(
    field: str, buckets: _Buckets, counts: list[int], columns: Sequence[str], extra: Q
) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows of the window by ``field`` (an indexed time) that match ``extra``, and whether they
    are a sample. ``counts``: the window's jobs per bucket (those matching ``extra`` or not). All of
    them in one query if at most SAMPLE_ROWS; else each bucket's newest up to its share, one
    query per non-empty bucket. Never more than SAMPLE_ROWS rows."""
    base = Job.objects.order_by().filter(extra)
    if sum(counts) <= SAMPLE_ROWS:
        window = base.filter(**{f"{field}__gte": buckets.start, f"{field}__lt": buckets.end})
        return list(window.values_list(*columns)[:SAMPLE_ROWS]), False
    share = SAMPLE_ROWS // buckets.count
    rows: list[tuple[Any, ...]] = []
    for i, count in enumerate(counts):
        if count:
            start, end = buckets.bounds(i)
            in_bucket = base.filter(**{f"{field}__gte": start, f"{field}__lt": end})
            rows.extend(in_bucket.order_by(f"-{field}").values_list(*columns)[:share])
    return rows, any(count > share for count in counts)


def _percentiles(
    samples: dict[int, list[float]], count: int
) -> tuple[list[float | None], list[float | None]]:
    p50: list[float | None] = [None] * count
    p95: list[float | None] = [None] * count
    for i, values in samples.items():
        values.sort()
        p50[i], p95[i] = percentile(values, 50), percentile(values, 95)
    return p50, p95


# --- Series ------------------------------------------------------------------------------------


def _kind_series(buckets: _Buckets, window: Window) -> tuple[list[KindSeries], bool, int]:
    # Only the finish time in the WHERE (see dashboard.ops.finished_last_hour): the window's
    # rows are found by job_finished_idx and grouped per bucket and kind in SQL.
    rows = (
        Job.objects.order_by()
        .filter(finished_at__gte=buckets.start, finished_at__lt=buckets.end)
        .annotate(bucket=window.trunc("finished_at", tzinfo=UTC))
        .values("bucket", "kind")
        .annotate(n=Count("pk"), failed=Count("pk", filter=Q(state=JobState.FAILED)))
    )
    counts: list[tuple[int, str, int, int]] = []
    per_kind: Counter[str] = Counter()
    for row in rows:
        i = buckets.index(row["bucket"])
        if i is not None:
            counts.append((i, row["kind"], row["n"], row["failed"]))
            per_kind[row["kind"]] += row["n"]
    shown = [kind for kind, _ in per_kind.most_common(MAX_KINDS)]
    name = _namer(shown, per_kind)

    finished: dict[str, list[int]] = defaultdict(lambda: [0] * buckets.count)
    failed: dict[str, list[int]] = defaultdict(lambda: [0] * buckets.count)
    for i, kind, n, n_failed in counts:
        finished[name(kind)][i] += n
        failed[name(kind)][i] += n_failed

    columns = ("kind", "state", "started_at", "finished_at")
    per_bucket = [0] * buckets.count
    for i, _, n, _ in counts:
        per_bucket[i] += n
    sample, sampled = _sample("finished_at", buckets, per_bucket, columns, Q(started_at__isnull=False))
    runtimes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for kind, state, started_at, finished_at in sample:
        i = buckets.index(finished_at)
        if i is not None and state in (JobState.SUCCEEDED, JobState.FAILED):
            runtimes[name(kind)][i].append(max(0.0, (finished_at - started_at).total_seconds()))

    series: list[KindSeries] = []
    for kind in sorted(finished, key=lambda k: (k == OTHER_KINDS, -sum(finished[k]), k)):
        p50, p95 = _percentiles(runtimes[kind], buckets.count)
        everything = sorted(v for values in runtimes[kind].values() for v in values)
        series.append(
            {
                "kind": kind,
                "finished": finished[kind],
                "failed": failed[kind],
                "runtime_p50_s": p50,
                "runtime_p95_s": p95,
                "finished_in_window": sum(finished[kind]),
                "failed_in_window": sum(failed[kind]),
                "runtime_p50_s_in_window": percentile(everything, 50),
                "runtime_p95_s_in_window": percentile(everything, 95),
            }
        )
    return series, sampled, len(sample)


def _namer(shown: list[str], seen: Iterable[str]) -> Callable[[str], str]:
    keep = set(shown)
    if set(seen) <= keep:
        return lambda kind: kind
    return lambda kind: kind if kind in keep else OTHER_KINDS


def _queue_series(buckets: _Buckets, window: Window, now: datetime) -> tuple[list[QueueSeries], bool, int]:
    columns = ("kind", "state", "created_at", "started_at")
    # Started, or still waiting: a job cancelled or failed before it started never waited to the end.
    waiting = Q(started_at__isnull=False) | Q(state=JobState.QUEUED)
    counts = _per_bucket("created_at", buckets, window)
    sample, sampled = _sample("created_at", buckets, counts, columns, waiting)
    queues: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for kind, state, created_at, started_at in sample:
        i = buckets.index(created_at)
        if i is None or (started_at is None and state != JobState.QUEUED):
            continue
        queues[queue_of(kind)][i].append(max(0.0, ((started_at or now) - created_at).total_seconds()))
    series: list[QueueSeries] = []
    for queue in sorted(queues):
        p50, p95 = _percentiles(queues[queue], buckets.count)
        everything = sorted(v for values in queues[queue].values() for v in values)
        series.append(
            {
                "queue": queue,
                "jobs": [len(queues[queue].get(i, ())) for i in range(buckets.count)],
                "wait_p50_s": p50,
                "wait_p95_s": p95,
                "jobs_in_window": len(everything),
                "wait_p50_s_in_window": percentile(everything, 50),
                "wait_p95_s_in_window": percentile(everything, 95),
            }
        )
    return series, sampled, len(sample)


# --- Failure groups ----------------------------------------------------------------------------


def _first_line(error: str) -> str:
    line = next((part.strip() for part in error.splitlines() if part.strip()), "")
    return cut_bytes(line, FIRST_LINE_BYTES) or "no message"


def _jobs_url(error_class: str, search: str) -> str:
    query = {"state": "failed", **({"error_class": error_class} if error_class else {"q": search})}
    return reverse("frontend:home") + "?" + urllib.parse.urlencode(query)


def _bulk_url(error_class: str, since: datetime, until: datetime) -> str:
    """The bulk retry preview of exactly a class's failures in ``[since, until)`` (the group's)."""
    query = {"preview": "1", "action": "retry", "states": "failed", "error_class": error_class}
    query.update(finished_after=since.isoformat(), finished_before=until.isoformat())
    return reverse("frontend:bulk") + "?" + urllib.parse.urlencode(query)


def failure_groups(
    *, since: datetime, until: datetime, include_messages: bool, include_tracebacks: bool
) -> tuple[list[FailureGroup], int, bool]:
    """Failed jobs that finished in ``[since, until)``, grouped by error class, largest first:
    ``(groups (at most MAX_FAILURE_GROUPS), groups before the cap, unclassed ones sampled)``.
    Jobs without a class (failed before it was recorded) are grouped by their error's first line
    (read from their newest UNCLASSED_ROWS). Three queries: an aggregate, the unclassed rows (if
    any), and one read of the shown groups' latest jobs."""
    # Only the finish time in the WHERE, the state in the aggregates and in Python (as in
    # _kind_series): with the state in the WHERE, SQLite's planner read every failed job of
    # history by job_state_created_idx instead of the window by job_finished_idx.
    window = Job.objects.order_by().filter(finished_at__gte=since, finished_at__lt=until)
    is_failed = Q(state=JobState.FAILED)
    # key -> {"count", "latest" (finished_at), "kinds" (Counter), "job_id" (the latest's, if read)}
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(key: tuple[str, str], kind: str, n: int, latest: datetime, job_id: Any = None) -> None:
        group = groups.setdefault(key, {"count": 0, "latest": latest, "kinds": Counter(), "job_id": job_id})
        group["count"] += n
        group["kinds"][kind] += n
        if latest > group["latest"]:
            group["latest"], group["job_id"] = latest, job_id

    unclassed_total = 0
    rows = window.values("error_class", "kind").annotate(
        n=Count("pk", filter=is_failed), latest=Max("finished_at", filter=is_failed)
    )
    for row in rows:
        if not row["n"]:
            continue
        if row["error_class"]:
            add((row["error_class"], ""), row["kind"], row["n"], row["latest"])
        else:
            unclassed_total += row["n"]
    unclassed_sampled = False
    if unclassed_total:
        # A failure always has its error (what it shows): the rows read are failures, or the few
        # cancellations that say why.
        unclassed = list(
            window.filter(error_class="")
            .exclude(error="")
            .order_by("-finished_at")
            .annotate(head=Substr("error", 1, 4 * FIRST_LINE_BYTES))
            .values_list("pk", "kind", "state", "finished_at", "head")[:UNCLASSED_ROWS]
        )
        read = [row for row in unclassed if row[2] == JobState.FAILED]
        unclassed_sampled = unclassed_total > len(read)
        for pk, kind, _, finished_at, head in reversed(read):  # oldest first: the latest's id wins
            assert finished_at is not None  # read by its range
            # Without the jobs' words, one "(unknown)" group: a first line is what a job said.
            add(("", _first_line(head or "") if include_messages else ""), kind, 1, finished_at, pk)

    ranked = sorted(
        groups.items(), key=lambda item: (-item[1]["count"], -item[1]["latest"].timestamp(), item[0])
    )
    shown = ranked[:MAX_FAILURE_GROUPS]
    latest = _latest_jobs(window, shown, include_tracebacks=include_tracebacks) if include_messages else {}

    result: list[FailureGroup] = []
    for (error_class, line), group in shown:
        job = latest.get((error_class, line))
        # An unclassed group's search: its first line, without the "…" a cut one ends with.
        search = "" if error_class else line.removesuffix("…")
        item: FailureGroup = {
            "error_class": error_class,
            "label": error_class or (f"{UNKNOWN_CLASS}: {line}" if line else UNKNOWN_CLASS),
            "count": group["count"],
            "kinds": [kind for kind, _ in group["kinds"].most_common(MAX_GROUP_KINDS)],
            "latest_at": _iso(group["latest"]),
            "latest_job_id": str(job["pk"]) if job else "",
            "latest_message": cut_bytes(job["message"] or "", MESSAGE_BYTES) if job else "",
            "search": search,
            "jobs_url": _jobs_url(error_class, search),
            # Only for those who may see (and so bulk-act on) every user's jobs: for anyone else
            # the preview would select none of them (found by review: "14 failed" led to 0).
            "bulk_url": _bulk_url(error_class, since, until) if error_class and include_messages else "",
        }
        if include_tracebacks and include_messages:
            item["traceback"] = cut_bytes(job["trace"] or "", TRACEBACK_BYTES, keep_end=True) if job else ""
        result.append(item)
    return result, len(groups), unclassed_sampled


def _latest_jobs(
    window: Any, shown: list[tuple[tuple[str, str], dict[str, Any]]], *, include_tracebacks: bool
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each shown group's latest job, in one query of index probes (its class and finish time,
    or its id), message and traceback cut in SQL before they are read (no traceback is read
    without ``include_tracebacks``)."""
    if not shown:
        return {}
    wanted = Q()
    for (error_class, _), group in shown:
        if error_class:
            wanted |= Q(error_class=error_class, finished_at=group["latest"])
        else:
            wanted |= Q(pk=group["job_id"])
    # One character more than fits: a longer text is marked cut.
    fields: dict[str, Any] = {"message": Substr("error", 1, MESSAGE_BYTES + 1)}
    if include_tracebacks:
        fields["trace"] = Right("traceback", TRACEBACK_BYTES + 1)
    rows = window.filter(wanted).annotate(**fields).values("pk", "state", "error_class", *fields)
    by_class: dict[str, dict[str, Any]] = {}
    by_pk: dict[Any, dict[str, Any]] = {}
    for row in rows:
        if row["state"] != JobState.FAILED:
            continue
        by_pk[row["pk"]] = row
        known = by_class.get(row["error_class"])
        if row["error_class"] and (known is None or str(row["pk"]) > str(known["pk"])):
            by_class[row["error_class"]] = row  # ties on the finish time: one, the same each read
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for key, group in shown:
        row = by_class.get(key[0]) if key[0] else by_pk.get(group["job_id"])
        if row is not None:
            found[key] = row
    return found


# --- The payload -------------------------------------------------------------------------------


def ops_history(
    *, window: str, include_messages: bool, include_tracebacks: bool, now: datetime | None = None
) -> HistoryPayload:
    """The charts' series and the failure groups of the last ``window`` ("hour" or "day"; any
    other name is a ``ValueError``). ``include_messages``: the caller may see every user's jobs
    (jobs.permissions.Power.VIEW_ALL_JOBS), so the groups carry what the jobs said (their latest
    error, its job's id, an unclassed group's first line); without it only classes and counts.
    ``include_tracebacks``: the caller also holds "see all results" (Power.VIEW_ALL_RESULTS);
    without both no traceback is read.
    Bounded however long the history: 7 queries at most (``2 x buckets + 5`` when a window holds
    more than SAMPLE_ROWS jobs), at most ``2 x SAMPLE_ROWS + UNCLASSED_ROWS`` rows read plus
    one per (bucket, kind), per bucket, per (error class, kind) and per shown group."""
    if window not in WINDOWS:
        raise ValueError(f"Unknown window {window!r}: one of {', '.join(WINDOWS)}.")
    spec = WINDOWS[window]
    now = now or timezone.now()
    buckets = _Buckets(spec, now)
    kinds, runtime_sampled, runtime_rows = _kind_series(buckets, spec)
    queues, wait_sampled, wait_rows = _queue_series(buckets, spec, now)
    failures, groups_total, failures_sampled = failure_groups(
        since=buckets.start, until=buckets.end, include_messages=include_messages,
        include_tracebacks=include_tracebacks,
    )  # fmt: skip
    return {
        "window": spec.name,
        "at": _iso(now),
        "bucket_seconds": spec.bucket_seconds,
        "buckets": buckets.starts(),
        "kinds": kinds,
        "queues": queues,
        "finished_total": sum(series["finished_in_window"] for series in kinds),
        "failed_total": sum(series["failed_in_window"] for series in kinds),
        "sampled": runtime_sampled or wait_sampled,
        "sample_rows": runtime_rows + wait_rows,
        "failures": failures,
        "failure_groups_total": groups_total,
        "failures_sampled": failures_sampled,
    }
