"""Admission control: the database is the queue of record, and a fair scheduler hands queued jobs
to the broker (issue 14 §1, design.md §5b "Fair admission").

A launch inserts its job `queued` and not admitted (``admitted_at`` empty): no broker message yet.
``jobs_admit`` (after a launch commits, when a job finishes, 0.25 s after a job starts unless it
is over by then (jobs.runner), on the reaper's tick) picks
the jobs that may go now, round-robin across users (the user with the fewest jobs admitted first,
then the one whose next job's kind has the higher ``priority``, then whoever has waited longest;
within a user, highest priority then oldest first), within

- the per-user limit ``RUNBOARD_MAX_RUNNING_PER_USER`` (running + admitted),
- a kind's ``max_running_per_user``,
- the global ``RUNBOARD_MAX_ADMITTED`` (0: none),
- ``RUNBOARD_ADMIT_AHEAD_PER_USER`` admitted-but-not-started jobs per user and queue: the
  broker's line holds at most one job of each user, so it is round-robin too and a user with
  nothing running is next at the next free slot, whatever the others have queued,
- and the kinds and queues staff paused (``AdmissionControl``).

Every admission pass runs under one lock (PostgreSQL: a transaction-level advisory lock; SQLite:
its one writer, transactions begin IMMEDIATE), so any number of web and worker processes cannot
over-admit. Admitted jobs whose message is lost or whose worker dies are recovered as before
(jobs.housekeeping: re-send, reap); they keep their admission. Each waiting job carries why it
waits and where it stands (``wait_code``, ``wait_note``, ``wait_position``), rewritten (a new
version, pushed) only when it changes.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Case, Count, F, Field, Min, OuterRef, Q, QuerySet, Subquery, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from jobs.conf import app_settings

from .dispatch import _enqueue
from .kinds.registry import JobKind, UnknownKind, all_kinds, get_kind
from .models import AdmissionAudit, AdmissionControl, Job, JobState
from .states import RETRY_WAIT_CODE, _push_job, job_rows_update

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Any fixed 64-bit key: the one PostgreSQL advisory lock admission passes take.
ADMISSION_LOCK_KEY = 0x52554E_41444D  # "RUN" "ADM"
# The oldest waiting jobs one pass looks at (and notes); later ones keep their last note.
CANDIDATES = 500
# A pass's notes are written as one plain UPDATE per distinct set of values while there are at
# most this many sets, else as one UPDATE with a CASE per field.
PLAIN_UPDATES = 4
# Places in line shown exactly (each admission moves them all: a write per job shown).
POSITIONS_SHOWN = 50

PAUSED, USER_LIMIT, KIND_LIMIT, GLOBAL_LIMIT, BEHIND_OWN, IN_LINE = (
    "paused",
    "user_limit",
    "kind_limit",
    "global_limit",
    "behind_own",
    "in_line",
)
# RETRY: backing off after a failed attempt, until ``retry_at`` (written by jobs.states).
RETRY = RETRY_WAIT_CODE
WAIT_CODES = (PAUSED, USER_LIMIT, KIND_LIMIT, GLOBAL_LIMIT, BEHIND_OWN, IN_LINE, RETRY)
ACTIONS = ("pause", "resume", "drain")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _kind(name: str) -> JobKind | None:
    try:
        return get_kind(name)
    except UnknownKind:
        return None


def _priority(kind_name: str) -> int:
    kind = _kind(kind_name)
    return kind.priority if kind is not None else 0


def _queue_of(kind_name: str) -> str:
    kind = _kind(kind_name)
    return kind.queue if kind is not None else "default"


def _paused_controls() -> list[tuple[str, str]]:
    """The kinds and queues staff paused, as (target, name)."""
    return list(AdmissionControl.objects.filter(paused=True).values_list("target", "name"))


def _launch_may_skip_its_pass() -> bool:
    """Whether a launch's own pass may be short (or none): without a global limit places are
    not counted across users, so whether a job may go depends on its owner and kind only."""
    return app_settings.MAX_ADMITTED <= 0 and app_settings.ADMISSION_CONTROL


def _waiting_of(owner_id: int, kind: str) -> QuerySet[Job]:
    """An owner's jobs of ``kind`` that wait to be admitted (not backing off after a failed attempt)."""
    return Job.objects.filter(
        state=JobState.QUEUED, admitted_at__isnull=True, owner_id=owner_id, kind=kind
    ).exclude(retry_at__gt=timezone.now())


def _lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADMISSION_LOCK_KEY])
    # SQLite: the transaction began IMMEDIATE (dashboard/settings/base.py), it holds the write lock.


