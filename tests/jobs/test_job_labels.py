"""Jobs can be told apart (issue 16 §4): every CSV job read "Profile a CSV file" with
``{"upload_id": …}`` as its parameters, and searching the file name found nothing. Each kind now
labels its jobs at launch; the label is in the payload, the search, notifications, the CLI and
the export. And a failed job records its error class (what §13 groups failures by)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from jobs import launch
from jobs.kinds.registry import JobKind, get_kind
from jobs.models import LABEL_MAX, Job, JobState
from jobs.selectors import job_payload
from jobs.states import job_finish
from notifications.models import Notification
from tests.jobs.factories import make_job
from tests.jobs.live import wait_for_job


def _launch_csv(owner: Any, name: str, content: bytes) -> Job:
    file = SimpleUploadedFile(name, content, "text/csv")
    return launch.job_launch(owner=owner, kind="csv_profile", params={}, file=file, rate_limit=False)


@pytest.mark.django_db
def test_a_csv_job_is_labelled_with_its_file_name_and_size(make_user):
    job = _launch_csv(make_user(), "quarterly-sales.csv", b"region,amount\n" + b"north,12\n" * 150_000)

    assert job.label == "quarterly-sales.csv (1.4 MB)"
    assert job_payload(job)["label"] == "quarterly-sales.csv (1.4 MB)"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "params", "label"),
    [
        ("primes", {"n": 10_000_000, "chunks": 4}, "Below 10,000,000 in 4 chunks"),
        ("primes", {"n": 1000, "chunks": 4}, "Below 1,000 in 1 chunk"),
        ("simulate", {"steps": 10, "step_ms": 200}, "10 steps of 200 ms"),
        ("simulate", {"steps": 1, "step_ms": 0}, "1 step of 0 ms"),
        ("simulate", {"steps": 5, "step_ms": 0, "fail_at_step": 3}, "5 steps of 0 ms, fails at step 3"),
        ("broadcast", {"title": "Maintenance at 6", "group": "ops"}, "Maintenance at 6 (to group ops)"),
        ("export_jobs", {"state": "failed"}, "Failed jobs"),
    ],
)
def test_each_built_in_kind_labels_its_jobs_by_what_tells_them_apart(kind, params, label):
    job_kind = get_kind(kind)

    assert job_kind.label_for(job_kind.validate(params)) == label


@pytest.mark.django_db
def test_the_job_list_search_finds_a_csv_job_by_its_file_name(make_user):
    owner = make_user()
    wanted = _launch_csv(owner, "quarterly-sales.csv", b"a,b\n1,2\n")
    _launch_csv(owner, "inventory.csv", b"a,b\n1,2\n")
    client = Client()
    client.force_login(owner)

    response = client.get("/api/v1/jobs/", {"q": "quarterly"})

    assert response.status_code == 200
    assert [job["id"] for job in response.json()["results"]] == [str(wanted.id)]


@pytest.mark.django_db
def test_the_finished_notification_names_the_job_it_is_about(make_user):
    owner = make_user()
    job = make_job(owner=owner, state=JobState.RUNNING, kind="csv_profile", label="quarterly-sales.csv (8 B)")

    job_finish(job_id=job.id, state=JobState.FAILED, error="Line 2: 3 fields, expected 2")

    notification = Notification.objects.get(recipient=owner, job_id=job.id)
    assert notification.title == "Profile a CSV file failed: quarterly-sales.csv (8 B)"


@pytest.mark.django_db
def test_the_export_has_each_job_s_label(make_user, tmp_path):
    from tests.jobs.test_export_cells import exported_rows

    owner = make_user()
    job = make_job(owner=owner, state=JobState.SUCCEEDED, label="quarterly-sales.csv (8 B)")

    rows = exported_rows(owner.pk, tmp_path)

    assert rows[str(job.id)]["label"] == "quarterly-sales.csv (8 B)"


def _kind_labelled(label: Any) -> JobKind:
    simulate = get_kind("simulate")
    return JobKind(
        name="labelled",
        title="Labelled",
        description="",
        params_model=simulate.params_model,
        run=simulate.run,
        label=label,
    )


def test_a_label_is_one_line_of_at_most_label_max_characters_and_a_failing_one_is_no_label(caplog):
    params = get_kind("simulate").validate({})

    assert _kind_labelled(lambda p: "a\n\tb  c").label_for(params) == "a b c"
    long = _kind_labelled(lambda p: "x" * 500).label_for(params)
    assert len(long) == LABEL_MAX and long.endswith("…")
    assert _kind_labelled(lambda p: 1 / 0).label_for(params) == ""
    assert "label() failed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_records_its_error_class(celery_worker, make_user):
    params = {"steps": 3, "step_ms": 0, "fail_at_step": 2}
    job = launch.job_create(owner=make_user(), kind="simulate", params=params, rate_limit=False)

    final = wait_for_job(job.id, lambda j: j.is_final, timeout=30)

    assert (final.state, final.error_class) == (JobState.FAILED, "SimulatedFailure")
    assert job_payload(final)["error_class"] == "SimulatedFailure"


@pytest.mark.django_db(transaction=True)
def test_the_csv_profile_s_export_lists_labels_in_a_spreadsheet_safe_cell(make_user, tmp_path):
    """A label comes from a file name the user chose: the export quotes it like any text cell."""
    from tests.jobs.test_export_cells import exported_rows

    owner = make_user()
    job = _launch_csv(owner, "=HYPERLINK(1).csv", b"a,b\n1,2\n")

    rows = exported_rows(owner.pk, tmp_path)

    assert rows[str(job.id)]["label"] == "'=HYPERLINK(1).csv (8 B)"


def test_a_label_carries_no_control_character_nor_bidi_override():
    """Found by review: a broadcast titled with a terminal escape ("\\x1b]0;pwned\\x07\\x1b[2J")
    kept it in its label, which `manage.py jobs` printed raw."""
    params = get_kind("simulate").validate({})
    hostile = "\x1b]0;pwned\x07\x1b[2Jreport\u202egnp.exe\x9b1m\tdone\r\n"

    assert _kind_labelled(lambda p: hostile).label_for(params) == "]0;pwned[2Jreportgnp.exe1m done"
    assert _kind_labelled(lambda p: "Zürich 😀 résumé").label_for(params) == "Zürich 😀 résumé"


@pytest.mark.django_db
def test_the_job_list_api_filters_by_exactly_one_error_class(make_user):
    """The dashboard asks the API with the failure group's class (`?error_class=`); the API
    ignored it, so pages filled with other failures the page then hid."""
    owner = make_user()
    wanted = make_job(owner=owner, state=JobState.FAILED, error="x", error_class="TimeoutError")
    make_job(owner=owner, state=JobState.FAILED, error="TimeoutError said", error_class="ConnectTimeoutError")
    client = Client()
    client.force_login(owner)

    response = client.get("/api/v1/jobs/", {"error_class": "TimeoutError"})

    assert [job["id"] for job in response.json()["results"]] == [str(wanted.id)]
