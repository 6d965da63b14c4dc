"""Reads for the realtime protocol and the notifications API, scoped to the user asking."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from jobs.models import JobLogLine
from jobs.selectors import job_list_for_user, job_payload, job_visible_to

from . import events
from .models import Notification, NotificationState

LOG_TAIL = 200
RECENT = 20
# A resume replays at most this many notifications (the oldest first); anything beyond stays in
# the notification list and arrives on the client's next resume from where this one stopped.
MAX_REPLAY = 1000


def notification_payload(notification: Notification) -> events.NotificationPayload:
    return {
        "id": notification.pk,
        "level": notification.level,
        "title": notification.title,
        "body": notification.body,
        "link": notification.link,
        "job_id": str(notification.job_id) if notification.job_id else None,
        "created_at": notification.created_at.isoformat(),
        "read": notification.read_at is not None,
    }


def hello_for(user: AbstractBaseUser) -> events.HelloEvent:
    """The first event of every connection (WebSocket or SSE)."""
    return events.hello(
        user={"id": user.pk, "username": user.get_username(), "is_staff": user.is_staff},
        server_time=timezone.now().isoformat(),
    )


def unread_count(*, user_id: int) -> int:
    return (
        NotificationState.objects.filter(user_id=user_id).values_list("unread_count", flat=True).first() or 0
    )


def notifications_after(*, user_id: int, after_id: int, limit: int = MAX_REPLAY) -> list[Notification]:
    """The user's notifications created after ``after_id``, oldest first."""
    return list(Notification.objects.filter(recipient_id=user_id, pk__gt=after_id).order_by("pk")[:limit])


def replay_after(*, user_id: int, after_id: int) -> tuple[list[events.NotificationPayload], int]:
    """What a resume replays: the notifications after ``after_id`` and the current unread count."""
    rows = notifications_after(user_id=user_id, after_id=after_id)
    return [notification_payload(n) for n in rows], unread_count(user_id=user_id)


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


def snapshot_for_user(*, user: AbstractBaseUser, replayed_up_to: int | None = None) -> events.SnapshotEvent:
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
    return events.snapshot(
        jobs=[job_payload(job) for job in job_list_for_user(user=user)],
        unread_count=unread_count(user_id=user.pk),
        notifications=[notification_payload(n) for n in recent],
        last_notification_id=last,
    )


def log_tail_for_watcher(*, user: AbstractBaseUser, job_id: str) -> list[events.LogLinePayload] | None:
    """The newest log lines of a job ``user`` may watch (owner or staff), or None if they may not."""
    if not job_visible_to(user).filter(pk=job_id).exists():
        return None
    lines = JobLogLine.objects.filter(job_id=job_id).order_by("-seq")[:LOG_TAIL]
    return [{"seq": line.seq, "text": line.text} for line in reversed(lines)]
