"""Fair admission with real workers (issue 14 §1): with the product's defaults (2 running jobs per
user, 2 worker slots), a user with nothing running starts at the next free slot, whatever another
user has queued; with one worker process or two.

Before admission control the broker's line was first come, first served: in the issue's example
(8 jobs of 20 x 250 ms, then one 1-step job of another user a second later) the second user's job
started 19.5 s after its launch, after all of the first user's."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from jobs.models import Job
from tests.system.stack import Stack, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]

DEFAULTS = {"RUNBOARD_MAX_RUNNING_PER_USER": "2", "RUNBOARD_MAX_ADMITTED": "0"}
STEP_MS = 250
STEPS = 8  # 2 s a job


def _launch_and_measure(stack: Stack, alice: Any, bob: Any) -> tuple[list[Job], Job]:
    alices = [stack.launch(alice, "simulate", {"steps": STEPS, "step_ms": STEP_MS}) for _ in range(6)]
    time.sleep(1.0)
    bobs = stack.launch(bob, "simulate", {"steps": 1, "step_ms": 0})
    wait_until(
        lambda: Job.objects.filter(pk__in=[*alices, bobs], finished_at__isnull=True).count() == 0,
        timeout=60,
        message=stack.logs(),
    )
    return [Job.objects.get(pk=pk) for pk in alices], Job.objects.get(pk=bobs)


def _assert_fair(alices: list[Job], bobs: Job) -> None:
    assert all(job.state == "succeeded" for job in [*alices, bobs])
    wait = (bobs.started_at - bobs.created_at).total_seconds()
    print(f"bob's job waited {wait:.2f} s for a worker")
    # The next slots to free up were Bob's: at most Alice's one job already in the broker's line
    # (RUNBOARD_ADMIT_AHEAD_PER_USER=1, docs/operations.md) starts before his, so he started
    # before every other one of Alice's jobs still waiting when he launched.
    later = sorted(job.started_at for job in alices)[3:]
    assert bobs.started_at < min(later), (wait, later)
    assert wait < STEPS * STEP_MS / 1000 + 1.0
    # And Alice never had more than her 2 running at once, across processes.
    spans = [(job.started_at, job.finished_at) for job in alices]
    for a, b, c in itertools.combinations(spans, 3):
        assert not (max(a[0], b[0], c[0]) < min(a[1], b[1], c[1])), "three of Alice's jobs ran at once"


def test_a_user_with_nothing_running_starts_at_the_next_free_slot(stacks, make_user):
    stack = stacks(env=DEFAULTS, concurrency=2)
    alice, bob = make_user(), make_user()
    _assert_fair(*_launch_and_measure(stack, alice, bob))


def test_fair_admission_holds_with_two_worker_processes(stacks, make_user):
    stack = stacks(env=DEFAULTS, concurrency=1, worker=True)
    stack.start_worker()  # a second process: 2 slots in all
    alice, bob = make_user(), make_user()
    _assert_fair(*_launch_and_measure(stack, alice, bob))