@dataclass
class _Row:
    """What a pass needs of a job: read as plain values (a pass reads hundreds of rows; model
    instances cost five times as much), the job itself loaded only when its row is written."""

    pk: Any
    owner_id: int
    kind: str
    created_at: datetime
    wait_code: str
    wait_note: str
    wait_position: int | None


_ROW_FIELDS = ("pk", "owner_id", "kind", "created_at", "wait_code", "wait_note", "wait_position")


def _rows(jobs: QuerySet[Job]) -> list[_Row]:
    return [_Row(*values) for values in jobs.values_list(*_ROW_FIELDS)]


@dataclass
class _Counts:
    user: Counter[int] = field(default_factory=Counter)  # running + admitted
    user_kind: Counter[tuple[int, str]] = field(default_factory=Counter)
    ahead: Counter[tuple[int, str]] = field(default_factory=Counter)  # admitted, not started, by queue
    total: int = 0

    def add(self, job: _Row, *, started: bool) -> None:
        self.user[job.owner_id] += 1
        self.user_kind[(job.owner_id, job.kind)] += 1
        if not started:
            self.ahead[(job.owner_id, _queue_of(job.kind))] += 1
        self.total += 1

    def copy(self) -> _Counts:
        return _Counts(Counter(self.user), Counter(self.user_kind), Counter(self.ahead), self.total)


@dataclass
class _Pass:
    paused_kinds: set[str]
    paused_queues: set[str]
    counts: _Counts
    in_line: dict[str, list[_Row]]  # admitted, not started, per queue, in the broker's order
    last_served: dict[int, datetime] = field(default_factory=dict)  # a user's latest admission
    # The settings, read once a pass (a pass checks them for every waiting job).
    cap: int = field(default_factory=lambda: app_settings.MAX_RUNNING_PER_USER)
    ahead: int = field(default_factory=lambda: app_settings.ADMIT_AHEAD_PER_USER)

    @classmethod
    def paused_by(cls, controls: list[tuple[str, str]]) -> _Pass:
        """A pass's state with nothing counted yet and ``controls`` (``_paused_controls()``)."""
        return cls(
            paused_kinds={name for target, name in controls if target == AdmissionControl.Target.KIND},
            paused_queues={name for target, name in controls if target == AdmissionControl.Target.QUEUE},
            counts=_Counts(),
            in_line=defaultdict(list),
        )

    def paused(self, job: _Row) -> str | None:
        if job.kind in self.paused_kinds:
            kind = _kind(job.kind)
            return f"Paused: staff paused {kind.title if kind else job.kind!r} jobs."
        queue = _queue_of(job.kind)
        if queue in self.paused_queues:
            return f"Paused: staff paused the {queue!r} queue."
        return None

    def blocked(self, job: _Row, counts: _Counts) -> tuple[str, str] | None:
        """Why ``job`` may not be admitted with ``counts`` (global limit aside), or None."""
        note = self.paused(job)
        if note:
            return PAUSED, note
        cap = self.cap
        if counts.user[job.owner_id] >= cap:
            # Running or lined up for a worker (counted alike, so the sentence does not change,
            # and is not rewritten, as one moves to the other).
            return USER_LIMIT, _limit_note(counts.user[job.owner_id], "jobs", cap)
        kind = _kind(job.kind)
        kind_cap = kind.max_running_per_user if kind is not None else None
        mine = counts.user_kind[(job.owner_id, job.kind)]
        if kind is not None and kind_cap is not None and mine >= kind_cap:
            return KIND_LIMIT, _limit_note(mine, f"{kind.title!r} jobs", kind_cap)
        if counts.ahead[(job.owner_id, _queue_of(job.kind))] >= self.ahead:
            return BEHIND_OWN, "Waiting behind your job that is next in line for a worker."
        return None


def _limit_note(count: int, what: str, cap: int) -> str:
    """ "2 of your jobs are running or next in line, limit 2.": a job lined up for a worker
    counts as running (the sentence stays true, and is not rewritten, as it starts; a review
    read "2 … running" with one running and one in line)."""
    verb = "is" if count == 1 else "are"
    return f"{count} of your {what} {verb} running or next in line, limit {cap}."


