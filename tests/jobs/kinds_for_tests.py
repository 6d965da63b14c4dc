"""Job kinds that exist only in the test suite: registered through RUNBOARD_KIND_MODULES, in the
test process and in the worker and web processes it starts, with nothing else changed."""

import os
import time

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, ConfigDict, Field

from jobs.kinds.registry import JobKind, register
from jobs.retries import RetryPolicy, TransientError


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


register(
    JobKind(
        name="test_rerun",
        title="Test: re-runnable block",
        description="test_block for a kind that is safe to run again: a lost worker's job is re-queued.",
        params_model=BlockParams,
        run=block,
        soft_time_limit=60,
        time_limit=90,
        rerun_safe=True,
    )
)


class ChattyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Test: chatty")

    reports: int = Field(100_000, ge=1, le=1_000_000, title="Progress reports")
    seconds: float = Field(0, ge=0, le=60, title="Spread over about this many seconds")


def chatty(ctx, params: ChattyParams) -> dict:
    # Reports progress in a tight loop (pausing every 1,000 reports to spread them out): the
    # reporter coalesces what reaches the database and the sockets.
    pause = params.seconds / max(1, params.reports // 1000)
    for done in range(1, params.reports + 1):
        ctx.progress(done, params.reports, f"report {done}")
        if pause and done % 1000 == 0:
            time.sleep(pause)
    return {"reports": params.reports}


register(
    JobKind(
        name="test_chatty",
        title="Test: chatty",
        description="Reports progress N times in a tight loop.",
        params_model=ChattyParams,
        run=chatty,
        soft_time_limit=60,
        time_limit=90,
    )
)


class FlakyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Test: flaky")

    fail_attempts: int = Field(0, ge=0, le=10, title="Attempts that fail")
    for_good: bool = Field(False, title="Fail with an error the policy does not retry")


class FlakyFailure(TransientError):
    pass


def flaky(ctx, params: FlakyParams) -> dict:
    ctx.progress(0, 1, f"attempt {ctx.attempt} of {ctx.max_attempts}")
    if params.for_good:
        raise ValueError(f"bad input on attempt {ctx.attempt}")
    if ctx.attempt <= params.fail_attempts:
        raise FlakyFailure(f"service unavailable on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


register(
    JobKind(
        name="test_flaky",
        title="Test: flaky",
        description="Fails its first N attempts with a transient error; retried 0.3 s, then 0.6 s later.",
        params_model=FlakyParams,
        run=flaky,
        soft_time_limit=60,
        time_limit=90,
        retry=RetryPolicy(max_attempts=3, base=0.3, factor=2, max_delay=5, jitter=0),
    )
)


register(
    JobKind(
        name="test_urgent",
        title="Test: urgent sleep",
        description="test_sleep with admission priority 5.",
        params_model=SleepParams,
        run=sleep,
        soft_time_limit=60,
        time_limit=90,
        priority=5,
    )
)
