"""Helpers for tests that watch jobs run on the real worker."""

from __future__ import annotations

import time
from typing import Any

from jobs.models import FINAL_STATES, Job
from tests.conftest import receive_json, receive_until


def signed_in_socket(ws_connect: Any, user: Any) -> Any:
    ws = ws_connect(user=user)
    assert receive_json(ws)["type"] == "hello"
    assert receive_json(ws)["type"] == "snapshot"
    return ws


def updates_for(events: list[dict[str, Any]], job_id: Any) -> list[dict[str, Any]]:
    return [e["job"] for e in events if e["type"] == "job.update" and e["job"]["id"] == str(job_id)]


def until_final(ws: Any, job_id: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """All updates of the job up to and including its final state."""
    events = receive_until(
        ws,
        lambda e: (
            e["type"] == "job.update" and e["job"]["id"] == str(job_id) and e["job"]["state"] in FINAL_STATES
        ),
        timeout=timeout,
    )
    return updates_for(events, job_id)


def wait_for_job(job_id: Any, condition: Any, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(pk=job_id)
        if condition(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never met the condition; it is {job.state}: {job.error!r}")
        time.sleep(0.05)
