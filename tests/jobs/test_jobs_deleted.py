"""Deleting jobs (bulk delete, retention) is one service, ``jobs.states.jobs_delete``, and open
pages are told: a ``jobs.deleted`` event to each owner and to operators, in events of at most
DELETED_IDS_PER_EVENT ids (before, a deleted job stayed on every open dashboard until a reload,
and retention read every old job in one statement)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs import housekeeping, states
from jobs.models import Job, JobState
from notifications import events
from tests.jobs.factories import make_job, make_job_with_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    sent: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def recording(*, group: Any, event: Any, **kwargs: Any) -> None:
        sent.append(((group,) if isinstance(group, str) else tuple(group), event))

    monkeypatch.setattr(states, "push_event", recording)
    return sent


def test_deleted_jobs_are_announced_to_their_owners_and_operators_with_their_files_gone(
    make_user, pushed, django_capture_on_commit_callbacks
):
    ada, bob = make_user(), make_user()
    with_file = make_job_with_file(owner=ada, name="export.csv", content=b"a,b\n")
    path = with_file.result_file.path
    plain = make_job(owner=ada, state=JobState.FAILED)
    bobs = make_job(owner=bob, state=JobState.SUCCEEDED)
    kept = make_job(owner=bob, state=JobState.SUCCEEDED)

    with django_capture_on_commit_callbacks(execute=True):
        deleted = states.jobs_delete(Job.objects.exclude(pk=kept.pk))

    assert set(deleted) == {with_file.id, plain.id, bobs.id}
    assert list(Job.objects.values_list("pk", flat=True)) == [kept.pk]
    by_group = {groups: event for groups, event in pushed}
    ada_event = by_group[(events.user_group(ada.pk),)]
    assert ada_event["type"] == "jobs.deleted" and set(ada_event["ids"]) == {str(with_file.id), str(plain.id)}
    assert by_group[(events.user_group(bob.pk),)] == {"type": "jobs.deleted", "ids": [str(bobs.id)]}
    # Operators: every deleted id, in one event for both operator groups.
    operators = by_group[(events.OPS_RESULTS_GROUP, events.OPS_JOBS_GROUP)]
    assert set(operators["ids"]) == {str(with_file.id), str(plain.id), str(bobs.id)}
    assert len(pushed) == 3
    assert not os.path.exists(path)


def test_a_large_deletion_is_announced_in_bounded_events(make_user, pushed):
    owner = make_user()
    now = timezone.now()
    Job.objects.bulk_create(
        [Job(owner=owner, kind="simulate", state=JobState.SUCCEEDED, finished_at=now) for _ in range(450)]
    )

    states.jobs_delete(Job.objects.all())

    sizes = [len(event["ids"]) for _, event in pushed]
    assert sizes == [200, 200, 50] * 2  # the owner's events, then the operators'
    assert max(len(events.dumps(event)) for _, event in pushed) < 16 * 1024


def test_retention_deletes_in_batches_and_announces_what_it_deleted(make_user, pushed, settings, monkeypatch):
    settings.RUNBOARD_JOB_RETENTION_DAYS = 30
    monkeypatch.setattr(housekeeping, "RETENTION_BATCH", 7)
    owner = make_user()
    long_ago = timezone.now() - timedelta(days=40)
    old = Job.objects.bulk_create(
        [Job(owner=owner, kind="simulate", state=JobState.FAILED, finished_at=long_ago) for _ in range(20)]
    )
    recent = make_job(owner=owner, state=JobState.SUCCEEDED)

    removed = housekeeping.retention_apply()

    assert removed["jobs"] == 20
    assert list(Job.objects.values_list("pk", flat=True)) == [recent.pk]
    announced = [job_id for groups, event in pushed for job_id in event["ids"] if len(groups) == 1]
    assert sorted(announced) == sorted(str(job.pk) for job in old)
    assert len(pushed) == 6  # batches of 7, 7 and 6: one event each to the owner and operators


def test_a_deletion_across_many_owners_sends_operators_a_few_events_not_one_per_owner(make_user, pushed):
    """Found by review: retention over 300 owners' jobs sent every operator 300 one-id events."""
    now = timezone.now()
    owners = [make_user() for _ in range(30)]
    Job.objects.bulk_create(
        [Job(owner=owner, kind="simulate", state=JobState.SUCCEEDED, finished_at=now) for owner in owners]
    )

    states.jobs_delete(Job.objects.all())

    to_operators = [event for groups, event in pushed if events.OPS_JOBS_GROUP in groups]
    assert [len(event["ids"]) for event in to_operators] == [30]
    assert sum(1 for groups, _ in pushed if len(groups) == 1) == 30  # one to each owner
