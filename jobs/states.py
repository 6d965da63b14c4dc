"""The state machine of a job, and every write of its row's live fields: start, finish,
heartbeats, chunk progress and log lines.

``job_rows_update`` is the one place a job row's ``version`` grows: every write that changes what a
job's payload shows goes through it, and whoever writes pushes the changed row (``_push_job``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F, Max, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from dashboard import metrics
from jobs.conf import app_settings
from notifications import events
from notifications.inbox import notify
from notifications.models import Level
from notifications.push import flush, push_event

from .kinds.registry import UnknownKind, get_kind
from .models import ERROR_CLASS_MAX, TRANSITIONS, Job, JobLogLine, JobSchedule, JobState
from .results import RESULT_SUMMARY_BYTES, clip_text, result_digest
from .selectors import job_payload, job_payload_redacted, kind_title, log_line_batches, running_count

MESSAGE_MAX = Job._meta.get_field("progress_message").max_length or 500
WAIT_NOTE_MAX = Job._meta.get_field("wait_note").max_length or 200
# A job's stored error is cut to this many characters (payloads show its first 448 bytes; the
# result endpoint all of it); the worker's log keeps the traceback.
ERROR_MAX_CHARS = 4000
# A finished job's notification quotes at most this much of its error (the link shows the rest).
NOTIFY_ERROR_CHARS = 500
LOG_LINE_MAX_BYTES = 8 * 1024  # wire bytes of one stored line (2,000 ASCII characters fit)


def job_rows_update(rows: QuerySet[Job], **fields: Any) -> int:
    """Write ``fields`` to the job rows selected by ``rows``, each row a new version; returns how
    many were written. The one place a row's version grows (a payload read afterwards sorts after
    every push made before)."""
    return rows.update(version=F("version") + 1, **fields)


def _push_job(job: Job) -> None:
    """A job's update to its owner and operators; operators who may not see other users' results
    get a copy without it (one extra publish, only when there is a result to leave out)."""
    payload = job_payload(job)
    redacted = job_payload_redacted(payload)
    if redacted is payload:
        push_event(group=events.job_update_groups(job.owner_id), event=events.job_update(payload))
        return
    push_event(
        group=[events.user_group(job.owner_id), events.OPS_RESULTS_GROUP], event=events.job_update(payload)
    )
    push_event(group=events.OPS_JOBS_GROUP, event=events.job_update(redacted))


def jobs_delete(jobs: QuerySet[Job]) -> list[uuid.UUID]:
    """Delete the jobs of ``jobs`` (at most a caller's batch: their ids are read), with their log
    lines and chunks (cascade), each produced file once the transaction commits (a rolled-back
    delete keeps its files), and tell open pages: a ``jobs.deleted`` event to each owner and to
    operators, after commit, in events of at most DELETED_IDS_PER_EVENT ids. Rows are locked
    first (a job changed meanwhile is deleted as it is). Returns the ids deleted.

    The one way jobs are deleted: bulk delete (jobs.bulk) and retention (jobs.housekeeping)."""
    with transaction.atomic():
        found = list(jobs.select_for_update().only("id", "owner_id", "result_file"))
        files = [(job.result_file.storage, str(job.result_file.name)) for job in found if job.result_file]
        if files:
            transaction.on_commit(partial(_delete_files, files))
        ids = [job.id for job in found]
        Job.objects.filter(pk__in=ids).delete()
        # Each owner hears of their own jobs; operators of all of them in a few events (not one
        # per owner each: retention across 300 owners sent 300 one-id events to every operator).
        by_owner: dict[int, list[str]] = {}
        for job in found:
            by_owner.setdefault(job.owner_id, []).append(str(job.id))
        for owner_id, owned in by_owner.items():
            for chunk in _chunks(owned):
                push_event(group=events.user_group(owner_id), event=events.jobs_deleted(chunk))
        for chunk in _chunks([str(job_id) for job_id in ids]):
            push_event(
                group=[events.OPS_RESULTS_GROUP, events.OPS_JOBS_GROUP], event=events.jobs_deleted(chunk)
            )
    return ids


def _chunks(ids: list[str]) -> list[list[str]]:
    size = events.DELETED_IDS_PER_EVENT
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _delete_files(files: list[tuple[Any, str]]) -> None:
    for storage, name in files:
        storage.delete(name)


def job_pushes_flush(*, timeout: float) -> bool:
    """Wait, at most ``timeout`` seconds, until what this process pushed has left it: a
    short-lived process (the CLI) calls it before it exits."""
    return flush(timeout=timeout)


def job_transition(
    *,
    job_id: uuid.UUID | str,
    to: JobState,
    condition: Q | None = None,
    locked: Job | None = None,
    **fields: Any,
) -> Job | None:
    """Move a job to ``to`` only if the state machine allows it from its current state.

    A conditional UPDATE, so concurrent or repeated writers cannot move a job backwards; returns
    the updated job, or None when the move was refused. ``locked`` is the job (with its owner)
    as the caller read it under a row lock in its open transaction: nothing else can have
    changed the row since, so the move needs neither a savepoint nor a read-back.
    """
    if locked is not None and any(hasattr(value, "resolve_expression") for value in fields.values()):
        raise ValueError("With `locked`, pass plain values (they are applied to it as they are).")
    if isinstance(fields.get("error"), str):
        fields["error"] = fields["error"][:ERROR_MAX_CHARS]
    with transaction.atomic(savepoint=locked is None):
        rows = Job.objects.filter(pk=job_id, state__in=TRANSITIONS[to])
        if condition is not None:
            rows = rows.filter(condition)
        if not job_rows_update(rows, state=to, **fields):
            return None
        if locked is not None:
            job = locked
            job.state, job.version = str(to), job.version + 1
            for name, value in fields.items():
                setattr(job, name, value)
        else:
            # The payload names the owner: fetch them with the job (one query, not two). The
            # payload shows the result's stored summary, never the result: don't read it back.
            job = Job.objects.select_related("owner").defer("result").get(pk=job_id)
        _push_job(job)
        if job.is_final:
            # Exactly once: only the one write that moved the job into its final state gets here.
            # Counted when it commits, however it ended (a worker, a cancel before it ran, the
            # reaper, a time limit).
            transaction.on_commit(
                partial(
                    metrics.job_finished, kind=job.kind, outcome=job.state, started_at=job.started_at,
                    finished_at=job.finished_at,
                )
            )  # fmt: skip
            _notify_finished(job)
            if job.schedule_id is not None:
                _count_schedule_run(job, schedule_id=job.schedule_id)
        return job


_FINISHED = {
    JobState.SUCCEEDED: ("finished", Level.SUCCESS),
    JobState.FAILED: ("failed", Level.ERROR),
    JobState.CANCELLED: ("was cancelled", Level.WARNING),
}


def _of(job: Job) -> str:
    """ ": sales.csv (12.4 MB)": which job a notification is about, when its kind labels it."""
    return f": {job.label}" if job.label else ""


def _notify_finished(job: Job) -> None:
    verb, level = _FINISHED[JobState(job.state)]
    if job.state == JobState.FAILED and job.attempts > 1:
        verb = f"failed after {job.attempts} attempts"
    elif job.state == JobState.SUCCEEDED and job.attempts > 1:
        verb = f"finished (attempt {job.attempts} of {job.max_attempts})"
    body = job.error if job.state == JobState.FAILED else ""
    if len(body) > NOTIFY_ERROR_CHARS:
        body = body[: NOTIFY_ERROR_CHARS - 1] + "…"
    link = reverse("frontend:job-detail", args=[job.id])
    if job.result_file:
        body = "Your file is ready to download."
        link = reverse("api:job-download", args=[job.id])
    notify(
        recipient_id=job.owner_id,
        title=f"{kind_title(job.kind)} {verb}{_of(job)}",
        body=body,
        level=level,
        link=link,
        job_id=job.id,
        topic=f"job.{job.state}",
    )


def _count_schedule_run(job: Job, *, schedule_id: int) -> None:
    """A scheduled run ended: a failure lengthens its schedule's failure streak (a success ends
    it), and the run that makes it RUNBOARD_SCHEDULE_FAILURES_NOTIFY long tells the owner, once."""
    rows = JobSchedule.objects.filter(pk=schedule_id)
    if job.state == JobState.SUCCEEDED:
        rows.exclude(failure_streak=0).update(failure_streak=0)
        return
    if job.state != JobState.FAILED:
        return  # a cancelled run says nothing about the schedule
    # One UPDATE, then the count as this transaction left it: concurrent ends are serialized by
    # the row lock, so exactly one of them sees the threshold.
    rows.update(failure_streak=F("failure_streak") + 1)
    row = rows.values_list("failure_streak", "name").first()
    threshold = app_settings.SCHEDULE_FAILURES_NOTIFY
    if row is None or threshold <= 0 or row[0] != threshold:
        return
    notify(
        recipient_id=job.owner_id,
        title=f"Schedule {row[1]!r} keeps failing",
        body=f"Its last {threshold} runs failed. Latest error: {job.error[:NOTIFY_ERROR_CHARS]}",
        level=Level.ERROR,
        link=reverse("frontend:job-detail", args=[job.id]),
        job_id=job.id,
        topic="job.failed",
    )


def _note_still_enqueued(job: Job) -> None:
    """A deferred job's message is alive (it is being retried): say so, at most twice per
    RUNBOARD_REQUEUE_AFTER, so the reaper doesn't enqueue it again."""
    now = timezone.now()
    if job.enqueued_at is None:
        # It was waiting for the queue, and a message reached a worker after all: no longer.
        job_rows_update(Job.objects.filter(pk=job.pk), enqueued_at=now)
        job.enqueued_at, job.version = now, job.version + 1
        _push_job(job)
    elif job.enqueued_at < now - timedelta(seconds=app_settings.REQUEUE_AFTER / 2):
        Job.objects.filter(pk=job.pk).update(enqueued_at=now)