def _fair_order(waiting: list[_Row], state: _Pass, counts: _Counts, limit: int | None) -> list[_Row]:
    """The jobs admitted (``counts`` updated) round-robin, at most ``limit`` (None: no limit):
    the users with the fewest jobs admitted first, then the one served least recently, then the
    one whose oldest job has waited longest."""
    by_owner: dict[int, list[_Row]] = defaultdict(list)
    for job in waiting:
        by_owner[job.owner_id].append(job)
    for jobs in by_owner.values():
        jobs.sort(key=lambda job: -_priority(job.kind))  # stable: oldest first within a priority
    never = datetime.min.replace(tzinfo=UTC)
    owners = sorted(
        by_owner,
        key=lambda owner: (
            counts.user[owner],
            -_priority(by_owner[owner][0].kind),  # a kind's priority, among users equally served
            state.last_served.get(owner) or never,
            by_owner[owner][0].created_at,
        ),
    )
    chosen: list[_Row] = []
    progress = True
    while progress and (limit is None or len(chosen) < limit):
        progress = False
        for owner in owners:
            if limit is not None and len(chosen) >= limit:
                break
            if counts.user[owner] >= state.cap:
                continue  # at their cap: every job of theirs is blocked (paused or not)
            jobs = by_owner[owner]
            # Whether a job is blocked depends on its owner and kind only (``counts`` do not
            # change within this scan): one check per kind, not per job.
            blocked_kinds: set[str] = set()
            for index, job in enumerate(jobs):
                if job.kind in blocked_kinds:
                    continue
                if state.blocked(job, counts) is None:
                    chosen.append(jobs.pop(index))
                    counts.add(job, started=False)
                    progress = True
                    break
                blocked_kinds.add(job.kind)
    return chosen


class _Writes:
    """What one pass changes, written at its end: one UPDATE (a CASE per field that differs
    between rows), one read-back, then a push per job written, in the order noted."""

    def __init__(self) -> None:
        self.changes: dict[Any, dict[str, object]] = {}

    def note(
        self, job: _Row, code: str, note: str, position: int | None, *, now: datetime | None = None
    ) -> bool:
        """Note a queued job's waiting reason (and its admission) if it changed; returns whether
        a write is pending for it."""
        fields: dict[str, object] = {}
        if now is not None:
            fields.update(admitted_at=now, enqueued_at=now)
        if (job.wait_code, job.wait_note, job.wait_position) != (code, note, position) or fields:
            fields.update(wait_code=code, wait_note=note[:200], wait_position=position)
        if not fields:
            return False
        self.changes[job.pk] = fields
        return True

    def flush(self, tracked: Job | None) -> dict[Any, Job]:
        """Write and push what was noted; returns the jobs written (still queued), by pk."""
        changes = self.changes
        if not changes:
            return {}
        rows = Job.objects.filter(pk__in=list(changes), state=JobState.QUEUED)
        # Rows noted alike share a plain UPDATE; a few such UPDATEs cost less than one with a
        # CASE per field (compiling it was most of a pass's write: 3 ms for two rows).
        groups: dict[tuple[tuple[str, Any], ...], list[Any]] = defaultdict(list)
        for pk, fields in changes.items():
            groups[tuple(sorted(fields.items()))].append(pk)
        if len(groups) <= PLAIN_UPDATES:
            written_rows = 0
            for key, pks in groups.items():
                written_rows += job_rows_update(rows.filter(pk__in=pks), **dict(key))
        else:
            written_rows = job_rows_update(rows, **self._case_update())
        if not written_rows:
            return {}
        written = {job.pk: job for job in rows.select_related("owner").defer("result")}
        result: dict[Any, Job] = {}
        for pk, fields in changes.items():
            job = written.get(pk)
            if job is None:
                continue
            if tracked is not None and tracked.pk == pk:
                for name, value in fields.items():
                    setattr(tracked, name, value)
                tracked.version = job.version
            _push_job(job)
            result[pk] = job
        return result

    def _case_update(self) -> dict[str, Any]:
        """One UPDATE's fields for every noted row: a value, or a CASE where rows differ."""
        changes = self.changes
        names: list[str] = []
        for fields in changes.values():
            names.extend(name for name in fields if name not in names)
        update: dict[str, Any] = {}
        for name in names:
            values = [fields[name] for fields in changes.values() if name in fields]
            if len(values) == len(changes) and all(value == values[0] for value in values):
                update[name] = values[0]
                continue
            model_field = Job._meta.get_field(name)
            assert isinstance(model_field, Field)
            update[name] = Case(
                *(
                    When(pk=pk, then=Value(fields[name], output_field=model_field))
                    for pk, fields in changes.items()
                    if name in fields
                ),
                default=F(name),
                output_field=model_field,
            )
        return update


