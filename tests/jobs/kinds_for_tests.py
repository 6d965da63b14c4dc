"""Job kinds that exist only in the test suite: registered through RUNBOARD_KIND_MODULES, in the
test process and in the worker and web processes it starts, with nothing else changed."""

import os
import time

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, ConfigDict, Field

from jobs.kinds.registry import JobKind, register


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Test: sleep")

    seconds: float = Field(1.0, ge=0, le=60, title="Seconds")
    ignore_soft_limit: bool = Field(False, title="Keep going past the soft time limit")


def sleep(ctx, params: SleepParams) -> dict:
    ctx.log(f"pid {os.getpid()}")
    ctx.progress(0, 1, "sleeping")
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.02)
        except SoftTimeLimitExceeded:
            if not params.ignore_soft_limit:
                raise
    return {"slept": params.seconds}


register(
    JobKind(
        name="test_sleep",
        title="Test: sleep",
        description="Sleeps; a soft limit of 1 s and a hard limit of 3 s.",
        params_model=SleepParams,
        run=sleep,
        soft_time_limit=1,
        time_limit=3,
    )
)


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Test: echo")

    text: str = Field("hello", max_length=500, title="Text to echo")


def echo(ctx, params: EchoParams) -> dict:
    # Reflects user text everywhere a job shows text: message, log, error, result.
    ctx.progress(1, 1, params.text)
    ctx.log(params.text)
    if params.text.startswith("fail:"):
        raise RuntimeError(params.text)
    return {"echo": params.text}


register(
    JobKind(
        name="test_echo",
        title="Test: echo",
        description="Returns its text; proves a kind registered anywhere appears everywhere.",
        params_model=EchoParams,
        run=echo,
    )
)


class BlockParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Test: block")

    seconds: float = Field(5.0, ge=0, le=120, title="Seconds")


def block(ctx, params: BlockParams) -> dict:
    # Like test_sleep with generous limits: for tests that act on a job while it runs.
    ctx.log(f"pid {os.getpid()}")
    ctx.progress(0, 1, "blocking")
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.02)
    return {"blocked": params.seconds}


register(
    JobKind(
        name="test_block",
        title="Test: block",
        description="Runs for N seconds (stops early when cancelled); limits of 60 s and 90 s.",
        params_model=BlockParams,
        run=block,
        soft_time_limit=60,
        time_limit=90,
    )
)
