"""Scenario 14, fair admission: admission latency (launch -> running) and jobs per second, with the
fair scheduler (jobs.admission) and without it (RUNBOARD_ADMISSION_CONTROL=False: every job handed
to the broker at launch, first come first served, as before issue 14), in the same run.

Run from the project root: ``.venv/bin/python bench/admission.py [--database sqlite|postgresql]
[--jobs 300] [--users 4]``. Writes bench/results/admission.json.

Everything is real: a private redis-server, a throwaway database, one ``celery worker`` subprocess
per mode (prefork, ``--concurrency 2``, the product's default per-user cap of 2), launches through
``jobs.launch.job_create`` in this process. Per mode:

- **the issue's example**: user A launches 8 simulated jobs of 20 x 250 ms; one second later user
  B launches a 1-step job. Reported: B's admission latency (its ``started_at - created_at``) and
  the latency of A's jobs.
- **throughput**: ``--users`` users launch ``--jobs`` zero-step jobs between them (round-robin),
  end to end from the first launch to the last ``finished_at``; jobs per second and the
  launch -> running latency (p50, p95, max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import percentile
from bench.support import bench_environment, worker_environment
from scripts.harness import celery_worker

RESULTS = Path(__file__).resolve().parent / "results" / "admission.json"


def _wait_done(ids: list[Any], timeout: float) -> None:
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while Job.objects.filter(pk__in=ids, finished_at__isnull=True).exists():
        if time.monotonic() > deadline:
            from django.db.models import Count

            left = Job.objects.filter(pk__in=ids, finished_at__isnull=True)
            states = list(
                left.values_list("state", "wait_code", "admitted_at__isnull").annotate(n=Count("pk"))
            )
            logs = Path(os.environ["RUNBOARD_VAR_DIR"]).glob("worker-*.log")
            warnings = [line for log in logs for line in log.read_text().splitlines() if "WARNING" in line]
            raise RuntimeError(
                f"jobs did not finish in time: unfinished (state, wait, not admitted, n): {states}; "
                f"the workers' warnings: {warnings[-5:]}"
            )
        time.sleep(0.05)


def _latencies(ids: list[Any]) -> list[float]:
    from jobs.models import Job

    rows = Job.objects.filter(pk__in=ids).values_list("created_at", "started_at")
    return sorted((started - created).total_seconds() for created, started in rows if started)


def _spread(values: list[float]) -> dict[str, float]:
    """Mean and maximum, and p50/p95 only from MIN_PERCENTILE_SAMPLES values (else nan: a "p95"
    of 200 jobs is not one; design.md §5b)."""
    if not values:
        return {"mean": float("nan"), "max": float("nan")}
    return {
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
    }


def run_mode(
    admission_on: bool, args: argparse.Namespace, users: list[Any], *, example: bool = True, n_users: int = 0
) -> dict[str, Any]:
    from django.conf import settings

    from jobs.launch import job_create

    settings.RUNBOARD_ADMISSION_CONTROL = admission_on
    env = worker_environment(
        extra={"RUNBOARD_ADMISSION_CONTROL": str(admission_on), "RUNBOARD_MAX_RUNNING_PER_USER": "2"}
    )
    worker = celery_worker(
        f"worker-{'on' if admission_on else 'off'}", env, log_dir=Path(os.environ["RUNBOARD_VAR_DIR"]),
        hostname=f"admission-{os.getpid()}-{admission_on}", concurrency=2,
    )  # fmt: skip
    try:
        if not example:
            return _throughput(admission_on, args, users[: n_users or args.users])
        # The example.
        alice, bob = users[0], users[1]
        alices = [
            job_create(
                owner=alice, kind="simulate", params={"steps": 20, "step_ms": 250}, rate_limit=False
            ).id
            for _ in range(8)
        ]
        time.sleep(1.0)
        bobs = job_create(owner=bob, kind="simulate", params={"steps": 1, "step_ms": 0}, rate_limit=False).id
        _wait_done([*alices, bobs], timeout=120)
        bob_wait = _latencies([bobs])[0]
        alice_waits = _latencies(alices)
        print(f"admission {'on ' if admission_on else 'off'}: B waited {bob_wait:.2f} s", file=sys.stderr)
        return {
            "admission_control": admission_on,
            "example_bob_wait_s": round(bob_wait, 3),
            "example_alice_wait_s": _spread(alice_waits),
        }
    finally:
        worker.stop()


def _throughput(admission_on: bool, args: argparse.Namespace, users: list[Any]) -> dict[str, Any]:
    """Zero-step jobs from several users, end to end (first launch to the last finish)."""
    from jobs.launch import job_create
    from jobs.models import Job

    t0 = time.time()
    ids = [
        job_create(owner=users[i % len(users)], kind="simulate", params={"steps": 0}, rate_limit=False).id
        for i in range(args.jobs)
    ]
    _wait_done(ids, timeout=60 + args.jobs * 0.5)
    last = max(Job.objects.filter(pk__in=ids).values_list("finished_at", flat=True)).timestamp()
    waits = _latencies(ids)
    rows = Job.objects.filter(pk__in=ids).values_list("admitted_at", "started_at", "attempts")
    in_line = sorted((started - admitted).total_seconds() for admitted, started, _ in rows if admitted)
    restarted = sum(1 for *_, attempts in rows if attempts > 1)
    rate = args.jobs / (last - t0)
    print(f"admission {'on ' if admission_on else 'off'}: {rate:.1f} jobs/s", file=sys.stderr)
    return {
        "admission_control": admission_on,
        "jobs": args.jobs,
        "users": len(users),
        "jobs_per_second": round(rate, 1),
        "admitted_to_running_s": _spread(in_line),
        "restarted": restarted,  # started more than once (a lost worker: re-queued)
        "launch_to_running_s": _spread(waits),
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = sorted(r["with"]["jobs_per_second"] / r["without"]["jobs_per_second"] for r in rounds)
    return {
        "without_jobs_per_second": statistics.median(r["without"]["jobs_per_second"] for r in rounds),
        "with_jobs_per_second": statistics.median(r["with"]["jobs_per_second"] for r in rounds),
        "ratio_per_round": [round(x, 3) for x in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
    }


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds per mode, alternating")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 jobs, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds = 40, 1
    with bench_environment(database=args.database):
        from django.contrib.auth import get_user_model

        users = [
            get_user_model().objects.create_user(username=f"admission-{i}", password="unused-pw-1")
            for i in range(max(2, args.users))
        ]
        examples = [run_mode(False, args, users), run_mode(True, args, users)]
        # Throughput: the two modes alternate, round by round (2 shared cores drift: a ratio is
        # taken within a round, then the median over rounds), for one user alone (each freed
        # slot waits for a pass: nobody else's job is lined up) and for --users users.
        rounds: dict[int, list[dict[str, Any]]] = {1: [], args.users: []}
        for index in range(args.rounds):
            order = (False, True) if index % 2 == 0 else (True, False)
            for n_users in rounds:
                pair = {on: run_mode(on, args, users, example=False, n_users=n_users) for on in order}
                rounds[n_users].append({"without": pair[False], "with": pair[True]})
    summary = {f"{n}_users": _summary(each) for n, each in rounds.items()}
    for n, each in summary.items():
        print(f"{n}: with/without, median of {args.rounds} rounds: {each['ratio_median']:.2f} "
              f"{each['ratio_per_round']}", file=sys.stderr)  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "database": args.database,
        "examples": examples,
        "throughput": summary,
        "rounds": {f"{n}_users": each for n, each in rounds.items()},
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    _write_markdown(args, examples, rounds)
    print(json.dumps(report, indent=2))


def _write_markdown(
    args: argparse.Namespace, examples: list[dict[str, Any]], rounds: dict[int, list[dict[str, Any]]]
) -> None:
    """bench/results/admission.md: the table and the summary rows RESULTS.md collects."""
    from bench import common

    off, on = examples
    lines = [
        f"Database: {args.database}; {args.jobs} zero-step jobs a round, {args.rounds} rounds, "
        "the two modes alternating (ratios taken within a round).",
        "",
        "| | without admission (first come first served) | with admission |",
        "|---|---|---|",
        f"| the example: B's 1-step job, launch -> running (s) | {off['example_bob_wait_s']} "
        f"| {on['example_bob_wait_s']} |",
    ]
    rows = [
        common.row(
            "14. Fair admission",
            "the example: B's 1-step job, launch -> running (s)",
            "the next free slot (A's jobs take 5 s)",
            f"{on['example_bob_wait_s']} (without admission: {off['example_bob_wait_s']})",
            on["example_bob_wait_s"] <= 5.5,
        )
    ]
    for n, each in rounds.items():
        ratios = [r["with"]["jobs_per_second"] / r["without"]["jobs_per_second"] for r in each]
        without = [r["without"]["jobs_per_second"] for r in each]
        with_ = [r["with"]["jobs_per_second"] for r in each]
        label = "one user" if n == 1 else f"{n} users"
        lines.append(
            f"| zero-step jobs per second, {label} | {common.summarize(without)} "
            f"| {common.summarize(with_)} |"
        )
        rows.append(
            common.row(
                "14. Fair admission",
                f"zero-step jobs per second with / without admission, {label}",
                ">= 1 (must not drop)",
                common.summarize(ratios, ".3f"),
                statistics.median(ratios) >= 1,
            )
        )
    common.write_results("admission", "Fair admission", "\n".join(lines), rows)


if __name__ == "__main__":
    main()
