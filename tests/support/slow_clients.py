"""Hostile slow HTTP clients (slowloris and friends), for tests and for measuring a server by hand.

Each attack opens ``count`` raw TCP connections to one address and reports, per connection, how
many seconds the server kept it open (``None``: still open when we gave up at ``give_up``) and the
first bytes the server answered, if any. Stdlib only (asyncio), so it runs anywhere:

    python -m tests.support.slow_clients --port 8000 --count 400 --give-up 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

Dribble = Callable[[asyncio.StreamWriter], Awaitable[None]]
T = TypeVar("T")


@dataclass
class Outcome:
    open_for: float | None  # seconds until the server closed it; None if it outlived ``give_up``
    answer: bytes  # what the server sent before closing (b"" if nothing)
    refused: bool = False  # the connect itself failed


@dataclass
class Report:
    name: str
    outcomes: list[Outcome]

    @property
    def closed(self) -> list[float]:
        return [o.open_for for o in self.outcomes if o.open_for is not None]

    @property
    def still_open(self) -> int:
        return sum(o.open_for is None for o in self.outcomes)

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.refused:
                key = "refused"
            elif outcome.answer:
                key = outcome.answer.split(b"\r\n", 1)[0].decode(errors="replace")
            else:
                key = "nothing" if outcome.open_for is not None else "nothing yet"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def summary(self) -> str:
        closed = sorted(self.closed)
        if closed:
            spread = (
                f"closed after min {closed[0]:.1f} s, median {statistics.median(closed):.1f} s, "
                f"max {closed[-1]:.1f} s"
            )
        else:
            spread = "none closed"
        return (
            f"{self.name}: {len(self.outcomes)} connections, {spread}, {self.still_open} still open; "
            f"answers {self.statuses()}"
        )


async def _one(host: str, port: int, dribble: Dribble, give_up: float, source: str | None) -> Outcome:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0) if source else None), timeout=10
        )
    except (OSError, TimeoutError):
        return Outcome(open_for=time.monotonic() - started, answer=b"", refused=True)
    answer = bytearray()

    async def read_until_closed() -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(4096):
                answer.extend(chunk)

    async def write_slowly() -> None:
        with contextlib.suppress(OSError):
            await dribble(writer)
        await asyncio.sleep(give_up)  # the attack ran out of bytes: keep holding the connection

    reading = asyncio.ensure_future(read_until_closed())
    writing = asyncio.ensure_future(write_slowly())
    try:
        await asyncio.wait_for(asyncio.shield(reading), timeout=give_up)
        open_for: float | None = time.monotonic() - started
    except TimeoutError:
        open_for = None
    finally:
        writing.cancel()
        reading.cancel()
        writer.close()
    return Outcome(open_for=open_for, answer=bytes(answer[:200]))


async def attack(
    name: str,
    dribble: Dribble,
    *,
    host: str = "127.0.0.1",
    port: int,
    count: int,
    give_up: float,
    source: str | None = None,
) -> Report:
    """``count`` connections at once (from the local address ``source``, e.g. 127.0.0.2)."""
    outcomes = await asyncio.gather(*(_one(host, port, dribble, give_up, source) for _ in range(count)))
    return Report(name, list(outcomes))


async def probe(
    *, host: str = "127.0.0.1", port: int, path: str = "/login/", source: str | None = None
) -> tuple[bytes, float]:
    """An ordinary GET on a fresh connection: (status line, seconds to get it)."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0) if source else None), timeout=10
    )
    try:
        writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
        status = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    return status.strip(), time.monotonic() - started


def dribbled_headers(interval: float = 1.0) -> Dribble:
    """A request line, then one more header line every ``interval`` seconds, never the blank line."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        for n in range(100_000):
            await asyncio.sleep(interval)
            writer.write(b"X-Slow-%d: a\r\n" % n)
            await writer.drain()

    return dribble


def partial_body(sent: int = 10, declared: int = 1000, interval: float | None = None) -> Dribble:
    """A POST declaring ``declared`` body bytes that sends ``sent`` of them, then (with
    ``interval``) one more byte every ``interval`` seconds, never the rest."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % declared + b"a" * sent
        )
        await writer.drain()
        if interval is None:
            return
        for _ in range(declared - sent - 1):
            await asyncio.sleep(interval)
            writer.write(b"a")
            await writer.drain()

    return dribble


def second_request_dribbled(interval: float = 1.0) -> Dribble:
    """One complete request, then the next request's headers a line every ``interval`` seconds
    (a kept-alive connection's later request must be bounded too)."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
        await dribbled_headers(interval)(writer)

    return dribble


def steady_body(rate: int, seconds: float, path: str = "/login/") -> Dribble:
    """An honest slow upload: ``rate`` bytes a second for ``seconds``, then the server's answer."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        step = 0.125
        chunk = b"a" * int(rate * step)
        chunks = int(seconds / step)
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(chunk) * chunks)
        )
        started = time.monotonic()
        for n in range(chunks):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(max(0.0, started + (n + 1) * step - time.monotonic()))

    return dribble


def silent() -> Dribble:
    """Connect and send nothing at all."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        return None

    return dribble


def blank_lines(interval: float = 1.0) -> Dribble:
    """Only CRLFs (which HTTP parsers skip between requests), one every ``interval`` seconds."""

    async def dribble(writer: asyncio.StreamWriter) -> None:
        for _ in range(100_000):
            writer.write(b"\r\n")
            await writer.drain()
            await asyncio.sleep(interval)

    return dribble


def run_async(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """``asyncio.run`` in a thread of its own: the caller's thread may already run an event loop
    (Playwright's sync API keeps one in the test session's main thread). ``timeout``: seconds to
    wait for it (None: as long as it takes)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=timeout)


def run(name: str, dribble: Dribble, **options: Any) -> Report:
    return run_async(attack(name, dribble, **options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--give-up", type=float, default=60.0)
    args = parser.parse_args()
    attacks = {
        "headers dribbled 1 line/s": dribbled_headers(),
        "POST with 10 of 1000 body bytes": partial_body(),
        "POST body dribbled 1 byte/s": partial_body(interval=1.0),
        "second request's headers dribbled": second_request_dribbled(),
        "idle (nothing sent)": silent(),
        "blank lines 1/s": blank_lines(),
    }
    for name, dribble in attacks.items():
        print(
            run(
                name, dribble, host=args.host, port=args.port, count=args.count, give_up=args.give_up
            ).summary()
        )


if __name__ == "__main__":
    main()
