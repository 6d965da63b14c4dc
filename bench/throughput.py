"""Scenario 7, job throughput: zero-step jobs end to end vs bare Celery no-op tasks, same broker.

Run from the project root: ``.venv/bin/python bench/throughput.py [--jobs 1000] [--pairs 3]
[--concurrency 2] [--database postgresql,sqlite] [--profile] [--quick]``. Writes
bench/results/throughput.md.

Everything is real: a private redis-server (the broker), a throwaway database (a new PostgreSQL
database on the server `make test` uses, as production runs; and, in a second run, a SQLite file
in WAL mode, the local default), one real ``celery worker`` subprocess (prefork,
``--concurrency 2`` as the Procfile, ``dashboard.settings.test``) that serves both sides, and a
listener in a separate process that joins the owner's group on the project's channel layer, as a
consumer would. Each database is measured in its own child process (Django is set up once per
process).

Rounds alternate, project and bare, the first of each pair swapping every pair:

- **project**: N ``jobs.launch.job_create(kind="simulate", params={"steps": 0})`` calls in this
  process (validate, insert, push ``job.update``, enqueue on commit); the worker runs each job
  (``job_start``, reporter, the kind's one ``ctx.progress``, ``job_finish``, the completion
  ``Notification`` row and its ``notification.new`` push; Celery stores the task result in
  django-celery-results). End to end = from just before the first ``job_create`` to the last
  job's completion notification row (its ``created_at``, written by the worker); the arrival of
  the last ``notification.new`` at the listener is reported too.
- **bare**: N ``apply_async()`` of a no-op task (``bench.throughput.noop``, registered in the worker
  with ``--include``) on the same app, broker, worker and result backend. End to end = from just
  before the first ``apply_async`` to the last task's result row (``date_done``).

Both sides are polled the same way (a COUNT every 50 ms) to learn that a round is over; the figures
come from the timestamps the worker wrote (``time.time()``-based in every process of this machine).
Also per round: worker CPU per job (``/proc``), this process's CPU, the listener's and Redis's
(PostgreSQL's own backends are not counted: the server is shared).

``--profile`` adds one project round under py-spy (the worker with ``--subprocesses``, and this
process) and lists where the samples went; it needs ``py-spy`` (bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from celery import shared_task  # noqa: E402

from bench.common import row, summarize, write_results  # noqa: E402
from bench.support import (  # noqa: E402
    BenchEnvironment,
    bench_environment,
    children_of,
    cpu_seconds,
    own_cpu_seconds,
    postgres_server_url,
    setup_django,
    worker_environment,
)
from scripts.harness import celery_worker  # noqa: E402

NOOP_TASK = "bench.throughput.noop"
MARKER_PREFIX = "throughput-bench-marker:"  # a text the listener reports as the end of a drain
POLL = 0.05
SETTLE = 0.5  # after a round: trailing pushes and pump ticks of the last jobs
TARGET_RATIO = 0.5  # issue 8, both databases
# Issue 15 §3, with the default settings (admission control on): per database.
TARGET_RATIO_15 = {"postgresql": 0.6, "sqlite": 0.4}
COUNTED = ("created", "run", "finished", "notification rows", "jobs notified", "notification.new received",
           "jobs whose notification.new was received", "final job.update received",
           "jobs whose final job.update was received")  # fmt: skip
INTRO = (
    "Zero-step jobs (`simulate`, steps=0) end to end (created, run, succeeded, notified) against bare Celery "
    "no-op tasks on the same broker, worker and result backend, in alternating rounds; measured on "
    "PostgreSQL (what production runs) and on SQLite (the local default), each in its own run. Target: "
    f"Runboard's rate >= {TARGET_RATIO}x the bare rate (issue 8); issue 15 §3: >= "
    f"{TARGET_RATIO_15['postgresql']}x on PostgreSQL and >= {TARGET_RATIO_15['sqlite']}x on SQLite, with "
    "admission control on (the default), every job created, run, finished, notified and pushed exactly "
    "once (counted below)."
)


def exactly_once(rounds: list[Round]) -> tuple[str, bool]:
    """The project rounds' counts (COUNTED) over their jobs, and whether each equals the jobs."""
    total = sum(r.n for r in rounds)
    sums = {name: sum(r.counts.get(name, 0) for r in rounds) for name in COUNTED}
    text = ", ".join(f"{name} {value}" for name, value in sums.items()) + f" (of {total} jobs)"
    return text, all(value == total for value in sums.values())


