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
