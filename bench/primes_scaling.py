"""How a parallel ``primes`` job scales from one Celery worker process to two.

Run from the project root: ``.venv/bin/python bench/primes_scaling.py [--n 1000000000] [--chunks 8]
[--runs 3]``. Writes bench/results/primes_scaling.md.

Everything is real: a private redis-server, Django on a throwaway migrated SQLite DB (WAL) shared with
real ``celery worker`` subprocesses (prefork, as in the Procfile and the tests' fixture). Each run
measures, interleaved: the sieve in-line in this process (``count_primes_below(n)``, no Celery: the
floor), then a fresh worker with ``--concurrency 1`` and a fresh worker with ``--concurrency 2``. Each
worker is started, waited for (" ready."), warmed with a small chunked primes job (so every pool process
has done its imports and started its push/pump threads and sieve caches), then one ``primes`` job is
launched through ``jobs.launch.job_create`` and timed from just before that call until its final
``job.update`` (state succeeded) arrives on the owner's group of the project's channel layer (a listener
in this process; the DB is also polled as a fallback). The result is checked against pi(n). The worker
is stopped (SIGTERM, warm shutdown) after each job.

Besides wall time, each job records: the chunk timeline from the worker's log (``celery.app.trace``'s
"succeeded in Xs" lines give each chunk's end and run time), the CPU time each pool process used during
the job (``/proc/<pid>/stat``; this is how the spread of chunks over processes is checked, the chunk log
lines carry no pid), and the machine's total busy CPU over the job (``/proc/stat``) minus what the
worker, redis-server and this process used: the other load on the shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import row, summarize, write_results  # noqa: E402
from bench.support import (  # noqa: E402
    BenchEnvironment,
    bench_environment,
    children_of,
    cpu_seconds,
    own_cpu_seconds,
    system_busy_seconds,
    worker_environment,
)
from scripts.harness import celery_worker  # noqa: E402

# pi(n): primes below n, for the sizes this benchmark is usually run at; other n are checked against
# the in-line count_primes_below(n) of the first run.
KNOWN_PI = {10**8: 5_761_455, 5 * 10**8: 26_355_867, 10**9: 50_847_534, 2 * 10**9: 98_222_287}
# Warm-up job: chunked (n >= the kind's PARALLEL_FROM), with chunks of more than one full sieve segment
# (2 * 2**21 integers), so each pool process builds its full-size wheel pattern before the measured job.
WARM_N = 40_000_000
WARM_CHUNKS = 8
SETTLE = 1.0  # seconds between the warm-up job and the measured one (trailing pushes and pump ticks)
JOB_TIMEOUT = 120.0
TRACE_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO celery\.app\.trace: "
    r"Task (?P<task>jobs\.run_job(?:_chunk)?)\[[0-9a-f-]+\] succeeded in (?P<runtime>[0-9.e-]+)s"
)


# --- The final job.update, as a client would hear it ------------------------------------------------


class FinalEvents:
    """Joins the owner's group on the project's channel layer (its own layer instance, event loop and
    thread) and records when each job's first job.update in a final state arrives."""

    FINAL = frozenset({"succeeded", "failed", "cancelled"})

    def __init__(self, group: str) -> None:
        self.group = group
        self.arrived: dict[str, tuple[float, float, dict[str, Any]]] = {}  # id -> (monotonic, time, job)
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self, timeout: float = 10.0) -> FinalEvents:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not join {self.group} on the channel layer: {self.errors}")
        return self

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5.0)

    async def _main(self) -> None:
        from channels_redis.pubsub import RedisPubSubChannelLayer
        from django.conf import settings

        layer = RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
        try:
            channel = await layer.new_channel()
            await layer.group_add(self.group, channel)
        except Exception as exc:
            self.errors.append(repr(exc))
            return
        self._ready.set()
        while not self._stop:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 0.25)
            except TimeoutError:
                continue
            except Exception as exc:
                self.errors.append(repr(exc))
                await asyncio.sleep(0.05)
                continue
            mono, wall = time.monotonic(), time.time()
            event = json.loads(message.get("text") or "{}")
            job = event.get("job") or {}
            if event.get("type") == "job.update" and job.get("state") in self.FINAL:
                with self._cond:
                    self.arrived.setdefault(job["id"], (mono, wall, job))
                    self._cond.notify_all()
        with contextlib.suppress(Exception):
            await layer.flush()

    def wait(self, job_id: str, timeout: float) -> tuple[float, float, dict[str, Any]] | None:
        with self._cond:
            self._cond.wait_for(lambda: job_id in self.arrived, timeout)
            return self.arrived.get(job_id)