@shared_task(name=NOOP_TASK)
def noop() -> None:
    """The bare Celery baseline: a task that does nothing (its result still goes to the backend)."""
    return None


# --- The listener: a consumer's view, in its own process ---------------------------------------------


def listener_main(spec: dict[str, str], out: Any) -> None:
    """Join the owner's group; put (time.time(), job id) for every notification.new received."""
    import asyncio

    setup_django(var_dir=Path(spec["var_dir"]), redis_url=spec["redis_url"], migrate=False)
    from channels.layers import get_channel_layer

    async def main() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(spec["group"], channel)
        out.put(("ready", os.getpid()))
        while True:
            try:
                message = await layer.receive(channel)
            except Exception as exc:
                out.put(("error", repr(exc)))
                await asyncio.sleep(0.1)
                continue
            text = message.get("text") or ""
            if text.startswith(MARKER_PREFIX):
                out.put(("marker", time.time(), text))
                continue
            if '"notification.new"' in text:
                arrived = time.time()
                event = json.loads(text)
                out.put(("notified", arrived, str((event.get("notification") or {}).get("job_id"))))
            elif '"state":"succeeded"' in text:  # a job's final update (others: not parsed)
                event = json.loads(text)
                if event.get("type") == "job.update":
                    out.put(("finished", time.time(), str((event.get("job") or {}).get("id"))))

    asyncio.run(main())


