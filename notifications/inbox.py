"""The inbox: notifications persisted first, pushed after commit; the unread count is a maintained
counter; the user's preferences; and, after commit, the browser push for users with no open
socket or stream. The only notifications module besides ``realtime.presence`` that pushes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Exists, F, Field, Max, OuterRef, QuerySet
from django.utils import timezone

from . import events, tasks
from .models import (
    Level,
    Notification,
    NotificationPreference,
    NotificationState,
    PushSubscription,
)
from .push import push_event
from .realtime.presence import online_user_ids
from .selectors import notification_payload

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# Which preference switches an event of each topic.
TOPICS = {"job.succeeded": "job_succeeded", "job.failed": "job_failed", "job.cancelled": "job_cancelled",
          "job.attempt_failed": "job_attempt_failed", "announcement": "announcements"}  # fmt: skip


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


# --- The unread count ----------------------------------------------------------------------------
# NotificationState.unread_count equals the user's unread rows after every transaction, whatever runs
# at the same time and whichever entry point it came through. Every write that changes a user's
# unread rows goes through this module and keeps one rule: it locks that user's counter row (an
# upsert, so the row exists; the lock lasts until the commit) before it changes any row, and moves
# the counter by the rows it really changed (the rows it inserts, the ids its UPDATE returns), or
# sets it from a recount under that lock. So the writers of one user run one after another, each
# seeing what the previous one committed; the count an event carries is the count at its commit;
# and a user's notifications get their ids in commit order, so after "mark all read" every one of
# theirs up to the highest id it saw is read. Several users' counters are locked in user id order,
# so two writers never deadlock. (SQLite runs one writer at a time, BEGIN IMMEDIATE, so it gets the
# same order for free.) No service makes a read row unread again. A write around these services
# (raw SQL, the ORM in a shell) breaks the count until the user's next mark-all-read or delete,
# which recount.


def _returning() -> bool:
    """Whether the database has upserts and UPDATE ... RETURNING (PostgreSQL, SQLite >= 3.35)."""
    return (
        connection.vendor in {"postgresql", "sqlite"} and connection.features.can_return_columns_from_insert
    )


def _column(field: Field[Any, Any]) -> str:
    """A concrete field's column (django-stubs types ``column`` as optional: not every field has one)."""
    assert field.column is not None
    return field.column


def _state_sql() -> tuple[str, str, str]:
    quote = connection.ops.quote_name
    return (
        quote(NotificationState._meta.db_table),
        quote(_column(NotificationState._meta.get_field("user"))),
        quote(_column(NotificationState._meta.get_field("unread_count"))),
    )


def _lock_counters(user_ids: Iterable[int]) -> dict[int, int]:
    """Lock the counter rows of ``user_ids`` (creating the missing ones) until the transaction
    ends, in user id order; returns their counts."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    NotificationState.objects.bulk_create(
        [NotificationState(user_id=uid) for uid in ids], ignore_conflicts=True
    )
    return dict(
        NotificationState.objects.select_for_update()
        .filter(user_id__in=ids)
        .order_by("user_id")
        .values_list("user_id", "unread_count")
    )


def _lock_counter(user_id: int) -> int:
    """Lock one user's counter row (creating it) and return its count: one upsert, whose row lock
    lasts until the transaction ends, where the database has them."""
    found = _upsert_counter(user_id, add=0)
    return _lock_counters([user_id])[user_id] if found is None else found


def _upsert_counter(user_id: int, *, add: int) -> int | None:
    """Add ``add`` to one user's counter (creating it) and return the new count in one statement
    (an upsert with RETURNING, which also takes the row's lock); None where the database cannot."""
    if not _returning():
        return None
    table, user, count = _state_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({user}, {count}) VALUES (%s, %s) ON CONFLICT ({user}) "
            f"DO UPDATE SET {count} = {table}.{count} + %s RETURNING {count}",
            [user_id, add, add],
        )
        return cursor.fetchone()[0]


def _bump_unread(user_ids: Sequence[int]) -> dict[int, int]:
    """Add one unread to each user (a user may appear several times); returns the new counts.

    The counters are locked first (in user id order: two broadcasts never deadlock), then one
    UPDATE per distinct increment (almost always one), not one per user: a broadcast to
    thousands of users would otherwise spend most of its time here.
    """
    by_user = Counter(user_ids)
    counts = _lock_counters(by_user)
    by_increment: dict[int, list[int]] = {}
    for uid, n in by_user.items():
        by_increment.setdefault(n, []).append(uid)
    for n, uids in by_increment.items():
        NotificationState.objects.filter(user_id__in=uids).update(unread_count=F("unread_count") + n)
    return {uid: counts[uid] + n for uid, n in by_user.items()}


def _bump_unread_one(user_id: int) -> int:
    """Add one unread to one user and return the new count in one statement instead of
    insert-if-missing, update and read: notify() runs for every finished job."""
    found = _upsert_counter(user_id, add=1)
    return _bump_unread([user_id])[user_id] if found is None else found


def _recount(user_ids: Iterable[int]) -> dict[int, int]:
    """Set the counters of ``user_ids`` (locked by the caller) from their unread rows (a partial
    index holds exactly those); returns the counts."""
    ids = sorted(set(user_ids))
    counts = dict.fromkeys(ids, 0)
    counts.update(
        Notification.objects.filter(recipient_id__in=ids, read_at__isnull=True)
        .order_by()
        .values_list("recipient_id")
        .annotate(n=Count("pk"))
    )
    by_value: dict[int, list[int]] = {}
    for uid, n in counts.items():
        by_value.setdefault(n, []).append(uid)
    for n, uids in by_value.items():
        NotificationState.objects.filter(user_id__in=uids).update(unread_count=n)
    return counts