# --- The worker --------------------------------------------------------------------------------------


def chunk_timeline(log: str) -> dict[str, Any]:
    """Chunks of the measured job from the worker's log: (start, end) in time.time() seconds."""
    chunks, splitter = [], None
    for line in log.splitlines():
        m = TRACE_LINE.match(line)
        if m is None:
            continue
        # Django sets TZ to TIME_ZONE in both processes, so naive local times compare with time.time().
        end = datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        runtime = float(m["runtime"])
        if m["task"] == "jobs.run_job":
            splitter = runtime
        else:
            chunks.append((end - runtime, end))
    return {"chunks": sorted(chunks), "splitter": splitter}


def chunks_per_process(intervals: list[tuple[float, float]], processes: int) -> list[int]:
    """How many chunks each pool process ran, inferred from the timeline: a chunk starts on the process
    that has been free longest (the one whose last chunk ended before it started; with prefetch 1 and
    acks_late a chunk is only handed to an idle process)."""
    free_at = [float("-inf")] * processes
    counts = [0] * processes
    for _start, end in sorted(intervals):
        slot = min(range(processes), key=lambda i: free_at[i])
        free_at[slot] = end
        counts[slot] += 1
    return sorted(counts, reverse=True)


def overlap_fraction(intervals: list[tuple[float, float]]) -> float:
    """Share of the span from the first start to the last end during which >= 2 intervals ran."""
    if not intervals:
        return 0.0
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running, last, both = 0, points[0][0], 0.0
    for t, delta in points:
        if running >= 2:
            both += t - last
        running += delta
        last = t
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    return both / span if span > 0 else 0.0


# --- One job ---------------------------------------------------------------------------------------


@dataclass
class JobRun:
    wall: float
    state: str
    result: Any
    launched_at: float  # time.time()
    arrived_at: float  # time.time()
    source: str  # "channel layer" or "db poll"
    db_seconds: float  # finished_at - created_at of the row


def run_primes_job(user: Any, events: FinalEvents, n: int, chunks: int) -> JobRun:
    """Launch one primes job and wait until its final state: measured from just before job_create."""
    from jobs.launch import job_create
    from jobs.models import Job

    launched_at = time.time()
    t0 = time.monotonic()
    job = job_create(owner=user, kind="primes", params={"n": n, "chunks": chunks}, rate_limit=False)
    job_id = str(job.id)
    deadline = t0 + JOB_TIMEOUT
    polled_final: tuple[float, float] | None = None
    arrival = None
    while time.monotonic() < deadline:
        arrival = events.wait(job_id, 0.25)
        if arrival is not None:
            break
        # Fallback: the row, polled every 0.25 s while waiting for the event.
        state = Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()
        if state in FinalEvents.FINAL:
            if polled_final is None:
                polled_final = (time.monotonic(), time.time())
            elif time.monotonic() - polled_final[0] > 2.0:
                break  # the event is not coming
    row = Job.objects.get(pk=job.pk)
    if arrival is not None:
        mono, wall_at, source = arrival[0], arrival[1], "channel layer"
    elif polled_final is not None:
        (mono, wall_at), source = polled_final, "db poll"
    else:
        raise RuntimeError(f"job {job_id} did not finish in {JOB_TIMEOUT:g} s: {row.state} {row.error}")
    db_seconds = (row.finished_at - row.created_at).total_seconds() if row.finished_at else float("nan")
    return JobRun(mono - t0, row.state, row.result, launched_at, wall_at, source, db_seconds)


# --- One measurement: a fresh worker, warmed, one job ------------------------------------------------


