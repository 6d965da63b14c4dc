"""Runboard scaled out, for real (issue 17 §1): two web processes behind no sticky routing, two
workers on two queues, beat and housekeeping, the channel layer sharded over two redis-servers and
the broker on a third (tests/system/cluster.py), sharing the session's test database (SQLite, or
PostgreSQL when the suite runs on it). Users are picked so that their groups land on each shard,
by channels-redis's own consistent hash. Each test states its pass criterion in its docstring."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django_celery_results.models import TaskResult

from jobs.models import FINAL_STATES, Job, JobState
from jobs.tokens import token_create
from notifications.events import (
    CLOSE_EVENTS_INTERRUPTED,
    CLOSE_NOT_AUTHENTICATED,
    OPS_RESULTS_GROUP,
    user_group,
)
from notifications.models import Notification
from tests.conftest import ROOT
from tests.system.cluster import SCALE_KIND, SCALE_QUEUE, Cluster, Follower, Stream, channels_of
from tests.system.stack import wait_until
from tests.system.test_faults import FAST

# The shard kills are `faults` (they run once, in the SQLite pass of `make test`); the rest runs in
# its PostgreSQL pass too, where admission's lock is PostgreSQL's advisory lock.
pytestmark = pytest.mark.django_db(transaction=True)

# test_faults's short intervals (web processes check their layer every second, so an outage
# shows within seconds), with the product's default cap (the session sets 1 for its own worker).
ENV = {**FAST, "RUNBOARD_MAX_RUNNING_PER_USER": "2", "RUNBOARD_MAX_ADMITTED": "0"}
WITHIN = 2.0  # design.md §5b: a credential's end closes its connections within 2 s


@pytest.fixture(scope="module")
def cluster(server_env: dict[str, str]) -> Iterator[Cluster]:
    """One cluster for the module (it takes 10-30 s to start): each test uses users of its own."""
    with contextlib.closing(Cluster(server_env, env=ENV)) as started:
        yield started


@pytest.fixture
def clients() -> Iterator[Callable[[Any], Any]]:
    """``clients(follower_or_stream)``: stopped after the test whatever happens."""
    started: list[Any] = []

    def keep(client: Any) -> Any:
        started.append(client)
        return client

    yield keep
    for client in started:
        client.stop() if isinstance(client, Follower) else client.close()


@pytest.fixture
def user_on(cluster: Cluster, make_user: Callable[..., Any]) -> Callable[..., Any]:
    """``user_on(shard, **fields)``: a new user whose group (``user.<id>``) the layer puts on
    ``shard``, found by computing where each new user's group lands."""

    def make(shard: int, **fields: Any) -> Any:
        for _ in range(64):
            user = make_user(**fields)
            if cluster.group_shard(user_group(user.pk)) == shard:
                return user
        raise AssertionError(f"no user's group landed on shard {shard} in 64 tries")

    return make


def follow(cluster: Cluster, clients: Callable[[Any], Any], url: str, user: Any, **options: Any) -> Follower:
    """A connected ``Follower`` of ``user`` on the web process at ``url``."""
    follower = clients(Follower(url, cluster.token(user), **options))
    wait_until(lambda: follower.snapshots, timeout=20, message=f"never connected to {url}")
    return follower


def follow_on_shard(
    cluster: Cluster, clients: Callable[[Any], Any], url: str, user: Any, shard: int
) -> tuple[Follower, str]:
    """A connected ``Follower`` whose own channel (where closes and re-checks are sent to it) is
    on ``shard`` too: each socket's channel name is random, so open sockets until one's lands
    there (read from its presence row) and close the others."""
    for _ in range(16):
        before = channels_of(user)
        follower = follow(cluster, clients, url, user)
        (channel,) = channels_of(user) - before
        if cluster.channel_shard(channel) == shard:
            return follower, channel
        follower.stop()
        wait_until(lambda c=channel: c not in channels_of(user), timeout=10, message="socket row stayed")
    raise AssertionError(f"no socket's channel landed on shard {shard} in 16 tries")


