"""Passwords cannot be guessed at line speed (django-axes): per account and per client address,
a 429 with a clear message and Retry-After, lockouts that end after the cool-off, and the
commands that lift one. Each test uses its own documentation-range addresses."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.db.models import F
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

LOGIN_PATHS = ["/login/", "/admin/login/"]
MESSAGE = "Too many failed sign-in attempts"


def limit() -> int:
    return settings.AXES_FAILURE_LIMIT


def cool_off() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def attempt(path: str, username: str, password: str, address: str, **extra: Any) -> Any:
    """One sign-in from a fresh browser at ``address``; the response, with its client on it."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(path, {"username": username, "password": password}, **extra)
    response.client = client
    return response


def signed_in(response: Any) -> bool:
    return response.status_code == 302 and SESSION_KEY in response.client.session


def assert_locked_out(response: Any, *, within: int) -> None:
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= within
    page = response.content.decode()
    assert MESSAGE in page and "try again in" in page
    assert SESSION_KEY not in response.client.session


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_guessing_one_accounts_password_from_many_addresses_locks_that_account(make_user, path):
    victim = make_user(is_staff=True)
    answers = [
        attempt(path, victim.username, f"guess-{n}", f"198.51.100.{n + 1}").status_code
        for n in range(limit())
    ]

    assert answers == [200] * (limit() - 1) + [429]  # the failure that reaches the limit locks
    right = attempt(path, victim.username, f"pw-{victim.username}", "198.51.100.200")
    assert_locked_out(right, within=cool_off())
    # Another account is untouched, from any address.
    other = make_user(is_staff=True)
    assert signed_in(attempt(path, other.username, f"pw-{other.username}", "198.51.100.1"))


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_guessing_many_accounts_from_one_address_locks_that_address(make_user, path):
    answers = [attempt(path, f"nobody{n}", "guess", "198.51.100.7").status_code for n in range(limit())]
    assert answers == [200] * (limit() - 1) + [429]

    user = make_user(is_staff=True)
    assert_locked_out(attempt(path, user.username, f"pw-{user.username}", "198.51.100.7"), within=cool_off())
    assert signed_in(attempt(path, user.username, f"pw-{user.username}", "198.51.100.8"))


def test_a_forged_x_forwarded_for_does_not_escape_the_address_limit(make_user):
    """Only the server (uvicorn --proxy-headers, trusted peers only) may turn X-Forwarded-For into
    the client address; Django never reads it, so each guess below counts against REMOTE_ADDR."""
    for n in range(limit()):
        attempt("/login/", f"nobody{n}", "guess", "198.51.100.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 1}")
    user = make_user()
    right = attempt(
        "/login/", user.username, f"pw-{user.username}", "198.51.100.9", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )

    assert_locked_out(right, within=cool_off())
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.9"}


def test_retry_after_is_when_the_count_falls_back_under_the_limit(make_user):
    user = make_user()
    for n in range(limit() - 1):
        attempt("/login/", f"nobody{n}", "guess", "198.51.100.13")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=100))
    attempt("/login/", "one-more", "guess", "198.51.100.13")

    # The older failures carried the count to the limit: it falls back when they are a cool-off old.
    locked = attempt("/login/", user.username, f"pw-{user.username}", "198.51.100.13")
    assert cool_off() - 102 <= int(locked["Retry-After"]) <= cool_off() - 99
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=cool_off() - 98))
    assert signed_in(attempt("/login/", user.username, f"pw-{user.username}", "198.51.100.13"))


def test_a_successful_sign_in_does_not_wipe_the_addresss_count(make_user):
    attacker, victim = make_user(), make_user()
    for n in range(limit() - 1):
        attempt("/login/", victim.username, f"guess-{n}", "198.51.100.10")
    assert signed_in(attempt("/login/", attacker.username, f"pw-{attacker.username}", "198.51.100.10"))

    assert attempt("/login/", victim.username, "one-more-guess", "198.51.100.10").status_code == 429


