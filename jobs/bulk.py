"""Bulk actions on jobs selected by a filter (issue 16 §12): retry, cancel or delete "all failed
csv_profile jobs of the last hour" with one confirmation.

Two steps. ``bulk_preview`` counts the jobs the filter selects that the user may see
(``job_visible_to``: a filter never reaches further), how many of them the action applies to and
the user may act on (the number to confirm), why the others are left alone, and a few examples;
it issues a ``confirmation``: a token signed with the secret key (``django.core.signing``, valid
CONFIRMATION_MAX_AGE) that binds the user, the action, the filter, a random nonce and a digest of
the exact ids of the jobs previewed. ``bulk_apply`` takes that token and acts on exactly the jobs
previewed: if the set is no longer the same (a job failed, finished or was deleted since, or a
time window moved; not only the count) nothing is done (``SelectionChanged``, a 409: preview
again). A token is good for one apply: its nonce is recorded in the audit row under a unique
constraint before anything is done, so a replayed or double-submitted confirmation is refused
(``AlreadyApplied``, a 409) even when both arrive at once. At most BULK_MAX_JOBS jobs per action
(else ``SelectionTooLarge``: narrow the filter; nothing is done in batches behind the user's back).

Each job goes through the single-job service (``job_retry``, ``job_cancel``) or, for delete, the
same checks written here, so bulk grants nothing a one-by-one click would not: the owner, or
"act on any job" for another user's job; a retry also needs the kind's launch permission; a
delete only ever removes finished jobs, another user's only with Django's ``jobs.delete_job``
(superusers hold it). Retries count **and are checked** in the owner's
RUNBOARD_LAUNCHES_PER_MINUTE, as a single retry is (jobs.launch.job_retry): an owner at their
limit has the rest of their jobs skipped and reported (``rate_limited``), never retried past the
limit or dropped silently. Every applied action is audited (``JobBulkAction``, with the ids of the
jobs acted on); a user reads their own actions, a holder of "view all jobs" everyone's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Self, TypedDict

from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from jobs.conf import app_settings

from .exceptions import Conflict, KindNotAllowed, RateLimited
from .kinds.registry import InvalidParams, UnknownKind, all_kinds, may_launch
from .launch import job_cancel, job_retry
from .models import FINAL_STATES, Job, JobBulkAction, JobState
from .permissions import Power, has_power
from .selectors import bounded_count, job_search_q, job_visible_to
from .states import jobs_delete

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# The most jobs one bulk action acts on. A larger selection is refused whole (narrow the filter):
# the count confirmed is the count acted on, and one request stays a few seconds of work.
BULK_MAX_JOBS = 1000
# Jobs shown as examples in a preview.
EXAMPLES_SHOWN = 5
# Django's own model permission (the admin's "Can delete job"): deleting another user's jobs.
DELETE_ANY_JOB = "jobs.delete_job"
# A window of at most a year, in minutes.
WINDOW_MAX_MINUTES = 366 * 24 * 60
# How long a preview's confirmation may be applied: long enough to read the preview, short enough
# that "the jobs previewed" is still what the user has in mind.
CONFIRMATION_MAX_AGE = timedelta(minutes=15)
CONFIRMATION_SALT = "jobs.bulk.confirmation"
# A confirmation is a few hundred characters; anything much longer is not one.
CONFIRMATION_MAX_LENGTH = 2000

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


class BulkAction(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"
    DELETE = "delete"


Kind = Annotated[str, StringConstraints(min_length=1, max_length=64)]

AT_GIVEN_AS = "Give an ISO 8601 date and time with its offset, such as 2026-11-30T06:00:00Z."


def _iso_8601(value: object) -> datetime:
    """A datetime, or ISO 8601 text, with its offset, in UTC (pydantic alone also takes a number,
    or a text of digits, as a Unix time)."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(AT_GIVEN_AS) from None
    if not isinstance(value, datetime):
        raise ValueError(AT_GIVEN_AS)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"Without an offset. {AT_GIVEN_AS}")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # the year 1 or 9999, offset out of range: the database could not read it
        raise ValueError("Out of range.") from None


Bound = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]