def final(job_ids: list[str]) -> list[Job] | None:
    jobs = list(Job.objects.filter(pk__in=job_ids))
    return jobs if len(jobs) == len(job_ids) and all(job.state in FINAL_STATES for job in jobs) else None


def wait_final(job_ids: list[str], timeout: float = 60) -> dict[str, Job]:
    jobs = wait_until(lambda: final(job_ids), timeout=timeout, message=f"jobs {job_ids} never all finished")
    return {str(job.pk): job for job in jobs}


def worker_of(job: Job) -> str:
    """The Celery hostname (before the ``@``) of the worker that ran ``job`` (its task's result)."""
    result = wait_until(
        lambda: TaskResult.objects.filter(task_id=job.celery_task_id).exclude(worker=None).first(),
        timeout=20,
        message=f"no task result for job {job.pk}",
    )
    return str(result.worker).split("@")[0]


def notification_ids(user: Any) -> list[int]:
    return list(Notification.objects.filter(recipient=user).order_by("id").values_list("id", flat=True))


def saw_final(follower: Follower, job_id: str, state: str = "succeeded") -> bool:
    return follower.state(job_id) == state


def shows(follower: Follower, job_ids: list[str], notifications: Any) -> bool:
    """``follower`` shows each job succeeded and has received each of ``notifications``."""
    return all(saw_final(follower, j) for j in job_ids) and set(notifications) <= set(
        follower.notification_ids
    )


# --- 1. Live on both web processes, both workers, owner, staff and SSE -------------------------


def test_a_job_launched_through_web_a_is_seen_live_by_the_owner_on_both_webs_by_staff_and_over_sse(
    cluster, user_on, clients
):
    """Pass: two owners, one per layer shard, each with a socket on web A, a socket on web B and
    an SSE stream on web B, and an operator with a socket on web B; each owner launches through
    web A one job of a `default` kind and one of a `scale` kind. Every owner connection receives
    its own jobs live (running, then succeeded) and their completion notifications, nothing of
    the other owner's; the operator receives all four jobs' updates; each job ran on the worker
    of its kind's queue."""
    web_a, web_b = cluster.webs
    owners = [user_on(0), user_on(1)]
    staff = user_on(cluster.group_shard(OPS_RESULTS_GROUP), operator=True)
    connections = {
        owner.pk: [follow(cluster, clients, web_a.url, owner), follow(cluster, clients, web_b.url, owner)]
        for owner in owners
    }
    streams = {owner.pk: clients(Stream(web_b.url, cluster.token(owner))) for owner in owners}
    operator = follow(cluster, clients, web_b.url, staff)
    for stream in streams.values():
        wait_until(lambda s=stream: s.received("snapshot"), timeout=20, message="no SSE snapshot")

    launched = {
        owner.pk: [
            cluster.launch(owner, "test_block", {"seconds": 0.5}, url=web_a.url),
            cluster.launch(owner, SCALE_KIND, {"seconds": 0.5}, url=web_a.url),
        ]
        for owner in owners
    }
    every_job = [job_id for ids in launched.values() for job_id in ids]
    jobs = wait_final(every_job)
    assert {job.state for job in jobs.values()} == {JobState.SUCCEEDED}

    for owner in owners:
        mine, theirs = launched[owner.pk], [j for j in every_job if j not in launched[owner.pk]]
        wanted = set(notification_ids(owner))
        assert len(wanted) == 2
        for follower in connections[owner.pk]:
            wait_until(
                lambda f=follower, m=mine, w=wanted: shows(f, m, w),
                timeout=20,
                message=f"{follower.connected_to}",
            )
            for job_id in mine:
                states = [job["state"] for job in follower.updates(job_id)]
                assert "running" in states and states[-1] == "succeeded", states
            assert not any(follower.updates(job_id) for job_id in theirs)
        stream = streams[owner.pk]
        wait_until(
            lambda s=stream, w=wanted: w <= {int(e["id"]) for e in s.received("notification.new")},
            timeout=20,
            message=f"SSE saw {[e['type'] for e in stream.events]}",
        )
        sse_updates = {e["job"]["id"]: e["job"]["state"] for e in stream.received("job.update")}
        assert set(sse_updates) == set(mine) and set(sse_updates.values()) <= {
            "queued",
            "running",
            "succeeded",
        }
        assert any(e["job"]["state"] == "running" for e in stream.received("job.update"))
    wait_until(
        lambda: all(saw_final(operator, job_id) for job_id in every_job),
        timeout=20,
        message=f"the operator saw {operator.jobs}",
    )

    queues = {"test_block": "default", SCALE_KIND: SCALE_QUEUE}
    for job in jobs.values():
        assert worker_of(job) == cluster.worker_names[queues[job.kind]], job.kind
    print(
        f"\n[scale-out] owners' groups on shards 0 and 1, operators' group on shard "
        f"{cluster.group_shard(OPS_RESULTS_GROUP)}: 4 jobs seen live on 7 connections over 2 web processes"
    )