def jobs_admit(*, for_job: Job | None = None, started: Job | None = None, checked: bool = False) -> int:
    """Admit the jobs that may go now (their messages are sent once this commits), and note why
    the others wait; returns how many were admitted. ``for_job`` (a launch's) is kept up to date
    with what the pass wrote to its row, so the launch answers with what is stored. ``started``:
    the pass follows that job's start, which frees no slot: it can only line up its owner's next
    job (admit ahead) and move the jobs in line up, so it runs only if one of those waits.
    ``checked``: the caller has just read that a job is queued (``queue_line_and_waiting``), the
    read this function begins with otherwise."""
    queued = Job.objects.filter(state=JobState.QUEUED)
    if started is not None:
        queued = queued.filter(
            Q(owner_id=started.owner_id, admitted_at__isnull=True) | Q(admitted_at__isnull=False)
        )
    if not (checked and started is None) and not queued.exists():
        # Nothing waits (one read, no lock): a launch that commits meanwhile runs its own pass.
        return 0
    unsent: list[Any] = []  # admitted jobs whose message the broker never took, in line order
    with transaction.atomic():
        _lock()
        admitted = (
            [] if for_job is not None and _behind_own_launch(for_job) else _admission_pass(for_job, unsent)
        )

        def send() -> None:
            # Those lost with the broker first, in the line's order: a job admitted after it came
            # back went ahead of them while the places shown said otherwise (a review). At the
            # first that fails the broker is still down: the rest wait for the reaper's tick.
            lost = {}
            if unsent:  # (none, almost always: no read then)
                lost = {job.pk: job for job in Job.objects.filter(pk__in=unsent, enqueued_at__isnull=True)}
            for pk in unsent:
                if pk in lost and not _enqueue(lost[pk]):
                    break
            for job in admitted:
                # A broker that is down: it waits for the queue, re-sent by the reaper's tick.
                _enqueue(for_job if for_job is not None and job.pk == for_job.pk else job)

        transaction.on_commit(send)
    return len(admitted)


def jobs_admit_quietly(
    *, for_job: Job | None = None, started: Job | None = None, checked: bool = False
) -> int | None:
    """``jobs_admit`` for callers that must not fail on it (a worker after a job): returns None
    when the pass failed (logged); the next pass, or the reaper's tick, admits what it left."""
    try:
        return jobs_admit(for_job=for_job, started=started, checked=checked)
    except Exception:
        logger.warning("Admission pass failed; the next pass (or the reaper's tick) admits", exc_info=True)
        return None


def _line_of(kind: str) -> QuerySet[Job]:
    """The line of ``kind``'s queue: admitted jobs not yet started (their messages wait in the
    broker)."""
    queue = _queue_of(kind)
    kinds = [each.name for each in all_kinds() if each.queue == queue]
    return Job.objects.filter(state=JobState.QUEUED, admitted_at__isnull=False, kind__in=kinds)


def line_holds_jobs(*, kind: str) -> bool:
    """Whether the line of ``kind``'s queue holds any job; one indexed read (job_admission_idx)."""
    return _line_of(kind).exists()


def queue_line_and_waiting(*, kind: str) -> tuple[bool, bool]:
    """(whether the line of ``kind``'s queue holds any job, whether any job at all is queued):
    what a worker asks after each job (jobs.runner.admit_after_job), in one statement, two index
    probes (job_admission_idx and the state index), instead of one read for each (issue 15 §3)."""
    line, queued = _select_exists(_line_of(kind), Job.objects.filter(state=JobState.QUEUED))
    return line, queued


def _select_exists(*querysets: QuerySet[Any]) -> list[bool]:
    """Whether each of ``querysets`` has a row: ``SELECT EXISTS (...), EXISTS (...)``, one
    statement (PostgreSQL and SQLite alike) where ``.exists()`` takes one each."""
    parts = [qs.order_by().values("pk")[:1].query.sql_with_params() for qs in querysets]
    sql = "SELECT " + ", ".join(f"EXISTS ({part})" for part, _ in parts)
    with connection.cursor() as cursor:
        cursor.execute(sql, [param for _, params in parts for param in params])
        row = cursor.fetchone()
    return [bool(value) for value in row]


