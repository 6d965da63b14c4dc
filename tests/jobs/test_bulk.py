"""Bulk actions (issue 16 §12, jobs/bulk.py): a filter selects jobs, a preview counts those the
action applies to and issues a confirmation, and applying it acts on exactly the jobs previewed,
once, each job checked as its single-job action is; through the service, the API
(/api/v1/jobs/bulk/) and the page (/operations/bulk/)."""

import json
import re
import threading
import time
from datetime import UTC, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import signing
from django.db import connection
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


def previewed_apply(user, bulk_filter, action, **kwargs):
    """Preview, then apply that preview's confirmation (what the page and the API do)."""
    preview = bulk_preview(user=user, bulk_filter=bulk_filter, action=action)
    return bulk_apply(
        user=user, bulk_filter=bulk_filter, action=action, confirmation=preview["confirmation"], **kwargs
    )


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
    result = previewed_apply(alice, BulkFilter(), BulkAction.DELETE)
    assert result["acted"] == 1 and Job.objects.count() == 1  # bob's job is still there


# --- Retry -----------------------------------------------------------------------------------------


def test_applying_a_retry_retries_each_job_for_its_owner_and_audits_it(make_user):
    operator, owner = make_user(operator=True), make_user()
    old = [failed(owner, minutes=10 + i) for i in range(3)]

    result = previewed_apply(operator, FAILED_SIMULATE, RETRY)

    assert result["acted"] == 3 and result["skipped"] == []
    retries = Job.objects.filter(retry_of__isnull=False)
    assert {job.retry_of_id for job in retries} == {job.id for job in old}
    assert {job.owner_id for job in retries} == {owner.pk}
    assert {job.state for job in retries} == {JobState.QUEUED}
    assert sorted(result["job_ids"]) == sorted(str(job.id) for job in retries)
    audit = JobBulkAction.objects.get()
    assert (audit.user, audit.username, audit.action) == (operator, operator.username, "retry")
    assert audit.filter == {
        "states": ["failed"], "kinds": ["simulate"], "owner": "", "error_class": "",
        "created_within_minutes": None, "finished_within_minutes": None, "finished_after": None,
        "finished_before": None, "search": "",
    }  # fmt: skip
    assert (audit.matched, audit.confirmed, audit.acted, audit.skipped) == (3, 3, 3, {})
    assert result["audit_id"] == audit.pk


def test_retry_leaves_unfinished_jobs_alone_and_says_why(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    make_job(owner=owner, state=JobState.RUNNING)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY)
    result = bulk_apply(
        user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY, confirmation=preview["confirmation"]
    )

    assert (preview["matched"], preview["actionable"]) == (2, 1)
    assert skips(preview) == {"not_finished": 1} and skips(result) == {"not_finished": 1}
    assert result["acted"] == 1


def test_without_act_on_any_job_another_users_jobs_are_seen_but_left_alone(make_user):
    viewer = grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    other = make_user()
    failed(viewer)
    failed(other)

    preview = bulk_preview(user=viewer, bulk_filter=FAILED_SIMULATE, action=BulkAction.RETRY)
    result = bulk_apply(
        user=viewer,
        bulk_filter=FAILED_SIMULATE,
        action=BulkAction.RETRY,
        confirmation=preview["confirmation"],
    )

    assert (preview["matched"], preview["actionable"], skips(preview)) == (2, 1, {"not_yours": 1})
    assert result["acted"] == 1 and skips(result) == {"not_yours": 1}
    assert Job.objects.filter(retry_of__owner=other).count() == 0


def test_retrying_a_kind_the_operator_may_not_launch_is_left_alone(make_user):
    operator = grant_powers(make_user(), Power.VIEW_ALL_JOBS, Power.ACT_ON_ANY_JOB)
    owner = grant_powers(make_user(), Power.BROADCAST)
    failed(owner, kind="broadcast", params={"title": "Maintenance"})
    failed(owner)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY)
    result = bulk_apply(
        user=operator, bulk_filter=BulkFilter(), action=BulkAction.RETRY, confirmation=preview["confirmation"]
    )

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
    result = bulk_apply(
        user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmation=preview["confirmation"]
    )

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
            confirmation=preview["confirmation"],
        )  # fmt: skip

    assert refused.value.actionable == 2 and "2 job(s) now match" in str(refused.value)
    assert Job.objects.count() == 2 and not JobBulkAction.objects.exists()


