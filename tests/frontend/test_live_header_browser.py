"""The live header every page shares (connection state, the bell, toasts), the notifications'
levels and bursts, and what Settings says when browser push cannot work, in headless Chromium
against the real web server, Redis and channel layer, at desktop and phone widths."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from jobs.models import JobState
from notifications import inbox as notification_services
from notifications import webpush
from notifications.models import Level
from tests.frontend.test_dashboard_browser import log_in
from tests.jobs.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

LIVE_LEVELS = [
    ("Disk almost full", Level.WARNING),
    ("Export failed", Level.ERROR),
    ("Export done", Level.SUCCESS),
]
WORDS = {Level.INFO: "Info", Level.SUCCESS: "Success", Level.WARNING: "Warning", Level.ERROR: "Error"}


@pytest.fixture
def no_vapid_key() -> Iterator[None]:
    """The server has no VAPID key pair (no settings, no var/vapid.json)."""
    webpush.vapid_file().unlink(missing_ok=True)
    yield
    webpush.vapid_file().unlink(missing_ok=True)


@pytest.fixture
def vapid_key() -> None:
    call_command("generate_vapid_keys", "--quiet")


def wait_for_snapshot(page: Any) -> None:
    """Until the page's socket has its snapshot: a notification made before that comes in the
    snapshot (to the bell, never as a toast), one made after as a live toast."""
    # Polled from here: wait_for_function's polling evaluates its predicate with eval() in the
    # page, which the page's CSP refuses when the first check fails (seen under CI's load).
    deadline = time.monotonic() + 15
    while not page.evaluate("Number.isInteger(window.runboard?.socket?.lastNotificationId)"):
        assert time.monotonic() < deadline, "the page's socket never got its snapshot"
        page.wait_for_timeout(50)


def test_every_page_is_live_and_its_bell_follows_mark_all_read_in_another_tab(context, make_user):
    user = make_user(operator=True)  # Operations and Schedules need the operator's powers
    stranger = make_user()
    page, dashboard = context.new_page(), context.new_page()
    log_in(dashboard, user)

    for path in ["/settings/", "/diagnostics/", "/operations/", "/operations/schedules/"]:
        page.goto(path)
        expect(page.locator("#connection")).to_have_text("Live")
        expect(page.locator("#connection")).to_be_in_viewport()
        wait_for_snapshot(page)
        notification_services.notify(recipient_id=stranger.pk, title=f"Not yours on {path}")
        notification_services.notify(recipient_id=user.pk, title=f"Yours on {path}")
        expect(page.locator("#toasts")).to_contain_text(f"Yours on {path}")
        expect(page.locator("#unread")).to_have_text("1")
        expect(page.locator("#bell")).to_be_in_viewport()

        expect(dashboard.locator("#unread")).to_have_text("1")  # "mark all" marks what that tab has
        dashboard.locator("#bell").click()
        dashboard.get_by_role("button", name="Mark all read").click()
        dashboard.locator("#bell").click()
        expect(page.locator("#unread")).to_be_hidden()
        expect(page.locator("#bell")).to_have_attribute("aria-label", "Notifications, 0 unread")
        page.locator("#bell").click()
        expect(page.locator("#notif-list")).to_contain_text(f"Yours on {path}")
        assert "Not yours" not in page.locator("#notif-list").inner_text()
        assert "Not yours" not in page.locator("#toasts").inner_text()
    # One socket per page: the header's, shared by the page's own script.
    assert page.evaluate("window.runboard.socket === window.runboard.centre.socket")


def test_diagnostics_agrees_with_its_header_when_websockets_are_blocked(page, make_user):
    # A proxy that refuses WebSockets: every notification socket is closed before it opens.
    page.route_web_socket(re.compile(r".*/ws/notifications/.*"), lambda ws: ws.close())
    log_in(page, make_user(), live=False)
    page.goto("/diagnostics/")

    expect(page.locator("#connection")).to_have_text("Live (SSE)", timeout=30_000)
    expect(page.locator("#diag-socket")).to_contain_text("fell back to Server-Sent Events")
    expect(page.locator("#diag-sse")).to_have_text("working")
    expect(page.locator("#diag-rtt")).to_contain_text("not measurable")


def test_diagnostics_measures_the_round_trip_on_the_socket_its_header_reports(page, make_user):
    log_in(page, make_user())
    page.goto("/diagnostics/")
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.locator("#diag-socket")).to_contain_text("connected (protocol 1")
    expect(page.locator("#diag-rtt")).to_contain_text(re.compile(r"median [0-9.]+ ms"))
    page.get_by_role("button", name="Measure again").click()
    expect(page.locator("#diag-rtt")).to_contain_text(re.compile(r"median [0-9.]+ ms"))


def test_toasts_and_the_bell_name_each_level_in_a_word_and_an_icon(context, make_user):
    user = make_user()
    notification_services.notify(recipient_id=user.pk, title="Maintenance tonight", level=Level.INFO)
    page = context.new_page()
    log_in(page, user)
    wait_for_snapshot(page)

    for title, level in LIVE_LEVELS:
        notification_services.notify(recipient_id=user.pk, title=title, level=level)
    toasts = page.locator("#toasts .toast")
    expect(toasts).to_have_count(3)
    for title, level in LIVE_LEVELS:
        toast = toasts.filter(has_text=title)
        expect(toast.locator(".level-tag")).to_have_text(WORDS[level])
        expect(toast.locator(".level-icon")).to_be_visible()
        expect(toast).to_be_in_viewport()
    # Colour adds to the word: a warning's edge is not an error's, nor an info's.
    edges = {
        title: toasts.filter(has_text=title).evaluate("node => getComputedStyle(node).borderLeftColor")
        for title in ["Disk almost full", "Export failed", "Export done"]
    }
    assert len(set(edges.values())) == 3, edges

    page.locator("#bell").click()
    rows = page.locator("#notif-list li")
    expect(page.locator("#notif-panel")).to_be_in_viewport(ratio=1)  # on a phone too, not cut off
    for title, level in [("Maintenance tonight", Level.INFO), *LIVE_LEVELS]:
        tag = rows.filter(has_text=title).locator(".level-tag")
        expect(tag).to_have_text(WORDS[level])
        expect(tag).to_be_in_viewport(ratio=1)
    icon_of = "ns => ns.map(n => getComputedStyle(n, '::before').content)"
    icons = rows.locator(".level-icon").evaluate_all(icon_of)
    assert len(set(icons)) == 4, icons  # four levels, four icons


def test_a_burst_of_finished_jobs_folds_into_one_summary_toast_that_opens_the_list(context, make_user):
    user = make_user()
    jobs = [make_job(owner=user, state=JobState.SUCCEEDED) for _ in range(5)]
    page = context.new_page()
    log_in(page, user)
    wait_for_snapshot(page)

    for job in jobs:
        notification_services.notify(
            recipient_id=user.pk, title="Simulated work finished", level=Level.SUCCESS, job_id=job.id,
            link=f"/jobs/{job.id}/",
        )  # fmt: skip
    expect(page.locator("#unread")).to_have_text("5")
    toasts = page.locator("#toasts .toast")
    expect(toasts).to_have_count(1)
    summary = toasts.first
    expect(summary).to_contain_text("5 jobs finished")
    expect(summary.locator(".level-tag")).to_have_text("Success")
    expect(summary).to_be_in_viewport()

    summary.get_by_role("button", name="Show them in the notifications list").click()
    expect(page.locator("#notif-panel")).to_be_in_viewport(ratio=1)
    expect(page.locator("#notif-list li")).to_have_count(5)
    expect(page.locator("#notif-list a").first).to_be_focused()
    expect(toasts).to_have_count(0)


def test_a_mixed_burst_is_summarised_by_its_worst_level_with_a_count_of_each(page, make_user):
    user = make_user()
    log_in(page, user)
    wait_for_snapshot(page)
    levels = [Level.SUCCESS, Level.ERROR, Level.SUCCESS, Level.WARNING, Level.SUCCESS, Level.INFO]
    for i, level in enumerate(levels):
        notification_services.notify(recipient_id=user.pk, title=f"Note {i}", level=level)
    expect(page.locator("#unread")).to_have_text("6")
    summary = page.locator("#toasts .toast")
    expect(summary).to_have_count(1)
    expect(summary).to_contain_text("6 new notifications")
    expect(summary).to_contain_text("1 error · 1 warning · 3 successes · 1 info")
    expect(summary.locator(".level-tag")).to_have_text("Error")


def open_push_settings(page, user) -> Any:
    log_in(page, user)
    page.goto("/settings/")
    return page.locator("#browser-push")


def test_turning_on_push_in_a_browser_without_push_manager_names_what_is_missing(page, make_user, vapid_key):
    page.add_init_script("delete window.PushManager")
    push = open_push_settings(page, make_user())
    expect(push.locator("#push-status")).to_contain_text("it has no Push API (PushManager)")
    button = push.get_by_role("button", name="Try again")
    expect(button).to_be_enabled()
    button.click()
    expect(push.locator("#push-status")).to_contain_text("PushManager")
    expect(push.locator("#push-status .level-tag")).to_have_text("Error")
    expect(button).to_be_enabled()


def test_turning_on_push_when_permission_is_denied_says_so_and_offers_a_retry(page, make_user, vapid_key):
    push = open_push_settings(page, make_user())
    expect(push.locator("#push-status")).to_have_text("Off for this browser.")
    push.get_by_role("button", name="Enable on this browser").click()  # headless Chromium denies the prompt
    expect(push.locator("#push-status")).to_contain_text("permission denied")
    expect(push.locator("#push-status")).to_have_attribute("role", "alert")
    expect(push.get_by_role("button", name="Try again")).to_be_enabled()


def test_turning_on_push_when_the_server_has_no_vapid_key_says_so_and_can_be_tried_again(
    browser, live_server_url, make_user, no_vapid_key
):
    context = browser.new_context(base_url=live_server_url)
    context.grant_permissions(["notifications"])
    push = open_push_settings(context.new_page(), make_user())
    expect(push.locator("#push-status")).to_contain_text("This server has no VAPID key configured")
    push.get_by_role("button", name="Try again").click()
    expect(push.locator("#push-status")).to_contain_text("This server has no VAPID key configured")

    call_command("generate_vapid_keys", "--quiet")  # an administrator sets the keys up
    push.get_by_role("button", name="Try again").click()
    # Past the key now, as far as this browser can go: headless Chromium has no push service.
    expect(push.locator("#push-status")).to_contain_text("could not subscribe with its push service")
    expect(push.get_by_role("button", name="Try again")).to_be_enabled()
    context.close()


def test_turning_on_push_without_a_push_service_says_so_instead_of_a_browser_error(
    browser, live_server_url, make_user, vapid_key
):
    context = browser.new_context(base_url=live_server_url)
    context.grant_permissions(["notifications"])
    push = open_push_settings(context.new_page(), make_user())
    push.get_by_role("button", name="Enable on this browser").click()
    status = push.locator("#push-status")
    expect(status).to_contain_text("could not subscribe with its push service")
    expect(status).to_contain_text("browsers without a push service cannot receive push")
    expect(push.get_by_role("button", name="Try again")).to_be_enabled()
    context.close()


def test_turning_on_push_never_stays_on_turning_on_when_the_service_worker_never_loads(
    browser, live_server_url, make_user, vapid_key
):
    context = browser.new_context(base_url=live_server_url)
    context.grant_permissions(["notifications"])
    context.route("**/sw.js", lambda route: None)  # the script's request is never answered
    push = open_push_settings(context.new_page(), make_user())
    push.get_by_role("button", name="Enable on this browser").click()
    status = push.locator("#push-status")
    expect(status).to_contain_text("starting the service worker")
    expect(status).to_contain_text("The service worker did not answer in 10 s", timeout=20_000)
    expect(push.get_by_role("button", name="Try again")).to_be_enabled()
    context.close()
