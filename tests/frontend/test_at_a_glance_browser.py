"""The dashboard people trust at a glance (issue 16, items 5, 7 and 8), in headless Chromium at a
desktop (1280 px) and a phone (390 px) width: pages fit the screen, rows tell the story, and the
log reads like a CI run page."""

import datetime as dt
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from jobs import launch, states
from jobs.models import JobLogLine, JobState
from jobs.permissions import Power
from tests.conftest import grant_powers
from tests.frontend.test_dashboard_browser import log_in
from tests.frontend.test_job_result_browser import finished_profile
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

DESKTOP, PHONE = 1280, 390
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"
LONG = "x" * 400  # one unbreakable word
# What sticks out past the window's right edge, to say why a page scrolls sideways.
WIDEST = """[...document.querySelectorAll("body *")]
  .filter(e => e.getBoundingClientRect().right > innerWidth + 1).slice(0, 8)
  .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


@pytest.fixture
def page_at(browser, live_server_url):
    """A fresh tab of the given width (a phone's height for the phone)."""
    contexts = []

    def open_page(width):
        context = browser.new_context(
            base_url=live_server_url, viewport={"width": width, "height": 844 if width == PHONE else 800}
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


def busy_jobs(owner):
    """A succeeded CSV profile of 120 wide columns with a long log, plus rows with long text."""
    profile = finished_profile(owner, columns=120)
    states.job_log_append(job_id=profile.id, lines=[f"Read chunk {i}" for i in range(1, 41)] + [LONG])
    make_job(owner=owner, state=JobState.FAILED, error=LONG)
    make_job(owner=owner, state=JobState.QUEUED, admitted_at=None, wait_code="user_limit",
             wait_note="2 of your jobs are running or next in line, limit 2.")  # fmt: skip
    return profile


# --- 5. Pages fit the screen -------------------------------------------------------------------


def test_a_csv_jobs_log_keeps_half_the_page_and_its_profile_scrolls_inside_its_card(page_at, make_user):
    owner = make_user()
    job = busy_jobs(owner)
    page = page_at(DESKTOP)
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")
    expect(page.locator("#result table.profile tbody tr")).to_have_count(50)
    expect(page.locator("#log .log-line").first).to_be_visible()

    log_width = page.locator("#log").bounding_box()["width"]
    result = page.locator("#result")
    assert log_width >= 450, log_width  # was squeezed to ~100 px by the table beside it
    assert result.evaluate("box => box.scrollWidth > box.clientWidth")  # the table scrolls in its card
    assert page.evaluate(NO_SIDEWAYS_SCROLL)


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
@pytest.mark.parametrize("where", ["dashboard", "job page"])
def test_no_page_scrolls_sideways(page_at, make_user, width, where):
    staff = grant_powers(make_user("operator_with_a_rather_long_name_" + "n" * 40), Power.VIEW_ALL_JOBS,
                         Power.VIEW_ALL_RESULTS)  # fmt: skip
    job = busy_jobs(make_user())
    job.params = {"upload_id": LONG, "note": LONG}
    job.save(update_fields=["params"])
    page = page_at(width)
    log_in(page, staff)
    if where == "job page":
        page.goto(f"/jobs/{job.id}/")
        expect(page.locator("#result table.profile tbody tr")).to_have_count(50)
        expect(page.locator("#log .log-line")).to_have_count(41)
    else:
        expect(page.locator("li.job")).to_have_count(3)

    overflow = page.evaluate(WIDEST)
    assert page.evaluate(NO_SIDEWAYS_SCROLL), overflow


# --- 7. Rows tell the story ---------------------------------------------------------------------


def test_every_row_shows_when_it_was_created_and_started_and_how_long_it_ran(page_at, make_user):
    owner = make_user()
    created = timezone.now() - dt.timedelta(minutes=5)
    started, finished = created + dt.timedelta(seconds=3), created + dt.timedelta(seconds=75)
    job = make_job(owner=owner, state=JobState.SUCCEEDED, started_at=started, finished_at=finished)
    job.created_at = created  # auto_now_add: set again
    job.save(update_fields=["created_at"])
    page = page_at(DESKTOP)
    log_in(page, owner)

    for url in ("/", f"/jobs/{job.id}/"):
        page.goto(url)
        row = page.locator(f"#job-{job.id}")
        times = row.locator(".job-times")
        expect(times.locator(".job-created time")).to_have_attribute("datetime", created.isoformat())
        expect(times.locator(".job-started time")).to_have_attribute("datetime", started.isoformat())
        expect(times.locator(".job-duration")).to_have_text("ran 1 min 12 s")
        expect(times).to_contain_text(re.compile(r"^Created \S"))


def test_a_job_with_several_attempts_shows_which_one_and_how_each_ended(page_at, make_user):
    owner = make_user()
    job = make_job(
        owner=owner, state=JobState.RUNNING, kind="test_flaky", params={}, attempts=3, max_attempts=3
    )
    page = page_at(PHONE)
    log_in(page, owner)

    row = page.locator(f"#job-{job.id}")
    expect(row.locator(".job-attempt")).to_have_text("attempt 3 of 3")
    expect(row.locator(".attempt-chain li")).to_have_text(["#1 failed", "#2 failed", "#3 running"])


def test_a_retry_links_to_the_earlier_job_and_the_earlier_row_to_its_retry(page_at, make_user):
    owner = make_user()
    first = make_job(owner=owner, state=JobState.FAILED, error="boom")
    retry = make_job(owner=owner, state=JobState.SUCCEEDED, retry_of=first)
    page = page_at(DESKTOP)
    log_in(page, owner)

    expect(page.locator(f"#job-{retry.id} .job-chain")).to_have_text(f"Retry of {str(first.id)[:8]}")
    expect(page.locator(f"#job-{first.id} .job-chain")).to_have_text(f"Retried as {str(retry.id)[:8]}")
    page.goto(f"/jobs/{retry.id}/")
    page.locator(f"#job-{retry.id} .job-chain").get_by_role("link", name=str(first.id)[:8]).click()
    expect(page).to_have_url(re.compile(f"/jobs/{first.id}/$"))
    page.goto(f"/jobs/{retry.id}/")
    expect(page.locator("#job-meta").get_by_role("link", name=str(first.id)[:8])).to_have_attribute(
        "href", f"/jobs/{first.id}/"
    )


def test_staff_see_the_owner_of_every_row_from_the_first_paint(page_at, make_user):
    alice = make_user("alice_owner")
    staff = make_user(operator=True)
    job = make_job(owner=alice, state=JobState.SUCCEEDED)
    page = page_at(DESKTOP)
    log_in(page, staff)

    # The job page renders the job once, before the socket says who is looking; nothing newer
    # arrives for a finished job.
    page.goto(f"/jobs/{job.id}/")
    expect(page.locator(f"#job-{job.id} .job-owner")).to_have_text("alice_owner")
    expect(page.locator("#job-meta")).to_contain_text("alice_owner")
    page.goto("/")
    expect(page.locator(f"#job-{job.id} .job-owner")).to_have_text("alice_owner")
    # Not to the owner herself: it is her own list.
    page.context.clear_cookies()
    log_in(page, alice)
    expect(page.locator(f"#job-{job.id} .job-owner")).to_be_hidden()


def test_a_queued_row_says_why_it_waits(page_at, make_user):
    owner = make_user()
    limited = make_job(owner=owner, admitted_at=None, wait_code="user_limit",
                       wait_note="2 of your jobs are running or next in line, limit 2.")  # fmt: skip
    in_line = make_job(owner=owner, admitted_at=None, wait_code="in_line", wait_position=3,
                       wait_note="3rd in line for a worker.")  # fmt: skip
    page = page_at(PHONE)
    log_in(page, owner)

    expect(page.locator(f"#job-{limited.id} .job-wait")).to_have_text("Waiting: your running limit")
    expect(page.locator(f"#job-{limited.id} .job-wait")).to_have_attribute(
        "title", "2 of your jobs are running or next in line, limit 2."
    )
    expect(page.locator(f"#job-{in_line.id} .job-wait")).to_have_text("Waiting: #3 in line")
    page.goto(f"/jobs/{limited.id}/")
    expect(page.locator("#job-meta")).to_contain_text(
        "Waiting" + "your running limit: 2 of your jobs are running or next in line, limit 2."
    )


# --- 8. Logs like a CI run page -----------------------------------------------------------------


def logged_job(owner, lines):
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=lines)
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result={"steps": len(lines)})
    return job


