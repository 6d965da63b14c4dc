"""The unread count is exact, always: after any sequence of operations, concurrent or not, through
any entry point (API, socket services, the admin, retention, user deletion), the counter equals the
user's unread rows, and every event carrying a count carries one that was exact when it was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from jobs.conf import app_settings
from jobs.housekeeping import retention_apply
from notifications import events, inbox, push
from notifications.models import Notification, NotificationState


class Recorder:
    """Stands in for the per-process publisher: records every event that would reach Redis."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def get(self) -> Recorder:
        return self

    def submit(self, target: str, message: dict, direct: bool = False) -> None:
        with self._lock:
            self.sent.append((target, json.loads(message["text"])))

    def counted(self) -> list[tuple[int, dict]]:
        """``(user id, event)`` for every event that carries an unread count."""
        return [
            (int(group.split(".", 1)[1]), event)
            for group, event in self.sent
            if group.startswith("user.") and "unread_count" in event
        ]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(push, "_publisher", recorder)
    return recorder


def stored_count(user_id: int) -> int:
    return (
        NotificationState.objects.filter(user_id=user_id).values_list("unread_count", flat=True).first() or 0
    )


def unread_rows(user_id: int) -> int:
    return Notification.objects.filter(recipient_id=user_id, read_at__isnull=True).count()


def assert_exact(*user_ids: int) -> None:
    for user_id in user_ids:
        assert (stored_count(user_id), user_id) == (unread_rows(user_id), user_id), "stored != unread rows"


def notify_n(user, n: int) -> list[int]:
    return [inbox.notify(recipient_id=user.pk, title=f"n{i}").pk for i in range(n)]


# --- The admin -----------------------------------------------------------------------------------


@pytest.fixture
def admin_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


CHANGELIST = "/admin/notifications/notification/"


@pytest.mark.django_db
def test_deleting_unread_notifications_with_the_admins_bulk_action_keeps_the_count_exact(
    admin_client, make_user, published, django_capture_on_commit_callbacks
):
    user, other = make_user(), make_user()
    ids = notify_n(user, 5)
    others = notify_n(other, 2)
    inbox.notification_mark_read(user_id=user.pk, ids=ids[:1])  # one read, four unread

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST,
            {
                "action": "delete_selected",
                "_selected_action": [ids[0], ids[1], ids[2], others[0]],
                "post": "yes",
            },
        )

    assert response.status_code == 302, response.content[:500]
    assert sorted(Notification.objects.values_list("pk", flat=True)) == sorted([ids[3], ids[4], others[1]])
    assert (stored_count(user.pk), stored_count(other.pk)) == (2, 1)
    assert_exact(user.pk, other.pk)
    # Their open tabs hear the new count at once.
    last = {uid: event["unread_count"] for uid, event in published.counted()}
    assert last[user.pk] == 2 and last[other.pk] == 1


@pytest.mark.django_db
def test_deleting_one_unread_notification_on_its_admin_page_keeps_the_count_exact(admin_client, make_user):
    user = make_user()
    ids = notify_n(user, 5)

    response = admin_client.post(f"{CHANGELIST}{ids[2]}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert stored_count(user.pk) == 4
    assert_exact(user.pk)


@pytest.mark.django_db
def test_editing_a_notification_in_the_admin_cannot_change_who_has_it_unread(admin_client, make_user):
    user, other = make_user(), make_user()
    (first, second) = notify_n(user, 2)
    inbox.notification_mark_read(user_id=user.pk, ids=[first])
    form = admin_client.get(f"{CHANGELIST}{second}/change/").content.decode()
    # Unread state and recipient are the inbox's (its services'), not free admin fields.
    assert 'name="read_at' not in form and 'name="recipient"' not in form

    response = admin_client.post(
        f"{CHANGELIST}{second}/change/",
        {"title": "Renamed", "body": "", "level": "info", "link": "", "recipient": other.pk,
         "read_at_0": "2020-01-01", "read_at_1": "00:00:00"},
    )  # fmt: skip

    assert response.status_code == 302, response.content[:2000]
    note = Notification.objects.get(pk=second)
    assert (note.title, note.recipient_id, note.read_at) == ("Renamed", user.pk, None)
    assert_exact(user.pk, other.pk)


@pytest.mark.django_db
def test_a_notification_added_in_the_admin_is_counted_and_pushed(
    admin_client, make_user, published, django_capture_on_commit_callbacks
):
    user = make_user()
    notify_n(user, 1)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"{CHANGELIST}add/",
            {"recipient": user.pk, "title": "Hello", "body": "", "level": "info", "link": ""},
        )

    assert response.status_code == 302, response.content[:2000]
    assert stored_count(user.pk) == 2
    assert_exact(user.pk)
    new = [e for _, e in published.counted() if e["type"] == "notification.new"]
    assert new[-1]["notification"]["title"] == "Hello" and new[-1]["unread_count"] == 2


