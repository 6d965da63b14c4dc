"""Operators' alerts (issue 16 §14, docs/alerts.md): a failure rate or a queue wait above its
threshold notifies the subscriber once per episode, however often and however many housekeeping
processes evaluate; the beat entry that evaluates them; and the page that manages them."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import alerts
from dashboard.alerts import AlertRuleInvalid, alert_rule_create, alerts_evaluate
from dashboard.celery import app
from jobs import tasks
from jobs.models import Job, JobState
from jobs.permissions import Power
from notifications.models import AlertRule, Notification
from tests.conftest import grant_powers
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db

CSV = "csv_profile"


def finished(owner, kind=CSV, *, failed=0, succeeded=0, cancelled=0, ago=timedelta(0)):
    at = timezone.now() - ago
    for state, n in (
        (JobState.FAILED, failed),
        (JobState.SUCCEEDED, succeeded),
        (JobState.CANCELLED, cancelled),
    ):
        for _ in range(n):
            make_job(owner=owner, kind=kind, state=state, finished_at=at)


def waiting_since(job, moment):
    """``created_at`` is set on insert (auto_now_add): move it back as a job queued then."""
    Job.objects.filter(pk=job.pk).update(created_at=moment)
    return job


def titles(user):
    return list(Notification.objects.filter(recipient=user).order_by("id").values_list("title", flat=True))


@pytest.fixture
def operator(make_user):
    return make_user(operator=True)


def failure_rule(user, threshold=20, **fields):
    return alert_rule_create(user=user, metric="failure_rate", kind=CSV, threshold=threshold, **fields)


# --- Once per episode ----------------------------------------------------------------------------


def test_a_failure_rate_alert_fires_once_per_episode_resolves_once_and_fires_again_on_a_new_one(operator):
    rule = failure_rule(operator)
    finished(operator, failed=4, succeeded=6)  # 40 %

    result = alerts_evaluate()
    assert (result.fired, result.resolved) == (1, 0)
    [fired] = Notification.objects.filter(recipient=operator)
    assert fired.title == "Failure rate of Profile a CSV file is 40 % (threshold 20 %)"
    assert (fired.level, fired.link) == ("error", "/operations/")
    rule.refresh_from_db()
    assert rule.firing and rule.since is not None and rule.last_value == 40.0

    for _ in range(3):  # still above: the episode goes on, nothing new is said
        assert alerts_evaluate().notified == 0
    finished(operator, failed=1)  # 5 of 11: worse, still the same episode
    assert alerts_evaluate().notified == 0
    assert len(titles(operator)) == 1
    rule.refresh_from_db()
    assert rule.last_value == 45.5

    finished(operator, succeeded=20)  # 5 of 31: 16.1 %, back below
    assert alerts_evaluate().notified == 0  # below: the episode ends if it stays so
    later = timezone.now() + alerts.KEEP_FIRING_FOR
    assert alerts_evaluate(now=later).resolved == 1
    assert alerts_evaluate(now=later).notified == 0
    resolved = Notification.objects.filter(recipient=operator).first()  # newest first
    assert resolved.level == "success"
    assert resolved.title.startswith("Resolved: failure rate of Profile a CSV file is back below 20 %")
    rule.refresh_from_db()
    assert not rule.firing and rule.last_value == 16.1

    finished(operator, failed=10)  # 15 of 41: 36.6 %, a new episode
    assert alerts_evaluate(now=later).fired == 1
    assert alerts_evaluate(now=later).notified == 0
    assert len(titles(operator)) == 3
    assert titles(operator)[-1] == "Failure rate of Profile a CSV file is 36.6 % (threshold 20 %)"


def test_only_jobs_that_finished_within_the_window_count(operator):
    failure_rule(operator)
    finished(operator, failed=10, ago=timedelta(minutes=11))  # before the 10-minute window
    finished(operator, failed=1, succeeded=9)  # 10 % now
    assert alerts_evaluate().notified == 0
    assert AlertRule.objects.get().last_value == 10.0
    # Later, the recent ones leave the window too: nothing left to judge.
    assert alerts_evaluate(now=timezone.now() + timedelta(minutes=11)).notified == 0
    assert AlertRule.objects.get().last_value is None


def test_one_failed_job_is_not_a_100_percent_failure_rate_below_the_minimum_of_decided_jobs(operator):
    failure_rule(operator, min_jobs=5)
    finished(operator, failed=1)
    assert alerts_evaluate().notified == 0
    finished(operator, failed=3, cancelled=5)  # cancelled jobs are no decision: still 4 decided
    assert alerts_evaluate().notified == 0
    rule = AlertRule.objects.get()
    assert rule.last_value is None and not rule.firing
    assert "too few jobs to judge" in alerts.alert_rule_state(rule)

    finished(operator, failed=1)  # the fifth decided job
    assert alerts_evaluate().fired == 1
    assert titles(operator) == ["Failure rate of Profile a CSV file is 100 % (threshold 20 %)"]


def test_another_kinds_failures_do_not_count(operator):
    failure_rule(operator)
    finished(operator, kind="simulate", failed=10)
    finished(operator, succeeded=5)
    assert alerts_evaluate().notified == 0


# --- Exactly once when two evaluations race -----------------------------------------------------


def test_two_evaluations_at_the_same_moment_notify_once(operator, monkeypatch):
    """The second housekeeping process evaluates between the first one's read of the rules and
    its UPDATE: the first then works from a stale copy, and its conditional UPDATE loses."""
    failure_rule(operator)
    finished(operator, failed=5)
    values = alerts._values
    inner: list[alerts.AlertsEvaluated] = []
    raced = []

    def the_other_process_evaluates_now(rules, now):
        if not raced:
            raced.append(True)
            inner.append(alerts_evaluate(now=now))
        return values(rules, now)

    monkeypatch.setattr(alerts, "_values", the_other_process_evaluates_now)
    outer = alerts_evaluate()
    assert inner[0].fired == 1
    assert outer.fired == 0
    assert len(titles(operator)) == 1


def test_a_stale_copy_of_a_rule_changes_nothing_and_notifies_nobody(operator):
    rule = failure_rule(operator)
    stale = AlertRule.objects.get(pk=rule.pk)
    finished(operator, failed=5)
    assert alerts_evaluate().fired == 1
    now = timezone.now()
    assert alerts._change_state(stale, firing=True, value=100.0, now=now) is False
    # Nor can a copy read before an episode that has since ended start another one.
    finished(operator, succeeded=100)
    assert alerts_evaluate().resolved == 0
    assert alerts_evaluate(now=timezone.now() + alerts.KEEP_FIRING_FOR).resolved == 1
    assert alerts._change_state(stale, firing=True, value=100.0, now=now) is False
    assert len(titles(operator)) == 2


# --- Who is told -----------------------------------------------------------------------------------


def test_a_subscriber_who_lost_the_operator_view_or_was_deactivated_gets_nothing(make_user):
    revoked, deactivated, kept = (make_user(operator=True) for _ in range(3))
    for user in (revoked, deactivated, kept):
        failure_rule(user)
    revoked.groups.clear()
    grant_powers(revoked, Power.VIEW_ALL_JOBS)  # other powers do not stand in for it
    deactivated.is_active = False
    deactivated.save()
    finished(kept, failed=5)

    result = alerts_evaluate()
    assert (result.rules, result.fired) == (1, 1)
    assert titles(revoked) == titles(deactivated) == []
    assert len(titles(kept)) == 1


def test_a_superuser_without_a_group_is_an_operator(make_user):
    boss = make_user(is_superuser=True)
    failure_rule(boss)
    finished(boss, failed=5)
    assert alerts_evaluate().fired == 1


# --- Queue wait ----------------------------------------------------------------------------------


def test_a_queue_wait_alert_fires_on_the_oldest_waiting_job_and_resolves_once_it_starts(operator):
    rule = alert_rule_create(user=operator, metric="queue_wait", queue="default", threshold=60)
    now = timezone.now()
    waiting_since(
        make_job(owner=operator, state=JobState.RUNNING), now - timedelta(minutes=30)
    )  # not waiting
    recent = waiting_since(make_job(owner=operator), now - timedelta(seconds=30))
    assert alerts_evaluate(now=now).notified == 0
    rule.refresh_from_db()
    assert rule.last_value == 30.0

    oldest = waiting_since(make_job(owner=operator, admitted_at=None), now - timedelta(seconds=95))
    assert alerts_evaluate(now=now).fired == 1
    assert alerts_evaluate(now=now).notified == 0
    [fired] = Notification.objects.filter(recipient=operator)
    assert fired.title == "Queue wait on default is 95 s (threshold 60 s)"
    assert (fired.level, fired.link) == ("warning", "/operations/")
    assert alerts.alert_rule_state(AlertRule.objects.get()).startswith("firing since ")

    for job in (oldest, recent):
        job.state = JobState.RUNNING
        job.save()
    assert alerts_evaluate(now=now).notified == 0  # below: it ends if it stays so
    assert alerts_evaluate(now=now + alerts.KEEP_FIRING_FOR).resolved == 1
    assert Notification.objects.filter(recipient=operator).first().title == (
        "Resolved: queue wait on default is back below 60 s (now 0 s)"
    )


def test_a_value_hovering_around_the_threshold_is_one_episode_not_one_per_crossing(operator):
    """Without "keep firing for", each pass across the threshold started or ended an episode:
    a value hovering around 20 % sent two notifications a minute."""
    failure_rule(operator)
    finished(operator, failed=3, succeeded=7)  # 30 %
    start = timezone.now()
    assert alerts_evaluate(now=start).fired == 1
    finished(operator, succeeded=10)  # 3 of 20: 15 %, below
    assert alerts_evaluate(now=start + timedelta(minutes=1)).notified == 0
    finished(operator, failed=3)  # 6 of 23: 26 %, above again within KEEP_FIRING_FOR
    assert alerts_evaluate(now=start + timedelta(minutes=2)).notified == 0
    finished(operator, succeeded=20)  # 6 of 43: 14 %, below: the clock starts again
    assert alerts_evaluate(now=start + timedelta(minutes=3)).notified == 0
    state = alerts.alert_rule_state(AlertRule.objects.get())
    assert "now 14 %: back below, resolved at " in state and state.endswith(" if it stays so")
    assert alerts_evaluate(now=start + timedelta(minutes=7)).notified == 0  # below for 4 min
    assert alerts_evaluate(now=start + timedelta(minutes=8)).resolved == 1  # below for 5 min
    assert len(titles(operator)) == 2


# --- Cost ------------------------------------------------------------------------------------------


def test_each_distinct_metric_is_computed_once_whatever_the_number_of_rules(make_user):
    users = [make_user(operator=True) for _ in range(6)]
    finished(users[0], failed=1, succeeded=9)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert alerts_evaluate().notified == 0
        return len(captured)

    failure_rule(users[0], threshold=50)
    alert_rule_create(user=users[0], metric="queue_wait", queue="default", threshold=600)
    few = queries()
    for user in users[1:]:
        failure_rule(user, threshold=50)
        failure_rule(user, threshold=60)
        alert_rule_create(user=user, metric="queue_wait", queue="default", threshold=600)
    assert queries() == few


def test_failure_rates_of_every_window_are_read_in_one_query(make_user):
    """Found by review: one scan of the finished jobs per distinct window (60 for 60 rules)."""
    users = [make_user(operator=True) for _ in range(3)]
    for n, user in enumerate(users):
        for window in range(1, 11):
            alerts.alert_rule_create(
                user=user, metric="failure_rate", kind=CSV, threshold=50, window_minutes=window + 10 * n
            )
    finished(users[0], failed=1, succeeded=9)

    with CaptureQueriesContext(connection) as captured:
        alerts_evaluate()

    assert len([q for q in captured.captured_queries if 'FROM "jobs_job"' in q["sql"]]) == 1


def test_the_failure_rate_reads_only_the_jobs_that_finished_within_the_window(operator):
    failure_rule(operator)
    finished(operator, failed=2, succeeded=3)
    with CaptureQueriesContext(connection) as captured:
        alerts_evaluate()
    [sql] = [q["sql"] for q in captured.captured_queries if 'FROM "jobs_job"' in q["sql"]]
    assert '"finished_at" >=' in sql and "GROUP BY" not in sql, sql
    if connection.vendor == "sqlite":  # no statistics: its planner must still pick the index
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        assert "job_finished_idx" in plan, plan


# --- The housekeeping task -------------------------------------------------------------------------


def test_the_beat_entry_evaluates_alerts_every_30_seconds_on_the_housekeeping_queue(operator):
    [entry] = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "jobs.evaluate_alerts"]
    assert entry["schedule"] <= 60
    assert tasks.evaluate_alerts.name == "jobs.evaluate_alerts"
    route = app.amqp.router.route({}, "jobs.evaluate_alerts")
    assert route["queue"].name == settings.HOUSEKEEPING_QUEUE
    failure_rule(operator)
    finished(operator, failed=5)
    assert tasks.evaluate_alerts() == 1  # the task only calls the service
    assert tasks.evaluate_alerts() == 0


@pytest.mark.django_db(transaction=True)
def test_the_housekeeping_process_evaluates_alerts_sent_as_beat_sends_them(housekeeping_worker, make_user):
    operator = make_user(operator=True)
    failure_rule(operator)
    finished(operator, failed=5)
    app.send_task("jobs.evaluate_alerts")  # by name and routed, as beat does
    deadline = time.monotonic() + 30
    while not Notification.objects.filter(recipient=operator).exists():
        assert time.monotonic() < deadline, "the housekeeping process never evaluated the alerts"
        time.sleep(0.1)
    assert AlertRule.objects.get().firing


# --- Rules: what may be asked for ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"metric": "failure_rate", "kind": CSV, "threshold": 100}, "below 100 %"),
        ({"metric": "failure_rate", "kind": CSV, "threshold": -1}, "at least 0 %"),
        ({"metric": "failure_rate", "kind": "nope", "threshold": 20}, "kind of job"),
        ({"metric": "failure_rate", "kind": CSV, "threshold": 20, "window_minutes": 0}, "window"),
        ({"metric": "failure_rate", "kind": CSV, "threshold": 20, "min_jobs": 0}, "minimum number"),
        ({"metric": "queue_wait", "queue": "nope", "threshold": 60}, "queue from the list"),
        ({"metric": "queue_wait", "queue": "default", "threshold": 0}, "between 1 and 604800 s"),
        ({"metric": "cpu", "threshold": 1}, "failure rate or a queue wait"),
    ],
)
def test_a_rule_out_of_range_or_for_an_unknown_kind_or_queue_is_refused(operator, fields, error):
    with pytest.raises(AlertRuleInvalid, match=error):
        alert_rule_create(user=operator, **fields)
    assert not AlertRule.objects.exists()


def test_a_user_may_hold_a_few_rules_and_not_the_same_one_twice(operator, monkeypatch):
    monkeypatch.setattr(alerts, "MAX_RULES_PER_USER", 2)
    failure_rule(operator, threshold=10)
    with pytest.raises(AlertRuleInvalid, match="already have this alert"):
        failure_rule(operator, threshold=10)
    failure_rule(operator, threshold=20)
    with pytest.raises(AlertRuleInvalid, match="limit of 2 alerts"):
        failure_rule(operator, threshold=30)


# --- The page --------------------------------------------------------------------------------------


def client_of(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


def test_the_page_takes_the_operator_view(make_user):
    assert client_of(make_user()).get("/operations/alerts/").status_code == 403
    assert client_of(make_user()).post("/operations/alerts/", {"action": "delete"}).status_code == 403
    assert client_of(make_user(operator=True)).get("/operations/alerts/").status_code == 200


def test_an_operator_adds_sees_and_deletes_their_alerts_on_the_page(operator, make_user):
    client = client_of(operator)
    response = client.post(
        "/operations/alerts/",
        {
            "action": "add",
            "metric": "failure_rate",
            "kind": CSV,
            "threshold": "20",
            "window_minutes": "10",
            "min_jobs": "5",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Alert added: Failure rate of Profile a CSV file above 20 % over 10 min" in response.text
    client.post(
        "/operations/alerts/",
        {"action": "add", "metric": "queue_wait", "queue": "default", "threshold": "90"},
    )
    rule, wait_rule = AlertRule.objects.filter(subscriber=operator).order_by("id")
    assert (rule.kind, rule.threshold, rule.window_minutes, rule.min_jobs) == (CSV, 20, 10, 5)
    assert (wait_rule.queue, wait_rule.threshold) == ("default", 90)

    finished(operator, failed=9, succeeded=11)
    alerts_evaluate()
    page = client.get("/operations/alerts/").text
    assert "firing since " in page and "now 45 %" in page
    assert "ok, now 0 s" in page
    assert page.count("<h1") == 1

    other = make_user(operator=True)
    assert (
        client_of(other).post("/operations/alerts/", {"action": "delete", "rule": rule.pk}).status_code == 302
    )
    assert AlertRule.objects.filter(pk=rule.pk).exists()  # not theirs
    client.post("/operations/alerts/", {"action": "delete", "rule": rule.pk})
    assert list(AlertRule.objects.filter(subscriber=operator)) == [wait_rule]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"metric": "failure_rate", "kind": CSV, "threshold": "150"}, "below 100 %"),
        ({"metric": "failure_rate", "kind": CSV, "threshold": "lots"}, "must be a number"),
        ({"metric": "failure_rate", "kind": CSV, "threshold": "nan"}, "must be a number"),
        ({"metric": "failure_rate", "kind": "nope", "threshold": "20"}, "Choose a kind of job"),
        ({"metric": "queue_wait", "queue": "elsewhere", "threshold": "60"}, "Choose a queue"),
        ({"metric": "queue_wait", "queue": "default", "threshold": "0"}, "between 1 and 604800 s"),
    ],
)
def test_the_page_says_what_is_wrong_with_a_refused_alert(operator, form, error):
    response = client_of(operator).post("/operations/alerts/", {"action": "add", **form})
    assert response.status_code == 400
    assert error in response.text
    assert 'role="alert"' in response.text and 'aria-invalid="true"' in response.text
    assert not AlertRule.objects.exists()


def test_the_page_refuses_a_rule_over_the_cap(operator, monkeypatch):
    monkeypatch.setattr(alerts, "MAX_RULES_PER_USER", 1)
    client = client_of(operator)
    client.post(
        "/operations/alerts/",
        {"action": "add", "metric": "queue_wait", "queue": "default", "threshold": "60"},
    )
    response = client.post(
        "/operations/alerts/",
        {"action": "add", "metric": "queue_wait", "queue": "default", "threshold": "70"},
    )
    assert response.status_code == 400
    assert "You have reached the limit of 1 alerts per user" in response.text
    assert AlertRule.objects.count() == 1


def test_the_page_s_forms_are_csrf_protected(operator):
    client = client_of(operator, enforce_csrf_checks=True)
    response = client.post(
        "/operations/alerts/",
        {"action": "add", "metric": "queue_wait", "queue": "default", "threshold": "60"},
    )
    assert response.status_code == 403
    assert not AlertRule.objects.exists()


def test_the_admin_lists_and_deletes_rules_but_neither_adds_nor_edits_them(operator, make_user):
    rule = failure_rule(operator)
    admin = client_of(make_user(is_staff=True, is_superuser=True))
    assert admin.get("/admin/notifications/alertrule/").status_code == 200
    assert admin.get(f"/admin/notifications/alertrule/{rule.pk}/change/").status_code == 200  # a view
    assert admin.get("/admin/notifications/alertrule/add/").status_code == 403
    admin.post(f"/admin/notifications/alertrule/{rule.pk}/change/", {"threshold": "1"})
    rule.refresh_from_db()
    assert rule.threshold == 20
    admin.post(f"/admin/notifications/alertrule/{rule.pk}/delete/", {"post": "yes"})
    assert not AlertRule.objects.exists()


def test_the_resolved_notification_says_when_the_value_went_back_below_not_when_the_episode_ended(operator):
    """Found by review: a backlog gone at 07:22:53 was "above from 07:22 to 07:27 (6 min)": the
    end reported was the resolution, KEEP_FIRING_FOR later, rounded up."""
    failure_rule(operator)
    finished(operator, failed=3, succeeded=7)  # 30 %
    start = timezone.now()
    assert alerts_evaluate(now=start).fired == 1
    finished(operator, succeeded=30)  # 3 of 40: 7.5 %, below from here
    assert alerts_evaluate(now=start + timedelta(seconds=40)).notified == 0
    assert alerts_evaluate(now=start + timedelta(seconds=40) + alerts.KEEP_FIRING_FOR).resolved == 1

    resolved = Notification.objects.filter(recipient=operator).first()
    assert resolved.body.endswith("(40 s).")
    assert "Over the last 10 minutes." in Notification.objects.filter(recipient=operator).last().body


def test_a_rule_of_one_minute_and_one_job_reads_in_the_singular(operator):
    rule = failure_rule(operator, window_minutes=1, min_jobs=1)
    assert alerts.alert_rule_description(rule).endswith("over 1 min (at least 1 succeeded or failed job)")