@dataclass
class Measurement:
    processes: int
    run: int
    job: JobRun
    ready_s: float
    pool_cpu: list[float]  # CPU seconds per pool process during the job
    main_cpu: float  # worker's main process
    other_cores: float  # average cores busy with anything but the worker, redis and this process
    total_cores: float  # average cores busy in all
    load1: float
    chunks: list[tuple[float, float]] = field(default_factory=list)
    splitter: float | None = None

    @property
    def chunk_sum(self) -> float:
        return sum(e - s for s, e in self.chunks)

    @property
    def pool_cores(self) -> float:
        """Cores the pool processes actually got during the job: their CPU time / wall time."""
        return sum(self.pool_cpu) / self.job.wall

    @property
    def to_first_chunk(self) -> float:
        return min(s for s, _ in self.chunks) - self.job.launched_at if self.chunks else float("nan")

    @property
    def chunk_span(self) -> float:
        return (
            max(e for _, e in self.chunks) - min(s for s, _ in self.chunks) if self.chunks else float("nan")
        )


def measure_worker(
    *, processes: int, run: int, args: argparse.Namespace, env: BenchEnvironment, user: Any,
    events: FinalEvents, worker_env: dict[str, str], expected: int, redis_pid: int | None,
)  -> Measurement:  # fmt: skip
    name = f"primes-bench-{processes}p-{run}-{os.getpid()}"
    worker = celery_worker(name, worker_env, log_dir=env.var_dir, concurrency=processes, wait=False)
    try:
        ready_s = worker.wait_for_log(" ready.", timeout=60)
        warm = run_primes_job(user, events, WARM_N, WARM_CHUNKS)
        if warm.state != "succeeded":
            raise RuntimeError(f"warm-up job {warm.state}: {warm.result}")
        time.sleep(SETTLE)
        pool = children_of(worker.pid)
        if len(pool) != processes:
            raise RuntimeError(f"expected {processes} pool processes, found {pool}")
        ours = [worker.proc.pid, *pool] + ([redis_pid] if redis_pid else [])
        offset = worker.log_path.stat().st_size
        load1 = os.getloadavg()[0]
        cpu0, busy0, own0 = cpu_seconds(ours), system_busy_seconds(), own_cpu_seconds()
        job = run_primes_job(user, events, args.n, args.chunks)
        cpu1, busy1, own1 = cpu_seconds(ours), system_busy_seconds(), own_cpu_seconds()
        if job.state != "succeeded" or (job.result or {}).get("primes") != expected:
            raise RuntimeError(f"wrong outcome: {job.state} {job.result} (expected {expected:,} primes)")
        # The last chunk logs "succeeded" after it has finished the job: wait for its line.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            timeline = chunk_timeline(worker.log(offset))
            if len(timeline["chunks"]) >= args.chunks:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    used = {pid: cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in ours}
    busy = busy1 - busy0
    return Measurement(
        processes=processes,
        run=run,
        job=job,
        ready_s=ready_s,
        pool_cpu=[used[pid] for pid in pool],
        main_cpu=used[worker.proc.pid],
        other_cores=max(0.0, busy - sum(used.values()) - (own1 - own0)) / job.wall,
        total_cores=busy / job.wall,
        load1=load1,
        chunks=timeline["chunks"],
        splitter=timeline["splitter"],
    )