def _push_count(
    user_id: int, unread_count: int, *, ids: list[int] | None = None, up_to: int | None = None
) -> None:
    """Tell every tab of the user what is now read and the count (exact at this commit)."""
    push_event(
        group=events.user_group(user_id),
        event=events.notification_read(ids=ids or [], unread_count=unread_count, up_to=up_to),
    )


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
    online = online_user_ids(user_ids=subscribed)
    for notification_id, uid in pairs:
        if uid in subscribed and uid not in online:
            try:
                tasks.send_web_push.delay(notification_id)
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
    # The counter first: its lock is then held while the row gets its id (see "The unread count").
    unread = _bump_unread_one(recipient_id)
    notification = Notification.objects.create(
        recipient_id=recipient_id, title=title[:200], body=body, level=level, link=link[:500], job_id=job_id
    )
    _push_new(notification, unread, preference)
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
    counts = _bump_unread(wanted)  # the counters first, as in notify()
    created = Notification.objects.bulk_create(
        [
            Notification(recipient_id=rid, title=title[:200], body=body, level=level, link=link[:500])
            for rid in wanted
        ]
    )
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
    wanted = list(dict.fromkeys(int(i) for i in ids))[:1000]
    unread = _lock_counter(user_id)
    marked = _mark_read(user_id, wanted) if wanted else []
    if not marked:
        return [], unread
    if unread < len(marked):  # only a write that went around these services can cause this
        logger.warning(
            "Unread count of user %s was %s below its rows; recounted", user_id, len(marked) - unread
        )
        unread = _recount([user_id])[user_id]
    else:
        unread -= len(marked)
        NotificationState.objects.filter(user_id=user_id).update(unread_count=unread)
    _push_count(user_id, unread, ids=marked)
    return marked, unread


def _mark_read(user_id: int, ids: list[int]) -> list[int]:
    """Mark read those of ``ids`` that are the user's and unread; returns the ids this UPDATE
    changed (RETURNING), so two tabs marking the same ids at once count each of them once."""
    now = timezone.now()
    if not _returning():
        # Under the counter's lock no service changes these rows between the two statements.
        unread = Notification.objects.filter(recipient_id=user_id, pk__in=ids, read_at__isnull=True)
        marked = sorted(unread.values_list("pk", flat=True))
        Notification.objects.filter(pk__in=marked).update(read_at=now)
        return marked
    quote = connection.ops.quote_name
    meta = Notification._meta
    table, pk = quote(meta.db_table), quote(_column(meta.pk))
    read_at = quote(_column(meta.get_field("read_at")))
    recipient = quote(_column(meta.get_field("recipient")))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {read_at} = %s WHERE {recipient} = %s AND {read_at} IS NULL "
            f"AND {pk} IN ({', '.join(['%s'] * len(ids))}) RETURNING {pk}",
            [connection.ops.adapt_datetimefield_value(now), user_id, *ids],
        )
        return sorted(row[0] for row in cursor.fetchall())


@transaction.atomic
def notification_mark_all_read(*, user_id: int) -> tuple[int, int]:
    """Mark all the user's notifications read; returns ``(up_to, unread count)``: every one of
    theirs with an id up to ``up_to`` is read. Every tab hears that in one small event, however
    many were marked."""
    _lock_counter(user_id)
    up_to = Notification.objects.filter(recipient_id=user_id).aggregate(top=Max("pk"))["top"] or 0
    Notification.objects.filter(recipient_id=user_id, read_at__isnull=True, pk__lte=up_to).update(
        read_at=timezone.now()
    )
    # Under the lock no service can have committed an unread row above up_to, so this is 0; a
    # recount rather than a 0 puts right a count that a write around the services made wrong.
    unread = _recount([user_id])[user_id]
    _push_count(user_id, unread, up_to=up_to)
    return up_to, unread


@transaction.atomic
def notifications_delete(*, queryset: QuerySet[Notification]) -> int:
    """Delete notifications (the admin's delete and bulk delete, an operator's script) keeping
    every recipient's unread count exact; their open tabs hear the new count. Returns how many
    were deleted."""
    user_ids = set(queryset.order_by().values_list("recipient_id", flat=True).distinct())
    if not user_ids:
        return 0
    before = _lock_counters(user_ids)
    # Only rows of the users whose counters are locked (a row of another user created meanwhile
    # that matches a filter waits for the next delete).
    deleted, _ = queryset.filter(recipient_id__in=user_ids).delete()
    for uid, unread in _recount(user_ids).items():
        if unread != before[uid]:
            _push_count(uid, unread)
    return deleted


def notifications_purge_read(*, created_before: datetime) -> int:
    """Retention: delete the read notifications created before ``created_before``.

    Only read rows go and no service makes a read row unread again, so no count changes and no
    counter is locked (a purge of months of history must not hold up every finishing job). It
    is one DELETE whose condition the database checks on each row as it deletes it, never a
    list of ids read earlier (tests/notifications/test_unread_count.py holds this)."""
    deleted, _ = Notification.objects.filter(read_at__isnull=False, created_at__lt=created_before).delete()
    return deleted


# What the admin may change on a notification: its wording. Who has it and whether they read it
# are the inbox's own state, which the unread count follows.
NOTIFICATION_EDITABLE_FIELDS = ("level", "title", "body", "link")


def notification_edit(*, notification_id: int, **fields: str) -> int:
    """Reword a notification (the admin); returns 1 if it still exists."""
    unknown = set(fields) - set(NOTIFICATION_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    if not fields:
        return int(Notification.objects.filter(pk=notification_id).exists())
    return Notification.objects.filter(pk=notification_id).update(**fields)