# --- 2. A client moved from web A to web B mid-job ---------------------------------------------


def test_a_client_moved_from_web_a_to_web_b_mid_job_resumes_with_nothing_missed_or_repeated(
    cluster, user_on, clients
):
    """Pass: a client on web A watches three jobs (both queues) start; it leaves web A while one
    runs and comes back on web B only once a job finished while it was away (its completion
    notification created then); resuming from its last notification id, it ends with exactly the
    user's notifications, in order, each once, shows every job's final state, and received the
    job still running at the move live on web B."""
    web_a, web_b = cluster.webs
    owner = user_on(1)
    follower = follow(cluster, clients, web_a.url, owner)
    short = cluster.launch(owner, "test_block", {"seconds": 0.5}, url=web_a.url)
    long = cluster.launch(owner, SCALE_KIND, {"seconds": 4}, url=web_a.url)
    later = cluster.launch(owner, "test_block", {"seconds": 1}, url=web_b.url)  # behind the cap of 2
    wait_until(
        lambda: follower.state(short) == "running" and follower.state(long) == "running",
        timeout=20,
        message=f"never saw both running on web A: {follower.jobs}",
    )

    follower.move_to(None)
    wait_final([short])
    wait_until(lambda: notification_ids(owner), timeout=10, message="no notification while away")
    assert Job.objects.get(pk=long).state == JobState.RUNNING  # the move is mid-job
    moved_at = time.monotonic()
    follower.move_to(web_b.url)

    jobs = wait_final([short, long, later])
    assert {job.state for job in jobs.values()} == {JobState.SUCCEEDED}
    expected = notification_ids(owner)
    assert len(expected) == 3
    wait_until(lambda: shows(follower, list(jobs), expected), timeout=20, message="after the move")
    time.sleep(0.5)  # a repeat would arrive right behind
    assert follower.notification_ids == expected  # none missed, none twice, in order
    assert follower.connected_to == [web_a.url, web_b.url] and follower.closes.server() == []
    assert [job["state"] for job in follower.updates(long, since=moved_at)][-1] == "succeeded"
    # What it missed came as a replay on web B (the first job's, and the third's if it finished
    # before the catch-up was read), the rest live.
    replayed = [e["notification"]["id"] for e in follower.received("notification.new") if e.get("replayed")]
    assert replayed and replayed == expected[: len(replayed)], (replayed, expected)


# --- 3. Revoking the credential closes its connections on both web processes ------------------


