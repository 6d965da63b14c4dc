"""Reads, always scoped to the user asking."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.urls import reverse

from notifications.events import JobPayload

from .kinds.registry import UnknownKind, get_kind
from .models import Job, JobLogLine, JobState

# Pushed versions are ``row version * VERSION_STEP + n``: the row's version counts database
# writes, and n counts the in-memory pushes made since the last write (jobs.progress).
VERSION_STEP = 1000


class InvalidCursor(ValueError):
    pass


def job_visible_to(user: AbstractBaseUser) -> QuerySet[Job]:
    """The jobs ``user`` may see and act on: their own; staff (operators) see every job."""
    if user.is_staff:
        return Job.objects.select_related("owner")
    return Job.objects.filter(owner=user).select_related("owner")


def job_list_for_user(
    *,
    user: AbstractBaseUser,
    limit: int = 50,
    states: Sequence[str] = (),
    kinds: Sequence[str] = (),
    cursor: str | None = None,
    search: str = "",
) -> QuerySet[Job]:
    """Newest first; ``cursor`` (from ``job_cursor``) continues after the job it names;
    ``search`` matches the kind, the progress message or the error."""
    jobs = job_visible_to(user)
    if search:
        jobs = jobs.filter(
            Q(kind__icontains=search) | Q(progress_message__icontains=search) | Q(error__icontains=search)
        )
    if states:
        jobs = jobs.filter(state__in=states)
    if kinds:
        jobs = jobs.filter(kind__in=kinds)
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        jobs = jobs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=job_id))
    return jobs.order_by("-created_at", "-id")[:limit]


def job_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(created), UUID(job_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor("Invalid cursor.") from None


def job_get_for_user(*, user: AbstractBaseUser, job_id: UUID | str) -> Job:
    """The user's job; raises Job.DoesNotExist for anything else (another user's job is a 404)."""
    return job_visible_to(user).get(pk=job_id)


def job_log_for_user(
    *, user: AbstractBaseUser, job_id: UUID | str, after: int = 0, limit: int = 1000
) -> list[JobLogLine]:
    job = job_get_for_user(user=user, job_id=job_id)
    return list(JobLogLine.objects.filter(job=job, seq__gt=after).order_by("seq")[:limit])


def running_count(*, owner_id: int, kind: str | None = None) -> int:
    jobs = Job.objects.filter(owner_id=owner_id, state=JobState.RUNNING)
    return (jobs.filter(kind=kind) if kind else jobs).count()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def kind_title(name: str) -> str:
    try:
        return get_kind(name).title
    except UnknownKind:
        return name


def progress_rate(
    current: int, total: int | None, started_ts: float | None, now_ts: float
) -> tuple[float | None, float | None]:
    """Average items per second since the start, and the seconds left at that rate."""
    if started_ts is None or current <= 0:
        return None, None
    elapsed = now_ts - started_ts
    if elapsed <= 0:
        return None, None
    rate = current / elapsed
    eta = max(0.0, (total - current) / rate) if total else None
    return round(rate, 3), (round(eta, 1) if eta is not None else None)


def job_payload(job: Job, *, push_seq: int = 0) -> JobPayload:
    """The job's full current state as sent to clients (never a delta)."""
    running = job.state == JobState.RUNNING
    started_ts = job.started_at.timestamp() if job.started_at else None
    # Progress in the row is as of the last heartbeat: measure the rate at that moment, so it
    # does not sag between heartbeats.
    measured_at = job.heartbeat_at.timestamp() if job.heartbeat_at else time.time()
    rate, eta = (
        progress_rate(job.progress_current, job.progress_total, started_ts, measured_at)
        if running
        else (None, None)
    )
    queue_wait = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    return {
        "id": str(job.id),
        "kind": job.kind,
        "kind_title": kind_title(job.kind),
        "owner": job.owner.get_username(),
        "state": job.state,
        "cancel_requested": job.cancel_requested_at is not None,
        "params": job.params,
        "progress": {
            "current": job.progress_current,
            "total": job.progress_total,
            "message": job.progress_message,
        },
        "rate": rate,
        "eta_seconds": eta,
        "version": job.version * VERSION_STEP + push_seq,
        "created_at": _iso(job.created_at),  # type: ignore[typeddict-item]
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "queue_wait_seconds": round(queue_wait, 3) if queue_wait is not None else None,
        "error": job.error,
        "result": job.result,
        "download_url": reverse("api:job-download", args=[job.id]) if job.result_file else None,
        "retry_of": str(job.retry_of_id) if job.retry_of_id else None,
        "timeline": _timeline(job),
    }


def _timeline(job: Job) -> list[dict[str, str]]:
    """The job's state changes, oldest first."""
    steps = [("queued", job.created_at), ("running", job.started_at), ("cancelling", job.cancel_requested_at)]
    if job.is_final:
        steps.append((job.state, job.finished_at))
    return [{"state": state, "at": at.isoformat()} for state, at in steps if at is not None]
