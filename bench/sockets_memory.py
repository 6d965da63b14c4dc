"""Memory and connections (issue 8, scenario 6): RSS per idle socket, and 1,000 connects at once.

Run from the project root: ``.venv/bin/python bench/sockets_memory.py [--quick]``. Writes
bench/results/sockets_memory.md and sockets_memory.json.

Each variant runs in a fresh uvicorn process (as the Procfile runs it) so RSS starts from the
same point; variants are interleaved round by round:
- ``runboard``: N signed-in NotificationConsumer sockets (real sessions, same Origin; 10 per user,
  under the 20-per-user cap), each having received ``hello`` + ``snapshot``;
- ``ceiling``: N bare consumer sockets (bench/ceiling.py), each in its own group;
- ``runboard+deflate``: as ``runboard`` with uvicorn's ``--ws-per-message-deflate true`` and
  clients negotiating permessage-deflate (the compression trap).
RSS of the web process (VmRSS) after a warm-up of a few sockets, then with all N open and idle
for 2 s; per socket = the difference / N. Target (runboard): <= 40 KiB per socket at 5,000.

Connect storm: on a fresh server, M clients (default 1,000; 10 per user) open at once
(``asyncio.gather``, no limit) and each waits for ``hello`` + ``snapshot``. Target: all succeed,
the last within 3 s of the start.
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
from bench.stack import (  # noqa: E402
    bench_stack,
    ceiling_socket,
    make_users,
    median,
    met,
    percentile,
    project_socket,
    set_results_dir,
    write_json,
)

VARIANTS = ("runboard", "ceiling", "runboard+deflate")


def fmt(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return "n/a" if not values else summarize(values)


def clear_socket_rows() -> None:
    from notifications.models import SocketConnection

    SocketConnection.objects.all().delete()


def memory_round(stack: Any, variant: str, users: list[Any], n: int, r: int) -> dict[str, Any]:
    clear_socket_rows()
    web = stack.web(deflate=variant.endswith("deflate"), name=f"web-{variant.replace('+', '-')}-{r}")
    clients = stack.clients(f"clients-mem-{r}")
    per_user = max(1, -(-n // len(users)))

    def spec(i: int) -> dict[str, Any]:
        if variant == "ceiling":
            return ceiling_socket(f"mem{i}")
        s = project_socket(users[i // per_user])
        if variant.endswith("deflate"):
            s["compression"] = "deflate"
        return s

    # Warm-up: the first sockets import and initialise what every later one shares.
    warm = clients.call(
        "open", url=web.ws_url, origin=web.origin, sockets=[spec(i) for i in range(min(n, 10))]
    )
    time.sleep(1.0)
    rss0 = web.rss_bytes()
    opened = clients.call(
        "open",
        url=web.ws_url,
        origin=web.origin,
        concurrency=100,
        timeout=900,
        sockets=[spec(i) for i in range(warm["opened"], n)],
    )
    time.sleep(2.0)
    rss1 = web.rss_bytes()
    errors = clients.call("stats", detail=False)["error_count"]
    stack.stop(clients)
    stack.stop(web)
    return {
        "variant": variant,
        "round": r,
        "opened": warm["opened"] + opened["opened"],
        "failed": warm["failed"] + opened["failed"],
        "failures": warm["failures"] + opened["failures"],
        "rss0": rss0,
        "rss1": rss1,
        "errors": errors,
        "kib_per_socket": (rss1 - rss0) / max(1, opened["opened"]) / 1024,
        "open_s": opened["elapsed_s"],
    }


# Realistic users for the storm (issue 15 §2): each with a history the snapshot reads.
JOBS_PER_USER, NOTIFICATIONS_PER_USER = 50, 20


def add_history(
    users: list[Any], *, jobs: int = JOBS_PER_USER, notifications: int = NOTIFICATIONS_PER_USER
) -> None:
    """Give each user ``jobs`` finished jobs (a mix of kinds' real states) and ``notifications``
    notifications, half unread, as the snapshot of a signed-in connect reads them."""
    from django.utils import timezone

    from jobs.models import Job, JobState
    from notifications.models import Notification

    now = timezone.now()
    states = (JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
    Job.objects.bulk_create(
        [
            Job(
                owner_id=u.id,
                kind="simulate",
                params={"steps": 10, "step_ms": 5, "fail_at_step": None},
                state=states[j % len(states)],
                progress_current=10,
                progress_total=10,
                started_at=now,
                finished_at=now,
                heartbeat_at=now,
                admitted_at=now,
                enqueued_at=now,
            )
            for u in users
            for j in range(jobs)
        ],
        batch_size=2000,
    )
    Notification.objects.bulk_create(
        [
            Notification(
                recipient_id=u.id,
                title=f"Job {k} finished",
                body="Simulated work succeeded.",
                link="/jobs/",
                read_at=now if k % 2 else None,
            )
            for u in users
            for k in range(notifications)
        ],
        batch_size=2000,
    )


def storm_round(
    stack: Any, web: Any, specs: list[dict[str, Any]], warm: dict[str, Any], name: str
) -> dict[str, Any]:
    """On ``web`` (fresh; stopped after), one warm-up socket ``warm``, then ``specs`` opening at
    once (no limit), each waiting for its first frames (``hello`` + ``snapshot`` for Runboard's).
    Returns opened/failed, the time until the last was in (s), handshake p50/p99 (ms), and the
    server's CPU per connect (ms: user + system of the server's processes over the storm / sockets)."""
    clear_socket_rows()
    clients = stack.clients(f"clients-{name}")
    clients.call("open", url=web.ws_url, origin=web.origin, sockets=[warm])
    time.sleep(1.0)
    cpu0 = server_cpu_seconds(web)
    opened = clients.call(
        "open", url=web.ws_url, origin=web.origin, sockets=specs, concurrency=0, timeout=600
    )
    cpu1 = server_cpu_seconds(web)
    errors = clients.call("stats", detail=False)["errors"]
    stack.stop(clients)
    stack.stop(web)
    return {
        "opened": opened["opened"],
        "failed": opened["failed"],
        "failures": opened["failures"],
        "elapsed_s": opened["elapsed_s"],
        "p50_ms": percentile(opened["handshake_ms"], 50),
        "p99_ms": percentile(opened["handshake_ms"], 99),
        "cpu_ms_per_connect": (cpu1 - cpu0) * 1000 / max(1, len(specs)),
        "errors": errors,
    }


def server_cpu_seconds(web: Any) -> float:
    """User + system CPU of the server process and its descendants (granian's workers), in s."""
    return sum(_stat(pid)[0] for pid in _tree(web.web.pid))


def server_rss_bytes(web: Any) -> int:
    """Resident memory of the server process and its descendants, in bytes."""
    return sum(_stat(pid)[1] for pid in _tree(web.web.pid))


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return pids


def _stat(pid: int) -> tuple[float, int]:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def storm_pair(
    stack: Any, users: list[Any], m: int, *, web_factory: Any = None, label: str = ""
) -> dict[str, Any]:
    """The sign-in storm for Runboard (users[0] warms up; users[1:] 10 sockets each) and for the
    bare ceiling consumer, each on a fresh server from ``web_factory(name)`` (default: the
    Procfile's uvicorn), Runboard first."""
    factory = web_factory or (lambda name: stack.web(name=name))
    specs = [project_socket(users[1 + i // 10]) for i in range(m)]
    runboard = storm_round(
        stack, factory(f"web-storm{label}"), specs, project_socket(users[0]), f"storm{label}"
    )
    ceiling = storm_round(
        stack, factory(f"web-storm-ceiling{label}"), [ceiling_socket(f"storm{i}") for i in range(m)],
        ceiling_socket("warm"), f"storm-ceiling{label}",
    )  # fmt: skip
    return {"runboard": runboard, "ceiling": ceiling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--sockets", type=int, default=None, help="idle sockets per variant (default 5000; quick 300)"
    )
    parser.add_argument(
        "--storm", type=int, default=None, help="clients connecting at once (default 1000; quick 100)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--storm-rounds", type=int, default=3, help="storm rounds, Runboard then the bare consumer"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    n = args.sockets or (300 if args.quick else 5000)
    m = args.storm or (100 if args.quick else 1000)
    variants = [v for v in args.variants.split(",") if v]
    set_results_dir(args.results_dir)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with bench_stack() as stack:
        users = make_users(max(-(-n // 10), m // 10 + 1), prefix="mem")
        for r in range(args.rounds):
            for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
                rows.append(memory_round(stack, variant, users, n, r))
                x = rows[-1]
                print(
                    f"  [{variant} round {r}] {x['opened']}/{n} open, {x['kib_per_socket']:.1f} KiB/socket "
                    f"(RSS {x['rss0'] / 2**20:.0f} -> {x['rss1'] / 2**20:.0f} MiB)",
                    flush=True,
                )
        storm_users = make_users(m // 10 + 1, prefix="storm")
        add_history(storm_users)
        storms = []
        for r in range(args.storm_rounds):
            storms.append(storm_pair(stack, storm_users, m, label=f"-{r}"))
            for v in ("runboard", "ceiling"):
                x = storms[-1][v]
                print(
                    f"  storm {r} {v}: {x['opened']}/{m} in {x['elapsed_s']:.2f} s, "
                    f"{x['cpu_ms_per_connect']:.2f} CPU ms per connect",
                    flush=True,
                )

    by = {v: [x for x in rows if x["variant"] == v] for v in variants}
    table = ["| Figure | Value | Target | Met? |", "|---|---|---|---|"]
    verdict: dict[str, Any] = {"storm_expected": m}
    for v in variants:
        kib = [x["kib_per_socket"] for x in by[v]]
        opened_all = all(x["failed"] == 0 and x["opened"] == n for x in by[v])
        target = "<= 40 KiB" if v == "runboard" else "-"
        ok = met(bool(kib) and median(kib) <= 40 and opened_all) if v == "runboard" else "-"
        table.append(f"| RSS per idle socket, {v}, {n:,} sockets (KiB) | {fmt(kib)} | {target} | {ok} |")
        table.append(
            f"| {v}: sockets opened / web RSS with them (MiB) / time to open (s, 100 at a time) | "
            f"{min((x['opened'] for x in by[v]), default=0):,} / {fmt([x['rss1'] / 2**20 for x in by[v]])} / "
            f"{fmt([x['open_s'] for x in by[v]])} | all | {met(opened_all)} |"
        )
        verdict[v] = {"kib": kib, "opened_all": opened_all}
    rb = [x["runboard"] for x in storms]
    ce = [x["ceiling"] for x in storms]
    all_in = all(x["failed"] == 0 and x["opened"] == m for x in rb)
    ratios = [a["elapsed_s"] / b["elapsed_s"] for a, b in zip(rb, ce, strict=True)]
    cpu_ratios = [a["cpu_ms_per_connect"] / b["cpu_ms_per_connect"] for a, b in zip(rb, ce, strict=True)]
    realistic = f"users with {JOBS_PER_USER} jobs and {NOTIFICATIONS_PER_USER} notifications, 10 sockets each"
    table += [
        f"| {m:,} clients connecting at once ({realistic}): all signed in (hello + snapshot) after (s) | "
        f"{fmt([x['elapsed_s'] for x in rb])} ({min(x['opened'] for x in rb):,} ok, "
        f"{sum(x['failed'] for x in rb)} failed; handshake p50 {fmt([x['p50_ms'] for x in rb])} ms, "
        f"p99 {fmt([x['p99_ms'] for x in rb])} ms) | all within 3 s | "
        f"{met(all_in and median([x['elapsed_s'] for x in rb]) <= 3.0)} |",
        f"| the same storm: Runboard's time / the bare consumer's (paired per round) | {fmt(ratios)} "
        f"(bare consumer: {fmt([x['elapsed_s'] for x in ce])} s) | <= 2x, no failures | "
        f"{met(all_in and median(ratios) <= 2.0)} |",
        f"| the same storm: server CPU per connect (ms), Runboard / bare consumer | "
        f"{fmt([x['cpu_ms_per_connect'] for x in rb])} / {fmt([x['cpu_ms_per_connect'] for x in ce])} "
        f"(ratio {fmt(cpu_ratios)}) | report | - |",
    ]
    verdict.update(
        storm_s=[x["elapsed_s"] for x in rb],
        storm_ratio=ratios,
        storm_cpu_ms=[x["cpu_ms_per_connect"] for x in rb],
    )
    setup = (
        f"Each variant in a fresh uvicorn process (as the Procfile runs it; `+deflate`: "
        "`--ws-per-message-deflate true` and clients negotiating it), RedisPubSubChannelLayer, "
        f"{args.rounds} round(s). Users have 10 sockets each (cap 20). Per-socket RSS = (VmRSS with all "
        "sockets open and idle for 2 s - VmRSS after 10 warm-up sockets) / sockets. Clients in a separate "
        "process (websockets, one asyncio loop)."
    )
    failures = [f for x in rows for f in x["failures"]] + [f for x in rb + ce for f in x["failures"]]
    notes = [
        "Notes: a connect costs the server far more than an idle socket. A signed-in connect makes two trips "
        "to the database thread (`database_sync_to_async` is thread-sensitive, so every consumer's database "
        "work in the process runs on one thread, one connect after another): the sign-in (session, user, "
        "powers: 3 statements), then `socket_open` (upsert + one read), the credential's re-check (3) and "
        "the snapshot (the user's newest jobs, each built into its payload, and notifications). With "
        "`CONN_MAX_AGE` 0 (the default: Django advises it under ASGI) each trip opens its database "
        "connection. Most of the CPU is the snapshot's 50 job payloads (py-spy): building each from its "
        "row and encoding the whole. The bare consumer reads nothing.",
    ]
    body = "\n".join(
        [setup, "", *table, "", f"Open failures: {failures[:5] if failures else 'none'}.", "", *notes]
    )
    body += f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    print(body)
    if not args.no_write:
        print(f"wrote {write_results('sockets_memory', 'Memory per socket and connection storms', body)}")
        write_json("sockets_memory", {"verdict": verdict, "quick": args.quick})


if __name__ == "__main__":
    main()
