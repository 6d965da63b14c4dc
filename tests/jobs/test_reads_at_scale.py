"""Reads that do not grow with history (issue 15 §4): each read is an index probe or a bounded
read whatever the number of jobs, which these tests prove by the query plan (PostgreSQL's EXPLAIN
with sequential scans priced out, so a tiny test table does not hide a missing index; SQLite's
EXPLAIN QUERY PLAN) and by the statements issued, not by timing (bench/history.py times them)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import ops
from jobs import selectors
from jobs.admin import JobAdmin
from jobs.models import Job, JobState
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db


def plan_of(queryset: Any) -> str:
    """The database's plan for ``queryset``, as text (node types, index names)."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Priced out, not forbidden: with a dozen rows a sequential scan and a sort is
            # cheapest, whichever indexes exist; this asks whether an index can give the rows
            # in order (if none can, the plan still sorts, and the test says so).
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            return json.dumps(cursor.fetchone()[0])
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def assert_read_in_order_from(plan: str, index: str) -> None:
    """The plan reads ``index`` and sorts nothing: the rows come in the index's order, so a
    LIMIT stops after the page whatever the table holds."""
    assert index in plan, plan
    if connection.vendor == "postgresql":
        assert '"Sort"' not in plan and "Incremental Sort" not in plan, plan
    else:
        assert "TEMP B-TREE" not in plan, plan


def some_jobs(owner: Any, n: int = 12) -> list[Job]:
    states = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.RUNNING, JobState.QUEUED]
    return [make_job(owner=owner, state=states[i % len(states)]) for i in range(n)]


def test_the_staff_job_list_and_snapshot_read_everyone_s_newest_jobs_from_an_index(make_user):
    staff = make_user(operator=True)
    some_jobs(make_user())
    plan = plan_of(selectors.job_list_for_user(user=staff))
    assert_read_in_order_from(plan, "job_created_idx")


def test_the_next_page_of_the_staff_list_starts_at_its_cursor_in_the_index(make_user):
    staff = make_user(operator=True)
    jobs = some_jobs(make_user())
    cursor = selectors.job_cursor(jobs[5])
    plan = plan_of(selectors.job_list_for_user(user=staff, cursor=cursor))
    assert_read_in_order_from(plan, "job_created_idx")


def test_the_staff_list_in_one_state_is_read_from_that_state_s_index(make_user):
    staff = make_user(operator=True)
    some_jobs(make_user())
    plan = plan_of(selectors.job_list_for_user(user=staff, states=[JobState.FAILED]))
    assert_read_in_order_from(plan, "job_state_created_idx")


def test_the_running_count_probes_the_owner_s_running_jobs_not_all_their_jobs(make_user):
    owner = make_user()
    some_jobs(owner, 20)
    if connection.vendor == "postgresql":
        # PostgreSQL picks among the indexes that can serve this WHERE by statistics: with none
        # (or those other tests left) it may take any index on owner. Give it a table shaped as
        # history makes it, several owners with mostly finished jobs, and its own statistics,
        # as autovacuum would: then the index holding both owner and state is the cheapest probe.
        for _ in range(5):
            other = make_user()
            Job.objects.bulk_create(
                Job(
                    owner=other,
                    kind="simulate",
                    params={},
                    state=JobState.SUCCEEDED,
                    finished_at=timezone.now(),
                )
                for _ in range(40)
            )
            make_job(owner=other, state=JobState.RUNNING)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE jobs_job")
    queryset = Job.objects.filter(owner_id=owner.pk, state=JobState.RUNNING)
    plan = plan_of(queryset.order_by().values("pk"))  # the count's own WHERE, unordered
    assert "job_owner_state_idx" in plan, plan
    if connection.vendor == "sqlite":
        # The search uses both columns (before: job_owner_created_idx, every job of the owner).
        assert re.search(r"job_owner_state_idx \(owner_id=\? AND state=\?\)", plan), plan
    assert selectors.running_count(owner_id=owner.pk) == 4


def _require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's estimates: SQLite keeps exact counts (it has no statistics)")


def _large(monkeypatch: pytest.MonkeyPatch, limit: int = 5) -> None:
    """Make a dozen rows count as a large table, with statistics as autovacuum would leave."""
    monkeypatch.setattr(selectors, "EXACT_COUNT_LIMIT", limit, raising=False)
    monkeypatch.setattr(ops, "EXACT_COUNT_LIMIT", limit, raising=False)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")