class Listener:
    def __init__(self, env: BenchEnvironment, group: str) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.errors: list[str] = []
        spec = {"var_dir": str(env.var_dir), "redis_url": env.redis_url, "group": group}
        self.group = group
        self._markers = 0
        self.proc = ctx.Process(target=listener_main, args=(spec, self.queue), daemon=True)
        self.proc.start()
        ready = self.queue.get(timeout=60)
        if ready[0] != "ready":
            raise RuntimeError(f"listener did not subscribe: {ready}")
        self.pid = int(ready[1])

    def drain(self, timeout: float = 60.0) -> list[tuple[str, float, str]]:
        """(what: "notified" or "finished", arrival time, job id) received since the last drain.

        Up to a marker published now on the same group: everything published before it has
        been received and queued by then. (Reading until the queue looked empty stopped early
        when the listener's queue feeder lagged: a run counted 424 of 1,000 received, the rest
        arriving after the round was counted.)"""
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        from notifications.push import RELAY_TYPE

        self._markers += 1
        marker = f"{MARKER_PREFIX}{self._markers}"
        async_to_sync(get_channel_layer().group_send)(self.group, {"type": RELAY_TYPE, "text": marker})
        got: list[tuple[str, float, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.errors.append(f"marker {marker} not received within {timeout:g} s")
                return got
            if item[0] == "error":
                self.errors.append(item[1])
            elif item[0] == "marker":
                if item[2] == marker:
                    return got
            else:
                got.append((item[0], item[1], item[2]))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(5)


# --- Rounds ------------------------------------------------------------------------------------------


@dataclass
class Round:
    side: str  # "project" or "bare"
    index: int
    n: int
    started: float  # time.time() just before the first submit
    submitted: float  # seconds the submit loop took
    done_at: float  # time.time() of the last completion row
    done_polled: float  # seconds until the poll saw all N
    notified_at: float | None = None  # project: last notification.new at the listener
    notified: int = 0
    worker_cpu: float = 0.0
    own_cpu: float = 0.0
    listener_cpu: float = 0.0
    redis_cpu: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    # Project rounds, each counted once per job (issue 15 §3: "exactly once"): job rows created,
    # task runs (attempts: a start counts one), finish transitions (finished_at written, final
    # state), completion Notification rows (and the jobs they name), notification.new and final
    # job.update pushes received by the listener (and the distinct jobs they name).
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.done_at - self.started

    @property
    def rate(self) -> float:
        return self.n / self.seconds


class Bench:
    def __init__(self, args: argparse.Namespace, env: BenchEnvironment) -> None:
        from django.contrib.auth import get_user_model

        from notifications.events import user_group

        self.args, self.env = args, env
        self.user = get_user_model().objects.create_user(username="throughput-bench", password="unused-pw-1")
        self.listener = Listener(env, user_group(self.user.pk))
        self.worker = celery_worker(
            "worker",
            worker_environment(extra={"RUNBOARD_STALE_AFTER": "600"}),
            log_dir=env.var_dir,
            hostname=f"throughput-{os.getpid()}",
            concurrency=args.concurrency,
            extra_args=["--include", "bench.throughput"],
            wait=False,
        )
        self.redis_pid = env.redis.pid

    def stop(self) -> None:
        self.worker.stop()
        self.listener.stop()

    def _pids(self) -> list[int]:
        pids = [self.worker.proc.pid, *children_of(self.worker.pid), self.listener.pid]
        return pids + ([self.redis_pid] if self.redis_pid else [])

    def _wait(self, count: Any, n: int, timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if count() >= n:
                return time.monotonic() - t0
            time.sleep(POLL)
        log = self.worker.log()[-3000:]
        raise RuntimeError(f"only {count()} of {n} done after {timeout:g} s; worker log:\n{log}")

    def project_round(self, index: int, n: int) -> Round:
        from jobs.launch import job_create
        from jobs.models import FINAL_STATES, Job
        from notifications.models import Notification

        last_id = Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0
        mine = Notification.objects.filter(recipient=self.user, id__gt=last_id)
        self.listener.drain()
        cpu0, own0 = cpu_seconds(self._pids()), own_cpu_seconds()
        started = time.time()
        t0 = time.monotonic()
        ids = [
            job_create(owner=self.user, kind="simulate", params={"steps": 0}, rate_limit=False).id
            for _ in range(n)
        ]
        submitted = time.monotonic() - t0
        polled = self._wait(mine.count, n, self.timeout(n)) + submitted
        time.sleep(SETTLE)
        cpu1, own1 = cpu_seconds(self._pids()), own_cpu_seconds()
        done_at = max(t.timestamp() for t in mine.values_list("created_at", flat=True))
        wanted = {str(i) for i in ids}
        received = [(what, t, job_id) for what, t, job_id in self.listener.drain() if job_id in wanted]
        arrivals = [t for what, t, _ in received if what == "notified"]
        jobs = Job.objects.filter(id__in=ids)
        states = collections.Counter(jobs.values_list("state", flat=True))
        notes = Notification.objects.filter(job_id__in=ids)
        counts = {
            "created": jobs.count(),
            "run": sum(jobs.values_list("attempts", flat=True)),
            "finished": jobs.filter(finished_at__isnull=False, state__in=FINAL_STATES).count(),
            "notification rows": notes.count(),
            "jobs notified": notes.values("job_id").distinct().count(),
            "notification.new received": len(arrivals),
            "jobs whose notification.new was received": len({j for w, _, j in received if w == "notified"}),
            "final job.update received": sum(w == "finished" for w, _, _ in received),
            "jobs whose final job.update was received": len({j for w, _, j in received if w == "finished"}),
        }
        return self._round("project", index, n, started, submitted, done_at, polled, cpu0, cpu1, own1 - own0,
                           notified_at=max(arrivals, default=None), notified=len(arrivals),
                           states=dict(states), counts=counts)  # fmt: skip

    def bare_round(self, index: int, n: int) -> Round:
        from django_celery_results.models import TaskResult

        last_id = TaskResult.objects.order_by("-id").values_list("id", flat=True).first() or 0
        mine = TaskResult.objects.filter(task_name=NOOP_TASK, id__gt=last_id)
        self.listener.drain()
        cpu0, own0 = cpu_seconds(self._pids()), own_cpu_seconds()
        started = time.time()
        t0 = time.monotonic()
        for _ in range(n):
            noop.apply_async()
        submitted = time.monotonic() - t0
        polled = self._wait(mine.filter(status="SUCCESS").count, n, self.timeout(n)) + submitted
        time.sleep(SETTLE)
        cpu1, own1 = cpu_seconds(self._pids()), own_cpu_seconds()
        done_at = max(t.timestamp() for t in mine.values_list("date_done", flat=True))
        states = collections.Counter(mine.values_list("status", flat=True))
        return self._round("bare", index, n, started, submitted, done_at, polled, cpu0, cpu1, own1 - own0,
                           states=dict(states))  # fmt: skip

    def _round(
        self, side: str, index: int, n: int, started: float, submitted: float, done_at: float, polled: float,
        cpu0: dict[int, float], cpu1: dict[int, float], own: float, **extra: Any,
    ) -> Round:  # fmt: skip
        used = {pid: cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in cpu1}
        worker = [self.worker.proc.pid, *children_of(self.worker.pid)]
        return Round(
            side=side, index=index, n=n, started=started, submitted=submitted, done_at=done_at,
            done_polled=polled, own_cpu=own, worker_cpu=sum(used.get(p, 0.0) for p in worker),
            listener_cpu=used.get(self.listener.pid, 0.0), redis_cpu=used.get(self.redis_pid or -1, 0.0),
            **extra,
        )  # fmt: skip

    def timeout(self, n: int) -> float:
        return 60.0 + n * 0.2

    def run(self, side: str, index: int, n: int) -> Round:
        r = self.project_round(index, n) if side == "project" else self.bare_round(index, n)
        counted = f", counted {r.counts}" if r.counts else ""
        print(
            f"{side:7} round {index}: {n} in {r.seconds:.2f} s = {r.rate:.0f}/s (submit {r.submitted:.2f} s, "
            f"worker CPU {r.worker_cpu / n * 1e3:.2f} ms/job{counted})",
            file=sys.stderr,
        )
        return r


# --- py-spy -------------------------------------------------------------------------------------------

PROFILE_MARKERS = ("jobs/", "notifications/", "dashboard/", "django/db/", "celery/backends/", "kombu/",
                   "redis/", "django_celery_results/", "json/")  # fmt: skip


def profile_round(bench: Bench, n: int, out_dir: Path) -> dict[str, Any]:
    """One more project round with py-spy sampling the worker (and its pool) and this process."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"worker": (bench.worker.proc.pid, ["--subprocesses"]), "launcher": (os.getpid(), [])}
    procs = {}
    for name, (pid, extra) in targets.items():
        procs[name] = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--nonblocking",
             "--output", str(out_dir / f"{name}.txt"), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        r = bench.run("project", -1, n)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGINT)  # py-spy writes what it has
        errors = {}
        for name, p in procs.items():
            try:
                _, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            if not (out_dir / f"{name}.txt").exists():
                errors[name] = err.decode(errors="replace")[-500:]
    tables = {name: top_frames(out_dir / f"{name}.txt") for name in targets}
    return {"round": r, "errors": errors, "tables": tables}


def top_frames(path: Path, limit: int = 25) -> list[tuple[str, float, float]]:
    """From py-spy's raw (collapsed) output: (function, inclusive share, self share) of the samples,
    for the project's code and the libraries a job's time goes to (ORM, result backend, broker)."""
    if not path.exists():
        return []
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        k = int(count)
        total += k
        for f in set(frames):
            inclusive[f] += k
        own[frames[-1]] += k
    if not total:
        return []
    listed = [f for f, _ in inclusive.most_common() if any(m in f for m in PROFILE_MARKERS)]
    return [(f, inclusive[f] / total, own[f] / total) for f in listed[:limit]]


def _short(frame: str) -> str:
    """'func (/path/to/site-packages/pkg/mod.py:123)' -> 'func (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# --- Report -------------------------------------------------------------------------------------------


DB_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite (WAL)"}


def fmt(values: list[float], spec: str) -> str:
    return summarize(values, spec)


def report(args: argparse.Namespace, rounds: list[Round], pairs: list[float], extra: dict[str, Any]) -> str:
    med = statistics.median
    db = DB_NAMES[extra["database"]]
    by = {side: [r for r in rounds if r.side == side] for side in ("project", "bare")}
    p, b = by["project"], by["bare"]
    ratio = med(pairs)
    notify_lag = [r.notified_at - r.done_at for r in p if r.notified_at is not None]
    notified, total = sum(r.notified for r in p), sum(r.n for r in p)
    once_text, once_ok = exactly_once(p)
    target_15 = TARGET_RATIO_15[extra["database"]]

    def per_job_ms(rs: list[Round], attr: str) -> str:
        return fmt([getattr(r, attr) / r.n * 1e3 for r in rs], ".2f")

    def line(label: str, project: str, bare: str, target: str = "-", met: str = "-") -> str:
        return f"| {label} | {project} | {bare} | {target} | {met} |"

    rows = [
        "| Figure | Runboard: zero-step jobs | bare Celery: no-op tasks | Target | Met? |",
        "|---|---|---|---|---|",
        line("end-to-end rate (per second)", fmt([r.rate for r in p], ".0f"),
             fmt([r.rate for r in b], ".0f")),
        line("Runboard rate / bare rate (per pair of adjacent rounds)", f"**{fmt(pairs, '.2f')}**", "",
             f">= {TARGET_RATIO} (issue 8)", "met" if ratio >= TARGET_RATIO else "**not met**"),
        line("the same ratio, issue 15 §3's target (admission control on)", f"**{fmt(pairs, '.2f')}**",
             f"jobs counted: {once_text}", f">= {target_15}",
             "met" if ratio >= target_15 and once_ok else "**not met**"),
        line("each job exactly once: created, run, finished, notified, pushed", once_text, "-",
             "all equal the jobs", "met" if once_ok else "**not met**"),
        line(f"seconds for {args.jobs:,} (first submit to last completion row)",
             fmt([r.seconds for r in p], ".2f"), fmt([r.seconds for r in b], ".2f")),
        line("submitting them: the `job_create` / `apply_async` loop (s)",
             fmt([r.submitted for r in p], ".2f"), fmt([r.submitted for r in b], ".2f")),
        line("worker CPU per job (main + pool processes, ms)", per_job_ms(p, "worker_cpu"),
             per_job_ms(b, "worker_cpu")),
        line("this process's CPU per job (submitting, polling; ms)", per_job_ms(p, "own_cpu"),
             per_job_ms(b, "own_cpu")),
        line("redis-server CPU per job (ms)", per_job_ms(p, "redis_cpu"), per_job_ms(b, "redis_cpu")),
        line("listener process CPU per job (ms)", per_job_ms(p, "listener_cpu"),
             per_job_ms(b, "listener_cpu")),
        line("`notification.new` received by the listener / jobs", f"{notified} / {total}", "-", "all",
             "met" if notified == total else "**not met**"),
        line("last `notification.new` received after the last notification row was written (ms)",
             fmt([x * 1e3 for x in notify_lag], ".1f") if notify_lag else "n/a", "-"),
        line("final states", _states(p), _states(b), "all succeeded",
             "met" if _all_ok(p, "succeeded") and _all_ok(b, "SUCCESS") else "**not met**"),
    ]  # fmt: skip
    detail = [
        "| round | side | jobs | seconds | per second | submit (s) | worker CPU (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rounds, key=lambda r: r.started):
        detail.append(
            f"| {r.index} | {r.side} | {r.n} | {r.seconds:.2f} | {r.rate:.0f} | {r.submitted:.2f} "
            f"| {r.worker_cpu:.2f} |"
        )
    setup = (
        f"{len(pairs)} pairs of rounds of {args.jobs:,} each, project and bare alternating (the first of "
        f"each pair swapping from pair to pair), after a warm-up round of each; one `celery worker "
        f"--concurrency {args.concurrency}` (prefork, `--without-mingle --without-gossip`, log level INFO "
        f"as the Procfile) serves every round; private redis-server as broker; a throwaway {db} database "
        "for the project and for django-celery-results, the result backend of both sides; the project's "
        "`RedisPubSubChannelLayer` for pushes. Runboard: `job_create(kind='simulate', params={'steps': 0})`, "
        "one owner, launch rate limit off; its end is the last completion `Notification` row's "
        "`created_at`. Bare: `noop.apply_async()`, its end the last `TaskResult.date_done`. Rate = jobs / "
        "(end - time.time() just before the first submit). Machine: "
        f"{os.cpu_count()} cores; load average before {extra['load_before'][0]:.2f}, after "
        f"{extra['load_after'][0]:.2f}; measuring took {extra['elapsed']:.0f} s."
    )
    parts = [setup, "", *rows, "", "Per round:", "", *detail, ""]
    if extra.get("retries"):
        parts += [
            f"Jobs deferred by the per-user running cap (retries in the worker log): {extra['retries']}",
            "",
        ]
    if extra.get("listener_errors"):
        parts += [f"Listener errors: {sorted(set(extra['listener_errors']))[:3]}", ""]
    if extra.get("profile"):
        parts += _profile_section(extra["profile"])
    return "\n".join(parts)


def _states(rs: list[Round]) -> str:
    total: collections.Counter[str] = collections.Counter()
    for r in rs:
        total.update(r.states)
    return ", ".join(f"{k} {v}" for k, v in sorted(total.items()))


def _all_ok(rs: list[Round], ok: str) -> bool:
    return all(set(r.states) == {ok} for r in rs)


def _profile_section(prof: dict[str, Any]) -> list[str]:
    if "error" in prof:
        return [f"Profile: {prof['error']}", ""]
    r: Round = prof["round"]
    out = [
        f"Profile (py-spy, 250 Hz, non-idle samples, one extra project round of {r.n} jobs: "
        f"{r.seconds:.2f} s, {r.rate:.0f}/s under the profiler): the share of samples whose stack holds "
        "the function (inclusive) and whose innermost frame it is (self); worker = main and pool processes.",
        "",
    ]
    for name, table in prof["tables"].items():
        if not table:
            out += [f"{name}: no samples ({prof['errors'].get(name, '')})", ""]
            continue
        out += [f"| {name}: function | inclusive | self |", "|---|---|---|"]
        out += [f"| `{f}` | {inc:.1%} | {own:.1%} |" for f, inc, own in table]
        out.append("")
    return out


def summary(args: argparse.Namespace, per_db: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sc = "7. Job throughput"
    out = []
    for res in per_db:
        db = DB_NAMES[res["database"]]
        if "skipped" in res:
            out.append(row(sc, f"on {db}", f">= {TARGET_RATIO}x", f"not measured: {res['skipped']}", None))
            out.append(row(sc, f"issue 15 §3 on {db}", f">= {TARGET_RATIO_15[res['database']]}x",
                           f"not measured: {res['skipped']}", None))  # fmt: skip
            continue
        rounds, pairs = res["rounds"], res["pairs"]
        p = [r for r in rounds if r.side == "project"]
        b = [r for r in rounds if r.side == "bare"]
        notified, total = sum(r.notified for r in p), sum(r.n for r in p)
        once_text, once_ok = exactly_once(p)
        out += [
            row(sc, f"{args.jobs:,} zero-step jobs end to end, Runboard rate / bare Celery no-op rate ({db})",
                f">= {TARGET_RATIO}", summarize(pairs, ".2f"),
                statistics.median(pairs) >= TARGET_RATIO),
            row(sc, f"Runboard jobs per second, end to end: created, run, succeeded, notified ({db})", "-",
                summarize([r.rate for r in p], ".0f"), None),
            row(sc, f"bare Celery no-op tasks per second, same broker and worker ({db})", "-",
                summarize([r.rate for r in b], ".0f"), None),
            row(sc, f"completion notifications received on the channel layer / jobs ({db})", "all",
                f"{notified} / {total}", notified == total and _all_ok(p, "succeeded")),
            row(sc, f"issue 15 §3: Runboard rate / bare rate, admission control on ({db})",
                f">= {TARGET_RATIO_15[res['database']]}", f"{summarize(pairs, '.2f')}; {once_text}",
                statistics.median(pairs) >= TARGET_RATIO_15[res["database"]] and once_ok),
            row(sc, f"each job created, run, finished, notified and pushed exactly once ({db})",
                "all equal the jobs", once_text, once_ok),
        ]  # fmt: skip
    return out


NOTES = [
    "### Why Runboard's rate is lower, and what would raise it",
    "",
    "The rate is bounded by CPU and database round trips per job: the submitting process, the worker's "
    "pool processes, Redis, the database and the listener share 2 cores (and, in the issue 15 session, "
    "other helpers' runs: load average 4-11, so the absolute rates here are low and noisy; the ratios are "
    "taken within each pair). A bare task's whole run is the TaskResult write; a zero-step job, with "
    "admission control on (the default), is 22 SQL statements in a pool process on SQLite, 23 on "
    "PostgreSQL (tests/jobs/test_statements_per_job.py holds the bound): the paused-controls check before "
    "the start (1); the start (BEGIN, read and lock the job and its owner, count the owner's running jobs, "
    "the conditional UPDATE, COMMIT: 5); the finish (BEGIN, the conditional UPDATE, read back, the owner's "
    "preferences and push subscription, the unread counter upsert, the Notification INSERT, COMMIT: 7); "
    '"anything lined up? anything queued?" (1); and, since nothing is lined up (one owner at the cap of '
    "2 with 2 pool processes), the admission pass at once (BEGIN, the advisory lock on PostgreSQL, paused "
    "controls, admitted jobs, waiting jobs, the UPDATE admitting the owner's next job, the UPDATE noting "
    "the one after it, the read-back for their pushes, COMMIT: 8-9). The profile (`--profile`) puts most "
    "of the worker's samples in Django's ORM and psycopg waiting on the server, about half of a job's "
    "run under the admission pass.",
    "",
    'Issue 15 §3 (this session): the end of a job asks "anything lined up in its queue?" and "anything '
    "queued at all?\" in one statement (was two: 23 -> 22 in a pool process); a launch behind its owner's "
    'waiting job asks "older job waiting?" and "anything paused?" in one (5 -> 4 statements); the '
    "reporter no longer pushes a job's first `progress()` on the heels of the `running` push (its push "
    "interval starts at the start: three group sends and a payload less per job, a zero-step job pushes "
    "only its state changes); and the publisher sends every event one commit produced as one batch, one "
    "pipelined write per Redis shard instead of a PUBLISH round trip per group (a zero-step job: 13 group "
    "sends in 3 pipelines, was 16 round trips). In one process on PostgreSQL (200 zero-step jobs run "
    "back to back, old and new code alternating, twice each): CPU per job's run 31.3-38.5 ms -> "
    "24.1-30.2 ms, per launch 6.0 ms -> 3.7-4.3 ms.",
    "",
    "What would help further, outside this session's files (jobs/states.py, notifications/inbox.py, "
    "jobs/migrations): (1) the paused-controls check could ride in `job_start`'s locking read (one "
    "statement a job); (2) the final transition's read-back could carry the owner's notification "
    "preferences and subscription flag (one statement); (3) the owner's running count could be a "
    "subquery of the start's locking read (one statement); (4) the admission pass after a finish could "
    "run inside the finish's transaction (its BEGIN, COMMIT and one fsync on PostgreSQL), at the price of "
    "holding the admission lock while the finish's row locks are held and of a failed pass failing the "
    "finish unless it takes a savepoint (which costs the two statements back); (5) django-celery-results' "
    "TaskResult is part of the design (design.md §3.6: the admin links it; tests check it), so "
    "`ignore_result` is not an option; (6) `DATABASE_CONN_MAX_AGE` does not reach workers: Celery's Django "
    "fixup closes every connection before and after each task (unless `CELERY_DB_REUSE_MAX`), so each task "
    "reconnects; both sides pay it, so reusing connections would make both faster and the ratio lower. Jobs "
    "are rarely zero-step: against a job of a few seconds this overhead is under 1 %.",
    "",
]


# --- Main ---------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, env: BenchEnvironment) -> dict[str, Any]:
    from dashboard.celery import app  # noqa: F401  (binds the shared task to the project's app)

    bench = Bench(args, env)
    rounds: list[Round] = []
    pairs: list[float] = []
    started = time.monotonic()
    profile = None
    try:
        bench.worker.wait_for_log(" ready.", timeout=60)
        bench.run("project", 0, args.warmup)
        bench.run("bare", 0, args.warmup)
        for pair in range(args.pairs):
            order = ("project", "bare") if pair % 2 == 0 else ("bare", "project")
            got = {side: bench.run(side, pair + 1, args.jobs) for side in order}
            rounds += [got[side] for side in order]
            pairs.append(got["project"].rate / got["bare"].rate)
        elapsed = time.monotonic() - started
        if args.profile:
            profile = profile_round(bench, args.jobs, env.var_dir / "profile")
            if "tables" in profile and args.keep_profile:
                dest = Path(args.keep_profile)
                dest.mkdir(parents=True, exist_ok=True)
                for f in (env.var_dir / "profile").glob("*.txt"):
                    shutil.copy(f, dest / f.name)
        retries = bench.worker.log().count("Retry in")
    finally:
        bench.stop()
    return {
        "rounds": rounds,
        "pairs": pairs,
        "elapsed": elapsed,
        "profile": profile,
        "retries": retries,
        "listener_errors": bench.listener.errors,
    }


def run_child(args: argparse.Namespace, database: str, out: Path) -> dict[str, Any]:
    """Measure on one database in a fresh process (Django is set up once per process)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--database", database, "--child-out", str(out),
            "--jobs", str(args.jobs), "--pairs", str(args.pairs), "--warmup", str(args.warmup),
            "--concurrency", str(args.concurrency)]  # fmt: skip
    if args.profile:
        argv.append("--profile")
    if args.keep_profile:
        argv += ["--keep-profile", str(Path(args.keep_profile) / database)]
    subprocess.run(argv, cwd=ROOT, check=True)
    data = json.loads(out.read_text())
    data["rounds"] = [Round(**r) for r in data["rounds"]]
    if data.get("profile") and "round" in data["profile"]:
        data["profile"]["round"] = Round(**data["profile"]["round"])
    return data


def child(args: argparse.Namespace) -> None:
    os.environ["RUNBOARD_STALE_AFTER"] = "600"
    load_before = os.getloadavg()
    with bench_environment(database=args.database) as env:
        results = measure(args, env)
    results.update(database=args.database, load_before=load_before, load_after=os.getloadavg())
    results["rounds"] = [asdict(r) for r in results["rounds"]]
    if results.get("profile") and "round" in results["profile"]:
        results["profile"]["round"] = asdict(results["profile"]["round"])
    Path(args.child_out).write_text(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs (and tasks) per round")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of rounds (project + bare)")
    parser.add_argument("--warmup", type=int, default=50, help="jobs in each warm-up round")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--profile", action="store_true", help="add a project round under py-spy")
    parser.add_argument("--keep-profile", help="copy py-spy's raw output to this directory")
    parser.add_argument("--no-write", action="store_true", help="print the results, don't write the file")
    parser.add_argument(
        "--database", default="postgresql,sqlite",
        help="comma-separated: postgresql (a throwaway DB on the server `make test` uses, as in "
        "production; skipped if none answers), sqlite (a throwaway file)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 jobs, 2 pairs")
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.pairs, args.warmup = 200, 2, 20
    if args.child_out:
        child(args)
        return

    per_db: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="throughput-bench-") as tmp:
        for database in [d.strip() for d in args.database.split(",") if d.strip()]:
            if database not in DB_NAMES:
                parser.error(f"unknown database {database!r}")
            if database == "postgresql" and postgres_server_url() is None:
                per_db.append({"database": database, "skipped": "no PostgreSQL server answers"})
                continue
            print(f"--- on {DB_NAMES[database]}", file=sys.stderr)
            per_db.append(run_child(args, database, Path(tmp) / f"{database}.json"))
    sections = []
    for res in per_db:
        title = f"### On {DB_NAMES[res['database']]}"
        if "skipped" in res:
            sections += [title, "", f"Not measured: {res['skipped']}.", ""]
        else:
            sections += [title, "", report(args, res["rounds"], res["pairs"], res), ""]
    body = "\n".join([INTRO, "", *sections, *NOTES])
    print(body)
    if not args.no_write:
        path = write_results(
            "throughput",
            "Job throughput: Runboard jobs vs bare Celery tasks",
            body,
            summary=summary(args, per_db),
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
