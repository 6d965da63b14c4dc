"""Notifications: persisted first, pushed after commit; the unread count is a maintained counter."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from . import events
from .models import (
    Level,
    Notification,
    NotificationPreference,
    NotificationState,
    PushSubscription,
    SocketConnection,
)
from .push import close_sockets as push_close
from .push import push_event
from .selectors import notification_payload

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# A socket row not refreshed for this long belongs to a web process that died.
SOCKET_FRESH_FOR = timedelta(seconds=90)
# Which preference switches an event of each topic.
TOPICS = {"job.succeeded": "job_succeeded", "job.failed": "job_failed", "job.cancelled": "job_cancelled",
          "announcement": "announcements"}  # fmt: skip


def preference_get(*, user_id: int) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.get_or_create(user_id=user_id)
    return preference


@transaction.atomic
def preference_update(*, user_id: int, **fields: bool) -> NotificationPreference:
    allowed = {f.name for f in NotificationPreference._meta.fields} - {"user"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"Unknown preference(s): {', '.join(sorted(unknown))}")
    preference = preference_get(user_id=user_id)
    for name, value in fields.items():
        setattr(preference, name, bool(value))
    preference.save()
    return preference


_PREFERENCE_FIELDS = [f.attname for f in NotificationPreference._meta.concrete_fields]


def _wants(user_id: int, topic: str | None) -> tuple[NotificationPreference, bool] | None:
    """The user's preferences and whether they have any browser push subscription (one query, as
    this runs for every finished job), or None if they turned this topic off."""
    row = (
        get_user_model()
        .objects.filter(pk=user_id)
        .annotate(_subscribed=Exists(PushSubscription.objects.filter(user_id=OuterRef("pk"))))
        .values_list(*[f"notification_preference__{name}" for name in _PREFERENCE_FIELDS], "_subscribed")
        .first()
    )
    if row is None or row[0] is None:
        preference = NotificationPreference(user_id=user_id)  # the defaults: everything on
    else:
        preference = NotificationPreference(**dict(zip(_PREFERENCE_FIELDS, row, strict=False)))
    if topic is not None and not getattr(preference, TOPICS[topic], True):
        return None
    return preference, bool(row and row[-1])


def _bump_unread(user_ids: Sequence[int]) -> dict[int, int]:
    """Add one unread to each user (a user may appear several times); returns the new counts.

    One UPDATE per distinct increment (almost always one), not one per user: a broadcast to
    thousands of users would otherwise spend most of its time here.
    """
    NotificationState.objects.bulk_create(
        [NotificationState(user_id=uid) for uid in set(user_ids)], ignore_conflicts=True
    )
    by_user: dict[int, int] = {}
    for uid in user_ids:
        by_user[uid] = by_user.get(uid, 0) + 1
    by_increment: dict[int, list[int]] = {}
    for uid, n in by_user.items():
        by_increment.setdefault(n, []).append(uid)
    for n, uids in by_increment.items():
        NotificationState.objects.filter(user_id__in=uids).update(unread_count=F("unread_count") + n)
    return dict(NotificationState.objects.filter(user_id__in=by_user).values_list("user_id", "unread_count"))


def _bump_unread_one(user_id: int) -> int:
    """Add one unread to one user and return the new count in one statement (an upsert with
    RETURNING, on PostgreSQL and SQLite >= 3.35) instead of insert-if-missing, update and read."""
    upsert_returning = connection.features.can_return_columns_from_insert
    if connection.vendor not in {"postgresql", "sqlite"} or not upsert_returning:
        return _bump_unread([user_id])[user_id]
    quote = connection.ops.quote_name
    table = quote(NotificationState._meta.db_table)
    user = quote(NotificationState._meta.get_field("user").column)
    count = quote(NotificationState._meta.get_field("unread_count").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({user}, {count}) VALUES (%s, 1) ON CONFLICT ({user}) "
            f"DO UPDATE SET {count} = {table}.{count} + 1 RETURNING {count}",
            [user_id],
        )
        return cursor.fetchone()[0]


def _push_new(notification: Notification, unread_count: int, preference: NotificationPreference) -> None:
    push_event(
        group=events.user_group(notification.recipient_id),
        event=events.notification_new(
            notification=notification_payload(notification), unread_count=unread_count, toast=preference.toast
        ),
        notification_id=notification.pk,
    )


def _web_push_after_commit(pairs: list[tuple[int, int]]) -> None:
    """Once the notifications ``(id, recipient id)`` commit, queue browser pushes for them."""
    if pairs:
        transaction.on_commit(lambda: _maybe_web_push(pairs))


def _maybe_web_push(pairs: list[tuple[int, int]]) -> None:
    """Browser push only reaches users with no open socket (they already saw the toast).

    Two queries for the whole batch, whatever its size.
    """
    user_ids = {uid for _, uid in pairs}
    subscribed = set(
        PushSubscription.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True).distinct()
    )
    if not subscribed:
        return
    online = set(
        SocketConnection.objects.filter(
            user_id__in=subscribed, seen_at__gte=timezone.now() - SOCKET_FRESH_FOR
        )
        .values_list("user_id", flat=True)
        .distinct()
    )
    from .tasks import send_web_push

    for notification_id, uid in pairs:
        if uid in subscribed and uid not in online:
            try:
                send_web_push.delay(notification_id)
            except Exception:
                logger.warning(
                    "Could not queue the browser push for notification %s", notification_id, exc_info=True
                )


# No savepoint when called inside a transaction (a job's final transition): an error here fails
# the caller's transaction anyway, and a savepoint costs two more statements per finished job.
@transaction.atomic(savepoint=False)
def notify(
    *,
    recipient_id: int,
    title: str,
    body: str = "",
    level: str = Level.INFO,
    link: str = "",
    job_id: Any = None,
    topic: str | None = None,
) -> Notification | None:
    """Notify one user; returns None when their preferences turn this topic off."""
    wanted = _wants(recipient_id, topic)
    if wanted is None:
        return None
    preference, subscribed = wanted
    notification = Notification.objects.create(
        recipient_id=recipient_id, title=title[:200], body=body, level=level, link=link[:500], job_id=job_id
    )
    _push_new(notification, _bump_unread_one(recipient_id), preference)
    if preference.browser_push and subscribed:
        _web_push_after_commit([(notification.pk, recipient_id)])
    return notification


def notify_many(
    *, recipient_ids: Iterable[int], title: str, body: str = "", level: str = Level.INFO, link: str = "",
    topic: str | None = "announcement",
) -> int:  # fmt: skip
    """Notify many users in batches (one INSERT per batch); returns how many were notified."""
    count = 0
    batch: list[int] = []
    for recipient_id in recipient_ids:
        batch.append(recipient_id)
        if len(batch) >= BATCH_SIZE:
            count += _notify_batch(batch, title=title, body=body, level=level, link=link, topic=topic)
            batch = []
    if batch:
        count += _notify_batch(batch, title=title, body=body, level=level, link=link, topic=topic)
    return count


@transaction.atomic
def _notify_batch(
    recipient_ids: list[int], *, title: str, body: str, level: str, link: str, topic: str | None
) -> int:
    preferences = {p.user_id: p for p in NotificationPreference.objects.filter(user_id__in=recipient_ids)}
    field = TOPICS.get(topic or "")
    wanted = [rid for rid in recipient_ids if field is None or getattr(preferences.get(rid), field, True)]
    created = Notification.objects.bulk_create(
        [
            Notification(recipient_id=rid, title=title[:200], body=body, level=level, link=link[:500])
            for rid in wanted
        ]
    )
    counts = _bump_unread(wanted)
    default = NotificationPreference()
    web_push: list[tuple[int, int]] = []
    for notification in created:
        preference = preferences.get(notification.recipient_id, default)
        _push_new(notification, counts[notification.recipient_id], preference)
        if preference.browser_push:
            web_push.append((notification.pk, notification.recipient_id))
    _web_push_after_commit(web_push)
    return len(created)


@transaction.atomic
def notification_mark_read(*, user_id: int, ids: Sequence[int]) -> tuple[list[int], int]:
    """Mark the user's own notifications read; every tab hears which ids and the new count."""
    ids = [int(i) for i in ids][:1000]
    marked = list(
        Notification.objects.filter(recipient_id=user_id, pk__in=ids, read_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if marked:
        Notification.objects.filter(pk__in=marked).update(read_at=timezone.now())
    return marked, _after_read(user_id, marked)


@transaction.atomic
def notification_mark_all_read(*, user_id: int) -> tuple[list[int], int]:
    unread = Notification.objects.filter(recipient_id=user_id, read_at__isnull=True)
    marked = list(unread.order_by("pk").values_list("pk", flat=True))
    unread.update(read_at=timezone.now())
    return marked, _after_read(user_id, marked, reset=True)


def _after_read(user_id: int, marked: list[int], *, reset: bool = False) -> int:
    NotificationState.objects.get_or_create(user_id=user_id)
    state = NotificationState.objects.select_for_update().get(user_id=user_id)
    state.unread_count = 0 if reset else max(0, state.unread_count - len(marked))
    state.save(update_fields=["unread_count"])
    if marked or reset:
        push_event(
            group=events.user_group(user_id),
            event=events.notification_read(ids=marked, unread_count=state.unread_count),
        )
    return state.unread_count


# --- Open sockets ------------------------------------------------------------------------------

MAX_SOCKETS_PER_USER = 20


@transaction.atomic
def socket_open(*, channel_name: str, user_id: int, session_key: str) -> list[str]:
    """Record an open socket; beyond MAX_SOCKETS_PER_USER the user's oldest ones are closed.

    Every connect runs this, so it is one upsert, one read of the user's rows and, only when
    some must go, one delete (it was eight statements with savepoints)."""
    now = timezone.now()
    SocketConnection.objects.bulk_create(
        [SocketConnection(channel_name=channel_name, user_id=user_id, session_key=session_key, seen_at=now)],
        update_conflicts=True,
        unique_fields=["channel_name"],
        update_fields=["user_id", "session_key", "seen_at"],
    )
    rows = list(
        SocketConnection.objects.filter(user_id=user_id).values_list("channel_name", "opened_at", "seen_at")
    )
    fresh_since = now - SOCKET_FRESH_FOR
    fresh = sorted(((opened, name) for name, opened, seen in rows if seen >= fresh_since), reverse=True)
    oldest = [name for _, name in fresh[MAX_SOCKETS_PER_USER:]]
    # Rows of web processes that died without saying goodbye go too.
    gone = oldest + [name for name, _, seen in rows if seen < fresh_since]
    if gone:
        SocketConnection.objects.filter(channel_name__in=gone).delete()
    if oldest:
        push_close(channel_names=oldest, code=events.CLOSE_REPLACED)
    return oldest


def socket_seen(*, channel_name: str | Sequence[str]) -> None:
    """Refresh the presence row of one socket, or of many at once (the heartbeat's batch)."""
    names = [channel_name] if isinstance(channel_name, str) else list(channel_name)
    now = timezone.now()
    for start in range(0, len(names), BATCH_SIZE):
        batch = names[start : start + BATCH_SIZE]
        SocketConnection.objects.filter(channel_name__in=batch).update(seen_at=now)


def socket_closed(*, channel_name: str) -> None:
    SocketConnection.objects.filter(channel_name=channel_name).delete()


@transaction.atomic
def sockets_close_for_session(*, session_key: str) -> int:
    """Logging out closes that session's sockets (in every web process)."""
    if not session_key:
        return 0
    rows = SocketConnection.objects.filter(session_key=session_key)
    names = list(rows.values_list("channel_name", flat=True))
    rows.delete()
    push_close(channel_names=names, code=events.CLOSE_NOT_AUTHENTICATED)
    return len(names)


@transaction.atomic
def sockets_close_for_user(*, user_id: int) -> int:
    """A deactivated user loses every socket."""
    rows = SocketConnection.objects.filter(user_id=user_id)
    names = list(rows.values_list("channel_name", flat=True))
    rows.delete()
    push_close(channel_names=names, code=events.CLOSE_FORBIDDEN)
    return len(names)
