"""Automatic retries (issue 14 §3): a kind's policy, backoff with jitter, attempts shown live and
grouped, one notification for the final outcome."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from dashboard.celery import app as celery_app
from jobs import launch
from jobs.admission import jobs_admit
from jobs.kinds.registry import JobKind, get_kind, register
from jobs.models import Job, JobState
from jobs.retries import NO_RETRY, RetryPolicy, TransientError
from notifications.inbox import preference_update
from notifications.models import Notification
from tests.jobs.kinds_for_tests import SleepParams, sleep
from tests.jobs.live import signed_in_socket, until_final, wait_for_job

# --- The policy ----------------------------------------------------------------------------------


def test_backoff_grows_exponentially_from_the_base_and_stops_at_the_cap():
    policy = RetryPolicy(max_attempts=6, base=30, factor=2, max_delay=200, jitter=0)
    assert [policy.delay(attempt) for attempt in range(1, 6)] == [30, 60, 120, 200, 200]


def test_jitter_spreads_each_delay_within_its_fraction_either_way():
    policy = RetryPolicy(max_attempts=3, base=30, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(1, rng=rng) for _ in range(2000)]
    assert 27.0 <= min(delays) < 27.5 and 32.5 < max(delays) <= 33.0
    assert len(set(delays)) > 40  # spread, not one value: jobs that failed together come back apart


def test_only_the_errors_a_policy_names_are_retried_and_give_up_on_wins():
    policy = RetryPolicy(max_attempts=3, retry_on=(TransientError, OSError), give_up_on=(FileNotFoundError,))
    assert policy.retryable(TransientError("x"))
    assert policy.retryable(ConnectionResetError())  # an OSError
    assert not policy.retryable(FileNotFoundError())
    assert not policy.retryable(ValueError("bad data"))
    assert not NO_RETRY.retries


@pytest.mark.parametrize(
    "fields",
    [{"max_attempts": 0}, {"max_attempts": 11}, {"base": -1}, {"factor": 0.5}, {"jitter": 1.0},
     {"base": 100, "max_delay": 10}],
)  # fmt: skip
def test_a_policy_outside_its_ranges_is_refused(fields):
    with pytest.raises(ValueError):
        RetryPolicy(**fields)


def test_a_parallel_kind_cannot_declare_retries():
    with pytest.raises(ImproperlyConfigured, match="parallel"):
        register(
            JobKind(
                name="test_parallel_retrying",
                title="x",
                description="x",
                params_model=SleepParams,
                run=sleep,
                run_chunk=lambda ctx, params, chunk: None,
                combine=lambda params, results: None,
                retry=RetryPolicy(max_attempts=2),
            )
        )


def test_each_shipped_kind_declares_its_policy_and_the_broadcast_retries_nothing():
    assert get_kind("broadcast").retry is NO_RETRY  # not idempotent: a retry would send it twice
    assert get_kind("simulate").retry.max_attempts == 3
    assert get_kind("csv_profile").retry.retryable(OSError("stale NFS handle"))
    assert not get_kind("csv_profile").retry.retryable(FileNotFoundError())
    assert get_kind("export_jobs").retry.retries
    assert not get_kind("primes").retry.retries  # parallel: a failed chunk ends its job


# --- Admission leaves a job alone while it backs off ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_backing_off_is_not_admitted_before_its_retry_time_and_is_after(
    make_user, settings, monkeypatch
):
    sent: list[str] = []  # no message reaches a real worker (a session's worker would run the job)
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, **options: sent.append(name))
    user = make_user()
    job = launch.job_create(owner=user, kind="test_flaky", params={})
    Job.objects.filter(pk=job.pk).update(
        admitted_at=None, retry_at=timezone.now() + timedelta(seconds=60), wait_code="retry"
    )
    assert jobs_admit() == 0
    assert Job.objects.get(pk=job.pk).admitted_at is None
    # Not in line: another job of the same user and kind goes first, it does not wait behind it.
    other = launch.job_create(owner=user, kind="test_flaky", params={})
    assert Job.objects.get(pk=other.pk).admitted_at is not None
    Job.objects.filter(pk=job.pk).update(retry_at=timezone.now() - timedelta(seconds=1))
    Job.objects.filter(pk=other.pk).update(state=JobState.CANCELLED, finished_at=timezone.now())
    assert jobs_admit() == 1
    assert Job.objects.get(pk=job.pk).admitted_at is not None


# --- On the real worker ---------------------------------------------------------------------------

live = pytest.mark.django_db(transaction=True)


@live
def test_a_failed_attempt_is_shown_live_with_its_retry_and_the_owner_is_notified_once_at_the_end(
    celery_worker, housekeeping_worker, ws_connect, make_user
):
    user = make_user()
    ws = signed_in_socket(ws_connect, user)
    job = launch.job_create(owner=user, kind="test_flaky", params={"fail_attempts": 2})

    updates = until_final(ws, job.id, timeout=30)
    final = updates[-1]
    assert final["state"] == "succeeded" and final["attempt"] == 3 and final["max_attempts"] == 3
    assert final["error"] == "" and final["retry_at"] is None
    retrying = [u for u in updates if u["state"] == "queued" and u["wait_code"] == "retry"]
    reasons = [u["wait_reason"] for u in retrying]
    assert "Attempt 1 of 3 failed: service unavailable on attempt 1 — retrying in 0.3 s." in reasons
    assert "Attempt 2 of 3 failed: service unavailable on attempt 2 — retrying in 0.6 s." in reasons
    assert all(u["retry_at"] for u in retrying)
    # The attempts, grouped on the one job: two "retrying" steps in its timeline, their errors at
    # its result_url.
    assert [step["state"] for step in final["timeline"]] == ["queued", "retrying", "retrying", "running",
                                                              "succeeded"]  # fmt: skip
    client = Client()
    client.force_login(user)
    body = client.get(final["result_url"]).json()
    assert [(a["attempt"], a["error"], a["retry_in"]) for a in body["attempts"]] == [
        (1, "service unavailable on attempt 1", 0.3),
        (2, "service unavailable on attempt 2", 0.6),
    ]
    stored = Job.objects.get(pk=job.pk)
    # Backoff kept: the third attempt started no sooner than 0.3 + 0.6 s after the first failed.
    first_failed = datetime.fromisoformat(stored.attempt_errors[0]["failed_at"])
    assert (stored.started_at - first_failed).total_seconds() >= 0.9
    # One notification, for the final outcome, saying it took three attempts.
    titles = list(Notification.objects.filter(recipient=user).values_list("title", flat=True))
    assert titles == ["Test: flaky finished (attempt 3 of 3)"]


@live
def test_the_last_attempt_failing_fails_the_job_once_and_attempt_notifications_are_opt_in(
    celery_worker, housekeeping_worker, make_user
):
    quiet, keen = make_user(), make_user()
    preference_update(user_id=keen.pk, job_attempt_failed=True)
    jobs = [
        launch.job_create(owner=user, kind="test_flaky", params={"fail_attempts": 9})
        for user in (quiet, keen)
    ]
    for job in jobs:
        final = wait_for_job(job.id, lambda j: j.state == JobState.FAILED, timeout=30)
        assert final.attempts == 3 and final.error == "service unavailable on attempt 3"
        assert len(final.attempt_errors) == 2
    assert list(Notification.objects.filter(recipient=quiet).values_list("title", flat=True)) == [
        "Test: flaky failed after 3 attempts"
    ]
    assert sorted(Notification.objects.filter(recipient=keen).values_list("title", flat=True)) == [
        "Test: flaky failed after 3 attempts",
        "Test: flaky: attempt 1 of 3 failed",
        "Test: flaky: attempt 2 of 3 failed",
    ]


@live
def test_an_error_the_policy_does_not_name_fails_the_job_at_its_first_attempt(
    celery_worker, housekeeping_worker, make_user
):
    user = make_user()
    job = launch.job_create(owner=user, kind="test_flaky", params={"for_good": True})
    final = wait_for_job(job.id, lambda j: j.is_final, timeout=30)
    assert (final.state, final.attempts, final.attempt_errors) == (JobState.FAILED, 1, [])
    assert Notification.objects.get(recipient=user).title == "Test: flaky failed"


@live
def test_a_job_cancelled_while_it_backs_off_never_runs_again(celery_worker, housekeeping_worker, make_user):
    user = make_user()
    job = launch.job_create(owner=user, kind="test_flaky", params={"fail_attempts": 9})
    wait_for_job(job.id, lambda j: j.wait_code == "retry", timeout=30)
    launch.job_cancel(user=user, job_id=job.id)
    cancelled = wait_for_job(job.id, lambda j: j.is_final, timeout=5)
    assert cancelled.state == JobState.CANCELLED
    time.sleep(1.5)  # past every backoff of the policy
    assert Job.objects.get(pk=job.pk).attempts == 1
