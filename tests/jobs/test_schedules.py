"""Schedules that cannot silently fail (issue 14 §4): Celery's own crontab parser and a check that
the expression can fire, on every path that writes one; duplicated beat rows; time zones and
daylight-saving changes; next run, last run and outcome; Run now, pause and resume from the app;
one notification for a schedule whose runs keep failing."""

from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from jobs import schedules, states
from jobs.models import Job, JobSchedule, JobState
from jobs.permissions import Power
from notifications.models import Notification
from tests.conftest import grant_powers

pytestmark = pytest.mark.django_db

NEW_YORK = ZoneInfo("America/New_York")
BAD_CRONTABS = ["61 * * * *", "0 0 31 2 *", "0 0 31 2,4,6,9,11 *", "*/0 * * * *"]


def _schedule(owner, **fields):
    fields = {"name": "nightly", "kind": "simulate", "params": {"steps": 1, "step_ms": 0}, "owner": owner,
              "crontab": "0 3 * * *", **fields}  # fmt: skip
    return schedules.schedule_save(schedule=JobSchedule(**fields))


def _admin(make_user):
    client = Client()
    client.force_login(make_user(operator=True, is_superuser=True))
    return client


# --- Validation on every path ----------------------------------------------------------------------


@pytest.mark.parametrize("crontab", BAD_CRONTABS)
def test_an_out_of_range_or_never_firing_crontab_is_a_crontab_field_error(crontab):
    with pytest.raises(schedules.ValidationError) as refused:
        schedules.schedule_validate(kind="simulate", params={}, every_seconds=None, crontab=crontab)
    assert list(refused.value.message_dict) == ["crontab"]


@pytest.mark.parametrize("crontab", ["0 3 * * *", "*/5 9-17 * * mon-fri", "0 0 29 2 *", "0 12 13 * fri"])
def test_a_crontab_that_can_fire_is_accepted(crontab):
    schedules.schedule_validate(kind="simulate", params={}, every_seconds=None, crontab=crontab)


def test_an_unknown_time_zone_is_a_timezone_field_error():
    with pytest.raises(schedules.ValidationError) as refused:
        schedules.schedule_validate(
            kind="simulate", params={}, every_seconds=None, crontab="0 3 * * *", timezone_name="Mars/Olympus"
        )
    assert list(refused.value.message_dict) == ["timezone"]