def launch_waits_behind_own(*, owner_id: int, kind: str) -> bool:
    """Whether a job about to be launched for ``owner_id`` would wait behind that owner's older
    job of the same kind that waits too (not admitted, not backing off), with no pause, no
    global limit and admission on: then job_create inserts it already noted "Waiting behind your
    earlier jobs." and runs no pass of its own (two reads instead of a locked pass, issue 14 §1:
    jobs per second). Whether a job may go depends on its owner and kind only, so it could not
    go now; the passes that later admit the older job see it. (Should the older one be
    admitted, start and end within the instant between this read and the insert's commit, the
    reaper's tick admits it.)"""
    if not _launch_may_skip_its_pass():
        return False
    # Both in one statement (issue 15 §3: a launch's reads): an older waiting job, any pause.
    older, paused = _select_exists(_waiting_of(owner_id, kind), AdmissionControl.objects.filter(paused=True))
    return older and not paused


BEHIND_OWN_NOTE = "Waiting behind your earlier jobs."
# With admission control off (first come first served): every job goes to the broker at launch.
FCFS_NOTE = "Waiting for a worker."


def _behind_own_launch(job: Job) -> bool:
    """A launch's pass, short: if its owner already has an older job of the same kind waiting,
    the new job cannot go now (whether a job may go depends on its owner and kind only; under
    the lock, every pass before saw that older job blocked, and a change since runs its own pass,
    which sees the new job), nor does it move anyone else: only its own note is written. With a
    global limit (places counted across users) or admission off, the full pass. Returns whether
    it was done."""
    if not _launch_may_skip_its_pass():
        return False
    # (One backing off after a failed attempt is not in line: the full pass then.)
    if not _waiting_of(job.owner_id, job.kind).filter(created_at__lt=job.created_at).exists():
        return False
    controls = _paused_controls()
    state = _Pass.paused_by(controls)
    row = _Row(*(getattr(job, name) for name in _ROW_FIELDS))
    note = state.paused(row)
    writes = _Writes()
    if note:
        writes.note(row, PAUSED, note, None)
    else:
        writes.note(row, BEHIND_OWN, BEHIND_OWN_NOTE, None)
    writes.flush(job)
    return True


def _last_admitted(owners: set[int]) -> dict[int, datetime]:
    """Each owner's latest admission: one read, a probe of job_owner_admitted_idx per owner
    (a GROUP BY over their admissions of the last hour was most of a pass's cost once they had
    thousands: issue 14 §1)."""
    latest = (
        Job.objects.filter(owner_id=OuterRef("pk"), admitted_at__isnull=False)
        .order_by("-admitted_at")
        .values("admitted_at")[:1]
    )
    rows = (
        get_user_model()
        .objects.filter(pk__in=owners)
        .annotate(last=Subquery(latest))
        .values_list("pk", "last")
    )
    return {pk: last for pk, last in rows if last is not None}


# Waiting (owner, kind) groups a pass looks at beyond its oldest CANDIDATES jobs: a bound on one
# pass's work, whatever the number of users waiting. Past it, each pass of a process starts where
# its last one stopped (by owner id, wrapping around), so every group is seen within a few passes
# (a review: with 1,100 waiting, those past the first 1,000 by id were never seen).
MAX_WAITING_GROUPS = 1000
# Groups per read of their first jobs (SQLite takes at most 500 terms in one compound SELECT).
GROUPS_PER_READ = 200


class _GroupCursor:
    """Where this process's last pass stopped reading waiting groups (owner id, kind)."""

    after: tuple[int, str] | None = None


def _waiting_groups(limit: int) -> list[tuple[int, str]]:
    """(owner, kind) pairs with a job waiting for admission, at most ``limit``: those after where
    this process's last read stopped, by owner id then kind, wrapping around to the first. A skip
    scan of job_waiting_idx (one probe per group, however many jobs each holds)."""
    after = _GroupCursor.after
    groups = _waiting_groups_after(after, limit)
    if after is not None and len(groups) < limit:
        # Wrap around: the first ones, up to where this read began.
        groups += [group for group in _waiting_groups_after(None, limit - len(groups)) if group <= after]
    _GroupCursor.after = groups[-1] if len(groups) >= limit else None
    return list(dict.fromkeys(groups))


def _waiting_groups_after(after: tuple[int, str] | None, limit: int) -> list[tuple[int, str]]:
    table = connection.ops.quote_name(Job._meta.db_table)
    # The partial index's condition, written as literals so both planners match it.
    waiting = f"state = '{JobState.QUEUED.value}' AND admitted_at IS NULL"
    start = "" if after is None else "AND (owner_id, kind) > (%s, %s)"
    sql = f"""
        WITH RECURSIVE waiting_group(owner_id, kind) AS (
            SELECT * FROM (
                SELECT owner_id, kind FROM {table} WHERE {waiting} {start}
                ORDER BY owner_id, kind LIMIT 1
            ) AS first_group
            UNION ALL
            SELECT
                (SELECT j.owner_id FROM {table} AS j WHERE {waiting}
                 AND (j.owner_id, j.kind) > (g.owner_id, g.kind) ORDER BY j.owner_id, j.kind LIMIT 1),
                (SELECT j.kind FROM {table} AS j WHERE {waiting}
                 AND (j.owner_id, j.kind) > (g.owner_id, g.kind) ORDER BY j.owner_id, j.kind LIMIT 1)
            FROM waiting_group AS g WHERE g.owner_id IS NOT NULL
        )
        SELECT owner_id, kind FROM waiting_group WHERE owner_id IS NOT NULL LIMIT %s
    """  # the table name is the model's; the only value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(after or ()), limit])
        return [(owner_id, kind) for owner_id, kind in cursor.fetchall()]


