"""Automatic retries in headless Chromium: a job backing off says which attempt failed and counts
down to the next; its page lists the failed attempts with their errors."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import JobState
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_a_job_backing_off_counts_down_to_its_next_attempt_and_its_page_lists_the_failed_one(page, make_user):
    user = make_user()
    failed_at = timezone.now()
    job = make_job(
        owner=user, state=JobState.QUEUED, kind="test_flaky", params={}, admitted_at=None,
        attempts=1, max_attempts=3, retry_at=failed_at + timedelta(seconds=40),
        wait_code="retry", wait_note="Attempt 1 of 3 failed: service unavailable — retrying in 40 s.",
        error="service unavailable",
        attempt_errors=[{"attempt": 1, "error": "service unavailable", "failed_at": failed_at.isoformat(),
                         "retry_in": 40}],
    )  # fmt: skip
    log_in(page, user)

    row = page.locator(f"#job-{job.id}")
    expect(row.locator(".badge")).to_have_text("retrying")
    expect(row.locator(".job-attempt")).to_have_text("attempt 1 of 3")
    message = row.locator(".job-message")
    expect(message).to_have_text(
        re.compile(r"^Attempt 1 of 3 failed: service unavailable — retrying in (3\d|40) s\.$")
    )
    first = message.text_content()
    # It counts down by itself (no push arrives meanwhile).
    expect(message).not_to_have_text(first, timeout=3_000)
    expect(row.locator(".job-error")).to_have_text("")  # the reason quotes it already

    page.goto(f"/jobs/{job.id}/")
    attempts = page.locator("#attempts li")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("Attempt 1 failed")
    expect(attempts.first).to_contain_text("retried after 40 s: service unavailable")
    expect(page.locator("#timeline li[data-state=retrying]")).to_have_count(1)
    expect(page.locator("#job-meta")).to_contain_text("1 of 3 (a failed attempt is retried automatically)")


def test_a_flaky_job_is_retried_live_on_its_page_until_it_succeeds(
    page, make_user, celery_worker, housekeeping_worker
):
    user = make_user()
    log_in(page, user)
    response = page.request.post(
        "/api/v1/jobs/",
        data={"kind": "test_flaky", "params": {"fail_attempts": 2}},
        headers={"X-CSRFToken": next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")},
    )
    assert response.status == 201, response.text()
    job_id = response.json()["id"]
    page.goto(f"/jobs/{job_id}/")
    expect(page.locator(".badge").first).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("#attempts li")).to_have_count(2)
    expect(page.locator("#attempts li").nth(1)).to_contain_text("service unavailable on attempt 2")
    expect(page.locator("#job-meta")).to_contain_text("3 of 3, 2 retried automatically")


def test_a_job_that_succeeded_at_its_first_attempt_does_not_say_it_was_retried(page, make_user):
    """Found by review: "Attempt 1 of 3 (retried automatically)" on a job that never failed."""
    user = make_user()
    job = make_job(owner=user, state=JobState.SUCCEEDED, attempts=1, max_attempts=3)
    log_in(page, user)

    page.goto(f"/jobs/{job.id}/")

    expect(page.locator("#job-meta")).to_contain_text("1 of 3")
    expect(page.locator("#job-meta")).not_to_contain_text("retried")
