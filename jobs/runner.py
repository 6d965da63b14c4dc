"""The worker's side of a job: run it (or one of its chunks), record the outcome, and end or
re-queue a job whose task died."""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from typing import Any

from billiard import process as billiard_process
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from dashboard import metrics
from dashboard.process_local import ProcessLocal

from .admission import job_hold_if_paused, jobs_admit_quietly, queue_line_and_waiting
from .conf import app_settings
from .context import JobContext, Split
from .dispatch import _dispatch_chunks, _enqueue, admission_pass_later
from .kinds.registry import JobKind, UnknownKind, get_kind
from .models import FINAL_STATES, Job, JobChunk, JobState
from .reporter import ChunkReporter, ProgressReporter
from .results import ResultTooLarge
from .retries import MAX_ATTEMPTS_LIMIT
from .states import Deferred, attempt_errors_with, job_finish, job_retry_later, job_start, job_transition

# The error classes of failures no exception of the job's own raised: a time limit (Celery's
# SoftTimeLimitExceeded / TimeLimitExceeded alike) and a lost worker (Celery's WorkerLostError,
# or no heartbeat: the reaper).
TIME_LIMIT_CLASS = "TimeLimitExceeded"
WORKER_LOST_CLASS = "WorkerLostError"

logger = logging.getLogger(__name__)

# A lost worker's job is re-queued at most this many times before it is failed.
MAX_ATTEMPTS = 3
# Seconds after a start before its admission pass runs (lines up the owner's next job, moves
# the jobs in line up); a job over by then skips it: the pass after its finish does the same.
START_PASS_DELAY = 0.25
# Seconds a pool process waits, after a job ends, before its admission pass: ends meanwhile
# share it (issue 14 §1: a pass per job cost a quarter of the throughput of zero-step jobs).
PASS_AFTER_JOB_DELAY = 0.05
# A failed pass in a pool process: tried again this many seconds later, this many times in a row.
PASS_RETRY_DELAY, PASS_RETRIES = 0.5, 5


def job_run(*, job_id: uuid.UUID | str) -> Deferred | None:
    """Execute a queued job in this worker: start it, run its kind, record the outcome (unless
    staff paused its kind or queue since it was admitted: then it goes back to waiting)."""
    if job_hold_if_paused(job_id=job_id):
        return None
    started = job_start(job_id=job_id)
    if isinstance(started, Deferred):
        return started
    if started is None:
        logger.info("Job %s is not queued (duplicate delivery, cancelled or final); skipping", job_id)
        return None
    job = started
    metrics.job_started(job)
    # Its place in line is free (the next of its owner's jobs may line up; positions move): a
    # pass for that, unless the job is over sooner (the pass after its finish does the same and
    # more: one pass a short job, not two).
    after_start = None
    if app_settings.ADMISSION_CONTROL:  # off: every job went to the broker at launch
        after_start = threading.Timer(START_PASS_DELAY, _admit_after_start, kwargs={"job": job})
        after_start.daemon = True
        after_start.start()
    try:
        _run_started(job)
        return None
    finally:
        if after_start is not None:
            after_start.cancel()
        admit_after_job(kind=job.kind)  # a slot is free (or its chunks run)


