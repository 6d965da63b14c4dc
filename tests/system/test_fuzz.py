"""Fuzzing through the real server: schemathesis drives every operation of the generated OpenAPI
document (jobs, notifications and push: dashboard/api.py) with a bearer token (no 500 anywhere,
answers as documented), and hypothesis throws random frames at the socket of one user while
another listens (no crash, nothing crosses between them).

Examples are random on every run (a failure prints the example to reproduce); a dedicated uvicorn
whose log must stay free of tracebacks, and a Celery broker no worker reads, so fuzzed launches
stay queued and cost nothing."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobs.models import JobLogLine, JobState
from jobs.tokens import token_create
from notifications import inbox as notification_services
from notifications import webpush
from notifications.models import Notification
from tests.conftest import LiveServer, session_cookie
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)

OPERATIONS = [
    "GET /api/v1/kinds/",
    "GET /api/v1/jobs/",
    "POST /api/v1/jobs/",
    "POST /api/v1/jobs/bulk/preview/",
    "POST /api/v1/jobs/bulk/",
    "GET /api/v1/ops/history/",
    "GET /api/v1/jobs/{job_id}/",
    "POST /api/v1/jobs/{job_id}/cancel/",
    "POST /api/v1/jobs/{job_id}/retry/",
    "GET /api/v1/jobs/{job_id}/log/",
    "GET /api/v1/jobs/{job_id}/log/download/",
    "GET /api/v1/jobs/{job_id}/download/",
    "GET /api/v1/jobs/{job_id}/result/",
    "GET /api/v1/schedules/",
    "POST /api/v1/schedules/",
    "POST /api/v1/schedules/{schedule_id}/run/",
    "POST /api/v1/schedules/{schedule_id}/pause/",
    "POST /api/v1/schedules/{schedule_id}/resume/",
    "GET /api/v1/ops/queues/",
    "POST /api/v1/ops/queues/control/",
    "GET /api/v1/notifications/",
    "POST /api/v1/notifications/read/",
    "POST /api/v1/notifications/read-all/",
    "GET /api/v1/push/vapid-public-key/",
    "GET /api/v1/push/subscriptions/",
    "POST /api/v1/push/subscriptions/",
    "POST /api/v1/push/subscriptions/delete/",
]
EXAMPLES = 30  # per operation and mode
FRAMES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_server(server_env: dict[str, str]) -> Iterator[LiveServer]:
    # Launches go to a broker database no worker consumes; it is emptied afterwards.
    broker = server_env["REDIS_URL"].rsplit("/", 1)[0] + "/13"
    # Browser push set up, as in production: its key route answers 200, not its 503.
    vapid = webpush.generate_vapid_keypair()
    keys = {f"RUNBOARD_VAPID_{part.upper()}": vapid[part] for part in ("public_key", "private_key")}
    server = LiveServer({**server_env, "CELERY_BROKER_URL": broker, **keys}, name="fuzz-web")
    yield server
    server.stop()
    redis.Redis.from_url(broker).flushdb()
    log = server.web.log()
    # A traceback's own first line: the fuzzed URLs logged may hold the word itself (a CI run's
    # did: a generated dict key 'Traceback' in a query string).
    assert "Traceback (most recent call last)" not in log and "Internal Server Error" not in log, log[-5000:]


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/api/v1/openapi.json")


def test_the_fuzzed_operations_are_every_operation_of_the_schema(api_schema):
    found = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", OPERATIONS)
def test_no_operation_answers_500_and_answers_conform_to_the_schema(
    fuzz_server, api_schema, make_user, label, mode
):
    user = make_user()
    _, raw = token_create(user=user, name="fuzz")
    headers = {"Authorization": f"Bearer {raw}"}
    # Real jobs of this user to aim at: a finished one (retry, log, download, result) and a queued
    # one (cancel).
    finished = make_job(owner=user, state=JobState.SUCCEEDED)
    JobLogLine.objects.create(job=finished, seq=1, text="a line")
    queued = make_job(owner=user)  # not enqueued: nothing runs it
    operation = next(r.ok() for r in api_schema.get_all_operations() if r.ok().label == label)
    strategy = operation.as_strategy(generation_mode=mode)
    if "{job_id}" in label:
        strategy = st.one_of(
            strategy,
            *(operation.as_strategy(generation_mode=mode, path_parameters={"job_id": str(job.id)})
              for job in (finished, queued)),
        )  # fmt: skip
    # Negative cases break the schema on purpose; the answer must still never be a 500, and it
    # must still be JSON of the documented error shape when it is an error.
    checks = [not_a_server_error, content_type_conformance]
    if mode is GenerationMode.POSITIVE:
        checks += [status_code_conformance, response_schema_conformance]
    session = requests.Session()
    statuses: list[int] = []

    @FUZZ
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=fuzz_server.url, session=session, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=checks)

    fuzz()
    assert statuses and max(statuses) < 500


# --- Random frames against the socket ----------------------------------------------------------

MESSAGE_TYPES = ["ping", "resume", "mark_read", "mark_all_read", "watch", "unwatch", "ops.subscribe"]
PROTOCOL_TYPES = {"hello", "snapshot", "job.update", "job.log", "notification.new", "notification.read",
                  "error", "pong", "watching", "heartbeat"}  # fmt: skip
HUGE = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([-(2**63) - 1, 10**300]),
)
JSON = st.recursive(
    st.none() | st.booleans() | HUGE | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def frames(foreign: dict[str, Any]) -> st.SearchStrategy[str | bytes]:
    """Every kind of frame: random JSON, protocol messages with random or foreign values, text that
    is not JSON, nesting past the parser's limit, numbers past every limit, binary."""
    values = st.one_of(JSON, st.sampled_from(foreign["job_ids"] + foreign["notification_ids"]),
                       st.lists(st.sampled_from(foreign["notification_ids"]) | HUGE, max_size=5))  # fmt: skip
    message = st.fixed_dictionaries(
        {"type": st.sampled_from(MESSAGE_TYPES) | st.text(max_size=20)},
        optional={"job_id": values, "ids": values, "last_notification_id": values, "extra": JSON},
    )
    return st.one_of(
        message.map(json.dumps),
        JSON.map(json.dumps),
        st.text(max_size=200),
        st.binary(max_size=200),
        st.integers(min_value=1, max_value=60_000).map(lambda n: "[" * n),
        st.integers(min_value=1, max_value=30_000).map(
            lambda n: '{"type": "resume", "last_notification_id": 1' + "0" * n + "}"
        ),
        st.sampled_from(
            [
                '{"type": "resume", "last_notification_id": 1e999}',
                '{"type": "mark_read", "ids": [NaN]}',
                '{"type": "watch", "job_id": Infinity}',
                '{"type": "ping"}' + " " * 60_000,
            ]
        ),
    )


