"""A client that leaves while its connect is still catching it up (after ``hello``, before the
snapshot) is recorded as gone at once: its socket's row and its close are not left behind for the
heartbeat's sweep (found by review, issue 15 §5: the row stayed, counted open, for 40 s+)."""

from __future__ import annotations

import time

import pytest

from notifications.models import SocketConnection
from tests.conftest import receive_json
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_a_socket_closed_before_its_snapshot_leaves_no_row_behind(make_user, ws_connect):
    user = make_user()
    for _ in range(40):  # a snapshot that takes a moment to build
        make_job(owner=user, params={"steps": 1, "step_ms": 0})
    for _ in range(10):
        ws = ws_connect(user=user)
        assert receive_json(ws)["type"] == "hello"
        ws.close()

    deadline = time.monotonic() + 10
    while SocketConnection.objects.filter(user=user).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not SocketConnection.objects.filter(user=user).exists()