class BulkFilter(BaseModel):
    """Which jobs: every criterion given must hold (none given: every job you may see). States
    and kinds match any of those listed; ``owner`` is a username; ``error_class`` matches a
    job's error class exactly; the windows are counted back from the moment the filter is applied,
    in minutes; ``finished_after`` (included) and ``finished_before`` (excluded) bound when the
    job finished (ISO 8601 with an offset; at most a year apart); ``search`` matches as the job
    list's ``q`` (kind, label, progress message, error or its class; case-insensitive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    states: list[JobState] = Field(default_factory=list, max_length=len(JobState.values))
    kinds: list[Kind] = Field(default_factory=list, max_length=100)
    owner: str = Field(default="", max_length=150)
    error_class: str = Field(default="", max_length=100)
    created_within_minutes: StrictInt | None = Field(default=None, ge=1, le=WINDOW_MAX_MINUTES)
    finished_within_minutes: StrictInt | None = Field(default=None, ge=1, le=WINDOW_MAX_MINUTES)
    finished_after: Bound | None = None
    finished_before: Bound | None = None
    search: str = Field(default="", max_length=100)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Self:
        if self.finished_after and self.finished_before:
            if self.finished_before <= self.finished_after:
                raise ValueError("finished_before must be later than finished_after.")
            if self.finished_before - self.finished_after > timedelta(minutes=WINDOW_MAX_MINUTES):
                raise ValueError("finished_after and finished_before are at most a year apart.")
        return self


class BulkSkip(TypedDict):
    """Jobs left alone, and why: ``reason`` a code, ``detail`` the sentence shown."""

    reason: str
    detail: str
    count: int


class BulkExample(TypedDict):
    id: str
    kind: str
    label: str
    owner: str
    state: str
    created_at: str  # ISO 8601


class BulkPreview(TypedDict):
    """What ``bulk_apply`` would do now. ``actionable`` is the count to confirm. Counts over
    10,000 may be PostgreSQL's estimates (``selectors.bounded_count``)."""

    action: str
    matched: int  # jobs the filter selects among those you may see
    actionable: int  # of those, the ones the action applies to and you may act on
    not_actionable: list[BulkSkip]  # the others, by reason (reasons with none are left out)
    limit: int  # BULK_MAX_JOBS: at most this many per action
    over_limit: bool  # actionable > limit: refused, narrow the filter
    # Retry only: how many of the actionable would be refused right now by their owner's launch
    # limit (RUNBOARD_LAUNCHES_PER_MINUTE); they are skipped, not retried, if applied now.
    rate_limited_now: int
    examples: list[BulkExample]  # the first few actionable jobs, oldest first
    # What ``bulk_apply`` takes to act on exactly these jobs, once, within CONFIRMATION_MAX_AGE;
    # none over the limit.
    confirmation: str | None


class BulkResult(TypedDict):
    """What ``bulk_apply`` did: ``acted`` jobs (retried, cancelled or asked to stop, deleted),
    the rest of the ``matched`` ones skipped by reason."""

    action: str
    audit_id: int
    matched: int
    acted: int
    skipped: list[BulkSkip]
    # The jobs acted on, in the order they were: the new jobs of a retry, the cancelled or deleted.
    job_ids: list[str]


class PreviewAgain(Conflict):
    """The confirmation no longer holds (HTTP 409): preview and confirm again."""


class SelectionChanged(PreviewAgain):
    """The jobs to act on are no longer exactly those previewed."""

    def __init__(self, *, actionable: int, confirmed: int):
        changed = (
            f"{actionable} job(s) now match (you confirmed {confirmed})"
            if actionable != confirmed
            else f"other jobs than the {confirmed} you confirmed now match"
        )
        super().__init__(f"The selection changed: {changed}. Preview again and confirm.")
        self.actionable = actionable
        self.confirmed = confirmed