class Socket:
    """A signed-in socket that reopens itself before the flood limit (60 messages / 10 s) trips."""

    def __init__(self, base: str, cookie: str) -> None:
        self.url = base.replace("http", "ws", 1) + "/ws/notifications/"
        self.origin, self.cookie = base, cookie
        self.ws: Any = None
        self.stack = contextlib.ExitStack()
        self.received: list[dict[str, Any]] = []
        self.open()

    def open(self) -> None:
        self.stack.close()
        self.ws = self.stack.enter_context(
            connect(self.url, origin=self.origin, additional_headers={"Cookie": self.cookie}, open_timeout=10)
        )
        self.sent = 0
        self.read_until("snapshot")

    def read_until(self, wanted: str) -> list[dict[str, Any]]:
        events = []
        while True:
            event = json.loads(self.ws.recv(timeout=15))
            assert isinstance(event, dict) and event.get("type") in PROTOCOL_TYPES, event
            events.append(event)
            if event["type"] == wanted:
                self.received += events
                return events

    def exchange(self, frame: str | bytes) -> list[dict[str, Any]]:
        """Send the frame and a ping; everything that comes back up to the pong."""
        if self.sent >= 50:
            self.open()
        self.ws.send(frame)
        self.ws.send('{"type": "ping"}')
        self.sent += 2
        return self.read_until("pong")

    def close(self) -> None:
        self.stack.close()