@dataclass(frozen=True)
class Deferred:
    """The owner is at their running-jobs cap: try again in ``retry_in`` seconds."""

    retry_in: float


def job_start(*, job_id: uuid.UUID | str) -> Job | Deferred | None:
    """Move a queued job to running, unless its owner is at their cap (then it waits, queued)."""
    with transaction.atomic():
        # One read locks the job (so the move below needs no read-back) and its owner (so starts
        # are serialized per user and two workers cannot both take the last slot). NO KEY UPDATE:
        # launches and notifications, whose foreign keys only take KEY SHARE on the user, don't
        # wait for it. (SQLite has no row locks: its transactions take the write lock up front.)
        job = (
            Job.objects.select_related("owner")
            .select_for_update(of=("self", "owner"), no_key=True)
            .filter(pk=job_id, state=JobState.QUEUED)
            .first()
        )
        if job is None:
            return None
        try:
            kind = get_kind(job.kind)
        except UnknownKind:
            kind = None
        if running_count(owner_id=job.owner_id) >= app_settings.MAX_RUNNING_PER_USER or (
            kind is not None
            and kind.max_running_per_user is not None
            and running_count(owner_id=job.owner_id, kind=kind.name) >= kind.max_running_per_user
        ):
            _note_still_enqueued(job)
            return Deferred(retry_in=1.0)
        now = timezone.now()
        return job_transition(
            job_id=job_id,
            to=JobState.RUNNING,
            locked=job,
            started_at=now,
            heartbeat_at=now,
            attempts=job.attempts + 1,
            retry_at=None,
        )


