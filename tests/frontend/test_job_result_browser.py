"""The job page shows results it is never sent whole (issue 11, item 3): a large result is fetched
by reference, a page at a time, and small results still show as before."""

import io
import uuid

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs import states
from jobs.kinds.csv_profile.profiler import profile_csv
from jobs.models import Job, JobState
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def finished_profile(owner, columns: int) -> Job:
    header = ",".join(f"col{i}" for i in range(columns))
    row = ",".join("v" * 300 for _ in range(columns))
    result = profile_csv(io.BytesIO(f"{header}\n{row}\n{row}\n".encode()))
    result["file_name"] = "wide.csv"
    job = Job.objects.create(
        owner=owner, kind="csv_profile", params={"upload_id": str(uuid.uuid4())}, state=JobState.RUNNING,
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result=result)
    return job


def test_a_wide_profile_shows_its_first_columns_and_the_rest_on_demand(page, make_user):
    owner = make_user()
    job = finished_profile(owner, columns=120)
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")

    box = page.locator("#result")
    expect(box).to_contain_text("wide.csv: 2 rows, 120 columns")
    rows = box.locator("table.profile tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#result-status")).to_contain_text("Showing 50 of 120 columns")
    expect(page.locator("#result-status")).to_contain_text("cut (…)")
    expect(rows.first.locator("td").last).to_have_text("v" * 200 + "… (2)")

    page.get_by_role("button", name="Show more columns").click()
    expect(rows).to_have_count(100)
    page.get_by_role("button", name="Show more columns").click()
    expect(rows).to_have_count(120)
    expect(rows.last.locator("th")).to_have_text("col119")
    expect(page.get_by_role("button", name="Show more columns")).to_be_hidden()


def test_a_small_result_still_shows_from_the_payload(page, make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result={"steps": 7})
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")

    expect(page.locator("#result pre")).to_contain_text('"steps": 7')


def test_a_long_error_is_cut_in_the_row_and_shown_whole_on_demand(page, make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=JobState.FAILED, error="boom " * 500 + "THE END")
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")

    expect(page.locator(".job-error")).not_to_contain_text("THE END")
    page.get_by_role("button", name="Show the whole error").click()
    expect(page.locator("#result pre")).to_contain_text("THE END")
