"""Runboard's Prometheus counters and histograms, counted where things happen (issue 15 §5).

Each function below is the one-line call its site makes (a job's start in the worker, its end
where it commits, a publish, a socket's connect and close, a catch-up page); each costs one or
two metric updates (about 1 µs in one process, a few µs in multiprocess mode: an mmap write),
never a query.

Several processes (web, worker pool children, housekeeping, beat) count into one set of figures
through prometheus-client's multiprocess mode (https://prometheus.github.io/client_python/multiprocess/):
when ``PROMETHEUS_MULTIPROC_DIR`` is set in the environment *before* Python starts, every process
writes its values to ``<dir>/<type>_<pid>.db`` and the process answering ``/metrics`` adds them up
(``scrape_registry``). The directory must be shared by every process of one host and emptied at
each deploy (docs/operations.md, *Metrics across processes*). Unset, the figures are this process's
own (``PROCESS_REGISTRY``): right for a single process, a share of the truth for several.

No gauge lives here: the gauges (queue depths, active jobs, open sockets) are read at scrape time
by dashboard/health.py, so no ``multiprocess_mode`` has to guess how to merge per-process values.
``mark_process_dead`` still runs when a Celery pool process exits, for any ``live*`` gauge added later.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec

from celery.signals import worker_process_shutdown
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Where the figures of a process without the multiprocess directory live (not prometheus-client's
# default REGISTRY: that one also carries process_*/python_* collectors, which multiprocess mode
# cannot merge, and a scrape would differ between the two modes).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)

# A counter's first update opens its file there: a directory that does not exist (a typo, a tmpfs
# not mounted yet) would make that update raise in a job or a publish, not at the scrape.
if os.environ.get(MULTIPROC_DIR_ENV):
    os.makedirs(os.environ[MULTIPROC_DIR_ENV], exist_ok=True)

# Seconds. Jobs run from milliseconds (a zero-step job) to a kind's hard time limit
# (RUNBOARD_MAX_JOB_TIME_LIMIT caps it; 330 s by default, jobs.kinds.registry.JobKind.time_limit).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Seconds from launch (or re-queue) to start: milliseconds on an idle system, up to minutes when a
# user's or kind's running cap holds a job in line (jobs.admission).
QUEUE_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Notifications in one catch-up page: a page holds at most notifications.selectors.REPLAY_PAGE (100).
CATCHUP_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100)

# Close codes kept as a label value: RFC 6455's (1000-1015) and Runboard's own
# (notifications.events.CLOSE_*, docs/protocol.md). A client may close with any code from 1000 to
# 4999; the rest count as "other", so a client cannot grow the series without bound.
SERVER_CLOSE_CODES = frozenset({4401, 4403, 4409, 4412, 4429, 4503})
RFC_CLOSE_CODES = range(1000, 1016)

JOBS_FINISHED = Counter(
    "runboard_jobs_finished",
    "Jobs that ended, by kind and outcome (succeeded, failed, cancelled), each counted once.",
    ["kind", "outcome"],
    registry=PROCESS_REGISTRY,
)
JOB_DURATION = Histogram(
    "runboard_job_duration_seconds",
    "Seconds from a job's start (its latest attempt) to its end, by kind.",
    ["kind"],
    buckets=DURATION_BUCKETS,
    registry=PROCESS_REGISTRY,
)
JOB_QUEUE_WAIT = Histogram(
    "runboard_job_queue_wait_seconds",
    "Seconds a job waited between its launch (a retry: its re-queue) and its start, by kind.",
    ["kind"],
    buckets=QUEUE_WAIT_BUCKETS,
    registry=PROCESS_REGISTRY,
)
PUSHES = Counter(
    "runboard_pushes",
    "Events handed to the channel layer (target: group, or direct to one connection).",
    ["target"],
    registry=PROCESS_REGISTRY,
)
PUSH_FAILURES = Counter(
    "runboard_push_failures",
    "Events that could not be handed to the channel layer (dropped; clients resync from the database).",
    ["target"],
    registry=PROCESS_REGISTRY,
)
SOCKET_CONNECTS = Counter(
    "runboard_socket_connects",
    "Connections opened to the event transports (transport: websocket or sse), signed in or not.",
    ["transport"],
    registry=PROCESS_REGISTRY,
)
SOCKET_CLOSES = Counter(
    "runboard_socket_closes",
    "Connections closed, by transport and close code (sse: none; an unknown code: other).",
    ["transport", "code"],
    registry=PROCESS_REGISTRY,
)
CATCHUP_PAGE = Histogram(
    "runboard_catchup_page_notifications",
    "Notifications replayed per catch-up page; last: whether the page ended its catch-up.",
    ["last"],
    buckets=CATCHUP_BUCKETS,
    registry=PROCESS_REGISTRY,
)


logger = logging.getLogger(__name__)
_P = ParamSpec("_P")


def _never_raises(count: Callable[_P, None]) -> Callable[_P, None]:
    """A counting function that logs instead of raising: it runs in a job's finish hooks, a
    publish, a socket's disconnect, where an error of its own (the multiprocess directory gone
    under a running process: FileNotFoundError) must not cost what the call site does next
    (found by review: a raising on_commit hook drops the hooks after it)."""

    @functools.wraps(count)
    def counted(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            logger.warning("Could not count %s", count.__name__, exc_info=True)

    return counted


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, or None (single-process figures).

    prometheus-client chooses its mode when it is first imported, from the environment
    (prometheus_client.values.get_value_class), so this reads the environment, not the settings.
    """
    return os.environ.get(MULTIPROC_DIR_ENV) or None