@pytest.mark.parametrize("crontab", ["61 * * * *", "0 0 31 2 *"])
def test_the_admin_form_refuses_a_bad_crontab_as_a_field_error_and_saves_nothing(make_user, crontab):
    client = _admin(make_user)
    owner = make_user()
    response = client.post(
        "/admin/jobs/jobschedule/add/",
        {"name": "bad", "kind": "simulate", "params": '{"steps": 1}', "owner": owner.pk,
         "crontab": crontab, "timezone": "UTC", "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "crontab" in response.context["adminform"].form.errors
    assert (
        not JobSchedule.objects.exists()
        and not PeriodicTask.objects.filter(task="jobs.run_schedule").exists()
    )


def test_the_admin_form_saves_a_schedule_with_its_time_zone(make_user):
    client = _admin(make_user)
    owner = make_user()
    response = client.post(
        "/admin/jobs/jobschedule/add/",
        {"name": "berlin", "kind": "simulate", "params": '{"steps": 1}', "owner": owner.pk,
         "crontab": "30 2 * * *", "timezone": "Europe/Berlin", "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = JobSchedule.objects.get(name="berlin")
    assert str(schedule.periodic_task.crontab.timezone) == "Europe/Berlin"
    listing = client.get("/admin/jobs/jobschedule/").content.decode()
    assert "30 2 * * * (Europe/Berlin)" in listing


@pytest.mark.parametrize("crontab", ["61 * * * *", "0 0 31 2 *"])
def test_the_command_refuses_a_bad_crontab_naming_the_option(make_user, crontab):
    owner = make_user()
    with pytest.raises(CommandError) as refused:
        call_command(
            "schedules", "add", "bad", "--kind", "simulate", "--user", owner.username, "--crontab", crontab
        )
    assert "--crontab:" in str(refused.value)
    assert not JobSchedule.objects.exists()


def test_the_command_adds_lists_pauses_resumes_and_runs_a_schedule(make_user):
    owner = make_user()
    out = StringIO()
    call_command("schedules", "add", "ny", "--kind", "simulate", "--user", owner.username, "--params",
                 '{"steps": 1, "step_ms": 0}', "--crontab", "30 2 * * *", "--timezone", "America/New_York",
                 stdout=out)  # fmt: skip
    schedule = JobSchedule.objects.get(name="ny")
    assert schedule.timezone == "America/New_York" and schedule.enabled
    call_command("schedules", "pause", "ny", stdout=out)
    assert not JobSchedule.objects.get(pk=schedule.pk).enabled
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    call_command("schedules", "resume", "ny", stdout=out)
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    call_command("schedules", "run-now", "ny", stdout=out)
    job = Job.objects.get(owner=owner)
    listing = StringIO()
    call_command("schedules", "list", stdout=listing)
    assert "ny\tsimulate" in listing.getvalue() and "\tqueued" in listing.getvalue()
    assert job.schedule_id == schedule.pk


# --- Duplicated beat rows ----------------------------------------------------------------------------


def test_identical_crontab_rows_in_beats_table_do_not_break_adding_a_schedule(make_user):
    for _ in range(2):  # the state django-celery-beat's own admin (and older versions) can leave
        CrontabSchedule.objects.create(minute="0", hour="3", day_of_month="*", month_of_year="*",
                                       day_of_week="*", timezone="UTC")  # fmt: skip
    client = _admin(make_user)
    response = client.post(
        "/admin/jobs/jobschedule/add/",
        {"name": "dup", "kind": "simulate", "params": '{"steps": 1}', "owner": make_user().pk,
         "crontab": "0 3 * * *", "timezone": "UTC", "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 302
    assert JobSchedule.objects.get(name="dup").periodic_task.crontab_id in set(
        CrontabSchedule.objects.values_list("pk", flat=True)
    )
    assert CrontabSchedule.objects.count() == 2


# --- Daylight-saving changes -----------------------------------------------------------------------


def _runs(crontab, tz, start, end):
    """Every instant the next-run computation yields in [start, end)."""
    parsed, runs, at = schedules.crontab_parse(crontab), [], start
    while (at := schedules.crontab_next_run(parsed, tz=tz, after=at)) < end:
        runs.append(at.astimezone(tz))
    return runs


def _beat_runs(schedule, start, end):
    """What beat's own scheduler object (django-celery-beat's TzAwareCrontab, built from the
    schedule's CrontabSchedule row) fires, ticking a fake clock minute by minute."""
    entry = PeriodicTask.objects.get(pk=schedule.periodic_task_id).crontab.schedule
    clock = {"now": start}
    entry.nowfun = lambda: clock["now"].astimezone(entry.tz)
    fired, last, at = [], start, start
    while at < end:
        clock["now"] = at
        if entry.is_due(last).is_due:
            fired.append(at.astimezone(entry.tz))
            last = at
        at += timedelta(minutes=1)
    return fired


def test_a_0230_run_on_the_spring_forward_day_happens_once_right_after_the_gap(make_user):
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
    start, end = datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 10, 12, tzinfo=UTC)
    expected = [
        datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK),  # 07:30 UTC: 02:30 at the pre-change offset
        datetime(2026, 3, 9, 2, 30, tzinfo=NEW_YORK),
        datetime(2026, 3, 10, 2, 30, tzinfo=NEW_YORK),
    ]
    assert _runs("30 2 * * *", NEW_YORK, start, end) == expected
    schedule = _schedule(make_user(), crontab="30 2 * * *", timezone="America/New_York")
    assert _beat_runs(schedule, start, end) == expected
    assert schedules.schedule_next_run(schedule, now=start) == expected[0]


def test_a_0130_run_on_the_fall_back_day_happens_once_at_its_first_occurrence(make_user):
    # 2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
    start, end = datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 3, 12, tzinfo=UTC)
    runs = _runs("30 1 * * *", NEW_YORK, start, end)
    assert [(r.day, r.hour, r.minute) for r in runs] == [(1, 1, 30), (2, 1, 30), (3, 1, 30)]
    assert runs[0].utcoffset() == timedelta(hours=-4)  # the first 01:30 (EDT), not the second
    schedule = _schedule(make_user(), crontab="30 1 * * *", timezone="America/New_York")
    assert _beat_runs(schedule, start, end) == runs


@pytest.mark.parametrize("day", [datetime(2026, 3, 8, 4, tzinfo=UTC), datetime(2026, 11, 1, 3, tzinfo=UTC)])
def test_the_next_run_shown_is_when_beat_fires_an_hourly_schedule_across_a_change(make_user, day):
    schedule = _schedule(make_user(), crontab="30 * * * *", timezone="America/New_York")
    end = day + timedelta(hours=6)
    assert _runs("30 * * * *", NEW_YORK, day, end) == _beat_runs(schedule, day, end)


def test_europe_berlin_transitions_also_run_once(make_user):
    berlin = ZoneInfo("Europe/Berlin")
    spring = _runs(
        "30 2 * * *", berlin, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    )
    autumn = _runs(
        "30 2 * * *", berlin, datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC)
    )
    assert len(spring) == 2 and len(autumn) == 2
    assert autumn[0].utcoffset() == timedelta(hours=2)  # 02:30 CEST, the first of the two


# --- Next run, last run, outcome; Run now, pause, resume from the app -------------------------------


def test_the_schedules_page_shows_next_run_last_run_and_outcome(make_user):
    operator = make_user(operator=True)
    schedule = _schedule(make_user(), crontab="0 3 * * *")
    job = schedules.schedule_run(schedule_id=schedule.pk)
    client = Client()
    client.force_login(operator)
    page = client.get("/operations/schedules/").content.decode()
    next_run = schedules.schedule_next_run(JobSchedule.objects.get(pk=schedule.pk))
    assert next_run is not None and next_run.strftime("%Y-%m-%d %H:%M") in page
    assert f"/jobs/{job.id}/" in page and "queued" in page
    assert JobSchedule.objects.get(pk=schedule.pk).last_run_at == job.created_at


def test_an_operator_runs_pauses_and_resumes_a_schedule_from_the_app(make_user):
    owner = make_user()
    schedule = _schedule(owner)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(operator=True))
    page = client.get("/operations/schedules/")
    token = (
        page.cookies["csrftoken"].value if "csrftoken" in page.cookies else client.cookies["csrftoken"].value
    )

    def act(action, csrf=token):
        return client.post("/operations/schedules/", {"schedule": schedule.pk, "action": action,
                                                      "csrfmiddlewaretoken": csrf})  # fmt: skip

    assert act("pause", csrf="forged").status_code == 403
    assert act("pause").status_code == 302
    assert not JobSchedule.objects.get(pk=schedule.pk).enabled
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert act("run").status_code == 302  # Run now works on a paused schedule
    assert Job.objects.get(owner=owner).schedule_id == schedule.pk
    assert act("resume").status_code == 302
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled


def test_acting_on_a_schedule_takes_the_act_on_any_job_power(make_user):
    schedule = _schedule(make_user())
    viewer = grant_powers(make_user(is_staff=True), Power.USE_OPERATOR_VIEW)
    client = Client()
    client.force_login(viewer)
    assert client.get("/operations/schedules/").status_code == 200
    assert (
        client.post("/operations/schedules/", {"schedule": schedule.pk, "action": "run"}).status_code == 403
    )
    assert (
        client.post("/operations/schedules/", {"schedule": schedule.pk, "action": "pause"}).status_code == 403
    )
    assert not Job.objects.exists() and JobSchedule.objects.get(pk=schedule.pk).enabled
    stranger = Client()
    stranger.force_login(make_user())
    assert stranger.get("/operations/schedules/").status_code == 403


def test_the_admin_runs_pauses_and_resumes_selected_schedules(make_user):
    client = _admin(make_user)
    schedule = _schedule(make_user())
    for action in ("pause", "run_now"):
        client.post("/admin/jobs/jobschedule/", {"action": action, "_selected_action": [schedule.pk]})
    assert not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    assert Job.objects.filter(schedule=schedule).count() == 1
    client.post("/admin/jobs/jobschedule/", {"action": "resume", "_selected_action": [schedule.pk]})
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled


def test_beat_skips_a_paused_schedule(make_user):
    schedule = _schedule(make_user(), enabled=False)
    assert schedules.schedule_run(schedule_id=schedule.pk) is None
    assert not Job.objects.exists()


# --- Repeated failures ---------------------------------------------------------------------------


def _fail(job, error="boom"):
    states.job_finish(job_id=job.id, state=JobState.FAILED, error=error)


def _streak_notifications(owner):
    return Notification.objects.filter(recipient=owner, title__contains="keeps failing")


def test_a_schedule_whose_runs_keep_failing_notifies_its_owner_once(make_user, settings):
    settings.RUNBOARD_SCHEDULE_FAILURES_NOTIFY = 3
    owner = make_user()
    schedule = _schedule(owner)
    for n in range(5):
        _fail(schedules.schedule_run(schedule_id=schedule.pk), error=f"boom {n}")
        assert _streak_notifications(owner).count() == (1 if n >= 2 else 0)
    assert JobSchedule.objects.get(pk=schedule.pk).failure_streak == 5
    assert "boom 2" in _streak_notifications(owner).get().body


def test_a_success_ends_the_failure_streak_and_a_new_streak_notifies_again(make_user, settings):
    settings.RUNBOARD_SCHEDULE_FAILURES_NOTIFY = 2
    owner = make_user()
    schedule = _schedule(owner)
    _fail(schedules.schedule_run(schedule_id=schedule.pk))
    ok = schedules.schedule_run(schedule_id=schedule.pk)
    states.job_transition(job_id=ok.id, to=JobState.RUNNING)
    assert states.job_finish(job_id=ok.id, state=JobState.SUCCEEDED, result={"ok": True})
    _fail(schedules.schedule_run(schedule_id=schedule.pk))
    assert not _streak_notifications(owner).exists()
    _fail(schedules.schedule_run(schedule_id=schedule.pk))
    _fail(schedules.schedule_run(schedule_id=schedule.pk))
    assert _streak_notifications(owner).count() == 1


# --- The API ---------------------------------------------------------------------------------------


def _api_client(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("crontab", ["61 * * * *", "0 0 31 2 *"])
def test_the_api_refuses_a_bad_crontab_as_a_field_error(make_user, crontab):
    client = _api_client(make_user(operator=True, is_superuser=True))
    response = client.post(
        "/api/v1/schedules/",
        {"name": "bad", "kind": "simulate", "params": {"steps": 1}, "crontab": crontab},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["crontab"]
    assert not JobSchedule.objects.exists()


def test_the_api_adds_lists_pauses_resumes_and_runs_a_schedule(make_user):
    operator = make_user(operator=True, is_superuser=True)
    owner = make_user()
    client = _api_client(operator)
    created = client.post(
        "/api/v1/schedules/",
        {"name": "ny", "kind": "simulate", "params": {"steps": 1, "step_ms": 0}, "owner": owner.username,
         "crontab": "30 2 * * *", "timezone": "America/New_York"},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 201, created.json()
    info = created.json()
    assert info["owner"] == owner.username and info["timezone"] == "America/New_York" and info["next_run_at"]
    sid = info["id"]
    assert client.post(f"/api/v1/schedules/{sid}/pause/").json()["enabled"] is False
    assert client.post(f"/api/v1/schedules/{sid}/pause/").json()["next_run_at"] is None
    ran = client.post(f"/api/v1/schedules/{sid}/run/")
    assert ran.status_code == 201 and ran.json()["owner"] == owner.username
    assert client.post(f"/api/v1/schedules/{sid}/resume/").json()["enabled"] is True
    [listed] = client.get("/api/v1/schedules/").json()["results"]
    assert listed["last_job_id"] == ran.json()["id"] and listed["last_outcome"] == "queued"


def test_the_api_checks_powers_on_schedules(make_user):
    schedule = _schedule(make_user())
    viewer = _api_client(grant_powers(make_user(is_staff=True), Power.USE_OPERATOR_VIEW))
    assert viewer.get("/api/v1/schedules/").status_code == 200
    assert viewer.post(f"/api/v1/schedules/{schedule.pk}/run/").status_code == 403
    assert viewer.post(f"/api/v1/schedules/{schedule.pk}/pause/").status_code == 403
    assert viewer.post("/api/v1/schedules/", {"name": "x", "kind": "simulate", "every_seconds": 5},
                       content_type="application/json").status_code == 403  # fmt: skip
    stranger = _api_client(make_user())
    assert stranger.get("/api/v1/schedules/").json() == {"results": []}  # their own: none
    assert stranger.post(f"/api/v1/schedules/{schedule.pk}/run/").status_code == 404
    assert not Job.objects.exists() and JobSchedule.objects.get(pk=schedule.pk).enabled


def test_beats_own_crontab_admin_refuses_a_never_firing_crontab(make_user):
    client = _admin(make_user)
    fields = {"minute": "0", "hour": "0", "day_of_month": "31", "month_of_year": "2", "day_of_week": "*",
              "timezone": "UTC",
              "periodictask_set-TOTAL_FORMS": "0", "periodictask_set-INITIAL_FORMS": "0"}  # fmt: skip
    response = client.post("/admin/django_celery_beat/crontabschedule/add/", fields)
    assert response.status_code == 200
    assert "day_of_month" in response.context["adminform"].form.errors
    ok = client.post("/admin/django_celery_beat/crontabschedule/add/", {**fields, "day_of_month": "29"})
    assert ok.status_code == 302, ok.context["adminform"].form.errors if ok.context else ok


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 151, "kind": "simulate", "every_seconds": 5}, "name"),
        ({"name": "neg", "kind": "simulate", "every_seconds": -5}, "every_seconds"),
        ({"name": "big", "kind": "simulate", "every_seconds": 2**40}, "every_seconds"),
        ({"name": "tz", "kind": "simulate", "crontab": "0 3 * * *", "timezone": "Nowhere/Land"}, "timezone"),
    ],
)
def test_the_api_refuses_what_the_database_cannot_hold_as_field_errors(make_user, body, field):
    client = _api_client(make_user(operator=True, is_superuser=True))
    response = client.post("/api/v1/schedules/", body, content_type="application/json")
    assert response.status_code == 400 and field in response.json()["fields"], response.json()
    assert not JobSchedule.objects.exists()


