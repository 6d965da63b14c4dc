"""Database statements per job, per progress heartbeat and per socket (issue 17 §4: the plan sizes
PostgreSQL's writes from them).

Run from the project root: ``.venv/bin/python bench/db_statements.py [--quick]``. Writes
bench/results/db_statements.md and db_statements.json.

In this process, on a throwaway PostgreSQL database (SQLite too, for comparison), with a private
Redis as broker and channel layer: each step of a job's life is run through the services the web
and the worker run (jobs.launch.job_create with its admission pass, jobs.states.job_start,
job_heartbeat, job_log_append, job_finish with its notification), N times, and every statement
Django sends is counted (``CaptureQueriesContext``) and split into reads and writes, with the time
each step takes. And the sockets' side: the presence rows one web process refreshes per socket
heartbeat (``presence.sockets_heartbeat``: a batched UPDATE and the credential check), for 1,000
sockets, and a socket's connect (its presence row and snapshot reads are measured elsewhere:
bench/sockets_memory.py, bench/history.py).

Statement counts do not depend on the machine; the milliseconds do (2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, write_results  # noqa: E402
from bench.stack import set_results_dir, write_json  # noqa: E402
from bench.support import bench_environment, postgres_server_url  # noqa: E402

WRITES = ("INSERT", "UPDATE", "DELETE")


def _counted(step: Any) -> tuple[int, int, float]:
    """(reads, writes, seconds) of ``step()``: statements Django sent, split by their verb."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        step()
    elapsed = time.perf_counter() - started
    verbs = [q["sql"].lstrip().split(" ", 1)[0].upper() for q in captured.captured_queries]
    writes = sum(verb in WRITES for verb in verbs)
    # Transaction control (SAVEPOINT, RELEASE...) is neither: counted apart by what is left out.
    reads = sum(verb in ("SELECT", "WITH") for verb in verbs)
    return reads, writes, elapsed


def measure(database: str, jobs: int) -> dict[str, Any]:
    with bench_environment(database=database):
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        from bench.stack import make_users
        from jobs import launch, states
        from jobs.models import JobState
        from notifications import credentials
        from notifications.models import SocketConnection
        from notifications.realtime import presence

        owners = [get_user_model().objects.get(pk=u.id) for u in make_users(10, prefix=f"st{database[:2]}")]
        steps: dict[str, list[tuple[int, int, float]]] = {
            "launch (create + admission pass)": [],
            "start (worker takes it)": [],
            "progress heartbeat (once a second at most per running job)": [],
            "log lines (one batch)": [],
            "finish (succeeded, its notification)": [],
        }
        heartbeat = "progress heartbeat (once a second at most per running job)"
        launched: list[Any] = []
        for n in range(jobs):
            owner = owners[n % len(owners)]
            params = {"steps": 10, "step_ms": 0}
            steps["launch (create + admission pass)"].append(
                _counted(partial(_launch, launch, owner, params, launched))
            )
            job_id = launched[-1]
            steps["start (worker takes it)"].append(_counted(partial(states.job_start, job_id=job_id)))
            for k in range(3):
                beat = partial(states.job_heartbeat, job_id=job_id, current=k, total=10, message="Step")
                steps[heartbeat].append(_counted(beat))
            lines = ["Finished step 1", "Finished step 2"]
            steps["log lines (one batch)"].append(
                _counted(partial(states.job_log_append, job_id=job_id, lines=lines))
            )
            end = partial(states.job_finish, job_id=job_id, state=JobState.SUCCEEDED, result={"steps": 10})
            steps["finish (succeeded, its notification)"].append(_counted(end))

        # One web process's socket heartbeat for 1,000 sockets (rows as the consumer records them).
        user, now = owners[0], timezone.now()
        rows = [
            SocketConnection(
                channel_name=f"specific.bench!{i}", user_id=user.pk, session_key=f"s{i % 10}", seen_at=now
            )
            for i in range(1000)
        ]
        SocketConnection.objects.bulk_create(rows)
        due = {
            row.channel_name: credentials.Credential(user_id=user.pk, session_key=row.session_key)
            for row in rows
        }
        socket_beats = [_counted(partial(presence.sockets_heartbeat, due=due)) for _ in range(5)]
    return {"steps": steps, "socket_heartbeat_1000": socket_beats}