class _PassAfterJobs:
    """A Celery pool process's admission pass after its jobs end: run on a timer thread
    PASS_AFTER_JOB_DELAY seconds after the first end that asks, covering every end until it
    starts (one pass for several short jobs), while the process takes its next message (the
    broker's line holds one job of each user ahead, so no worker waits for the pass).

    A pass that fails (the database busy past its timeout under load, a restart) is tried again
    PASS_RETRY_DELAY later, up to PASS_RETRIES times in a row, before it is left to the reaper's
    tick: the slot it would have filled idles meanwhile (a benchmark under load stalled until a
    tick that never came)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = False
        self._failures = 0

    def request(self, *, delay: float = PASS_AFTER_JOB_DELAY) -> None:
        with self._lock:
            if self._due:
                return
            self._due = True
        timer = threading.Timer(delay, self._run)
        timer.daemon = True
        timer.start()

    def failed(self) -> None:
        """A pass of this process failed: another soon, unless PASS_RETRIES failed in a row."""
        self._failures += 1
        if self._failures <= PASS_RETRIES:
            self.request(delay=PASS_RETRY_DELAY)

    def _run(self) -> None:
        with self._lock:
            self._due = False  # an end from now on asks for the next pass
        try:
            if jobs_admit_quietly() is None:
                self.failed()
            else:
                self._failures = 0
        finally:
            connection.close()


_passes_after_jobs: ProcessLocal[_PassAfterJobs] = ProcessLocal(_PassAfterJobs)


def admit_after_job(*, kind: str | None = None) -> None:
    """The admission pass after a job (or its last chunk) of ``kind`` ended.

    When nothing is lined up in its queue (the broker holds no admitted job there: a worker of
    it would idle until a pass), at once, before this task returns; otherwise coalesced on a
    timer thread in a Celery pool process (the line keeps the workers busy meanwhile; a process
    that exits with one pending leaves it to the reaper's tick). At once elsewhere (the solo
    pool, a direct call). Issue 14 §1: one user's short jobs ran at 0.23x the throughput of
    first come first served while each freed slot waited PASS_AFTER_JOB_DELAY for its pass."""
    if not app_settings.ADMISSION_CONTROL:
        return  # every job went to the broker at launch: nothing to admit
    if billiard_process.current_process().name == "MainProcess":
        jobs_admit_quietly()
        return
    if kind is None:
        _passes_after_jobs.get().request()
        return
    # One statement asks both: is anything lined up in its queue, is anything queued at all.
    in_line, waiting = queue_line_and_waiting(kind=kind)
    if not waiting:
        return  # nothing to admit: the pass would end at its first read (a launch runs its own)
    if not in_line:
        if jobs_admit_quietly(checked=True) is None:
            _passes_after_jobs.get().failed()
    else:
        _passes_after_jobs.get().request()


def _admit_after_start(*, job: Job) -> None:
    """The pass after a start, on the timer's thread (its own connection, closed after)."""
    try:
        jobs_admit_quietly(started=job)
    finally:
        connection.close()


def _run_started(job: Job) -> None:
    try:
        kind = get_kind(job.kind)
        params = kind.validate(job.params)
    except Exception as exc:
        job_finish(
            job_id=job.id, state=JobState.FAILED, error=f"Cannot run this job: {exc}",
            error_class=type(exc).__name__,
        )  # fmt: skip
        return None

    reporter = ProgressReporter(job=job)
    ctx = JobContext(reporter, owner_id=job.owner_id, attempt=job.attempts, max_attempts=job.max_attempts)
    state, result, error = JobState.SUCCEEDED, None, ""
    failure: BaseException | None = None
    trace = error_class = ""
    try:
        result = kind.run(ctx, params)
    except SoftTimeLimitExceeded as exc:
        state, error, failure = JobState.FAILED, f"Time limit exceeded ({kind.soft_time_limit} s).", exc
        error_class = TIME_LIMIT_CLASS
        _log_failure(ctx, job, error)
    except Exception as exc:
        logger.info("Job %s failed (attempt %d of %d)", job.id, job.attempts, job.max_attempts, exc_info=True)
        state, error, failure = JobState.FAILED, str(exc) or type(exc).__name__, exc
        error_class = type(exc).__name__
        trace = traceback.format_exc()
        _log_failure(ctx, job, f"{type(exc).__name__}: {error}")
    finally:
        progress = reporter.close()

    if failure is not None and not reporter.cancelled and _retry_later(job, kind, failure, error):
        return None

    if isinstance(result, Split) and state == JobState.SUCCEEDED and not reporter.cancelled:
        _dispatch_chunks(job=job, kind=kind, chunks=result.chunks, progress=progress)
        return None
    if reporter.cancelled and state == JobState.SUCCEEDED:
        state, result = JobState.CANCELLED, None
    _finish_with_result(
        job, state, result, error, progress, ctx.result_file, trace=trace, error_class=error_class
    )
    return None


def _log_failure(ctx: JobContext, job: Job, reason: str) -> None:
    """The failure's reason as the job's last log line (issue 16 §2: a failed job's log said
    nothing of why), with the attempt when it has more than one."""
    attempt = f" (attempt {job.attempts} of {job.max_attempts})" if job.max_attempts > 1 else ""
    try:
        ctx.log(f"Failed{attempt}: {reason}")
    except Exception:  # a log that cannot take the line must not hide the failure itself
        logger.warning("Could not log the failure of job %s", job.id, exc_info=True)


def _retry_later(job: Job, kind: JobKind, failure: BaseException, error: str) -> bool:
    """If ``kind``'s policy retries ``failure`` and the job has attempts left, queue it again
    after the policy's backoff (and ask for an admission pass then); returns whether it did."""
    policy = kind.retry
    if job.attempts >= min(job.max_attempts, MAX_ATTEMPTS_LIMIT) or not policy.retryable(failure):
        return False
    delay = policy.delay(job.attempts)
    if job_retry_later(job=job, error=error, delay=delay) is None:
        return False  # cancelled or ended meanwhile: finish it as it is
    transaction.on_commit(lambda: admission_pass_later(countdown=delay))
    return True


