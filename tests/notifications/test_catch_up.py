"""Exact catch-up for any gap, on both transports, at a bounded cost (issue 11 §4 and §5).

- A resume after any number of missed notifications delivers every one exactly once, in order,
  a page at a time (``replay.more`` then ``resume``; SSE pages by itself), ending with the
  snapshot, including notifications created while the pages were being fetched.
- Replayed notifications honour the toast preference, and a long gap pops no toasts.
- The first SSE snapshot always carries an ``id:`` (0 for a user with no notifications).
- SSE and the WebSocket join the same groups: a staff stream gets other users' jobs too.
- No sequence of client frames within the message limit makes the server send more than the
  documented reply budget per socket.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from websockets.sync.client import connect

from jobs.selectors import job_payload
from notifications import events, inbox, selectors
from notifications.models import Notification, NotificationPreference, NotificationState
from notifications.push import push_event
from notifications.realtime import consumer, snapshot
from tests.conftest import receive_json, receive_until, session_cookie
from tests.jobs.factories import make_job
from tests.notifications.test_sse import EventSource

pytestmark = pytest.mark.django_db(transaction=True)


def missed(user, count, *, body=""):
    """``count`` notifications the user has not seen (rows and counter, as notify_many leaves them)."""
    Notification.objects.bulk_create(
        [Notification(recipient=user, title=f"n{i}", body=body) for i in range(count)], batch_size=500
    )
    NotificationState.objects.update_or_create(user=user, defaults={"unread_count": count})
    return list(Notification.objects.filter(recipient=user).order_by("pk").values_list("pk", flat=True))


def socket(base, user, *, after=None):
    query = f"?last_notification_id={after}" if after is not None else ""
    url = base.replace("http", "ws", 1) + "/ws/notifications/" + query
    ws = connect(url, origin=base, additional_headers={"Cookie": session_cookie(user)}, max_size=None)
    assert receive_json(ws)["type"] == "hello"
    return ws


def catch_up(ws, *, during=None):
    """Follow the pages as a client does; returns (notification ids in order, the snapshot)."""
    ids, pages = [], 0
    while True:
        event = receive_json(ws, timeout=20)
        if event["type"] == "notification.new":
            ids.append(event["notification"]["id"])
        elif event["type"] == "replay.more":
            pages += 1
            if during is not None and pages == 2:
                during()
            ws.send(json.dumps({"type": "resume", "last_notification_id": event["last_notification_id"]}))
        elif event["type"] == "error" and event["code"] == "rate_limited":
            time.sleep(event["retry_after"])
            ws.send(json.dumps({"type": "resume", "last_notification_id": max(ids)}))
        elif event["type"] == "snapshot":
            return ids, event


def test_a_resume_after_more_missed_notifications_than_a_page_delivers_every_one_once_in_order(
    live_server_url, make_user
):
    user = make_user()
    expected = missed(user, 1500)
    created_meanwhile = []

    def notify_during_paging():
        for i in range(3):
            created_meanwhile.append(inbox.notify(recipient_id=user.pk, title=f"live {i}").pk)

    with socket(live_server_url, user, after=0) as ws:
        ids, snapshot = catch_up(ws, during=notify_during_paging)
        # Live ones that were not in a page yet arrive right after the snapshot.
        later = []
        while set(created_meanwhile) - set(ids) - set(later):
            event = receive_until(ws, lambda e: e["type"] == "notification.new", timeout=10)[-1]
            later.append(event["notification"]["id"])
    delivered = ids + later
    assert delivered == sorted(delivered)
    assert len(delivered) == len(set(delivered))
    assert delivered == expected + created_meanwhile
    assert snapshot["notifications"] == [] and snapshot["last_notification_id"] >= expected[-1]


def test_replayed_notifications_honour_the_toast_preference_and_a_long_gap_pops_no_toasts(
    live_server_url, make_user
):
    quiet, short_gap, long_gap = make_user(), make_user(), make_user()
    NotificationPreference.objects.create(user=quiet, toast=False)
    for user, count, toasts in [(quiet, 2, False), (short_gap, 2, True), (long_gap, 10, False)]:
        missed(user, count)
        with socket(live_server_url, user, after=0) as ws:
            replayed = receive_until(ws, lambda e: e["type"] == "snapshot")[:-1]
        assert len(replayed) == count
        assert all(event["toast"] is toasts and event["replayed"] for event in replayed), user


def test_an_sse_stream_resumes_any_gap_in_pages_and_its_first_snapshot_always_has_an_id(
    live_server_url, make_user
):
    empty, busy = make_user(), make_user()
    source = EventSource(live_server_url, cookie=session_cookie(empty))
    snapshot = source.until(lambda e: e["type"] == "snapshot")[-1]
    assert snapshot["id"] == "0"  # EventSource resumes from here: nothing missed meanwhile
    source.close()

    expected = missed(busy, 1234)
    source = EventSource(live_server_url, cookie=session_cookie(busy), last_event_id=0)
    seen = source.until(lambda e: e["type"] == "snapshot", timeout=60)
    ids = [e["notification"]["id"] for e in seen if e["type"] == "notification.new"]
    assert ids == expected
    assert [e["id"] for e in seen if e["type"] == "notification.new"] == [str(i) for i in expected]
    assert seen[-1]["id"] == str(expected[-1])
    source.close()


def test_a_staff_event_stream_gets_other_users_jobs_as_a_staff_socket_does(live_server_url, make_user):
    staff, owner = make_user(operator=True), make_user()
    source = EventSource(live_server_url, cookie=session_cookie(staff))
    source.until(lambda e: e["type"] == "snapshot")
    with socket(live_server_url, staff) as ws:
        receive_until(ws, lambda e: e["type"] == "snapshot")
        job = make_job(owner=owner)
        push_event(group=events.job_update_groups(owner.pk), event=events.job_update(job_payload(job)))
        on_socket = receive_until(ws, lambda e: e["type"] == "job.update")[-1]
    on_stream = source.until(lambda e: e["type"] == "job.update")[-1]
    source.close()
    assert on_socket["job"]["id"] == on_stream["job"]["id"] == str(job.pk)


def test_resume_floods_within_the_message_limit_cost_at_most_the_documented_reply_budget(
    live_server_url, make_user
):
    """The worst sequence found: `resume` from 0 (the largest reply: a full page of the largest
    notifications, then a snapshot), as often as the message limit allows, mixed with `watch`
    (a log tail each). Before: 55 such frames made one socket receive 805 MiB in 13 s."""
    user = make_user()
    missed(user, 1000, body="x" * 4000)
    for _ in range(50):
        make_job(owner=user)
    job = make_job(owner=user)
    with socket(live_server_url, user, after=None) as ws:
        receive_until(ws, lambda e: e["type"] == "snapshot")
        received = 0
        started = time.monotonic()
        frames = 0
        largest = 0
        deadline = started + 12
        while time.monotonic() < deadline:
            if frames < consumer.MAX_MESSAGES - 2:
                kind = frames % 5
                message = (
                    {"type": "watch", "job_id": str(job.pk)}
                    if kind == 4
                    else {"type": "resume", "last_notification_id": 0}
                )
                ws.send(json.dumps(message))
                frames += 1
            # Read whatever came until the next send is due (10 s / 60 messages).
            until = time.monotonic() + consumer.MESSAGE_WINDOW / consumer.MAX_MESSAGES
            while (left := until - time.monotonic()) > 0:
                try:
                    text = ws.recv(timeout=left)
                except TimeoutError:
                    break
                received += len(text)
                largest = max(largest, len(text))
        elapsed = time.monotonic() - started
    bound = snapshot.REPLY_BURST_BYTES + snapshot.REPLY_BYTES_PER_SECOND * elapsed
    # One reply may overdraw the budget: a page of notifications and one snapshot.
    page = selectors.REPLAY_PAGE * (selectors.BODY_MAX_BYTES + selectors.TITLE_MAX_BYTES + 400)
    one_reply = page + 256 * 1024
    assert received <= bound + one_reply, f"{received / 2**20:.1f} MiB in {elapsed:.1f} s"
    assert frames >= 50


def test_a_gap_one_past_a_page_pops_no_toasts_on_either_transport(live_server_url, make_user):
    """The toast guard is per catch-up, not per page (found by review: a gap of 101 toasted the
    last page's one notification)."""
    user = make_user()
    expected = missed(user, selectors.REPLAY_PAGE + 1)
    toasts = []
    with socket(live_server_url, user, after=0) as ws:
        while (event := receive_json(ws, timeout=20))["type"] != "snapshot":
            if event["type"] == "notification.new":
                toasts.append(event["toast"])
            elif event["type"] == "replay.more":
                ws.send(json.dumps({"type": "resume", "last_notification_id": event["last_notification_id"]}))
    assert len(toasts) == len(expected) and not any(toasts)

    source = EventSource(live_server_url, cookie=session_cookie(user), last_event_id=0)
    replayed = source.until(lambda e: e["type"] == "snapshot")
    source.close()
    streamed = [e["toast"] for e in replayed if e["type"] == "notification.new"]
    assert len(streamed) == len(expected) and not any(streamed)


def test_reconnect_loops_and_sse_replays_from_zero_cost_at_most_the_users_catch_up_budget(
    live_server_url, make_user
):
    """Found by review: a new connection's catch-up was free, so SSE streams opened again and
    again with `Last-Event-ID: 0` took 9-12 MiB/s (and most of a core) from one web process.
    Every catch-up step of a user is now paid from one budget per user and process."""
    user = make_user()
    missed(user, 1000, body="x" * 4000)
    received = [0, 0, 0, 0]
    started = time.monotonic()
    deadline = started + 8

    def loop(index: int, transport: str) -> None:
        while time.monotonic() < deadline:
            if transport == "sse":
                source = EventSource(live_server_url, cookie=session_cookie(user), last_event_id=0)
                try:
                    while time.monotonic() < deadline:
                        chunk = source.response.read1(1 << 16)
                        if not chunk:
                            break
                        received[index] += len(chunk)
                        if b'"type":"snapshot"' in chunk:
                            break  # caught up: open it again from 0
                except (TimeoutError, OSError):
                    pass
                finally:
                    source.close()
            else:
                try:
                    with socket(live_server_url, user, after=0) as ws:
                        while time.monotonic() < deadline:
                            text = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                            received[index] += len(text)
                            if '"type": "snapshot"' in text or '"type":"snapshot"' in text:
                                break
                except (TimeoutError, OSError):
                    pass

    threads = [
        threading.Thread(target=loop, args=(i, "sse" if i < 2 else "ws"), daemon=True) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    bound = snapshot.USER_BURST_BYTES + snapshot.REPLY_BYTES_PER_SECOND * elapsed
    page = selectors.REPLAY_PAGE * (selectors.BODY_MAX_BYTES + selectors.TITLE_MAX_BYTES + 400)
    in_flight = len(threads) * (page + 256 * 1024)  # a step each loop may have been granted last
    total = sum(received)
    limit = (bound + in_flight) / 2**20
    print(f"catch-up loops: {total / 2**20:.1f} MiB in {elapsed:.1f} s (bound {limit:.1f})")
    assert total <= bound + in_flight, f"{total / 2**20:.1f} MiB in {elapsed:.1f} s"
    assert total > 2 * 2**20  # it did stream: the budget, not a failure, is what held it


def test_log_tails_from_sockets_opened_again_and_again_cost_at_most_the_users_budget(
    live_server_url, make_user
):
    """Found by review: `watch` tails were paid only from the socket's own budget, which every
    new socket gets in full, so reconnecting and watching took 29.9 MiB/s. Large replies are now
    paid from the user's budget too."""
    from jobs.models import JobLogLine

    user = make_user()
    job = make_job(owner=user)
    JobLogLine.objects.bulk_create([JobLogLine(job=job, seq=i, text="y" * 8000) for i in range(1, 201)])
    received = [0, 0]
    started = time.monotonic()
    deadline = started + 8

    def loop(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket(live_server_url, user) as ws:
                    receive_until(ws, lambda e: e["type"] == "snapshot")
                    ws.send(json.dumps({"type": "watch", "job_id": str(job.pk)}))
                    while time.monotonic() < deadline:
                        text = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                        received[index] += len(text)
                        if '"rate_limited"' in text or (text.count('"seq"') and '"seq":200' in text):
                            break  # the whole tail, or refused: open a new socket
            except (TimeoutError, OSError):
                pass

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    bound = snapshot.USER_BURST_BYTES + snapshot.REPLY_BYTES_PER_SECOND * elapsed
    in_flight = len(threads) * (200 * 8100 + 256 * 1024)  # a whole tail and a snapshot each
    total = sum(received)
    print(
        f"watch loops: {total / 2**20:.1f} MiB in {elapsed:.1f} s (bound {(bound + in_flight) / 2**20:.1f})"
    )
    assert total <= bound + in_flight, f"{total / 2**20:.1f} MiB in {elapsed:.1f} s"