# The wait_code of a job queued again after a failed attempt, until its backoff is over
# (jobs.admission leaves it alone until ``retry_at``).
RETRY_WAIT_CODE = "retry"
# Characters of an attempt's error kept in its history entry (the job's ``error`` keeps the
# latest attempt's in full, up to ERROR_MAX_CHARS).
ATTEMPT_ERROR_CHARS = 300


def attempt_errors_with(job: Job, *, error: str, retry_in: float) -> list[dict[str, Any]]:
    """``job.attempt_errors`` with its current attempt added as failed now with ``error`` (cut
    to ATTEMPT_ERROR_CHARS), the next one ``retry_in`` seconds later: a retry or a lost worker's
    re-queue (jobs.runner)."""
    entry = {
        "attempt": job.attempts,
        "error": error[:ATTEMPT_ERROR_CHARS],
        "failed_at": timezone.now().isoformat(),
        "retry_in": retry_in,
    }
    return [*(job.attempt_errors or []), entry]


def job_retry_later(*, job: Job, error: str, delay: float) -> Job | None:
    """Queue ``job`` (running, its attempt ``job.attempts`` just failed with ``error``) again, to
    be admitted no sooner than ``delay`` seconds from now; returns the queued job, or None if it
    is no longer that running attempt (cancelled, reaped, finished) and so was not moved.

    Not a final state: no "failed" notification (only a "job.attempt_failed" one, which users
    opt into). The wait note reads "Attempt 1 of 3 failed: <error> — retrying in 30 s."; the
    attempt is added to ``attempt_errors``. Admission (jobs.admission) skips the job until
    ``retry_at``; the caller arranges a pass then (jobs.dispatch.admission_pass_later).
    """
    now = timezone.now()
    first_line = (error.strip().splitlines() or [""])[0]
    note = f" — retrying in {delay:g} s."
    head = f"Attempt {job.attempts} of {job.max_attempts} failed: "
    room = WAIT_NOTE_MAX - len(head) - len(note)
    shown = first_line if len(first_line) <= room else first_line[: room - 1] + "…"
    queued = job_transition(
        job_id=job.id,
        to=JobState.QUEUED,
        condition=Q(attempts=job.attempts, cancel_requested_at__isnull=True),
        celery_task_id=str(uuid.uuid4()),
        started_at=None,
        heartbeat_at=None,
        admitted_at=None,
        enqueued_at=now,
        retry_at=now + timedelta(seconds=delay),
        error=error,
        progress_current=0,
        progress_message="",
        wait_code=RETRY_WAIT_CODE,
        wait_note=head + shown + note,
        wait_position=None,
        attempt_errors=attempt_errors_with(job, error=error, retry_in=delay),
    )
    if queued is not None:
        notify(
            recipient_id=queued.owner_id,
            title=(
                f"{kind_title(queued.kind)}{f', {queued.label}' if queued.label else ''}: "
                f"attempt {job.attempts} of {job.max_attempts} failed"
            ),
            body=f"{first_line[:NOTIFY_ERROR_CHARS]} — retrying in {delay:g} s.",
            level=Level.WARNING,
            link=reverse("frontend:job-detail", args=[queued.id]),
            job_id=queued.id,
            topic="job.attempt_failed",
        )
    return queued


