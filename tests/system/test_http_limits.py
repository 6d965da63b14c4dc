"""Slow and greedy HTTP clients against the real web server, started with the Procfile's own
``web`` command (tests/conftest.py LiveServer): every connection a client dribbles, stalls or
hoards is closed within the limits docs/operations.md gives (dashboard/http_limits.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from dashboard.conf import app_settings
from jobs.tokens import token_create
from tests.conftest import LiveServer
from tests.jobs.factories import make_job_with_file
from tests.support import slow_clients as slow
from tests.support.procfile import procfile

# Scheduling slack on a loaded 2-core machine; every limit is checked from both sides.
SLACK = 2.5


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def assert_closed_between(report: slow.Report, earliest: float, latest: float) -> None:
    closed = report.closed
    assert report.still_open == 0 and earliest <= min(closed) and max(closed) <= latest, report.summary()


def test_the_procfile_runs_uvicorn_with_the_limits_protocol_and_a_connection_limit():
    web = procfile()["web"]
    assert "--http dashboard.http_limits:LimitedHttpToolsProtocol" in web
    assert "--limit-concurrency ${WEB_MAX_CONNECTIONS:-4000}" in web
    assert "--timeout-keep-alive 5" in web and "--timeout-graceful-shutdown 10" in web


def test_slow_clients_are_closed_within_the_documented_limits(live_server_url):
    """The issue's examples and their relatives, all at once against the Procfile's defaults: 400
    connections dribbling headers, POSTs that send part of their body (and stop, or trickle),
    idle connections, blank lines, a kept-alive connection's second request dribbled. Meanwhile an
    ordinary visitor is served, and an honest upload slower than the body timeout still finishes."""
    port = port_of(live_server_url)
    header_timeout = app_settings.HTTP_HEADER_TIMEOUT
    body_timeout = app_settings.HTTP_BODY_TIMEOUT
    assert (header_timeout, body_timeout) == (10, 15)  # the figures docs/operations.md gives
    give_up = body_timeout + 3 * SLACK + 10

    async def scenario() -> tuple[list[slow.Report], tuple[bytes, float], slow.Report]:
        def attack(name: str, dribble: slow.Dribble, count: int) -> asyncio.Future[slow.Report]:
            return asyncio.ensure_future(slow.attack(name, dribble, port=port, count=count, give_up=give_up))

        attacks = [
            attack("headers", slow.dribbled_headers(interval=1.0), 400),
            attack("second request headers", slow.second_request_dribbled(interval=1.0), 50),
            attack("idle", slow.silent(), 100),
            attack("blank lines", slow.blank_lines(interval=1.0), 50),
            attack("part of a body", slow.partial_body(sent=10, declared=1000), 100),
            attack("trickled body", slow.partial_body(sent=10, declared=1000, interval=1.0), 100),
        ]
        # 20 s at 32 KiB/s: longer than the body timeout, well above the minimum rate.
        honest = attack("honest slow upload", slow.steady_body(rate=32 * 1024, seconds=20), 1)
        await asyncio.sleep(3)
        served = await slow.probe(port=port)
        return [await a for a in attacks], served, await honest

    reports, (status, latency), honest = slow.run_async(scenario())
    by_name = {report.name: report for report in reports}
    for report in reports:
        assert report.still_open == 0, report.summary()

    for name in ("headers", "idle", "blank lines"):
        assert_closed_between(by_name[name], header_timeout - 0.5, header_timeout + SLACK)
    # The second request's clock starts at its first byte (0.5 s after the first response).
    assert_closed_between(by_name["second request headers"], header_timeout, header_timeout + 0.5 + SLACK)
    for name in ("part of a body", "trickled body"):
        assert_closed_between(by_name[name], body_timeout - 0.5, body_timeout + SLACK)

    # A client that sent part of a request is told why; one that sent nothing is just closed.
    for name in ("headers", "part of a body", "trickled body"):
        assert by_name[name].statuses() == {"HTTP/1.1 408 Request Timeout": len(by_name[name].outcomes)}
    for name in ("idle", "blank lines"):
        assert by_name[name].statuses() == {"nothing": len(by_name[name].outcomes)}

    assert status == b"HTTP/1.1 200 OK" and latency < 2.0, (status, latency)
    # The honest upload reached Django (403: it carries no CSRF token), after the body timeout.
    (outcome,) = honest.outcomes
    assert outcome.answer.startswith(b"HTTP/1.1 403"), honest.summary()
    assert outcome.open_for is not None and outcome.open_for > body_timeout


def test_request_headers_over_the_size_limit_are_refused_with_431(live_server_url):
    limit = app_settings.HTTP_MAX_HEADER_BYTES

    def get_with_headers(size: int) -> bytes:
        line = b"X-Padding-%04d: " + b"a" * 1000 + b"\r\n"
        headers = b"".join(line % n for n in range(size // len(line % 0) + 1))
        with socket.create_connection(("127.0.0.1", port_of(live_server_url)), timeout=10) as sock:
            with contextlib.suppress(OSError):  # refused while we were still sending: answered
                sock.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
            return sock.recv(200).split(b"\r\n", 1)[0]

    assert get_with_headers(limit - 4096) == b"HTTP/1.1 200 OK"
    assert get_with_headers(limit + 4096) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert get_with_headers(20 * limit) == b"HTTP/1.1 431 Request Header Fields Too Large"


@pytest.mark.parametrize("head", [b"X-Big: ", b"X-No-Colon-", b"GET /"], ids=["value", "name", "url"])
def test_a_header_line_that_never_ends_is_refused_at_the_size_limit_not_the_timeout(live_server_url, head):
    """httptools reports a header only when its line ends: an endless line is counted raw."""
    limit = app_settings.HTTP_MAX_HEADER_BYTES
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" if head != b"GET /" else b""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(live_server_url)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # refused while we were still sending: answered
            sock.sendall(start + head)
            for _ in range(4 * limit // 8192):
                sock.sendall(b"a" * 8192)
        answer = sock.recv(200).split(b"\r\n", 1)[0]
    assert answer == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert time.monotonic() - started < app_settings.HTTP_HEADER_TIMEOUT / 2


# --- connection limits and write stalls: a server of their own, with small figures ---------------

HEADER_TIMEOUT = 3
PER_CLIENT = 10
MAX_CONNECTIONS = 25
WRITE_STALL = 2


@pytest.fixture(scope="module")
def small_limits_server(server_env) -> Iterator[LiveServer]:
    # Loopback clients count as clients here: uvicorn trusts only this (never dialled) proxy.
    server = LiveServer(
        {
            **server_env,
            "FORWARDED_ALLOW_IPS": "192.0.2.1",
            "WEB_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "RUNBOARD_HTTP_MAX_PENDING_PER_CLIENT": str(PER_CLIENT),
            "RUNBOARD_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "RUNBOARD_HTTP_WRITE_STALL_TIMEOUT": str(WRITE_STALL),
        },
        name="small-limits-web",
    )
    yield server
    server.stop()


def test_one_address_cannot_hold_more_than_its_share_of_fresh_connections(small_limits_server):
    port = port_of(small_limits_server.url)

    async def scenario() -> tuple[slow.Report, tuple[bytes, float]]:
        greedy = {"port": port, "count": PER_CLIENT + 4, "give_up": 30, "source": "127.0.0.2"}
        hoard = asyncio.ensure_future(slow.attack("hoard", slow.silent(), **greedy))
        await asyncio.sleep(1)
        served = await slow.probe(port=port, source="127.0.0.3")
        return await hoard, served

    hoard, (status, _) = slow.run_async(scenario())
    refused = [o for o in hoard.outcomes if o.answer.startswith(b"HTTP/1.1 503")]
    held = [o for o in hoard.outcomes if not o.answer]
    assert len(refused) == 4 and all(o.open_for < 1 for o in refused), hoard.summary()
    assert len(held) == PER_CLIENT, hoard.summary()
    assert all(o.open_for <= HEADER_TIMEOUT + SLACK for o in held), hoard.summary()
    assert status == b"HTTP/1.1 200 OK"  # another address is served meanwhile


def test_connections_over_the_process_limit_are_refused_at_once(small_limits_server):
    port = port_of(small_limits_server.url)

    async def scenario() -> list[slow.Report]:
        return list(
            await asyncio.gather(
                *(
                    slow.attack(source, slow.silent(), port=port, count=8, give_up=30, source=source)
                    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
                )
            )
        )

    outcomes = [o for report in slow.run_async(scenario()) for o in report.outcomes]
    refused = [o for o in outcomes if o.answer.startswith(b"HTTP/1.1 503")]
    held = [o for o in outcomes if not o.answer]
    # uvicorn counts the new connection too: MAX_CONNECTIONS - 1 are held.
    assert len(held) == MAX_CONNECTIONS - 1 and len(refused) == 32 - (MAX_CONNECTIONS - 1)
    assert all(o.open_for < 1 for o in refused)
    assert all(o.open_for <= HEADER_TIMEOUT + SLACK for o in held)
    # Once they are gone, the server takes connections again.
    assert slow.run_async(slow.probe(port=port))[0] == b"HTTP/1.1 200 OK"


@pytest.mark.django_db(transaction=True)
def test_a_client_that_stops_reading_a_response_is_disconnected(small_limits_server, make_user):
    """A download nobody reads would hold its request task forever: cut after the stall limit."""
    size = 16 * 2**20  # well over what the kernel buffers on loopback (tcp_wmem max 4 MiB)
    user = make_user()
    job = make_job_with_file(owner=user, name="big.bin", content=b"x" * size)
    _, token = token_create(user=user, name="stall")

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port_of(small_limits_server.url)))
        sock.sendall(
            f"GET /api/v1/jobs/{job.id}/download/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        time.sleep(WRITE_STALL + 4)  # not reading
        received, started = 0, time.monotonic()
        sock.settimeout(10)
        try:
            while chunk := sock.recv(2**20):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < size / 2, f"the server waited: {received} bytes arrived"
    assert time.monotonic() - started < 5
    (settings.RUNBOARD_PRIVATE_DIR / job.result_file.name).unlink()