def _with_every_waiting_group(waiting: list[_Row], *, depth: int, now: datetime) -> list[_Row]:
    """``waiting`` (the oldest jobs) with the first ``depth`` jobs (not backing off) of each other
    waiting (owner, kind), oldest first."""
    seen = {(job.owner_id, job.kind) for job in waiting}
    missing = [group for group in _waiting_groups(MAX_WAITING_GROUPS) if group not in seen]
    if not missing:
        return waiting
    table = connection.ops.quote_name(Job._meta.db_table)
    pk = connection.ops.quote_name(Job._meta.pk.column or "id")
    first = (
        f"SELECT * FROM (SELECT {pk} FROM {table} WHERE state = '{JobState.QUEUED.value}' "
        f"AND admitted_at IS NULL AND owner_id = %s AND kind = %s AND (retry_at IS NULL OR retry_at <= %s) "
        f"ORDER BY created_at LIMIT %s) AS group_{{index}}"
    )  # model names and parameters only
    ids: list[Any] = []
    with connection.cursor() as cursor:
        for start in range(0, len(missing), GROUPS_PER_READ):
            batch = missing[start : start + GROUPS_PER_READ]
            sql = " UNION ALL ".join(first.format(index=index) for index in range(len(batch)))
            params: list[Any] = []
            for owner_id, kind in batch:
                params.extend([owner_id, kind, now, depth])
            cursor.execute(sql, params)
            ids.extend(row[0] for row in cursor.fetchall())
    more = _rows(Job.objects.filter(pk__in=ids)) if ids else []
    return sorted([*waiting, *more], key=lambda job: job.created_at)