# Characters of a failure's traceback kept (its tail): about forty frames.
TRACEBACK_MAX_CHARS = 8000


def job_finish(
    *,
    job_id: uuid.UUID | str,
    state: JobState,
    result: Any = None,
    error: str = "",
    progress: tuple[int, int | None, str] | None = None,
    result_file: str | None = None,
    kind: str | None = None,
    traceback: str = "",
    error_class: str = "",
) -> Job | None:
    """End a job in a final state, exactly once; later or duplicate calls return None.

    ``error_class``: a failure's exception class name ("UnicodeDecodeError", "TimeLimitExceeded",
    "WorkerLostError"), what failures are grouped by (cut to ERROR_CLASS_MAX characters).

    ``traceback``: a failure's Python traceback, its last TRACEBACK_MAX_CHARS kept (the frames
    nearest the error and the exception line).

    The result is stored with its summary and size (jobs.results.result_digest, by the job's
    ``kind``: pass it when known, else it is read); raises TypeError if the result is not JSON,
    ResultTooLarge if it is over RUNBOARD_RESULT_MAX_BYTES.
    """
    if state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        raise ValueError(f"{state!r} is not a final state")
    fields: dict[str, Any] = {"finished_at": timezone.now(), "result": result, "error": error}
    if traceback:
        fields["traceback"] = traceback[-TRACEBACK_MAX_CHARS:]
    if error_class:
        fields["error_class"] = error_class[:ERROR_CLASS_MAX]
    if result is not None:
        if kind is None:
            kind = Job.objects.filter(pk=job_id).values_list("kind", flat=True).first()
        try:
            summarize = get_kind(kind or "").summarize
        except UnknownKind:
            summarize = None
        summary, complete, size = result_digest(
            result,
            summarize=summarize,
            summary_bytes=RESULT_SUMMARY_BYTES,
            max_bytes=app_settings.RESULT_MAX_BYTES,
        )
        fields.update(result_summary=summary, result_summary_complete=complete, result_bytes=size)
    if progress is not None:
        current, total, message = progress
        fields.update(
            progress_current=max(0, int(current)),
            progress_total=total,
            progress_message=str(message)[:MESSAGE_MAX],
        )
    if result_file:
        fields["result_file"] = result_file
    return job_transition(job_id=job_id, to=state, **fields)


