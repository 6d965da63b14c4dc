"""Operators' alerts in headless Chromium against the real web server, Redis and channel layer, at
desktop and phone widths: a rule added on its page, an episode's alert arriving live in the open
page once, however often the alerts are evaluated (issue 16 §14, docs/alerts.md)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from dashboard.alerts import alerts_evaluate
from jobs.models import JobState
from notifications.models import AlertRule, Notification
from tests.frontend.test_dashboard_browser import log_in
from tests.frontend.test_live_header_browser import wait_for_snapshot
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

TITLE = "Failure rate of Profile a CSV file is 80 % (threshold 20 %)"


def test_an_operator_adds_a_failure_rate_alert_and_is_told_live_once_per_episode(context, make_user):
    operator = make_user(operator=True)
    page = context.new_page()
    log_in(page, operator)
    page.goto("/operations/alerts/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alerts")
    page.get_by_label("Kind of job").select_option(label="Profile a CSV file")
    page.get_by_label("Above (%)").fill("20")
    page.get_by_role("button", name="Add failure-rate alert").click()
    expect(page.locator("main p.success")).to_contain_text("Alert added: Failure rate of Profile a CSV file")
    rule = page.locator(".alert-rule")
    expect(rule).to_have_count(1)
    expect(rule).to_contain_text("above 20 % over 10 min")
    expect(rule.locator(".alert-state")).to_have_text("not evaluated yet")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    wait_for_snapshot(page)

    for state in [JobState.FAILED] * 4 + [JobState.SUCCEEDED]:
        make_job(owner=operator, kind="csv_profile", state=state)
    assert alerts_evaluate().fired == 1

    toasts = page.locator("#toasts .toast")
    expect(toasts.filter(has_text=TITLE)).to_have_count(1)
    expect(toasts.filter(has_text=TITLE).locator(".level-tag")).to_have_text("Error")
    expect(page.locator("#unread")).to_have_text("1")

    # Evaluated again (the next beat tick, or a second housekeeping process): nothing new.
    assert alerts_evaluate().notified == 0
    page.wait_for_timeout(1_000)  # time for a second event to arrive, were one sent
    expect(toasts).to_have_count(1)
    expect(page.locator("#unread")).to_have_text("1")
    page.locator("#bell").click()
    expect(page.locator("#notif-list li").filter(has_text=TITLE)).to_have_count(1)
    assert Notification.objects.filter(recipient=operator).count() == 1

    page.reload()
    expect(page.locator(".alert-rule .alert-state")).to_contain_text("firing since")
    expect(page.locator(".alert-rule .alert-state")).to_contain_text("now 80 %")

    page.get_by_role("button", name="Delete").click()
    expect(page.locator("main p.info")).to_have_text("Alert deleted.")
    expect(page.locator(".alert-rule")).to_have_count(0)
    assert not AlertRule.objects.exists()


def test_a_refused_alert_says_why_next_to_its_form(context, make_user):
    page = context.new_page()
    log_in(page, make_user(operator=True))
    page.goto("/operations/alerts/")
    page.get_by_label("Above (%)").fill("150")
    page.get_by_role("button", name="Add failure-rate alert").click()
    expect(page.get_by_role("alert")).to_have_text(
        "A failure rate threshold must be at least 0 % and below 100 %."
    )
    expect(page.get_by_label("Above (%)")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Above (%)")).to_have_value("150")
    expect(page.locator(".alert-rule")).to_have_count(0)
