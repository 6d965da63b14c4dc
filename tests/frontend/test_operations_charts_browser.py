"""The Operations page's charts over time and failure groups (issue 16 §11, §13) in headless
Chromium against the real web server, at desktop and phone widths: the charts draw the seeded
jobs, the window switch reads the last day, failures are grouped by error class with a link to
the jobs, tracebacks reach only the "see all results" power, nothing overflows a phone's width,
axe-core finds nothing serious, and the page's CSP is never violated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import Job, JobState
from jobs.permissions import Power
from tests.conftest import grant_powers
from tests.frontend.test_accessibility_browser import axe_violations
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

SECRET = "SECRET-FRAME-only-for-results-power"
CHARTS = ("chart-finished", "chart-failed", "chart-runtime", "chart-wait")


def seeded(owner: Any, state: JobState, *, ago: float, runtime: float = 4.0, wait: float = 1.0,
           kind: str = "simulate", **fields: Any) -> Job:  # fmt: skip
    """A job that finished ``ago`` seconds ago after ``runtime`` s, having waited ``wait`` s."""
    job = make_job(owner=owner, state=state, kind=kind, **fields)
    finished = timezone.now() - timedelta(seconds=ago)
    started = finished - timedelta(seconds=runtime)
    Job.objects.filter(pk=job.pk).update(
        created_at=started - timedelta(seconds=wait), started_at=started, finished_at=finished
    )
    return job


def seed(owner: Any) -> None:
    """In the last hour: simulate 3 succeeded + 1 failed, csv_profile 2 failed (UnicodeDecodeError
    with the simulate one), primes 1 failed (TimeLimitExceeded); 5 hours ago: one more simulate."""
    for ago in (90, 100, 110):
        seeded(owner, JobState.SUCCEEDED, ago=ago)
    unicode = {
        "error_class": "UnicodeDecodeError",
        "traceback": f"Traceback (most recent call last):\n{SECRET}",
    }
    seeded(owner, JobState.FAILED, ago=80, error="'utf-8' codec can't decode byte 0xff", **unicode)
    for ago in (120, 130):
        seeded(owner, JobState.FAILED, ago=ago, kind="csv_profile", error="bad byte", **unicode)
    seeded(owner, JobState.FAILED, ago=70, kind="primes", error="Time limit exceeded (60 s).",
           error_class="TimeLimitExceeded")  # fmt: skip
    seeded(owner, JobState.SUCCEEDED, ago=5 * 3600)


def csp_watch(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text))
    page.on("pageerror", lambda error: seen.append(f"uncaught {error}"))
    return seen


def policy_problems(seen: list[str]) -> list[str]:
    return [line for line in seen if "Content Security Policy" in line or "uncaught" in line]


def test_the_charts_draw_the_window_switch_reads_the_day_and_failures_are_grouped(context, make_user):
    operator = make_user(operator=True)  # every power: tracebacks too
    seed(make_user())
    page = context.new_page()
    seen = csp_watch(page)
    log_in(page, operator)

    page.goto("/operations/")
    kinds = page.locator("#history-kinds tbody")
    expect(kinds.locator("tr", has_text="simulate")).to_contain_text("4")
    simulate = [
        cell.strip() for cell in kinds.locator("tr", has_text="simulate").locator("td").all_inner_texts()
    ]
    assert simulate[:3] == ["simulate", "4", "1"]  # finished, failed in the last hour
    assert simulate[3] == "4.0 s"  # runtime p50
    assert [c.strip() for c in kinds.locator("tr", has_text="csv_profile").locator("td").all_inner_texts()][
        :3
    ] == [
        "csv_profile",
        "2",
        "2",
    ]
    default = page.locator("#history-queues tbody tr", has_text="default").locator("td")
    assert [cell.strip() for cell in default.all_inner_texts()] == ["default", "7", "1.0 s", "1.0 s"]
    for chart in CHARTS:
        expect(page.locator(f"#{chart} canvas")).to_have_count(1)
        assert (
            page.locator(f"#{chart} .chart-plot").evaluate("node => node.querySelector('canvas').width") > 0
        )
    label = page.locator("#chart-finished .chart-plot").get_attribute("aria-label") or ""
    assert "simulate" in label and "csv_profile" in label and "last hour" in label
    expect(page.locator("#history-status")).to_contain_text("Last hour")
    expect(page.locator("#history-status")).to_contain_text("7 finished, 4 failed")

    groups = page.locator("#failures-list > li")
    expect(groups).to_have_count(2)
    first = groups.nth(0)
    expect(first.locator("h4")).to_have_text("3 jobs failed with UnicodeDecodeError")
    expect(first).to_contain_text("Kinds: csv_profile, simulate")
    expect(first.locator(".failure-message")).to_have_text("'utf-8' codec can't decode byte 0xff")
    jobs_link = first.locator("a.failure-jobs").get_attribute("href")
    assert jobs_link == "/?state=failed&error_class=UnicodeDecodeError"
    expect(groups.nth(1).locator("h4")).to_have_text("1 job failed with TimeLimitExceeded")
    first.locator("summary", has_text="Latest traceback").click()
    expect(first.locator("details pre")).to_contain_text(SECRET)

    # Nothing is wider than the screen (the charts follow their card, tables scroll inside it).
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    problems = axe_violations(page)
    assert not problems, problems

    page.get_by_label("Last day").check()
    expect(page.locator("#history-status")).to_contain_text("Last day")
    expect(kinds.locator("tr", has_text="simulate")).to_contain_text("5")
    assert kinds.locator("tr", has_text="simulate").locator("td").nth(1).inner_text().strip() == "5"
    expect(page.locator("#history-status")).to_contain_text("8 finished, 4 failed")
    label = page.locator("#chart-finished .chart-plot").get_attribute("aria-label") or ""
    assert "last day" in label
    expect(page.locator("#failures-list > li")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # The link opens the dashboard's failed jobs, searched for the class.
    page.get_by_label("Last hour").check()
    expect(page.locator("#history-status")).to_contain_text("Last hour")
    page.locator("#failures-list > li").nth(0).locator("a.failure-jobs").click()
    page.wait_for_url("**/?state=failed&error_class=UnicodeDecodeError")
    assert not policy_problems(seen), policy_problems(seen)


def test_an_operator_without_the_results_power_gets_the_groups_but_no_traceback(page, make_user):
    viewer = grant_powers(make_user(), Power.USE_OPERATOR_VIEW)
    seed(make_user())
    seen = csp_watch(page)
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if "/api/v1/ops/history/" in r.url else None)
    log_in(page, viewer)

    page.goto("/operations/")
    expect(page.locator("#failures-list > li")).to_have_count(2)
    expect(page.locator("#failures-list > li").nth(0).locator("h4")).to_have_text(
        "3 jobs failed with UnicodeDecodeError"
    )
    expect(page.locator("#failures-list details")).to_have_count(0)
    assert SECRET not in page.content()
    page.get_by_label("Last day").check()
    expect(page.locator("#history-status")).to_contain_text("Last day")
    bodies = [answer.text() for answer in answers]
    assert len(bodies) >= 2 and all(SECRET not in body for body in bodies)
    assert all('"traceback"' not in body for body in bodies)
    assert not policy_problems(seen), policy_problems(seen)


def test_a_failure_group_links_to_the_bulk_retry_of_its_jobs_with_the_count_to_confirm(page, make_user):
    """From "3 jobs failed with UnicodeDecodeError" to "Retry 3 jobs?" in one click: the bulk
    preview of the group's jobs (failed in the window, found by their class)."""
    operator = make_user(is_staff=True, is_superuser=True)
    seed(make_user())
    log_in(page, operator)
    page.goto("/operations/")
    group = page.locator("#failures-list > li").first
    expect(group.locator("h4")).to_have_text("3 jobs failed with UnicodeDecodeError")

    group.locator("a.failure-bulk").click()

    expect(page.get_by_role("heading", name="Retry 3 jobs?")).to_be_visible()
    expect(page.locator(".bulk-examples li")).to_have_count(3)