def test_revoking_the_owners_token_closes_their_connections_on_both_web_processes(cluster, user_on, clients):
    """Pass: with a token's sockets on web A and web B and its SSE stream on web B, revoking it
    with the `tokens` command (its own process, publishing to both shards) closes the sockets
    with 4401 and ends the stream with a `closed` 4401 event within 2 s of the command's exit;
    the same user's socket opened with another token stays open and still receives."""
    web_a, web_b = cluster.webs
    owner = user_on(0)
    token, raw = token_create(user=owner, name="revoke me")
    on_a = clients(Follower(web_a.url, raw, reconnect=False))
    on_b = clients(Follower(web_b.url, raw, reconnect=False))
    kept = follow(cluster, clients, web_b.url, owner)
    stream = clients(Stream(web_b.url, raw))
    for connected in (lambda: on_a.snapshots, lambda: on_b.snapshots, lambda: stream.received("snapshot")):
        wait_until(connected, timeout=20, message="a connection never opened")
    revoked = [cluster.channel_shard(name) for name in channels_of(owner)]

    subprocess.run(
        [sys.executable, "manage.py", "tokens", "revoke", "--user", owner.username, str(token.pk)],
        cwd=ROOT, env=cluster.env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    exited = time.monotonic()
    for follower in (on_a, on_b):
        wait_until(lambda f=follower: f.closes, timeout=10, message="a socket stayed open")
        code, closed_at = follower.closes[0], follower.closes.times[0]
        assert code == CLOSE_NOT_AUTHENTICATED
        assert closed_at - exited < WITHIN, closed_at - exited
    stream.wait_ended(10)
    assert stream.closed_code == CLOSE_NOT_AUTHENTICATED and stream.ended_at is not None
    assert stream.ended_at - exited < WITHIN, stream.ended_at - exited

    job_id = cluster.launch(owner, "test_block", {"seconds": 0}, url=web_a.url)
    wait_until(lambda: saw_final(kept, job_id), timeout=20, message=f"the kept socket saw {kept.jobs}")
    assert kept.closes == []
    print(f"\n[scale-out] token revoked: connections' channels on shards {sorted(revoked)} all closed")


# --- 4. One layer shard dies and comes back ----------------------------------------------------


@pytest.mark.faults
def test_killing_one_layer_shard_closes_its_sockets_with_4503_and_they_resume_while_the_other_shard_streams(
    cluster, user_on, clients
):
    """Pass: the shard holding one user's group is SIGKILLed for at least 3 s while another user's
    job streams progress to that user's sockets on web A and web B (their groups and channels on
    the other shard). The first user's socket on web A is closed with 4503 (docs/protocol.md),
    reconnects once the shard is back and ends with its job (launched and finished during the
    outage) final and its notification exactly once; the other user's sockets kept receiving
    updates throughout the outage and were never closed."""
    web_a, web_b = cluster.webs
    killed, kept = 1, 0
    victim, bystander = user_on(killed), user_on(kept)
    affected = follow(cluster, clients, web_a.url, victim)
    streaming = [follow_on_shard(cluster, clients, web.url, bystander, kept)[0] for web in (web_a, web_b)]
    progress = cluster.launch(bystander, "simulate", {"steps": 300, "step_ms": 100}, url=web_b.url)
    wait_until(
        lambda: all(len(f.updates(progress)) >= 3 for f in streaming), timeout=20, message="never streamed"
    )

    cluster.shards[killed].stop(signal.SIGKILL)
    down_at = time.monotonic()
    during = cluster.launch(victim, SCALE_KIND, {"seconds": 0.2}, url=web_b.url)
    wait_final([during])
    wait_until(lambda: notification_ids(victim), timeout=10, message="no notification during the outage")
    # The outage lasts until the other user has streamed for 3 s of it (layer checks every 1 s).
    wait_until(
        lambda: streaming[0].updates(progress, since=down_at) and time.monotonic() - down_at >= 3,
        timeout=30,
        message="the other shard's user stopped streaming",
    )
    cluster.shards[killed].start()
    up_at = time.monotonic()

    wait_until(
        lambda: shows(affected, [during], notification_ids(victim)),
        timeout=30,
        message="the victim's socket never caught up",
    )
    assert CLOSE_EVENTS_INTERRUPTED in affected.closes, affected.closes
    assert affected.notification_ids == notification_ids(victim)
    assert len(affected.connected_to) >= 2

    for follower in streaming:
        during_outage = [
            job["progress"]["current"] for job in follower.updates(progress, since=down_at) if job
        ]
        arrivals = [at for at, e in follower.events if e["type"] == "job.update" and down_at <= at <= up_at]
        assert len(arrivals) >= 5, (len(arrivals), during_outage[:5])
        assert during_outage == sorted(during_outage)
        assert follower.closes == [], f"a socket on the surviving shard was closed: {follower.closes}"
    assert cluster.api(bystander, "POST", f"/api/v1/jobs/{progress}/cancel/")[0] in (200, 202)
    wait_final([progress])
    print(
        f"\n[scale-out] shard {killed} down {up_at - down_at:.1f} s: victim closes "
        f"{affected.closes}, other shard's sockets got "
        f"{[len(f.updates(progress, since=down_at)) for f in streaming]} updates meanwhile"
    )


# --- 5. Fair scheduling and per-user caps across processes -------------------------------------


def test_fair_scheduling_and_the_per_user_cap_hold_across_both_workers_and_both_web_processes(
    cluster, user_on
):
    """Pass: one user launches 6 jobs, then another 4 (through both web processes in turn, both
    queues in turn); with the cap at 2 and 4 worker slots, neither ever has 3 jobs running at
    once (from the jobs' start and finish times), both run on both workers, and the second user's
    first job starts within a job's length of its launch, before every job of the first user
    still waiting then but at most one (one that may have been lined up meanwhile): no one waits
    behind another's backlog."""
    alice, bob = user_on(0), user_on(1)
    web_urls = itertools.cycle([web.url for web in cluster.webs])
    kinds = itertools.cycle(["test_block", SCALE_KIND])
    alices = [cluster.launch(alice, next(kinds), {"seconds": 1.5}, url=next(web_urls)) for _ in range(6)]
    bobs = [cluster.launch(bob, next(kinds), {"seconds": 1.5}, url=next(web_urls)) for _ in range(4)]
    jobs = wait_final([*alices, *bobs], timeout=90)
    assert {job.state for job in jobs.values()} == {JobState.SUCCEEDED}

    for ids in (alices, bobs):
        spans = [(jobs[j].started_at, jobs[j].finished_at) for j in ids]
        for a, b, c in itertools.combinations(spans, 3):
            assert not max(a[0], b[0], c[0]) < min(a[1], b[1], c[1]), "three jobs of one user ran at once"
        assert {worker_of(jobs[j]) for j in ids} == set(cluster.worker_names.values())
    first = jobs[bobs[0]]
    waited = (first.started_at - first.created_at).total_seconds()
    assert waited < 1.5 + 1.0, waited
    waiting_then = [jobs[j].started_at for j in alices if jobs[j].started_at > first.created_at]
    assert len(waiting_then) >= 2, waiting_then
    assert sum(start < first.started_at for start in waiting_then) <= 1, (first.started_at, waiting_then)
    print(f"\n[scale-out] fair: bob's first job waited {waited:.2f} s behind alice's 6")


@pytest.mark.faults
def test_an_sse_stream_on_a_killed_shard_ends_with_4503(cluster, user_on, clients):
    """A user's SSE stream on web A, whose group is on the shard that is SIGKILLed (for at least
    3 s: longer than the web processes' layer checks take to notice, as in the socket test) while
    their job runs and finishes, ends with a `closed` 4503 event, the socket's rule, so its client
    resumes with Last-Event-ID (before: the stream went on and silently missed the job's
    notification; review: an outage shorter than the checks let the test pass without a 4503)."""
    web_a, web_b = cluster.webs
    killed = 1
    victim = user_on(killed)
    stream = clients(Stream(web_a.url, cluster.token(victim)))
    wait_until(lambda: stream.received("snapshot"), timeout=20, message="no SSE snapshot")

    cluster.shards[killed].stop(signal.SIGKILL)
    down_since = time.monotonic()
    try:
        during = cluster.launch(victim, SCALE_KIND, {"seconds": 0.2}, url=web_b.url)
        wait_final([during])
        wait_until(lambda: notification_ids(victim), timeout=10, message="no notification during the outage")
        time.sleep(max(0.0, 3.0 - (time.monotonic() - down_since)))
    finally:
        cluster.shards[killed].start()

    wait_until(
        lambda: stream.closed_code == CLOSE_EVENTS_INTERRUPTED, timeout=10,
        message=f"the stream did not end with 4503 (closed: {stream.closed_code})",
    )  # fmt: skip