def job_heartbeat(
    *, job_id: uuid.UUID | str, current: int, total: int | None, message: str
) -> tuple[int, bool] | None:
    """Record progress and liveness of a running job; returns (new row version, cancel
    requested), or None if it is no longer running."""
    updated = job_rows_update(
        Job.objects.filter(pk=job_id, state=JobState.RUNNING),
        progress_current=max(0, int(current)),
        progress_total=total,
        progress_message=str(message)[:MESSAGE_MAX],
        heartbeat_at=timezone.now(),
    )
    if not updated:
        return None
    row = Job.objects.filter(pk=job_id).values_list("version", "cancel_requested_at").first()
    return None if row is None else (row[0], row[1] is not None)


def job_add_progress(*, job_id: uuid.UUID | str, delta: int) -> Job | None:
    """Add a chunk's progress to a parallel job's aggregate (one UPDATE, whatever the chunks)."""
    updated = job_rows_update(
        Job.objects.filter(pk=job_id, state=JobState.RUNNING),
        progress_current=F("progress_current") + delta,
        heartbeat_at=timezone.now(),
    )
    return Job.objects.filter(pk=job_id).first() if updated else None


def job_log_append(*, job_id: uuid.UUID | str, lines: Sequence[str]) -> None:
    """Keep the newest lines of a job's log and stream them to whoever watches it."""
    if not lines:
        return
    with transaction.atomic():
        last = JobLogLine.objects.filter(job_id=job_id).aggregate(last=Max("seq"))["last"] or 0
        rows = [
            JobLogLine(job_id=job_id, seq=last + i, text=clip_text(str(text), LOG_LINE_MAX_BYTES)[0])
            for i, text in enumerate(lines, 1)
        ]
        JobLogLine.objects.bulk_create(rows)
        keep_after = rows[-1].seq - app_settings.LOG_LINES_KEPT
        if keep_after > 0:
            JobLogLine.objects.filter(job_id=job_id, seq__lte=keep_after).delete()
        group = events.job_group(job_id)
        for batch in log_line_batches(
            [{"seq": row.seq, "text": row.text, "at": row.created_at.isoformat()} for row in rows]
        ):
            push_event(group=group, event=events.job_log(job_id=str(job_id), lines=batch))
