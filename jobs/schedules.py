"""Services for job schedules: validate, keep the beat PeriodicTask in step, launch a run."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from .kinds.registry import InvalidParams, UnknownKind, get_kind
from .launch import job_create
from .models import Job, JobSchedule

TASK_NAME = "jobs.run_schedule"


def schedule_validate(*, kind: str, params: Any, every_seconds: int | None, crontab: str) -> dict[str, Any]:
    """Field errors as Django ValidationError; returns the normalized parameters."""
    errors: dict[str, list[str]] = {}
    try:
        normalized = get_kind(kind).validate(params).model_dump(mode="json")
    except UnknownKind:
        errors["kind"] = [f"Unknown job kind {kind!r}."]
        normalized = {}
    except InvalidParams as exc:
        errors["params"] = [f"{field}: {', '.join(msgs)}" for field, msgs in exc.errors.items()]
        normalized = {}
    if bool(every_seconds) == bool(crontab.strip()):
        errors["every_seconds"] = ["Give either an interval or a crontab (exactly one)."]
    elif crontab.strip() and len(crontab.split()) != 5:
        errors["crontab"] = ['Five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *".']
    if errors:
        raise ValidationError(errors)
    return normalized


@transaction.atomic
def schedule_save(*, schedule: JobSchedule) -> JobSchedule:
    """Save a schedule (validated) and create or update the PeriodicTask that fires it."""
    schedule.params = schedule_validate(
        kind=schedule.kind,
        params=schedule.params,
        every_seconds=schedule.every_seconds,
        crontab=schedule.crontab,
    )
    schedule.save()
    interval = crontab = None
    if schedule.every_seconds:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        )
    else:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.crontab.split()
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
            day_of_week=day_of_week, timezone="UTC",
        )  # fmt: skip
    task = schedule.periodic_task or PeriodicTask(name=f"job-schedule:{schedule.pk}")
    task.task = TASK_NAME
    task.args = json.dumps([schedule.pk])
    task.interval, task.crontab = interval, crontab
    task.enabled = schedule.enabled
    task.description = f"Runs {schedule.kind} for {schedule.owner} ({schedule.name})"
    task.save()
    if schedule.periodic_task_id != task.pk:
        JobSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: JobSchedule) -> None:
    if schedule.periodic_task_id:
        PeriodicTask.objects.filter(pk=schedule.periodic_task_id).delete()
    schedule.delete()


def schedule_run(*, schedule_id: int) -> Job | None:
    """One run of a schedule: an ordinary job of its owner (validated again: kinds change)."""
    schedule = JobSchedule.objects.select_related("owner").filter(pk=schedule_id, enabled=True).first()
    if schedule is None or not schedule.owner.is_active:
        return None
    job = job_create(owner=schedule.owner, kind=schedule.kind, params=schedule.params, rate_limit=False)
    JobSchedule.objects.filter(pk=schedule.pk).update(last_job=job)
    return job
