from __future__ import annotations

from typing import Any

from django.utils import timezone

from jobs.models import Job, JobState


def make_job(*, owner: Any, state: JobState = JobState.QUEUED, **fields: Any) -> Job:
    if state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        fields.setdefault("finished_at", timezone.now())
    if state != JobState.QUEUED:
        fields.setdefault("started_at", timezone.now())
        fields.setdefault("heartbeat_at", timezone.now())
    else:
        # As job_create: handed to the broker now (None would be waiting for the queue).
        fields.setdefault("enqueued_at", timezone.now())
    # As a job the scheduler admitted (jobs.admission); pass admitted_at=None for one still
    # waiting for its turn.
    if state in (JobState.QUEUED, JobState.RUNNING):
        fields.setdefault("admitted_at", timezone.now())
    return Job.objects.create(
        **{"owner": owner, "kind": "simulate", "params": {"steps": 1, "step_ms": 0}, "state": state, **fields}
    )


def make_job_with_file(*, owner: Any, name: str, content: bytes) -> Job:
    """A succeeded job whose produced file (``result_file``, served by ``/download/``) holds
    ``content``, stored where the private storage keeps results."""
    from django.conf import settings

    job = make_job(owner=owner, state=JobState.SUCCEEDED, result={"file_name": name})
    job.result_file.name = f"results/{job.id}/{name}"
    job.save(update_fields=["result_file"])
    path = settings.RUNBOARD_PRIVATE_DIR / job.result_file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return job