class ConfirmationExpired(PreviewAgain):
    def __init__(self) -> None:
        minutes = int(CONFIRMATION_MAX_AGE.total_seconds() // 60)
        super().__init__(f"This confirmation is over {minutes} minutes old. Preview again and confirm.")


class AlreadyApplied(Conflict):
    """This confirmation was applied already (HTTP 409): each is good for one apply."""

    def __init__(self) -> None:
        super().__init__(
            "This confirmation was already applied (a confirmation acts once). "
            "Preview again to act on the jobs that match now."
        )


class ConfirmationInvalid(ValueError):
    """Not a confirmation issued for this user, action and filter (HTTP 400)."""


class SelectionTooLarge(ValueError):
    """More than BULK_MAX_JOBS jobs to act on: refused whole (HTTP 400)."""

    def __init__(self, actionable: int):
        super().__init__(
            f"{actionable} jobs match; a bulk action takes at most {BULK_MAX_JOBS}: narrow the filter "
            "(a shorter time window, a kind, an owner)."
        )
        self.actionable = actionable


# --- Selecting -----------------------------------------------------------------------------------


def _matching(user: User, bulk_filter: BulkFilter) -> QuerySet[Job]:
    """The jobs ``bulk_filter`` selects among those ``user`` may see."""
    jobs = job_visible_to(user).defer("result")
    now = timezone.now()
    if bulk_filter.states:
        jobs = jobs.filter(state__in=bulk_filter.states)
    if bulk_filter.kinds:
        jobs = jobs.filter(kind__in=bulk_filter.kinds)
    if bulk_filter.owner:
        jobs = jobs.filter(owner__username=bulk_filter.owner)
    if bulk_filter.error_class:
        jobs = jobs.filter(error_class=bulk_filter.error_class)
    if bulk_filter.created_within_minutes:
        jobs = jobs.filter(created_at__gte=now - timedelta(minutes=bulk_filter.created_within_minutes))
    if bulk_filter.finished_within_minutes:
        jobs = jobs.filter(finished_at__gte=now - timedelta(minutes=bulk_filter.finished_within_minutes))
    if bulk_filter.finished_after:
        jobs = jobs.filter(finished_at__gte=bulk_filter.finished_after)
    if bulk_filter.finished_before:
        jobs = jobs.filter(finished_at__lt=bulk_filter.finished_before)
    if bulk_filter.search:
        jobs = jobs.filter(job_search_q(bulk_filter.search))  # the job list's search
    return jobs


class _Exclusion(NamedTuple):
    reason: str
    detail: str
    jobs: Q


def _exclusions(user: User, action: BulkAction) -> list[_Exclusion]:
    """Why a matching job is left alone, in the order a job is blamed (the first that holds)."""
    rules: list[_Exclusion] = []
    if action == BulkAction.CANCEL:
        rules.append(
            _Exclusion("finished", "Already finished: nothing to cancel.", Q(state__in=FINAL_STATES))
        )
        rules.append(
            _Exclusion(
                "cancel_requested",
                "Running, and already asked to stop.",
                Q(state=JobState.RUNNING, cancel_requested_at__isnull=False),
            )
        )
    else:
        verb = "retried" if action == BulkAction.RETRY else "deleted"
        rules.append(
            _Exclusion(
                "not_finished", f"Not finished: only a finished job can be {verb}.", Q(state__in=UNFINISHED)
            )
        )
    if not has_power(user, Power.ACT_ON_ANY_JOB):
        rules.append(
            _Exclusion(
                "not_yours",
                "Another user's: acting on it takes the 'act on any job' permission.",
                ~Q(owner=user),
            )
        )
    if action == BulkAction.DELETE and not user.has_perm(DELETE_ANY_JOB):
        rules.append(
            _Exclusion(
                "no_delete_permission",
                "Another user's: deleting it takes the 'Can delete job' permission.",
                ~Q(owner=user),
            )
        )
    if action == BulkAction.RETRY:
        kinds = all_kinds()
        refused = [kind.name for kind in kinds if not may_launch(user, kind)]
        rules.append(
            _Exclusion(
                "unknown_kind",
                "Its kind is no longer registered.",
                ~Q(kind__in=[kind.name for kind in kinds]),
            )
        )
        if refused:
            rules.append(
                _Exclusion(
                    "kind_not_allowed",
                    "Retrying its kind takes a permission you do not have.",
                    Q(kind__in=refused),
                )
            )
    return rules


def _split(
    user: User, bulk_filter: BulkFilter, action: BulkAction
) -> tuple[int, QuerySet[Job], list[BulkSkip]]:
    """How many jobs match, the actionable ones, and the others counted by reason."""
    matching = _matching(user, bulk_filter)
    actionable = matching
    left_alone: list[BulkSkip] = []
    for rule in _exclusions(user, action):
        count = bounded_count(actionable.filter(rule.jobs)).rows
        if count:
            left_alone.append({"reason": rule.reason, "detail": rule.detail, "count": count})
        actionable = actionable.exclude(rule.jobs)
    return bounded_count(matching).rows, actionable, left_alone


def _oldest_first(jobs: QuerySet[Job]) -> QuerySet[Job]:
    return jobs.order_by("created_at", "id")


def _in_order(jobs: QuerySet[Job], action: BulkAction) -> QuerySet[Job]:
    """The order jobs are acted on: oldest first (retries are launched in the order the jobs
    were), but a cancel goes from the back of the line: jobs the scheduler has not admitted
    first, newest first. Cancelling an admitted job runs an admission pass, which would admit
    the next job of the selection only for it to be cancelled in turn (a pass per job: 1,000
    cancels of 10 owners' jobs took 70 s instead of 24)."""
    if action == BulkAction.CANCEL:
        return jobs.order_by(F("admitted_at").asc(nulls_first=True), "-created_at", "-id")
    return _oldest_first(jobs)


def _rate_limited_now(jobs: QuerySet[Job]) -> int:
    """Of ``jobs`` (to retry), how many their owners' launch limit would refuse right now."""
    limit = app_settings.LAUNCHES_PER_MINUTE
    wanted = Counter(jobs.order_by().values_list("owner_id", flat=True))
    recent = dict(
        Job.objects.filter(owner_id__in=wanted, created_at__gte=timezone.now() - timedelta(seconds=60))
        .values("owner_id")
        .annotate(n=Count("id"))
        .values_list("owner_id", "n")
    )
    return sum(max(0, n - max(0, limit - recent.get(owner, 0))) for owner, n in wanted.items())


def _example(job: Job) -> BulkExample:
    return {
        "id": str(job.id),
        "kind": job.kind,
        "label": job.label,
        "owner": job.owner.get_username(),
        "state": job.state,
        "created_at": job.created_at.isoformat(),
    }


# --- The confirmation ----------------------------------------------------------------------------


def _digest(values: Iterable[object]) -> str:
    return hashlib.sha256("\n".join(sorted(str(value) for value in values)).encode()).hexdigest()


def _filter_digest(bulk_filter: BulkFilter) -> str:
    return hashlib.sha256(
        json.dumps(bulk_filter.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


def _confirmation(user: User, action: BulkAction, bulk_filter: BulkFilter, ids: list[uuid.UUID]) -> str:
    """The token that confirms acting on exactly ``ids``, once."""
    signed = {
        "user": user.pk,
        "action": action.value,
        "filter": _filter_digest(bulk_filter),
        "nonce": secrets.token_urlsafe(16),
        "jobs": _digest(ids),
        "count": len(ids),
    }
    return signing.dumps(signed, salt=CONFIRMATION_SALT)


class _Confirmed(NamedTuple):
    nonce: str
    jobs: str  # the digest of the ids previewed
    previewed: int  # how many


def _confirmed(confirmation: str, *, user: User, action: BulkAction, bulk_filter: BulkFilter) -> _Confirmed:
    # Not a string (none was issued: nothing to act on), or not ASCII (signing would fail to
    # encode a lone surrogate, not refuse it).
    if not isinstance(confirmation, str) or not confirmation.isascii():
        raise ConfirmationInvalid("Not a confirmation from a preview: preview, then confirm.")
    try:
        signed: Any = signing.loads(confirmation, salt=CONFIRMATION_SALT, max_age=CONFIRMATION_MAX_AGE)
    except signing.SignatureExpired:
        raise ConfirmationExpired() from None
    except signing.BadSignature:
        raise ConfirmationInvalid("Not a confirmation from a preview: preview, then confirm.") from None
    if not isinstance(signed, dict) or signed.get("user") != user.pk:
        raise ConfirmationInvalid("Not a confirmation from your preview: preview, then confirm.")
    if signed.get("action") != action.value or signed.get("filter") != _filter_digest(bulk_filter):
        raise ConfirmationInvalid(
            "This confirmation is for another action or filter: preview this one, then confirm."
        )
    return _Confirmed(nonce=str(signed["nonce"]), jobs=str(signed["jobs"]), previewed=int(signed["count"]))


# --- The two steps -------------------------------------------------------------------------------


def bulk_preview(*, user: User, bulk_filter: BulkFilter, action: BulkAction) -> BulkPreview:
    """What applying ``action`` to the jobs ``bulk_filter`` selects would do now (reads only)."""
    action = BulkAction(action)
    matched, actionable, left_alone = _split(user, bulk_filter, action)
    ids = list(actionable.order_by().values_list("id", flat=True)[: BULK_MAX_JOBS + 1])
    over = len(ids) > BULK_MAX_JOBS
    count = max(bounded_count(actionable).rows, len(ids)) if over else len(ids)
    examples = list(_oldest_first(actionable).select_related("owner")[:EXAMPLES_SHOWN])
    rate_limited = 0
    if action == BulkAction.RETRY and not over and count:
        rate_limited = _rate_limited_now(actionable)
    return {
        "action": action.value,
        "matched": matched,
        "actionable": count,
        "not_actionable": left_alone,
        "limit": BULK_MAX_JOBS,
        "over_limit": over,
        "rate_limited_now": rate_limited,
        "examples": [_example(job) for job in examples],
        # Nothing to confirm over the limit, or with no job to act on (an apply of nothing would
        # only be an audit entry: found by review, 22 of them pushed everyone else's off the page).
        "confirmation": None if over or not ids else _confirmation(user, action, bulk_filter, ids),
    }


def bulk_apply(
    *,
    user: User,
    bulk_filter: BulkFilter,
    action: BulkAction,
    confirmation: str,
    confirmed_count: int | None = None,
) -> BulkResult:
    """Apply ``action`` to exactly the jobs previewed: the actionable jobs ``bulk_filter``
    selects (in ``_in_order``), provided they are still the very jobs ``confirmation`` (the
    preview's) was issued for. Each goes through the single-job service in its own transaction
    (one refusal skips that job only; a delete is one transaction); the action is recorded in
    ``JobBulkAction``, which spends the confirmation.

    Measured on SQLite, 1,000 jobs of 10 owners: a retry takes about 9 s, a cancel 24 s (each
    notifies its owner), a delete 0.2 s: one request, bounded by BULK_MAX_JOBS.

    Raises, before anything is done: ConfirmationInvalid (a 400) for a token not issued to this
    user for this action and filter; ConfirmationExpired (409) past CONFIRMATION_MAX_AGE;
    AlreadyApplied (409) for a token applied before (or being applied by a concurrent request);
    SelectionChanged (409) when the actionable jobs are not exactly those previewed any more, or
    not ``confirmed_count`` (optional: a check of what the user read); SelectionTooLarge when they
    are more than BULK_MAX_JOBS. Jobs that changed while the action runs (finished before their
    cancel, deleted...) and retries refused by their owner's launch limit are skipped and counted
    by reason.
    """
    action = BulkAction(action)
    confirmed = _confirmed(confirmation, user=user, action=action, bulk_filter=bulk_filter)
    # The common replay (a second click, a script run twice) told apart from a changed selection;
    # the unique nonce below refuses the race.
    if JobBulkAction.objects.filter(nonce=confirmed.nonce).exists():
        raise AlreadyApplied()
    matched, actionable, left_alone = _split(user, bulk_filter, action)
    ids = list(_in_order(actionable, action).values_list("id", flat=True)[: BULK_MAX_JOBS + 1])
    if len(ids) > BULK_MAX_JOBS:
        raise SelectionTooLarge(bounded_count(actionable).rows)
    if _digest(ids) != confirmed.jobs:
        raise SelectionChanged(actionable=len(ids), confirmed=confirmed.previewed)
    if confirmed_count is not None and confirmed_count != confirmed.previewed:
        raise SelectionChanged(actionable=len(ids), confirmed=confirmed_count)
    try:
        with transaction.atomic():  # committed before the first job is acted on: the claim
            audit = JobBulkAction.objects.create(
                user=user,
                username=user.get_username(),
                action=action.value,
                filter=bulk_filter.model_dump(mode="json"),
                matched=matched,
                confirmed=len(ids),
                nonce=confirmed.nonce,
            )
    except IntegrityError:  # the same confirmation claimed by a request that arrived at once
        raise AlreadyApplied() from None
    skipped: Counter[tuple[str, str]] = Counter(
        {(skip["reason"], skip["detail"]): skip["count"] for skip in left_alone}
    )
    if action == BulkAction.DELETE:
        done = _delete(user, ids, skipped)
    else:
        done = _one_by_one(user, action, ids, skipped)
    skips: list[BulkSkip] = [
        {"reason": reason, "detail": detail, "count": count} for (reason, detail), count in skipped.items()
    ]
    audit.acted = len(done)
    audit.skipped = {skip["reason"]: skip["count"] for skip in skips}
    audit.job_ids = [str(job_id) for job_id in done]  # at most len(ids): BULK_MAX_JOBS
    audit.save(update_fields=["acted", "skipped", "job_ids"])
    logger.info(
        "Bulk %s by %s: %d acted, %s skipped", action.value, audit.username, audit.acted, audit.skipped
    )
    return {
        "action": action.value,
        "audit_id": audit.pk,
        "matched": matched,
        "acted": len(done),
        "skipped": skips,
        "job_ids": [str(job_id) for job_id in done],
    }


GONE = ("gone", "Deleted in the meantime.")
CHANGED = ("changed", "Its state changed in the meantime.")
RATE_LIMITED = ("rate_limited", "Its owner is at their launch limit (launches per minute): retry it later.")


def _one_by_one(
    user: User, action: BulkAction, ids: list[uuid.UUID], skipped: Counter[tuple[str, str]]
) -> list[uuid.UUID]:
    """Retry or cancel each job through its service; the ids of the jobs made or acted on."""
    done: list[uuid.UUID] = []
    limited_owners: set[int] = set()
    owners = dict(Job.objects.filter(pk__in=ids).values_list("id", "owner_id"))
    for job_id in ids:
        if owners.get(job_id) in limited_owners:
            skipped[RATE_LIMITED] += 1
            continue
        try:
            if action == BulkAction.RETRY:
                done.append(job_retry(user=user, job_id=job_id).id)
            else:
                job_cancel(user=user, job_id=job_id)
                done.append(job_id)
        except Job.DoesNotExist:
            skipped[GONE] += 1
        except Conflict:
            skipped[CHANGED] += 1
        except RateLimited:
            # The owner's launches of the last minute only age out: their other jobs would be
            # refused too (and each refusal locks the owner's row).
            limited_owners.add(owners[job_id])
            skipped[RATE_LIMITED] += 1
        except KindNotAllowed as exc:
            skipped["kind_not_allowed", str(exc)] += 1
        except (InvalidParams, UnknownKind) as exc:
            skipped["invalid", f"It can no longer be launched as it was: {exc}"] += 1
    return done


@transaction.atomic
def _delete(user: User, ids: list[uuid.UUID], skipped: Counter[tuple[str, str]]) -> list[uuid.UUID]:
    """Delete the finished jobs among ``ids`` as retention does (jobs.states.jobs_delete: rows,
    logs, chunks, files once committed; open pages are told)."""
    # Checked again in the write: a job no longer finished, or no longer there, is left.
    jobs = Job.objects.filter(pk__in=ids, state__in=FINAL_STATES)
    if not (user.has_perm(DELETE_ANY_JOB) and has_power(user, Power.ACT_ON_ANY_JOB)):
        jobs = jobs.filter(owner=user)
    deleted = jobs_delete(jobs)
    if len(ids) > len(deleted):
        skipped[CHANGED] += len(ids) - len(deleted)
    return deleted


def bulk_actions_recent(*, user: User, limit: int = 20) -> list[JobBulkAction]:
    """The newest bulk actions ("Who did what"): ``user``'s own; everyone's with "view all jobs"
    (a filter and its counts tell of jobs the user may not otherwise see)."""
    entries = JobBulkAction.objects.all()
    if not has_power(user, Power.VIEW_ALL_JOBS):
        entries = entries.filter(user=user)
    return list(entries[:limit])
