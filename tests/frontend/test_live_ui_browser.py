"""The dashboard as people use it, in headless Chromium: acting on jobs, the notification centre,
several tabs, hostile text, and a web server that goes away and comes back."""

import re
import time

import pytest
from playwright.sync_api import expect

from jobs import housekeeping, launch
from notifications import inbox as notification_services
from tests.frontend.test_dashboard_browser import log_in, open_launch_form

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def test_cancel_a_running_job_from_its_row(page, make_user, celery_worker):
    log_in(page, make_user())
    form = open_launch_form(page, "Simulated work", "simulate")
    form.get_by_label("Steps").fill("300")
    form.get_by_label("Milliseconds per step").fill("50")
    form.get_by_role("button", name="Launch").click()

    row = page.locator("li.job").first
    expect(row).to_have_attribute("data-state", "running")
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".badge")).to_have_text("cancelled", timeout=15_000)
    expect(page.locator("#toasts")).to_contain_text("Simulated work was cancelled")


def test_retry_a_failed_job_from_its_row(page, make_user, celery_worker):
    log_in(page, make_user())
    form = open_launch_form(page, "Simulated work", "simulate")
    form.get_by_label("Steps").fill("2")
    form.get_by_label("Milliseconds per step").fill("0")
    form.get_by_label("Fail at step").fill("1")
    form.get_by_role("button", name="Launch").click()
    failed = page.locator("li.job").first
    expect(failed.locator(".badge")).to_have_text("failed")

    failed.get_by_role("button", name="Retry").click()
    expect(page.locator("li.job")).to_have_count(2)
    expect(page.locator("li.job").first.locator(".badge")).to_have_text("failed")


def test_the_log_follows_until_the_reader_scrolls_up(page, make_user, celery_worker):
    user = make_user()
    job = launch.job_create(owner=user, kind="simulate", params={"steps": 80, "step_ms": 60})
    log_in(page, user)
    page.goto(f"/jobs/{job.id}/")

    log = page.locator("#log")
    expect(log).to_contain_text("Finished step 20 of 80", timeout=15_000)
    # The reader can only scroll up once the log overflows its box: until then scrollTop = 0 is
    # the bottom, no scroll event fires and the page rightly keeps following (under CI's load
    # "step 20" can arrive with ~20 lines, which fit; that is what failed). So wait for lines
    # enough to scroll by, with the log at its bottom, polled: a line can land between checks
    # and the log follows it on the next frame.
    followed_overflow = (
        "(l => l.scrollHeight - l.clientHeight > 100 && l.scrollTop + l.clientHeight >= l.scrollHeight - 4)"
        "(document.getElementById('log'))"
    )
    deadline = time.monotonic() + 15
    while not page.evaluate(followed_overflow):
        assert time.monotonic() < deadline, "the log did not follow its new lines"
        page.wait_for_timeout(50)
    page.evaluate("document.getElementById('log').scrollTop = 0")
    expect(page.locator("#log-follow")).to_contain_text("Paused")
    expect(log).to_contain_text("Finished step 80 of 80", timeout=20_000)
    assert page.evaluate("document.getElementById('log').scrollTop") == 0  # did not yank the reader down


def test_two_tabs_stay_in_step_on_mark_read(browser, live_server_url, make_user):
    user = make_user()
    context = browser.new_context(base_url=live_server_url)
    tab1, tab2 = context.new_page(), context.new_page()
    log_in(tab1, user)
    tab2.goto("/")
    expect(tab2.locator("#connection")).to_have_text("Live")

    for i in range(3):
        notification_services.notify(recipient_id=user.pk, title=f"Note {i}")
    for tab in (tab1, tab2):
        expect(tab.locator("#unread")).to_have_text("3")

    tab1.locator("#bell").click()
    tab1.locator("#notif-list li", has_text="Note 1").get_by_role("button", name="Mark read").click()
    for tab in (tab1, tab2):
        expect(tab.locator("#unread")).to_have_text("2")
    tab2.locator("#bell").click()
    tab2.get_by_role("button", name="Mark all read").click()
    for tab in (tab1, tab2):
        expect(tab.locator("#unread")).to_be_hidden()
    context.close()


