"""/healthz, /readyz and /metrics: probes that tell the truth; /metrics' gauges read at scrape time."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from celery import Celery
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from dashboard import ops
from dashboard.celery import app as celery_app
from jobs.conf import app_settings as jobs_settings
from jobs.kinds.registry import JobKind, register, unregister
from jobs.models import JobState
from notifications import inbox as notification_services
from notifications.models import SocketConnection
from notifications.realtime import presence as notification_presence
from scripts.harness import RedisServer, celery_housekeeping, free_port, process_env
from tests.jobs.factories import make_job

FINAL = ("succeeded", "failed", "cancelled")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    parsed = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


@pytest.fixture
def idle_redis(tmp_path) -> Iterator[str]:
    """A second, private redis-server that no Celery worker consumes."""
    with RedisServer(tmp_path) as server:
        yield server.url


@pytest.fixture
def unreachable_broker(settings) -> str:
    """Point CELERY_BROKER_URL at a closed port (with a password in it) for this test only."""
    # Load the Celery app's configuration first, so it can never capture the broken URL.
    assert celery_app.conf.broker_url
    settings.CELERY_BROKER_URL = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    return settings.CELERY_BROKER_URL


# --- /healthz -----------------------------------------------------------------------------------


def test_healthz_answers_ok_without_touching_the_database():
    # No django_db mark: any query would fail the test.
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert Client().post("/healthz").status_code == 405


# --- /readyz ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_when_database_redis_channel_layer_a_worker_and_housekeeping_answer(
    celery_worker, housekeeping_worker
):
    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "channel_layer", "workers", "housekeeping"}
    for check in body["checks"].values():
        assert check["ok"] is True and isinstance(check["ms"], float) and "error" not in check


@pytest.mark.django_db(transaction=True)
def test_probes_answer_through_the_real_asgi_server(live_server_url, celery_worker, housekeeping_worker):
    with urllib.request.urlopen(f"{live_server_url}/healthz", timeout=10) as response:
        assert response.status == 200 and json.load(response) == {"status": "ok"}
    with urllib.request.urlopen(f"{live_server_url}/readyz", timeout=10) as response:
        assert response.status == 200 and json.load(response)["status"] == "ready"


@pytest.mark.django_db
def test_readyz_is_503_naming_the_workers_check_when_no_worker_answers(monkeypatch, idle_redis):
    # A real broker with no worker on it, so the ping really goes out and nobody answers. Not the
    # current app: shared tasks (jobs.tasks) would follow it to this broker in later tests.
    with Celery("readyz-test", broker=idle_redis, set_as_current=False) as lonely:
        monkeypatch.setattr(ops, "celery_app", lambda: lonely)
        started = time.monotonic()
        response = Client().get("/readyz")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["workers", "housekeeping"]
    assert body["checks"]["workers"]["ok"] is False
    assert "no worker consumes the job queue(s) default" in body["checks"]["workers"]["error"]
    assert "no process consumes the 'housekeeping' queue" in body["checks"]["housekeeping"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert elapsed < ops.READY_DEADLINE + 1


@pytest.mark.django_db
def test_the_housekeeping_process_alone_does_not_make_the_workers_check_pass(
    monkeypatch, idle_redis, server_env, tmp_path
):
    """A broker whose only consumer is the housekeeping process (it runs no job): /readyz says the
    job queues have no worker (issue 14: the ping answered by any process passed before)."""
    housekeeping = celery_housekeeping(
        "lonely-housekeeping", process_env(server_env, CELERY_BROKER_URL=idle_redis), log_dir=tmp_path
    )
    try:
        with Celery("readyz-test", broker=idle_redis, set_as_current=False) as broker:
            monkeypatch.setattr(ops, "celery_app", lambda: broker)
            body = Client().get("/readyz").json()
    finally:
        housekeeping.stop()
    assert body["failing"] == ["workers"], body
    assert body["checks"]["housekeeping"]["ok"] is True
    assert "no worker consumes the job queue(s) default" in body["checks"]["workers"]["error"]


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_broker_without_its_password(unreachable_broker, monkeypatch):
    monkeypatch.setattr(ops, "check_workers", lambda: None)  # this test is about Redis
    monkeypatch.setattr(ops, "check_housekeeping", lambda: None)

    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert "ConnectionError" in body["checks"]["redis"]["error"]
    assert "hunter2" not in response.content.decode()


def test_readiness_answers_by_its_deadline_when_a_check_hangs():
    started = time.monotonic()
    result = ops.readiness({"hangs": lambda: time.sleep(3), "fine": lambda: None}, deadline=0.5)

    assert time.monotonic() - started < 1.5
    assert result["ready"] is False
    assert result["checks"]["hangs"] == {"ok": False, "ms": 500.0, "error": "timed out after 0.5 s"}
    assert result["checks"]["fine"]["ok"] is True


def test_check_errors_mask_credentials_in_urls():
    def leaky() -> None:
        raise ConnectionError("cannot reach rediss://runboard:s3cret@redis.internal:6380/0")

    error = ops.readiness({"leaky": leaky})["checks"]["leaky"]["error"]

    assert "s3cret" not in error and "runboard:" not in error
    assert error == "ConnectionError: cannot reach rediss://***@redis.internal:6380/0"


# --- /metrics: values -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_gauge_active_jobs_stalls_sockets_and_unread_from_the_database(make_user):
    """The gauges read at scrape time; what finished is a counter (tests/dashboard/test_metrics.py)."""
    user, operator = make_user(), make_user(operator=True)
    now = timezone.now()
    for _ in range(2):
        make_job(owner=user)
    make_job(owner=user, state=JobState.RUNNING)
    make_job(
        owner=user,
        state=JobState.RUNNING,
        heartbeat_at=now - timedelta(seconds=10 * jobs_settings.STALE_AFTER),
    )
    make_job(owner=user, state=JobState.SUCCEEDED)
    for _ in range(3):
        notification_services.notify(recipient_id=user.pk, title="done")
    notification_services.notify(recipient_id=operator.pk, title="done")
    notification_presence.socket_open(channel_name="specific.fresh!1", user_id=user.pk, session_key="")
    notification_presence.socket_open(channel_name="specific.dead!1", user_id=user.pk, session_key="")
    SocketConnection.objects.filter(channel_name="specific.dead!1").update(seen_at=now - timedelta(hours=1))

    metrics = samples(logged_in(operator).get("/metrics"))

    assert metrics["runboard_jobs_active_by_kind", (("kind", "simulate"), ("state", "queued"))] == 2
    assert metrics["runboard_jobs_active_by_kind", (("kind", "simulate"), ("state", "running"))] == 2
    assert metrics["runboard_jobs_stalled", ()] == 1
    assert metrics["runboard_open_sockets", ()] == 1
    assert metrics["runboard_notifications_unread", ()] == 4
    assert metrics["runboard_broker_up", ()] == 1
    assert ("runboard_queue_depth", (("queue", "default"),)) in metrics


@pytest.mark.django_db
def test_ops_functions_return_plain_data_for_other_pages(make_user):
    user = make_user()
    stale = make_job(owner=user, state=JobState.RUNNING, heartbeat_at=timezone.now() - timedelta(minutes=5))
    make_job(owner=user, state=JobState.RUNNING)

    assert ops.job_counts_by_state()["running"] == 2
    [listed] = ops.stalled_jobs()
    assert listed["id"] == str(stale.id) and listed["owner"] == user.username
    assert listed["silent_for_s"] >= 300
    assert ops.stalled_job_count(stale_after=600) == 0
    json.dumps(ops.overview())  # plain data all the way down


@pytest.mark.django_db
def test_queue_depth_counts_messages_waiting_in_a_kinds_queue_at_every_priority(settings):
    settings.DEBUG = True  # the open door, so this test is only about the numbers
    queue = f"ops-test-idle-{uuid.uuid4().hex[:8]}"

    class Params(BaseModel):
        pass

    kind = register(
        JobKind(name=queue, title=queue, description="", params_model=Params, run=print, queue=queue)
    )
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        assert queue in ops.queue_names()
        celery_app.send_task("jobs.reap_stale_jobs", queue=queue)
        celery_app.send_task("jobs.reap_stale_jobs", queue=queue, priority=9)

        metrics = samples(Client().get("/metrics"))

        assert metrics["runboard_queue_depth", (("queue", queue),)] == 2
        assert ops.queue_depths([queue]) == {queue: 2}
    finally:
        unregister(kind.name)
        for key in broker.scan_iter(match=f"*{queue}*"):
            broker.delete(key)
        broker.close()


@pytest.mark.django_db
def test_metrics_still_answer_with_broker_down(unreachable_broker, settings):
    settings.DEBUG = True

    metrics = samples(Client().get("/metrics"))

    assert metrics["runboard_broker_up", ()] == 0
    assert not any(name == "runboard_queue_depth" for name, _ in metrics)
    assert ("runboard_jobs_stalled", ()) in metrics


# --- /metrics: who may read them ----------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_are_forbidden_to_anonymous_and_non_staff_users(make_user, monkeypatch):
    monkeypatch.delenv("RUNBOARD_METRICS_TOKEN", raising=False)

    assert Client().get("/metrics").status_code == 403
    assert logged_in(make_user()).get("/metrics").status_code == 403
    # No token configured: an empty bearer must not match it.
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403


@pytest.mark.django_db
def test_metrics_are_open_to_staff_and_to_the_metrics_token(make_user, settings, monkeypatch):
    monkeypatch.delenv("RUNBOARD_METRICS_TOKEN", raising=False)
    settings.RUNBOARD_METRICS_TOKEN = "scrape-me-" + uuid.uuid4().hex

    assert logged_in(make_user(operator=True)).get("/metrics").status_code == 200
    bearer = {"Authorization": f"Bearer {settings.RUNBOARD_METRICS_TOKEN}"}
    assert Client().get("/metrics", headers=bearer).status_code == 200
    assert Client().get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert (
        logged_in(make_user()).get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    )


@pytest.mark.django_db
def test_metrics_token_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNBOARD_METRICS_TOKEN", "from-the-env")

    assert Client().get("/metrics", headers={"Authorization": "Bearer from-the-env"}).status_code == 200


@pytest.mark.django_db
def test_metrics_are_open_in_debug(settings):
    settings.DEBUG = True

    assert Client().get("/metrics").status_code == 200