# --- Retention and user deletion -----------------------------------------------------------------


@pytest.mark.django_db
def test_retention_removes_only_old_read_notifications_and_the_count_stays_exact(make_user):
    user = make_user()
    ids = notify_n(user, 6)
    inbox.notification_mark_read(user_id=user.pk, ids=ids[:3])
    old = timezone.now() - timedelta(days=app_settings.NOTIFICATION_RETENTION_DAYS + 1)
    Notification.objects.filter(pk__in=[ids[0], ids[1], ids[3], ids[4]]).update(created_at=old)

    removed = retention_apply()

    assert removed["notifications"] == 2
    assert sorted(Notification.objects.values_list("pk", flat=True)) == [ids[2], ids[3], ids[4], ids[5]]
    assert stored_count(user.pk) == 3
    assert_exact(user.pk)


@pytest.mark.django_db
def test_the_retention_purge_rechecks_read_at_in_the_one_statement_that_deletes(make_user):
    """A purge must never delete a row on the strength of an earlier read: its single DELETE
    carries the read condition, so the database re-checks it row by row."""
    user = make_user()
    ids = notify_n(user, 2)
    inbox.notification_mark_read(user_id=user.pk, ids=ids)

    with CaptureQueriesContext(connection) as queries:
        inbox.notifications_purge_read(created_before=timezone.now() + timedelta(seconds=1))

    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 1 and "read_at" in deletes[0] and "IS NOT NULL" in deletes[0]
    assert not [q for q in queries if q["sql"].startswith("SELECT")]


@pytest.mark.django_db
def test_deleting_a_user_removes_their_counter_with_their_notifications(make_user):
    user, other = make_user(), make_user()
    notify_n(user, 3)
    notify_n(other, 2)

    get_user_model().objects.get(pk=user.pk).delete()

    assert not NotificationState.objects.filter(user_id=user.pk).exists()
    assert unread_rows(user.pk) == 0
    assert stored_count(other.pk) == 2
    assert_exact(other.pk)


# --- Mark all read: one small event --------------------------------------------------------------


@pytest.mark.django_db
def test_mark_all_read_sends_one_small_event_whatever_the_number_marked(
    make_user, published, django_capture_on_commit_callbacks
):
    user = make_user()
    inbox.notify_many(recipient_ids=[user.pk] * 1500, title="x", topic=None)
    highest = Notification.objects.filter(recipient=user).order_by("-pk").values_list("pk", flat=True)[0]
    published.sent.clear()

    with django_capture_on_commit_callbacks(execute=True):
        inbox.notification_mark_all_read(user_id=user.pk)

    (read,) = [e for _, e in published.counted() if e["type"] == "notification.read"]
    assert read == {"type": "notification.read", "ids": [], "up_to": highest, "unread_count": 0}
    assert len(events.dumps(read)) < 100
    assert_exact(user.pk)


@pytest.mark.django_db
def test_the_api_answers_mark_all_read_with_the_same_small_shape(make_user):
    user = make_user()
    ids = notify_n(user, 3)
    client = Client()
    client.force_login(user)

    body = client.post("/api/v1/notifications/read-all/").json()

    assert body == {"ids": [], "up_to": ids[-1], "unread_count": 0}


# --- Concurrency (PostgreSQL: SQLite serializes every writer anyway) ------------------------------


def _require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a race needs concurrent writers: run with DATABASE_URL pointing at PostgreSQL")