# --- Launch limits (a review: Run now and short intervals launched past them) -----------------------


def test_run_now_is_a_launch_of_the_owner_within_their_launch_limit(make_user, settings):
    """620 Run now calls launched 620 jobs in 13 s (past a limit of 30 a minute) and starved every
    other user; now each is a launch like any other: 429 with Retry-After past the limit, on the
    API, the page, the command and the admin action."""
    settings.RUNBOARD_LAUNCHES_PER_MINUTE = 3
    owner = make_user()
    schedule = _schedule(owner, enabled=False)
    client = _api_client(owner)
    answers = [client.post(f"/api/v1/schedules/{schedule.pk}/run/").status_code for _ in range(5)]
    assert answers == [201, 201, 201, 429, 429]
    limited = client.post(f"/api/v1/schedules/{schedule.pk}/run/")
    assert 1 <= int(limited["Retry-After"]) <= 60
    with pytest.raises(CommandError, match="Too many launches"):
        call_command("schedules", "run-now", schedule.name, stdout=StringIO())
    admin = _admin(make_user)
    response = admin.post(
        "/admin/jobs/jobschedule/", {"action": "run_now", "_selected_action": [schedule.pk]}, follow=True
    )
    assert "1 not run: the owner is at their launch limit" in response.content.decode()
    assert Job.objects.filter(owner=owner).count() == 3


