"""The Operations page's history (dashboard/history.py, GET /api/v1/ops/history/): series per
bucket and kind or queue, percentiles from a bounded sample, failure groups by error class, a
cost that does not grow with history, and who may see what (tracebacks only with the "see all
results" power)."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pydantic import BaseModel

from dashboard import history
from jobs.kinds.registry import JobKind, register, unregister
from jobs.models import Job, JobState
from jobs.permissions import Power
from tests.conftest import grant_powers
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db

# A fixed "now" 30 s into a minute (and 10 min 30 s into an hour): buckets are easy to name.
NOW = datetime(2026, 11, 30, 12, 10, 30, tzinfo=UTC)
HISTORY = "/api/v1/ops/history/"


def job(owner: Any, state: JobState, *, created: float, started: float | None = None,
        finished: float | None = None, kind: str = "simulate", now: datetime = NOW,
        **fields: Any) -> Job:  # fmt: skip
    """A job whose times are seconds before ``now`` (None: not reached)."""
    made = make_job(owner=owner, state=state, kind=kind, **fields)
    at = {"created_at": now - timedelta(seconds=created)}
    at["started_at"] = now - timedelta(seconds=started) if started is not None else None
    at["finished_at"] = now - timedelta(seconds=finished) if finished is not None else None
    Job.objects.filter(pk=made.pk).update(**at)
    return Job.objects.get(pk=made.pk)


def kind_series(payload: history.HistoryPayload, kind: str) -> history.KindSeries:
    return next(series for series in payload["kinds"] if series["kind"] == kind)


def queue_series(payload: history.HistoryPayload, queue: str) -> history.QueueSeries:
    return next(series for series in payload["queues"] if series["queue"] == queue)


def operator_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- Series --------------------------------------------------------------------------------------


def test_the_hour_has_sixty_minute_buckets_the_last_holding_now_with_finished_and_failed_per_kind(make_user):
    owner = make_user()
    # Two succeeded and one failed in the current minute, one failed 5 minutes ago, a primes job
    # 59 minutes ago; one finished 2 hours ago is out of the window.
    for state in (JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED):
        job(owner, state, created=25, started=20, finished=10)
    job(owner, JobState.FAILED, created=330, started=320, finished=300)
    job(owner, JobState.SUCCEEDED, created=3570, started=3560, finished=59 * 60, kind="primes")
    job(owner, JobState.SUCCEEDED, created=7300, started=7250, finished=7200)

    payload = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)

    assert payload["bucket_seconds"] == 60
    assert len(payload["buckets"]) == 60
    assert payload["buckets"][-1] == int(datetime(2026, 11, 30, 12, 10, tzinfo=UTC).timestamp())
    assert payload["buckets"][0] == payload["buckets"][-1] - 59 * 60
    simulate = kind_series(payload, "simulate")
    assert simulate["finished"][-1] == 3 and simulate["failed"][-1] == 1
    assert simulate["finished"][-6] == 1 and simulate["failed"][-6] == 1
    assert (simulate["finished_in_window"], simulate["failed_in_window"]) == (4, 2)
    primes = kind_series(payload, "primes")
    assert primes["finished"][0] == 1 and sum(primes["finished"]) == 1
    assert (payload["finished_total"], payload["failed_total"]) == (5, 2)
    assert [series["kind"] for series in payload["kinds"]] == ["simulate", "primes"]  # most first


def test_the_day_has_hourly_buckets_and_reaches_back_a_day(make_user):
    owner = make_user()
    job(owner, JobState.SUCCEEDED, created=5 * 3600 + 60, started=5 * 3600 + 30, finished=5 * 3600)
    job(owner, JobState.FAILED, created=26 * 3600, started=26 * 3600, finished=25 * 3600)  # too old

    day = history.ops_history(window="day", include_messages=True, include_tracebacks=False, now=NOW)
    hour = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)

    assert (day["bucket_seconds"], len(day["buckets"])) == (3600, 24)
    assert day["buckets"][-1] == int(datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp())
    assert kind_series(day, "simulate")["finished"][-6] == 1
    assert day["finished_total"] == 1 and day["failed_total"] == 0
    assert hour["kinds"] == [] and hour["finished_total"] == 0


def test_runtime_percentiles_per_kind_and_bucket_in_seconds(make_user):
    owner = make_user()
    # Runtimes 1..20 s, all finishing in the current minute; a cancelled one is not a runtime.
    for seconds in range(1, 21):
        job(owner, JobState.SUCCEEDED, created=seconds + 5, started=seconds + 2, finished=2)
    job(owner, JobState.CANCELLED, created=900, started=800, finished=2)

    payload = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)

    simulate = kind_series(payload, "simulate")
    assert simulate["runtime_p50_s"][-1] == 10.0  # nearest rank: the 10th of 20
    assert simulate["runtime_p95_s"][-1] == 19.0  # the 19th of 20
    assert simulate["runtime_p50_s"][:-1] == [None] * 59
    assert (simulate["runtime_p50_s_in_window"], simulate["runtime_p95_s_in_window"]) == (10.0, 19.0)
    assert simulate["finished"][-1] == 21  # the cancelled one did finish
    assert payload["sampled"] is False


def test_queue_wait_per_queue_counts_a_job_still_waiting_and_puts_unknown_kinds_on_default(make_user):
    class NoParams(BaseModel):
        pass

    register(JobKind(name="test_reports", title="Test: reports", description="", params_model=NoParams,
                     run=lambda ctx, params: None, queue="reports"))  # fmt: skip
    try:
        owner = make_user()
        job(owner, JobState.SUCCEEDED, created=60, started=56, finished=50, kind="test_reports")  # 4 s
        job(owner, JobState.RUNNING, created=60, started=50, kind="test_reports")  # 10 s
        job(owner, JobState.QUEUED, created=60)  # still waiting: 60 s so far
        job(owner, JobState.SUCCEEDED, created=60, started=58, finished=40, kind="gone_kind")  # 2 s
        job(owner, JobState.CANCELLED, created=60, finished=30)  # never started: no wait measured

        payload = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)
    finally:
        unregister("test_reports")

    assert [series["queue"] for series in payload["queues"]] == ["default", "reports"]
    reports = queue_series(payload, "reports")
    assert reports["jobs"][-2] == 2  # created at 12:09:30: the minute before the current one
    assert (reports["wait_p50_s"][-2], reports["wait_p95_s"][-2]) == (4.0, 10.0)
    default = queue_series(payload, "default")
    assert default["jobs_in_window"] == 2
    assert (default["wait_p50_s_in_window"], default["wait_p95_s_in_window"]) == (2.0, 60.0)


def test_kinds_past_the_cap_are_drawn_together_as_other(make_user, monkeypatch):
    monkeypatch.setattr(history, "MAX_KINDS", 2)
    owner = make_user()
    for kind, n in [("simulate", 3), ("primes", 2), ("csv_profile", 1), ("export_jobs", 1)]:
        for _ in range(n):
            job(owner, JobState.SUCCEEDED, created=50, started=40, finished=30, kind=kind)

    payload = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)

    assert [(s["kind"], s["finished_in_window"]) for s in payload["kinds"]] == [
        ("simulate", 3),
        ("primes", 2),
        ("(other)", 2),
    ]


def test_percentiles_come_from_a_bounded_sample_that_says_so(make_user, monkeypatch):
    monkeypatch.setattr(history, "SAMPLE_ROWS", 60)  # one row per minute bucket when sampled
    owner = make_user()
    Job.objects.bulk_create(
        Job(owner=owner, kind="simulate", state=JobState.SUCCEEDED, finished_at=NOW - timedelta(seconds=s),
            started_at=NOW - timedelta(seconds=s + 10), created_at=NOW - timedelta(seconds=s + 20))
        for s in [60] * 40 + [30 * 60] * 40
    )  # fmt: skip

    payload = history.ops_history(window="hour", include_messages=True, include_tracebacks=False, now=NOW)

    assert payload["sampled"] is True
    assert payload["sample_rows"] <= 2 * 60
    simulate = kind_series(payload, "simulate")
    assert simulate["finished_in_window"] == 80  # counts are exact: SQL, not the sample
    assert simulate["runtime_p50_s"][-2] == simulate["runtime_p50_s"][-31] == 10.0  # both buckets


def test_the_cost_does_not_grow_with_history(make_user, django_assert_max_num_queries):
    owner = make_user()
    job(owner, JobState.FAILED, created=70, started=65, finished=60, error="boom", error_class="ValueError")
    job(owner, JobState.FAILED, created=70, started=65, finished=60, error="old style\nline 2")
    with django_assert_max_num_queries(7) as before:
        history.ops_history(window="day", include_messages=True, include_tracebacks=True, now=NOW)
    old = [
        Job(owner=owner, kind="simulate", state=JobState.FAILED, error="x", error_class="OldError",
            finished_at=NOW - timedelta(days=3 + i / 1000), started_at=NOW - timedelta(days=4))
        for i in range(2000)
    ]  # fmt: skip
    Job.objects.bulk_create(old)

    with django_assert_max_num_queries(len(before.captured_queries)):
        payload = history.ops_history(window="day", include_messages=True, include_tracebacks=True, now=NOW)

    assert {group["label"] for group in payload["failures"]} == {"ValueError", "(unknown): old style"}


def test_an_unknown_window_is_refused():
    with pytest.raises(ValueError, match="hour, day"):
        history.ops_history(window="week", include_messages=True, include_tracebacks=False)


# --- Failure groups ------------------------------------------------------------------------------


def test_failures_are_grouped_by_error_class_with_count_kinds_latest_message_and_a_link(make_user):
    owner = make_user()
    for seconds in (600, 400, 200):
        job(owner, JobState.FAILED, created=seconds + 9, started=seconds + 5, finished=seconds,
            error=f"'utf-8' codec can't decode byte at {seconds}", error_class="UnicodeDecodeError",
            kind="csv_profile", traceback=f"Traceback:\n  at {seconds}\nUnicodeDecodeError")  # fmt: skip
    job(owner, JobState.FAILED, created=99, started=95, finished=90, error="Time limit exceeded (60 s).",
        error_class="TimeLimitExceeded", kind="primes")  # fmt: skip
    job(
        owner,
        JobState.FAILED,
        created=99,
        started=95,
        finished=80,
        error="decode",
        error_class="UnicodeDecodeError",
    )
    job(owner, JobState.SUCCEEDED, created=99, started=95, finished=70)

    groups, total, sampled = history.failure_groups(
        since=NOW - timedelta(hours=1), until=NOW, include_messages=True, include_tracebacks=False
    )

    assert (total, sampled) == (2, False)
    first = groups[0]
    assert first["label"] == first["error_class"] == "UnicodeDecodeError"
    assert first["count"] == 4
    assert first["kinds"] == ["csv_profile", "simulate"]
    assert first["latest_message"] == "decode"
    assert first["latest_at"] == (NOW - timedelta(seconds=80)).isoformat()
    # Exactly the group's jobs: its class, not a search that a label or message could also match
    # (found by review: "TimeoutError" also selected ConnectTimeoutError and a file named after it),
    # and the group's own bounds, not "the last N minutes" from when the link is followed.
    assert first["jobs_url"] == "/?state=failed&error_class=UnicodeDecodeError"
    since, until = (NOW - timedelta(hours=1)).isoformat(), NOW.isoformat()
    assert first["bulk_url"] == "/operations/bulk/?" + urllib.parse.urlencode(
        {"preview": "1", "action": "retry", "states": "failed", "error_class": "UnicodeDecodeError",
         "finished_after": since, "finished_before": until}
    )  # fmt: skip
    assert "traceback" not in first
    assert (groups[1]["label"], groups[1]["count"], groups[1]["kinds"]) == (
        "TimeLimitExceeded",
        1,
        ["primes"],
    )


def test_failures_without_a_class_are_grouped_by_their_errors_first_line(make_user):
    owner = make_user()
    job(owner, JobState.FAILED, created=99, started=95, finished=90, error="Worker lost\n(pid 12)")
    job(owner, JobState.FAILED, created=99, started=95, finished=80, error="Worker lost\n(pid 13)")
    job(owner, JobState.FAILED, created=99, started=95, finished=70, error="\nDisk full: /tmp & more")

    groups, total, _ = history.failure_groups(
        since=NOW - timedelta(hours=1), until=NOW, include_messages=True, include_tracebacks=False
    )

    assert total == 2
    assert [(g["label"], g["count"], g["error_class"]) for g in groups] == [
        ("(unknown): Worker lost", 2, ""),
        ("(unknown): Disk full: /tmp & more", 1, ""),
    ]
    assert groups[0]["latest_message"] == "Worker lost\n(pid 13)"
    assert groups[1]["jobs_url"] == "/?state=failed&q=Disk+full%3A+%2Ftmp+%26+more"
    assert groups[1]["bulk_url"] == ""  # no exact filter for an unclassed group: no bulk link


def test_groups_messages_and_tracebacks_are_bounded(make_user, monkeypatch):
    owner = make_user()
    for i in range(history.MAX_FAILURE_GROUPS + 5):
        job(owner, JobState.FAILED, created=99, started=95, finished=90 - i, error_class=f"Error{i:02}",
            error="é" * 5000, traceback="frame\n" * 10_000 + "Error: the end")  # fmt: skip

    groups, total, _ = history.failure_groups(
        since=NOW - timedelta(hours=1), until=NOW, include_messages=True, include_tracebacks=True
    )

    assert total == history.MAX_FAILURE_GROUPS + 5
    assert len(groups) == history.MAX_FAILURE_GROUPS
    assert groups[0]["label"] == "Error24"  # the same count: the latest first
    for group in groups:
        assert len(group["latest_message"].encode()) <= history.MESSAGE_BYTES
        assert group["latest_message"].endswith("…")
        assert len(group["traceback"].encode()) <= history.TRACEBACK_BYTES
        assert group["traceback"].startswith("…") and group["traceback"].endswith("Error: the end")


# --- The endpoint: who may see what --------------------------------------------------------------


def test_anonymous_visitors_get_401(make_user):
    response = Client().get(HISTORY)
    assert response.status_code == 401


def test_a_user_without_the_operator_view_gets_403(make_user):
    user = grant_powers(make_user(), Power.VIEW_ALL_RESULTS)  # results, but not the operator view
    response = operator_client(user).get(HISTORY)
    assert response.status_code == 403
    assert "operator view" in response.json()["detail"]


def test_an_operator_without_the_results_power_never_receives_a_traceback(make_user):
    owner = make_user()
    secret = "SECRET-FRAME-in-traceback"
    now = timezone.now()  # the endpoint reads the real last hour
    job(owner, JobState.FAILED, created=99, started=95, finished=90, error="boom", error_class="KeyError",
        traceback=f"Traceback\n{secret}\nKeyError", now=now)  # fmt: skip
    job(
        owner,
        JobState.FAILED,
        created=99,
        started=95,
        finished=80,
        error="old",
        traceback=f"Traceback\n{secret}",
        now=now,
    )
    viewer = operator_client(grant_powers(make_user(), Power.USE_OPERATOR_VIEW))
    full = operator_client(
        grant_powers(make_user(), Power.USE_OPERATOR_VIEW, Power.VIEW_ALL_JOBS, Power.VIEW_ALL_RESULTS)
    )

    for window in ("hour", "day"):
        response = viewer.get(HISTORY, {"window": window})
        assert response.status_code == 200
        assert secret not in response.content.decode()
        assert all("traceback" not in group for group in response.json()["failures"])
        assert secret not in viewer.get("/operations/").content.decode()

    response = full.get(HISTORY, {"window": "day"})
    assert response.status_code == 200
    groups = {group["label"]: group for group in response.json()["failures"]}
    assert secret in groups["KeyError"]["traceback"]
    assert secret in groups["(unknown): old"]["traceback"]


def test_the_endpoint_answers_the_window_asked_for_and_refuses_others(make_user):
    operator = operator_client(make_user(operator=True))
    job(make_user(), JobState.SUCCEEDED, created=99, started=95, finished=90, now=timezone.now())

    hour = operator.get(HISTORY)
    day = operator.get(HISTORY, {"window": "day"})
    bad = operator.get(HISTORY, {"window": "week"})

    assert (hour.status_code, hour.json()["window"], len(hour.json()["buckets"])) == (200, "hour", 60)
    assert (day.status_code, day.json()["window"], len(day.json()["buckets"])) == (200, "day", 24)
    assert bad.status_code == 400 and "window" in bad.json()["fields"]
    json.dumps(hour.json())  # plain JSON, nothing else


def test_the_endpoint_is_in_the_openapi_document_with_its_payload_shape():
    document = Client().get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/ops/history/"]["get"]
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert set(schemas["History"]["properties"]) == set(history.HistoryPayload.__annotations__)


def test_the_operations_page_has_the_charts_and_the_failure_groups(make_user):
    page = operator_client(make_user(operator=True)).get("/operations/").content.decode()
    assert 'id="ops-history"' in page
    assert 'id="history-failures"' in page
    assert "vendor/uplot/uPlot.min.css" in page and "frontend/operations.css" in page


def test_the_operator_view_alone_gets_classes_and_counts_but_not_what_the_jobs_said(make_user):
    """Found by review: a user holding only "use the operator view" read other users' error text
    (a CSV's file name in it) and job ids here, which "view all jobs" guards everywhere else."""
    owner = make_user()
    now = timezone.now()
    job(owner, JobState.FAILED, created=99, started=95, finished=90, error="payroll-2026.csv: line 7",
        error_class="InvalidCsv", now=now)  # fmt: skip
    job(owner, JobState.FAILED, created=99, started=95, finished=80, error="salaries.csv: boom", now=now)
    viewer = operator_client(grant_powers(make_user(), Power.USE_OPERATOR_VIEW))
    staff = operator_client(grant_powers(make_user(), Power.USE_OPERATOR_VIEW, Power.VIEW_ALL_JOBS))

    seen = viewer.get(HISTORY, {"window": "hour"})
    shown = staff.get(HISTORY, {"window": "hour"})

    assert "payroll" not in seen.content.decode() and "salaries" not in seen.content.decode()
    assert sorted((g["label"], g["count"]) for g in seen.json()["failures"]) == [
        ("(unknown)", 1),
        ("InvalidCsv", 1),
    ]
    assert all(g["latest_job_id"] == "" and g["latest_message"] == "" for g in seen.json()["failures"])
    # Nor a bulk retry link: their preview would select none of these jobs.
    assert all(g["bulk_url"] == "" for g in seen.json()["failures"])
    assert "payroll-2026.csv: line 7" in shown.content.decode()
