"""Load past one process (issue 17 §3): 4 web processes, 10,000 sockets.

Run from the project root: ``.venv/bin/python bench/scale_out.py [--quick]``. Writes
bench/results/scale_out.md and scale_out.json.

Real processes: redis-server (broker and channel layer), W uvicorn web processes (as the
Procfile runs them; default 4), a Celery worker (2 processes), and W client processes driven by
the ``websockets`` library (bench/clients.py: no Runboard code, the wire protocol only), one per
web process. U users (sockets / 10) each hold 10 signed-in sockets, spread over the web processes
with no sticky routing: a user's socket j goes to web ((u x 10 + j) mod W), so every user group
lives on every process.

- **Connect storm across processes:** every client process opens its sockets at once (no
  limit) at the same moment; each socket waits for ``hello`` + ``snapshot``. Figures: time until
  the last is signed in, failures, handshake p50/p99 (all sockets pooled), CPU seconds per web
  process per connect.
- **Memory per socket:** each web's RSS after one warm-up socket, then with all its sockets
  open and idle for 3 s: the difference / its sockets.
- **Broadcast to everyone:** a staff user launches the real ``broadcast`` kind (one notification
  per user, pushed to the user's group after commit, delivered to each of their 10 sockets on 4
  processes). Figures per round: last receipt - launch, p50, lost; per web process, CPU seconds
  during the round / notifications it delivered (CPU per delivered message).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, summarize, write_results  # noqa: E402
from bench.stack import (  # noqa: E402
    bench_stack,
    make_users,
    median,
    percentile,
    project_socket,
    set_results_dir,
    write_json,
)

SOCKETS_PER_USER = 10  # under the per-user cap (RUNBOARD_MAX_SOCKETS_PER_USER, 20)


def _parallel(calls: list[Any]) -> list[Any]:
    """Run each zero-argument call in a thread of its own, at once; their results in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _opener(client: Any, web: Any, sockets: list[dict[str, Any]], *, timeout: float, concurrency: int) -> Any:
    """A call that has ``client`` open ``sockets`` on ``web``, ``concurrency`` handshakes at a
    time (0: all at once)."""
    return lambda: client.call(
        "open", timeout=timeout, url=web.ws_url, origin=web.origin, concurrency=concurrency, sockets=sockets
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with bench_stack() as stack:
        from django.contrib.auth import get_user_model

        from jobs.launch import job_create

        webs = [stack.web(name=f"web{i}") for i in range(args.webs)]
        worker = stack.worker(concurrency=2)
        (admin,) = make_users(1, prefix="scaleadmin", staff=True)
        users = make_users(args.sockets // SOCKETS_PER_USER, prefix="scale")
        clients = [stack.clients(f"clients-{i}") for i in range(args.webs)]
        # Each web's sockets: a user's j-th socket goes to web (u * 10 + j) mod W.
        specs: list[list[dict[str, Any]]] = [[] for _ in webs]
        for u, user in enumerate(users):
            for j in range(SOCKETS_PER_USER):
                specs[(u * SOCKETS_PER_USER + j) % len(webs)].append(project_socket(user, tag="p"))
        # Warm-up: one socket per web (imports, caches, the layer's subscriber), then the baseline.
        (warm,) = make_users(1, prefix="scalewarm")
        for web, client in zip(webs, clients, strict=True):
            client.open_all(url=web.ws_url, origin=web.origin, concurrency=1, sockets=[project_socket(warm)])
        time.sleep(2.0)
        rss0 = [web.rss_bytes() for web in webs]
        cpu0 = [web.cpu_seconds() for web in webs]

        # The storm: the first `--storm` sockets all at once (each client process opens its share
        # with no limit, all at the same moment). A client gives up on a socket not signed in
        # within 30 s (bench/clients.py OPEN_TIMEOUT), as a browser's first try would.
        storm_specs = [mine[: args.storm // len(webs)] for mine in specs]
        started = time.perf_counter()
        opened = _parallel(
            [
                _opener(client, web, mine, timeout=args.timeout + 60, concurrency=0)
                for web, client, mine in zip(webs, clients, storm_specs, strict=True)
            ]
        )
        storm_s = time.perf_counter() - started
        cpu1 = [web.cpu_seconds() for web in webs]
        for reply in opened:
            if isinstance(reply, Exception):
                raise reply
        # The rest, 50 handshakes at a time per client process (a web restart's clients come
        # back with jittered backoff, not in one instant), to reach the full count.
        rest_started = time.perf_counter()
        rest = _parallel(
            [
                _opener(
                    client, web, mine[args.storm // len(webs) :], timeout=args.timeout + 600, concurrency=50
                )
                for web, client, mine, first in zip(webs, clients, specs, storm_specs, strict=True)
            ]
        )
        rest_s = time.perf_counter() - rest_started
        for reply in rest:
            if isinstance(reply, Exception):
                raise reply
        time.sleep(3.0)
        rss1 = [web.rss_bytes() for web in webs]
        storm = {
            "wall_s": storm_s,
            "size": sum(len(mine) for mine in storm_specs),
            "rest_s": rest_s,
            "rest_opened": sum(reply["opened"] for reply in rest),
            "rest_failed": sum(reply["failed"] for reply in rest),
            "opened": sum(reply["opened"] for reply in opened),
            "failed": sum(reply["failed"] for reply in opened),
            "failures": [f for reply in opened for f in reply["failures"]][:5],
            "per_client_s": [reply["elapsed_s"] for reply in opened],
            "handshake_ms": [ms for reply in opened for ms in reply["handshake_ms"]],
            "cpu_s": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
            "sockets": [len(mine) for mine in storm_specs],
            "all_sockets": [len(mine) for mine in specs],
        }
        memory = [
            {"web": i, "sockets": len(specs[i]), "rss0_mib": rss0[i] / 2**20, "rss1_mib": rss1[i] / 2**20,
             "kib_per_socket": (rss1[i] - rss0[i]) / 1024 / max(1, len(specs[i]))}
            for i in range(len(webs))
        ]  # fmt: skip
        print(
            f"  storm: {storm['opened']} opened, {storm['failed']} failed in {storm_s:.1f} s; "
            f"KiB/socket {[round(m['kib_per_socket'], 1) for m in memory]}",
            flush=True,
        )

        owner = get_user_model().objects.get(pk=admin.id)
        for r in range(args.rounds):
            title = f"Scale-out announcement {r}"
            for client in clients:
                client.call("reset")
            cpu_a = [web.cpu_seconds() for web in webs]
            t0 = time.time_ns()
            job_create(
                owner=owner, kind="broadcast", rate_limit=False,
                params={"title": title, "body": "Maintenance tonight at 22:00 UTC."},
            )  # fmt: skip
            # Every user gets it: the scale users' sockets, and each web's warm-up socket.
            expected = [len(mine) + 1 for mine in specs]
            for client, want in zip(clients, expected, strict=True):
                client.wait_count(lambda c, want=want: c["notes"] >= want, timeout=args.timeout)
            cpu_b = [web.cpu_seconds() for web in webs]
            stats = [client.call("stats", timeout=300) for client in clients]
            times: list[float] = []
            per_web: list[int] = []
            for s in stats:
                mine = [(notes[title] - t0) / 1e9 for notes in s["notes"].values() if title in notes]
                times.extend(mine)
                per_web.append(len(mine))
            cpu = [b - a for a, b in zip(cpu_a, cpu_b, strict=True)]
            rounds.append(
                {
                    "round": r,
                    "received": len(times),
                    "lost": sum(expected) - len(times),
                    "last_s": max(times, default=float("nan")),
                    "p50_s": percentile(times, 50),
                    "p99_s": percentile(times, 99),
                    "per_web_received": per_web,
                    "cpu_s": cpu,
                    "cpu_ms_per_message": [1000 * c / max(1, n) for c, n in zip(cpu, per_web, strict=True)],
                }
            )
            print(
                f"  [round {r}] received {len(times)}/{sum(expected)}, last {rounds[-1]['last_s']:.3f} s",
                flush=True,
            )
            time.sleep(2.0)
        errors = [e for client in clients for e in client.call("stats", detail=False)["errors"]]
        parts: list[Any] = [*webs, worker]
        server_errors = [line for part in parts for line in stack.error_lines(part)[:5]]
    return {"storm": storm, "memory": memory, "rounds": rounds, "client_errors": errors[:10],
            "server_errors": server_errors[:10]}  # fmt: skip


def report(args: argparse.Namespace, r: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    storm, memory, rounds = r["storm"], r["memory"], r["rounds"]
    sockets = storm["opened"] + storm["rest_opened"]
    kib = [m["kib_per_socket"] for m in memory]
    cpu_connect_ms = [1000 * c / max(1, n) for c, n in zip(storm["cpu_s"], storm["sockets"], strict=True)]
    cpu_msg = [ms for rnd in rounds for ms in rnd["cpu_ms_per_message"]]
    last = [rnd["last_s"] for rnd in rounds]
    lost = sum(rnd["lost"] for rnd in rounds)
    lines = [
        f"{args.webs} web processes, {sockets:,} sockets ({sockets // SOCKETS_PER_USER:,} users x "
        f"{SOCKETS_PER_USER}, no sticky routing), {args.webs} client processes (`websockets`), one "
        "Redis (broker and channel layer, the PubSub layer), a Celery worker (2 processes).",
        "",
        "### Connect storm across processes",
        "",
        "| web | sockets | CPU during the storm (s) | CPU per connect (ms) | client's open time (s) |",
        "|---|---|---|---|---|",
    ]
    for i in range(len(memory)):
        lines.append(
            f"| web{i} | {storm['sockets'][i]:,} | {storm['cpu_s'][i]:.1f} | {cpu_connect_ms[i]:.2f} | "
            f"{storm['per_client_s'][i]:.1f} |"
        )
    hs = storm["handshake_ms"]
    lines += [
        "",
        f"The storm: {storm['size']:,} sockets at once ({storm['size'] // len(memory):,} per web process, "
        f"every client process at the same moment): {storm['opened']:,} signed in (hello + snapshot) "
        f"{storm['wall_s']:.1f} s after the start, {storm['failed']:,} failed "
        f"{storm['failures'][:2] or ''}; handshake to snapshot p50 {percentile(hs, 50):.0f} ms, p99 "
        f"{percentile(hs, 99):.0f} ms ({len(hs):,} samples). Then the other "
        f"{storm['rest_opened'] + storm['rest_failed']:,}, 50 at a time per client process: "
        f"{storm['rest_opened']:,} signed in, {storm['rest_failed']} failed, in {storm['rest_s']:.1f} s.",
        "",
        "### Memory per socket",
        "",
        "| web | sockets | RSS before (MiB) | RSS with them, idle (MiB) | KiB per socket |",
        "|---|---|---|---|---|",
    ]
    for m in memory:
        lines.append(
            f"| web{m['web']} | {m['sockets']:,} | {m['rss0_mib']:.1f} | {m['rss1_mib']:.1f} | "
            f"{m['kib_per_socket']:.1f} |"
        )
    lines += [
        "",
        "### Broadcast to everyone",
        "",
        "| round | received / sent | last receipt (s) | p50 (s) | p99 (s) | CPU per message, per web (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for rnd in rounds:
        lines.append(
            f"| {rnd['round']} | {rnd['received']:,} / {rnd['received'] + rnd['lost']:,} | "
            f"{rnd['last_s']:.3f} | "
            f"{rnd['p50_s']:.3f} | {rnd['p99_s']:.3f} | "
            f"{', '.join(f'{ms:.3f}' for ms in rnd['cpu_ms_per_message'])} |"
        )
    lines += [
        "",
        f"Client errors: {len(r['client_errors'])}; server error lines: {len(r['server_errors'])}"
        + (f" (first: {r['server_errors'][0][:200]!r})" if r["server_errors"] else "")
        + ".",
    ]
    scenario = "17. Scale-out"
    summary = [
        row(scenario, f"{storm['size']:,} sockets connecting at once over {args.webs} web processes: "
            "signed in / failed (30 s client timeout)", "all / 0",
            f"{storm['opened']:,} / {storm['failed']:,} in {storm['wall_s']:.1f} s",
            storm["failed"] == 0 and storm["opened"] > 0),
        row(scenario, f"sockets open at once over {args.webs} web processes (the rest 50 at a time)",
            f"{args.sockets:,}", f"{sockets:,}", sockets == args.sockets),
        row(scenario, "RSS per idle socket, per web process (KiB)", "report (one process: 39.7)",
            summarize(kib, ".1f"), None),
        row(scenario, "web CPU per connect, per web process (ms)", "report",
            summarize(cpu_connect_ms, ".2f"), None),
        row(scenario, f"broadcast to {sockets:,} sockets: last receipt after launch (s)", "report",
            summarize(last, ".3f"), None),
        row(scenario, "broadcast: lost (all rounds)", "0", str(lost), lost == 0),
        row(scenario, "web CPU per delivered message, per web process and round (ms)", "report",
            summarize(cpu_msg, ".3f"), None),
    ]  # fmt: skip
    verdict = {
        "sockets": sockets, "storm_s": storm["wall_s"], "failed": storm["failed"],
        "kib_per_socket": median(kib), "cpu_connect_ms": median(cpu_connect_ms),
        "broadcast_last_s": median(last), "lost": lost, "cpu_ms_per_message": median(cpu_msg),
    }  # fmt: skip
    return "\n".join(lines), summary, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--webs", type=int, default=None, help="web processes (default 4; quick 2)")
    parser.add_argument("--sockets", type=int, default=None, help="default 10000 (quick 400)")
    parser.add_argument(
        "--storm", type=int, default=None, help="opened all at once (default 2000; quick 200)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="broadcast rounds (default 3; quick 1)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="wait this long for every socket or receipt"
    )
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.webs = args.webs or (2 if args.quick else 4)
    args.sockets = args.sockets or (400 if args.quick else 10_000)
    args.storm = min(args.sockets, args.storm or (200 if args.quick else 2_000))
    args.rounds = args.rounds or (1 if args.quick else 3)
    set_results_dir(args.results_dir)
    started = time.monotonic()
    results = measure(args)
    body, summary, verdict = report(args, results)
    body += f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    print(body)
    if not args.no_write:
        print(f"wrote {write_results('scale_out', 'Scale-out: several web processes', body, summary)}")
        write_json("scale_out", {"verdict": verdict, "quick": args.quick})


if __name__ == "__main__":
    main()