def test_every_kept_log_line_shows_with_its_number_and_time(page_at, make_user):
    owner = make_user()
    job = logged_job(owner, [f"line {i}" for i in range(1, 451)])  # more than a watcher's tail of 200
    first = JobLogLine.objects.get(job=job, seq=1)
    page = page_at(DESKTOP)
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")

    lines = page.locator("#log .log-line")
    expect(lines).to_have_count(450)
    expect(lines.first.locator(".log-num")).to_have_text("1")
    expect(lines.first.locator(".log-text")).to_have_text("line 1")
    expect(lines.first.locator("time")).to_have_attribute("datetime", first.created_at.isoformat())
    expect(lines.first.locator("time")).not_to_have_text("")
    expect(page.locator("#log-count")).to_have_text("450 lines")


def test_a_live_log_line_shows_its_time(page_at, make_user, celery_worker):
    owner = make_user()
    page = page_at(PHONE)
    log_in(page, owner)
    job = launch.job_create(owner=owner, kind="simulate", params={"steps": 30, "step_ms": 100})
    page.goto(f"/jobs/{job.id}/")

    last = page.locator("#log .log-line", has_text="Finished step 30 of 30")
    expect(last.locator("time")).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT"), timeout=20_000
    )


def test_the_log_filter_shows_only_matching_lines(page_at, make_user):
    owner = make_user()
    job = logged_job(owner, [f"{'WARN' if i % 10 == 0 else 'info'} step {i}" for i in range(1, 101)])
    page = page_at(PHONE)
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")
    expect(page.locator("#log .log-line")).to_have_count(100)

    page.get_by_role("searchbox", name="Filter the log").fill("warn")

    visible = page.locator("#log .log-line:visible .log-text")
    expect(visible).to_have_count(10)
    expect(visible.first).to_have_text("WARN step 10")
    expect(page.locator("#log-count")).to_have_text("10 of 100 lines match")


