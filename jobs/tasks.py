"""Thin Celery shells around the job services (dispatch sends them by name: jobs/dispatch.py)."""

from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure

from dashboard.alerts import alerts_evaluate

from .admission import jobs_admit
from .housekeeping import job_purge_expired_result_files, job_reap_stale, job_requeue_lost, retention_apply
from .runner import job_handle_task_failure, job_run, job_run_chunk
from .schedules import schedule_run

JOB_TASKS = frozenset({"jobs.run_job", "jobs.run_job_chunk"})


@shared_task(bind=True, name="jobs.run_job", acks_late=True, max_retries=None)
def run_job(self: Task, job_id: str) -> str:
    deferred = job_run(job_id=job_id)
    if deferred is not None:
        # The owner is at their running-jobs cap: hand the slot to someone else's job.
        raise self.retry(countdown=deferred.retry_in)
    return job_id


@shared_task(name="jobs.run_job_chunk", acks_late=True)
def run_job_chunk(job_id: str, index: int) -> None:
    job_run_chunk(job_id=job_id, index=index)


@shared_task(name="jobs.reap_stale_jobs", ignore_result=True)
def reap_stale_jobs() -> int:
    # The scheduler's timer: whatever no launch or finish admitted (a failed pass, a resumed
    # queue, a slot a dead worker freed) is admitted here.
    return job_reap_stale() + job_requeue_lost() + jobs_admit()


@shared_task(name="jobs.admit_jobs", ignore_result=True)
def admit_jobs() -> int:
    # Asked for when a retried job's backoff ends (jobs.dispatch.admission_pass_later).
    return jobs_admit()


@shared_task(name="jobs.run_schedule", ignore_result=True)
def run_schedule(schedule_id: int) -> str | None:
    job = schedule_run(schedule_id=schedule_id)
    return str(job.id) if job else None


@shared_task(name="jobs.apply_retention", ignore_result=True)
def apply_retention() -> dict[str, int]:
    return retention_apply()


@shared_task(name="jobs.purge_expired_result_files", ignore_result=True)
def purge_expired_result_files() -> int:
    return job_purge_expired_result_files()


@shared_task(name="jobs.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> int:
    # Operators' alerts (dashboard/alerts.py): beat's every 30 s; returns the notifications sent.
    return alerts_evaluate().notified


@task_failure.connect
def _end_job_of_dead_task(
    sender: Task | None = None, exception: Exception | None = None, args: Any = None, **kw: Any
) -> None:
    """A job's task died in a way the task could not report itself (hard time limit, killed
    pool process): Celery tells the worker's main process, which ends the job now instead of
    leaving it to the reaper."""
    if sender is None or sender.name not in JOB_TASKS or not args:
        return
    if isinstance(exception, TimeLimitExceeded):
        reason, lost = f"Time limit exceeded (hard limit {exception.args[0]} s).", False
    elif isinstance(exception, WorkerLostError):
        reason, lost = "Worker lost: its process died mid-job.", True
    else:
        reason, lost = f"Internal error: {exception or 'unknown'}", False
    job_handle_task_failure(
        job_id=args[0], reason=reason, worker_lost=lost, error_class=type(exception).__name__
    )
