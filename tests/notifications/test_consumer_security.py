"""The socket checks who is asking: anonymous, foreign-origin and cross-user access all fail."""

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jobs import launch
from tests.conftest import receive_json, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_anonymous_socket_is_closed_with_4401(ws_connect):
    ws = ws_connect()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None])
def test_a_foreign_or_missing_origin_is_refused(ws_connect, make_user, origin):
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(user=make_user(), origin=origin)
    assert refused.value.response.status_code == 403


def test_a_signed_in_socket_gets_hello_then_its_own_snapshot(ws_connect, make_user):
    user = make_user()
    other = make_user()
    mine = launch.job_create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0})
    launch.job_create(owner=other, kind="simulate", params={"steps": 1, "step_ms": 0})

    ws = ws_connect(user=user)
    hello = receive_json(ws)
    snapshot = receive_json(ws)

    assert hello["type"] == "hello" and hello["protocol"] == 1
    assert hello["user"] == {"id": user.pk, "username": user.username, "is_staff": False, "powers": []}
    assert [job["id"] for job in snapshot["jobs"]] == [str(mine.id)]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('["a"]', "invalid_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
    ],
)
def test_a_bad_message_gets_an_error_and_the_socket_survives(ws_connect, make_user, frame, code):
    ws = ws_connect(user=make_user())
    receive_json(ws), receive_json(ws)

    ws.send(frame)
    assert receive_json(ws)["code"] == code
    ws.send('{"type": "ping"}')
    assert receive_json(ws)["type"] == "pong"


def test_user_b_never_receives_user_as_updates(celery_worker, ws_connect, make_user):
    alice, bob = make_user(), make_user()
    alice_ws, bob_ws = ws_connect(user=alice), ws_connect(user=bob)
    for ws in (alice_ws, bob_ws):
        receive_json(ws), receive_json(ws)

    job = launch.job_create(owner=alice, kind="simulate", params={"steps": 5, "step_ms": 20})
    receive_until(alice_ws, lambda e: e["type"] == "job.update" and e["job"]["state"] == "succeeded")
    # Bob's own job, launched after Alice's finished: the first thing Bob hears must be about it.
    bobs = launch.job_create(owner=bob, kind="simulate", params={"steps": 1, "step_ms": 0})
    received = receive_until(bob_ws, lambda e: e["type"] == "job.update" and e["job"]["state"] == "succeeded")

    assert {e["job"]["id"] for e in received if e["type"] == "job.update"} == {str(bobs.id)}
    assert str(job.id) not in str(received)
