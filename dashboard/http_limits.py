"""uvicorn's HTTP/1.1 protocol (httptools) with the read limits uvicorn lacks; the Procfile selects it
with ``--http dashboard.http_limits:LimitedHttpToolsProtocol``.

uvicorn 0.54 arms no timer until a response is complete (its keep-alive timeout), so a client that
connects and sends nothing, dribbles its headers or stops half-way through a body holds a
connection, and a request task, for as long as it likes; and its httptools parser accepts headers
of any size (``--h11-max-incomplete-event-size`` only applies to the h11 parser). An ASGI
middleware cannot help: the application is only called once the headers are complete. So this
subclass adds, per connection:

- a **header deadline**: from the connection's opening (or the first byte of a later request on a
  kept-alive connection) to the end of the headers, at most ``RUNBOARD_HTTP_HEADER_TIMEOUT``
  seconds, however the bytes trickle in; then 408 (or a plain close if nothing was sent);
- a **header size cap**: ``RUNBOARD_HTTP_MAX_HEADER_BYTES`` of request line and headers, then 431;
- a **body deadline**: ``RUNBOARD_HTTP_BODY_TIMEOUT`` seconds plus one second per
  ``RUNBOARD_HTTP_BODY_MIN_RATE`` bytes received (Apache mod_reqtimeout's ``body=..,MinRate=..``
  model), so an honest upload of any size at a usable speed finishes, while a body that stalls or
  trickles is cut; time the server itself stops reading (pipelining, back-pressure) is not counted;
- a **write stall limit**: a client that stops reading a response (an SSE stream, a download) for
  ``RUNBOARD_HTTP_WRITE_STALL_TIMEOUT`` seconds is disconnected, releasing the request's task;
- **connection limits**: ``--limit-concurrency`` counted when a connection opens (uvicorn itself
  only checks it once a request's headers are complete, and never for WebSocket upgrades), and at
  most ``RUNBOARD_HTTP_MAX_PENDING_PER_CLIENT`` fresh connections still sending their first
  request's headers per client address (per /64 for IPv6), except addresses uvicorn trusts as
  proxies (``--forwarded-allow-ips``/``FORWARDED_ALLOW_IPS``): there, the proxy limits per client.

It relies on uvicorn's protocol internals; uvicorn is pinned, and tests/system/test_http_limits.py
runs the real server (the Procfile's command) against slow clients.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from dashboard.conf import app_settings

logger = logging.getLogger("runboard.http")


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    max_header_bytes: int
    body_timeout: float
    body_min_rate: float
    write_stall_timeout: float
    max_pending_per_client: int


@cache
def limits() -> Limits:
    return Limits(
        header_timeout=app_settings.HTTP_HEADER_TIMEOUT,
        max_header_bytes=app_settings.HTTP_MAX_HEADER_BYTES,
        body_timeout=app_settings.HTTP_BODY_TIMEOUT,
        body_min_rate=float(app_settings.HTTP_BODY_MIN_RATE),
        write_stall_timeout=app_settings.HTTP_WRITE_STALL_TIMEOUT,
        max_pending_per_client=app_settings.HTTP_MAX_PENDING_PER_CLIENT,
    )


class _RefusalLog:
    """One warning per reason per minute with the count, not one line per refused connection
    (under a flood that would be thousands a second)."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last: dict[str, float] = {}

    def note(self, reason: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self.last.get(reason, -self.INTERVAL) >= self.INTERVAL:
            logger.warning(
                "Refused %d connection(s) since the last such warning: %s", self.counts[reason], reason
            )
            self.counts[reason] = 0
            self.last[reason] = now


_refusals = _RefusalLog()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; uvicorn turns it into ``send_400_response``."""


Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]


@cache
def _trusted_proxies(raw: str) -> Networks | None:
    """``--forwarded-allow-ips`` as networks; None when every address is trusted (``*``)."""
    networks: Networks = []
    for item in (part.strip() for part in raw.split(",")):
        if item == "*":
            return None
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue  # a Unix socket path or a name: never a TCP peer address
    return networks


def _client_key(host: str | None, trusted: Networks | None) -> str | None:
    """The address a per-client limit counts against; None for trusted proxies (and non-IP peers)."""
    if host is None or trusted is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in trusted):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # One host usually holds a whole /64: count it as one client.
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _pending(server_state: ServerState) -> Counter[str]:
    """Fresh connections still sending their first headers, per client, shared by the process."""
    counter = getattr(server_state, "runboard_pending", None)
    if counter is None:
        counter = Counter()
        server_state.runboard_pending = counter  # type: ignore[attr-defined]
    return counter


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._expect_headers = True  # the next bytes belong to a request's line and headers
        self._header_bytes = 0
        self._unparsed_header_bytes = 0  # raw bytes of a request's head not yet parsed whole
        self._body_started = 0.0
        self._body_received = 0
        self._refusal: tuple[int, str] | None = None
        self._pending_key: str | None = None

    # --- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.config.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self._refuse_connection(503, "Too many connections.")
            return
        key = _client_key(self.client[0] if self.client else None, _trusted_proxies(self._trusted_raw()))
        if key is not None:
            pending = _pending(self.server_state)
            if pending[key] >= self.limits.max_pending_per_client:
                self._refuse_connection(503, "Too many connections from your address.")
                return
            pending[key] += 1
            self._pending_key = key
        # A connection that never sends a byte is bound too (uvicorn would keep it forever).
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_pending()
        for timer in (self._header_timer, self._body_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = self._stall_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._expect_headers:
            # Bytes of a new request on a kept-alive connection (uvicorn cancels its keep-alive
            # timer on any byte, even the blank lines parsers skip between requests).
            self._arm_header_timer()
        expecting = self._expect_headers
        super().data_received(data)
        if expecting and self._expect_headers and not self.transport.is_closing():
            # The whole chunk went to a request line or headers not yet complete. httptools
            # reports a header only once its line ends (and re-copies the unfinished line on
            # every chunk), so a line that never ends is counted here, in raw bytes.
            self._unparsed_header_bytes += len(data)
            if self._unparsed_header_bytes > self.limits.max_header_bytes:
                self._refuse_connection(431, f"Request headers over {self.limits.max_header_bytes} bytes.")

    def handle_websocket_upgrade(self) -> None:
        self._release_pending()
        self._cancel_header_timer()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        status, msg = self._refusal or (400, msg)
        self._write_error(status, msg)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None and self.limits.write_stall_timeout > 0:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().resume_writing()

    # --- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._expect_headers = True
        self._header_bytes = 0
        self._arm_header_timer()  # a pipelined request that began in the same chunk as the last
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._expect_headers = False
        self._unparsed_header_bytes = 0
        self._cancel_header_timer()
        self._release_pending()
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        self._body_started = self.loop.time()
        self._body_received = 0
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_deadline)

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._expect_headers = True
        self._unparsed_header_bytes = 0
        super().on_message_complete()

    # --- limits -------------------------------------------------------------------------------

    def _trusted_raw(self) -> str:
        raw = self.config.forwarded_allow_ips
        return raw if isinstance(raw, str) else ",".join(raw)

    def _release_pending(self) -> None:
        if self._pending_key is not None:
            pending = _pending(self.server_state)
            pending[self._pending_key] -= 1
            if pending[self._pending_key] <= 0:
                del pending[self._pending_key]
            self._pending_key = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._refusal = (431, f"Request headers over {self.limits.max_header_bytes} bytes.")
            raise _Refused

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        logger.debug("Closed %s: headers not complete within %s s", self.client, self.limits.header_timeout)
        responding = self.cycle is not None and not self.cycle.response_complete
        if self._header_bytes and not responding:
            self._write_error(408, "Request headers took too long.")
        else:
            # Nothing of a request was sent (close quietly, as for an idle keep-alive), or a
            # response is still being written (a status line now would corrupt it).
            self.transport.close()

    def _body_deadline(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # We stopped reading (the application is behind, or a pipelined request waits):
            # not the client's time.
            self._body_started += self.limits.body_timeout
        allowed = self.limits.body_timeout + self._body_received / self.limits.body_min_rate
        remaining = self._body_started + allowed - now
        if remaining > 0:
            self._body_timer = self.loop.call_later(remaining, self._body_deadline)
            return
        logger.debug("Closed %s: request body too slow (%d bytes)", self.client, self._body_received)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The application sees a disconnect; the client gets a reason.
            cycle.disconnected = True
            cycle.message_event.set()
            self._write_error(408, "Request body too slow.")
        else:
            self.transport.close()

    def _write_stalled(self) -> None:
        self._stall_timer = None
        if not self.transport.is_closing():
            logger.debug("Closed %s: not reading the response", self.client)
            self.transport.abort()  # close() would wait to flush what the client won't read

    def _refuse_connection(self, status: int, msg: str) -> None:
        self._expect_headers = False
        _refusals.note(msg)
        self._write_error(status, msg)

    def _write_error(self, status: int, msg: str) -> None:
        body = msg.encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()
