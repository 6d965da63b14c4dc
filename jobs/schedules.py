"""Services for job schedules: validate, keep the beat PeriodicTask in step, launch a run.

A crontab is parsed by Celery's own parser (``celery.schedules.crontab``), the one beat fires it
with, and must be able to fire at all (``0 0 31 2 *`` never does). Celery ANDs the day-of-month
and day-of-week fields (Vixie cron ORs them when both are restricted). The next run is computed
here on Celery's parsed sets, not with croniter (7.0, maintained again under pallets-eco; its
``day_or=False`` would AND) or cronsim (cron's OR): a second parser with its own syntax and
daylight-saving rules could promise times beat never fires at, and this needs no new dependency
(tests/jobs/test_schedules.py checks it against beat's own scheduler object). Wall times are
resolved the way beat's ``TzAwareCrontab`` resolves them (PEP 495 ``fold=0``): a time skipped by
a spring-forward change runs once, at the same instant as before the change (02:30 → 03:30
daylight time); a time that happens twice in autumn runs once, at its first occurrence.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab as celery_crontab
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import post_delete
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from .conf import app_settings
from .kinds.registry import InvalidParams, UnknownKind, get_kind
from .launch import job_create
from .models import Job, JobSchedule

TASK_NAME = "jobs.run_schedule"
CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# How far ahead the next run is looked for (a valid crontab may fire only on, say, Friday 29 Feb).
NEXT_RUN_HORIZON_DAYS = 5 * 366
SCHEDULE_MAX_SECONDS = 2**31 - 1  # what the every_seconds column holds on every database


@dataclass(frozen=True)
class ParsedCrontab:
    """Celery's parsed sets of one five-field crontab (day_of_week: 0 is Sunday)."""

    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month_of_year: frozenset[int]
    day_of_week: frozenset[int]

    def fires_on(self, day: date) -> bool:
        return (
            day.month in self.month_of_year
            and day.day in self.day_of_month
            and day.isoweekday() % 7 in self.day_of_week
        )


def crontab_parse(expression: str) -> ParsedCrontab:
    """Parse with Celery's crontab parser; ValueError with a readable message when it refuses."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError('Five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *".')
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    try:
        parsed = celery_crontab(
            minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
            day_of_week=day_of_week,
        )  # fmt: skip
    except Exception as exc:  # Celery raises ValueError, and ParseException for some shapes
        # Name the field at fault: Celery's message alone may not say which one it is.
        for name, value in zip(CRONTAB_FIELDS, parts, strict=True):
            try:
                celery_crontab(**{name: value})
            except Exception as field_exc:
                raise ValueError(f"{name.replace('_', ' ')} {value!r}: {field_exc}") from None
        if "never occurs" in str(exc):  # Celery's own check of the days each month has
            raise ValueError(f"{' '.join(parts)!r} never fires: {exc}") from None
        raise ValueError(f"Not a valid crontab: {exc}") from None
    return ParsedCrontab(
        minute=frozenset(parsed.minute),
        hour=frozenset(parsed.hour),
        day_of_month=frozenset(parsed.day_of_month),
        month_of_year=frozenset(parsed.month_of_year),
        day_of_week=frozenset(parsed.day_of_week),
    )


def crontab_can_fire(parsed: ParsedCrontab) -> bool:
    """Whether some date ever matches: the Gregorian calendar repeats every 400 years."""
    for month in parsed.month_of_year:
        for day in parsed.day_of_month:
            if day > (29 if month == 2 else calendar.monthrange(2001, month)[1]):
                continue
            if len(parsed.day_of_week) == 7 and not (month == 2 and day == 29):
                return True
            for year in range(2000, 2400):
                if (month != 2 or day != 29 or calendar.isleap(year)) and parsed.fires_on(
                    date(year, month, day)
                ):
                    return True
    return False


def timezone_get(name: str) -> ZoneInfo:
    """The zone of an IANA name; ValueError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r}: give an IANA name such as Europe/Berlin.") from None