@pytest.mark.parametrize("every", [-1, 0, 1, 59])
def test_an_interval_under_the_floor_is_an_every_seconds_field_error(every, make_user):
    """Beat's runs are not counted in the launch limit: a schedule fires at most once a minute."""
    with pytest.raises(schedules.ValidationError) as refused:
        schedules.schedule_validate(kind="simulate", params={}, every_seconds=every, crontab="")
    assert refused.value.message_dict == {"every_seconds": ["From 60 to 2147483647 seconds."]}
    client = _api_client(make_user(operator=True, is_superuser=True))
    response = client.post("/api/v1/schedules/", {"name": "x", "kind": "simulate", "every_seconds": every},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400 and "every_seconds" in response.json()["fields"], response.json()


def test_an_operators_retry_is_checked_against_the_owners_launch_limit(make_user, settings):
    """An operator's 35 retries of Alice's job all launched, then locked Alice out for a minute:
    retries for someone are launches of theirs, checked as well as counted."""
    from tests.jobs.factories import make_job

    settings.RUNBOARD_LAUNCHES_PER_MINUTE = 2
    alice = make_user()
    finished = make_job(owner=alice, state=JobState.FAILED)
    Job.objects.filter(pk=finished.pk).update(created_at=finished.created_at - timedelta(minutes=5))
    operator = _api_client(make_user(operator=True))
    retry = f"/api/v1/jobs/{finished.id}/retry/"
    answers = [operator.post(retry, "{}", content_type="application/json").status_code for _ in range(4)]
    assert answers == [201, 201, 429, 429]


def test_an_enabled_crontab_that_fires_in_decades_shows_when_not_nothing():
    """29 February on a Monday next comes in 2044: enabled, it showed no next run (read as paused)."""
    schedule = JobSchedule(kind="simulate", crontab="0 0 29 2 1", timezone="UTC", enabled=True)
    after = datetime(2026, 11, 29, tzinfo=UTC)
    assert schedules.schedule_next_run(schedule, now=after) == datetime(2044, 2, 29, tzinfo=UTC)


def test_an_owner_lists_their_own_schedules_and_no_one_elses(make_user):
    """An owner may run, pause and resume their schedules by id, but could not list them (403)."""
    alice, bob = make_user(), make_user()
    _schedule(alice, name="alice's")
    _schedule(bob, name="bob's")
    listed = _api_client(alice).get("/api/v1/schedules/").json()["results"]
    assert [row["name"] for row in listed] == ["alice's"]
    operator = _api_client(grant_powers(make_user(is_staff=True), Power.USE_OPERATOR_VIEW))
    every = operator.get("/api/v1/schedules/").json()["results"]
    assert {row["name"] for row in every} == {"alice's", "bob's"}


def test_one_owner_has_at_most_ten_schedules_so_beat_launches_at_most_ten_jobs_a_minute(make_user):
    """Beat's runs are never refused by the launch limit (a schedule does not skip a run); 40
    schedules of one user launched 40 jobs a minute (a review)."""
    owner = make_user()
    for index in range(10):
        _schedule(owner, name=f"s{index}", crontab="", every_seconds=60)
    with pytest.raises(schedules.ValidationError) as refused:
        _schedule(owner, name="eleventh", crontab="", every_seconds=60)
    most = "This user has 10 schedules, the most one owner may have."
    assert refused.value.message_dict == {"owner": [most]}
    kept = JobSchedule.objects.get(name="s0")
    kept.every_seconds = 120
    schedules.schedule_save(schedule=kept)  # editing one of the ten is fine
    assert JobSchedule.objects.filter(owner=owner).count() == 10


@pytest.mark.parametrize("digits", ["%C2%B2", "%E2%91%A0", "%D9%A4%D9%A2"])
def test_a_schedule_id_in_non_ascii_digits_is_a_404_not_a_500(make_user, digits):
    """ "²".isdigit() is true and int("²") raises: a 500 with a traceback; Arabic-Indic digits
    even named schedule 42 (a review)."""
    schedule = _schedule(make_user(operator=True, is_superuser=True))
    client = _api_client(schedule.owner)
    for action in ("run", "pause", "resume"):
        assert client.post(f"/api/v1/schedules/{digits}/{action}/").status_code == 404
    page = client.post("/operations/schedules/", {"action": "pause", "schedule": "²"})
    assert page.status_code == 302 and JobSchedule.objects.get(pk=schedule.pk).enabled
    client.post("/operations/schedules/", {"action": "pause", "schedule": "٤٢"})
    assert JobSchedule.objects.get(pk=schedule.pk).enabled


def test_beats_own_admin_cannot_change_what_drives_a_job_schedule(make_user):
    """django-celery-beat's interval and periodic-task pages skipped every schedule check: an
    interval of 2 s put on a schedule's task launched a job every 2 s while the schedule still
    read "every 3600 s" (a review). A job schedule's task and timing are read-only there, and no
    other task may run schedules."""
    client = _admin(make_user)
    schedule = _schedule(make_user(), crontab="", every_seconds=3600)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    assert client.get(url).status_code == 200  # shown, read-only
    fields = {"name": task.name, "regtask": "jobs.run_schedule", "interval": task.interval_id,
              "args": task.args, "kwargs": "{}", "enabled": "on"}  # fmt: skip
    refused = client.post(url, fields)
    assert refused.status_code == 403
    interval = task.interval
    assert client.post(f"/admin/django_celery_beat/intervalschedule/{interval.pk}/change/",
                       {"every": "2", "period": "seconds"}).status_code == 403  # fmt: skip
    assert IntervalSchedule.objects.get(pk=interval.pk).every == 3600
    # Periodic tasks are view only: an add ran jobs.run_schedule indirectly (celery.starmap over
    # it, 5 jobs a run) or took the next schedule's name; the list's actions disabled or ran a
    # schedule's task past every check (a third review).
    starmap = '[{"task": "jobs.run_schedule", "args": [], "kwargs": {}, "options": {}}, [[1], [1]]]'
    sneaky = {"name": f"job-schedule:{schedule.pk + 1}", "regtask": "celery.starmap", "interval": interval.pk,
              "args": starmap, "kwargs": "{}", "enabled": "on"}  # fmt: skip
    created = client.post("/admin/django_celery_beat/periodictask/add/", sneaky)
    assert created.status_code == 403 and PeriodicTask.objects.count() == 1
    for action in ("disable_tasks", "toggle_tasks", "run_tasks"):
        chosen = {"action": action, "_selected_action": [task.pk]}
        client.post("/admin/django_celery_beat/periodictask/", chosen)
    assert PeriodicTask.objects.get(pk=task.pk).enabled and not Job.objects.exists()


def test_the_command_names_its_user_option_when_the_owner_has_too_many_schedules(make_user):
    owner = make_user("busy")
    for index in range(10):
        _schedule(owner, name=f"s{index}", crontab="", every_seconds=60)
    with pytest.raises(CommandError, match="--user: This user has 10 schedules"):
        call_command("schedules", "add", "eleventh", "--kind", "simulate", "--user", "busy", "--every", "60",
                     stdout=StringIO())  # fmt: skip


def test_deleting_a_schedules_owner_takes_its_beat_task_with_it(make_user):
    """The cascade from a deleted user calls no service: its job-schedule:N task was left firing
    at nothing, and beat's task admin is view only (a review)."""
    owner = make_user()
    schedule = _schedule(owner)
    assert PeriodicTask.objects.filter(pk=schedule.periodic_task_id).exists()
    owner.delete()
    assert not JobSchedule.objects.exists() and not PeriodicTask.objects.exists()


def test_the_timing_of_a_built_in_task_is_read_only_in_beats_admin_too(make_user):
    """The reaper's interval set to 7 days would end nothing stalled: its task is view only, so
    its interval row is too (a review changed it)."""
    client = _admin(make_user)
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="reap-stale-jobs", task="jobs.reap_stale_jobs", interval=every)
    spare = IntervalSchedule.objects.create(every=99, period=IntervalSchedule.SECONDS)
    url = "/admin/django_celery_beat/intervalschedule/{}/change/"
    assert client.post(url.format(every.pk), {"every": "7", "period": "days"}).status_code == 403
    assert IntervalSchedule.objects.get(pk=every.pk).every == 10
    inlines = {"periodictask_set-TOTAL_FORMS": "0", "periodictask_set-INITIAL_FORMS": "0"}
    assert client.post(url.format(spare.pk), {"every": "7", "period": "days", **inlines}).status_code == 302


def test_a_name_taken_at_the_same_moment_is_a_field_error_not_a_500(make_user, monkeypatch):
    """Two POSTs of one name at once: the check, then the save; one answered 500 (a review)."""
    client = _api_client(make_user(operator=True, is_superuser=True))
    real_save = schedules.schedule_save

    def racing(*, schedule):  # the other request saves the same name between check and save
        real_save(schedule=JobSchedule(name=schedule.name, kind="simulate", owner=schedule.owner,
                                       crontab="0 3 * * *"))  # fmt: skip
        return real_save(schedule=schedule)

    monkeypatch.setattr(schedules, "schedule_save", racing)
    response = client.post("/api/v1/schedules/", {"name": "twin", "kind": "simulate", "crontab": "0 3 * * *"},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400 and response.json()["fields"] == {
        "name": ["A schedule with this name exists already."]
    }


def test_the_command_refuses_a_name_longer_than_the_column(make_user):
    make_user("root2")
    with pytest.raises(CommandError, match="at most 150 characters"):
        call_command("schedules", "add", "n" * 151, "--kind", "simulate", "--user", "root2", "--every", "120",
                     stdout=StringIO())  # fmt: skip
