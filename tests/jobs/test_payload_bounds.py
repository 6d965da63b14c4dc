"""Events, snapshots and lists stay small whatever a job holds (issue 11, item 3).

Hostile jobs - a huge result, huge parameters, a huge error, long messages and names, in every
kind of text (ASCII, CJK, emoji, markup, control characters) - and many of them: every job
payload stays within 4 KiB, every list page and snapshot within 256 KiB, on every transport, and
the whole result is served by reference to those who may see the job.
"""

from __future__ import annotations

import io
import json
import random
import re
import string
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from jobs import runner, selectors, states
from jobs.kinds.csv_profile.profiler import profile_csv
from jobs.kinds.registry import _kinds, get_kind
from jobs.models import Job, JobState
from jobs.reporter import ProgressReporter
from jobs.results import ResultTooLarge, compact_size, wire_size
from jobs.retries import MAX_ATTEMPTS_LIMIT
from notifications import events, push
from notifications.selectors import snapshot_for_user
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db

KIB = 1024
PAYLOAD_MAX = 4 * KIB  # what Runboard promises (the issue's ceiling is 16 KiB)
LIST_MAX = 256 * KIB

TEXTS = {
    "ascii": "x" * 200_000,
    "cjk": "漢字" * 100_000,
    "emoji": "😀" * 200_000,
    "markup": "<b>&amp;</b>" * 20_000,
    "control": '\x01\n\t\\"' * 40_000,
}


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def hostile_job(owner, text: str) -> Job:
    """A finished job with everything a user or a kind can make long made long with ``text``."""
    earlier = make_job(owner=owner, state=JobState.FAILED)
    job = Job.objects.create(
        owner=owner,
        kind=text[:64],  # an unknown kind: its title is its name
        label=text[:200],  # jobs.models.LABEL_MAX
        error_class=text[:100],  # jobs.models.ERROR_CLASS_MAX
        params={"text": text, "many": list(range(20_000)), "deep": _nested(text[:100], 60), text[:500]: 1},
        state=JobState.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        cancel_requested_at=timezone.now(),
        retry_of=earlier,
        # Every attempt a policy may have, each failed, as the state machine stores them (an
        # error cut to ATTEMPT_ERROR_CHARS), some with a time that is no time at all.
        attempts=MAX_ATTEMPTS_LIMIT,
        max_attempts=MAX_ATTEMPTS_LIMIT,
        attempt_errors=[
            {
                "attempt": n,
                "error": text[: states.ATTEMPT_ERROR_CHARS],
                "failed_at": timezone.now().isoformat() if n % 2 else text[:64],
                "retry_in": 600.0,
            }
            for n in range(1, MAX_ATTEMPTS_LIMIT)
        ],
    )
    result = {"blob": text, "rows": [[text[:1000]] * 10 for _ in range(50)], "deep": _nested(text[:1000], 40)}
    states.job_finish(
        job_id=job.id, state=JobState.SUCCEEDED, result=result, error=text,
        progress=(2**63 - 1, 2**63 - 1, text[:500]), result_file=f"results/{job.id}/export.csv",
    )  # fmt: skip
    return Job.objects.get(pk=job.pk)


def _nested(leaf, depth):
    value = leaf
    for _ in range(depth):
        value = {"a": [value, leaf]}
    return value


def hostile_user(make_user, text):
    return make_user(username=f"{uuid.uuid4().hex[:6]}{text[:144]}")