def _jobs_reads(queries: list[dict[str, Any]]) -> list[str]:
    """The statements that read rows of jobs (not the catalog's statistics about them)."""
    return [q["sql"] for q in queries if 'FROM "jobs_job"' in q["sql"]]


def test_the_overview_reads_only_active_jobs_once_the_table_is_large(make_user, monkeypatch):
    _require_postgresql()
    some_jobs(make_user(), 20)
    _large(monkeypatch)
    with CaptureQueriesContext(connection) as captured:
        data = ops.overview()
    for sql in _jobs_reads(captured.captured_queries):
        # Every read of jobs is bounded: by state (queued, running) or by the last hour.
        assert re.search(r'"state" (IN \(|= )|"finished_at" >=', sql), sql
    # Active states exact; the finished ones are the planner's estimates, and say so. ANALYZE
    # sampled the whole small table, so here the estimates are exact too.
    assert data["jobs_by_state"] == {"queued": 4, "running": 4, "succeeded": 4, "failed": 4, "cancelled": 4}
    assert data["jobs_by_state_estimated"] == ["succeeded", "failed", "cancelled"]


def test_job_counts_stay_exact_while_the_table_is_small(make_user):
    some_jobs(make_user(), 10)
    counts = ops.job_state_counts()
    assert counts.estimated == []
    assert counts.counts == {"queued": 2, "running": 2, "succeeded": 2, "failed": 2, "cancelled": 2}


def test_jobs_finished_in_the_last_hour_are_read_by_finish_time(make_user):
    owner = make_user()
    some_jobs(owner, 10)
    make_job(owner=owner, state=JobState.FAILED, finished_at=timezone.now() - timedelta(hours=2))
    with CaptureQueriesContext(connection) as captured:
        finished = ops.finished_last_hour()
    assert finished == {"succeeded": 2, "failed": 2, "cancelled": 2}
    (sql,) = [q["sql"] for q in captured.captured_queries]
    if connection.vendor == "sqlite":
        # Before: SQLite searched by state (every finished job ever) and filtered the hour.
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        assert "job_finished_idx" in plan, plan


def _admin(make_user: Any) -> Client:
    admin_user = make_user(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin_user)
    return client


def _counts_every_job(queries: list[dict[str, Any]]) -> list[str]:
    """COUNT statements over jobs that are not capped by a LIMIT."""
    return [
        q["sql"]
        for q in queries
        if "COUNT(" in q["sql"].upper() and '"jobs_job"' in q["sql"] and "LIMIT" not in q["sql"]
    ]


def test_the_admin_job_list_labels_an_estimated_count_about_and_never_counts_every_job(
    make_user, monkeypatch
):
    _require_postgresql()
    client = _admin(make_user)
    some_jobs(make_user(), 12)
    _large(monkeypatch)
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/jobs/job/")
    assert response.status_code == 200
    assert _counts_every_job(captured.captured_queries) == []
    assert re.search(r"about 12 jobs", response.content.decode()), response.content.decode()[-2000:]


def test_every_count_the_admin_job_list_prints_is_labelled_about_when_it_is_an_estimate(
    make_user, monkeypatch
):
    # Found by review: the pagination line said "about", but "Select all N jobs", "All N selected"
    # and a search's "N results" printed the estimate as if exact.
    _require_postgresql()
    client = _admin(make_user)
    owner = make_user(username="estimated-owner")
    some_jobs(owner, 12)
    _large(monkeypatch)
    monkeypatch.setattr(JobAdmin, "list_per_page", 5)

    body = client.get("/admin/jobs/job/").content.decode()
    assert "Select all (about 12) jobs" in body and "All (about 12) selected" in body
    assert not re.search(r"Select all \d", body) and not re.search(r"All \d+ selected", body)

    body = client.get("/admin/jobs/job/?q=estimated-owner").content.decode()
    assert re.search(r"(about|more than) \d+ results", body), body[-3000:]
    assert not re.search(r">\s*\d+ results?", body)