def test_markup_in_job_text_and_notifications_shows_as_text(page, make_user, celery_worker):
    user = make_user()
    log_in(page, user)
    # The text is the job's parameter, its progress message, its log line and its error at once.
    job = launch.job_create(owner=user, kind="test_echo", params={"text": "fail:" + XSS})
    notification_services.notify(recipient_id=user.pk, title="T" + XSS, body="B" + XSS)

    # The dashboard: the row (live), the toast and the notification centre.
    row = page.locator(f"#job-{job.id}")
    expect(row.locator(".job-error")).to_have_text("fail:" + XSS, timeout=15_000)
    expect(row.locator(".job-message")).to_have_text("fail:" + XSS)
    expect(page.locator("#toasts")).to_contain_text("B" + XSS)
    page.locator("#bell").click()
    expect(page.locator("#notif-list strong").filter(has_text="T" + XSS)).to_have_count(1)
    expect(page.locator("#notif-list .notif-body").filter(has_text="B" + XSS)).to_have_count(1)
    assert page.evaluate("window.__xss") is None
    # The job page: its row, its log, the re-run form holding the parameter, the notification centre.
    page.goto(f"/jobs/{job.id}/")
    expect(page.locator("#log")).to_contain_text("fail:" + XSS)
    expect(page.locator(".job-error")).to_have_text("fail:" + XSS)
    expect(page.locator(".job-message")).to_have_text("fail:" + XSS)
    expect(page.locator("#rerun input[name=text]")).to_have_value("fail:" + XSS)
    page.locator("#bell").click()
    expect(page.locator("#notif-list .notif-body").filter(has_text="B" + XSS)).to_have_count(1)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#log script, .job-error img, #notif-list script, #notif-list img").count() == 0


def test_the_page_reconnects_over_websocket_after_a_long_server_restart_and_catches_up(
    page, make_user, web_server
):
    user = make_user()
    log_in(page, user)

    web_server.stop()
    expect(page.locator("#connection")).to_contain_text(re.compile(r"Reconnecting in \d+ s"))
    missed = [notification_services.notify(recipient_id=user.pk, title=f"While away {i}") for i in range(3)]
    # Down for longer than three failed attempts (1 + 2 + 4 s of backoff): before, the page then
    # took the server's absence for a proxy refusing WebSockets and stayed on SSE for good (a CI
    # run under load restarted the server that slowly).
    page.wait_for_timeout(10_000)
    web_server.start()

    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    for notification in missed:
        expect(page.locator(f"#notif-{notification.pk}")).to_have_count(1)
    expect(page.locator("#unread")).to_have_text("3")


def test_when_websockets_are_blocked_the_page_falls_back_to_sse(browser, live_server_url, make_user):
    user = make_user()
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    # A proxy that refuses WebSockets: every notification socket is closed before it opens.
    page.route_web_socket(re.compile(r".*/ws/notifications/.*"), lambda ws: ws.close())
    log_in(page, user, live=False)

    expect(page.locator("#connection")).to_have_text("Live (SSE)", timeout=30_000)
    note = notification_services.notify(recipient_id=user.pk, title="Over the fallback")
    expect(page.locator(f"#notif-{note.pk}")).to_have_count(1)
    expect(page.locator("#unread")).to_have_text("1")
    page.locator("#bell").click()
    page.get_by_role("button", name="Mark all read").click()  # over HTTP: SSE is one-way
    expect(page.locator("#unread")).to_be_hidden()
    context.close()


def test_history_filters_search_and_pages_through_older_jobs(page, make_user):
    from jobs.models import JobState
    from tests.jobs.factories import make_job

    user = make_user()
    for i in range(60):
        make_job(owner=user, state=JobState.SUCCEEDED, progress_message=f"batch {i}")
    make_job(owner=user, state=JobState.FAILED, error="disk on fire")
    log_in(page, user)

    rows = page.locator("#jobs li.job:visible")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(61)
    page.locator("#filters").get_by_label("State").select_option("failed")
    expect(rows).to_have_count(1)
    page.locator("#filters").get_by_label("State").select_option("")
    page.locator("#filters").get_by_label("Search").fill("on fire")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".job-error")).to_have_text("disk on fire")
    page.locator("#jobs li.job:visible a.job-title").first.click()
    expect(page.locator("#timeline li")).to_have_count(3)  # queued → running → failed


def test_a_job_waiting_for_the_queue_says_so_until_the_reaper_sends_it(page, make_user, monkeypatch):
    from dashboard.celery import app as celery_app
    from tests.jobs.factories import make_job

    user = make_user()
    job = make_job(owner=user, enqueued_at=None)  # as a launch the broker refused leaves it
    log_in(page, user)
    row = page.locator("#jobs li.job").first
    expect(row.locator(".job-message")).to_have_text("Waiting for the queue…")
    page.goto(f"/jobs/{job.id}/")
    message = page.locator(f"#job-{job.id} .job-message")
    expect(message).to_have_text("Waiting for the queue…")
    expect(page.locator("#connection")).to_have_text("Live")

    # The broker is back: the reaper's next pass sends the job, and the page hears it live.
    monkeypatch.setattr(celery_app, "send_task", lambda *args, **options: None)
    assert housekeeping.job_requeue_lost() == 1
    expect(message).to_have_text("Waiting for a worker…")