def json_script_payload(html: str) -> str:
    match = re.search(r'<script id="job-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, html[:500]
    return match.group(1)


def all_the_ways_a_payload_is_sent(job: Job, viewer) -> dict[str, int]:
    """Bytes of this job's payload on each transport."""
    payload = selectors.job_payload(job)
    client = logged_in(viewer)
    page = client.get(f"/jobs/{job.id}/")
    assert page.status_code == 200
    return {
        "wire": wire_size(payload),
        "socket/SSE job.update": len(events.dumps(events.job_update(payload)).encode()) - 30,
        "API detail": len(client.get(f"/api/v1/jobs/{job.id}/").content),
        "job page": len(json_script_payload(page.content.decode()).encode()),
    }


@pytest.mark.parametrize("script", TEXTS)
def test_a_job_payload_is_at_most_4_kib_whatever_the_job_holds(make_user, script, caplog):
    text = TEXTS[script]
    owner = hostile_user(make_user, text)
    job = hostile_job(owner, text)
    assert job.result_bytes > 500_000 and len(job.error) == states.ERROR_MAX_CHARS

    sizes = all_the_ways_a_payload_is_sent(job, owner)

    assert max(sizes.values()) <= PAYLOAD_MAX, sizes
    payload = selectors.job_payload(job)
    assert "result" not in payload
    assert {"params", "error", "progress", "owner"} <= set(payload["truncated"])
    # A label is at most 200 characters: whole when they fit its 160 bytes, else cut and said so.
    assert payload["label"] == job.label or "label" in payload["truncated"]
    # Each field's own budget kept it small: the last-resort emptying was never needed.
    emptied = [record for record in caplog.records if record.name == "jobs.selectors"]
    assert "result_summary" not in payload["truncated"] and not emptied
    assert payload["result_url"] == f"/api/v1/jobs/{job.id}/result/"
    assert payload["result_bytes"] == job.result_bytes and payload["result_complete"] is False
    assert payload["progress"]["current"] == 2**63 - 1


def test_a_small_result_is_its_own_summary_and_nothing_is_marked_cut(make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result={"steps": 3, "ok": True})

    payload = selectors.job_payload(Job.objects.get(pk=job.pk))

    assert payload["result_summary"] == {"steps": 3, "ok": True} and payload["result_complete"] is True
    assert payload["truncated"] == [] and payload["params"] == {"steps": 1, "step_ms": 0}
    assert payload["result_url"] == f"/api/v1/jobs/{job.id}/result/"


def test_a_running_job_whose_heartbeat_is_late_is_shown_stalled_with_no_rate_or_eta(make_user, settings):
    """Within RUNBOARD_HEARTBEAT_MAX_SILENCE plus a margin the payload has a rate and an ETA;
    past it, ``stalled`` with how long the worker has been silent and neither (issue 14)."""
    settings.RUNBOARD_HEARTBEAT_MAX_SILENCE = 5.0
    now = timezone.now()
    job = make_job(
        owner=make_user(), state=JobState.RUNNING, progress_current=50, progress_total=100,
        started_at=now - timedelta(seconds=12), heartbeat_at=now - timedelta(seconds=2),
    )  # fmt: skip
    fresh = selectors.job_payload(job)
    assert fresh["stall_after"] == 10.0 and not fresh["stalled"]
    assert 2 <= fresh["silent_for"] < 3 and fresh["rate"] == 5.0 and fresh["eta_seconds"] == 10.0

    Job.objects.filter(pk=job.pk).update(heartbeat_at=now - timedelta(seconds=40))
    stalled = selectors.job_payload(Job.objects.get(pk=job.pk))
    assert stalled["stalled"] and 40 <= stalled["silent_for"] < 41
    assert stalled["rate"] is None and stalled["eta_seconds"] is None

    done = selectors.job_payload(make_job(owner=job.owner, state=JobState.SUCCEEDED))
    assert (done["silent_for"], done["stall_after"], done["stalled"]) == (None, None, False)


def test_a_job_without_a_result_has_no_result_url(make_user):
    payload = selectors.job_payload(make_job(owner=make_user(), state=JobState.RUNNING))

    assert (payload["result_summary"], payload["result_url"], payload["result_bytes"]) == (None, None, None)


def test_a_progress_push_stays_bounded_whatever_the_kind_reports(make_user):
    pushes = []
    job = make_job(owner=make_user(), state=JobState.RUNNING)
    reporter = ProgressReporter(
        job=job, push_interval=0, publish=pushes.append, heartbeat=lambda progress: (1, False), pump=False
    )

    reporter.progress(10**5000, 10**6000, "😀<&>" * 1_000_000)
    reporter.progress(5, 10, "fine")

    huge, fine = pushes
    assert wire_size(huge) <= PAYLOAD_MAX and huge["truncated"] == ["progress"]
    assert huge["progress"]["current"] == huge["progress"]["total"] == 2**63 - 1
    assert fine["progress"] == {"current": 5, "total": 10, "message": "fine"} and fine["truncated"] == []


def clone(job: Job, owners, count: int) -> list[Job]:
    """``count`` copies of a finished job (parameters, error, result summary and size), spread over
    ``owners``. Lists never read a job's result, so the copies leave it out (to be quick)."""
    fields = {
        f.attname: getattr(job, f.attname)
        for f in Job._meta.concrete_fields
        if f.attname not in ("id", "owner_id", "retry_of_id", "created_at", "result")
    }
    return Job.objects.bulk_create(
        [Job(**fields, id=uuid.uuid4(), owner=owners[i % len(owners)]) for i in range(count)]
    )


def test_an_api_page_of_jobs_is_at_most_256_kib_and_next_pages_through_every_job(make_user):
    text = TEXTS["emoji"][:50_000]
    owner = hostile_user(make_user, text)
    clone(hostile_job(owner, text), [owner], 150)
    everyone = [str(job.pk) for job in selectors.job_list_for_user(user=owner, limit=1000)]
    client = logged_in(owner)

    seen, url, pages = [], "/api/v1/jobs/?limit=200", []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(len(response.content))
        body = response.json()
        seen += [job["id"] for job in body["results"]]
        url = body["next"]

    assert max(pages) <= LIST_MAX and len(pages) > 1, pages
    assert seen == everyone  # every job exactly once, in order, though pages end early


def test_a_staff_snapshot_is_bounded_whatever_every_users_jobs_hold(make_user):
    text = TEXTS["cjk"][:50_000]
    users = [hostile_user(make_user, text) for _ in range(3)]
    clone(hostile_job(users[0], text), users, 80)
    staff = make_user(operator=True)

    snapshot = snapshot_for_user(user=staff)

    assert len(snapshot["jobs"]) == selectors.SNAPSHOT_JOBS == 50
    assert {job["owner"] for job in snapshot["jobs"]} == {
        selectors.job_payload(Job.objects.filter(owner=user).first())["owner"] for user in users
    }
    assert len(events.dumps(snapshot).encode()) <= LIST_MAX
    assert wire_size(snapshot["jobs"]) <= 200 * KIB


def test_the_whole_result_is_served_by_reference_to_the_owner_and_staff_only(make_user):
    owner, other, staff = make_user(), make_user(), make_user(operator=True)
    job = make_job(owner=owner, state=JobState.RUNNING)
    result = {"values": ["é" * 3000] * 500}
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result=result, error="")
    url = selectors.job_payload(Job.objects.get(pk=job.pk))["result_url"]

    for viewer in (owner, staff):
        response = logged_in(viewer).get(url)
        assert response.status_code == 200
        assert response.json()["result"] == result and response.json()["page"] is None
        assert len(response.content) < 1.1 * compact_size(result) + 1000  # UTF-8, not \u-escaped
    assert logged_in(other).get(url).status_code == 404
    assert Client().get(url).status_code == 401
    assert logged_in(owner).get(f"/api/v1/jobs/{uuid.uuid4()}/result/").status_code == 404


