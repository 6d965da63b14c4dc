"""WebSocket (and HTTP polling) load clients, in their own process: ``python -m bench.clients``.

A scenario spawns this process (bench.stack.Clients) and drives it with one JSON command per
line on stdin; each command gets one JSON reply line on stdout. One asyncio loop holds every
socket (thousands per process). Nothing here imports Django: the clients only speak the wire
protocol, like a browser would.

Every text frame is stamped with ``time.time_ns()`` the moment it is read. A ``job.update``
whose progress message is a ``time.time_ns()`` integer (put there at the push call site, see
bench/transport.py and bench/kinds.py) yields a latency sample: receipt minus send, on the
same machine's clock.

Commands (``cmd`` key):
- ``open``: ``url`` (ws://host:port), ``origin``, ``sockets`` [{path, cookie, tag, hello, trace}],
  ``concurrency`` (at most this many handshakes at once; 0: all at once). ``hello``: wait for
  the project's ``hello`` + ``snapshot``. Replies with the indexes given, failures and timings.
- ``reset``: forget what was received so far (sockets stay open).
- ``count``: totals so far (cheap; for waiting until delivery completes).
- ``stats``: everything received since the last reset: latencies per tag, per-socket counts,
  final states and notifications per socket, traces of sockets opened with ``trace``.
- ``poll``: celery-progress's JS client: ``pollers`` loops each GET ``url`` every ``interval``
  seconds (fixed rate, staggered) for ``seconds``; replies with counts and a trace.
- ``browser_open``: a real headless Chromium (Playwright, ``executable``: Debian's
  ``/usr/bin/chromium``) with one page per ``pages`` entry [{path, cookie}], each in its own
  context signed in by its session cookie, loading the project's own page (its own socket
  client, frontend/static/frontend/socket.js). A script injected before the page's own
  (``BROWSER_PROBE``) stamps every WebSocket message the moment the page's socket gets it
  (``performance.timeOrigin + performance.now()``, the same wall clock, ~0.1 ms resolution)
  and keeps the timestamped ``job.update`` frames. ``browser_rows``: per page, the rows
  [recv_ns, message, current, state] kept since the last call.
- ``close``: close every socket (and the browser). ``exit``: close and quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FINAL_STATES = {"succeeded", "failed", "cancelled"}
OPEN_TIMEOUT = 30.0

# Runs in the page before its own scripts: every socket the page opens records, as its first
# listener (before the app's own onmessage), when each timestamped job.update arrived.
BROWSER_PROBE = """
(() => {
  window.__rbRows = [];
  window.__rbOpen = 0;
  const Native = window.WebSocket;
  class Probed extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => { window.__rbOpen += 1; });
      this.addEventListener("message", (event) => {
        const t = performance.timeOrigin + performance.now();
        if (typeof event.data !== "string" || !event.data.includes('"job.update"')) return;
        try {
          const m = JSON.parse(event.data);
          const text = (m.job && m.job.progress && m.job.progress.message) || "";
          if (m.type === "job.update" && /^[0-9]+$/.test(text)) {
            window.__rbRows.push([t, text, m.job.progress.current, m.job.state]);
          }
        } catch (e) {}
      });
    }
  }
  window.WebSocket = Probed;
})();
"""


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Sock:
    index: int
    tag: str
    trace: bool
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    frames: int = 0  # timestamped job.update frames since the last reset
    finals: dict[str, list[Any]] = field(default_factory=dict)  # job id -> [state, recv_ns, ended_ns]
    notes: dict[str, int] = field(default_factory=dict)  # notification title -> recv_ns
    trace_rows: list[list[Any]] = field(default_factory=list)  # [recv_ns, current, ts_ns, state]
    other: int = 0  # frames of other types


class Clients:
    def __init__(self) -> None:
        self.sockets: list[Sock] = []
        self.latencies: dict[str, list[int]] = {}  # tag -> receipt minus send, in microseconds
        self.errors: list[str] = []
        self.closing = False
        self.browser: Any = None  # (playwright, browser, pages) once browser_open ran

    # --- frames ------------------------------------------------------------------------------

    def on_frame(self, sock: Sock, frame: str | bytes, now: int) -> None:
        if isinstance(frame, bytes):
            sock.other += 1
            return
        try:
            message = json.loads(frame)
        except ValueError:
            self.errors.append(f"socket {sock.index}: invalid JSON {frame[:80]!r}")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "job.update":
            job = message["job"]
            text = job["progress"]["message"] or ""
            ts = int(text) if text.isdigit() else None
            if ts is not None:
                sock.frames += 1
                self.latencies.setdefault(sock.tag, []).append((now - ts) // 1000)
            state = job["state"]
            if state in FINAL_STATES:
                result = job.get("result_summary")  # a small result is its own summary
                ended = result.get("ended_ns") if isinstance(result, dict) else None
                sock.finals.setdefault(job["id"], [state, now, ended])
            if sock.trace:
                sock.trace_rows.append([now, job["progress"]["current"], ts, state])
        elif kind == "notification.new":
            sock.notes.setdefault(message["notification"]["title"], now)
        elif kind is None and isinstance(message, dict) and "progress" in message:
            # celery-progress's WebSocket consumer: {"state", "complete", "progress": {...}}
            text = str(message["progress"].get("description", ""))
            if text.isdigit():
                sock.frames += 1
                self.latencies.setdefault(sock.tag, []).append((now - int(text)) // 1000)
            if sock.trace:
                sock.trace_rows.append([now, message["progress"].get("current"), None, message.get("state")])
        else:
            sock.other += 1

    async def read(self, sock: Sock) -> None:
        assert sock.ws is not None
        try:
            async for frame in sock.ws:
                self.on_frame(sock, frame, time.time_ns())
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.errors.append(f"socket {sock.index}: {exc!r}")
        if not self.closing:
            rcvd = sock.ws.close_code
            self.errors.append(f"socket {sock.index} ({sock.tag}) closed by the server: code {rcvd}")

    # --- commands ----------------------------------------------------------------------------

    async def open_one(self, url: str, origin: str | None, spec: dict[str, Any], sock: Sock) -> float:
        started = time.perf_counter()
        headers = {"Cookie": spec["cookie"]} if spec.get("cookie") else {}
        ws = await connect(
            url + spec["path"],
            origin=origin,  # type: ignore[arg-type]
            additional_headers=headers,
            compression=spec.get("compression"),
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            close_timeout=2,
            max_size=2**22,
            max_queue=None,
        )
        sock.ws = ws
        if spec.get("hello"):
            async with asyncio.timeout(OPEN_TIMEOUT):
                for expected in ("hello", "snapshot"):
                    frame = await ws.recv()
                    kind = json.loads(frame).get("type")
                    if kind != expected:
                        raise RuntimeError(f"expected {expected}, got {str(frame)[:120]}")
        elapsed = time.perf_counter() - started
        sock.task = asyncio.create_task(self.read(sock))
        return elapsed

    async def cmd_open(self, req: dict[str, Any]) -> dict[str, Any]:
        url, origin = req["url"], req.get("origin")
        concurrency = int(req.get("concurrency") or 0)
        gate = asyncio.Semaphore(concurrency) if concurrency else None
        first = len(self.sockets)
        new = [
            Sock(index=first + i, tag=spec.get("tag", "p"), trace=bool(spec.get("trace")))
            for i, spec in enumerate(req["sockets"])
        ]
        self.sockets.extend(new)

        async def one(spec: dict[str, Any], sock: Sock) -> float | str:
            try:
                if gate is None:
                    return await self.open_one(url, origin, spec, sock)
                async with gate:
                    return await self.open_one(url, origin, spec, sock)
            except Exception as exc:
                return f"socket {sock.index}: {exc!r}"[:300]

        started = time.perf_counter()
        results = await asyncio.gather(
            *(one(spec, sock) for spec, sock in zip(req["sockets"], new, strict=True))
        )
        elapsed = time.perf_counter() - started
        times = sorted(r for r in results if isinstance(r, float))
        failures = [r for r in results if isinstance(r, str)]
        return {
            "first": first,
            "opened": len(times),
            "failed": len(failures),
            "failures": failures[:5],
            "elapsed_s": elapsed,
            "handshake_ms": [round(t * 1000, 2) for t in times],
        }

    def cmd_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        self.latencies = {}
        for sock in self.sockets:
            sock.frames = 0
            sock.finals = {}
            sock.notes = {}
            sock.trace_rows = []
            sock.other = 0
        return {"ok": True}

    def cmd_count(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "frames": {tag: len(values) for tag, values in self.latencies.items()},
            "finals": sum(len(s.finals) for s in self.sockets),
            "notes": sum(len(s.notes) for s in self.sockets),
            "errors": len(self.errors),
        }

    def cmd_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        detail = bool(req.get("detail", True))
        reply: dict[str, Any] = {
            "latency_us": self.latencies,
            "frames": [s.frames for s in self.sockets],
            "errors": self.errors[:50],
            "error_count": len(self.errors),
        }
        if detail:
            reply["finals"] = {s.index: s.finals for s in self.sockets if s.finals}
            reply["notes"] = {s.index: s.notes for s in self.sockets if s.notes}
            reply["traces"] = {s.index: s.trace_rows for s in self.sockets if s.trace}
        return reply

    async def cmd_poll(self, req: dict[str, Any]) -> dict[str, Any]:
        """celery-progress's JS client: GET every ``interval`` s (its 500 ms default) per poller."""
        import aiohttp

        url, pollers, interval = req["url"], int(req["pollers"]), float(req.get("interval", 0.5))
        seconds = float(req["seconds"])
        headers = {"Cookie": req["cookie"]} if req.get("cookie") else {}
        trace: list[list[Any]] = []
        counts = {"responses": 0, "errors": 0}
        statuses: dict[str, int] = {}
        start = time.perf_counter() + 0.05
        end = start + seconds

        async def poller(k: int, session: aiohttp.ClientSession) -> None:
            n = 0
            while True:
                target = start + (k / pollers) * interval + n * interval
                if target >= end:
                    return
                await asyncio.sleep(max(0.0, target - time.perf_counter()))
                n += 1
                try:
                    async with session.get(url, headers=headers) as response:
                        body = await response.read()
                    now = time.time_ns()
                    statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
                    counts["responses"] += 1
                    if k == 0 and req.get("trace"):
                        data = json.loads(body)
                        progress = data.get("progress") or {}
                        text = str(progress.get("description", ""))
                        trace.append(
                            [
                                now,
                                progress.get("current"),
                                int(text) if text.isdigit() else None,
                                data.get("state"),
                            ]
                        )
                except Exception as exc:
                    counts["errors"] += 1
                    if counts["errors"] <= 5:
                        self.errors.append(f"poller {k}: {exc!r}")

        # One keep-alive connection per poller, like one browser tab each.
        connectors = [aiohttp.TCPConnector(limit=1) for _ in range(pollers)]
        sessions = [aiohttp.ClientSession(connector=c, trust_env=False) for c in connectors]
        try:
            await asyncio.gather(*(poller(k, s) for k, s in enumerate(sessions)))
        finally:
            for session in sessions:
                await session.close()
        return {**counts, "statuses": statuses, "trace": trace}

    async def cmd_browser_open(self, req: dict[str, Any]) -> dict[str, Any]:
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        browser = await playwright.chromium.launch(
            executable_path=req["executable"], headless=True, args=req.get("args") or []
        )
        pages: list[Any] = []
        self.browser = (playwright, browser, pages)
        for spec in req["pages"]:
            context = await browser.new_context()
            name, _, value = spec["cookie"].partition("=")
            await context.add_cookies([{"name": name, "value": value, "url": req["url"]}])
            await context.add_init_script(BROWSER_PROBE)
            page = await context.new_page()
            await page.goto(req["url"] + spec["path"])
            await page.wait_for_function("window.__rbOpen > 0", timeout=OPEN_TIMEOUT * 1000)
            pages.append(page)
        return {"opened": len(pages)}

    async def cmd_browser_rows(self, req: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for page in self.browser[2] if self.browser else []:
            got = await page.evaluate("window.__rbRows.splice(0)")
            # Milliseconds (a float: ~0.1 ms resolution) to integer ns, as the other clients stamp.
            rows.append([[round(t * 1e6), text, current, state] for t, text, current, state in got])
        return {"rows": rows}

    async def close_browser(self) -> None:
        if self.browser is not None:
            playwright, browser, _ = self.browser
            self.browser = None
            with contextlib.suppress(Exception):
                await browser.close()
            with contextlib.suppress(Exception):
                await playwright.stop()

    async def cmd_close(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.close_browser()
        self.closing = True
        socks, self.sockets = self.sockets, []

        async def close(sock: Sock) -> None:
            if sock.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sock.ws.close(), 5)
            if sock.task is not None:
                sock.task.cancel()

        await asyncio.gather(*(close(s) for s in socks))
        self.closing = False
        return {"closed": len(socks)}

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("cmd")
        if name == "open":
            return await self.cmd_open(req)
        if name == "reset":
            return self.cmd_reset(req)
        if name == "count":
            return self.cmd_count(req)
        if name == "stats":
            return self.cmd_stats(req)
        if name == "poll":
            return await self.cmd_poll(req)
        if name == "browser_open":
            return await self.cmd_browser_open(req)
        if name == "browser_rows":
            return await self.cmd_browser_rows(req)
        if name in ("close", "exit"):
            return await self.cmd_close(req)
        if name == "ping":
            return {"ok": True}
        return {"error": f"unknown command {name!r}"}


async def main() -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    clients = Clients()
    while True:
        line = await lines.get()
        if line is None:
            await clients.cmd_close({})
            return
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            reply = await clients.handle(req)
        except Exception as exc:
            reply = {"error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if req.get("cmd") == "exit":
            return


if __name__ == "__main__":
    asyncio.run(main())
