"""Reads for the realtime protocol and the notifications API, scoped to the user asking."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from django.utils import timezone

from jobs.models import JobLogLine
from jobs.permissions import Power
from jobs.results import clip_text, wire_size
from jobs.selectors import (
    JOB_LIST_MAX_BYTES,
    job_list_for_user,
    job_payload_page,
    jobs_with_results_visible_to,
    log_line_batches,
    log_line_payload,
)

from . import events
from .models import Notification, NotificationPreference, NotificationState

if TYPE_CHECKING:
    from django.contrib.auth.models import User

LOG_TAIL = 200
RECENT = 20
# A catch-up is sent in pages of this many notifications (the oldest first). After a page that
# is not the last, the client asks for the next (``replay.more``, then ``resume``); SSE pages by
# itself. Any gap arrives whole, and one reply stays bounded (docs/protocol.md, *Resume*).
REPLAY_PAGE = 100
# A catch-up of more than this many notifications pops no toasts (no toast storm on reconnect).
REPLAY_TOASTS = 3
# A notification's title and body on the wire are cut to these many bytes (of JSON, counted the
# largest way it is ever sent: jobs.results.wire_size), so a replay page (100) is at most ~260 KiB
# and a snapshot's 20 leave 200 KiB for its jobs. The whole body stays in the database.
TITLE_MAX_BYTES = 512
BODY_MAX_BYTES = 2048


def notification_payload(notification: Notification) -> events.NotificationPayload:
    return {
        "id": notification.pk,
        "level": notification.level,
        "title": clip_text(notification.title, TITLE_MAX_BYTES)[0],
        "body": clip_text(notification.body, BODY_MAX_BYTES)[0],
        "link": notification.link,
        "job_id": str(notification.job_id) if notification.job_id else None,
        "created_at": notification.created_at.isoformat(),
        "read": notification.read_at is not None,
    }


def hello_for(user: User, *, powers: Iterable[Power] = ()) -> events.HelloEvent:
    """The first event of every connection (WebSocket or SSE); ``powers``: those the connection
    was granted (jobs/permissions.py), sent by codename."""
    return events.hello(
        user={
            "id": user.pk,
            "username": user.get_username(),
            "is_staff": user.is_staff,
            "powers": sorted(Power(power).codename for power in powers),
        },
        server_time=timezone.now().isoformat(),
    )


def unread_count(*, user_id: int) -> int:
    return (
        NotificationState.objects.filter(user_id=user_id).values_list("unread_count", flat=True).first() or 0
    )


def notifications_after(*, user_id: int, after_id: int, limit: int = REPLAY_PAGE) -> list[Notification]:
    """The user's notifications created after ``after_id``, oldest first."""
    return list(Notification.objects.filter(recipient_id=user_id, pk__gt=after_id).order_by("pk")[:limit])


class ReplayPage(NamedTuple):
    """One page of a catch-up: ``rows`` (at most REPLAY_PAGE, oldest first), the unread count,
    whether more notifications follow the page, and whether its rows may pop toasts (the user's
    toast preference, and only for a gap of at most REPLAY_TOASTS)."""

    rows: list[events.NotificationPayload]
    unread_count: int
    more: bool
    toast: bool


def replay_after(
    *, user_id: int, after_id: int, limit: int = REPLAY_PAGE, first_page: bool = True
) -> ReplayPage:
    """The page of notifications after ``after_id`` that a resume replays (three queries).
    ``first_page``: whether the catch-up starts with this page; a later page is never toasted,
    however short (the gap was more than a page)."""
    found = notifications_after(user_id=user_id, after_id=after_id, limit=limit + 1)
    more = len(found) > limit
    rows = [notification_payload(n) for n in found[:limit]]
    wants_toasts = (
        NotificationPreference.objects.filter(user_id=user_id).values_list("toast", flat=True).first()
    )
    toast = wants_toasts is not False and first_page and not more and len(rows) <= REPLAY_TOASTS
    return ReplayPage(rows, unread_count(user_id=user_id), more, toast)


def notifications_page(
    *, user_id: int, before_id: int | None = None, unread_only: bool = False, limit: int = 50
) -> list[Notification]:
    """Newest first, for the notification centre and the API."""
    rows = Notification.objects.filter(recipient_id=user_id)
    if before_id is not None:
        rows = rows.filter(pk__lt=before_id)
    if unread_only:
        rows = rows.filter(read_at__isnull=True)
    return list(rows.order_by("-pk")[:limit])


def snapshot_for_user(*, user: User, replayed_up_to: int | None = None) -> events.SnapshotEvent:
    """Jobs, the unread count and, for a fresh client, the most recent notifications.

    After a resume the notifications were just replayed one by one (up to ``replayed_up_to``),
    so the snapshot carries none. ``last_notification_id`` is exactly what this connection has
    been sent, never a separate read: a notification committed meanwhile arrives live instead.
    """
    if replayed_up_to is None:
        recent = list(reversed(notifications_page(user_id=user.pk, limit=RECENT)))
        last = recent[-1].pk if recent else 0
    else:
        recent, last = [], replayed_up_to
    notifications = [notification_payload(n) for n in recent]
    # The whole snapshot stays within JOB_LIST_MAX_BYTES (256 KiB): the jobs get what the
    # notifications leave (they are 20 at most, usually a few KiB), less the envelope.
    jobs, _ = job_payload_page(
        job_list_for_user(user=user),
        max_bytes=JOB_LIST_MAX_BYTES - wire_size(notifications) - 1024,
        viewer=user,
    )
    return events.snapshot(
        jobs=jobs,
        unread_count=unread_count(user_id=user.pk),
        notifications=notifications,
        last_notification_id=last,
    )


def log_tail_for_watcher(*, user: User, job_id: str) -> list[list[events.LogLinePayload]] | None:
    """The newest LOG_TAIL log lines of a job ``user`` may watch (its owner, or the "view all
    results" power: a log may hold the job's data), oldest first,
    in batches of one ``job.log`` event each (at most 16 KiB); None if they may not watch it."""
    if not jobs_with_results_visible_to(user).filter(pk=job_id).exists():
        return None
    lines = JobLogLine.objects.filter(job_id=job_id).order_by("-seq")[:LOG_TAIL]
    return log_line_batches([log_line_payload(line) for line in reversed(lines)])
