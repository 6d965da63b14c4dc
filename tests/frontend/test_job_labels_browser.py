"""Issue 16 §4 in headless Chromium, at desktop and phone widths: jobs of one kind can be told
apart. Before, two CSV profiles both read "Profile a CSV file", searching a file name found
nothing, and their notifications were the same words."""

import re

import pytest
from playwright.sync_api import expect

from jobs.models import JobState
from tests.frontend.test_bars_and_rates_browser import WIDTHS, _launch_csvs
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.mark.parametrize("width", WIDTHS)
def test_csv_jobs_show_their_file_name_and_size_and_the_search_finds_them_by_it(
    page, make_user, celery_worker, width
):
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    log_in(page, make_user())
    files = [("quarterly-sales.csv", b"region,amount\nnorth,12\n"), ("inventory.csv", b"a,b\n1,2\n")]
    _launch_csvs(page, files)

    rows = page.locator("li.job")
    expect(rows.locator(".job-label")).to_have_text(["inventory.csv (8 B)", "quarterly-sales.csv (23 B)"])
    for n in (0, 1):
        expect(rows.nth(n)).to_have_attribute("data-state", "succeeded", timeout=20_000)
    # The notifications say which file each one was about.
    expect(page.locator("#toasts")).to_contain_text("Profile a CSV file finished: quarterly-sales.csv (23 B)")

    page.get_by_role("searchbox").fill("quarterly")
    expect(rows.filter(visible=True)).to_have_count(1)
    expect(rows.filter(visible=True).locator(".job-label")).to_have_text("quarterly-sales.csv (23 B)")
    # The filter is in the address: a reload (or a shared link) opens the list filtered.
    expect(page).to_have_url(re.compile(r"\?q=quarterly$"))
    page.reload()
    expect(page.get_by_role("searchbox")).to_have_value("quarterly")
    expect(rows).to_have_count(2)
    expect(rows.filter(visible=True)).to_have_count(1)

    rows.filter(visible=True).locator("a.job-title").click()
    expect(page).to_have_title(re.compile(r"Profile a CSV file: quarterly-sales\.csv \(23 B\)"))
    expect(page.locator("li.job .job-label")).to_have_text("quarterly-sales.csv (23 B)")
    # The label fits the screen's width on a phone too.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_link_with_filters_opens_the_list_filtered_by_state_and_error_class(page, make_user):
    """The Operations page's failure groups link to /?state=failed&error_class=<class>: exactly
    that class's failures (found by review: a search for "TimeoutError" also listed
    ConnectTimeoutError and a file named after it)."""
    user = make_user()
    wanted = make_job(owner=user, state=JobState.FAILED, error="bad byte", error_class="UnicodeDecodeError")
    make_job(owner=user, state=JobState.FAILED, error="UnicodeDecodeError, said the file", error_class="X")
    make_job(owner=user, state=JobState.FAILED, error="boom", error_class="RuntimeError")
    make_job(owner=user, state=JobState.SUCCEEDED)
    log_in(page, user)

    page.goto("/?state=failed&error_class=UnicodeDecodeError")

    expect(page.locator("#filters select[name=state]")).to_have_value("failed")
    expect(page.locator("#filter-class")).to_have_text(re.compile(r"Failed with UnicodeDecodeError"))
    visible = page.locator("li.job").filter(visible=True)
    expect(visible).to_have_count(1)
    expect(visible).to_have_attribute("data-id", str(wanted.id))

    page.get_by_role("button", name="Show every error").click()
    expect(page.locator("li.job").filter(visible=True)).to_have_count(3)
    expect(page).to_have_url(re.compile(r"\?state=failed$"))
