"""Notifying many users at once (announcements): correct counts, preferences, and a query count
that does not grow with the number of recipients (a broadcast to 1,000 users is one of the
benchmarked scenarios, bench/fanout.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications import inbox
from notifications.models import (
    Notification,
    NotificationPreference,
    NotificationState,
    PushSubscription,
    SocketConnection,
)

pytestmark = pytest.mark.django_db


def _subscribe(user):
    return PushSubscription.objects.create(
        user=user, endpoint=f"https://push.example.com/{user.pk}", p256dh="k", auth="a"
    )


def test_a_broadcast_counts_each_recipient_once_per_notification_and_respects_preferences(make_user):
    fresh, busy, opted_out = make_user(), make_user(), make_user()
    inbox.notify(recipient_id=busy.pk, title="earlier")
    NotificationPreference.objects.create(user=opted_out, announcements=False)

    sent = inbox.notify_many(recipient_ids=[fresh.pk, busy.pk, busy.pk, opted_out.pk], title="Maintenance")

    assert sent == 3
    counts = dict(NotificationState.objects.values_list("user_id", "unread_count"))
    assert counts[fresh.pk] == 1
    assert counts[busy.pk] == 3
    assert counts.get(opted_out.pk, 0) == 0
    assert not Notification.objects.filter(recipient=opted_out).exists()


def test_browser_push_goes_only_to_subscribed_users_with_no_open_socket(
    make_user, monkeypatch, django_capture_on_commit_callbacks
):
    online, away, unsubscribed, push_off = (make_user() for _ in range(4))
    for user in (online, away, push_off):
        _subscribe(user)
    NotificationPreference.objects.create(user=push_off, browser_push=False)
    SocketConnection.objects.create(
        channel_name="specific.test!1", user=online, session_key="s", seen_at=timezone.now()
    )
    queued: list[int] = []
    from notifications import tasks

    monkeypatch.setattr(tasks.send_web_push, "delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        inbox.notify_many(recipient_ids=[u.pk for u in (online, away, unsubscribed, push_off)], title="Hi")

    assert queued == [Notification.objects.get(recipient=away).pk]


def _broadcast_queries(users, capture_on_commit) -> int:
    """Queries of a broadcast, including the browser-push check that runs after commit."""
    with CaptureQueriesContext(connection) as queries, capture_on_commit(execute=True):
        inbox.notify_many(recipient_ids=[u.pk for u in users], title="Announcement")
    return len(queries)


def test_a_broadcast_to_twenty_times_more_users_costs_no_query_per_user(
    make_user, monkeypatch, django_capture_on_commit_callbacks
):
    from notifications import tasks

    monkeypatch.setattr(tasks.send_web_push, "delay", lambda *_: None)
    few = [make_user() for _ in range(10)]
    many = [make_user() for _ in range(200)]
    for user in few[:3] + many[:3]:
        _subscribe(user)

    small = _broadcast_queries(few, django_capture_on_commit_callbacks)
    large = _broadcast_queries(many, django_capture_on_commit_callbacks)

    # Only the database's bulk-insert batching may add a query or two (SQLite caps the number of
    # parameters per statement); one query per user would add at least 190.
    assert small <= 12
    assert large - small <= 3
