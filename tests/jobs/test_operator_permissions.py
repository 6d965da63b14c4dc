"""Operator powers come from permissions, not from ``is_staff`` alone (issue 12 §1).

A staff user holding no permission (the example: the admin refuses them Jobs and Users) gets
nothing on any path: API, pages, WebSocket, SSE, admin actions, the CLI. Each named power,
granted through a Django group, opens exactly its own paths; superusers hold every one."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from jobs.models import Job, JobState
from jobs.permissions import Power, has_power, powers_by_user
from notifications import events
from notifications.push import push_event
from tests.conftest import grant_powers, receive_json, receive_until, session_cookie
from tests.jobs.factories import make_job
from tests.notifications.test_sse import EventSource

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alices_job(make_user):
    alice = make_user()
    job = make_job(owner=alice, state=JobState.SUCCEEDED)
    Job.objects.filter(pk=job.pk).update(
        result={"top_values": ["secret cell"]}, result_summary={"top_values": ["secret cell"]},
        result_bytes=40, result_summary_complete=True,
    )  # fmt: skip
    return Job.objects.get(pk=job.pk)


def test_a_staff_user_without_permissions_gets_no_operator_power_on_any_http_path(make_user, alices_job):
    staff = make_user(is_staff=True)
    client = logged_in(staff)
    running = make_job(owner=alices_job.owner)

    assert client.get("/api/v1/jobs/").json()["results"] == []
    assert client.get(f"/api/v1/jobs/{alices_job.id}/").status_code == 404
    assert client.get(f"/api/v1/jobs/{alices_job.id}/result/").status_code == 404
    assert client.get(f"/api/v1/jobs/{alices_job.id}/log/").status_code == 404
    assert client.post(f"/api/v1/jobs/{running.id}/cancel/").status_code == 404
    retry = client.post(f"/api/v1/jobs/{alices_job.id}/retry/", "{}", content_type="application/json")
    assert retry.status_code == 404
    broadcast = {"kind": "broadcast", "params": {"title": "hi", "body": "", "level": "info"}}
    response = client.post("/api/v1/jobs/", json.dumps(broadcast), content_type="application/json")
    assert response.status_code == 403
    assert "broadcast" not in [k["name"] for k in client.get("/api/v1/kinds/").json()["results"]]
    assert client.get(f"/jobs/{alices_job.id}/").status_code == 404
    assert client.get("/operations/").status_code == 403
    assert client.get("/metrics").status_code in (401, 403)
    assert Job.objects.get(pk=running.pk).cancel_requested_at is None
    assert Job.objects.filter(kind="broadcast").count() == 0


def test_each_power_granted_through_a_group_opens_exactly_its_paths(make_user, alices_job):
    viewer = grant_powers(make_user(is_staff=True), Power.VIEW_ALL_JOBS)
    listed = logged_in(viewer).get("/api/v1/jobs/").json()["results"]
    assert [job["id"] for job in listed] == [str(alices_job.id)]
    # Seeing every job is not seeing every result: no summary, no link, and the result is a 404.
    assert listed[0]["result_summary"] is None and listed[0]["result_url"] is None
    assert "secret cell" not in logged_in(viewer).get(f"/api/v1/jobs/{alices_job.id}/").content.decode()
    assert "secret cell" not in logged_in(viewer).get(f"/jobs/{alices_job.id}/").content.decode()
    assert logged_in(viewer).get(f"/api/v1/jobs/{alices_job.id}/result/").status_code == 404
    retry = logged_in(viewer).post(
        f"/api/v1/jobs/{alices_job.id}/retry/", "{}", content_type="application/json"
    )
    assert retry.status_code == 404

    reader = grant_powers(make_user(), Power.VIEW_ALL_JOBS, Power.VIEW_ALL_RESULTS)
    assert logged_in(reader).get(f"/api/v1/jobs/{alices_job.id}/result/").status_code == 200
    assert logged_in(reader).get(f"/api/v1/jobs/{alices_job.id}/").json()["result_summary"] is not None

    actor = grant_powers(make_user(), Power.VIEW_ALL_JOBS, Power.ACT_ON_ANY_JOB)
    running = make_job(owner=alices_job.owner)
    assert logged_in(actor).post(f"/api/v1/jobs/{running.id}/cancel/").status_code == 200

    announcer = grant_powers(make_user(), Power.BROADCAST)
    broadcast = {"kind": "broadcast", "params": {"title": "hi", "body": "", "level": "info"}}
    response = logged_in(announcer).post(
        "/api/v1/jobs/", json.dumps(broadcast), content_type="application/json"
    )
    assert response.status_code == 201

    operator = grant_powers(make_user(), Power.USE_OPERATOR_VIEW)
    assert logged_in(operator).get("/operations/").status_code == 200
    assert logged_in(operator).get("/metrics").status_code == 200
    assert logged_in(operator).get("/api/v1/jobs/").json()["results"] == []  # the view is not the jobs


def test_superusers_hold_every_power_and_inactive_users_none(make_user):
    superuser = make_user(is_superuser=True)
    inactive = grant_powers(make_user(), *Power)
    type(inactive).objects.filter(pk=inactive.pk).update(is_active=False)
    inactive.refresh_from_db()
    assert all(has_power(superuser, power) for power in Power)
    assert not any(has_power(inactive, power) for power in Power)
    assert powers_by_user([superuser.pk, inactive.pk]) == {superuser.pk: frozenset(Power)}


def test_a_staff_socket_and_stream_without_permissions_get_no_other_users_jobs_nor_the_operator_view(
    ws_connect, live_server_url, make_user, alices_job
):
    staff, reader = make_user(is_staff=True), grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    ws, readers_ws = ws_connect(user=staff), ws_connect(user=reader)
    assert receive_json(ws)["user"]["powers"] == []
    assert receive_json(ws)["jobs"] == []
    assert receive_json(readers_ws)["user"]["powers"] == ["view_all_jobs"]
    assert [job["id"] for job in receive_json(readers_ws)["jobs"]] == [str(alices_job.id)]
    stream = EventSource(live_server_url, cookie=session_cookie(staff))
    stream.until(lambda e: e["type"] == "snapshot")

    ws.send(json.dumps({"type": "ops.subscribe"}))
    assert receive_json(ws)["code"] == "forbidden"
    ws.send(json.dumps({"type": "watch", "job_id": str(alices_job.id)}))
    assert receive_json(ws)["code"] == "forbidden"
    readers_ws.send(json.dumps({"type": "watch", "job_id": str(alices_job.id)}))
    assert receive_json(readers_ws)["code"] == "forbidden"  # a log is the job's data

    # Alice's job finishes: the reader hears of it without its result, the staff user not at all.
    from jobs.states import _push_job

    _push_job(alices_job)
    update = receive_until(readers_ws, lambda e: e["type"] == "job.update")[-1]["job"]
    assert update["id"] == str(alices_job.id) and update["result_summary"] is None
    push_event(group=events.user_group(staff.pk), event=events.pong(server_time="marker"))
    seen = receive_until(ws, lambda e: e["type"] == "pong")
    assert not any(e["type"] == "job.update" for e in seen)
    stream_seen = stream.until(lambda e: e["type"] == "pong")
    assert not any(e["type"] == "job.update" for e in stream_seen)
    stream.close()


def test_admin_actions_on_other_users_jobs_take_the_act_on_any_job_power(make_user, alices_job):
    from django.contrib.auth.models import Permission

    clerk = make_user(is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "change_job"]))
    running = make_job(owner=alices_job.owner)
    response = logged_in(clerk).get("/admin/jobs/job/")
    assert response.status_code == 200 and "cancel_jobs" not in response.content.decode()
    response = logged_in(clerk).post(
        "/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [str(running.pk)]}
    )
    assert Job.objects.get(pk=running.pk).cancel_requested_at is None
    assert Job.objects.get(pk=running.pk).state == JobState.QUEUED

    grant_powers(clerk, Power.ACT_ON_ANY_JOB)
    logged_in(clerk).post(
        "/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [str(running.pk)]}
    )
    assert Job.objects.get(pk=running.pk).state == JobState.CANCELLED


def test_the_cli_launches_a_powered_kind_only_for_an_owner_who_holds_the_power(make_user):
    staff, announcer = make_user(is_staff=True), grant_powers(make_user(), Power.BROADCAST)
    args = ["broadcast", "--param", "title=hi"]
    with pytest.raises(CommandError, match="takes a permission"):
        call_command("launch_job", *args, "--user", staff.username, stdout=io.StringIO())
    call_command("launch_job", *args, "--user", announcer.username, stdout=io.StringIO())
    assert list(Job.objects.filter(kind="broadcast").values_list("owner_id", flat=True)) == [announcer.pk]


def test_retrying_someone_elses_powered_job_takes_that_power_too(make_user):
    """Found by review: `act_on_any_job` alone re-sent an announcement (with new words) as its
    owner. Whoever retries launches, so they need the kind's power as well."""
    root = make_user(is_superuser=True)
    broadcast = make_job(owner=root, state=JobState.SUCCEEDED)
    Job.objects.filter(pk=broadcast.pk).update(
        kind="broadcast", params={"title": "hi", "body": "", "level": "info"}
    )
    actor = grant_powers(make_user(), Power.ACT_ON_ANY_JOB)
    body = json.dumps({"params": {"title": "PWNED", "body": "", "level": "error", "group": ""}})
    response = logged_in(actor).post(
        f"/api/v1/jobs/{broadcast.id}/retry/", body, content_type="application/json"
    )
    assert response.status_code == 403
    assert Job.objects.filter(kind="broadcast").count() == 1
    both = grant_powers(actor, Power.BROADCAST)
    assert (
        logged_in(both)
        .post(f"/api/v1/jobs/{broadcast.id}/retry/", "{}", content_type="application/json")
        .status_code
        == 201
    )


def test_the_schedule_admin_offers_only_kinds_and_owners_the_admin_user_may_launch_for(make_user):
    """Found by review: a user with only the admin's add-schedule permission scheduled a
    broadcast as a superuser."""
    from django.contrib.auth.models import Permission

    from jobs.models import JobSchedule

    root = make_user(is_superuser=True)
    scheduler = make_user(is_staff=True)
    scheduler.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_jobschedule", "view_jobschedule", "view_user"])
    )
    form = {"name": "x", "kind": "broadcast", "params": '{"title": "t"}', "owner": root.pk,
            "every_seconds": 60, "crontab": "", "enabled": "on"}  # fmt: skip
    response = logged_in(scheduler).post("/admin/jobs/jobschedule/add/", form)
    assert response.status_code == 200  # the form again, with errors
    assert not JobSchedule.objects.exists()
    assert "another user" in response.content.decode()
    form["owner"] = scheduler.pk
    response = logged_in(scheduler).post("/admin/jobs/jobschedule/add/", form)
    assert not JobSchedule.objects.exists()  # broadcast is not a kind they may launch
