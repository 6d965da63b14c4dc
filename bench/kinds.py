"""What benchmarks run on the real worker, registered through RUNBOARD_KIND_MODULES
(bench.stack sets it to ``bench.kinds``).

- ``bench_progress``: a real job kind (the real task, reporter, services and push path) that
  calls ``ctx.progress()`` as fast as it can, once per ``step_ms`` (a sleep between calls), or
  ``rate`` times a second on an absolute schedule (a late call is made at once, not skipped: the
  rate holds under load), with the wall-clock time of the call (``time.time_ns()``) as the progress
  message, so a client can tell how old the value it displays is. With ``trace_path`` it also
  writes the timestamp of every call it made (one per line, in order; call i is line i) to that
  file when it ends, so a benchmark can tell what coalescing dropped. Its result carries
  ``ended_ns``: when ``run`` returned.
- ``bench.celery_progress_job``: the celery-progress baseline, a bound Celery task reporting
  through celery-progress's ``ProgressRecorder`` (polling; ``update_state`` into the result
  backend) or ``WebSocketProgressRecorder`` (plus a ``group_send`` per update), the description
  carrying the same timestamp.
"""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task
from pydantic import BaseModel, ConfigDict, Field

from jobs.kinds.registry import JobKind, register


class BenchProgressParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Benchmark: report progress")

    seconds: float = Field(1.0, gt=0, le=600, title="Seconds")
    step_ms: float = Field(0.0, ge=0, le=10_000, title="Milliseconds per step (0: as fast as it can)")
    rate: float = Field(0.0, ge=0, le=100_000, title="Calls per second, absolute schedule (0: unused)")
    trace_path: str = Field("", max_length=4096, title="File to write every call's timestamp to")


def bench_progress(ctx: Any, params: BenchProgressParams) -> dict[str, int]:
    progress = ctx.progress
    deadline = time.monotonic() + params.seconds
    i = 0
    produced: list[int] | None = [] if params.trace_path else None
    if params.rate > 0:
        # Absolute schedule (as bench.stack.Pacer): sleeping a fixed step after each call would
        # run below the rate by the call's own cost and every oversleep.
        start = time.monotonic()
        while True:
            due = start + i / params.rate
            if due >= deadline:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            i += 1
            ts = time.time_ns()
            progress(i, None, str(ts))
            if produced is not None:
                produced.append(ts)
    elif params.step_ms > 0:
        step = params.step_ms / 1000
        while time.monotonic() < deadline:
            time.sleep(step)
            i += 1
            progress(i, None, str(time.time_ns()))
    else:
        while True:
            i += 1
            progress(i, None, str(time.time_ns()))
            if not i & 255 and time.monotonic() >= deadline:
                break
    ended_ns = time.time_ns()
    if produced is not None:
        with open(params.trace_path, "w") as out:
            out.write("\n".join(map(str, produced)))
    return {"steps": i, "ended_ns": ended_ns}


register(
    JobKind(
        name="bench_progress",
        title="Benchmark: report progress",
        description="Calls ctx.progress() with a timestamp as fast as it can, or every step_ms.",
        params_model=BenchProgressParams,
        run=bench_progress,
        soft_time_limit=660,
        time_limit=720,
    )
)


@shared_task(bind=True, name="bench.celery_progress_job")
def celery_progress_job(self: Any, seconds: float, step_ms: float = 0.0, websocket: bool = False) -> dict:
    if websocket:
        from celery_progress.websockets.backend import WebSocketProgressRecorder as Recorder
    else:
        from celery_progress.backend import ProgressRecorder as Recorder
    recorder = Recorder(self)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        if step_ms > 0:
            time.sleep(step_ms / 1000)
        i += 1
        recorder.set_progress(i, 1_000_000_000, str(time.time_ns()))
    return {"steps": i, "ended_ns": time.time_ns()}
