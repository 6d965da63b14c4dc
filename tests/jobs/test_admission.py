"""Admission control (issue 14 §1, §5): the database is the queue of record; a fair scheduler hands
jobs to the broker within the per-user, per-kind and global limits; staff pause, resume and drain
kinds and queues. The broker is a recorder here; tests/system/test_admission_live.py runs workers."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard.celery import app as celery_app
from jobs import admission, launch, runner
from jobs.kinds import registry
from jobs.models import AdmissionAudit, Job, JobState
from jobs.permissions import Power
from jobs.selectors import job_payload
from tests.conftest import grant_powers
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: admission runs on commit


class Broker:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def send_task(self, name: str, args: Any = None, **options: Any) -> None:
        with self.lock:
            self.sent.append(args[0])


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    broker = Broker()
    monkeypatch.setattr(celery_app, "send_task", broker.send_task)
    return broker


@pytest.fixture(autouse=True)
def product_defaults(settings: Any) -> None:
    # The product's defaults (the test session runs its workers with a cap of 1).
    settings.RUNBOARD_MAX_RUNNING_PER_USER = 2
    settings.RUNBOARD_MAX_ADMITTED = 0
    settings.RUNBOARD_ADMIT_AHEAD_PER_USER = 1


def create(owner: Any, kind: str = "simulate") -> Job:
    return launch.job_create(owner=owner, kind=kind, params={"steps": 1}, rate_limit=False)


def fresh(job: Job) -> Job:
    return Job.objects.select_related("owner").get(pk=job.pk)


def test_a_user_with_nothing_running_is_next_in_line_whatever_another_user_queued(make_user, broker):
    alice, bob = make_user(), make_user()
    make_job(owner=alice, state=JobState.RUNNING)
    make_job(owner=alice, state=JobState.RUNNING)  # Alice at her cap of 2
    alices = [create(alice) for _ in range(6)]
    bobs = create(bob)

    # Alice's queued jobs were never handed to the broker: Bob's is the only message, next.
    assert broker.sent == [str(bobs.id)]
    payload = job_payload(fresh(bobs))
    assert (payload["wait_code"], payload["wait_reason"], payload["queue_position"]) == (
        "in_line",
        "1st in line for a worker.",
        1,
    )
    waiting = job_payload(fresh(alices[0]))
    assert (waiting["wait_code"], waiting["wait_reason"]) == (
        "user_limit",
        "2 of your jobs are running or next in line, limit 2.",
    )
    assert all(fresh(job).admitted_at is None for job in alices)


def test_one_job_of_each_user_lines_up_round_robin(make_user, broker):
    alice, bob, carol = make_user(), make_user(), make_user()
    alices = [create(alice) for _ in range(3)]
    bobs = [create(bob) for _ in range(2)]
    carols = create(carol)

    assert broker.sent == [str(alices[0].id), str(bobs[0].id), str(carols.id)]
    positions = [job_payload(fresh(job))["queue_position"] for job in (alices[0], bobs[0], carols)]
    assert positions == [1, 2, 3]
    assert job_payload(fresh(alices[1]))["wait_code"] == "behind_own"


def test_the_global_limit_holds_jobs_in_the_database_and_says_where_each_stands(make_user, broker, settings):
    settings.RUNBOARD_MAX_ADMITTED = 1
    alice, bob = make_user(), make_user()
    first = create(alice)
    second, third = create(alice), create(bob)

    assert broker.sent == [str(first.id)]
    # The next free slot goes to Bob (nothing of his admitted), then to Alice.
    assert (
        job_payload(fresh(third))["wait_reason"]
        == "Every slot is taken (1): 1st in line for the next free one."
    )
    assert job_payload(fresh(second))["wait_code"] == "behind_own"  # her first holds the slot

    Job.objects.filter(pk=first.pk).update(state=JobState.SUCCEEDED, finished_at=first.created_at)
    assert admission.jobs_admit() == 1
    assert broker.sent[-1] == str(third.id)


def launch_kind(owner: Any, kind: str) -> Job:
    return launch.job_create(owner=owner, kind=kind, params={}, rate_limit=False)


def free_the_slot(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, finished_at=job.created_at)
    admission.jobs_admit()


def test_a_users_higher_priority_job_is_admitted_before_their_older_ones(make_user, broker, settings):
    settings.RUNBOARD_MAX_ADMITTED = 1
    alice = make_user()
    first = launch_kind(alice, "test_sleep")  # takes the one slot
    older, urgent = launch_kind(alice, "test_sleep"), launch_kind(alice, "test_urgent")
    assert broker.sent == [str(first.id)]

    free_the_slot(first)

    assert broker.sent[-1] == str(urgent.id) and fresh(older).admitted_at is None


def test_among_users_equally_served_the_higher_priority_kind_goes_first(make_user, broker, settings):
    """Priority orders users with as many jobs admitted; it never beats fairness (a user with
    fewer jobs running is still first, see the round-robin tests)."""
    settings.RUNBOARD_MAX_ADMITTED = 1
    carol, bob, alice = make_user(), make_user(), make_user()
    first = launch_kind(carol, "test_sleep")
    bobs = launch_kind(bob, "test_sleep")  # has waited longer
    alices = launch_kind(alice, "test_urgent")
    assert (
        job_payload(fresh(alices))["wait_reason"]
        == "Every slot is taken (1): 1st in line for the next free one."
    )

    free_the_slot(first)

    assert broker.sent[-1] == str(alices.id) and fresh(bobs).admitted_at is None
    free_the_slot(alices)
    assert broker.sent[-1] == str(bobs.id)


def test_a_kinds_own_limit_is_respected(make_user, broker, settings, monkeypatch):
    settings.RUNBOARD_ADMIT_AHEAD_PER_USER = 5
    one_at_a_time = dataclasses.replace(registry.get_kind("simulate"), max_running_per_user=1)
    monkeypatch.setitem(registry._kinds, "simulate", one_at_a_time)
    alice = make_user()
    make_job(owner=alice, state=JobState.RUNNING)  # a simulate job
    job = create(alice)
    payload = job_payload(fresh(job))
    assert payload["wait_code"] == "kind_limit", payload
    assert payload["wait_reason"] == "1 of your 'Simulated work' jobs is running or next in line, limit 1."
    assert broker.sent == []


def test_a_paused_kinds_jobs_stay_queued_and_say_so_until_resumed(make_user, broker):
    staff, alice = make_user(operator=True), make_user()
    admission.admission_control_set(user=staff, action="pause", target="kind", name="simulate")
    job = create(alice)

    payload = job_payload(fresh(job))
    assert payload["state"] == "queued" and payload["wait_code"] == "paused"
    assert payload["wait_reason"].startswith("Paused")
    assert broker.sent == []

    admission.admission_control_set(user=staff, action="resume", target="kind", name="simulate")
    assert broker.sent == [str(job.id)]
    assert job_payload(fresh(job))["wait_code"] == "in_line"
    actions = list(AdmissionAudit.objects.order_by("at").values_list("action", "username", "name"))
    assert actions == [("pause", staff.username, "simulate"), ("resume", staff.username, "simulate")]


@pytest.mark.parametrize("target, name", [("kind", "simulate"), ("queue", "default")])
def test_a_job_already_lined_up_in_the_broker_when_paused_goes_back_to_waiting_not_running(
    make_user, broker, target, name
):
    """Issue 14: pausing held only jobs not yet admitted; one whose message was in the broker
    still started. Now the worker that takes its message puts it back to waiting, and a resume
    sends it again (once, with a new task id)."""
    staff, alice = make_user(operator=True), make_user()
    job = create(alice)
    lined_up = fresh(job)
    assert broker.sent == [str(job.id)] and lined_up.admitted_at is not None
    admission.admission_control_set(user=staff, action="pause", target=target, name=name)

    assert runner.job_run(job_id=job.id) is None  # the worker takes the message

    held = fresh(job)
    assert (held.state, held.attempts, held.admitted_at) == ("queued", 0, None)
    assert job_payload(held)["wait_code"] == "paused" and held.celery_task_id != lined_up.celery_task_id
    admission.admission_control_set(user=staff, action="resume", target=target, name=name)
    assert broker.sent == [str(job.id), str(job.id)]
    assert fresh(job).admitted_at is not None


def test_with_nothing_paused_a_start_pays_one_small_read_for_the_pause_check(make_user, broker):
    job = create(make_user())
    with CaptureQueriesContext(connection) as queries:
        assert admission.job_hold_if_paused(job_id=job.id) is False
    assert len(queries) == 1


def api(user: Any, body: dict[str, Any]) -> Any:
    client = Client()
    client.force_login(user)
    return client.post("/api/v1/ops/queues/control/", data=json.dumps(body), content_type="application/json")


def test_pausing_a_queue_takes_the_power_and_is_audited(make_user, broker):
    viewer = grant_powers(make_user(is_staff=True), Power.USE_OPERATOR_VIEW)
    controller = grant_powers(make_user(), Power.CONTROL_QUEUES, Power.USE_OPERATOR_VIEW)
    body = {"action": "drain", "target": "queue", "name": "default"}

    refused = api(viewer, body)
    assert refused.status_code == 403, refused.content
    assert not AdmissionAudit.objects.exists()

    answer = api(controller, body)
    assert answer.status_code == 200, answer.content
    queues = {q["queue"]: q for q in answer.json()["queues"]}
    assert queues["default"]["paused"] and queues["default"]["draining"] and queues["default"]["drained"]
    audit = AdmissionAudit.objects.get()
    assert (audit.user_id, audit.action, audit.target, audit.name) == (
        controller.pk,
        "drain",
        "queue",
        "default",
    )
    assert answer.json()["audit"][0]["user"] == controller.username

    job = create(make_user())
    assert job_payload(fresh(job))["wait_code"] == "paused" and broker.sent == []
    assert api(controller, {"action": "resume", "target": "queue", "name": "default"}).status_code == 200
    assert broker.sent == [str(job.id)]

    listing = Client()
    listing.force_login(viewer)
    depth = listing.get("/api/v1/ops/queues/").json()["queues"]
    assert {q["queue"]: q["in_line"] for q in depth}["default"] == 1
    assert api(controller, {"action": "pause", "target": "kind", "name": "nope"}).status_code == 400


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite runs one writer at a time")
def test_concurrent_admitters_never_admit_past_the_limits(make_user, broker, settings):
    """20 threads, each with its own connection, run admission passes at once over 40 waiting
    jobs of 10 users: the lock lets exactly the global limit through, one per user at most."""
    settings.RUNBOARD_MAX_ADMITTED = 5
    users = [make_user() for _ in range(10)]
    for user in users:
        for _ in range(4):
            Job.objects.create(owner=user, kind="simulate", params={"steps": 1}, celery_task_id="t")
    start = threading.Barrier(20)

    def run() -> None:
        try:
            start.wait(timeout=30)
            admission.jobs_admit()
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    admitted = Job.objects.filter(admitted_at__isnull=False)
    assert admitted.count() == 5 and len(broker.sent) == 5
    assert max(Counter(admitted.values_list("owner_id", flat=True)).values()) == 1


def test_the_operations_page_offers_the_controls_only_with_the_power(make_user):
    viewer = grant_powers(make_user(is_staff=True), Power.USE_OPERATOR_VIEW)
    controller = grant_powers(make_user(), Power.CONTROL_QUEUES, Power.USE_OPERATOR_VIEW)
    pages = {}
    for user in (viewer, controller):
        client = Client()
        client.force_login(user)
        pages[user.pk] = client.get("/operations/").content.decode()
    assert 'data-may-control="false"' in pages[viewer.pk] and "Pause kind" not in pages[viewer.pk]
    assert 'data-may-control="true"' in pages[controller.pk] and "Pause kind" in pages[controller.pk]


# --- Throughput (issue 14 §1: jobs per second must not drop) -------------------------------------


class _PoolProcess:
    name = "ForkPoolWorker-1"  # a Celery prefork pool process, where passes after jobs coalesce


def test_a_slot_freed_with_nothing_lined_up_is_refilled_before_the_task_returns(
    make_user, broker, monkeypatch, settings
):
    """One user's short jobs: when a job ends and nothing waits in the broker's line for its
    queue, a worker of that queue would idle until a pass; the pass runs at once, not after the
    coalescing delay (one user ran at 0.23x the jobs per second of first come first served)."""
    settings.RUNBOARD_MAX_RUNNING_PER_USER = 1
    monkeypatch.setattr(runner, "PASS_AFTER_JOB_DELAY", 3600.0)  # a coalesced pass never comes
    monkeypatch.setattr(runner.billiard_process, "current_process", _PoolProcess)
    alice = make_user()
    first, second = create(alice), create(alice)
    assert broker.sent == [str(first.id)]

    runner.job_run(job_id=first.id)

    assert fresh(first).state == JobState.SUCCEEDED
    assert fresh(second).admitted_at is not None
    assert broker.sent == [str(first.id), str(second.id)]


def test_a_slot_freed_while_the_line_still_holds_jobs_leaves_its_pass_to_the_coalescing_timer(
    make_user, broker, monkeypatch
):
    """With a job still lined up in the queue, the workers have work: the pass after the job is
    shared with the ends that follow (one timer per pool process), not run once per job."""
    requested: list[bool] = []
    monkeypatch.setattr(runner.billiard_process, "current_process", _PoolProcess)
    monkeypatch.setattr(runner._PassAfterJobs, "request", lambda self: requested.append(True))
    alice, bob = make_user(), make_user()
    alices = create(alice)
    create(bob)  # lined up behind Alice's in the default queue

    runner.job_run(job_id=alices.id)

    assert requested == [True]


def test_with_admission_control_off_a_launch_is_sent_at_once_and_no_pass_runs(
    make_user, broker, settings, monkeypatch
):
    """First come first served (the benchmark's baseline and an escape hatch) is the lean path of
    before issue 14: insert, then the message once committed; no pass at launch or after a job."""
    settings.RUNBOARD_ADMISSION_CONTROL = False
    passes: list[object] = []
    real_pass = admission.jobs_admit
    monkeypatch.setattr(admission, "jobs_admit", lambda **kw: passes.append(kw) or real_pass(**kw))
    alice = make_user()
    with CaptureQueriesContext(connection) as launched:
        job = create(alice)
    assert broker.sent == [str(job.id)]
    stored = fresh(job)
    assert stored.admitted_at is not None
    assert (job_payload(stored)["wait_code"], job_payload(stored)["wait_reason"]) == (
        "in_line",
        "Waiting for a worker.",
    )
    sql = [query["sql"] for query in launched.captured_queries]
    assert sum(statement.lstrip().upper().startswith("SELECT") for statement in sql) == 0, sql

    runner.job_run(job_id=job.id)

    assert fresh(job).state == JobState.SUCCEEDED
    assert passes == []


def test_round_robin_memory_is_one_index_probe_per_user_whatever_their_history(make_user, broker):
    """The pass's read of each waiting user's latest admission searches job_owner_admitted_idx
    (it scanned every admission of the last hour: most of a pass's cost with thousands)."""
    alice, bob = make_user(), make_user()
    with CaptureQueriesContext(connection) as captured:
        admission._last_admitted({alice.pk, bob.pk})
    (query,) = captured.captured_queries
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # tiny tables: the plan's choice otherwise
            try:
                cursor.execute("EXPLAIN " + query["sql"])
                plan = " ".join(str(row) for row in cursor.fetchall())
            finally:
                cursor.execute("RESET enable_seqscan")
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = " ".join(str(row) for row in cursor.fetchall())
    assert "job_owner_admitted_idx" in plan, plan


def test_round_robin_remembers_a_user_served_more_than_an_hour_ago(make_user, broker):
    """Least recently served goes first, however long ago that was (the memory was cut at an
    hour, so two users last served two and three hours ago looked alike)."""
    alice, bob = make_user(), make_user()
    now = timezone.now()
    make_job(owner=alice, state=JobState.SUCCEEDED, admitted_at=now - timedelta(hours=2))
    make_job(owner=bob, state=JobState.SUCCEEDED, admitted_at=now - timedelta(hours=3))
    # Both wait (not admitted, no pass yet), Alice's the longer.
    alices = make_job(owner=alice, admitted_at=None)
    bobs = make_job(owner=bob, admitted_at=None)
    assert alices.created_at < bobs.created_at

    admission.jobs_admit()

    assert broker.sent == [str(bobs.id), str(alices.id)]


@pytest.mark.parametrize("global_limit", [0, 3], ids=["no global limit", "global limit"])
def test_a_users_only_job_behind_a_backlog_longer_than_one_read_is_seen_and_admitted(
    make_user, broker, settings, monkeypatch, global_limit
):
    """A pass reads the oldest CANDIDATES waiting jobs, then every other waiting user and kind's
    first jobs: a user with nothing running goes next however long another's backlog is (with
    506 of Alice's waiting, Bob's one job stayed unadmitted and unexplained for 110 s)."""
    monkeypatch.setattr(admission, "CANDIDATES", 5)  # stands for 500, with a backlog of 8
    settings.RUNBOARD_MAX_ADMITTED = global_limit
    alice, bob = make_user(), make_user()
    make_job(owner=alice, state=JobState.RUNNING)
    make_job(owner=alice, state=JobState.RUNNING)  # Alice at her cap of 2
    alices = [create(alice) for _ in range(8)]
    bobs = create(bob)

    assert broker.sent == [str(bobs.id)]
    payload = job_payload(fresh(bobs))
    assert (payload["wait_code"], payload["queue_position"]) == ("in_line", 1)
    assert all(fresh(job).admitted_at is None for job in alices)


def test_the_waiting_users_and_kinds_are_found_by_index_probes_not_a_scan(make_user, broker):
    """The skip scan's plan searches job_waiting_idx (a pass's work does not grow with the
    number of jobs waiting, only with the users and kinds that wait)."""
    alice, bob = make_user(), make_user()
    for owner in (alice, bob, alice):
        make_job(owner=owner, admitted_at=None)
    assert admission._waiting_groups(10) == [(alice.pk, "simulate"), (bob.pk, "simulate")]
    assert admission._waiting_groups(1) == [(alice.pk, "simulate")]
    if connection.vendor == "sqlite":
        with CaptureQueriesContext(connection) as captured:
            admission._waiting_groups(10)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + captured.captured_queries[0]["sql"])
            plan = " ".join(str(row) for row in cursor.fetchall())
        assert "job_waiting_idx" in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize("name", ["nosuchqueue", "housekeeping"])
def test_only_a_queue_some_kind_runs_on_can_be_paused(make_user, broker, name):
    """An unknown queue (a typo: audited, admitting nothing) or the housekeeping queue (no jobs
    run there) was accepted with 200 and an audit row."""
    staff = make_user(operator=True)
    client = Client()
    client.force_login(staff)
    body = {"action": "pause", "target": "queue", "name": name}
    response = client.post("/api/v1/ops/queues/control/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()["fields"], response.json()
    assert not AdmissionAudit.objects.exists()


def test_the_control_power_alone_sees_its_change_not_the_operator_views_depths_and_audit(make_user, broker):
    controller = grant_powers(make_user(is_staff=True), Power.CONTROL_QUEUES)
    client = Client()
    client.force_login(controller)
    assert client.get("/api/v1/ops/queues/").status_code == 403
    body = {"action": "pause", "target": "kind", "name": "simulate"}
    answer = client.post("/api/v1/ops/queues/control/", json.dumps(body), content_type="application/json")
    assert answer.status_code == 200
    assert answer.json() == {"queues": [], "paused_kinds": ["simulate"], "audit": []}


def test_a_failed_pass_after_a_job_is_tried_again_soon_not_left_to_the_reapers_tick(
    make_user, broker, monkeypatch
):
    """Under load a pass can fail (SQLite busy past its timeout): the slot it would have filled
    idled until the reaper's next tick (a benchmark without one stalled for good)."""
    import time

    monkeypatch.setattr(runner.billiard_process, "current_process", _PoolProcess)
    monkeypatch.setattr(runner, "PASS_RETRY_DELAY", 0.05)
    monkeypatch.setattr(runner, "_passes_after_jobs", runner.ProcessLocal(runner._PassAfterJobs))
    calls: list[str] = []
    real = admission.jobs_admit

    def flaky(**kwargs: Any) -> int:
        calls.append("pass")
        if len(calls) == 1:
            raise admission.transaction.TransactionManagementError("database is locked")
        return real(**kwargs)

    monkeypatch.setattr(admission, "jobs_admit", flaky)
    Job.objects.create(owner=make_user(), kind="simulate", params={"steps": 1}, celery_task_id="waiting")

    runner.admit_after_job(kind="simulate")  # nothing lined up: a pass at once, which fails

    deadline = time.monotonic() + 5
    while len(broker.sent) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls == ["pass", "pass"]
    assert len(broker.sent) == 1


def test_past_the_most_groups_one_pass_reads_later_passes_reach_every_waiting_user(
    make_user, broker, monkeypatch
):
    """With more waiting users and kinds than a pass reads (1,000), the ones past them by id
    were never seen: a user with nothing running waited with no reason shown (a review: 1,100
    users). Each pass now starts where the last one stopped, wrapping around."""
    monkeypatch.setattr(admission, "CANDIDATES", 1)
    monkeypatch.setattr(admission, "MAX_WAITING_GROUPS", 2)
    monkeypatch.setattr(admission._GroupCursor, "after", None)
    busy = [make_user() for _ in range(4)]
    for owner in busy:
        make_job(owner=owner, state=JobState.RUNNING)
        make_job(owner=owner, state=JobState.RUNNING)  # at the cap of 2
        make_job(owner=owner, admitted_at=None)  # and one waiting
    zed = make_user()  # the highest id, nothing running
    zeds = make_job(owner=zed, admitted_at=None)

    for _ in range(4):
        admission.jobs_admit()
        if broker.sent:
            break
    assert broker.sent == [str(zeds.id)]
    assert job_payload(fresh(zeds))["wait_code"] == "in_line"


def test_places_in_line_keep_the_order_the_messages_went_in_over_later_passes(make_user, broker):
    """Jobs admitted in one pass shared their admission instant, and later passes ranked them by
    age: Carol's job, sent first, was shown 1st, then 2nd behind Alice's older one (a review)."""
    alice, carol = make_user(), make_user()
    make_job(owner=alice, state=JobState.SUCCEEDED, admitted_at=timezone.now() - timedelta(minutes=1))
    alices = make_job(owner=alice, admitted_at=None)  # older, but Alice was served recently
    carols = make_job(owner=carol, admitted_at=None)  # Carol never was: she goes first

    admission.jobs_admit()
    assert broker.sent == [str(carols.id), str(alices.id)]
    places = lambda: [job_payload(fresh(job))["queue_position"] for job in (carols, alices)]  # noqa: E731
    assert places() == [1, 2]

    admission.jobs_admit()  # any later pass (a launch, a start, the reaper's tick)
    assert places() == [1, 2]


def test_with_a_global_limit_a_launch_past_one_read_is_still_told_why_it_waits(
    make_user, broker, settings, monkeypatch
):
    """With RUNBOARD_MAX_ADMITTED set and more waiting than a pass reads, a launched job past
    what was read (its owner's 4th of a kind, or behind a backlog of theirs) got no reason at all
    (a third review: wait_code and wait_reason null)."""
    monkeypatch.setattr(admission, "CANDIDATES", 3)
    settings.RUNBOARD_MAX_ADMITTED = 1
    alice, bob = make_user(), make_user()
    make_job(owner=alice, state=JobState.RUNNING)  # the one slot is taken
    for _ in range(4):
        make_job(owner=alice, admitted_at=None)  # an old backlog of Alice's
    bobs = [create(bob) for _ in range(5)]
    mine = create(alice)
    for job in [*bobs, mine]:
        payload = job_payload(fresh(job))
        assert payload["wait_code"] and payload["wait_reason"], payload


def test_messages_lost_with_the_broker_are_sent_again_in_the_order_of_the_line(make_user, broker):
    """The reaper re-sent lost messages oldest job first, not in admission order: after an
    outage the broker held xa, wb, yc while the page showed yc 1st (a third review)."""
    from jobs.housekeeping import job_requeue_lost

    users = [make_user() for _ in range(3)]
    now = timezone.now()
    # Admitted newest-created first (the fair order), all waiting for the queue (enqueued_at None).
    jobs = [make_job(owner=owner, admitted_at=None) for owner in users]
    for rank, job in enumerate(reversed(jobs)):
        Job.objects.filter(pk=job.pk).update(admitted_at=now + timedelta(microseconds=rank), enqueued_at=None)

    job_requeue_lost()

    assert broker.sent == [str(job.id) for job in reversed(jobs)]


def test_a_job_admitted_after_the_broker_returns_goes_behind_those_lost_with_it(make_user, broker):
    """Jobs admitted while the broker was down wait for the queue ("1st/2nd in line"); a pass
    after it came back sent its new job at once, ahead of them, until the reaper's tick re-sent
    the lost ones behind it (a review). A pass now sends the lost ones first, in line order."""
    ua, ub, uc = make_user(), make_user(), make_user()
    now = timezone.now()
    lost = [make_job(owner=owner, admitted_at=None) for owner in (ua, ub)]
    for rank, job in enumerate(lost):
        Job.objects.filter(pk=job.pk).update(admitted_at=now + timedelta(microseconds=rank), enqueued_at=None)

    new = create(uc)  # the broker is back: a launch's pass

    assert broker.sent == [str(lost[0].id), str(lost[1].id), str(new.id)]
    assert all(fresh(job).enqueued_at is not None for job in lost)
    places = [job_payload(fresh(job))["queue_position"] for job in (*lost, new)]
    assert places == [1, 2, 3]