def test_a_confirmation_acts_once_and_applying_it_again_is_refused(make_user):
    """A retry leaves the failed originals failed, so the same jobs still match: before, applying
    the same confirmed count twice retried them twice."""
    operator, owner = make_user(operator=True), make_user()
    for i in range(3):
        failed(owner, minutes=10 + i)
    preview = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY)
    once = bulk_apply(
        user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmation=preview["confirmation"]
    )

    with pytest.raises(bulk.AlreadyApplied, match="already applied"):
        bulk_apply(
            user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmation=preview["confirmation"]
        )

    assert once["acted"] == 3
    assert Job.objects.filter(retry_of__isnull=False).count() == 3 and JobBulkAction.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_confirmation_brought_by_two_requests_at_once_acts_once(make_user, monkeypatch):
    """Both requests pass the "applied already?" check before either records the action: the
    unique nonce lets one through and refuses the other."""
    owner = make_user()
    failed(owner)
    preview = bulk_preview(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    both_checked = threading.Barrier(2, timeout=10)
    digest = bulk._digest

    def digest_once_both_checked(ids):
        both_checked.wait()  # each request has read that the confirmation is not used yet
        return digest(ids)

    monkeypatch.setattr(bulk, "_digest", digest_once_both_checked)
    outcomes: list[object] = []

    def apply() -> None:
        try:
            outcomes.append(
                bulk_apply(
                    user=owner,
                    bulk_filter=BulkFilter(),
                    action=BulkAction.DELETE,
                    confirmation=preview["confirmation"],
                )
            )
        except Exception as exc:  # the refusal is an outcome under test
            outcomes.append(exc)
        finally:
            connection.close()

    requests = [threading.Thread(target=apply) for _ in range(2)]
    for request in requests:
        request.start()
    for request in requests:
        request.join(30)

    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(outcomes) == 2 and len(refused) == 1, outcomes
    assert isinstance(refused[0], bulk.AlreadyApplied)
    assert JobBulkAction.objects.count() == 1 and not Job.objects.exists()


def test_a_selection_of_the_same_count_but_other_jobs_is_refused(make_user):
    """The confirmation is of exactly the jobs previewed, not of their number: before, another
    user's job that failed meanwhile was retried in place of the one previewed."""
    operator, alice, bob = make_user(operator=True), make_user(), make_user()
    previewed = failed(alice)
    preview = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY)
    Job.objects.filter(pk=previewed.pk).delete()
    failed(bob)  # one job still matches, but not the one previewed

    with pytest.raises(bulk.SelectionChanged, match="other jobs than the 1 you confirmed"):
        bulk_apply(
            user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmation=preview["confirmation"]
        )

    assert not Job.objects.filter(retry_of__isnull=False).exists() and not JobBulkAction.objects.exists()


def test_a_confirmation_holds_only_for_its_user_action_and_filter(make_user):
    operator, other = make_user(operator=True), make_user(operator=True)
    failed(make_user())
    confirmation = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY)["confirmation"]
    tampered = confirmation[:-2] + ("AA" if not confirmation.endswith("AA") else "BB")

    for user, bulk_filter, action, token in [
        (other, FAILED_SIMULATE, RETRY, confirmation),
        (operator, FAILED_SIMULATE, BulkAction.DELETE, confirmation),
        (operator, BulkFilter(states=[JobState.FAILED]), RETRY, confirmation),
        (operator, FAILED_SIMULATE, RETRY, tampered),
    ]:
        with pytest.raises(bulk.ConfirmationInvalid):
            bulk_apply(user=user, bulk_filter=bulk_filter, action=action, confirmation=token)

    assert not Job.objects.filter(retry_of__isnull=False).exists() and not JobBulkAction.objects.exists()


