"""Server-Sent Events at /events/: the same events, and Last-Event-ID resume."""

import http.client
import json
import time
from urllib.parse import urlparse

import pytest

from jobs.tokens import token_create
from notifications import inbox
from tests.conftest import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


class EventSource:
    """A minimal EventSource over a real HTTP connection."""

    def __init__(self, base_url, *, cookie=None, headers=None, last_event_id=None):
        url = urlparse(base_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        head = dict(headers or {})
        if cookie:
            head["Cookie"] = cookie
            # What a browser's same-origin EventSource sends (it sends no Origin on a GET).
            head.setdefault("Sec-Fetch-Site", "same-origin")
        if last_event_id is not None:
            head["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/events/", headers=head)
        self.response = self.conn.getresponse()

    def next_event(self, timeout=10):
        self.conn.sock.settimeout(timeout)
        event = {}
        while True:
            line = self.response.fp.readline().decode().rstrip("\n")
            if line == "":
                if "data" in event:
                    return {"id": event.get("id"), **json.loads(event["data"])}
                event = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            event[field] = value

    def until(self, done, timeout=15):
        deadline, seen = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            seen.append(self.next_event())
            if done(seen[-1]):
                return seen
        raise AssertionError(f"timed out; saw {[e['type'] for e in seen]}")

    def close(self):
        self.conn.close()


def test_sse_streams_hello_snapshot_and_live_notifications_with_ids(live_server_url, make_user):
    user = make_user()
    source = EventSource(live_server_url, cookie=session_cookie(user))
    assert source.response.status == 200
    assert source.response.getheader("Content-Type").startswith("text/event-stream")
    assert source.next_event()["type"] == "hello"
    assert source.next_event()["type"] == "snapshot"

    note = inbox.notify(recipient_id=user.pk, title="over SSE")
    event = source.until(lambda e: e["type"] == "notification.new")[-1]
    assert event["id"] == str(note.pk) and event["notification"]["title"] == "over SSE"
    source.close()


def test_sse_resumes_from_last_event_id_in_order_without_duplicates(live_server_url, make_user):
    user = make_user()
    first = inbox.notify(recipient_id=user.pk, title="seen")
    missed = [inbox.notify(recipient_id=user.pk, title=f"missed {i}").pk for i in range(5)]

    source = EventSource(live_server_url, cookie=session_cookie(user), last_event_id=first.pk)
    events = source.until(lambda e: e["type"] == "snapshot")
    assert [int(e["id"]) for e in events if e["type"] == "notification.new"] == missed
    assert events[-1]["notifications"] == [] and events[-1]["unread_count"] == 6
    source.close()


def test_sse_refuses_anonymous_and_bad_tokens_and_isolates_users(live_server_url, make_user):
    anonymous = EventSource(live_server_url)
    assert anonymous.response.status == 401
    bad = EventSource(live_server_url, headers={"Authorization": "Bearer rb_nope"})
    assert bad.response.status == 401

    alice, bob = make_user(), make_user()
    source = EventSource(live_server_url, cookie=session_cookie(alice))
    source.until(lambda e: e["type"] == "snapshot")
    inbox.notify(recipient_id=bob.pk, title="for bob only")
    mine = inbox.notify(recipient_id=alice.pk, title="for alice")
    events = source.until(lambda e: e["type"] == "notification.new")
    assert [e["notification"]["id"] for e in events] == [mine.pk]
    source.close()


def test_a_foreign_origin_is_refused_whatever_the_credential_as_on_the_websocket(live_server_url, make_user):
    """The WebSocket's rule: an Origin, when sent, must be trusted, for a token too; without one a
    token passes (it is not a browser's request)."""
    _, raw = token_create(user=make_user(), name="sse")
    bearer = {"Authorization": f"Bearer {raw}"}
    foreign = EventSource(live_server_url, headers={**bearer, "Origin": "http://evil.example"})
    assert foreign.response.status == 403
    plain = EventSource(live_server_url, headers=bearer)
    assert plain.response.status == 200
    plain.close()


def test_another_method_is_the_json_405_not_a_csrf_page(live_server_url):
    url = urlparse(live_server_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("POST", "/events/", body=b"")
    response = conn.getresponse()
    assert response.status == 405 and json.loads(response.read()) == {"detail": "Use GET."}
