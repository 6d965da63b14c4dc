"""Which ASGI server runs Runboard's web process (issue 15 §2): uvicorn, daphne and granian, each
serving the same application (``bench.asgi_bench``: Runboard's consumer and the bare ceiling),
measured in one run, servers interleaved round by round.

Run from the project root: ``.venv/bin/python bench/asgi_servers.py [--quick] [--rounds N]``.
Writes bench/results/asgi_servers.md and asgi_servers.json.

Per server and round, each on a fresh server process (one process: the Procfile runs one per
``web`` line and scales by adding processes):
- **sign-in storm**: 1,000 clients (10 per user; users with 50 jobs and 20 notifications) open
  at once, each waiting for ``hello`` + ``snapshot``; the time until the last is in, failures,
  and the server's CPU per connect (user + system of the server's process tree / connects);
  then the same storm of bare ceiling consumers, for the ratio.
- **memory per idle socket**: RSS of the server's process tree with N signed-in sockets open and
  idle minus after 10 warm-up sockets, / N.
- **latency and CPU per delivered message**, on those N sockets: ``push_event`` (Runboard's one
  publisher) of a real job payload stamped with ``time.time_ns()`` at a fixed rate, round-robin
  over the sockets' users; receipt stamped by the client process on the same clock. p50/p99 over
  every sample of the round (>= 1,000 per percentile: rate x seconds), and the server's CPU over
  the sending / messages delivered.

Settings as close as each server allows to the Procfile's uvicorn line (64 KiB WebSocket
messages, no per-message compression, proxy headers); what one cannot set is said in the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import summarize, write_results  # noqa: E402
from bench.sockets_memory import (  # noqa: E402
    JOBS_PER_USER,
    NOTIFICATIONS_PER_USER,
    add_history,
    clear_socket_rows,
    server_cpu_seconds,
    server_rss_bytes,
    storm_pair,
)
from bench.stack import (  # noqa: E402
    MIN_PERCENTILE_SAMPLES,
    Pacer,
    bench_stack,
    make_users,
    median,
    percentile,
    project_socket,
    set_results_dir,
    write_json,
)

SERVERS = ("uvicorn", "daphne", "granian")
APP = "bench.asgi_bench:application"
VENV_BIN = Path(sys.executable).parent

# What each server cannot be told that the Procfile's uvicorn line sets.
CAVEATS = {
    "uvicorn": "the Procfile's line",
    "daphne": "no HTTP body limit of its own (the app's body_limit applies)",
    "granian": "no WebSocket message size limit (an unbounded inbound frame)",
}


def command(server: str, port: int) -> list[str]:
    """The server's command line serving APP on 127.0.0.1:``port``, as the Procfile would."""
    if server == "daphne":
        return [
            str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "--proxy-headers",
            "--websocket-max-message-size", "65536", APP,
        ]  # fmt: skip
    if server == "granian":
        return [
            str(VENV_BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--log-level", "warning", "--no-access-log", APP,
        ]  # fmt: skip
    raise ValueError(server)


def web_factory(stack: Any, server: str) -> Any:
    """A function making a fresh ``server`` (started, answering) for a name."""
    from scripts.harness import WebServer

    def make(name: str) -> Any:
        if server == "uvicorn":
            return stack.web(name=name)
        web = WebServer(
            stack.child_env, log_dir=stack.log_dir, name=name, many_files=True, start=False,
            replace={"dashboard.asgi:application": APP},
        )  # fmt: skip
        web.command = command(server, web.port)
        web.start()
        stack.started.append(web)
        return web

    return make


def idle_and_latency(
    stack: Any, web: Any, users: list[Any], n: int, rate: float, seconds: float, name: str
) -> dict[str, Any]:
    """Memory per idle socket with ``n`` signed-in sockets (10 per user), then ``rate`` job updates
    per second for ``seconds`` over them: latency percentiles and server CPU per delivered one."""
    from bench.transport import payload_template
    from notifications import events, push

    clear_socket_rows()
    clients = stack.clients(f"clients-{name}")
    specs = [project_socket(users[i // 10], tag="p") for i in range(n)]
    clients.call("open", url=web.ws_url, origin=web.origin, sockets=specs[:10])
    time.sleep(1.0)
    rss0 = server_rss_bytes(web)
    opened = clients.call(
        "open", url=web.ws_url, origin=web.origin, sockets=specs[10:], concurrency=100, timeout=900
    )
    time.sleep(2.0)
    rss1 = server_rss_bytes(web)
    template = payload_template(users[0].id)
    groups = [events.user_group(u.id) for u in users[: -(-n // 10)]]

    def send(k: int) -> None:
        payload = dict(template)
        payload["progress"] = {"current": k, "total": None, "message": str(time.time_ns())}
        payload["version"] = k
        push.push_event(group=groups[k % len(groups)], event=events.job_update(payload))  # type: ignore[arg-type]

    count = int(rate * seconds)
    clients.call("reset")
    cpu0 = server_cpu_seconds(web)
    Pacer(rate).run(count, send)
    push.flush()
    # Each update goes to one user's group: every socket of that user (10) receives it.
    want = count * 10
    clients.wait_count(lambda c: c["frames"].get("p", 0) >= want, 60)
    cpu1 = server_cpu_seconds(web)
    stats = clients.call("stats", detail=False)
    lat = [v / 1000 for v in stats["latency_us"].get("p", [])]
    stack.stop(clients)
    stack.stop(web)
    return {
        "opened": 10 + opened["opened"],
        "failed": opened["failed"],
        "kib_per_socket": (rss1 - rss0) / max(1, opened["opened"]) / 1024,
        "rss_mib": rss1 / 2**20,
        "sent": count,
        "delivered": len(lat),
        "expected": want,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "cpu_ms_per_message": (cpu1 - cpu0) * 1000 / max(1, len(lat)),
    }


def fmt(values: list[float], spec: str = ".4g") -> str:
    values = [v for v in values if v == v]
    return "n/a" if not values else summarize(values, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per server (default 2; quick 1)")
    parser.add_argument("--storm", type=int, default=None, help="clients at once (default 1000; quick 100)")
    parser.add_argument("--sockets", type=int, default=None, help="idle sockets (default 2000; quick 200)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 2)
    m = args.storm or (100 if args.quick else 1000)
    n = args.sockets or (200 if args.quick else 2000)
    rate, seconds = (200.0, 1.0) if args.quick else (500.0, 4.0)  # 2,000 updates x 10 sockets each
    servers = [s for s in args.servers.split(",") if s]
    set_results_dir(args.results_dir)
    started = time.monotonic()
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    with bench_stack() as stack:
        users = make_users(max(m, n) // 10 + 1, prefix="asgi")
        add_history(users)
        for r in range(rounds):
            for server in servers[r % len(servers) :] + servers[: r % len(servers)]:
                make = web_factory(stack, server)
                storm = storm_pair(stack, users, m, web_factory=make, label=f"-{server}-{r}")
                idle = idle_and_latency(
                    stack, make(f"web-idle-{server}-{r}"), users, n, rate, seconds, f"{server}-{r}"
                )
                results[server].append({"round": r, **storm, "idle": idle})
                rb, ce = storm["runboard"], storm["ceiling"]
                print(
                    f"  [{server} round {r}] storm {rb['opened']}/{m} in {rb['elapsed_s']:.2f} s "
                    f"({rb['cpu_ms_per_connect']:.2f} CPU ms/connect; bare {ce['elapsed_s']:.2f} s); "
                    f"{idle['kib_per_socket']:.1f} KiB/socket; p50 {idle['p50_ms']:.2f} ms p99 "
                    f"{idle['p99_ms']:.2f} ms over {idle['delivered']}; "
                    f"{idle['cpu_ms_per_message']:.3f} CPU ms/msg",
                    flush=True,
                )

    table = [
        "| Server | Storm: all in (s) | Storm / bare consumer | CPU per connect (ms) | Failures | "
        "KiB per idle socket | p50 / p99 latency (ms) | CPU per delivered message (ms) | Delivered | "
        "Caveat |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, float]] = {}
    for server in servers:
        xs = results[server]
        storm_s = [x["runboard"]["elapsed_s"] for x in xs]
        ratio = [x["runboard"]["elapsed_s"] / x["ceiling"]["elapsed_s"] for x in xs]
        cpu = [x["runboard"]["cpu_ms_per_connect"] for x in xs]
        failed = sum(x["runboard"]["failed"] + x["idle"]["failed"] for x in xs)
        kib = [x["idle"]["kib_per_socket"] for x in xs]
        p50 = [x["idle"]["p50_ms"] for x in xs]
        p99 = [x["idle"]["p99_ms"] for x in xs]
        per_msg = [x["idle"]["cpu_ms_per_message"] for x in xs]
        delivered = sum(x["idle"]["delivered"] for x in xs)
        expected = sum(x["idle"]["expected"] for x in xs)
        table.append(
            f"| {server} | {fmt(storm_s)} | {fmt(ratio)} | {fmt(cpu)} | {failed} | {fmt(kib)} | "
            f"{fmt(p50)} / {fmt(p99)} | {fmt(per_msg)} | {delivered:,} / {expected:,} | {CAVEATS[server]} |"
        )
        summary[server] = {
            "storm_s": median(storm_s), "storm_ratio": median(ratio), "cpu_ms_per_connect": median(cpu),
            "failed": failed, "kib": median(kib), "p50_ms": median(p50), "p99_ms": median(p99),
            "cpu_ms_per_message": median(per_msg), "delivered": delivered, "expected": expected,
        }  # fmt: skip
    setup = (
        f"Each server serves `{APP}` (Runboard's application plus the ceiling's route) as one process "
        f"on the bench's private Redis and SQLite database; {rounds} round(s) per server, servers "
        f"interleaved (order rotated each round), a fresh server process for each measurement. Storm: "
        f"{m:,} clients at once, 10 per user, users with {JOBS_PER_USER} jobs and {NOTIFICATIONS_PER_USER} "
        f"notifications; the bare consumer's storm on its own fresh server of the same kind. Idle and "
        f"latency: {n:,} signed-in sockets (10 per user), then {rate:g} job updates/s for {seconds:g} s "
        f"through `push_event`, each to one user's group (10 sockets): {int(rate * seconds) * 10:,} "
        f"samples per round (percentiles need >= {MIN_PERCENTILE_SAMPLES:,}). CPU and RSS are the "
        "server's whole process tree (granian runs its worker as a child process). Figures: median over "
        "rounds (min, max, n)."
    )
    body = "\n".join([setup, "", *table])
    body += f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    print(body)
    if not args.no_write:
        print(f"wrote {write_results('asgi_servers', 'ASGI server: uvicorn, daphne, granian', body)}")
        write_json("asgi_servers", {"summary": summary, "rounds": results, "quick": args.quick})


if __name__ == "__main__":
    main()