def test_a_link_to_a_line_scrolls_to_it_and_highlights_it(page_at, make_user):
    owner = make_user()
    job = logged_job(owner, [f"line {i}" for i in range(1, 301)])
    page = page_at(DESKTOP)
    log_in(page, owner)

    page.goto(f"/jobs/{job.id}/#L12")

    target = page.locator("#L12")
    expect(target).to_have_class(re.compile(r"\bis-target\b"))
    expect(target).to_have_attribute("aria-current", "true")
    expect(target).to_be_in_viewport()
    assert page.locator("#log").evaluate("log => log.scrollTop > 0 && log.scrollTop < log.scrollHeight / 2")
    page.locator("#L40 .log-num").click()
    expect(page).to_have_url(re.compile(r"#L40$"))
    expect(page.locator("#L40")).to_have_class(re.compile(r"\bis-target\b"))
    expect(target).not_to_have_class(re.compile(r"\bis-target\b"))


def test_the_whole_log_downloads_as_text(page_at, make_user):
    owner = make_user()
    job = logged_job(owner, [f"line {i}" for i in range(1, 301)])
    page = page_at(DESKTOP)
    log_in(page, owner)
    page.goto(f"/jobs/{job.id}/")

    with page.expect_download() as event:
        page.get_by_role("link", name="Download the log").click()

    download = event.value
    assert download.suggested_filename == f"job-{str(job.id)[:8]}-log.txt"
    text = open(download.path(), encoding="utf-8").read().splitlines()  # noqa: SIM115
    assert len(text) == 300 and text[0].endswith(" line 1") and text[-1].endswith(" line 300")
