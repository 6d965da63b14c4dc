"""What benchmarks run on the real worker, registered through RUNBOARD_KIND_MODULES
(bench.stack sets it to ``bench.kinds``).

- ``bench_progress``: a real job kind (the real task, reporter, services and push path) that
  calls ``ctx.progress()`` as fast as it can, or once per ``step_ms``, with the wall-clock time of
  the call (``time.time_ns()``) as the progress message, so a client can tell how old the value
  it displays is. Its result carries ``ended_ns``: when ``run`` returned.
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


def bench_progress(ctx: Any, params: BenchProgressParams) -> dict[str, int]:
    progress = ctx.progress
    deadline = time.monotonic() + params.seconds
    i = 0
    if params.step_ms > 0:
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
    return {"steps": i, "ended_ns": time.time_ns()}


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