def _launch(launch: Any, owner: Any, params: dict[str, Any], launched: list[Any]) -> None:
    launched.append(launch.job_create(owner=owner, kind="simulate", params=params, rate_limit=False).id)


def _fmt(samples: list[tuple[int, int, float]]) -> tuple[str, str, str]:
    reads = statistics.median(s[0] for s in samples)
    writes = statistics.median(s[1] for s in samples)
    ms = statistics.median(s[2] for s in samples) * 1000
    return f"{reads:g}", f"{writes:g}", f"{ms:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--jobs", type=int, default=None, help="jobs taken through their life (default 200; quick 20)"
    )
    parser.add_argument("--results-dir", default=None)
    # Each database in a process of its own (Django is set up once per process).
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.jobs = args.jobs or (20 if args.quick else 200)
    set_results_dir(args.results_dir)
    started = time.monotonic()
    if args.database:
        Path(args.child_out).write_text(json.dumps(measure(args.database, args.jobs)))
        return
    databases = (["postgresql"] if postgres_server_url() else []) + ["sqlite"]
    lines: list[str] = []
    summary: list[dict[str, Any]] = []
    verdict: dict[str, Any] = {}
    for database in databases:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            argv = [sys.executable, str(Path(__file__).resolve()), "--database", database]
            argv += ["--child-out", out.name, "--jobs", str(args.jobs)]
            subprocess.run(argv, cwd=ROOT, check=True)
            result = json.loads(Path(out.name).read_text())
        lines += [
            f"### {database} ({args.jobs} jobs; medians)",
            "",
            "| step | reads | writes | ms |",
            "|---|---|---|---|",
        ]
        per_job_writes = 0.0
        for name, samples in result["steps"].items():
            reads, writes, ms = _fmt(samples)
            lines.append(f"| {name} | {reads} | {writes} | {ms} |")
            verdict[f"{database}:{name}"] = {"reads": float(reads), "writes": float(writes)}
            if "heartbeat" not in name and "log" not in name:
                per_job_writes += float(writes)
        reads, writes, ms = _fmt(result["socket_heartbeat_1000"])
        lines += [
            f"| one web process's socket heartbeat, 1,000 sockets (every RUNBOARD_SOCKET_HEARTBEAT, 25 s) "
            f"| {reads} | {writes} | {ms} |",
            "",
            f"A job's life without its heartbeats and logs: {per_job_writes:g} writes.",
            "",
        ]
        scenario = "17. Scale-out: the database"
        heartbeat_counts = verdict[f"{database}:progress heartbeat (once a second at most per running job)"]
        summary += [
            row(scenario, f"writes per job (launch, start, finish), {database}", "report",
                f"{per_job_writes:g}", None),
            row(scenario, f"writes per progress heartbeat, {database}", "report",
                f"{heartbeat_counts['writes']:g}", None),
            row(scenario, f"statements per socket heartbeat of 1,000 sockets, {database}", "report",
                f"{float(reads) + float(writes):g}", None),
        ]  # fmt: skip
    body = (
        "\n".join(lines)
        + f"\nMeasuring took {time.monotonic() - started:.0f} s{' (--quick)' if args.quick else ''}."
    )
    print(body)
    if not args.no_write:
        title = "Database statements per job, heartbeat and socket"
        print(f"wrote {write_results('db_statements', title, body, summary)}")
        write_json("db_statements", {"verdict": verdict, "quick": args.quick})


if __name__ == "__main__":
    main()
