"""Bulk actions (issue 16 §12, jobs/bulk.py): a filter selects jobs, a preview counts those the
action applies to, and applying acts on exactly that count, each job checked as its single-job
action is; through the service, the API (/api/v1/jobs/bulk/) and the page (/operations/bulk/)."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from jobs import bulk
from jobs.bulk import BulkAction, BulkFilter, bulk_apply, bulk_preview
from jobs.models import Job, JobBulkAction, JobLogLine, JobState
from jobs.permissions import Power
from jobs.tokens import token_create
from tests.conftest import grant_powers
from tests.jobs.factories import make_job, make_job_with_file

pytestmark = pytest.mark.django_db

FAILED_SIMULATE = BulkFilter(states=[JobState.FAILED], kinds=["simulate"])
RETRY = BulkAction.RETRY


def aged(job: Job, minutes: float) -> Job:
    """``job`` as if created (and finished) ``minutes`` ago: out of its owner's launch count."""
    at = timezone.now() - timedelta(minutes=minutes)
    Job.objects.filter(pk=job.pk).update(
        created_at=at, finished_at=at if job.finished_at else None, started_at=at if job.started_at else None
    )
    job.refresh_from_db()
    return job


def failed(owner, *, kind="simulate", minutes=5, **fields):
    params = {"steps": 1, "step_ms": 0} if kind == "simulate" else fields.pop("params", {})
    return aged(make_job(owner=owner, state=JobState.FAILED, kind=kind, params=params, **fields), minutes)


def skips(outcome) -> dict[str, int]:
    key = "not_actionable" if "not_actionable" in outcome else "skipped"
    return {skip["reason"]: skip["count"] for skip in outcome[key]}


# --- Selecting and previewing ------------------------------------------------------------------


def test_the_preview_counts_the_failed_jobs_of_one_kind_in_the_window_with_examples(make_user):
    operator, owner = make_user(operator=True), make_user()
    recent = [failed(owner, minutes=10 + i) for i in range(3)]
    failed(owner, minutes=120)  # outside the last hour
    failed(owner, kind="primes", params={"limit": 10})  # another kind
    aged(make_job(owner=owner, state=JobState.SUCCEEDED), 5)  # another state

    preview = bulk_preview(
        user=operator,
        bulk_filter=BulkFilter(states=[JobState.FAILED], kinds=["simulate"], created_within_minutes=60),
        action=BulkAction.RETRY,
    )

    assert preview["matched"] == 3 and preview["actionable"] == 3
    assert preview["not_actionable"] == [] and not preview["over_limit"]
    # Oldest first, as they will be retried.
    assert [example["id"] for example in preview["examples"]] == [str(job.id) for job in reversed(recent)]
    assert preview["examples"][0]["owner"] == owner.username


def test_the_owner_search_and_finished_window_narrow_the_selection(make_user):
    operator, alice, bob = make_user(operator=True), make_user(), make_user()
    match = failed(alice, error="Line 2: not a number", minutes=3)
    failed(alice, error="Disk full", minutes=3)
    failed(bob, error="Line 2: not a number", minutes=3)
    failed(alice, error="Line 9: not a number", minutes=90)

    preview = bulk_preview(
        user=operator,
        bulk_filter=BulkFilter(owner=alice.username, search="NOT A NUMBER", finished_within_minutes=30),
        action=BulkAction.RETRY,
    )

    assert preview["actionable"] == 1 and preview["examples"][0]["id"] == str(match.id)


def test_a_filter_never_reaches_jobs_the_user_may_not_see(make_user):
    alice, bob = make_user(), make_user()
    own = failed(alice)
    failed(bob)

    everyone = bulk_preview(user=alice, bulk_filter=BulkFilter(), action=BulkAction.RETRY)
    bobs = bulk_preview(user=alice, bulk_filter=BulkFilter(owner=bob.username), action=BulkAction.DELETE)

    assert everyone["matched"] == 1 and everyone["examples"][0]["id"] == str(own.id)
    assert bobs["matched"] == 0 and bobs["actionable"] == 0
    result = bulk_apply(user=alice, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=1)
    assert result["acted"] == 1 and Job.objects.count() == 1  # bob's job is still there


# --- Retry -----------------------------------------------------------------------------------------


