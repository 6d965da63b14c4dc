"""/metrics in one process (issue 15 §5): counters and histograms counted where things happen, a
scrape whose database work does not grow with history, names promtool accepts, and figures of
several processes added up from prometheus-client's multiprocess files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dashboard import metrics
from jobs import runner
from jobs.models import Job, JobState
from notifications.models import Notification
from tests.jobs.factories import make_job

ROOT = Path(__file__).resolve().parents[2]


def scrape(client: Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of Prometheus text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


def promtool_findings(text: str) -> str:
    """What `promtool check metrics` says of ``text``: its findings, empty when it has none.
    promtool must be installed (`make test` does: scripts/system_deps.py promtool)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian's prometheus package)"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 or findings, f"promtool exited {done.returncode} and said nothing"
    return findings


# --- what the scrape reads ------------------------------------------------------------------------


def _bulk_history(owner, rows: int) -> None:
    Job.objects.bulk_create(
        [
            Job(owner=owner, kind="simulate", params={}, state=JobState.SUCCEEDED, finished_at=timezone.now())
            for _ in range(rows)
        ]
    )
    Notification.objects.bulk_create([Notification(recipient=owner, title="done") for _ in range(rows)])


def _scrape_queries(client: Client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.django_db
def test_a_scrape_runs_as_many_statements_with_1000_finished_jobs_and_notifications_as_with_10(
    make_user, settings
):
    settings.DEBUG = True
    owner = make_user()
    client = Client()
    _bulk_history(owner, 10)
    few = _scrape_queries(client)
    _bulk_history(owner, 990)
    many = _scrape_queries(client)
    assert len(many) == len(few), many


@pytest.mark.django_db
def test_a_scrape_reads_no_finished_job_and_no_notification_row(make_user, settings):
    """The job table is read only for queued and running jobs (what an index on state finds),
    never grouped over its history; notifications only through the per-user unread counters."""
    settings.DEBUG = True
    _bulk_history(make_user(), 10)
    job_table, notification_table = Job._meta.db_table, Notification._meta.db_table
    for sql in _scrape_queries(Client()):
        if re.search(rf'\b"?{notification_table}"?\b', sql):
            raise AssertionError(f"a scrape reads the notifications: {sql}")
        if re.search(rf'\bFROM "?{job_table}"?', sql):
            finals = [state for state in ("succeeded", "failed", "cancelled") if state in sql]
            assert "state" in sql.split("WHERE", 1)[-1] and not finals and "WHERE" in sql, (
                f"a scrape reads finished jobs: {sql}"
            )


# --- counted where it happens ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_before_it_started_is_counted_once_with_no_duration(make_user, settings):
    from jobs.launch import job_cancel

    settings.DEBUG = True
    client = Client()
    before = samples(scrape(client))
    owner = make_user()
    queued = make_job(owner=owner, params={"steps": 1, "step_ms": 0})

    job_cancel(user=owner, job_id=queued.id)
    with pytest.raises(Exception, match="nothing to cancel"):  # a second request changes nothing
        job_cancel(user=owner, job_id=queued.id)

    after = samples(scrape(client))
    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    grew = value(after, "runboard_jobs_finished_total", kind="simulate", outcome="cancelled") - value(
        before, "runboard_jobs_finished_total", kind="simulate", outcome="cancelled"
    )
    assert grew == 1
    assert value(after, "runboard_job_duration_seconds_count", kind="simulate") == value(
        before, "runboard_job_duration_seconds_count", kind="simulate"
    )


@pytest.mark.django_db(transaction=True)
def test_a_job_run_in_the_worker_counts_its_outcome_duration_and_queue_wait(make_user, settings):
    settings.DEBUG = True
    client = Client()
    before = samples(scrape(client))
    owner = make_user()
    done = make_job(owner=owner, params={"steps": 1, "step_ms": 0})
    failing = make_job(owner=owner, params={"steps": 1, "step_ms": 0, "fail_at_step": 1})

    runner.job_run(job_id=done.id)
    runner.job_run(job_id=failing.id)

    after = samples(scrape(client))
    assert Job.objects.get(pk=done.pk).state == JobState.SUCCEEDED
    assert Job.objects.get(pk=failing.pk).state == JobState.FAILED

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("runboard_jobs_finished_total", kind="simulate", outcome="succeeded") == 1
    assert grew("runboard_jobs_finished_total", kind="simulate", outcome="failed") == 1
    assert grew("runboard_job_duration_seconds_count", kind="simulate") == 2
    assert grew("runboard_job_queue_wait_seconds_count", kind="simulate") == 2
    assert grew("runboard_job_duration_seconds_bucket", kind="simulate", le="+Inf") == 2


def test_close_codes_outside_the_protocols_share_one_label_value():
    assert metrics.close_code_label(1000) == "1000"
    assert metrics.close_code_label(4429) == "4429"
    assert metrics.close_code_label(None) == "none"
    assert {metrics.close_code_label(code) for code in (3000, 4000, 4999, 4402)} == {"other"}


def test_socket_connects_and_closes_are_counted_by_transport_and_code():
    before = samples(metrics_text())
    metrics.socket_connected("websocket")
    metrics.socket_closed("websocket", 4401)
    metrics.socket_closed("websocket", 4321)
    after = samples(metrics_text())

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("runboard_socket_connects_total", transport="websocket") == 1
    assert grew("runboard_socket_closes_total", transport="websocket", code="4401") == 1
    assert grew("runboard_socket_closes_total", transport="websocket", code="other") == 1


def metrics_text() -> str:
    return generate_latest(metrics.scrape_registry()).decode()


# --- names promtool accepts -----------------------------------------------------------------------


@pytest.mark.django_db
def test_promtool_finds_nothing_in_a_scrape(make_user, settings):
    settings.DEBUG = True
    make_job(owner=make_user(), state=JobState.RUNNING)
    metrics.job_finished(kind="simulate", outcome="succeeded", started_at=None)
    metrics.push_published(direct=False)
    metrics.catch_up_page(rows=3, more=False)
    text = scrape(Client())
    assert "runboard_notifications_unread " in text
    assert promtool_findings(text) == ""


# --- several processes ----------------------------------------------------------------------------

COUNTING_PROCESS = textwrap.dedent(
    """
    import sys
    from dashboard import metrics
    for _ in range(int(sys.argv[1])):
        metrics.job_finished(kind="simulate", outcome="succeeded", started_at=None)
        metrics.push_published(direct=False)
    metrics.catch_up_page(rows=int(sys.argv[1]), more=False)
    """
)


@pytest.mark.django_db
def test_counters_of_two_processes_add_up_in_one_scrape(tmp_path, monkeypatch, settings):
    settings.DEBUG = True
    directory = tmp_path / "metrics"
    env = {**os.environ, metrics.MULTIPROC_DIR_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", COUNTING_PROCESS, str(count)], env=env, check=True, timeout=60)
    assert len({path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}) == 2  # two pids

    # This process scrapes as a web process of that deployment does (it counted nothing there).
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(directory))
    text = scrape(Client())

    parsed = samples(text)
    assert value(parsed, "runboard_jobs_finished_total", kind="simulate", outcome="succeeded") == 7
    assert value(parsed, "runboard_pushes_total", target="group") == 7
    assert value(parsed, "runboard_catchup_page_notifications_count", last="true") == 2
    assert value(parsed, "runboard_catchup_page_notifications_sum", last="true") == 7
    assert promtool_findings(text) == ""


@pytest.mark.django_db(transaction=True)
def test_a_counter_that_cannot_count_costs_nothing_of_what_its_call_site_does_next(make_user, monkeypatch):
    """Found by review: the finish's counter is an on_commit hook; one that raised (the
    multiprocess directory gone under a running process) dropped the hooks after it, the owner's
    notification push among them."""
    from jobs.launch import job_cancel

    def broken(*args, **kwargs):
        raise FileNotFoundError("the multiprocess directory is gone")

    monkeypatch.setattr(metrics.JOBS_FINISHED, "labels", broken)
    monkeypatch.setattr(metrics.SOCKET_CONNECTS, "labels", broken)
    owner = make_user()
    queued = make_job(owner=owner, params={"steps": 1, "step_ms": 0})

    job_cancel(user=owner, job_id=queued.id)
    metrics.socket_connected("websocket")  # logs, does not raise

    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    assert Notification.objects.filter(recipient=owner, job_id=queued.pk).count() == 1