def _admission_pass(for_job: Job | None, unsent: list[Any] | None = None) -> list[Job]:
    now = timezone.now()
    controls = _paused_controls()
    state = _Pass.paused_by(controls)
    active = Job.objects.filter(
        Q(state=JobState.RUNNING) | Q(state=JobState.QUEUED, admitted_at__isnull=False)
    ).order_by("admitted_at", "created_at")
    for *values, job_state, enqueued_at in active.values_list(*_ROW_FIELDS, "state", "enqueued_at"):
        job = _Row(*values)
        started = job_state == JobState.RUNNING
        state.counts.add(job, started=started)
        if not started:
            state.in_line[_queue_of(job.kind)].append(job)
            if enqueued_at is None and unsent is not None:
                unsent.append(job.pk)  # in line, its message never reached the broker
    candidates = (
        Job.objects.filter(state=JobState.QUEUED, admitted_at__isnull=True)
        .exclude(retry_at__gt=now)  # backing off after a failed attempt (jobs.retries)
        .order_by("created_at")
    )
    depth = state.cap + 1
    if app_settings.MAX_ADMITTED > 0 or not app_settings.ADMISSION_CONTROL:
        waiting = _rows(candidates[:CANDIDATES])
        truncated = len(waiting) == CANDIDATES
    else:
        # Without a global limit, only the first jobs of each user and kind can be admitted in a
        # pass (at most their cap) or see their note change (the one after): read those of the
        # oldest CANDIDATES, not all of them (a pass after every job: this read was a third of
        # its cost with 300 waiting). The others keep "Waiting behind your earlier jobs.".
        ranked = Job.objects.filter(pk__in=candidates.values("pk")[:CANDIDATES]).annotate(
            rank=Window(
                RowNumber(), partition_by=[F("owner_id"), F("kind")], order_by=[F("created_at"), F("pk")]
            ),
            read=Window(Count("pk")),  # how many the inner read found: CANDIDATES if it was cut
        )
        found = list(ranked.filter(rank__lte=depth).order_by("created_at").values_list(*_ROW_FIELDS, "read"))
        waiting = [_Row(*values[:-1]) for values in found]
        truncated = bool(found) and found[0][-1] >= CANDIDATES
    if truncated:
        # More wait than one read takes: every other waiting user and kind's first jobs too, so
        # no one's job goes unseen behind a long backlog (a review: the 506th waiting job, a
        # user's only one, stayed unadmitted and unexplained for 110 s).
        waiting = _with_every_waiting_group(waiting, depth=depth, now=now)
        if for_job is not None and all(job.pk != for_job.pk for job in waiting):
            # A launch's own job past what was read (a global limit, a deep backlog of its
            # owner's): still noted, so the launch answers why it waits (a review: unnoted).
            own = _rows(candidates.filter(pk=for_job.pk))
            waiting = sorted([*waiting, *own], key=lambda job: job.created_at)
    if not waiting and not any(state.in_line.values()):
        return []
    # Round-robin's memory: when each waiting user was last served.
    owners = {job.owner_id for job in waiting}
    state.last_served = {} if len(owners) < 2 else _last_admitted(owners)
    limit = app_settings.MAX_ADMITTED
    free = None if limit <= 0 else max(0, limit - state.counts.total)
    writes = _Writes()
    if not app_settings.ADMISSION_CONTROL:
        # Switched off: everything goes at once, first come first served (the worker still holds a
        # user to their cap by deferring, jobs.states.job_start).
        for job in waiting:
            writes.note(job, IN_LINE, FCFS_NOTE, None, now=now)
        return list(writes.flush(for_job).values())
    admitted = _fair_order(waiting, state, state.counts, free)
    # Each admitted job's admission instant, a microsecond apart in the order their messages go:
    # later passes read the line by admitted_at, and jobs of one pass sharing it were ranked by
    # age instead, so places shown jumped and disagreed with the broker's order (a review).
    admitted_at = {job.pk: now + timedelta(microseconds=rank) for rank, job in enumerate(admitted)}
    for job in admitted:
        state.in_line[_queue_of(job.kind)].append(job)
    order: list[Any] = []  # the admitted jobs, in the order their messages go
    # Where each admitted job stands in its queue's line (the broker's order: admission order).
    for line in state.in_line.values():
        for position, job in enumerate(line, 1):
            note = f"{ordinal(position)} in line for a worker."
            when = admitted_at.get(job.pk)
            if writes.note(job, IN_LINE, note, position, now=when) and when is not None:
                order.append(job.pk)
    rest = [job for job in waiting if job.pk not in admitted_at]
    # Held by the global limit: where they stand in the order the next free slots go.
    virtual = _fair_order(list(rest), state, state.counts.copy(), None) if free is not None else []
    positions = {job.pk: index for index, job in enumerate(virtual, 1)}
    heads: set[int] = set()  # owners whose next waiting job was noted
    for job in rest:
        if job.pk in positions:
            place = positions[job.pk]
            shown = place if place <= POSITIONS_SHOWN else None
            # Past POSITIONS_SHOWN the place is not rewritten at every admission.
            note = (
                f"Every slot is taken ({limit}): {ordinal(place)} in line for the next free one."
                if shown is not None
                else f"Every slot is taken ({limit}): over {POSITIONS_SHOWN} jobs ahead."
            )
            writes.note(job, GLOBAL_LIMIT, note, shown)
            continue
        if job.owner_id in heads and not state.paused(job):
            # Behind the owner's next job: a sentence that does not change as theirs move along
            # (rewriting every waiting job of a user at each of their starts cost ~25 writes a job).
            writes.note(job, BEHIND_OWN, BEHIND_OWN_NOTE, None)
            continue
        heads.add(job.owner_id)
        reason = state.blocked(job, state.counts)
        code, note = reason if reason is not None else (GLOBAL_LIMIT, "Waiting for a free slot.")
        writes.note(job, code, note, None)
    written = writes.flush(for_job)
    return [written[pk] for pk in order if pk in written]


def job_hold_if_paused(*, job_id: Any) -> bool:
    """A worker took the message of an admitted job whose kind or queue staff paused after it
    was admitted: put the job back to waiting (not admitted, "Paused: …", a new task id for the
    message it gets when resumed) instead of starting it; returns whether it was held.

    One small read when nothing is paused (the usual case): the check every start pays."""
    controls = _paused_controls()
    if not controls:
        return False
    state = _Pass.paused_by(controls)
    with transaction.atomic():
        _lock()  # as a pass: a resume that commits meanwhile admits it again after this
        rows = Job.objects.filter(pk=job_id, state=JobState.QUEUED, admitted_at__isnull=False)
        found = _rows(rows)
        note = state.paused(found[0]) if found else None
        if note is None:
            return False
        job_rows_update(
            rows,
            admitted_at=None,
            celery_task_id=str(uuid.uuid4()),
            wait_code=PAUSED,
            wait_note=note,
            wait_position=None,
        )
        held = Job.objects.select_related("owner").defer("result").get(pk=job_id)
        _push_job(held)  # sent once this commits
    logger.info("Job %s was lined up when its kind or queue was paused: held back (%s)", job_id, note)
    return True


