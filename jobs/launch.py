"""Launching jobs: uploads, the launch rate limit, create (and launch with an upload), retry and
cancel. The web API, the CLI, the admin and schedules all launch through here."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from jobs.conf import app_settings

from .admission import (
    BEHIND_OWN,
    BEHIND_OWN_NOTE,
    FCFS_NOTE,
    IN_LINE,
    jobs_admit_quietly,
    launch_waits_behind_own,
)
from .dispatch import _enqueue, _revoke
from .exceptions import Conflict, InvalidUpload, KindNotAllowed, RateLimited
from .kinds.registry import InvalidParams, JobKind, get_kind, may_launch
from .models import Job, JobState, Upload
from .selectors import job_for_action
from .states import _push_job, job_rows_update, job_transition

if TYPE_CHECKING:
    from django.contrib.auth.models import User

UPLOAD_EXTENSIONS = {".csv", ".tsv", ".txt"}


def check_may_launch(user: User, kind: JobKind) -> None:
    """Raise KindNotAllowed unless ``user`` holds the power launching ``kind`` takes (staff-only
    kinds, broadcast...): the one check of every launch, retry and upload."""
    if not may_launch(user, kind):
        raise KindNotAllowed(f"Launching {kind.title!r} takes a permission you do not have.")


def _check_launch_rate(owner: User) -> None:
    """Raise RateLimited if ``owner`` launched RUNBOARD_LAUNCHES_PER_MINUTE jobs in the last minute.

    Called in the launch's transaction, it first locks the owner's row: one user's launches are
    counted one after the other, whatever the number of web processes, so the limit is exact (on
    PostgreSQL two launches could otherwise both count 29 and both insert). NO KEY UPDATE, as in
    job_start: the foreign keys of inserted jobs and notifications take KEY SHARE and don't wait.
    (SQLite takes its write lock when the transaction begins, so its launches are serialized.)
    """
    users = get_user_model()._default_manager
    list(users.select_for_update(no_key=True).filter(pk=owner.pk).values_list("pk", flat=True))
    limit = app_settings.LAUNCHES_PER_MINUTE
    window_start = timezone.now() - timedelta(seconds=60)
    recent = list(
        Job.objects.filter(owner=owner, created_at__gte=window_start)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) >= limit:
        oldest = recent[-1]
        retry_after = math.ceil((oldest + timedelta(seconds=60) - timezone.now()).total_seconds())
        raise RateLimited(max(1, retry_after))


def upload_create(*, owner: User, file: UploadedFile) -> Upload:
    """Store an uploaded input privately; refuses oversized files and unexpected types."""
    original = Path(file.name or "upload").name[:255] or "upload"
    if Path(original).suffix.lower() not in UPLOAD_EXTENSIONS:
        raise InvalidUpload(f"Expected a .csv, .tsv or .txt file, got {original!r}.")
    if file.size is None or file.size > app_settings.UPLOAD_MAX_BYTES:
        raise InvalidUpload(
            f"The file is larger than the limit of {app_settings.UPLOAD_MAX_BYTES} bytes.",
            too_large=True,
        )
    upload = Upload(owner=owner, original_name=original, size=file.size)
    # The stored name never comes from the client: no traversal, no collisions.
    upload.file.save(f"{owner.pk}/{upload.id}.csv", file, save=False)
    upload.save()
    return upload


def upload_delete(*, upload: Upload) -> None:
    """Remove an upload, file and row (a refused launch keeps nothing; retention)."""
    upload.file.delete(save=False)
    upload.delete()


@transaction.atomic
def job_create(
    *,
    owner: User,
    kind: str,
    params: Any,
    upload: Upload | None = None,
    retry_of: Job | None = None,
    rate_limit: bool = True,
) -> Job:
    """Validate, insert the job as queued and, once committed, run an admission pass (the fair
    scheduler, jobs.admission, hands it to the broker when its turn comes).

    Outside a caller's transaction, the job returned is what the database holds once that pass
    ran: `queued`, admitted or with the reason it waits (and if the broker could not be reached,
    waiting for the queue: the reaper sends it when the broker is back). Raises
    UnknownKind, KindNotAllowed, RateLimited or InvalidParams (per-field messages), and then
    creates nothing.
    """
    job_kind = get_kind(kind)
    check_may_launch(owner, job_kind)
    if rate_limit:
        _check_launch_rate(owner)
    if job_kind.upload_param:
        params = dict(params) if isinstance(params, dict) else params
        if upload is not None and isinstance(params, dict):
            params[job_kind.upload_param] = str(upload.id)
    validated = job_kind.validate(params)
    if job_kind.upload_param:
        _check_upload_owner(owner, getattr(validated, job_kind.upload_param), job_kind.upload_param)
    now = timezone.now()
    if not app_settings.ADMISSION_CONTROL:
        # First come first served: admitted at insert, its message sent once this commits (no
        # pass: the worker holds its owner to their cap by deferring, jobs.states.job_start).
        noted: dict[str, Any] = {"admitted_at": now, "wait_code": IN_LINE, "wait_note": FCFS_NOTE}
    elif launch_waits_behind_own(owner_id=owner.pk, kind=job_kind.name):
        noted = {"wait_code": BEHIND_OWN, "wait_note": BEHIND_OWN_NOTE}
    else:
        noted = {}
    job = Job.objects.create(
        owner=owner,
        kind=job_kind.name,
        params=validated.model_dump(mode="json"),
        label=job_kind.label_for(validated),
        state=JobState.QUEUED,
        celery_task_id=str(uuid.uuid4()),
        retry_of=retry_of,
        enqueued_at=now,
        max_attempts=job_kind.retry.max_attempts,
        **noted,
    )
    _push_job(job)
    if "admitted_at" in noted:
        transaction.on_commit(lambda: _enqueue(job))
    elif not noted:
        transaction.on_commit(lambda: _admit_and_refresh(job))
    return job


def _admit_and_refresh(job: Job) -> None:
    jobs_admit_quietly(for_job=job)  # keeps ``job`` as the pass left its row


def job_launch(
    *,
    owner: User,
    kind: str,
    params: Any,
    file: UploadedFile | None = None,
    rate_limit: bool = True,
) -> Job:
    """Launch ``kind`` for ``owner`` with ``file`` (if any) stored as its upload: the launch of the
    web API and the CLI. The permission is checked before the file is stored, and a refused
    launch keeps nothing (the upload is deleted again). Raises what job_create raises (UnknownKind
    first), and InvalidUpload for a file of the wrong type or size, or for a kind that takes none."""
    job_kind = get_kind(kind)
    upload = None
    if file is not None:
        if job_kind.upload_param is None:
            raise InvalidUpload(f"{job_kind.title!r} takes no file.")
        check_may_launch(owner, job_kind)
        upload = upload_create(owner=owner, file=file)
    try:
        return job_create(
            owner=owner, kind=job_kind.name, params=params, upload=upload, rate_limit=rate_limit
        )
    except BaseException:
        if upload is not None:
            upload_delete(upload=upload)
        raise


def _check_upload_owner(owner: User, upload_id: Any, field: str) -> None:
    if upload_id is None or not Upload.objects.filter(pk=upload_id, owner=owner).exists():
        raise InvalidParams({field: ["Upload a file first (no such upload of yours)."]})


def job_retry(*, user: User, job_id: uuid.UUID | str, params: Any = None) -> Job:
    """A new job like a finished one: same parameters (retry) or edited ones (re-run)."""
    old = job_for_action(user=user, job_id=job_id)
    if not old.is_final:
        raise Conflict(f"The job is {old.state}; only a finished job can be retried.")
    new_params = dict(old.params) if params is None else params
    kind = get_kind(old.kind)
    # Whoever retries launches: an operator may not send someone's broadcast again (with new
    # words) without the power the kind takes, whatever the owner holds.
    check_may_launch(user, kind)
    if kind.upload_param and isinstance(new_params, dict):
        new_params.setdefault(kind.upload_param, old.params.get(kind.upload_param))
    # An operator retrying someone's job retries it for them: the owner stays the same, and so
    # does the owner's launch limit (checked, not only counted: an operator's 35 retries went
    # through and then locked the owner out for a minute).
    return job_create(owner=old.owner, kind=old.kind, params=new_params, retry_of=old)


def job_cancel(*, user: User, job_id: uuid.UUID | str) -> Job:
    """Cancel a queued job at once, or ask a running one to stop (it shows as cancelling)."""
    job = job_for_action(user=user, job_id=job_id)
    if job.is_final:
        raise Conflict(f"The job already {job.state}; there is nothing to cancel.")
    cancelled = job_transition(
        job_id=job.id, to=JobState.CANCELLED, condition=Q(state=JobState.QUEUED), finished_at=timezone.now()
    )
    if cancelled is not None:
        _revoke(cancelled.celery_task_id)
        if cancelled.admitted_at is not None:
            transaction.on_commit(jobs_admit_quietly)  # its place in line is free
        return cancelled
    with transaction.atomic():
        if job_rows_update(
            Job.objects.filter(pk=job.id, state=JobState.RUNNING, cancel_requested_at__isnull=True),
            cancel_requested_at=timezone.now(),
        ):
            job = Job.objects.get(pk=job.id)
            _push_job(job)
            return job
    job.refresh_from_db()
    if job.is_final:
        raise Conflict(f"The job already {job.state}; there is nothing to cancel.")
    return job  # a cancel was already requested
