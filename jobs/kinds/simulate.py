"""Simulated work: N steps of D ms each, optionally failing at a chosen step. For demos and benchmarks."""

import time

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from jobs.context import KindContext
from jobs.retries import RetryPolicy, TransientError

from .registry import JobKind, register

SOFT_TIME_LIMIT = 3000
MAX_DURATION_MS = (SOFT_TIME_LIMIT - 60) * 1000


class SimulateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Simulated work")

    steps: int = Field(10, ge=0, le=100_000, title="Steps", description="How many steps to run.")
    step_ms: int = Field(
        200, ge=0, le=60_000, title="Milliseconds per step", description="How long each step takes."
    )
    fail_at_step: int | None = Field(
        None,
        ge=1,
        title="Fail at step",
        description="Raise an error when this step starts, to see a failure.",
    )

    fail_attempts: int = Field(
        0,
        ge=0,
        le=5,
        title="Fail the first attempts",
        description=(
            "Fail this many attempts with a transient error (retried: up to 3 attempts, "
            "10 s then 20 s apart), to see automatic retries."
        ),
    )

    @field_validator("step_ms")
    @classmethod
    def fits_time_limit(cls, step_ms: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and steps * step_ms > MAX_DURATION_MS:
            raise ValueError(
                f"steps x step_ms is {steps * step_ms / 1000:g} s; the limit is {MAX_DURATION_MS // 1000} s."
            )
        return step_ms

    @field_validator("fail_at_step")
    @classmethod
    def fail_step_within_range(cls, fail_at_step: int | None, info: ValidationInfo) -> int | None:
        steps = info.data.get("steps")
        if fail_at_step is not None and steps is not None and fail_at_step > steps:
            raise ValueError(f"must not exceed steps ({steps}).")
        return fail_at_step


class SimulatedFailure(RuntimeError):
    """Fail at step N: for good (not retried)."""


class SimulatedTransientFailure(TransientError):
    """Fail the first attempts: retried by the kind's policy."""


# Simulated work is safe to repeat (it only sleeps): transient failures are retried.
RETRY = RetryPolicy(max_attempts=3, base=10, factor=2, max_delay=60, jitter=0.1)


def run(ctx: KindContext, params: SimulateParams) -> dict[str, int]:
    ctx.progress(0, params.steps, "Starting")
    if ctx.attempt <= params.fail_attempts:
        ctx.log(f"Attempt {ctx.attempt}: failing on purpose (fail_attempts={params.fail_attempts})")
        raise SimulatedTransientFailure(f"Simulated transient failure on attempt {ctx.attempt}")
    for step in range(1, params.steps + 1):
        if params.fail_at_step == step:
            raise SimulatedFailure(f"Simulated failure at step {step} of {params.steps}")
        if ctx.cancelled:
            ctx.log(f"Cancelled before step {step}")
            break
        time.sleep(params.step_ms / 1000)
        ctx.progress(step, params.steps, f"Step {step} of {params.steps}")
        ctx.log(f"Finished step {step} of {params.steps}")
    return {"steps": params.steps}


def label(params: SimulateParams) -> str:
    """ "10 steps of 200 ms", and what it was told to fail: "fails at step 3", "fails 2 attempts"."""
    text = f"{params.steps:,} step{'' if params.steps == 1 else 's'} of {params.step_ms:,} ms"
    if params.fail_at_step is not None:
        text += f", fails at step {params.fail_at_step:,}"
    if params.fail_attempts:
        text += f", fails {params.fail_attempts} attempt{'s' if params.fail_attempts > 1 else ''}"
    return text


register(
    JobKind(
        name="simulate",
        unit="steps",
        title="Simulated work",
        description="Runs N steps of D milliseconds each; optionally fails at a given step.",
        params_model=SimulateParams,
        run=run,
        soft_time_limit=SOFT_TIME_LIMIT,
        time_limit=SOFT_TIME_LIMIT + 60,
        retry=RETRY,
        label=label,
    )
)