def race(*calls: Callable[[], object]) -> list[object]:
    """Run ``calls`` at once, each in its own thread with its own database connection."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = calls[i]()
        except Exception as exc:  # reported below, not lost in the thread
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    return results


TRIALS = 20


@pytest.mark.django_db(transaction=True)
def test_two_tabs_marking_the_same_ids_read_at_once_count_them_once(make_user, published):
    _require_postgresql()
    failures, wrong_events = [], []
    for trial in range(TRIALS):
        user = make_user()
        ids = notify_n(user, 10)
        published.sent.clear()

        def mark(user_id=user.pk, ids=ids[:5]):
            return inbox.notification_mark_read(user_id=user_id, ids=ids)

        race(mark, mark)

        if (stored_count(user.pk), unread_rows(user.pk)) != (5, 5):
            failures.append((trial, stored_count(user.pk), unread_rows(user.pk)))
        marked = [i for _, e in published.counted() if e["type"] == "notification.read" for i in e["ids"]]
        counts = {e["unread_count"] for _, e in published.counted()}
        if sorted(marked) != ids[:5] or counts != {5}:  # each id announced once, with the exact count
            wrong_events.append((trial, len(marked), sorted(counts)))
    assert not failures, f"(trial, stored, unread) wrong in {len(failures)} of {TRIALS}: {failures}"
    assert not wrong_events, f"(trial, ids announced, counts sent) wrong: {wrong_events}"


@pytest.mark.django_db(transaction=True)
def test_mark_all_read_racing_new_notifications_leaves_them_counted(make_user, published):
    _require_postgresql()
    failures, wrong_events = [], []
    for trial in range(TRIALS * 2):
        user = make_user()
        notify_n(user, 5)

        def mark_all(user_id=user.pk):
            return inbox.notification_mark_all_read(user_id=user_id)

        def notify(user_id=user.pk):
            return inbox.notify(recipient_id=user_id, title="new")

        published.sent.clear()
        race(mark_all, notify, notify)

        if stored_count(user.pk) != unread_rows(user.pk):
            failures.append((trial, stored_count(user.pk), unread_rows(user.pk)))
        # Each event's count is the count at its commit: from 5 unread, the three ran in one of
        # three orders (all read first: 0 1 2; between the two: 6 0 1; last: 6 7 0).
        sent = sorted(e["unread_count"] for _, e in published.counted())
        if sent not in ([0, 1, 2], [0, 1, 6], [0, 6, 7]):
            wrong_events.append((trial, sent))
    assert not failures, f"(trial, stored, unread) wrong in {len(failures)} of {TRIALS * 2}: {failures}"
    assert not wrong_events, f"(trial, counts sent) not those of any order: {wrong_events}"


@pytest.mark.django_db(transaction=True)
def test_every_writer_racing_on_one_user_leaves_the_count_exact(make_user, admin_client, published):
    """All the services at once on one user (and a broadcast touching two), several rounds."""
    _require_postgresql()
    user, other = make_user(), make_user()
    model_admin = admin.site._registry[Notification]
    request = RequestFactory().post("/")
    request.user = get_user_model().objects.filter(is_superuser=True).first()
    for _round in range(10):
        ids = notify_n(user, 6)
        last_two = Notification.objects.filter(pk__in=ids[4:])
        race(
            partial(inbox.notification_mark_read, user_id=user.pk, ids=ids[:3]),
            partial(inbox.notification_mark_read, user_id=user.pk, ids=ids[2:5]),
            lambda: inbox.notification_mark_all_read(user_id=user.pk),
            lambda: inbox.notify(recipient_id=user.pk, title="racing"),
            # Two broadcasts naming the same users in opposite orders: counters lock in id order.
            lambda: inbox.notify_many(recipient_ids=[other.pk, user.pk, user.pk], title="all", topic=None),
            lambda: inbox.notify_many(recipient_ids=[user.pk, other.pk], title="all", topic=None),
            lambda: inbox.notification_mark_all_read(user_id=other.pk),
            partial(model_admin.delete_queryset, request, last_two),
        )
        assert_exact(user.pk, other.pk)


# --- Any sequence: property-based -----------------------------------------------------------------

USERS = 3
ops = st.one_of(
    st.tuples(st.just("notify"), st.integers(0, USERS - 1)),
    st.tuples(st.just("notify_many"), st.lists(st.integers(0, USERS - 1), min_size=1, max_size=6)),
    st.tuples(st.just("mark_read"), st.integers(0, USERS - 1), st.lists(st.integers(0, 40), max_size=5)),
    st.tuples(st.just("mark_all_read"), st.integers(0, USERS - 1)),
    st.tuples(st.just("admin_delete"), st.lists(st.integers(0, 40), min_size=1, max_size=4)),
    st.tuples(st.just("admin_delete_one"), st.integers(0, 40)),
    st.tuples(st.just("age"), st.lists(st.integers(0, 40), min_size=1, max_size=6)),
    st.tuples(st.just("retention")),
    st.tuples(st.just("delete_user"), st.integers(0, USERS - 1)),
)


@pytest.mark.django_db
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, min_size=1, max_size=25))
def test_any_sequence_of_operations_keeps_the_count_equal_to_the_unread_rows(
    steps, make_user, published, django_capture_on_commit_callbacks
):
    superuser = make_user(is_staff=True, is_superuser=True)
    users = [make_user() for _ in range(USERS)]
    alive = {u.pk for u in users}
    model_admin = admin.site._registry[Notification]
    request = RequestFactory().post("/")
    request.user = superuser
    retention_now = timezone.now()
    read_up_to: dict[int, int] = {}  # the highest up_to each user was sent: it stays true
    old = retention_now - timedelta(days=app_settings.NOTIFICATION_RETENTION_DAYS + 1)

    def pick(indexes: list[int]) -> list[int]:
        """Notifications (of any of this example's users) by position, for ids that exist."""
        existing = list(
            Notification.objects.filter(recipient_id__in=[u.pk for u in users])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        return sorted({existing[i % len(existing)] for i in indexes}) if existing else []

    for step in steps:
        name, args = step[0], step[1:]
        published.sent.clear()
        before = {uid: stored_count(uid) for uid in alive}
        with django_capture_on_commit_callbacks(execute=True):
            if name == "notify" and users[args[0]].pk in alive:
                inbox.notify(recipient_id=users[args[0]].pk, title="one")
            elif name == "notify_many":
                recipients = [users[i].pk for i in args[0] if users[i].pk in alive]
                inbox.notify_many(recipient_ids=recipients, title="many", topic=None)
            elif name == "mark_read" and users[args[0]].pk in alive:
                # Also ids of the other users: ignored, as on the socket and the API.
                inbox.notification_mark_read(user_id=users[args[0]].pk, ids=[*pick(args[1]), 10**12])
            elif name == "mark_all_read" and users[args[0]].pk in alive:
                inbox.notification_mark_all_read(user_id=users[args[0]].pk)
            elif name == "admin_delete":
                model_admin.delete_queryset(request, Notification.objects.filter(pk__in=pick(args[0])))
            elif name == "admin_delete_one":
                chosen = pick([args[0]])
                if chosen:
                    model_admin.delete_model(request, Notification.objects.get(pk=chosen[0]))
            elif name == "age":
                Notification.objects.filter(pk__in=pick(args[0])).update(created_at=old)
            elif name == "retention":
                retention_apply(now=retention_now)
            elif name == "delete_user" and users[args[0]].pk in alive:
                alive.discard(users[args[0]].pk)
                get_user_model().objects.get(pk=users[args[0]].pk).delete()

        for user in users:
            assert stored_count(user.pk) == unread_rows(user.pk), (step, user.pk)
            if user.pk not in alive:
                assert not NotificationState.objects.filter(user_id=user.pk).exists()
        last: dict[int, dict] = {}
        for uid, event in published.counted():
            last[uid] = event
            read_up_to[uid] = max(read_up_to.get(uid, 0), event.get("up_to", 0))
        for uid, up_to in read_up_to.items():
            unread_below = Notification.objects.filter(recipient_id=uid, pk__lte=up_to, read_at__isnull=True)
            assert not unread_below.exists(), (step, uid, up_to)
        for uid in alive:
            if uid in last:
                assert last[uid]["unread_count"] == unread_rows(uid), (step, last[uid])
            # A count that changed reached the user's open tabs.
            if stored_count(uid) != before[uid]:
                assert uid in last, (step, "the count changed silently")