def test_a_cut_error_is_whole_at_the_result_url(make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=JobState.FAILED, error="boom " * 10_000)
    payload = selectors.job_payload(Job.objects.get(pk=job.pk))

    assert "error" in payload["truncated"] and payload["error"].endswith("…")
    body = logged_in(owner).get(payload["result_url"]).json()
    assert body["result"] is None and body["error"] == ("boom " * 10_000)[: states.ERROR_MAX_CHARS]


def wide_csv(columns=1000, rows=6, cell=3000) -> bytes:
    """The issue's example: 1,000 columns x 6 rows of ~3 KB distinct cells (18 MB)."""
    rnd = random.Random(11)
    lines = [",".join(f"c{i}" for i in range(columns))]
    lines += [",".join("".join(rnd.choices(string.ascii_letters, k=cell)) for _ in range(columns))
              for _ in range(rows)]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def test_the_issues_wide_csv_gives_a_small_payload_and_a_paged_result(make_user):
    owner = make_user()
    data = wide_csv()
    result = profile_csv(io.BytesIO(data))
    result["file_name"] = "wide.csv"
    job = Job.objects.create(
        owner=owner, kind="csv_profile", params={"upload_id": str(uuid.uuid4())}, state=JobState.RUNNING,
        started_at=timezone.now(), heartbeat_at=timezone.now(),
    )  # fmt: skip
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result=result)
    job = Job.objects.get(pk=job.pk)

    payload = selectors.job_payload(job)
    assert len(data) > 18_000_000 and job.result_bytes < 1_500_000  # was 15 MB, all of it in payloads
    assert wire_size(payload) <= PAYLOAD_MAX
    assert payload["result_summary"] == {
        "file_name": "wide.csv", "rows": 6, "bytes": len(data), "delimiter": ",", "encoding": "utf-8",
        "notes": [], "columns": 1000, "types": {"string": 1000}, "truncated": True,
    }  # fmt: skip

    client = logged_in(owner)
    first = client.get(payload["result_url"] + "?limit=50")
    body = first.json()
    assert [c["name"] for c in body["result"]["columns"]] == [f"c{i}" for i in range(50)]
    assert body["page"] == {"key": "columns", "offset": 0, "limit": 50, "total": 1000}
    assert len(first.content) < 100 * KIB
    last = client.get(payload["result_url"] + "?limit=50&offset=950").json()
    assert last["next"] is None and last["result"]["columns"][-1]["name"] == "c999"
    top = body["result"]["columns"][0]["top"][0]
    assert len(top["value"]) == 201 and top["value"].endswith("…") and top["truncated"] is True


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "offset=-x"])
def test_a_bad_result_page_is_a_400(make_user, query):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_finish(job_id=job.id, state=JobState.SUCCEEDED, result={"x": 1})

    assert logged_in(owner).get(f"/api/v1/jobs/{job.id}/result/?{query}").status_code == 400


