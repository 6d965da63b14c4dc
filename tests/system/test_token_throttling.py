"""Bearer tokens cannot be guessed at line speed: failed tokens are counted per client address on
every route that takes one (API, SSE, WebSocket), then answered 429 with Retry-After, the valid
token included, until the cool-off ends or an operator lifts the pause."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.test import Client, override_settings
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from dashboard.conf import app_settings
from dashboard.throttle.models import TokenFailure
from jobs.tokens import token_create

pytestmark = pytest.mark.django_db


def limit() -> int:
    return app_settings.TOKEN_FAILURE_LIMIT


def cool_off() -> float:
    return app_settings.TOKEN_COOLOFF


def api(token: str, address: str) -> Any:
    return Client(REMOTE_ADDR=address).get("/api/v1/jobs/", HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_throttled(response: Any, *, within: float) -> None:
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= within
    assert "Too many failed token attempts" in response.json()["detail"]


def test_guessing_tokens_on_the_api_gets_429_with_retry_after_even_for_a_valid_token(make_user):
    _, raw = token_create(user=make_user(), name="script")

    answers = [api(f"rb_guess{n}", "198.51.100.1").status_code for n in range(limit())]
    assert answers == [401] * (limit() - 1) + [429]
    # While the pause lasts, nothing is looked up: a right guess would look like a wrong one.
    assert_throttled(api(raw, "198.51.100.1"), within=cool_off())
    assert api(raw, "198.51.100.2").status_code == 200  # other addresses are not affected


def test_other_authorization_schemes_and_valid_tokens_are_not_counted(make_user):
    _, raw = token_create(user=make_user(), name="script")
    client = Client(REMOTE_ADDR="198.51.100.3")
    for _ in range(limit() * 2):
        assert client.get("/api/v1/jobs/", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 401
        assert api(raw, "198.51.100.3").status_code == 200
    assert not TokenFailure.objects.exists()


def test_a_forged_x_forwarded_for_does_not_escape_the_token_limit():
    client = Client(REMOTE_ADDR="198.51.100.4")
    answers = [
        client.get(
            "/api/v1/jobs/", HTTP_AUTHORIZATION=f"Bearer rb_guess{n}", HTTP_X_FORWARDED_FOR=f"192.0.2.{n + 1}"
        ).status_code
        for n in range(limit())
    ]
    assert answers[-1] == 429
    assert list(TokenFailure.objects.values_list("address", flat=True)) == ["198.51.100.4"]


def test_ipv6_token_guessers_are_counted_by_their_64(make_user):
    _, raw = token_create(user=make_user(), name="script")
    for n in range(limit()):
        api(f"rb_guess{n}", f"2001:db8:0:9::{n + 1:x}")
    assert_throttled(api(raw, "2001:db8:0:9:abcd::1"), within=cool_off())
    assert api(raw, "2001:db8:0:10::1").status_code == 200


def test_the_token_pause_ends_after_its_cool_off(make_user):
    _, raw = token_create(user=make_user(), name="script")
    with override_settings(RUNBOARD_TOKEN_COOLOFF=2):
        for n in range(limit()):
            api(f"rb_guess{n}", "198.51.100.5")
        paused = api(raw, "198.51.100.5")
        assert_throttled(paused, within=2)

        time.sleep(int(paused["Retry-After"]) + 0.2)
        assert api(raw, "198.51.100.5").status_code == 200
        assert api("rb_guess-again", "198.51.100.5").status_code == 401  # a fresh count


def test_token_throttle_reset_lifts_the_pause_from_the_command_line(make_user, capsys):
    _, raw = token_create(user=make_user(), name="script")
    for address in ("198.51.100.6", "2001:db8:0:11::1"):
        for n in range(limit()):
            api(f"rb_guess{n}", address)
        assert api(raw, address).status_code == 429

    call_command("token_throttle_reset", "198.51.100.6")
    assert api(raw, "198.51.100.6").status_code == 200
    assert api(raw, "2001:db8:0:11::2").status_code == 429
    call_command("token_throttle_reset", "2001:db8:0:11::ffff")  # any address of the /64
    assert api(raw, "2001:db8:0:11::2").status_code == 200
    assert "1 address(es) reset." in capsys.readouterr().out


def test_a_superuser_sees_and_lifts_a_token_pause_in_the_admin(make_user):
    _, raw = token_create(user=make_user(), name="script")
    for n in range(limit()):
        api(f"rb_guess{n}", "198.51.100.7")
    admin = Client()
    admin.force_login(make_user(is_staff=True, is_superuser=True))
    row = TokenFailure.objects.get()

    assert "198.51.100.7" in admin.get("/admin/throttle/tokenfailure/").content.decode()
    admin.post(
        "/admin/throttle/tokenfailure/",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert api(raw, "198.51.100.7").status_code == 200


# --- The live server: API, SSE and WebSocket share one count per address ----------------------------


def live_api(url: str, token: str, forwarded_for: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded_for}
    return requests.get(f"{url}/api/v1/jobs/", headers=headers, timeout=10)


def live_events(url: str, token: str, forwarded_for: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded_for}
    with requests.get(f"{url}/events/", headers=headers, timeout=10, stream=True) as response:
        return response


def live_socket(url: str, token: str, forwarded_for: str) -> tuple[int, Any]:
    """The handshake's HTTP status and headers (101 for an accepted socket, closed at once)."""
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": forwarded_for}
    try:
        with connect(url.replace("http", "ws", 1) + "/ws/notifications/", additional_headers=headers,
                     open_timeout=10) as ws:  # fmt: skip
            return 101, ws.response.headers
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.headers


@pytest.mark.django_db(transaction=True)
def test_the_live_server_throttles_token_guessing_on_the_api_sse_and_websocket(live_server_url, make_user):
    _, raw = token_create(user=make_user(), name="script")
    url = live_server_url

    # Guesses on one transport pause the address on every transport.
    answers = [live_api(url, f"rb_guess{n}", "203.0.113.51").status_code for n in range(limit())]
    assert answers == [401] * (limit() - 1) + [429]
    refused = live_api(url, raw, "203.0.113.51")
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= cool_off()
    events = live_events(url, raw, "203.0.113.51")
    assert events.status_code == 429 and 0 < int(events.headers["Retry-After"]) <= cool_off()
    status, headers = live_socket(url, raw, "203.0.113.51")
    assert status == 429 and 0 < int(headers["Retry-After"]) <= cool_off()

    # Each transport counts on its own too.
    assert [live_events(url, f"rb_guess{n}", "203.0.113.52").status_code for n in range(limit())][-1] == 429
    assert [live_socket(url, f"rb_guess{n}", "203.0.113.53")[0] for n in range(limit())][-1] == 429

    # The client address is the one the trusted proxy forwarded, so its other clients are served.
    assert set(TokenFailure.objects.values_list("address", flat=True)) == {
        "203.0.113.51",
        "203.0.113.52",
        "203.0.113.53",
    }
    assert live_api(url, raw, "203.0.113.54").status_code == 200
    assert live_socket(url, raw, "203.0.113.54")[0] == 101