def _seconds_between(start: datetime, end: datetime) -> float:
    # Clocks of different hosts (the web's created_at, a worker's started_at) may disagree a little.
    return max(0.0, (end - start).total_seconds())


@_never_raises
def job_started(job: Any) -> None:
    """A worker started ``job`` (a Job as ``jobs.states.job_start`` returns it: ``kind``,
    ``started_at``, ``created_at``, ``enqueued_at``, ``attempts``): observe its queue wait.

    The wait counts from the launch (``created_at``) for a first attempt, from the re-queue
    (``enqueued_at``) for a later one, so a retry's earlier run is not counted as waiting.
    """
    since = job.enqueued_at if job.attempts > 1 and job.enqueued_at is not None else job.created_at
    if since is not None:
        wait = _seconds_between(since, job.started_at or timezone.now())
        JOB_QUEUE_WAIT.labels(kind=job.kind).observe(wait)


@_never_raises
def job_finished(
    *, kind: str, outcome: str, started_at: datetime | None, finished_at: datetime | None = None
) -> None:
    """A job of ``kind`` ended with ``outcome`` (a final JobState value): count it and observe its
    duration in seconds from ``started_at`` (none observed for a job that never started) to
    ``finished_at`` (default now)."""
    JOBS_FINISHED.labels(kind=kind, outcome=str(outcome)).inc()
    if started_at is not None:
        JOB_DURATION.labels(kind=kind).observe(_seconds_between(started_at, finished_at or timezone.now()))


@_never_raises
def push_published(*, direct: bool) -> None:
    """An event reached the channel layer (``direct``: sent to one channel, else to a group)."""
    PUSHES.labels(target="direct" if direct else "group").inc()


@_never_raises
def push_failed(*, direct: bool) -> None:
    """An event could not be handed to the channel layer (timed out or raised)."""
    PUSH_FAILURES.labels(target="direct" if direct else "group").inc()


@_never_raises
def socket_connected(transport: str) -> None:
    """A connection reached a transport's handler (``websocket`` or ``sse``)."""
    SOCKET_CONNECTS.labels(transport=transport).inc()


def close_code_label(code: int | None) -> str:
    """The label value of a close ``code``: the code itself when RFC 6455 or Runboard defines it,
    ``none`` without one (an SSE stream), else ``other``."""
    if code is None:
        return "none"
    if code in RFC_CLOSE_CODES or code in SERVER_CLOSE_CODES:
        return str(code)
    return "other"


@_never_raises
def socket_closed(transport: str, code: int | None = None, *, by_client: bool = False) -> None:
    """A connection of ``transport`` closed with ``code`` (None: the transport has no code);
    ``by_client``: the client chose the code, so one of Runboard's (a server decision: 4403,
    4503...) counts as ``other``, not as the server's (found by review: any user could raise them)."""
    label = "other" if by_client and code in SERVER_CLOSE_CODES else close_code_label(code)
    SOCKET_CLOSES.labels(transport=transport, code=label).inc()


@_never_raises
def catch_up_page(*, rows: int, more: bool) -> None:
    """A catch-up page of ``rows`` notifications was read; ``more``: another page follows."""
    CATCHUP_PAGE.labels(last="false" if more else "true").observe(rows)


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry for one scrape: every process's figures (multiprocess mode: merged from the
    directory's files by MultiProcessCollector; else this process's own), plus ``collectors``
    (figures read at scrape time, such as the gauges of dashboard/health.py).

    Raises ValueError if PROMETHEUS_MULTIPROC_DIR names no directory.
    """
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory is not None:
        # The counters are not registered here too: the collector already reads them from the
        # files, and registering them would export them twice (the multiprocess docs' warning).
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Own())
    for collector in collectors:
        registry.register(collector)
    return registry


class _Own(Collector):
    """This process's figures, for a scrape registry of its own (one collector, however many metrics)."""

    def collect(self) -> Any:
        return PROCESS_REGISTRY.collect()


@worker_process_shutdown.connect
def _pool_process_exits(pid: int | None = None, **kwargs: Any) -> None:
    """A Celery pool process exits: drop its ``live*`` gauge files (its counters' files stay, so
    totals never go down). A process killed outright (SIGKILL, the hard time limit) sends no
    signal; only live gauges would suffer, and there are none today."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid or os.getpid(), directory)
