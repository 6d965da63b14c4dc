"""/metrics across real processes (issue 15 §5): jobs run by a real Celery worker's pool processes
and sockets served by the real web process, counted in each and added up by the web's scrape
through prometheus-client's multiprocess directory; promtool finds nothing in what it serves."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import Job
from tests.dashboard.test_metrics import promtool_findings
from tests.system.stack import wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-test-token"
SUCCEEDING, FAILING = 4, 2


def _scrape(url: str) -> str:
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def test_jobs_a_real_worker_ran_and_sockets_the_web_served_add_up_in_the_webs_metrics(
    stacks, make_user, tmp_path
):
    directory = tmp_path / "prometheus"
    stack = stacks(
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "RUNBOARD_METRICS_TOKEN": TOKEN}, concurrency=2
    )
    user = make_user()
    with stack.socket(stack.cookie(user)) as ws:
        ws.recv(timeout=10)  # hello
        ws.recv(timeout=10)  # snapshot: the connect is over, so the close reaches disconnect()
    # The server handles the close after the client's close() returns.
    wait_until(lambda: "runboard_socket_closes_total{" in _scrape(stack.url), timeout=10, message="no close")
    launched = [stack.launch(user, "simulate", {"steps": 1, "step_ms": 0}) for _ in range(SUCCEEDING)]
    launched += [
        stack.launch(user, "simulate", {"steps": 1, "step_ms": 0, "fail_at_step": 1}) for _ in range(FAILING)
    ]
    wait_until(
        lambda: not Job.objects.filter(pk__in=launched, finished_at__isnull=True).exists(),
        timeout=60,
        message=stack.logs(),
    )

    text = _scrape(stack.url)
    parsed = _samples(text)

    count = SUCCEEDING + FAILING
    assert _value(parsed, "runboard_jobs_finished_total", kind="simulate", outcome="succeeded") == SUCCEEDING
    assert _value(parsed, "runboard_jobs_finished_total", kind="simulate", outcome="failed") == FAILING
    assert _value(parsed, "runboard_job_duration_seconds_count", kind="simulate") == count
    assert _value(parsed, "runboard_job_queue_wait_seconds_count", kind="simulate") == count
    assert _value(parsed, "runboard_job_queue_wait_seconds_bucket", kind="simulate", le="+Inf") == count
    # Counted by the web process, which is not the worker's: the scrape adds up processes.
    assert _value(parsed, "runboard_socket_connects_total", transport="websocket") == 1
    assert _value(parsed, "runboard_socket_closes_total", transport="websocket", code="1000") == 1
    assert _value(parsed, "runboard_pushes_total", target="group") >= count
    writers = {path.stem.rsplit("_", 1)[1] for path in Path(directory).glob("*.db")}
    assert len(writers) >= 2, f"one process wrote every figure: {sorted(writers)}"

    assert promtool_findings(text) == ""