def _estimated_low_with_an_oldest_job(owner: Any, monkeypatch: pytest.MonkeyPatch) -> Job:
    """12 jobs the statistics know of, then an oldest job and 30 more they do not (43 in all),
    listed 5 a page: the admin's estimate is below the real count. Returns the oldest job."""
    some_jobs(owner, 12)
    _large(monkeypatch)
    oldest = make_job(owner=owner, state=JobState.SUCCEEDED)
    Job.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(days=30))
    some_jobs(owner, 30)
    monkeypatch.setattr(JobAdmin, "list_per_page", 5)
    return oldest


def test_the_admin_s_oldest_pages_open_when_the_estimate_is_low(make_user, monkeypatch):
    # Found by review: with an estimate below the real count, Django's paginator refused the
    # pages past it and the admin redirected them to ?e=1 (an error page of the list).
    _require_postgresql()
    client = _admin(make_user)
    oldest = _estimated_low_with_an_oldest_job(make_user(), monkeypatch)

    response = client.get("/admin/jobs/job/?p=9")

    assert response.status_code == 200, response.get("Location")
    assert f"/admin/jobs/job/{oldest.pk}/change/" in response.content.decode()
    assert client.get("/admin/jobs/job/?p=12").status_code == 200  # past the end: an empty page
    # Each page past the estimate links to the next while it is full (found by review: they
    # opened, but only by typing their address).
    body = client.get("/admin/jobs/job/?p=3").content.decode()
    assert re.search(r'href="\?p=4"', body), body.split('class="paginator"')[-1][:600]


def test_a_search_the_planner_underestimates_says_more_than_the_limit_and_pages_to_its_last_row(
    make_user, monkeypatch
):
    # Found by review: a search matching 52,001 jobs, estimated at 6 rows, read "about 10001"
    # (the floor), "Select all (about 10001)" would act on all 52,001, and pages past 4x the
    # estimate were refused, so the oldest matches could not be reached.
    _require_postgresql()
    client = _admin(make_user)
    oldest = _estimated_low_with_an_oldest_job(make_user(username="underestimated-owner"), monkeypatch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")  # the table's size known; the search's selectivity guessed

    body = client.get("/admin/jobs/job/?q=underestimated").content.decode()
    assert "more than 5 results" in body and "Select all (more than 5) jobs" in body, body[-3000:]

    response = client.get("/admin/jobs/job/?q=underestimated&p=9")
    assert response.status_code == 200, response.get("Location")
    assert f"/admin/jobs/job/{oldest.pk}/change/" in response.content.decode()


@pytest.mark.parametrize("page", ["0", "-1", str(10**30), str(10**16), "abc"])
def test_the_admin_s_job_list_refuses_a_page_number_that_is_no_page_as_django_does(
    make_user, monkeypatch, page
):
    # Found by review: 0 and -1 slipped through as "past the estimate" (a negative slice, 500), and
    # 10**30 reached PostgreSQL (bigint out of range, 500); 10**16 opened, an OFFSET walking every
    # job. Django's own answer for a page that is not there is a redirect to ?e=1.
    _require_postgresql()
    client = _admin(make_user)
    some_jobs(make_user(), 12)
    _large(monkeypatch)
    monkeypatch.setattr(JobAdmin, "list_per_page", 5)

    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/admin/jobs/job/?p={page}")

    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 302:
        assert response["Location"].endswith("?e=1")
    assert not [q for q in captured.captured_queries if re.search(r"OFFSET \d{6,}", q["sql"])]


def test_the_admin_job_list_shows_an_exact_count_while_small(make_user):
    client = _admin(make_user)
    some_jobs(make_user(), 7)
    response = client.get("/admin/jobs/job/")
    body = response.content.decode()
    assert re.search(r"\b7 jobs", body) and "about" not in body.split('class="paginator"')[-1]


def test_a_filtered_admin_job_list_does_not_also_count_every_job(make_user):
    client = _admin(make_user)
    some_jobs(make_user(), 10)
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/jobs/job/?state__exact=failed")
    assert response.status_code == 200
    unfiltered = [sql for sql in _counts_every_job(captured.captured_queries) if "WHERE" not in sql]
    assert unfiltered == []
    assert re.search(r"\b2 jobs", response.content.decode())


def test_bounded_count_is_exact_up_to_its_limit_and_reads_no_more_than_it(make_user):
    some_jobs(make_user(), 9)
    with CaptureQueriesContext(connection) as captured:
        assert selectors.bounded_count(Job.objects.all(), limit=20) == (9, True)
    (sql,) = [q["sql"] for q in captured.captured_queries]
    assert "LIMIT 21" in sql
