"""The operator's live view: what dashboard.ops measures, plus the workers and their current jobs."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from jobs.models import Job

from . import ops


def workers_online(*, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every worker answering the broadcast, with the jobs it is running now."""
    try:
        active = ops.celery_app().control.inspect(timeout=timeout).active() or {}
    except Exception:
        return []
    job_ids = {
        task["args"][0]
        for tasks in active.values()
        for task in tasks
        if task.get("name") in ("jobs.run_job", "jobs.run_job_chunk") and task.get("args")
    }
    jobs = {str(job.id): job for job in Job.objects.filter(pk__in=job_ids).select_related("owner")}
    workers = []
    for name, tasks in sorted(active.items()):
        current = []
        for task in tasks:
            job = jobs.get(task["args"][0]) if task.get("args") else None
            current.append(
                {
                    "task": task.get("name"),
                    "job_id": str(job.id) if job else None,
                    "kind": job.kind if job else None,
                    "owner": job.owner.get_username() if job else None,
                    "progress": [job.progress_current, job.progress_total] if job else None,
                    "pid": task.get("worker_pid"),
                }
            )
        workers.append({"name": name, "current": current})
    return workers


def operator_snapshot() -> dict[str, Any]:
    now = timezone.now()
    overview = ops.overview(now=now)
    finished = sum(overview["finished_last_hour"].values())
    return {
        **overview,
        "jobs_per_minute_last_hour": round(finished / 60, 2),
        "stalled": ops.stalled_jobs(now=now, limit=20),
        "workers": workers_online(),
        "at": now.isoformat(),
    }