def test_a_result_over_the_limit_fails_the_job_instead_of_being_stored(make_user, settings, monkeypatch):
    settings.RUNBOARD_RESULT_MAX_BYTES = 10_000
    owner = make_user()
    with pytest.raises(ResultTooLarge):
        states.job_finish(job_id=make_job(owner=owner, state=JobState.RUNNING).id,
                            state=JobState.SUCCEEDED, result="x" * 20_000)  # fmt: skip
    simulate = get_kind("simulate")
    monkeypatch.setitem(_kinds, "simulate", replace(simulate, run=lambda ctx, params: {"blob": "x" * 20_000}))
    job = make_job(owner=make_user())

    runner.job_run(job_id=job.id)

    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.result is None
    assert job.error == "The job's result is 20,011 bytes of JSON; at most 10,000 may be stored."


class Published:
    """Stands in for the per-process publisher: what would reach Redis."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def get(self) -> Published:
        return self

    def submit(self, target: str, message: dict, direct: bool = False) -> None:
        self.sent.append((target, message["text"]))


def test_a_burst_of_log_lines_goes_out_as_events_of_at_most_16_kib(make_user, monkeypatch, settings):
    published = Published()
    monkeypatch.setattr(push, "_publisher", published)
    settings.RUNBOARD_LOG_LINES_KEPT = 2000
    job = make_job(owner=make_user(), state=JobState.RUNNING)
    lines = [f"{i} " + "😀<>" * 5000 for i in range(300)] + [f"short {i}" for i in range(700)]

    with django_on_commit_now():
        states.job_log_append(job_id=job.id, lines=lines)

    sizes = [len(text.encode()) for _, text in published.sent]
    assert len(sizes) > 1 and max(sizes) <= 16 * KIB, max(sizes)
    sent = [line for _, text in published.sent for line in json.loads(text)["lines"]]
    assert [line["seq"] for line in sent] == list(range(1, 1001))
    assert max(wire_size(line["text"]) for line in sent) <= states.LOG_LINE_MAX_BYTES


def django_on_commit_now():
    """Run on-commit callbacks at once (the test's transaction never commits)."""
    from unittest import mock

    return mock.patch("django.db.transaction.on_commit", lambda func, robust=False: func())


def test_a_page_of_log_lines_is_at_most_256_kib(make_user, settings):
    settings.RUNBOARD_LOG_LINES_KEPT = 2000
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    states.job_log_append(job_id=job.id, lines=["漢" * 2000] * 1000)
    client = logged_in(owner)

    seen, after = 0, 0
    while True:
        response = client.get(f"/api/v1/jobs/{job.id}/log/?after={after}")
        assert len(response.content) <= LIST_MAX
        lines = response.json()["lines"]
        if not lines:
            break
        seen += len(lines)
        after = lines[-1]["seq"]
    assert seen == 1000


def test_a_whole_snapshot_with_the_largest_notifications_stays_within_256_kib(make_user):
    """The jobs get what the notifications leave: 20 notifications with the longest bodies and
    titles of the widest characters, and 80 hostile jobs, still make one bounded snapshot."""
    from notifications.models import Notification

    text = TEXTS["cjk"][:50_000]
    staff = make_user(operator=True)
    owner = hostile_user(make_user, text)
    clone(hostile_job(owner, text), [owner], 80)
    Notification.objects.bulk_create(
        [Notification(recipient=staff, title=text[:200], body=text[:10_000]) for _ in range(25)]
    )

    snapshot = snapshot_for_user(user=staff)

    assert len(snapshot["notifications"]) == 20 and snapshot["jobs"]
    assert wire_size(snapshot) <= LIST_MAX


def test_a_watchers_log_tail_comes_as_events_of_at_most_16_kib(make_user):
    from jobs.models import JobLogLine
    from notifications.selectors import LOG_TAIL, log_tail_for_watcher

    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING)
    long_line = TEXTS["emoji"][:2000]
    states.job_log_append(job_id=job.id, lines=[long_line] * 300)
    assert JobLogLine.objects.filter(job=job).count() == 300

    batches = log_tail_for_watcher(user=owner, job_id=str(job.id))

    sizes = [wire_size(events.job_log(job_id=str(job.id), lines=lines)) for lines in batches]
    assert max(sizes) <= 16 * KIB and len(batches) > 1
    seqs = [line["seq"] for lines in batches for line in lines]
    assert seqs == list(range(301 - LOG_TAIL, 301))
