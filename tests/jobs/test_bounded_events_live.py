"""One user's job can never disconnect another (issue 11, item 3), on the real web server and the
session's real redis-server with its default ``client-output-buffer-limit pubsub 32mb 8mb 60``.

Before, a job's whole result rode in its ``job.update``: a result over 32 MB made Redis drop the
web process's subscriber connection, and that process closed every socket on it (4503).
"""

from __future__ import annotations

import json
import os
import threading

import pytest
import redis

from jobs import states
from jobs.models import JobState
from notifications import push
from tests.conftest import receive_until
from tests.jobs.factories import make_job
from tests.jobs.live import signed_in_socket, until_final

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


class RedisTap:
    """Every message published on the Redis while it listens (PSUBSCRIBE *): their sizes."""

    def __init__(self, url: str) -> None:
        self.pubsub = redis.Redis.from_url(url).pubsub()
        self.pubsub.psubscribe("*")
        while (confirmed := self.pubsub.get_message(timeout=5)) is None or confirmed["type"] != "psubscribe":
            pass
        self.sizes: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.pubsub.get_message(timeout=0.2)
            except Exception as exc:  # dropped by Redis itself
                self.errors.append(exc)
                return
            if message and message["type"] == "pmessage":
                self.sizes.append(len(message["data"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


def test_a_giant_result_publishes_only_small_events_and_no_users_socket_is_dropped(
    ws_connect, make_user, settings
):
    settings.RUNBOARD_RESULT_MAX_BYTES = 64 * MIB
    owner, bystander, operator = make_user(), make_user(), make_user(operator=True)
    sockets = {name: signed_in_socket(ws_connect, user) for name, user in
               [("owner", owner), ("bystander", bystander), ("operator", operator)]}  # fmt: skip
    job = make_job(owner=owner, state=JobState.RUNNING)
    giant = {"cells": ["x" * 3000] * 12_000}  # 36 MB of JSON: over Redis' 32 MB hard limit
    tap = RedisTap(os.environ["REDIS_URL"])
    try:
        states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result=giant)
        assert push.flush(30)

        for name in ("owner", "operator"):  # the owner's group and the staff group
            final = until_final(sockets[name], job.id)[-1]
            assert final["state"] == "succeeded" and final["result_bytes"] > 32 * MIB
            assert "result" not in final and final["result_url"]
        # Nobody was disconnected: every socket on that web process still answers.
        for name, ws in sockets.items():
            ws.send(json.dumps({"type": "ping"}))
            assert receive_until(ws, lambda e: e["type"] == "pong", timeout=10), name
    finally:
        tap.stop()

    assert not tap.errors, tap.errors
    assert tap.sizes and max(tap.sizes) <= 16 * 1024, max(tap.sizes)
