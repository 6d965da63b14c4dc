"""Periodic care: recover jobs whose worker was lost, send again jobs whose message was lost, and
remove what has outlived its retention."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.conf import app_settings
from notifications.inbox import notifications_purge_read

from .dispatch import _enqueue
from .kinds.registry import UnknownKind, get_kind
from .launch import upload_delete
from .models import Job, JobState, Upload
from .runner import _recover_lost
from .states import job_rows_update, jobs_delete

logger = logging.getLogger(__name__)


def job_reap_stale(*, stale_after: float | None = None) -> int:
    """Recover running jobs whose worker stopped heartbeating; returns how many."""
    stale_after = app_settings.STALE_AFTER if stale_after is None else stale_after
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
    requeue_after = app_settings.REQUEUE_AFTER if requeue_after is None else requeue_after
    now = timezone.now()
    cutoff = now - timedelta(seconds=requeue_after)
    silent, waiting = Q(enqueued_at__lt=cutoff), Q(enqueued_at__isnull=True)
    requeued = 0
    # Only admitted jobs have (or should have) a message: the others wait for the scheduler.
    lost = Job.objects.filter(silent | waiting, state=JobState.QUEUED, admitted_at__isnull=False)
    # In admission order: the order the messages first went in, and the places in line shown.
    for job in lost.order_by("admitted_at", "created_at"):
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
    days = app_settings.RESULT_FILE_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    purged = 0
    for job in Job.objects.filter(finished_at__lt=cutoff).exclude(result_file=""):
        job.result_file.delete(save=False)
        job_rows_update(Job.objects.filter(pk=job.pk), result_file="")
        purged += 1
    return purged


# Jobs retention deletes per transaction.
RETENTION_BATCH = 1000


def retention_apply(*, now: Any = None) -> dict[str, int]:
    """Remove what has outlived its retention: finished jobs (with logs, chunks and files),
    uploads nothing refers to any more, read notifications, and old task results."""
    now = now or timezone.now()
    job_cutoff = now - timedelta(days=app_settings.JOB_RETENTION_DAYS)
    removed = {"jobs": 0, "uploads": 0, "notifications": 0, "task_results": 0}
    # In batches (jobs_delete reads the ids it deletes): memory and each transaction stay bounded
    # however much history has outlived its retention.
    while batch := list(
        Job.objects.filter(finished_at__lt=job_cutoff)
        .order_by("finished_at")
        .values_list("pk", flat=True)[:RETENTION_BATCH]
    ):
        deleted = jobs_delete(Job.objects.filter(pk__in=batch, finished_at__lt=job_cutoff))
        removed["jobs"] += len(deleted)
        if not deleted:  # gone meanwhile (another housekeeping process): read the next batch
            continue
    referenced = {
        str(v)
        for v in Job.objects.exclude(params__upload_id=None).values_list("params__upload_id", flat=True)
    }
    for upload in Upload.objects.filter(created_at__lt=job_cutoff):
        if str(upload.pk) not in referenced:
            upload_delete(upload=upload)
            removed["uploads"] += 1
    removed["notifications"] = notifications_purge_read(
        created_before=now - timedelta(days=app_settings.NOTIFICATION_RETENTION_DAYS)
    )
    removed["task_results"], _ = TaskResult.objects.filter(
        date_done__lt=now - timedelta(seconds=settings.CELERY_RESULT_EXPIRES)
    ).delete()
    return removed
