"""Hand a job (or its chunks) to the broker, and take it back (revoke).

Tasks are named, not imported: the worker side (jobs/tasks.py) sits above every service, so this
module sends ``jobs.run_job`` and ``jobs.run_job_chunk`` by name through the current Celery app.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from .kinds.registry import JobKind, get_kind
from .models import Job, JobChunk, JobState
from .states import _push_job, job_rows_update

logger = logging.getLogger(__name__)

RUN_JOB = "jobs.run_job"
RUN_JOB_CHUNK = "jobs.run_job_chunk"
ADMIT_JOBS = "jobs.admit_jobs"


def _enqueue(job: Job, *, countdown: float | None = None) -> bool:
    """Hand the job's message to the broker; returns whether it got there.

    A job the broker could not take is not failed: it stays `queued`, waiting for the queue (its
    ``enqueued_at`` cleared: shown as ``waiting_for_queue`` in its payload), and job_requeue_lost
    sends it at the reaper's next tick once the broker is back. A change of the row is a new
    version, pushed, and ``job`` is refreshed with it, so a caller answers with what is stored.
    """
    kind = get_kind(job.kind)
    try:
        current_app.send_task(
            RUN_JOB,
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


def admission_pass_later(*, countdown: float) -> bool:
    """Ask the housekeeping process for an admission pass ``countdown`` seconds from now (a
    retried job's backoff ends then); returns whether the broker took the message. Missing it
    costs at most one reaper interval: every reaper tick runs a pass too."""
    try:
        current_app.send_task(ADMIT_JOBS, countdown=max(0.0, countdown), expires=countdown + 3600)
    except Exception as exc:
        logger.warning(
            "Could not ask for an admission pass in %.1f s (the reaper's tick will): %s", countdown, exc
        )
        return False
    return True


def _mark_waiting_for_queue(job: Job, *, waiting: bool) -> None:
    """Record that a queued job's message did not reach the broker (``enqueued_at`` empty), or,
    once it did, when; only a change is written (a new version, pushed)."""
    rows = Job.objects.filter(pk=job.pk, state=JobState.QUEUED, enqueued_at__isnull=not waiting)
    if job_rows_update(rows, enqueued_at=None if waiting else timezone.now()):
        job.refresh_from_db()
        _push_job(job)


def _revoke(task_id: str) -> None:
    try:
        current_app.control.revoke(task_id)
    except Exception:
        # Harmless to miss: the task finds the job cancelled and does nothing.
        logger.warning("Could not revoke task %s", task_id, exc_info=True)


def _dispatch_chunks(*, job: Job, kind: JobKind, chunks: list[dict[str, Any]], progress: Any) -> None:
    """A parallel job's split: store its chunks, show the job running them, and once committed
    send one ``jobs.run_job_chunk`` message per chunk."""
    _, total, message = progress
    with transaction.atomic():
        JobChunk.objects.bulk_create(
            [JobChunk(job=job, index=index, params=chunk) for index, chunk in enumerate(chunks)]
        )
        job_rows_update(
            Job.objects.filter(pk=job.id),
            chunks_total=len(chunks),
            progress_current=0,
            progress_total=total,
            progress_message=message or f"Running {len(chunks)} chunks in parallel",
            heartbeat_at=timezone.now(),
        )
        _push_job(Job.objects.get(pk=job.id))

        def send() -> None:
            for index in range(len(chunks)):
                current_app.send_task(
                    RUN_JOB_CHUNK,
                    args=[str(job.id), index],
                    queue=kind.queue,
                    soft_time_limit=kind.soft_time_limit,
                    time_limit=kind.time_limit,
                )

        transaction.on_commit(send)