def test_a_confirmation_expires_after_15_minutes(make_user, monkeypatch):
    operator = make_user(operator=True)
    failed(make_user())
    sixteen_minutes_ago = signing.b62_encode(int(time.time()) - 16 * 60)
    with monkeypatch.context() as past:
        past.setattr(signing.TimestampSigner, "timestamp", lambda self: sixteen_minutes_ago)
        preview = bulk_preview(user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY)

    with pytest.raises(bulk.ConfirmationExpired, match="Preview again"):
        bulk_apply(
            user=operator, bulk_filter=FAILED_SIMULATE, action=RETRY, confirmation=preview["confirmation"]
        )

    assert not Job.objects.filter(retry_of__isnull=False).exists()


def test_more_jobs_than_the_limit_are_refused_whole(make_user, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_MAX_JOBS", 3)
    owner = make_user()
    for _ in range(3):
        failed(owner)
    confirmed = bulk_preview(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    failed(owner)  # one more meanwhile: over the limit

    preview = bulk_preview(user=owner, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    with pytest.raises(bulk.SelectionTooLarge, match="narrow the filter"):
        bulk_apply(
            user=owner,
            bulk_filter=BulkFilter(),
            action=BulkAction.DELETE,
            confirmation=confirmed["confirmation"],
        )

    assert preview["over_limit"] and preview["limit"] == 3 and preview["actionable"] == 4
    assert preview["confirmation"] is None  # nothing to confirm
    assert Job.objects.count() == 4 and not JobBulkAction.objects.exists()


# --- A failure group's filter --------------------------------------------------------------------


def test_a_failure_groups_filter_selects_its_exact_error_class_finished_within_its_bounds(make_user):
    operator, owner = make_user(operator=True), make_user()
    until = timezone.now().replace(microsecond=0) - timedelta(minutes=30)
    since = until - timedelta(hours=1)
    inside = [failed(owner, minutes=40 + i, error_class="TimeoutError") for i in range(2)]
    failed(owner, minutes=40, error_class="ConnectTimeoutError")  # a class that contains it
    failed(owner, minutes=40, error_class="ValueError", label="TimeoutError.csv")  # the text elsewhere
    failed(owner, minutes=20, error_class="TimeoutError")  # after the group's bounds
    failed(owner, minutes=100, error_class="TimeoutError")  # before them
    at_until = failed(owner, error_class="TimeoutError")
    Job.objects.filter(pk=at_until.pk).update(finished_at=until)  # the upper bound is excluded

    preview = bulk_preview(
        user=operator,
        bulk_filter=BulkFilter(
            states=[JobState.FAILED], error_class="TimeoutError", finished_after=since, finished_before=until
        ),
        action=RETRY,
    )

    assert preview["actionable"] == 2
    assert sorted(example["id"] for example in preview["examples"]) == sorted(str(job.id) for job in inside)


@pytest.mark.parametrize(
    ("bounds", "blamed"),
    [
        ({"finished_after": "2026-11-30T06:00:00"}, "filter.finished_after"),  # no offset
        ({"finished_after": 1764482400}, "filter.finished_after"),  # a Unix time
        ({"finished_after": "1764482400"}, "filter.finished_after"),
        ({"finished_before": "yesterday"}, "filter.finished_before"),
        ({"finished_after": "0001-01-01T00:00:00+01:00"}, "filter.finished_after"),  # before year 1 in UTC
        ({"finished_after": "2025-01-01T00:00:00Z", "finished_before": "2026-01-03T00:00:00Z"}, "filter"),
        ({"finished_after": "2026-01-02T00:00:00Z", "finished_before": "2026-01-01T00:00:00Z"}, "filter"),
        ({"error_class": "E" * 101}, "filter.error_class"),
    ],
)
def test_finished_bounds_are_iso_8601_with_an_offset_at_most_a_year_apart(make_user, bounds, blamed):
    response = post(logged_in(make_user()), PREVIEW, {"action": "retry", "filter": bounds})
    assert response.status_code == 400 and blamed in response.json()["fields"], response.json()


def test_the_api_takes_a_failure_groups_bounds_in_any_offset(make_user):
    owner = make_user()
    job = failed(owner, minutes=30, error_class="KeyError")
    finished = job.finished_at.astimezone(UTC)
    bounds = {
        "error_class": "KeyError",
        "finished_after": (finished - timedelta(minutes=1))
        .astimezone(timezone.get_fixed_timezone(120))
        .isoformat(),
        "finished_before": (finished + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
    }

    response = post(logged_in(owner), PREVIEW, {"action": "delete", "filter": bounds})

    assert response.status_code == 200 and response.json()["actionable"] == 1


# --- Cancel --------------------------------------------------------------------------------------


def test_cancel_stops_queued_and_running_jobs_and_leaves_finished_ones(make_user):
    operator, owner = make_user(operator=True), make_user()
    queued = make_job(owner=owner)
    running = make_job(owner=owner, state=JobState.RUNNING)
    make_job(owner=owner, state=JobState.RUNNING, cancel_requested_at=timezone.now())
    failed(owner)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.CANCEL)
    result = bulk_apply(
        user=operator,
        bulk_filter=BulkFilter(),
        action=BulkAction.CANCEL,
        confirmation=preview["confirmation"],
    )

    assert preview["actionable"] == 2 and skips(preview) == {"finished": 1, "cancel_requested": 1}
    assert result["acted"] == 2
    assert Job.objects.get(pk=queued.pk).state == JobState.CANCELLED
    assert Job.objects.get(pk=running.pk).cancel_requested_at is not None


def test_cancel_of_another_users_job_needs_act_on_any_job(make_user):
    viewer = grant_powers(make_user(), Power.VIEW_ALL_JOBS)
    theirs = make_job(owner=make_user())

    preview = bulk_preview(user=viewer, bulk_filter=BulkFilter(), action=BulkAction.CANCEL)

    assert preview["actionable"] == 0 and skips({"skipped": preview["not_actionable"]}) == {"not_yours": 1}
    assert preview["confirmation"] is None  # nothing it may act on: nothing to confirm
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
        result = previewed_apply(owner, BulkFilter(), BulkAction.DELETE)

    assert result["acted"] == 2 and skips(result) == {"not_finished": 1}
    assert list(Job.objects.values_list("id", flat=True)) == [running.id]
    assert not JobLogLine.objects.exists()
    assert not path.exists()


def test_deleting_another_users_jobs_takes_the_delete_job_permission(make_user):
    operator, owner = make_user(operator=True), make_user()  # every power, but not jobs.delete_job
    failed(owner)
    own = failed(operator)

    preview = bulk_preview(user=operator, bulk_filter=BulkFilter(), action=BulkAction.DELETE)
    result = bulk_apply(
        user=operator,
        bulk_filter=BulkFilter(),
        action=BulkAction.DELETE,
        confirmation=preview["confirmation"],
    )

    assert skips(preview) == {"no_delete_permission": 1} and result["acted"] == 1
    assert not Job.objects.filter(pk=own.pk).exists() and Job.objects.filter(owner=owner).exists()

    delete_job = Permission.objects.get(content_type__app_label="jobs", codename="delete_job")
    operator.user_permissions.add(delete_job)
    operator = type(operator).objects.get(pk=operator.pk)
    result = previewed_apply(operator, BulkFilter(), BulkAction.DELETE)
    assert result["acted"] == 1 and not Job.objects.exists()


def test_a_superuser_deletes_anyones_finished_jobs(make_user):
    admin = make_user(is_superuser=True)
    failed(make_user())
    result = previewed_apply(admin, BulkFilter(), BulkAction.DELETE)
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
    response = post(Client(), path, {**RETRY_FAILED, "confirmation": "x"})
    assert response.status_code == 401 and response.json() == {"detail": "Authentication required."}


@pytest.mark.parametrize("path", [PREVIEW, APPLY])
def test_a_session_caller_needs_the_csrf_token_and_a_token_caller_does_not(make_user, path):
    user = make_user()
    failed(user)
    _, raw = token_create(user=user, name="script")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    body = RETRY_FAILED
    if path == APPLY:
        body = {**body, "confirmation": post(Client(), PREVIEW, body, **bearer).json()["confirmation"]}

    refused = post(logged_in(user, enforce_csrf_checks=True), path, body)
    allowed = post(Client(enforce_csrf_checks=True), path, body, **bearer)

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert allowed.status_code == 200


def test_the_api_previews_then_applies_the_confirmed_count(make_user):
    operator, owner = make_user(operator=True), make_user()
    for i in range(2):
        failed(owner, minutes=10 + i)
    client = logged_in(operator)

    preview = post(client, PREVIEW, RETRY_FAILED)
    confirmed = {
        "confirmation": preview.json()["confirmation"],
        "confirmed_count": preview.json()["actionable"],
    }
    applied = post(client, APPLY, {**RETRY_FAILED, **confirmed})

    assert preview.status_code == 200 and preview.json()["actionable"] == 2
    assert applied.status_code == 200
    body = applied.json()
    assert (body["action"], body["acted"], body["skipped"]) == ("retry", 2, [])
    assert Job.objects.filter(retry_of__isnull=False).count() == 2


def test_the_api_answers_a_changed_count_with_409_and_the_new_count(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    client = logged_in(operator)
    confirmation = post(client, PREVIEW, RETRY_FAILED).json()["confirmation"]
    failed(owner)

    response = post(client, APPLY, {**RETRY_FAILED, "confirmation": confirmation})

    assert response.status_code == 409
    assert "2 job(s) now match (you confirmed 1)" in response.json()["detail"]
    assert "confirmation" in response.json()["fields"]
    assert Job.objects.count() == 2


def test_the_api_refuses_a_selection_over_the_limit_with_a_400(make_user, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_MAX_JOBS", 1)
    owner = make_user()
    failed(owner)
    client = logged_in(owner)
    confirmation = post(client, PREVIEW, RETRY_FAILED).json()["confirmation"]
    failed(owner)

    response = post(client, APPLY, {**RETRY_FAILED, "confirmation": confirmation})

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


@pytest.mark.parametrize(
    ("path", "body", "blamed"),
    [
        (
            PREVIEW,
            {"action": "delete", "filter": {"created_within_minutes": True}},
            "filter.created_within_minutes",
        ),
        (
            PREVIEW,
            {"action": "delete", "filter": {"created_within_minutes": "5"}},
            "filter.created_within_minutes",
        ),
        (
            PREVIEW,
            {"action": "delete", "filter": {"finished_within_minutes": 5.0}},
            "filter.finished_within_minutes",
        ),
        (APPLY, {"action": "delete", "confirmation": "x", "confirmed_count": True}, "confirmed_count"),
        (APPLY, {"action": "delete", "confirmation": "x", "confirmed_count": "1"}, "confirmed_count"),
    ],
)
def test_the_api_takes_counts_and_windows_only_as_json_integers(make_user, path, body, blamed):
    """Before, ``true`` was taken as 1 and ``"5"`` as 5."""
    user = make_user()
    failed(user)
    response = post(logged_in(user), path, body)
    assert response.status_code == 400 and blamed in response.json()["fields"], response.json()
    assert Job.objects.count() == 1


def test_the_api_refuses_a_second_apply_of_one_confirmation_with_409(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    client = logged_in(operator)
    body = {**RETRY_FAILED, "confirmation": post(client, PREVIEW, RETRY_FAILED).json()["confirmation"]}

    first, second = post(client, APPLY, body), post(client, APPLY, body)

    assert first.status_code == 200 and second.status_code == 409
    assert "already applied" in second.json()["detail"] and "confirmation" in second.json()["fields"]
    assert Job.objects.filter(retry_of__isnull=False).count() == 1


def test_the_api_refuses_a_confirmation_of_another_filter_with_400(make_user):
    owner = make_user()
    failed(owner)
    client = logged_in(owner)
    confirmation = post(client, PREVIEW, RETRY_FAILED).json()["confirmation"]

    response = post(client, APPLY, {"action": "retry", "filter": {}, "confirmation": confirmation})

    assert response.status_code == 400 and "another action or filter" in response.json()["detail"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize("confirmation", ["x", "a:b:c", "a:\ud800", "\u00e9:b:c"])
def test_the_api_refuses_what_is_not_a_confirmation_with_400(make_user, confirmation):
    owner = make_user()
    failed(owner)
    response = post(logged_in(owner), APPLY, {**RETRY_FAILED, "confirmation": confirmation})
    assert response.status_code == 400 and "confirmation" in response.json()["fields"]
    assert Job.objects.count() == 1


def test_the_api_checks_a_confirmed_count_against_the_preview(make_user):
    owner = make_user()
    failed(owner)
    client = logged_in(owner)
    confirmation = post(client, PREVIEW, RETRY_FAILED).json()["confirmation"]

    response = post(client, APPLY, {**RETRY_FAILED, "confirmation": confirmation, "confirmed_count": 2})

    assert response.status_code == 409 and "you confirmed 2" in response.json()["detail"]
    assert Job.objects.count() == 1


def test_applying_without_a_confirmation_is_refused(make_user):
    user = make_user()
    failed(user)
    response = post(logged_in(user), APPLY, {**RETRY_FAILED, "confirmed_count": 1})
    assert response.status_code == 400 and "confirmation" in response.json()["fields"]
    assert Job.objects.count() == 1


# --- The page --------------------------------------------------------------------------------------

PAGE = "/operations/bulk/"
QUERY = {"preview": "1", "action": "retry", "states": "failed", "kinds": "simulate", "window": "created",
         "within": "1", "unit": "hours"}  # fmt: skip


def confirmation_in(response) -> str:
    """The confirmation a preview page carries in its form."""
    found = re.search(r'name="confirmation" value="([^"]+)"', response.content.decode())
    assert found, "no confirmation on the page"
    return found.group(1)


def test_the_page_takes_the_operator_view(make_user):
    user = make_user()
    failed(user)
    client = logged_in(user)

    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, {**QUERY, "confirmation": "x"}).status_code == 403
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

    done = client.post(PAGE, {**QUERY, "confirmation": confirmation_in(confirm)}, follow=True)

    page = done.content.decode()
    assert "Retried 3 jobs." in page
    assert Job.objects.filter(retry_of__isnull=False).count() == 3
    audit = JobBulkAction.objects.get()
    assert audit.filter["created_within_minutes"] == 60
    assert f"<strong>{operator.username}</strong> retry: 3 of 3 confirmed" in page


def test_the_page_asks_again_when_the_count_changed(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)
    client = logged_in(operator)
    confirmation = confirmation_in(client.get(PAGE, QUERY))
    failed(owner)

    again = client.post(PAGE, {**QUERY, "confirmation": confirmation}, follow=True)

    page = again.content.decode()
    assert "The selection changed: 2 job(s) now match" in page
    assert "Retry 2 jobs?" in page
    assert Job.objects.count() == 2


def test_the_audit_is_listed_read_only_in_the_admin(make_user):
    admin = make_user(is_superuser=True, is_staff=True)
    failed(make_user())
    previewed_apply(admin, BulkFilter(), BulkAction.DELETE)
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
    assert 'name="confirmation"' not in page


def test_a_double_submitted_confirmation_retries_once(make_user):
    """The page's form sent twice (a double click, a resent POST): before, both retried."""
    operator, owner = make_user(operator=True), make_user()
    for _ in range(2):
        failed(owner)
    client = logged_in(operator)
    form = {**QUERY, "confirmation": confirmation_in(client.get(PAGE, QUERY))}

    client.post(PAGE, form)
    again = client.post(PAGE, form, follow=True)

    assert "already applied" in again.content.decode()
    assert Job.objects.filter(retry_of__isnull=False).count() == 2 and JobBulkAction.objects.count() == 1


def test_the_page_refuses_a_post_without_a_preview(make_user):
    operator, owner = make_user(operator=True), make_user()
    failed(owner)

    again = logged_in(operator).post(PAGE, QUERY, follow=True)

    assert "The filter or the confirmation is not valid: preview again." in again.content.decode()
    assert "Retry 1 job?" in again.content.decode()  # the preview, to confirm
    assert Job.objects.count() == 1


def test_the_audit_shows_a_user_their_own_bulk_actions_and_everyones_only_with_view_all_jobs(make_user):
    """Before, every holder of the operator view read everyone's filters ("payroll...")."""
    alice = make_user()
    viewer = grant_powers(make_user(), Power.USE_OPERATOR_VIEW)
    for user, search in [(alice, "payroll"), (viewer, "")]:
        JobBulkAction.objects.create(
            user=user,
            username=user.username,
            action="delete",
            filter={"search": search},
            confirmed=1,
            acted=1,
        )
    operator = make_user(operator=True)

    seen_by_viewer = logged_in(viewer).get(PAGE).content.decode()
    seen_by_operator = logged_in(operator).get(PAGE).content.decode()

    assert f"<strong>{viewer.username}</strong> delete" in seen_by_viewer
    assert alice.username not in seen_by_viewer and "payroll" not in seen_by_viewer
    assert f"<strong>{alice.username}</strong> delete" in seen_by_operator and "payroll" in seen_by_operator
    assert f"<strong>{viewer.username}</strong> delete" in seen_by_operator


def test_the_audit_records_the_ids_of_the_jobs_acted_on_shown_in_the_admin(make_user):
    admin, owner = make_user(is_superuser=True, is_staff=True), make_user()
    originals = [failed(owner, minutes=10 + i) for i in range(2)]

    result = previewed_apply(admin, FAILED_SIMULATE, RETRY)

    audit = JobBulkAction.objects.get()
    retries = Job.objects.filter(retry_of__in=originals)
    assert sorted(audit.job_ids) == sorted(result["job_ids"]) == sorted(str(job.id) for job in retries)
    shown = logged_in(admin).get(f"/admin/jobs/jobbulkaction/{audit.pk}/change/")
    assert shown.status_code == 200 and "Jobs acted on" in shown.content.decode()
    assert all(job_id in shown.content.decode() for job_id in audit.job_ids)


def test_the_page_previews_a_failure_groups_retry_from_its_link_and_keeps_its_bounds(make_user):
    """The Operations page links to the retry of a failure group: an exact error class and the
    group's finished bounds, in the query string."""
    operator, owner = make_user(operator=True), make_user()
    group = [failed(owner, minutes=40 + i, error_class="UnicodeDecodeError") for i in range(2)]
    failed(owner, minutes=40, error_class="UnicodeError")
    failed(owner, minutes=5, error_class="UnicodeDecodeError")  # after the group
    until = (timezone.now() - timedelta(minutes=30)).replace(microsecond=0)
    since = until - timedelta(hours=1)
    link = {"preview": "1", "action": "retry", "states": "failed", "error_class": "UnicodeDecodeError",
            "finished_after": since.isoformat(), "finished_before": until.isoformat()}  # fmt: skip
    client = logged_in(operator)

    confirm = client.get(PAGE, link)

    page = confirm.content.decode()
    assert "Retry 2 jobs?" in page
    assert "error class UnicodeDecodeError" in page
    assert f"finished from {since:%Y-%m-%d %H:%M:%S} UTC to before {until:%Y-%m-%d %H:%M:%S} UTC" in page
    posted = {name: value for name, value in re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page)}
    assert posted["finished_before"] == until.isoformat() and posted["error_class"] == "UnicodeDecodeError"

    done = client.post(PAGE, {**posted, "confirmation": confirmation_in(confirm)}, follow=True)

    assert "Retried 2 jobs." in done.content.decode()
    assert sorted(job.retry_of_id for job in Job.objects.filter(retry_of__isnull=False)) == sorted(
        job.id for job in group
    )
    assert JobBulkAction.objects.get().filter["finished_before"] == until.isoformat().replace("+00:00", "Z")


def test_the_page_says_what_is_wrong_with_a_links_bounds(make_user):
    operator = make_user(operator=True)
    query = {"preview": "1", "action": "retry", "finished_after": "2026-11-30T06:00:00"}
    page = logged_in(operator).get(PAGE, query).content.decode()
    assert "offset" in page and 'name="confirmation"' not in page


def test_a_selection_with_nothing_to_act_on_gives_no_confirmation_and_leaves_no_audit(make_user):
    """Found by review: 22 applies of nothing (any user may call the API) filled the operators'
    "Who did what" with "0 of 0 confirmed", pushing everyone else's off the page."""
    from jobs.bulk import BulkAction, BulkFilter, ConfirmationInvalid, bulk_apply, bulk_preview
    from jobs.models import JobBulkAction

    user = make_user()
    nothing = BulkFilter(search="no-such-job")

    preview = bulk_preview(user=user, bulk_filter=nothing, action=BulkAction.CANCEL)

    assert (preview["actionable"], preview["confirmation"]) == (0, None)
    with pytest.raises(ConfirmationInvalid):
        bulk_apply(user=user, bulk_filter=nothing, action=BulkAction.CANCEL, confirmation="")
    assert not JobBulkAction.objects.exists()
