"""The catch-up both transports share (notifications/realtime/snapshot.py), in process: resume
points, the pages and the snapshot that ends them, and which live events a connection drops or
holds. The WebSocket and SSE tests (test_protocol.py, test_catch_up.py, test_sse.py) run the same
code end to end on a real server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from notifications import events, selectors
from notifications.models import Notification, NotificationState
from notifications.realtime import snapshot
from notifications.realtime.snapshot import Delivery

REALTIME = Path(snapshot.__file__).parent


def relayed(notification_id=None):
    message = {"type": "event.relay", "text": "{}"}
    if notification_id is not None:
        message["notification_id"] = notification_id
    return message


@pytest.mark.parametrize(
    ("value", "point"),
    [("0", 0), ("41", 41), (41, 41), (str(2**63 - 1), 2**63 - 1), (None, None), ("", None),
     ("-1", None), (str(2**63), None), ("4.5", None), ("x", None), (True, None), (float("inf"), None)],
)  # fmt: skip
def test_a_resume_point_is_a_64_bit_notification_id_or_nothing(value, point):
    assert snapshot.resume_point(value) == point


def test_a_live_notification_already_sent_by_a_snapshot_or_replay_is_dropped_once_sent():
    delivery = Delivery()
    delivery.snapshot_sent(events.snapshot(jobs=[], unread_count=0, notifications=[], last_notification_id=0))
    delivery.mark(5)
    assert not delivery.live(relayed(5))
    assert delivery.live(relayed(6)) and not delivery.live(relayed(6))
    assert delivery.live(relayed()) and delivery.live(relayed())  # not a notification: always
    assert delivery.sent_up_to == 6


def test_a_delivery_remembers_a_bounded_number_of_ids_oldest_forgotten_first():
    delivery = Delivery()
    for notification_id in range(1, snapshot.SENT_IDS_KEPT + 2):
        delivery.mark(notification_id)
    assert len(delivery.sent_ids) == snapshot.SENT_IDS_KEPT
    assert 1 not in delivery.sent_ids and snapshot.SENT_IDS_KEPT + 1 in delivery.sent_ids


def test_while_a_catch_up_pages_live_notifications_wait_and_an_overflow_asks_for_another_page():
    delivery = Delivery()
    delivery.hold()
    assert delivery.live(relayed())  # a job update is not held
    for notification_id in range(100, 100 + snapshot.HELD_KEPT):
        assert not delivery.live(relayed(notification_id))
    assert not delivery.live(relayed(1000))  # beyond HELD_KEPT: dropped, the next page has it
    done = snapshot.CatchUp(
        None, events.snapshot(jobs=[], unread_count=0, notifications=[], last_notification_id=0)
    )
    assert delivery.more_pages(done)  # the overflow: one more page first
    assert not delivery.more_pages(done)
    held = delivery.release()
    assert [m["notification_id"] for m in held] == list(range(100, 100 + snapshot.HELD_KEPT))
    assert delivery.held is None and delivery.live(relayed(5000))


def test_a_restart_forgets_what_was_sent():
    delivery = Delivery()
    delivery.mark(9)
    delivery.restart(3)
    assert delivery.sent_ids == {} and delivery.sent_up_to == 3
    assert delivery.live(relayed(9))


@pytest.mark.django_db
def test_a_catch_up_pages_then_ends_with_a_snapshot_of_what_the_connection_was_sent(make_user):
    user = make_user()
    Notification.objects.bulk_create([Notification(recipient=user, title=f"n{i}") for i in range(150)])
    NotificationState.objects.create(user=user, unread_count=150)
    ids = list(Notification.objects.filter(recipient=user).order_by("pk").values_list("pk", flat=True))

    fresh = snapshot.catch_up_step(user=user, after_id=None, sent_up_to=0)
    assert fresh.page is None and fresh.snapshot is not None
    assert [n["id"] for n in fresh.snapshot["notifications"]] == ids[-selectors.RECENT :]
    assert fresh.snapshot["last_notification_id"] == ids[-1]

    delivery = Delivery()
    first = snapshot.catch_up_step(user=user, after_id=0, sent_up_to=delivery.sent_up_to)
    assert first.snapshot is None and first.page is not None and first.page.more
    replayed = list(delivery.replayed(first.page))
    assert [i for i, _ in replayed] == ids[: selectors.REPLAY_PAGE]
    assert all(e["replayed"] and not e["toast"] and e["unread_count"] == 150 for _, e in replayed)
    assert list(delivery.replayed(first.page)) == []  # nothing twice
    last = snapshot.catch_up_step(user=user, after_id=delivery.sent_up_to, sent_up_to=delivery.sent_up_to)
    assert last.page is not None and not last.page.more and last.snapshot is not None
    assert [i for i, _ in delivery.replayed(last.page)] == ids[selectors.REPLAY_PAGE :]
    assert last.snapshot["notifications"] == [] and last.snapshot["last_notification_id"] == ids[-1]

    # Nothing after the resume point: the snapshot says what the connection holds.
    caught_up = snapshot.catch_up_step(user=user, after_id=ids[-1], sent_up_to=ids[-1])
    assert caught_up.page is not None and caught_up.page.rows == []
    assert caught_up.snapshot is not None and caught_up.snapshot["last_notification_id"] == ids[-1]


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }


def test_the_socket_and_the_stream_catch_up_through_the_one_shared_module():
    """The snapshot and replay reads, and the notification.new of a replay, are written once
    (snapshot.py): the consumer and the SSE view call it, so the two transports cannot drift."""
    shared = {"selectors.replay_after", "selectors.snapshot_for_user", "events.notification_new",
              "presence.socket_open"}  # fmt: skip
    for transport in ("consumer.py", "sse.py"):
        calls = _calls(REALTIME / transport)
        assert not calls & shared, f"{transport} catches up by itself: {sorted(calls & shared)}"
        steps = {"snapshot.catch_up_step", "snapshot.checked_catch_up_step"}
        assert calls & steps, f"{transport} does not use the shared catch-up"
        assert "Delivery(" in (REALTIME / transport).read_text(), f"{transport} tracks what it sent by itself"