def _finish_with_result(
    job: Job,
    state: JobState,
    result: Any,
    error: str,
    progress: Any,
    result_file: str | None,
    *,
    trace: str = "",
    error_class: str = "",
) -> None:
    try:
        job_finish(
            job_id=job.id, state=state, result=result, error=error, progress=progress,
            result_file=result_file, kind=job.kind, traceback=trace, error_class=error_class,
        )  # fmt: skip
    except ResultTooLarge as exc:
        job_finish(
            job_id=job.id, state=JobState.FAILED, error=str(exc), progress=progress,
            error_class=type(exc).__name__,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        job_finish(
            job_id=job.id,
            state=JobState.FAILED,
            error="The job's result is not JSON-serializable.",
            progress=progress,
            error_class=type(exc).__name__,
        )


def job_run_chunk(*, job_id: uuid.UUID | str, index: int) -> None:
    """Run one chunk of a parallel job; the last chunk to finish completes the job (and frees
    its slot: an admission pass follows)."""
    _run_chunk(job_id=job_id, index=index)
    ended = Job.objects.filter(pk=job_id, state__in=FINAL_STATES).values_list("kind", flat=True).first()
    if ended is not None:
        admit_after_job(kind=ended)


def _run_chunk(*, job_id: uuid.UUID | str, index: int) -> None:
    job = Job.objects.filter(pk=job_id).first()
    chunk = JobChunk.objects.filter(job_id=job_id, index=index, done=False).first()
    if job is None or chunk is None or job.state != JobState.RUNNING:
        return
    kind = get_kind(job.kind)
    params = kind.validate(job.params)
    reporter = ChunkReporter(job=job)
    ctx = JobContext(reporter, owner_id=job.owner_id, attempt=job.attempts, max_attempts=job.max_attempts)
    try:
        result = kind.run_chunk(ctx, params, chunk.params)  # type: ignore[misc]
    except SoftTimeLimitExceeded:
        reporter.close()
        job_finish(
            job_id=job_id, state=JobState.FAILED, error=f"Time limit exceeded ({kind.soft_time_limit} s).",
            error_class=TIME_LIMIT_CLASS,
        )  # fmt: skip
        return
    except Exception as exc:
        trace = traceback.format_exc()
        error = f"Chunk {index + 1}: {exc or type(exc).__name__}"
        _log_failure(ctx, job, f"{type(exc).__name__}: {error}")
        reporter.close()
        logger.info("Chunk %s of job %s failed", index, job_id, exc_info=True)
        job_finish(
            job_id=job_id, state=JobState.FAILED, error=error, traceback=trace, error_class=type(exc).__name__
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


def job_handle_task_failure(
    *, job_id: uuid.UUID | str, reason: str, worker_lost: bool, error_class: str = ""
) -> None:
    """Called in the worker's main process when a job's task died (hard time limit, killed
    child): end the job now rather than waiting for the reaper. ``error_class``: the task's
    exception class name, what failures are grouped by."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.state != JobState.RUNNING:
        return
    if worker_lost:
        _recover_lost(job, reason=reason)
    else:
        job_finish(job_id=job_id, state=JobState.FAILED, error=reason, error_class=error_class)
    jobs_admit_quietly()


def _recover_lost(job: Job, *, reason: str, condition: Q | None = None) -> Job | None:
    """A running job lost its worker: re-queue it if its kind is safe to re-run, else fail it."""
    try:
        kind: JobKind | None = get_kind(job.kind)
    except UnknownKind:
        kind = None
    if kind is not None and kind.rerun_safe and job.chunks_total == 0 and job.attempts < MAX_ATTEMPTS:
        requeued = job_transition(
            job_id=job.id,
            to=JobState.QUEUED,
            condition=condition,
            celery_task_id=str(uuid.uuid4()),
            started_at=None,
            heartbeat_at=None,
            enqueued_at=timezone.now(),
            progress_message=f"{reason} Re-queued (attempt {job.attempts + 1}).",
            attempt_errors=attempt_errors_with(job, error=reason, retry_in=0),
        )
        if requeued is not None:
            transaction.on_commit(lambda: _enqueue(requeued))
            return requeued
    return job_transition(
        job_id=job.id,
        to=JobState.FAILED,
        condition=condition,
        finished_at=timezone.now(),
        error=reason,
        error_class=WORKER_LOST_CLASS,
    )
