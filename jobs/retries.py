"""Automatic retries (issue 14 §3): each kind declares a ``RetryPolicy``; a failed attempt whose
error the policy names goes back to the queue with an exponential backoff, and the job ends
(and its owner is notified) only once, with its final outcome.

The schedule is Oban's and Sidekiq's: attempt n+1 waits ``base * factor ** (n - 1)`` seconds,
at most ``max_delay``, spread by ``jitter`` (a fraction either way, so jobs that failed together
do not all come back in the same second: AWS Architecture Blog, "Exponential Backoff And
Jitter", 2015). Only errors the kind names are retried: the kind states that such an error left
nothing half done. A kind with side effects it cannot repeat (a broadcast) declares none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# A job is attempted at most this many times, whatever a kind declares: the job's attempt
# history (``Job.attempt_errors``) and its payload's timeline stay bounded.
MAX_ATTEMPTS_LIMIT = 10


class TransientError(Exception):
    """Raised by a kind for a failure worth another attempt (a service that timed out, a file
    on shared storage not there yet). Every policy that retries anything retries it."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind's failed attempts are retried.

    ``max_attempts``: attempts in all (1: never retried; at most MAX_ATTEMPTS_LIMIT).
    ``base``, ``max_delay``: seconds. ``factor``: growth per attempt. ``jitter``: a fraction in
    [0, 1): each delay is drawn uniformly within ±jitter of its nominal value.
    ``retry_on``: the exception classes retried (subclasses too); ``give_up_on``: exceptions
    never retried even if ``retry_on`` names a base class of theirs (e.g. FileNotFoundError
    under OSError). Raises ValueError for a policy outside these ranges.
    """

    max_attempts: int = 1
    base: float = 30.0
    factor: float = 2.0
    max_delay: float = 600.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (TransientError,)
    give_up_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be 1..{MAX_ATTEMPTS_LIMIT}, not {self.max_attempts}.")
        if self.base < 0 or self.max_delay < self.base or self.factor < 1:
            raise ValueError("Need 0 <= base <= max_delay and factor >= 1.")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1).")

    @property
    def retries(self) -> bool:
        return self.max_attempts > 1

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is one the policy retries (the attempt count aside)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.give_up_on)

    def nominal_delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt`` (1-based), without jitter."""
        return min(self.max_delay, self.base * self.factor ** max(0, attempt - 1))

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds before the attempt after ``attempt``, jittered (never negative)."""
        nominal = self.nominal_delay(attempt)
        spread = nominal * self.jitter
        draw = (rng or random).uniform(-spread, spread)
        return max(0.0, round(nominal + draw, 1))


NO_RETRY = RetryPolicy()