def test_applying_a_retry_retries_each_job_for_its_owner_and_audits_it(make_user):
    operator, owner = make_user(operator=True), make_user()
    old = [failed(owner, minutes=10 + i) for i in range(3)]

    result = bulk_apply(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmed_count=3)

    assert result["acted"] == 3 and result["skipped"] == []
    retries = Job.objects.filter(retry_of__isnull=False)
    assert {job.retry_of_id for job in retries} == {job.id for job in old}
    assert {job.owner_id for job in retries} == {owner.pk}
    assert {job.state for job in retries} == {JobState.QUEUED}
    assert sorted(result["job_ids"]) == sorted(str(job.id) for job in retries)
    audit = JobBulkAction.objects.get()
    assert (audit.user, audit.username, audit.action) == (operator, operator.username, "retry")
    assert audit.filter == {
        "states": ["failed"], "kinds": ["simulate"], "owner": "", "created_within_minutes": None,
        "finished_within_minutes": None, "search": "",
    }  # fmt: skip
    assert (audit.matched, audit.confirmed, audit.acted, audit.skipped) == (3, 3, 3, {})
    assert result["audit_id"] == audit.pk


def test_retry_leaves_unfinished_jobs_alone_and_says_why(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    make_job(owner=owner, state=JobState.RUNNING)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY)
    result = bulk_apply(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY, confirmed_count=1)

    assert (preview["matched"], preview["actionable"]) == (2, 1)
    assert skips(preview) == {"not_finished": 1} and skips(result) == {"not_finished": 1}
    assert result["acted"] == 1


def test_without_act_on_any_job_another_users_jobs_are_seen_but_left_alone(make_user):
    viewer = grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    other = make_user()
    failed(viewer)
    failed(other)

    preview = bulk_preview(user=viewer, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY)
    result = bulk_apply(user=viewer, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY, confirmed_count=1)

    assert (preview["matched"], preview["actionable"], skips(preview)) == (2, 1, {"not_yours": 1})
    assert result["acted"] == 1 and skips(result) == {"not_yours": 1}
    assert Job.objects.filter(retry_of__owner=other).count() == 0


def test_retrying_a_kind_the_operator_may_not_launch_is_left_alone(make_user):
    operator = grant_powers(make_user(), Power.VIEW_ALL_JOBS, Power.ACT_ON_ANY_JOB)
    owner = grant_powers(make_user(), Power.BROADCAST)
    failed(owner, kind="broadcast", params={"title": "Maintenance"})
    failed(owner)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY)
    result = bulk_apply(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY, confirmed_count=1)

    assert skips(preview) == {"kind_not_allowed": 1} and skips(result) == {"kind_not_allowed": 1}
    assert list(Job.objects.filter(retry_of__isnull=False).values_list("kind", flat=True)) == ["simulate"]


def test_a_bulk_retry_counts_in_the_owners_launch_limit_and_reports_the_jobs_over_it(make_user, settings):
    """Decided: an operator's retry launches for the owner, and is checked against the owner's
    limit as a single retry is (jobs.launch.job_retry): the jobs past it are skipped and said so."""
    settings.RUNBOARD_LAUNCHES_PER_MINUTE = 3
    operator, busy, idle = make_user(operator=True), make_user(), make_user()
    for i in range(5):
        failed(busy, minutes=10 + i)
    failed(idle)
    make_job(owner=busy)  # one launch of the last minute already

    preview = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY)
    result = bulk_apply(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmed_count=6)

    assert preview["actionable"] == 6 and preview["rate_limited_now"] == 3
    assert result["acted"] == 3 and skips(result) == {"rate_limited": 3}
    assert Job.objects.filter(retry_of__owner=busy).count() == 2
    assert Job.objects.filter(retry_of__owner=idle).count() == 1
    assert JobBulkAction.objects.get().skipped == {"rate_limited": 3}


# --- Confirmation and bounds ---------------------------------------------------------------------


def test_a_count_that_changed_since_the_preview_is_refused_and_nothing_is_done(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    preview = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY)
    failed(owner)  # one more failed meanwhile

    with pytest.raises(bulk.SelectionChanged) as refused:
        bulk_apply(
            user=operator, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY,
            confirmed_count=preview["actionable"],
        )  # fmt: skip

    assert refused.value.actionable == 2 and "2 job(s) now match" in str(refused.value)
    assert Job.objects.count() == 2 and not JobBulkAction.objects.exists()


