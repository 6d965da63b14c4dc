"""Origin means scheme, host and port (issue 11 §2): the WebSocket handshake and the SSE stream
trust exactly the origins Django's CSRF check trusts for that request, decided by one function
(``notifications.credentials.origin_trusted``); never ``null`` or a missing Origin for a cookie
sign-in, and never "any" because ``ALLOWED_HOSTS`` is ``['*']``."""

from __future__ import annotations

import pytest
from django.test import override_settings
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from notifications.credentials import origin_trusted
from tests.conftest import LiveServer, receive_json, session_cookie
from tests.notifications.test_sse import EventSource

HOST = "127.0.0.1:8000"


def trusted(origin, *, host=HOST, scheme="http"):
    headers = {"host": host} if origin is None else {"host": host, "origin": origin}
    return origin_trusted(headers=headers, scheme=scheme)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # same host, another port (the example)
        "https://127.0.0.1:8000",  # same host and port, another scheme
        "http://127.0.0.1",  # the port left out
        "http://localhost:8000",  # another name for the same machine
        "http://127.0.0.1:8000.evil.example",
        "http://evil.example",
        "null",
        "",
        None,
    ],
)
def test_an_origin_differing_in_scheme_host_or_port_or_missing_is_not_trusted(origin):
    assert not trusted(origin)


def test_the_requests_own_scheme_host_and_port_is_trusted_and_wss_means_https():
    assert trusted("http://127.0.0.1:8000")
    assert trusted("https://127.0.0.1:8000", scheme="wss")
    assert not trusted("http://127.0.0.1:8000", scheme="wss")


@override_settings(ALLOWED_HOSTS=["*"])
def test_allowed_hosts_any_does_not_make_any_origin_trusted():
    assert not trusted("http://127.0.0.1:9999")
    assert not trusted("http://evil.example", host="runboard.example")
    assert trusted("http://runboard.example", host="runboard.example")


@override_settings(ALLOWED_HOSTS=["runboard.example"])
def test_a_host_outside_allowed_hosts_is_never_trusted_even_if_origin_matches_it():
    assert not trusted("http://evil.example", host="evil.example")


@override_settings(CSRF_TRUSTED_ORIGINS=["https://console.example", "https://*.ops.example"])
def test_csrf_trusted_origins_are_trusted_exactly_as_djangos_csrf_check_does():
    assert trusted("https://console.example")
    assert trusted("https://eu.ops.example")
    assert not trusted("http://console.example")
    assert not trusted("https://console.example:8443")


@pytest.mark.django_db(transaction=True)
def test_a_cookie_socket_from_another_port_on_the_same_host_is_refused(live_server_url, make_user):
    user = make_user()
    url = live_server_url.replace("http", "ws", 1) + "/ws/notifications/"
    other_port = "http://127.0.0.1:9999"
    for origin in [other_port, live_server_url.replace("http:", "https:"), "null"]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=origin, additional_headers={"Cookie": session_cookie(user)}, open_timeout=10)
        assert refused.value.response.status_code == 403, origin
    # No Origin and a cookie: not a browser, and no token: refused too.
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers={"Cookie": session_cookie(user)}, open_timeout=10)
    with connect(url, origin=live_server_url, additional_headers={"Cookie": session_cookie(user)}) as ws:
        assert receive_json(ws)["type"] == "hello"


@pytest.mark.django_db(transaction=True)
def test_a_cookie_event_stream_from_another_origin_or_without_a_browsers_same_origin_mark_is_refused(
    live_server_url, make_user
):
    cookie = session_cookie(make_user())
    for headers in [
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling site's page, no Origin
        {"Sec-Fetch-Site": "cross-site"},
    ]:
        source = EventSource(live_server_url, cookie=cookie, headers=headers)
        assert source.response.status == 403, headers
        source.close()
    for headers in [{"Origin": live_server_url}, {"Sec-Fetch-Site": "same-origin"}]:
        source = EventSource(live_server_url, cookie=cookie, headers=headers)
        assert source.response.status == 200, headers
        source.close()


@pytest.fixture(scope="module")
def any_host_server(server_env):
    server = LiveServer(dict(server_env, DJANGO_ALLOWED_HOSTS="*"), name="web-any-host")
    yield server.url
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_with_allowed_hosts_any_a_foreign_origin_is_still_refused(any_host_server, make_user):
    url = any_host_server.replace("http", "ws", 1) + "/ws/notifications/"
    with pytest.raises(InvalidStatus):
        connect(url, origin="http://evil.example", additional_headers={"Cookie": session_cookie(make_user())})
