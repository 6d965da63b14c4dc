"""Every write to a Job goes through here: launch, the state machine, progress, logs, cancel,
retry, chunks, the reaper and retention."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Max, Q
from django.urls import reverse
from django.utils import timezone

from notifications import events
from notifications.models import Level
from notifications.push import push_event
from notifications.services import notifications_purge_read, notify

from .kinds.registry import InvalidParams, JobKind, UnknownKind, get_kind, may_launch
from .models import TRANSITIONS, Job, JobChunk, JobLogLine, JobState, Upload
from .results import RESULT_SUMMARY_BYTES, ResultTooLarge, clip_text, result_digest
from .selectors import (
    job_for_action,
    job_payload,
    job_payload_redacted,
    kind_title,
    log_line_batches,
    running_count,
)

logger = logging.getLogger(__name__)

MESSAGE_MAX = Job._meta.get_field("progress_message").max_length or 500
UPLOAD_EXTENSIONS = {".csv", ".tsv", ".txt"}
# A lost worker's job is re-queued at most this many times before it is failed.
MAX_ATTEMPTS = 3
# A job's stored error is cut to this many characters (payloads show its first 640 bytes; the
# result endpoint all of it); the worker's log keeps the traceback.
ERROR_MAX_CHARS = 4000
# A finished job's notification quotes at most this much of its error (the link shows the rest).
NOTIFY_ERROR_CHARS = 500
LOG_LINE_MAX_BYTES = 8 * 1024  # wire bytes of one stored line (2,000 ASCII characters fit)


class KindNotAllowed(PermissionError):
    """The kind is admin-only and the user is not staff."""


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"Too many launches; try again in {retry_after} s.")
        self.retry_after = retry_after


class Conflict(Exception):
    """The job is not in a state that allows this (HTTP 409)."""


class InvalidUpload(ValueError):
    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large


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


# --- Launch ------------------------------------------------------------------------------------


def _check_launch_rate(owner: AbstractBaseUser) -> None:
    """Raise RateLimited if ``owner`` launched RUNBOARD_LAUNCHES_PER_MINUTE jobs in the last minute.

    Called in the launch's transaction, it first locks the owner's row: one user's launches are
    counted one after the other, whatever the number of web processes, so the limit is exact (on
    PostgreSQL two launches could otherwise both count 29 and both insert). NO KEY UPDATE, as in
    job_start: the foreign keys of inserted jobs and notifications take KEY SHARE and don't wait.
    (SQLite takes its write lock when the transaction begins, so its launches are serialized.)
    """
    users = get_user_model()._default_manager
    list(users.select_for_update(no_key=True).filter(pk=owner.pk).values_list("pk", flat=True))
    limit = settings.RUNBOARD_LAUNCHES_PER_MINUTE
    window_start = timezone.now() - timedelta(seconds=60)
    recent = list(
        Job.objects.filter(owner=owner, created_at__gte=window_start)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        oldest = recent[-1]
        retry_after = math.ceil((oldest + timedelta(seconds=60) - timezone.now()).total_seconds())
        raise RateLimited(max(1, retry_after))


def upload_create(*, owner: AbstractBaseUser, file: UploadedFile) -> Upload:
    """Store an uploaded input privately; refuses oversized files and unexpected types."""
    original = Path(file.name or "upload").name[:255] or "upload"
    if Path(original).suffix.lower() not in UPLOAD_EXTENSIONS:
        raise InvalidUpload(f"Expected a .csv, .tsv or .txt file, got {original!r}.")
    if file.size is None or file.size > settings.RUNBOARD_UPLOAD_MAX_BYTES:
        raise InvalidUpload(
            f"The file is larger than the limit of {settings.RUNBOARD_UPLOAD_MAX_BYTES} bytes.",
            too_large=True,
        )
    upload = Upload(owner=owner, original_name=original, size=file.size)
    # The stored name never comes from the client: no traversal, no collisions.
    upload.file.save(f"{owner.pk}/{upload.id}.csv", file, save=False)
    upload.save()
    return upload


def upload_delete(*, upload: Upload) -> None:
    """Remove an upload, file and row (a refused launch keeps nothing; retention)."""
    upload.file.delete(save=False)
    upload.delete()


@transaction.atomic
def job_create(
    *,
    owner: AbstractBaseUser,
    kind: str,
    params: Any,
    upload: Upload | None = None,
    retry_of: Job | None = None,
    rate_limit: bool = True,
) -> Job:
    """Validate, insert the job as queued and enqueue it once committed.

    Outside a caller's transaction, the job returned is what the database holds once that
    enqueue ran (``_enqueue`` refreshes it if it wrote): `queued`, and if the broker could not be
    reached, waiting for the queue (the reaper sends it when the broker is back). Raises
    UnknownKind, KindNotAllowed, RateLimited or InvalidParams (per-field messages), and then
    creates nothing.
    """
    job_kind = get_kind(kind)
    if not may_launch(owner, job_kind):
        raise KindNotAllowed(f"Launching {job_kind.title!r} takes a permission you do not have.")
    if rate_limit:
        _check_launch_rate(owner)
    if job_kind.upload_param:
        params = dict(params) if isinstance(params, dict) else params
        if upload is not None and isinstance(params, dict):
            params[job_kind.upload_param] = str(upload.id)
    validated = job_kind.validate(params)
    if job_kind.upload_param:
        _check_upload_owner(owner, getattr(validated, job_kind.upload_param), job_kind.upload_param)
    job = Job.objects.create(
        owner=owner,
        kind=job_kind.name,
        params=validated.model_dump(mode="json"),
        state=JobState.QUEUED,
        celery_task_id=str(uuid.uuid4()),
        retry_of=retry_of,
        enqueued_at=timezone.now(),
    )
    _push_job(job)
    transaction.on_commit(lambda: _enqueue(job))
    return job


def _check_upload_owner(owner: AbstractBaseUser, upload_id: Any, field: str) -> None:
    if upload_id is None or not Upload.objects.filter(pk=upload_id, owner=owner).exists():
        raise InvalidParams({field: ["Upload a file first (no such upload of yours)."]})


def _enqueue(job: Job, *, countdown: float | None = None) -> bool:
    """Hand the job's message to the broker; returns whether it got there.

    A job the broker could not take is not failed: it stays `queued`, waiting for the queue (its
    ``enqueued_at`` cleared: shown as ``waiting_for_queue`` in its payload), and job_requeue_lost
    sends it at the reaper's next tick once the broker is back. A change of the row is a new
    version, pushed, and ``job`` is refreshed with it, so a caller answers with what is stored.
    """
    from .tasks import run_job

    kind = get_kind(job.kind)
    try:
        run_job.apply_async(
            args=[str(job.id)],
            task_id=job.celery_task_id,
            queue=kind.queue,
            soft_time_limit=kind.soft_time_limit,
            time_limit=kind.time_limit,
            countdown=countdown,
        )
    except Exception as exc:
        logger.warning("Could not reach the job queue for job %s; it waits for the queue: %s", job.id, exc)
        _mark_waiting_for_queue(job, waiting=True)
        return False
    if job.enqueued_at is None:
        _mark_waiting_for_queue(job, waiting=False)
    return True


def _mark_waiting_for_queue(job: Job, *, waiting: bool) -> None:
    """Record that a queued job's message did not reach the broker (``enqueued_at`` empty), or,
    once it did, when; only a change is written (a new version, pushed)."""
    rows = Job.objects.filter(pk=job.pk, state=JobState.QUEUED, enqueued_at__isnull=not waiting)
    if rows.update(enqueued_at=None if waiting else timezone.now(), version=F("version") + 1):
        job.refresh_from_db()
        _push_job(job)


def job_retry(*, user: AbstractBaseUser, job_id: uuid.UUID | str, params: Any = None) -> Job:
    """A new job like a finished one: same parameters (retry) or edited ones (re-run)."""
    old = job_for_action(user=user, job_id=job_id)
    if not old.is_final:
        raise Conflict(f"The job is {old.state}; only a finished job can be retried.")
    new_params = dict(old.params) if params is None else params
    kind = get_kind(old.kind)
    if not may_launch(user, kind):
        # Whoever retries launches: an operator may not send someone's broadcast again (with
        # new words) without the power the kind takes, whatever the owner holds.
        raise KindNotAllowed(f"Launching {kind.title!r} takes a permission you do not have.")
    if kind.upload_param and isinstance(new_params, dict):
        new_params.setdefault(kind.upload_param, old.params.get(kind.upload_param))
    # An operator retrying someone's job retries it for them: the owner stays the same.
    return job_create(
        owner=old.owner, kind=old.kind, params=new_params, retry_of=old, rate_limit=old.owner_id == user.pk
    )


def job_cancel(*, user: AbstractBaseUser, job_id: uuid.UUID | str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop (it shows as cancelling)."""
    job = job_for_action(user=user, job_id=job_id)
    if job.is_final:
        raise Conflict(f"The job already {job.state}; there is nothing to cancel.")
    cancelled = _transition(
        job_id=job.id, to=JobState.CANCELLED, condition=Q(state=JobState.QUEUED), finished_at=timezone.now()
    )
    if cancelled is not None:
        _revoke(cancelled.celery_task_id)
        return cancelled
    with transaction.atomic():
        if Job.objects.filter(pk=job.id, state=JobState.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=timezone.now(), version=F("version") + 1
        ):
            job = Job.objects.get(pk=job.id)
            _push_job(job)
            return job
    job.refresh_from_db()
    if job.is_final:
        raise Conflict(f"The job already {job.state}; there is nothing to cancel.")
    return job  # a cancel was already requested


