"""The walking skeleton, as a person does it: log in, launch, watch the bar fill, see the toast."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def log_in(page, user, *, live=True):
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill("pw-" + user.username)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Launch a job")).to_be_visible()
    if live:
        expect(page.locator("#connection")).to_have_text("Live")


def open_launch_form(page, title, kind):
    # The panel may already be open on it (RUNBOARD_LAUNCH_PANEL_KIND): a click would close it.
    form = page.locator(f"form[data-kind={kind}]")
    if not form.is_visible():
        page.locator("summary", has_text=title).click()
    return form


def test_launch_watch_live_progress_to_100_percent_and_see_the_toast(page, make_user, celery_worker):
    log_in(page, make_user())
    page.evaluate("window.__noReload = true")

    form = open_launch_form(page, "Simulated work", "simulate")
    form.get_by_label("Steps").fill("8")
    form.get_by_label("Milliseconds per step").fill("150")
    form.get_by_role("button", name="Launch").click()

    job = page.locator("li.job").first
    bar = job.locator("progress")
    # Seen mid-way, then full: the bar moves live rather than jumping at a reload.
    expect(job).to_have_attribute("data-state", "running")
    expect(bar).to_have_attribute("value", re.compile(r"^(1[0-9]|[1-9]|[2-8][0-9])$"))
    expect(bar).to_have_attribute("value", "100")
    expect(job.locator(".badge")).to_have_text("succeeded")
    expect(page.locator("#toasts")).to_contain_text("Simulated work finished")
    assert page.evaluate("window.__noReload") is True


def test_a_failing_job_shows_its_error_and_a_failure_toast(page, make_user, celery_worker):
    log_in(page, make_user())
    form = open_launch_form(page, "Simulated work", "simulate")
    form.get_by_label("Steps").fill("3")
    form.get_by_label("Milliseconds per step").fill("10")
    form.get_by_label("Fail at step").fill("2")
    form.get_by_role("button", name="Launch").click()

    job = page.locator("li.job").first
    expect(job.locator(".badge")).to_have_text("failed")
    expect(job.locator(".job-error")).to_have_text("Simulated failure at step 2 of 3")
    expect(page.locator("#toasts")).to_contain_text("Simulated work failed")


def test_invalid_parameters_show_inline_errors_and_launch_nothing(page, make_user):
    log_in(page, make_user())
    form = open_launch_form(page, "Simulated work", "simulate")
    form.get_by_label("Steps").fill("3")
    form.get_by_label("Fail at step").fill("9")
    form.get_by_role("button", name="Launch").click()

    expect(form.locator("[data-error-for='params.fail_at_step']")).to_contain_text("must not exceed steps")
    expect(form.get_by_label("Fail at step")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("li.job")).to_have_count(0)


def test_an_anonymous_visitor_is_sent_to_the_login_page(page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_diagnostics_shows_both_transports_working_and_a_round_trip_time(page, make_user):
    log_in(page, make_user())
    page.goto("/diagnostics/")
    expect(page.locator("#diag-socket")).to_contain_text("connected (protocol 1")
    expect(page.locator("#diag-sse")).to_have_text("working")
    expect(page.locator("#diag-rtt")).to_contain_text(re.compile(r"median [0-9.]+ ms"))


def test_the_launch_panel_opens_on_simulated_work_even_for_staff(page, make_user):
    # Before: kinds by title, the first open; for staff that was "Broadcast an announcement", a
    # form that sends to every user, where the README's walkthrough starts on "Simulated work".
    log_in(page, make_user(is_staff=True, is_superuser=True))
    expect(page.locator("form[data-kind=simulate]")).to_be_visible()
    expect(page.locator("form[data-kind=broadcast]")).to_be_hidden()
    expect(page.locator("details.launch-kind[open]")).to_have_count(1)