def measure(args: argparse.Namespace, env: BenchEnvironment) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from jobs.kinds.primes.sieve import count_primes_below, count_primes_in_range, split_range
    from notifications.events import user_group

    user = get_user_model().objects.create_user(username="primes-bench", password="unused-pw-1")
    worker_env = worker_environment()
    redis_pid = env.redis.pid
    events = FinalEvents(user_group(user.pk)).start()
    expected = KNOWN_PI.get(args.n)
    # Once, up front: each chunk's range sieved in-line, to tell the chunks' own cost from interference.
    inline_chunks = []
    for lo, hi in split_range(args.n, args.chunks):
        t0 = time.perf_counter()
        count_primes_in_range(lo, hi)
        inline_chunks.append(time.perf_counter() - t0)
    inline: list[float] = []
    results: list[Measurement] = []
    started = time.monotonic()
    try:
        for run in range(args.runs):
            t0 = time.perf_counter()
            count = count_primes_below(args.n)
            inline.append(time.perf_counter() - t0)
            if expected is None:
                expected = count
            if count != expected:
                raise RuntimeError(f"count_primes_below({args.n:,}) = {count:,}, expected {expected:,}")
            for processes in (1, 2) if run % 2 == 0 else (2, 1):  # alternate which goes first
                m = measure_worker(
                    processes=processes, run=run, args=args, env=env, user=user, events=events,
                    worker_env=worker_env, expected=expected, redis_pid=redis_pid,
                )  # fmt: skip
                results.append(m)
                print(
                    f"run {run + 1}/{args.runs}, {processes} process(es): {m.job.wall:.3f} s "
                    f"(in-line {inline[-1]:.3f} s; pool CPU {', '.join(f'{c:.2f}' for c in m.pool_cpu)} s; "
                    f"other load {m.other_cores:.2f} cores) at {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                )
    finally:
        events.stop()
    return {
        "inline": inline,
        "inline_chunks": inline_chunks,
        "measurements": results,
        "expected": expected,
        "elapsed": time.monotonic() - started,
        "event_errors": events.errors,
    }


# --- Report ------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any], load_before: tuple, load_after: tuple) -> str:
    med = statistics.median
    ms: list[Measurement] = results["measurements"]
    by = {p: [m for m in ms if m.processes == p] for p in (1, 2)}
    walls = {p: [m.job.wall for m in by[p]] for p in (1, 2)}
    inline = results["inline"]
    speedup = med(walls[1]) / med(walls[2])
    paired = [a.job.wall / b.job.wall for a, b in zip(by[1], by[2], strict=True)]
    cores = os.cpu_count()

    table = [
        "| n | chunks | in-line floor, 1 process, no Celery (s) | 1 worker process (s) | "
        "2 worker processes (s) | speed-up (1-process median / 2-process median) |",
        "|---|---|---|---|---|---|",
        f"| {args.n:,} | {args.chunks} | {summarize(inline)} | {summarize(walls[1])} | "
        f"{summarize(walls[2])} | **{speedup:.2f}x** (per-run pairs: "
        f"{', '.join(f'{r:.2f}' for r in paired)}) |",
    ]

    def cpu_split(m: Measurement) -> str:
        return " + ".join(f"{c:.2f}" for c in m.pool_cpu)

    detail = [
        "| run | worker processes | wall (s) | launch to first chunk start (s) | first chunk start to "
        "last chunk end (s) | sum of chunk run times (s) | time 2 chunks ran at once (% of span) | "
        "chunks per process (inferred from the timeline) | CPU per pool process during the job (s) | "
        "cores the pool got (pool CPU / wall) | worker main process CPU (s) | other load during "
        "the job (cores) | all busy (cores) | load avg 1 min at launch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in ms:
        detail.append(
            f"| {m.run + 1} | {m.processes} | {m.job.wall:.3f} | {m.to_first_chunk:.3f} | "
            f"{m.chunk_span:.3f} | {m.chunk_sum:.3f} | {overlap_fraction(m.chunks) * 100:.0f} | "
            f"{' + '.join(map(str, chunks_per_process(m.chunks, m.processes)))} | "
            f"{cpu_split(m)} | {m.pool_cores:.2f} | {m.main_cpu:.2f} | {m.other_cores:.2f} | "
            f"{m.total_cores:.2f} | {m.load1:.2f} |"
        )

    def med_of(p: int, attr: str) -> float:
        return med([getattr(m, attr) for m in by[p]])

    floor = med(inline)
    setup1, setup2 = med_of(1, "to_first_chunk"), med_of(2, "to_first_chunk")
    sum1, sum2 = med_of(1, "chunk_sum"), med_of(2, "chunk_sum")
    span1, span2 = med_of(1, "chunk_span"), med_of(2, "chunk_span")
    other1, other2 = med_of(1, "other_cores"), med_of(2, "other_cores")
    got1, got2 = med_of(1, "pool_cores"), med_of(2, "pool_cores")
    cpu1, cpu2 = (med([sum(m.pool_cpu) for m in by[p]]) for p in (1, 2))
    overlap2 = med([overlap_fraction(m.chunks) for m in by[2]])
    min_share = min(min(m.pool_cpu) / sum(m.pool_cpu) for m in by[2] if sum(m.pool_cpu) > 0)
    sources = sorted({m.job.source for m in ms})
    # The speed-up if the chunks kept their 1-process speed and spread perfectly: only the part before
    # the first chunk starts stays serial (the job is finished inside the last chunk).
    serial = med([setup1, setup2])
    amdahl = (serial + span1) / (serial + span1 / 2)

    chunk_times = [e - s for m in by[1] for s, e in m.chunks]
    quiet_run = min(range(len(by[2])), key=lambda i: by[2][i].other_cores + by[1][i].other_cores)
    quiet, quiet_ratio = by[2][quiet_run], paired[quiet_run]
    run_growth, cpu_growth = sum2 / sum1 - 1, cpu2 / cpu1 - 1
    cpu_totals = f"pool CPU per job {cpu2:.2f} s vs {cpu1:.2f} s; in-line sieve {floor:.2f} s"
    runs_both = f"their summed run time was {sum2:.2f} s with 2 processes vs {sum1:.2f} s with 1"
    if run_growth < 0.05:
        slower = f"chunks were not slower when two ran at once: {runs_both} ({cpu_totals})"
    elif cpu_growth > 0.02:
        slower = (
            f"chunks are slower when two run at once: {runs_both} ({run_growth:+.0%}), of which "
            f"{cpu_growth:+.0%} is more CPU ({cpu_totals}: the sieves share the L3 cache and memory "
            "bandwidth, with each other and with the other load) and the rest is waiting for a core"
        )
    else:
        slower = (
            f"chunks are slower when two run at once: {runs_both} ({run_growth:+.0%}) with no more CPU "
            f"({cpu_totals}): the extra is time spent waiting for a core"
        )

    in_chunks = results["inline_chunks"]
    vary = (
        f"in the 1-process jobs one chunk took {min(chunk_times) * 1e3:.0f} to "
        f"{max(chunk_times) * 1e3:.0f} ms; sieved in-line, once, {min(in_chunks) * 1e3:.0f} to "
        f"{max(in_chunks) * 1e3:.0f} ms"
    )
    quiet_loads = (
        f"{by[1][quiet_run].other_cores:.2f} cores during its 1-process job, "
        f"{quiet.other_cores:.2f} during its 2-process job"
    )
    limits = (
        f"What limits the speed-up (ideal: 2x on {cores} cores): (1) the serial part (launch, the "
        f"splitter task, the first chunk being picked up: ~{serial * 1e3:.0f} ms) alone would cap it at "
        f"~{amdahl:.2f}x for this job; (2) the tail: two chunks ran at once for only {overlap2:.0%} "
        f"(median) of the span from the first chunk's start to the last one's end, because the "
        f"{args.chunks} chunks are handed out whole and their run times vary ({vary}), so at the end "
        "one process idles while the other finishes its last chunk (more, smaller chunks would shorten "
        f"the tail); (3) {slower}; (4) the machine is shared: other processes (other engineers' test "
        f"runs) took {other2:.2f} cores on average during the 2-process jobs ({other1:.2f} during the "
        f"1-process jobs; load average {load_before[0]:.2f} before and {load_after[0]:.2f} after the "
        f"benchmark), and the 2-process pool got {got2:.2f} cores (pool CPU / wall) where 1 process got "
        f"{got1:.2f}. In the run with the least other load ({quiet_loads}) the speed-up was "
        f"{quiet_ratio:.2f}x."
    )
    spread = (
        f"Spread over processes: in every 2-process job both pool processes did work (the smaller one "
        f"used at least {min_share * 100:.0f} % of the pool's CPU during the job; per-process CPU in "
        f"the detail table), and two chunks ran at the same time for {overlap2 * 100:.0f} % (median) "
        f"of the span from the first chunk's start to the last chunk's end ({span2:.2f} s)."
        if min_share > 0.2
        else f"**Chunks did not spread evenly over the two processes**: in some 2-process job one pool "
        f"process used only {min_share * 100:.0f} % of the pool's CPU (see the detail table)."
    )

    setup = (
        f"{args.runs} runs; in each, interleaved: the in-line sieve in this process, then a fresh "
        "`celery worker --concurrency 1` and a fresh `--concurrency 2`, which goes first alternating from "
        "run to run (prefork, `--without-mingle "
        "--without-gossip`, `dashboard.settings.test`, private redis-server, throwaway SQLite DB in WAL "
        "mode shared by the worker and this process; `RUNBOARD_STALE_AFTER=600`, no beat, so no reaper). "
        f"Each worker is started, waited for, warmed with one `primes` job (n={WARM_N:,}, "
        f"{WARM_CHUNKS} chunks: every pool process does its imports, starts its push and pump threads and "
        f"builds its sieve caches), then one `primes` job (n={args.n:,}, {args.chunks} chunks) is "
        "launched with `jobs.launch.job_create` and timed from just before that call until its final "
        "`job.update` (state succeeded) reached a listener on the owner's group of the project's channel "
        f"layer (source used: {', '.join(sources)}); then the worker gets SIGTERM. Every job's result "
        f"was checked: {results['expected']:,} primes below {args.n:,}. Machine: {cores} CPU cores "
        f"(`os.cpu_count()`); load average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in load_before)} "
        f"before and {', '.join(f'{x:.2f}' for x in load_after)} after; measuring took "
        f"{results['elapsed']:.0f} s."
    )
    notes = [
        "- Speed-up = median wall time with 1 worker process / median with 2 (the per-run pairs are "
        "each run's 1-process time / its 2-process time). The in-line floor is `count_primes_below(n)` "
        "in one process, no Celery, no database.",
        "- Launch to first chunk start: `job_create` (insert + enqueue), the `jobs.run_job` task "
        "(start the job, split, insert the chunk rows, enqueue the chunks) and the first chunk task "
        "being picked up. Chunk start/end come from the worker log's `succeeded in Xs` lines (end "
        "time minus run time); a chunk's run time includes its reporter's database writes and, for the "
        "last one, finishing the job; its log line follows Celery's result write (django-db), so the "
        "last chunk's end can come slightly after the final event.",
        "- CPU per pool process: utime + stime from `/proc/<pid>/stat` (10 ms ticks) over the job. The "
        "chunks' own log lines (`[lo, hi): count primes`) carry no pid, so this is how the spread is "
        "checked. Other load = all cores' busy time (`/proc/stat`) over the job minus the worker's "
        "processes, redis-server and this process, divided by the wall time.",
        f"- {spread}",
    ]
    if results["event_errors"]:
        notes.append(f"- The channel-layer listener hit errors: {sorted(set(results['event_errors']))[:3]}")
    return "\n".join(
        [setup, "", *table, "", limits, "", "Per job:", "", *detail, "", "Notes:", "", *notes, ""]
    )


def summary(args: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    ms: list[Measurement] = results["measurements"]
    walls = {p: [m.job.wall for m in ms if m.processes == p] for p in (1, 2)}
    pairs = [a / b for a, b in zip(walls[1], walls[2], strict=True)]
    scenario = "8. Work throughput"
    return [
        row(
            scenario,
            f"`primes` below {args.n:,} ({args.chunks} chunks): wall time with 1 / 2 worker processes (s)",
            "-",
            f"{summarize(walls[1], '.2f')} / {summarize(walls[2], '.2f')}",
            None,
        ),
        row(
            scenario,
            "`primes` speed-up (x), 1 -> 2 worker processes (per-run pairs)",
            "report (ideal 2 on 2 cores)",
            summarize(pairs, ".2f"),
            None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000_000, help="count the primes below n")
    parser.add_argument("--chunks", type=int, default=8, help="chunks the job is split into")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the results, don't write the file")
    parser.add_argument("--quick", action="store_true", help="smoke run: n=10^8, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs = 10**8, 2

    # The reaper never runs here (no beat), but make sure a slow chunk could never look stale.
    os.environ["RUNBOARD_STALE_AFTER"] = "600"
    load_before = os.getloadavg()
    with bench_environment() as env:
        results = measure(args, env)
    load_after = os.getloadavg()
    body = report(args, results, load_before, load_after)
    print(body)
    if not args.no_write:
        path = write_results(
            "primes_scaling", "primes: 1 vs 2 worker processes", body, summary=summary(args, results)
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