# --- Staff controls: pause, resume, drain ---------------------------------------------------------


def admission_control_set(*, user: User, action: str, target: str, name: str) -> AdmissionControl:
    """Pause, resume or drain a kind or a queue, audited (who, when); then admit (a resume lets
    jobs go at once; a pause rewrites the waiting jobs' notes). Raises ValueError on a bad
    action, target or name. The caller checked the power (jobs.permissions.Power.CONTROL_QUEUES)."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}: expected one of {', '.join(ACTIONS)}.")
    if target not in AdmissionControl.Target.values:
        raise ValueError(f"Unknown target {target!r}: expected 'kind' or 'queue'.")
    if target == AdmissionControl.Target.KIND and _kind(name) is None:
        raise ValueError(f"No job kind named {name!r}.")
    if target == AdmissionControl.Target.QUEUE and name not in {kind.queue for kind in all_kinds()}:
        # Not a job queue: a typo (audited, and never admitting anything) or the housekeeping
        # queue, which holds no jobs (the reaper and the admission timer run there).
        known = ", ".join(sorted({kind.queue for kind in all_kinds()}))
        raise ValueError(f"No job kind runs on a queue named {name!r} (job queues: {known}).")
    if not name or len(name) > 64:
        raise ValueError("Name a kind or a queue (at most 64 characters).")
    with transaction.atomic():
        control, _ = AdmissionControl.objects.select_for_update().get_or_create(target=target, name=name)
        control.paused = action != "resume"
        control.draining = action == "drain"
        control.changed_by = user
        control.save()
        AdmissionAudit.objects.create(
            action=action,
            target=target,
            name=name,
            user=user,
            username=user.get_username(),
        )
        transaction.on_commit(jobs_admit_quietly)
    return control


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    waiting: int  # queued, not admitted
    in_line: int  # admitted, not started
    running: int
    oldest_wait_seconds: float | None
    paused: bool
    draining: bool
    drained: bool  # draining and nothing of it running or in line


def queue_depths(*, kinds: Iterable[JobKind], now: datetime | None = None) -> list[QueueDepth]:
    """Per queue: how many wait, are in line and run, the oldest wait, and its controls."""
    now = now or timezone.now()
    queue_of: Callable[[str], str] = _queue_of
    names = {kind.queue for kind in kinds} | {"default"}
    rows = (
        Job.objects.filter(state__in=[JobState.QUEUED, JobState.RUNNING])
        .values("kind", "state", admitted=Q(admitted_at__isnull=False))
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    waiting: Counter[str] = Counter()
    in_line: Counter[str] = Counter()
    running: Counter[str] = Counter()
    oldest: dict[str, datetime] = {}
    for row in rows:
        queue = queue_of(row["kind"])
        names.add(queue)
        if row["state"] == JobState.RUNNING:
            running[queue] += row["n"]
            continue
        (in_line if row["admitted"] else waiting)[queue] += row["n"]
        if queue not in oldest or row["oldest"] < oldest[queue]:
            oldest[queue] = row["oldest"]
    controls = {
        control.name: control
        for control in AdmissionControl.objects.filter(target=AdmissionControl.Target.QUEUE)
    }
    depths = []
    for queue in sorted(names):
        control = controls.get(queue)
        paused = bool(control and control.paused)
        draining = bool(control and control.draining and control.paused)
        depths.append(
            QueueDepth(
                queue=queue,
                waiting=waiting[queue],
                in_line=in_line[queue],
                running=running[queue],
                oldest_wait_seconds=(
                    round((now - oldest[queue]).total_seconds(), 1) if queue in oldest else None
                ),
                paused=paused,
                draining=draining,
                drained=draining and not running[queue] and not in_line[queue],
            )
        )
    return depths


def paused_kinds() -> list[str]:
    return sorted(
        AdmissionControl.objects.filter(target=AdmissionControl.Target.KIND, paused=True).values_list(
            "name", flat=True
        )
    )


def admission_audit_recent(*, limit: int = 20) -> list[AdmissionAudit]:
    return list(AdmissionAudit.objects.all()[:limit])