def _revoke(task_id: str) -> None:
    from dashboard.celery import app

    try:
        app.control.revoke(task_id)
    except Exception:
        # Harmless to miss: the task finds the job cancelled and does nothing.
        logger.warning("Could not revoke task %s", task_id, exc_info=True)


# --- The state machine -------------------------------------------------------------------------


def _transition(
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
        if not rows.update(state=to, version=F("version") + 1, **fields):
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
            _notify_finished(job)
        return job


_FINISHED = {
    JobState.SUCCEEDED: ("finished", Level.SUCCESS),
    JobState.FAILED: ("failed", Level.ERROR),
    JobState.CANCELLED: ("was cancelled", Level.WARNING),
}


def _notify_finished(job: Job) -> None:
    verb, level = _FINISHED[JobState(job.state)]
    body = job.error if job.state == JobState.FAILED else ""
    if len(body) > NOTIFY_ERROR_CHARS:
        body = body[: NOTIFY_ERROR_CHARS - 1] + "…"
    link = reverse("frontend:job-detail", args=[job.id])
    if job.result_file:
        body = "Your file is ready to download."
        link = reverse("api:job-download", args=[job.id])
    notify(
        recipient_id=job.owner_id,
        title=f"{kind_title(job.kind)} {verb}",
        body=body,
        level=level,
        link=link,
        job_id=job.id,
        topic=f"job.{job.state}",
    )


def _note_still_enqueued(job: Job) -> None:
    """A deferred job's message is alive (it is being retried): say so, at most twice per
    RUNBOARD_REQUEUE_AFTER, so the reaper doesn't enqueue it again."""
    now = timezone.now()
    if job.enqueued_at is None:
        # It was waiting for the queue, and a message reached a worker after all: no longer.
        Job.objects.filter(pk=job.pk).update(enqueued_at=now, version=F("version") + 1)
        job.enqueued_at, job.version = now, job.version + 1
        _push_job(job)
    elif job.enqueued_at < now - timedelta(seconds=settings.RUNBOARD_REQUEUE_AFTER / 2):
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
        if running_count(owner_id=job.owner_id) >= settings.RUNBOARD_MAX_RUNNING_PER_USER or (
            kind is not None
            and kind.max_running_per_user is not None
            and running_count(owner_id=job.owner_id, kind=kind.name) >= kind.max_running_per_user
        ):
            _note_still_enqueued(job)
            return Deferred(retry_in=1.0)
        now = timezone.now()
        return _transition(
            job_id=job_id,
            to=JobState.RUNNING,
            locked=job,
            started_at=now,
            heartbeat_at=now,
            attempts=job.attempts + 1,
        )


def job_finish(
    *,
    job_id: uuid.UUID | str,
    state: JobState,
    result: Any = None,
    error: str = "",
    progress: tuple[int, int | None, str] | None = None,
    result_file: str | None = None,
    kind: str | None = None,
) -> Job | None:
    """End a job in a final state, exactly once; later or duplicate calls return None.

    The result is stored with its summary and size (jobs.results.result_digest, by the job's
    ``kind``: pass it when known, else it is read); raises TypeError if the result is not JSON,
    ResultTooLarge if it is over RUNBOARD_RESULT_MAX_BYTES.
    """
    if state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        raise ValueError(f"{state!r} is not a final state")
    fields: dict[str, Any] = {"finished_at": timezone.now(), "result": result, "error": error}
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
            max_bytes=settings.RUNBOARD_RESULT_MAX_BYTES,
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
    return _transition(job_id=job_id, to=state, **fields)


def job_heartbeat(
    *, job_id: uuid.UUID | str, current: int, total: int | None, message: str
) -> tuple[int, bool] | None:
    """Record progress and liveness of a running job; returns (new row version, cancel
    requested), or None if it is no longer running."""
    updated = Job.objects.filter(pk=job_id, state=JobState.RUNNING).update(
        progress_current=max(0, int(current)),
        progress_total=total,
        progress_message=str(message)[:MESSAGE_MAX],
        heartbeat_at=timezone.now(),
        version=F("version") + 1,
    )
    if not updated:
        return None
    row = Job.objects.filter(pk=job_id).values_list("version", "cancel_requested_at").first()
    return None if row is None else (row[0], row[1] is not None)


def job_add_progress(*, job_id: uuid.UUID | str, delta: int) -> Job | None:
    """Add a chunk's progress to a parallel job's aggregate (one UPDATE, whatever the chunks)."""
    updated = Job.objects.filter(pk=job_id, state=JobState.RUNNING).update(
        progress_current=F("progress_current") + delta, heartbeat_at=timezone.now(), version=F("version") + 1
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
        keep_after = rows[-1].seq - settings.RUNBOARD_LOG_LINES_KEPT
        if keep_after > 0:
            JobLogLine.objects.filter(job_id=job_id, seq__lte=keep_after).delete()
        group = events.job_group(job_id)
        for batch in log_line_batches([{"seq": row.seq, "text": row.text} for row in rows]):
            push_event(group=group, event=events.job_log(job_id=str(job_id), lines=batch))


# --- Execution ---------------------------------------------------------------------------------


def job_run(*, job_id: uuid.UUID | str) -> Deferred | None:
    """Execute a queued job in this worker: start it, run its kind, record the outcome."""
    from .progress import JobContext, ProgressReporter, Split

    started = job_start(job_id=job_id)
    if isinstance(started, Deferred):
        return started
    if started is None:
        logger.info("Job %s is not queued (duplicate delivery, cancelled or final); skipping", job_id)
        return None
    job = started
    try:
        kind = get_kind(job.kind)
        params = kind.validate(job.params)
    except Exception as exc:
        job_finish(job_id=job.id, state=JobState.FAILED, error=f"Cannot run this job: {exc}")
        return None

    reporter = ProgressReporter(job=job)
    ctx = JobContext(reporter, owner_id=job.owner_id)
    state, result, error = JobState.SUCCEEDED, None, ""
    try:
        result = kind.run(ctx, params)
    except SoftTimeLimitExceeded:
        state, error = JobState.FAILED, f"Time limit exceeded ({kind.soft_time_limit} s)."
    except Exception as exc:
        logger.info("Job %s failed", job.id, exc_info=True)
        state, error = JobState.FAILED, str(exc) or type(exc).__name__
    finally:
        progress = reporter.close()

    if isinstance(result, Split) and state == JobState.SUCCEEDED and not reporter.cancelled:
        _dispatch_chunks(job=job, kind=kind, chunks=result.chunks, progress=progress)
        return None
    if reporter.cancelled and state == JobState.SUCCEEDED:
        state, result = JobState.CANCELLED, None
    _finish_with_result(job, state, result, error, progress, ctx.result_file)
    return None


def _finish_with_result(
    job: Job, state: JobState, result: Any, error: str, progress: Any, result_file: str | None
) -> None:
    try:
        job_finish(
            job_id=job.id, state=state, result=result, error=error, progress=progress,
            result_file=result_file, kind=job.kind,
        )  # fmt: skip
    except ResultTooLarge as exc:
        job_finish(job_id=job.id, state=JobState.FAILED, error=str(exc), progress=progress)
    except (TypeError, ValueError):
        job_finish(
            job_id=job.id,
            state=JobState.FAILED,
            error="The job's result is not JSON-serializable.",
            progress=progress,
        )


def _dispatch_chunks(*, job: Job, kind: JobKind, chunks: list[dict[str, Any]], progress: Any) -> None:
    from .tasks import run_job_chunk

    _, total, message = progress
    with transaction.atomic():
        JobChunk.objects.bulk_create(
            [JobChunk(job=job, index=index, params=chunk) for index, chunk in enumerate(chunks)]
        )
        Job.objects.filter(pk=job.id).update(
            chunks_total=len(chunks),
            progress_current=0,
            progress_total=total,
            progress_message=message or f"Running {len(chunks)} chunks in parallel",
            heartbeat_at=timezone.now(),
            version=F("version") + 1,
        )
        _push_job(Job.objects.get(pk=job.id))

        def send() -> None:
            for index in range(len(chunks)):
                run_job_chunk.apply_async(
                    args=[str(job.id), index],
                    queue=kind.queue,
                    soft_time_limit=kind.soft_time_limit,
                    time_limit=kind.time_limit,
                )

        transaction.on_commit(send)


def job_run_chunk(*, job_id: uuid.UUID | str, index: int) -> None:
    """Run one chunk of a parallel job; the last chunk to finish completes the job."""
    from .progress import ChunkReporter, JobContext

    job = Job.objects.filter(pk=job_id).first()
    chunk = JobChunk.objects.filter(job_id=job_id, index=index, done=False).first()
    if job is None or chunk is None or job.state != JobState.RUNNING:
        return
    kind = get_kind(job.kind)
    params = kind.validate(job.params)
    reporter = ChunkReporter(job=job)
    ctx = JobContext(reporter, owner_id=job.owner_id)
    try:
        result = kind.run_chunk(ctx, params, chunk.params)  # type: ignore[misc]
    except SoftTimeLimitExceeded:
        reporter.close()
        job_finish(
            job_id=job_id, state=JobState.FAILED, error=f"Time limit exceeded ({kind.soft_time_limit} s)."
        )
        return
    except Exception as exc:
        reporter.close()
        logger.info("Chunk %s of job %s failed", index, job_id, exc_info=True)
        job_finish(
            job_id=job_id, state=JobState.FAILED, error=f"Chunk {index + 1}: {exc or type(exc).__name__}"
        )
        return
    reporter.close()
    if reporter.cancelled:
        job_finish(job_id=job_id, state=JobState.CANCELLED)
        return
    # Mark done, then count: whichever chunk commits last sees every chunk done and finishes
    # the job (job_finish is exactly-once should two see it at the same moment).
    JobChunk.objects.filter(pk=chunk.pk, done=False).update(done=True, result=result)
    chunks = list(JobChunk.objects.filter(job_id=job_id).order_by("index").values_list("done", "result"))
    if all(done for done, _ in chunks):
        final = Job.objects.get(pk=job_id)
        _finish_with_result(
            final,
            JobState.SUCCEEDED,
            kind.combine(params, [result for _, result in chunks]),  # type: ignore[misc]
            "",
            (final.progress_current, final.progress_total, "Done"),
            None,
        )


def job_handle_task_failure(*, job_id: uuid.UUID | str, reason: str, worker_lost: bool) -> None:
    """Called in the worker's main process when a job's task died (hard time limit, killed
    child): end the job now rather than waiting for the reaper."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.state != JobState.RUNNING:
        return
    if worker_lost:
        _recover_lost(job, reason=reason)
    else:
        job_finish(job_id=job_id, state=JobState.FAILED, error=reason)


def _recover_lost(job: Job, *, reason: str, condition: Q | None = None) -> Job | None:
    """A running job lost its worker: re-queue it if its kind is safe to re-run, else fail it."""
    try:
        kind: JobKind | None = get_kind(job.kind)
    except UnknownKind:
        kind = None
    if kind is not None and kind.rerun_safe and job.chunks_total == 0 and job.attempts < MAX_ATTEMPTS:
        requeued = _transition(
            job_id=job.id,
            to=JobState.QUEUED,
            condition=condition,
            celery_task_id=str(uuid.uuid4()),
            started_at=None,
            heartbeat_at=None,
            enqueued_at=timezone.now(),
            progress_message=f"{reason} Re-queued (attempt {job.attempts + 1}).",
        )
        if requeued is not None:
            transaction.on_commit(lambda: _enqueue(requeued))
            return requeued
    return _transition(
        job_id=job.id, to=JobState.FAILED, condition=condition, finished_at=timezone.now(), error=reason
    )


def job_reap_stale(*, stale_after: float | None = None) -> int:
    """Recover running jobs whose worker stopped heartbeating; returns how many."""
    stale_after = settings.RUNBOARD_STALE_AFTER if stale_after is None else stale_after
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after)
    reaped = 0
    for job in Job.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff):
        if job.chunks_total and not _chunked_job_overdue(job, now, stale_after):
            continue  # chunks may still be waiting in the queue; their time limit bounds them
        # The cutoff is part of the conditional write: a heartbeat that landed since the read wins.
        if _recover_lost(
            job,
            reason=f"Worker lost: no heartbeat for over {stale_after:g} s.",
            condition=Q(heartbeat_at__lt=cutoff),
        ):
            reaped += 1
            logger.warning("Reaped job %s: worker lost", job.id)
    return reaped


def job_requeue_lost(*, requeue_after: float | None = None) -> int:
    """Enqueue again the queued jobs waiting for the queue (their message never reached the
    broker: at every pass), and those with no sign of their message for ``requeue_after``
    seconds; returns how many were sent.

    The first send that fails ends the pass (the broker is down: the next tick tries again, and a
    job that was silent is now waiting for the queue). A job only starts from `queued`, so if an
    old message was not lost after all, whichever delivery comes second is skipped as a
    duplicate: the cost of a false alarm is one message.
    """
    requeue_after = settings.RUNBOARD_REQUEUE_AFTER if requeue_after is None else requeue_after
    now = timezone.now()
    cutoff = now - timedelta(seconds=requeue_after)
    silent, waiting = Q(enqueued_at__lt=cutoff), Q(enqueued_at__isnull=True)
    requeued = 0
    for job in Job.objects.filter(silent | waiting, state=JobState.QUEUED).order_by("created_at"):
        # Conditional, like every write here: a start, a deferral or another pass that landed
        # since the read wins. A waiting job is claimed with a new task id (its state as shown
        # stays the same until its message is sent).
        rows = Job.objects.filter(pk=job.pk, state=JobState.QUEUED)
        if job.enqueued_at is None:
            task_id = str(uuid.uuid4())
            if not rows.filter(waiting, celery_task_id=job.celery_task_id).update(celery_task_id=task_id):
                continue
            job.celery_task_id = task_id
        elif not rows.filter(silent).update(enqueued_at=now):
            continue
        was_waiting = job.enqueued_at is None
        if not _enqueue(job):
            break
        requeued += 1
        if was_waiting:
            logger.warning("Sent job %s, which was waiting for the queue", job.id)
        else:
            logger.warning("Re-enqueued job %s: queued with no sign of its message", job.id)
    return requeued


def _chunked_job_overdue(job: Job, now: Any, stale_after: float) -> bool:
    try:
        limit = get_kind(job.kind).time_limit
    except UnknownKind:
        return True
    # Every chunk could have run one after the other on a single worker process.
    budget = limit * max(1, job.chunks_total) + stale_after
    return job.heartbeat_at is None or job.heartbeat_at < now - timedelta(seconds=budget)


def job_purge_expired_result_files(*, older_than_days: float | None = None) -> int:
    """Delete result files (exports) past retention; the job keeps its row and result."""
    days = settings.RUNBOARD_RESULT_FILE_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    purged = 0
    for job in Job.objects.filter(finished_at__lt=cutoff).exclude(result_file=""):
        job.result_file.delete(save=False)
        Job.objects.filter(pk=job.pk).update(result_file="", version=F("version") + 1)
        purged += 1
    return purged


def retention_apply(*, now: Any = None) -> dict[str, int]:
    """Remove what has outlived its retention: finished jobs (with logs, chunks and files),
    uploads nothing refers to any more, read notifications, and old task results."""
    from django_celery_results.models import TaskResult

    now = now or timezone.now()
    job_cutoff = now - timedelta(days=settings.RUNBOARD_JOB_RETENTION_DAYS)
    removed = {"jobs": 0, "uploads": 0, "notifications": 0, "task_results": 0}
    old_jobs = Job.objects.filter(finished_at__lt=job_cutoff)
    for job in old_jobs.exclude(result_file="").iterator():
        job.result_file.delete(save=False)
    removed["jobs"] = old_jobs.delete()[1].get("jobs.Job", 0)
    referenced = {
        str(v)
        for v in Job.objects.exclude(params__upload_id=None).values_list("params__upload_id", flat=True)
    }
    for upload in Upload.objects.filter(created_at__lt=job_cutoff):
        if str(upload.pk) not in referenced:
            upload_delete(upload=upload)
            removed["uploads"] += 1
    removed["notifications"] = notifications_purge_read(
        created_before=now - timedelta(days=settings.RUNBOARD_NOTIFICATION_RETENTION_DAYS)
    )
    removed["task_results"], _ = TaskResult.objects.filter(
        date_done__lt=now - timedelta(seconds=settings.CELERY_RESULT_EXPIRES)
    ).delete()
    return removed
