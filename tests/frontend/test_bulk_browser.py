"""The Bulk actions page (/operations/bulk/, issue 16 §12) in headless Chromium against the real
web server, at desktop and phone widths: an operator picks the failed jobs of one kind, sees how
many a retry would act on, confirms that count, and the jobs are retried for their owners; the
page then says what was done and who did it. Each step passes axe-core with one h1."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs.models import Job, JobBulkAction, JobState
from tests.frontend.test_accessibility_browser import check
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def finished(owner: Any, *, state: JobState, kind: str, minutes: int) -> Job:
    params = {"steps": 1, "step_ms": 0} if kind == "simulate" else {"n": 100}
    job = make_job(owner=owner, state=state, kind=kind, params=params, error="Boom")
    at = timezone.now() - timedelta(minutes=minutes)
    Job.objects.filter(pk=job.pk).update(created_at=at, started_at=at, finished_at=at)
    return job


def test_an_operator_retries_the_failed_jobs_of_one_kind_after_confirming_the_count(context, make_user):
    operator, owner = make_user(operator=True), make_user()
    chosen = [finished(owner, state=JobState.FAILED, kind="simulate", minutes=10 + i) for i in range(3)]
    finished(owner, state=JobState.FAILED, kind="simulate", minutes=300)  # outside the window
    finished(owner, state=JobState.FAILED, kind="primes", minutes=10)  # another kind
    finished(owner, state=JobState.SUCCEEDED, kind="simulate", minutes=10)  # not failed
    page = context.new_page()
    log_in(page, operator)

    page.goto("/operations/")
    page.get_by_role("link", name="Bulk actions").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Bulk actions")
    problems = check(page, "bulk actions (filter)")

    page.get_by_label("Retry", exact=True).check()
    page.get_by_label("Failed", exact=True).check()
    page.get_by_label("Simulated work", exact=True).check()
    page.get_by_label("Jobs", exact=True).select_option("created")
    page.get_by_label("within the last").fill("1")
    page.get_by_label("Unit").select_option("hours")
    page.get_by_role("button", name="Preview").click()

    expect(page.get_by_role("heading", name="Retry 3 jobs?")).to_be_visible()
    expect(page.locator(".bulk-examples li")).to_have_count(3)
    confirm = page.get_by_role("button", name="Retry 3 jobs")
    problems += check(page, "bulk actions (confirmation)")
    assert Job.objects.count() == 6  # nothing happened before the confirmation

    confirm.click()

    expect(page.locator(".bulk-message")).to_have_text("Retried 3 jobs.")
    newest = page.locator("#bulk-audit li").first
    expect(newest).to_contain_text(f"{operator.username} retry: 3 of 3 confirmed")
    expect(newest).to_contain_text("state failed, kind simulate")
    problems += check(page, "bulk actions (done)")
    retries = Job.objects.filter(retry_of__isnull=False)
    assert sorted(job.retry_of_id for job in retries) == sorted(job.id for job in chosen)
    assert {job.owner_id for job in retries} == {owner.pk}
    audit = JobBulkAction.objects.get()
    assert (audit.username, audit.action, audit.confirmed, audit.acted) == (operator.username, "retry", 3, 3)
    assert not problems, "\n".join(problems)


def test_jobs_deleted_in_bulk_leave_the_owner_s_open_dashboard_and_job_page(
    context, browser, live_server_url, make_user
):
    """Before, nothing told open pages: deleted jobs stayed listed until a reload."""
    from tests.frontend.test_live_header_browser import wait_for_snapshot

    # Deleting another user's jobs takes Django's "Can delete job" too: a superuser holds both.
    operator, owner = make_user(is_staff=True, is_superuser=True), make_user()
    doomed = [finished(owner, state=JobState.FAILED, kind="simulate", minutes=5) for _ in range(2)]
    kept = finished(owner, state=JobState.SUCCEEDED, kind="simulate", minutes=5)
    dashboard = context.new_page()
    log_in(dashboard, owner)
    wait_for_snapshot(dashboard)
    expect(dashboard.locator("li.job")).to_have_count(3)
    job_page = context.new_page()
    job_page.goto(f"/jobs/{doomed[0].id}/")
    wait_for_snapshot(job_page)

    admin = browser.new_context(base_url=live_server_url)  # the operator's own session
    page = admin.new_page()
    log_in(page, operator)
    page.goto("/operations/bulk/")
    page.get_by_label("Delete", exact=True).check()
    page.get_by_label("Failed", exact=True).check()
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("button", name="Delete 2 jobs").click()
    expect(page.locator(".bulk-message")).to_have_text("Deleted 2 jobs.")
    admin.close()

    expect(dashboard.locator("li.job")).to_have_count(1)
    expect(dashboard.locator("li.job")).to_have_attribute("data-id", str(kept.id))
    expect(job_page.locator("#action-error")).to_have_text("This job was deleted.")
    expect(job_page.locator("#retry")).to_be_hidden()
    # Nothing on it acts on the job any more (found by review: these stayed).
    expect(job_page.locator("#log-download")).to_be_hidden()
    expect(job_page.locator("#log-follow")).to_be_hidden()
    expect(job_page.locator("summary", has_text="Re-run with edited parameters")).to_be_hidden()


def test_the_retry_of_a_failure_group_keeps_its_class_and_bounds_through_the_confirmation(context, make_user):
    """The Operations page links a failure group's "Retry them" to the preview with an exact error
    class and the group's finished bounds; they are shown, kept in the confirm form, and the
    retry acts on exactly the group's jobs, once."""
    operator, owner = make_user(operator=True), make_user()
    group = [finished(owner, state=JobState.FAILED, kind="simulate", minutes=40 + i) for i in range(2)]
    Job.objects.filter(pk__in=[job.pk for job in group]).update(error_class="UnicodeDecodeError")
    other_class = finished(owner, state=JobState.FAILED, kind="simulate", minutes=40)
    Job.objects.filter(pk=other_class.pk).update(error_class="UnicodeError")
    later = finished(owner, state=JobState.FAILED, kind="simulate", minutes=5)  # after the group
    Job.objects.filter(pk=later.pk).update(error_class="UnicodeDecodeError")
    until = (timezone.now() - timedelta(minutes=30)).replace(microsecond=0)
    link = "/operations/bulk/?" + urlencode(
        {"preview": "1", "action": "retry", "states": "failed", "error_class": "UnicodeDecodeError",
         "finished_after": (until - timedelta(hours=1)).isoformat(), "finished_before": until.isoformat()}
    )  # fmt: skip
    page = context.new_page()
    log_in(page, operator)

    page.goto(link)

    expect(page.get_by_role("heading", name="Retry 2 jobs?")).to_be_visible()
    expect(page.locator("#bulk-bounds")).to_contain_text(f"to before {until:%Y-%m-%d %H:%M:%S} UTC")
    expect(page.locator("#bulk-summary")).to_contain_text("error class UnicodeDecodeError")
    problems = check(page, "bulk actions (a failure group's retry)")

    page.get_by_role("button", name="Retry 2 jobs").click()

    expect(page.locator(".bulk-message")).to_have_text("Retried 2 jobs.")
    retried = Job.objects.filter(retry_of__isnull=False).values_list("retry_of_id", flat=True)
    assert sorted(retried) == sorted(job.id for job in group)
    assert JobBulkAction.objects.get().filter["error_class"] == "UnicodeDecodeError"
    assert not problems, "\n".join(problems)
