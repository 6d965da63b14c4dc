"""A running job whose worker froze or vanished, in headless Chromium: the page itself notices
that its heartbeat is late (a frozen worker pushes nothing) and stops showing a confident ETA."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import JobState
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_a_running_job_whose_worker_went_silent_shows_no_progress_instead_of_an_eta(page, make_user):
    """Pass: the row first shows the rate and ETA; with no push at all, once the job has been
    silent past its payload's stall_after (10 s at the default heartbeat limit of 5 s) it says
    "no progress for N s" instead, on the dashboard and on the job's page."""
    user = make_user()
    now = timezone.now()
    job = make_job(
        owner=user, state=JobState.RUNNING, progress_current=50, progress_total=100,
        started_at=now - timedelta(seconds=12), heartbeat_at=now - timedelta(seconds=2),
    )  # fmt: skip
    log_in(page, user)

    rate = page.locator("li.job").first.locator(".job-rate")
    expect(rate).to_have_text(re.compile(r"/s · .* left$"))
    expect(rate).to_have_text(re.compile(r"^no progress for 1\d s$"), timeout=15_000)
    expect(page.locator("li.job").first).to_have_attribute("data-stalled", "")

    page.goto(f"/jobs/{job.id}/")
    expect(page.locator(".job-rate").first).to_have_text(re.compile(r"^no progress for \d+ s$"))