def crontab_next_run(parsed: ParsedCrontab, *, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant strictly after ``after`` at which beat fires the crontab in ``tz``
    (UTC), or None if it never fires. Day by day for NEXT_RUN_HORIZON_DAYS, then (a rare date,
    such as 29 February on a Monday: next in 2044) month by month over the 400 years in which
    the Gregorian calendar repeats (a review: such a schedule, enabled, showed no next run)."""
    local_after = after.astimezone(tz)
    # Start a day early: a wall time skipped in spring maps to an instant after its local date.
    day = local_after.date() - timedelta(days=1)
    for _ in range(NEXT_RUN_HORIZON_DAYS + 2):
        when = _first_run_on(parsed, day, tz=tz, after=after)
        if when is not None:
            return when
        day += timedelta(days=1)
    for year in range(day.year, day.year + 401):
        for month in sorted(parsed.month_of_year):
            for day_of_month in sorted(parsed.day_of_month):
                if day_of_month > calendar.monthrange(year, month)[1]:
                    continue
                candidate = date(year, month, day_of_month)
                if candidate >= day:
                    when = _first_run_on(parsed, candidate, tz=tz, after=after)
                    if when is not None:
                        return when
    return None


def _first_run_on(parsed: ParsedCrontab, day: date, *, tz: ZoneInfo, after: datetime) -> datetime | None:
    if not parsed.fires_on(day):
        return None
    for hour in sorted(parsed.hour):
        for minute in sorted(parsed.minute):
            # fold=0: the first of a repeated autumn time, the pre-change offset for a skipped
            # spring time (what TzAwareCrontab does with the same wall time).
            when = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(UTC)
            if when > after:
                return when
    return None


def schedule_validate(
    *,
    kind: str,
    params: Any,
    every_seconds: int | None,
    crontab: str,
    timezone_name: str = "UTC",
    owner_id: int | None = None,
    schedule_id: int | None = None,
) -> dict[str, Any]:
    """Field errors as Django ValidationError; returns the normalized parameters. With
    ``owner_id``: also that the owner has fewer than RUNBOARD_SCHEDULES_PER_OWNER schedules
    besides ``schedule_id`` (beat's runs are not checked against the launch limit: the most a
    user's schedules launch is RUNBOARD_SCHEDULES_PER_OWNER a minute; a review made 40)."""
    errors: dict[str, list[str]] = {}
    if owner_id is not None:
        most = app_settings.SCHEDULES_PER_OWNER
        others = JobSchedule.objects.filter(owner_id=owner_id)
        if schedule_id is not None:
            others = others.exclude(pk=schedule_id)
        with transaction.atomic():  # within the caller's (schedule_save, the admin's): held to its end
            # The owner's row locked first (PostgreSQL): two saves at once count one after the other.
            users = get_user_model()._default_manager
            list(users.select_for_update().filter(pk=owner_id).values_list("pk"))
            full = others.count() >= most
        if full:
            errors["owner"] = [f"This user has {most} schedules, the most one owner may have."]
    try:
        normalized = get_kind(kind).validate(params).model_dump(mode="json")
    except UnknownKind:
        errors["kind"] = [f"Unknown job kind {kind!r}."]
        normalized = {}
    except InvalidParams as exc:
        errors["params"] = [f"{field}: {', '.join(msgs)}" for field, msgs in exc.errors.items()]
        normalized = {}
    shortest = app_settings.SCHEDULE_MIN_SECONDS
    if every_seconds is not None and not shortest <= every_seconds <= SCHEDULE_MAX_SECONDS:
        # Beat's runs are not refused by the launch limit: a floor keeps one schedule from
        # launching a job a second (a review: every_seconds 1 was accepted; 0 read "give either").
        errors["every_seconds"] = [f"From {shortest} to {SCHEDULE_MAX_SECONDS} seconds."]
    elif (every_seconds is not None) == bool(crontab.strip()):
        errors["every_seconds"] = ["Give either an interval or a crontab (exactly one)."]
    elif crontab.strip():
        try:
            if not crontab_can_fire(crontab_parse(crontab)):
                errors["crontab"] = [f"{crontab.strip()!r} never fires: no date matches it."]
        except ValueError as exc:
            errors["crontab"] = [str(exc)]
    try:
        timezone_get(timezone_name or "UTC")
    except ValueError as exc:
        errors["timezone"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    return normalized


def _crontab_row(expression: str, tz_name: str) -> CrontabSchedule:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    fields = dict(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
        day_of_week=day_of_week, timezone=tz_name,
    )  # fmt: skip
    # Not get_or_create: django-celery-beat tables may hold identical rows (its own admin and
    # older versions create them), and get_or_create would raise MultipleObjectsReturned.
    row = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return row if row is not None else CrontabSchedule.objects.create(**fields)


@transaction.atomic
def schedule_save(*, schedule: JobSchedule) -> JobSchedule:
    """Save a schedule (validated) and create or update the PeriodicTask that fires it."""
    schedule.timezone = schedule.timezone or "UTC"
    schedule.crontab = " ".join(schedule.crontab.split())
    schedule.params = schedule_validate(
        kind=schedule.kind,
        params=schedule.params,
        every_seconds=schedule.every_seconds,
        crontab=schedule.crontab,
        timezone_name=schedule.timezone,
        owner_id=schedule.owner_id,
        schedule_id=schedule.pk,
    )
    schedule.save()
    interval = crontab = None
    if schedule.every_seconds:
        interval = IntervalSchedule.objects.filter(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        ).order_by("pk").first() or IntervalSchedule.objects.create(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        )
    else:
        crontab = _crontab_row(schedule.crontab, schedule.timezone)
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
    schedule.delete()  # its periodic task goes with it (_delete_periodic_task)


def _delete_periodic_task(sender: Any, instance: JobSchedule, **kwargs: Any) -> None:
    """A schedule deleted any way (its owner deleted: a cascade, which calls no service) takes
    its beat task with it; a review found ``job-schedule:N`` tasks left firing at nothing, and
    beat's task admin is view only."""
    if instance.periodic_task_id:
        PeriodicTask.objects.filter(pk=instance.periodic_task_id).delete()


def connect_signals() -> None:
    """Called from JobsConfig.ready."""
    post_delete.connect(_delete_periodic_task, sender=JobSchedule, dispatch_uid="runboard-schedule-deleted")


@transaction.atomic
def schedule_set_enabled(*, schedule_id: int, enabled: bool) -> JobSchedule:
    """Pause (``enabled=False``) or resume a schedule, and its beat task with it."""
    schedule = JobSchedule.objects.select_for_update().get(pk=schedule_id)
    schedule.enabled = enabled
    schedule.save(update_fields=["enabled"])
    task = PeriodicTask.objects.filter(pk=schedule.periodic_task_id).first()
    if task is not None:
        task.enabled = enabled
        task.save()  # through save(): django-celery-beat's signal tells beat to re-read its tasks
    return schedule


@transaction.atomic
def schedule_run(*, schedule_id: int, manual: bool = False) -> Job | None:
    """One run of a schedule: an ordinary job of its owner (validated again: kinds change).

    Beat's runs skip a paused schedule and are counted in, not refused by, the owner's launch
    limit (a
    schedule fires at most once per RUNBOARD_SCHEDULE_MIN_SECONDS); ``manual`` (Run now) runs it
    anyway and is a launch like any other: raises RateLimited when the owner is at their
    RUNBOARD_LAUNCHES_PER_MINUTE (a review: 620 Run now calls in 13 s all launched)."""
    rows = JobSchedule.objects.select_related("owner").filter(pk=schedule_id)
    if not manual:
        rows = rows.filter(enabled=True)
    schedule = rows.first()
    if schedule is None or not schedule.owner.is_active:
        return None
    job = job_create(owner=schedule.owner, kind=schedule.kind, params=schedule.params, rate_limit=manual)
    # In this transaction, so before the job's message is sent: its end counts for the schedule.
    Job.objects.filter(pk=job.pk).update(schedule=schedule)
    job.schedule = schedule
    JobSchedule.objects.filter(pk=schedule.pk).update(last_job=job, last_run_at=job.created_at)
    return job


@dataclass(frozen=True)
class ScheduleStatus:
    """What a schedule shows: its timing in words, next run, last run and that run's outcome."""

    schedule: JobSchedule
    timing: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_outcome: str  # the last run's job state, or "" when it never ran


def schedule_next_run(schedule: JobSchedule, *, now: datetime | None = None) -> datetime | None:
    """When beat next runs it (None when paused)."""
    now = now or timezone.now()
    if not schedule.enabled:
        return None
    if schedule.every_seconds:
        last = schedule.last_run_at
        return max(now, last + timedelta(seconds=schedule.every_seconds)) if last else now
    try:
        parsed = crontab_parse(schedule.crontab)
        tz = timezone_get(schedule.timezone or "UTC")
    except ValueError:
        return None
    return crontab_next_run(parsed, tz=tz, after=now)


def schedule_timing(schedule: JobSchedule) -> str:
    if schedule.every_seconds:
        return f"every {schedule.every_seconds} s"
    return f"{schedule.crontab} ({schedule.timezone or 'UTC'})"


def schedule_last_outcome(schedule: JobSchedule) -> str:
    """The last run's job state ("" when it never ran, or that job was deleted)."""
    return schedule.last_job.state if schedule.last_job_id and schedule.last_job else ""


def schedule_status(schedule: JobSchedule, *, now: datetime | None = None) -> ScheduleStatus:
    return ScheduleStatus(
        schedule=schedule,
        timing=schedule_timing(schedule),
        next_run_at=schedule_next_run(schedule, now=now),
        last_run_at=schedule.last_run_at,
        last_outcome=schedule_last_outcome(schedule),
    )


def schedules_status(*, now: datetime | None = None, owner: Any = None) -> list[ScheduleStatus]:
    """Every schedule (or ``owner``'s only) with its status (the operations page, the API, the
    command)."""
    now = now or timezone.now()
    rows = JobSchedule.objects.select_related("owner", "last_job").order_by("name")
    if owner is not None:
        rows = rows.filter(owner=owner)
    return [schedule_status(schedule, now=now) for schedule in rows]