def test_random_frames_never_crash_the_socket_nor_cross_between_users(fuzz_server, make_user):
    alice, bob = make_user(), make_user()
    bobs_job = make_job(owner=bob)  # jobs not enqueued: whatever moves comes from the fuzzing
    bobs_notes = [
        notification_services.notify(recipient_id=bob.pk, title=f"bob-secret-{i}") for i in range(3)
    ]
    alices_job = make_job(owner=alice)
    notification_services.notify(recipient_id=alice.pk, title="alice-own")
    foreign = {"job_ids": [str(bobs_job.id)], "notification_ids": [n.pk for n in bobs_notes]}
    attacker = Socket(fuzz_server.url, session_cookie(alice))
    listener = Socket(fuzz_server.url, session_cookie(bob))
    listener.received.clear()

    @settings(FUZZ, max_examples=FRAMES)
    @given(frame=frames(foreign))
    def fuzz(frame: str | bytes) -> None:
        try:
            replies = attacker.exchange(frame)
        except ConnectionClosed as closed:
            # The only documented way a frame may end a socket: over 64 KiB (the strategy stays under).
            raise AssertionError(f"socket closed by {frame[:80]!r}: {closed.rcvd}") from None
        assert all(r["type"] != "error" or r.get("code") for r in replies), replies

    started = time.monotonic()
    try:
        fuzz()
    finally:
        attacker.close()
    print(f"{FRAMES} frames in {time.monotonic() - started:.1f} s")

    for event in attacker.received:
        if event["type"] == "watching":  # an unwatch echoes whatever id alice sent; a watch never starts
            assert not (event["job_id"] == str(bobs_job.id) and event["watching"]), event
        elif event["type"] != "error":  # errors quote only alice's own frame
            text = json.dumps(event)
            assert str(bobs_job.id) not in text and "bob-secret" not in text, event
            assert f'"{bob.username}"' not in text, event
    listener.ws.send('{"type": "ping"}')
    heard_by_bob = listener.read_until("pong")
    assert [e["type"] for e in heard_by_bob if e["type"] != "heartbeat"] == ["pong"], (
        heard_by_bob
    )  # nothing of alice's reached bob
    assert str(alices_job.id) not in json.dumps(listener.received)
    listener.close()
    assert Notification.objects.filter(recipient=bob, read_at__isnull=True).count() == 3


@pytest.mark.parametrize("value", ["99999999999999999999", "-1", "1e999", "x", "9" * 5000, "\x00"])
def test_a_hostile_sse_resume_point_gets_a_stream_not_a_crash(fuzz_server, make_user, value):
    user = make_user()
    headers = {"Cookie": session_cookie(user), "Origin": fuzz_server.url}
    url = f"{fuzz_server.url}/events/"
    with requests.get(
        url, headers=headers, params={"last_event_id": value}, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        head = b""
        for chunk in response.iter_content(chunk_size=None):
            head += chunk
            if b"snapshot" in head:
                break
    assert b"hello" in head and b"snapshot" in head


@pytest.mark.parametrize(
    "job_id", ["not-a-uuid", "%0A", "a%2Fb", "%00", "%C2%A5H%C3%A9n%C3%A4%C2%BF%0A", "1" * 300]
)
@pytest.mark.parametrize("route", ["", "cancel/", "retry/", "log/", "log/download/", "download/", "result/"])
def test_a_malformed_job_id_is_the_apis_json_404_on_every_route(fuzz_server, make_user, job_id, route):
    """Found by the fuzzing above: a job id with a line break matched no route (Django's HTML 404)."""
    _, raw = token_create(user=make_user(), name="fuzz")
    method = "post" if route in ("cancel/", "retry/") else "get"
    url = f"{fuzz_server.url}/api/v1/jobs/{job_id}/{route}"
    response = requests.request(method, url, headers={"Authorization": f"Bearer {raw}"}, json={}, timeout=10)
    assert (response.status_code, response.json()) == (404, {"detail": "No such job."})