def test_more_jobs_than_the_limit_are_refused_whole(make_user, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_MAX_JOBS", 3)
    owner = make_user()
    for _ in range(4):
        failed(owner)

    preview = bulk_preview(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    with pytest.raises(bulk.SelectionTooLarge, match="narrow the filter"):
        bulk_apply(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=4)

    assert preview["over_limit"] and preview["limit"] == 3 and preview["actionable"] == 4
    assert Job.objects.count() == 4 and not JobBulkAction.objects.exists()


# --- Cancel --------------------------------------------------------------------------------------


def test_cancel_stops_queued_and_running_jobs_and_leaves_finished_ones(make_user):
    operator, owner = make_user(operator=True), make_user()
    queued = make_job(owner=owner)
    running = make_job(owner=owner, state=JobState.RUNNING)
    make_job(owner=owner, state=JobState.RUNNING, cancel_requested_at=timezone.now())
    failed(owner)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.CANCEL)
    result = bulk_apply(user=operator, bulk_filter=BulkFilter(), action=BulkAction.CANCEL, confirmed_count=2)

    assert preview["actionable"] == 2 and skips(preview) == {"finished": 1, "cancel_requested": 1}
    assert result["acted"] == 2
    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    assert Job.objects.get(pk=running.pk).cancel_requested_at is not None


def test_cancel_of_another_users_job_needs_act_on_any_job(make_user):
    viewer = grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    theirs = make_job(owner=make_user())

    result = bulk_apply(user=viewer, bulk_filter=BulkFilter(), action=BulkAction.CANCEL, confirmed_count=0)

    assert result["acted"] == 0 and skips(result) == {"not_yours": 1}
    assert Job.objects.get(pk=theirs.pk).state == JobState.QUEUED


# --- Delete --------------------------------------------------------------------------------------


def test_a_user_deletes_their_own_finished_jobs_with_their_log_lines_and_files(
    make_user, settings, django_capture_on_commit_callbacks
):
    owner = make_user()
    with_file = make_job_with_file(owner=owner, name="export.csv", content=b"a,b\n")
    path = settings.RUNBOARD_PRIVATE_DIR / with_file.result_file.name
    logged = failed(owner)
    JobLogLine.objects.create(job=logged, seq=1, text="line")
    running = make_job(owner=owner, state=JobState.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):  # the file goes once the rows are gone
        result = bulk_apply(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=2)

    assert result["acted"] == 2 and skips(result) == {"not_finished": 1}
    assert list(Job.objects.values_list("id", flat=True)) == [running.id]
    assert not JobLogLine.objects.exists()
    assert not path.exists()


def test_deleting_another_users_jobs_takes_the_delete_job_permission(make_user):
    operator, owner = make_user(operator=True), make_user()  # every power, but not jobs.delete_job
    failed(owner)
    own = failed(operator)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    result = bulk_apply(user=operator, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=1)

    assert skips(preview) == {"no_delete_permission": 1} and result["acted"] == 1
    assert not Job.objects.filter(pk=own.pk).exists() and Job.objects.filter(owner=owner).exists()

    delete_job = Permission.objects.get(content_type__app_label="jobs", codename="delete_job")
    operator.user_permissions.add(delete_job)
    operator = type(operator).objects.get(pk=operator.pk)
    result = bulk_apply(user=operator, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=1)
    assert result["acted"] == 1 and not Job.objects.exists()


def test_a_superuser_deletes_anyones_finished_jobs(make_user):
    admin = make_user(is_superuser=True)
    failed(make_user())
    result = bulk_apply(user=admin, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=1)
    assert result["acted"] == 1 and not Job.objects.exists()


# --- The API ---------------------------------------------------------------------------------------


def logged_in(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


def post(client, path, body, **extra):
    return client.post(path, data=json.dumps(body), content_type="application/json", **extra)


PREVIEW, APPLY = "/api/v1/jobs/bulk/preview/", "/api/v1/jobs/bulk/"
RETRY_FAILED = {"action": "retry", "filter": {"states": ["failed"], "kinds": ["simulate"]}}


@pytest.mark.parametrize("path", [PREVIEW, APPLY])
def test_the_bulk_routes_are_a_401_for_anonymous_callers(path):
    response = post(Client(), path, {**RETRY_FAILED, "confirmed_count": 0})
    assert response.status_code == 401 and response.json() == {"detail": "Authentication required."}


@pytest.mark.parametrize("path", [PREVIEW, APPLY])
def test_a_session_caller_needs_the_csrf_token_and_a_token_caller_does_not(make_user, path):
    user = make_user()
    failed(user)
    body = {**RETRY_FAILED, "confirmed_count": 1} if path == APPLY else RETRY_FAILED

    refused = post(logged_in(user, enforce_csrf_checks=True), path, body)
    _, raw = token_create(user=user, name="script")
    allowed = post(Client(enforce_csrf_checks=True), path, body, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert allowed.status_code == 200


def test_the_api_previews_then_applies_the_confirmed_count(make_user):
    operator, owner = make_user(operator=True), make_user()
    for i in range(2):
        failed(owner, minutes=10 + i)
    client = logged_in(operator)

    preview = post(client, PREVIEW, RETRY_FAILED)
    applied = post(client, APPLY, {**RETRY_FAILED, "confirmed_count": preview.json()["actionable"]})

    assert preview.status_code == 200 and preview.json()["actionable"] == 2
    assert applied.status_code == 200
    body = applied.json()
    assert (body["action"], body["acted"], body["skipped"]) == ("retry", 2, [])
    assert Job.objects.filter(retry_of__isnull=False).count() == 2


def test_the_api_answers_a_changed_count_with_409_and_the_new_count(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    failed(owner)

    response = post(logged_in(operator), APPLY, {**RETRY_FAILED, "confirmed_count": 1})

    assert response.status_code == 409
    assert "2 job(s) now match (you confirmed 1)" in response.json()["detail"]
    assert "confirmed_count" in response.json()["fields"]
    assert Job.objects.count() == 2


def test_the_api_refuses_a_selection_over_the_limit_with_a_400(make_user, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_MAX_JOBS", 1)
    owner = make_user()
    failed(owner)
    failed(owner)

    response = post(logged_in(owner), APPLY, {**RETRY_FAILED, "confirmed_count": 2})

    assert response.status_code == 400 and "narrow the filter" in response.json()["detail"]
    assert Job.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "blamed"),
    [
        ({"action": "explode"}, "action"),
        ({"action": "retry", "filter": {"states": ["exploded"]}}, "filter.states.0"),
        ({"action": "retry", "filter": {"created_within_minutes": 0}}, "filter.created_within_minutes"),
        ({"action": "retry", "filter": {"colour": "red"}}, "filter.colour"),
    ],
)
def test_a_bad_bulk_request_blames_the_field_at_fault(make_user, body, blamed):
    response = post(logged_in(make_user()), PREVIEW, body)
    assert response.status_code == 400 and blamed in response.json()["fields"]


def test_applying_without_a_confirmed_count_is_refused(make_user):
    response = post(logged_in(make_user()), APPLY, RETRY_FAILED)
    assert response.status_code == 400 and "confirmed_count" in response.json()["fields"]


# --- The page --------------------------------------------------------------------------------------

PAGE = "/operations/bulk/"
QUERY = {"preview": "1", "action": "retry", "states": "failed", "kinds": "simulate", "window": "created",
         "within": "1", "unit": "hours"}  # fmt: skip


def test_the_page_takes_the_operator_view(make_user):
    user = make_user()
    failed(user)
    client = logged_in(user)

    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {**QUERY, "confirmed_count": "1"}).status_code == 403
    assert Job.objects.count() == 1


def test_the_page_asks_to_confirm_the_count_then_retries_and_shows_who_did_it(make_user):
    operator, owner = make_user(operator=True), make_user()
    for i in range(3):
        failed(owner, minutes=10 + i)
    failed(owner, minutes=180)
    client = logged_in(operator)

    confirm = client.get(PAGE, QUERY)
    assert confirm.status_code == 200
    assert "Retry 3 jobs?" in confirm.content.decode()
    assert 'name="confirmed_count" value="3"' in confirm.content.decode()

    done = client.post(PAGE, {**QUERY, "confirmed_count": "3"}, follow=True)

    page = done.content.decode()
    assert "Retried 3 jobs." in page
    assert Job.objects.filter(retry_of__isnull=False).count() == 3
    audit = JobBulkAction.objects.get()
    assert audit.filter["created_within_minutes"] == 60
    assert f"<strong>{operator.username}</strong> retry: 3 of 3 confirmed" in page


def test_the_page_asks_again_when_the_count_changed(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    failed(owner)

    again = logged_in(operator).post(PAGE, {**QUERY, "confirmed_count": "1"}, follow=True)

    page = again.content.decode()
    assert "The selection changed: 2 job(s) now match" in page
    assert "Retry 2 jobs?" in page
    assert Job.objects.count() == 2


def test_the_audit_is_listed_read_only_in_the_admin(make_user):
    admin = make_user(is_superuser=True, is_staff=True)
    failed(make_user())
    bulk_apply(user=admin, bulk_filter=BulkFilter(), action=BulkAction.DELETE, confirmed_count=1)
    client = logged_in(admin)

    listed = client.get("/admin/jobs/jobbulkaction/")
    entry = JobBulkAction.objects.get()

    assert listed.status_code == 200 and admin.username in listed.content.decode()
    assert client.get("/admin/jobs/jobbulkaction/add/").status_code == 403
    assert client.post(f"/admin/jobs/jobbulkaction/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert JobBulkAction.objects.filter(pk=entry.pk).exists()


def test_the_page_offers_no_confirmation_for_a_selection_over_the_limit(make_user, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_MAX_JOBS", 1)
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    failed(owner)

    page = logged_in(operator).get(PAGE, QUERY).content.decode()

    assert "Too many jobs: 2" in page and "narrow the filter" in page
    assert "confirmed_count" not in page
