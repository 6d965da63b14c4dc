"""Load (issue 7): thousands of signed-in sockets while jobs report progress, in one web process.

Run from the project root: ``.venv/bin/python bench/load.py [--quick]``. Writes
bench/results/load.md and load.json.

Default: 2,000 sockets across 200 users (10 each, under the 20-per-user cap), all open at once in
one uvicorn process (as the Procfile runs it) while 100 jobs run on a real Celery worker and report
progress (``bench_progress``: a step every 20 ms, each ``ctx.progress()`` message the call's
``time.time_ns()``). Job i belongs to user i mod 200, so each job's owner has 10 sockets watching.
Pass criteria: every socket receives the final state of every job of its user; no socket fails
to open or is closed by the server; no client, server or worker errors; every job succeeds.
Reported: latency of progress updates (receipt - the job's call to ``ctx.progress()``, same clock)
p50/p99, the web server's RSS (before the sockets, with them, peak while the jobs run) and CPU.
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

from bench.common import write_results  # noqa: E402
from bench.stack import (  # noqa: E402
    bench_stack,
    make_users,
    met,
    percentile,
    project_socket,
    set_results_dir,
    write_json,
)

MIB = 1024 * 1024


class RssSampler(threading.Thread):
    def __init__(self, proc: Any, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.proc, self.interval, self.peak = proc, interval, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, self.proc.rss_bytes())
            self.stopped.wait(self.interval)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with bench_stack() as stack:
        from django.contrib.auth import get_user_model

        from jobs.launch import job_create
        from jobs.models import Job, JobState

        web = stack.web()
        worker = stack.worker(concurrency=args.worker_concurrency)
        users = make_users(args.users, prefix="load")
        clients = stack.clients("clients-load")
        time.sleep(1.0)
        out["rss_idle"] = web.rss_bytes()
        cpu0 = web.cpu_seconds()
        specs = [project_socket(u) for u in users for _ in range(args.sockets_per_user)]
        opened = clients.call(
            "open", url=web.ws_url, origin=web.origin, sockets=specs, concurrency=100, timeout=600
        )
        out["open"] = {k: opened[k] for k in ("opened", "failed", "failures", "elapsed_s")}
        out["connect_ms_p50"] = percentile(opened["handshake_ms"], 50)
        out["connect_ms_p99"] = percentile(opened["handshake_ms"], 99)
        first = opened["first"]
        time.sleep(1.0)
        out["rss_connected"] = web.rss_bytes()
        out["cpu_connect_s"] = web.cpu_seconds() - cpu0

        sampler = RssSampler(web)
        sampler.start()
        clients.call("reset")
        owners = get_user_model().objects.in_bulk([u.id for u in users])
        jobs_of: dict[int, list[str]] = {u.id: [] for u in users}
        cpu1 = web.cpu_seconds()
        launched = time.monotonic()
        for i in range(args.jobs):
            user = users[i % len(users)]
            job = job_create(
                owner=owners[user.id],
                kind="bench_progress",
                rate_limit=False,
                params={"seconds": args.job_seconds, "step_ms": args.step_ms},
            )
            jobs_of[user.id].append(str(job.id))
        expected = sum(len(jobs_of[u.id]) for u in users) * args.sockets_per_user
        budget = args.jobs * (args.job_seconds + 0.5) / args.worker_concurrency + 60
        deadline = time.monotonic() + budget
        all_ids = [j for ids in jobs_of.values() for j in ids]
        while time.monotonic() < deadline:
            if not Job.objects.filter(pk__in=all_ids, state__in=[JobState.QUEUED, JobState.RUNNING]).exists():
                break
            time.sleep(0.25)
        out["jobs_seconds"] = time.monotonic() - launched
        counts = clients.wait_count(lambda c: c["finals"] >= expected, timeout=30)
        out["cpu_jobs_s"] = web.cpu_seconds() - cpu1
        sampler.stopped.set()
        sampler.join()
        out["rss_peak"] = sampler.peak
        out["rss_after"] = web.rss_bytes()
        stats = clients.call("stats", timeout=300)
        states = dict(Job.objects.filter(pk__in=all_ids).values_list("pk", "state"))
        out["job_states"] = {s: sum(1 for v in states.values() if v == s) for s in set(states.values())}
        missing, wrong = [], []
        for u_index, user in enumerate(users):
            for s in range(args.sockets_per_user):
                index = str(first + u_index * args.sockets_per_user + s)
                got = stats["finals"].get(index, {})
                for job_id in jobs_of[user.id]:
                    if job_id not in got:
                        missing.append((index, job_id))
                    elif got[job_id][0] != "succeeded":
                        wrong.append((index, job_id, got[job_id][0]))
        lat = [v / 1000 for v in stats["latency_us"].get("p", [])]
        out.update(
            expected_finals=expected,
            finals_received=counts["finals"],
            missing=missing[:20],
            missing_count=len(missing),
            wrong=wrong[:20],
            latency_samples=len(lat),
            p50_ms=percentile(lat, 50),
            p99_ms=percentile(lat, 99),
            max_ms=max(lat, default=float("nan")),
            client_errors=stats["errors"],
            client_error_count=stats["error_count"],
            server_errors=stack.error_lines(web)[:20],
            worker_errors=stack.error_lines(worker)[:20],
        )
        clients.call("close", timeout=120)
    return out


def report(args: argparse.Namespace, r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sockets = args.users * args.sockets_per_user
    succeeded = r["job_states"].get("succeeded", 0)
    delivered_all = r["missing_count"] == 0 and not r["wrong"]
    errors = (
        r["open"]["failed"]
        + r["client_error_count"]
        + len(r["server_errors"])
        + len(r["worker_errors"])
        + (args.jobs - succeeded)
    )
    per_socket = (r["rss_connected"] - r["rss_idle"]) / max(1, r["open"]["opened"]) / 1024
    rows = [
        "| Figure | Value | Target | Met? |",
        "|---|---|---|---|",
        f"| sockets open at once (users x sockets each) | {r['open']['opened']:,} of {sockets:,} "
        f"({args.users} x {args.sockets_per_user}) | all | {met(r['open']['failed'] == 0)} |",
        f"| final states received / expected (socket x job of its user) | {r['finals_received']:,} / "
        f"{r['expected_finals']:,} | every one | {met(delivered_all)} |",
        f"| jobs succeeded | {succeeded} of {args.jobs} | all | {met(succeeded == args.jobs)} |",
        f"| errors (failed opens, server closes, client/server/worker errors, failed jobs) | {errors} | 0 | "
        f"{met(errors == 0)} |",
        f"| progress update latency p50 / p99 / max (ms; {r['latency_samples']:,} receipts) | "
        f"{r['p50_ms']:.3g} / {r['p99_ms']:.3g} / {r['max_ms']:.3g} | reported | - |",
        f"| web server RSS: before sockets / with them / peak during jobs / after (MiB) | "
        f"{r['rss_idle'] / 1024**2:.0f} / {r['rss_connected'] / 1024**2:.0f} / "
        f"{r['rss_peak'] / 1024**2:.0f} / "
        f"{r['rss_after'] / 1024**2:.0f} | reported | - |",
        f"| RSS per open socket (KiB) | {per_socket:.1f} | reported | - |",
        f"| opening all sockets (s; 100 handshakes at a time) / handshake p50 / p99 (ms) | "
        f"{r['open']['elapsed_s']:.1f} / {r['connect_ms_p50']:.0f} / {r['connect_ms_p99']:.0f} | reported "
        f"| - |",
        f"| web server CPU: opening the sockets / while the jobs ran (s) | {r['cpu_connect_s']:.1f} / "
        f"{r['cpu_jobs_s']:.1f} (jobs took {r['jobs_seconds']:.1f} s) | reported | - |",
    ]
    notes = []
    if r["missing"]:
        notes.append(f"Missing final states (socket, job), first ones: {r['missing'][:5]}")
    if r["wrong"]:
        notes.append(f"Wrong final states: {r['wrong'][:5]}")
    for label in ("client_errors", "server_errors", "worker_errors"):
        if r[label]:
            notes.append(f"{label.replace('_', ' ').capitalize()}: {r[label][:5]}")
    if r["open"]["failures"]:
        notes.append(f"Open failures: {r['open']['failures']}")
    setup = (
        f"{sockets:,} WebSocket connections ({args.users} users x {args.sockets_per_user}, each a real "
        f"session "
        "cookie and same Origin) from one client process to one uvicorn process (as the Procfile runs "
        f"it), RedisPubSubChannelLayer on a private redis-server. {args.jobs} `bench_progress` jobs "
        f"({args.job_seconds:g} s, a `ctx.progress()` every {args.step_ms:g} ms, coalesced by the reporter "
        f"to <= 10 pushes/s) on one Celery worker with {args.worker_concurrency} processes; job i belongs to "
        f"user i mod {args.users}. Latency: client `time.time_ns()` at receipt - the job's `time.time_ns()` "
        "at its `ctx.progress()` call (the message), so it includes the reporter's coalescing delay."
    )
    body = "\n".join([setup, "", *rows, "", *(f"- {n}" for n in notes)])
    verdict = {
        "sockets_opened": r["open"]["opened"],
        "sockets_expected": sockets,
        "finals_received": r["finals_received"],
        "finals_expected": r["expected_finals"],
        "missing": r["missing_count"],
        "wrong": len(r["wrong"]),
        "errors": errors,
        "jobs_succeeded": succeeded,
        "jobs": args.jobs,
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "rss_connected": r["rss_connected"],
        "client_errors": r["client_errors"][:10],
        "server_errors": r["server_errors"][:10],
        "worker_errors": r["worker_errors"][:10],
    }
    return body, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--users", type=int, default=None, help="default 200 (quick 20)")
    parser.add_argument("--sockets-per-user", type=int, default=None, help="default 10 (quick 5)")
    parser.add_argument("--jobs", type=int, default=None, help="default 100 (quick 10)")
    parser.add_argument("--job-seconds", type=float, default=None, help="default 2 (quick 1)")
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--worker-concurrency", type=int, default=None, help="default 10 (quick 4)")
    parser.add_argument("--results-dir", default=None, help="default bench/results ($BENCH_RESULTS_DIR)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    q = args.quick
    args.users = args.users or (20 if q else 200)
    args.sockets_per_user = args.sockets_per_user or (5 if q else 10)
    args.jobs = args.jobs or (10 if q else 100)
    args.job_seconds = args.job_seconds or (1.0 if q else 2.0)
    args.worker_concurrency = args.worker_concurrency or (4 if q else 10)
    set_results_dir(args.results_dir)

    started = time.monotonic()
    results = measure(args)
    body, verdict = report(args, results)
    body += f"\n\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if q else ''}."
    print(body)
    if not args.no_write:
        print(f"wrote {write_results('load', 'Load: many sockets while jobs report progress', body)}")
        write_json("load", {"verdict": verdict, "quick": q})


if __name__ == "__main__":
    main()
