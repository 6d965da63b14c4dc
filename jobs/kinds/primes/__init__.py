"""Count the primes below N with a segmented sieve, split into chunks that run in parallel."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.context import KindContext

from ..registry import JobKind, register
from .sieve import SieveStopped, count_primes_in_range, split_range

# Below this, one chunk is faster than dispatching several.
PARALLEL_FROM = 2_000_000


class PrimesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Count primes")

    n: int = Field(10_000_000, ge=2, le=10_000_000_000, title="Below N", description="Count primes p < N.")
    chunks: int = Field(
        4, ge=1, le=64, title="Chunks",
        description="Pieces that run in parallel on the workers (one below N = 2,000,000: splitting "
        "costs more there).",
    )  # fmt: skip


def run(ctx: KindContext, params: PrimesParams) -> Any:
    parts = params.chunks if params.n >= PARALLEL_FROM else 1
    ranges = split_range(params.n, parts)
    ctx.progress(0, params.n, f"Sieving in {len(ranges)} chunks")
    ctx.log(f"Split [0, {params.n:,}) into {len(ranges)} chunks")
    return ctx.split([{"lo": lo, "hi": hi} for lo, hi in ranges])


def run_chunk(ctx: KindContext, params: PrimesParams, chunk: dict[str, int]) -> int | None:
    lo, hi = chunk["lo"], chunk["hi"]
    done = 0

    def advance(delta: int) -> None:
        nonlocal done
        done += delta
        ctx.progress(done, hi - lo)

    try:
        count = count_primes_in_range(lo, hi, progress=advance, should_stop=lambda: ctx.cancelled)
    except SieveStopped:
        return None
    ctx.log(f"[{lo:,}, {hi:,}): {count:,} primes")
    return count


def combine(params: PrimesParams, counts: list[int]) -> dict[str, int]:
    return {"n": params.n, "primes": sum(counts), "chunks": len(counts)}


def label(params: PrimesParams) -> str:
    """ "Below 10,000,000 in 4 chunks" (one chunk below PARALLEL_FROM, as run() splits it)."""
    parts = params.chunks if params.n >= PARALLEL_FROM else 1
    return f"Below {params.n:,} in {parts} chunk{'s' if parts > 1 else ''}"


register(
    JobKind(
        name="primes",
        unit="numbers",
        title="Count primes",
        description="Counts the primes below N with a segmented sieve, in parallel chunks across workers.",
        params_model=PrimesParams,
        run=run,
        run_chunk=run_chunk,
        combine=combine,
        soft_time_limit=1800,
        time_limit=1860,
        rerun_safe=True,
        label=label,
    )
)