def test_ipv6_clients_are_counted_by_their_64(make_user):
    for n in range(limit()):
        attempt("/login/", f"nobody{n}", "guess", f"2001:db8:0:7::{n + 1:x}")
    user = make_user()

    right = attempt("/login/", user.username, f"pw-{user.username}", "2001:db8:0:7:ffff::1")
    assert_locked_out(right, within=cool_off())
    assert signed_in(attempt("/login/", user.username, f"pw-{user.username}", "2001:db8:0:8::1"))


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_a_lockout_ends_after_the_cool_off(make_user, path):
    user = make_user(is_staff=True)
    with override_settings(AXES_COOLOFF_TIME=timedelta(seconds=3)):
        for n in range(limit()):
            attempt(path, user.username, f"guess-{n}", "198.51.100.11")
        locked = attempt(path, user.username, f"pw-{user.username}", "198.51.100.12")
        assert_locked_out(locked, within=3)

        time.sleep(int(locked["Retry-After"]) + 0.2)
        assert signed_in(attempt(path, user.username, f"pw-{user.username}", "198.51.100.12"))


def test_the_reset_commands_lift_a_lockout(make_user):
    user = make_user()
    right = f"pw-{user.username}"
    for n in range(limit()):
        attempt("/login/", user.username, f"guess-{n}", f"198.51.100.{n + 20}")
    assert attempt("/login/", user.username, right, "198.51.100.50").status_code == 429
    call_command("axes_reset_username", user.username)
    assert signed_in(attempt("/login/", user.username, right, "198.51.100.50"))

    for n in range(limit()):
        attempt("/login/", f"nobody{n}", "guess", "198.51.100.51")
    assert attempt("/login/", user.username, right, "198.51.100.51").status_code == 429
    call_command("axes_reset_ip", "198.51.100.51")
    assert signed_in(attempt("/login/", user.username, right, "198.51.100.51"))

    for n in range(limit()):
        attempt("/login/", user.username, f"guess-{n}", "198.51.100.52")
    call_command("axes_reset")
    assert signed_in(attempt("/login/", user.username, right, "198.51.100.52"))


def test_a_superuser_lifts_a_lockout_in_the_admin(make_user):
    user = make_user()
    for n in range(limit()):
        attempt("/login/", user.username, f"guess-{n}", "198.51.100.60")
    admin = Client()
    admin.force_login(make_user(is_staff=True, is_superuser=True))
    ids = list(AccessAttempt.objects.values_list("pk", flat=True))

    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and user.username in listing.content.decode()
    admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert not AccessAttempt.objects.exists()
    assert signed_in(attempt("/login/", user.username, f"pw-{user.username}", "198.51.100.60"))


# --- The live server (uvicorn, as the Procfile runs it) ---------------------------------------------


def live_attempt(url: str, path: str, username: str, password: str, forwarded_for: str) -> requests.Response:
    """A browser's sign-in through uvicorn, as a proxy at 127.0.0.1 (which uvicorn trusts by
    default: FORWARDED_ALLOW_IPS) would pass it on for the client ``forwarded_for``."""
    session = requests.Session()
    headers = {"X-Forwarded-For": forwarded_for}
    form = session.get(url + path, headers=headers, timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
    return session.post(url + path, data=data, headers=headers, allow_redirects=False, timeout=10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_the_live_server_refuses_a_guessed_password_with_retry_after(live_server_url, make_user, path):
    user = make_user(is_staff=True)
    answers = [
        live_attempt(live_server_url, path, user.username, f"guess-{n}", f"203.0.113.{n + 1}").status_code
        for n in range(limit())
    ]
    right = live_attempt(live_server_url, path, user.username, f"pw-{user.username}", "203.0.113.100")

    assert answers == [200] * (limit() - 1) + [429]
    assert right.status_code == 429 and MESSAGE in right.text
    assert 0 < int(right.headers["Retry-After"]) <= cool_off()
    assert "sessionid" not in right.cookies
    # The address counted is the client's, not the proxy's: the proxy's other clients can sign in.
    addresses = set(AccessAttempt.objects.values_list("ip_address", flat=True))
    assert addresses == {f"203.0.113.{n + 1}" for n in range(limit())}
    other = make_user(is_staff=True)
    assert (
        live_attempt(live_server_url, path, other.username, f"pw-{other.username}", "203.0.113.1").status_code
        == 302
    )
