"""Each job kind end to end on the real worker, through the API where users reach it."""

import csv
import io
import json
from datetime import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from jobs import housekeeping, launch
from jobs.models import Job, JobChunk, Upload
from tests.conftest import receive_until
from tests.jobs.live import signed_in_socket, until_final, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def launch_csv(client, content: bytes, name="data.csv", params="{}"):
    return client.post(
        "/api/v1/jobs/",
        {"kind": "csv_profile", "params": params, "file": SimpleUploadedFile(name, content, "text/csv")},
    )


def test_primes_runs_in_parallel_chunks_with_one_aggregate_reaching_exactly_100_percent(
    celery_worker, ws_connect, make_user
):
    user = make_user()
    ws = signed_in_socket(ws_connect, user)
    job = launch.job_create(owner=user, kind="primes", params={"n": 2_000_000, "chunks": 4})

    updates = until_final(ws, job.id, timeout=60)
    final = updates[-1]
    assert final["state"] == "succeeded"
    # A small result is its own summary in the payload (the whole result is at result_url).
    assert final["result_summary"] == {"n": 2_000_000, "primes": 148_933, "chunks": 4}
    assert final["result_complete"] is True
    assert final["progress"]["current"] == final["progress"]["total"] == 2_000_000
    # Chunks publish from different processes, so arrival order may differ; what a client shows
    # (only updates newer than what it has) is one aggregate that only grows.
    shown, newest = [], 0
    for update in updates:
        if update["version"] > newest:
            newest = update["version"]
            shown.append(update["progress"]["current"])
    assert shown == sorted(shown) and shown[-1] == 2_000_000
    assert JobChunk.objects.filter(job_id=job.id, done=True).count() == 4


def test_export_gives_a_download_only_its_owner_can_use(celery_worker, ws_connect, make_user):
    owner, other = make_user(), make_user()
    ws = signed_in_socket(ws_connect, owner)
    earlier = launch.job_create(owner=owner, kind="simulate", params={"steps": 1, "step_ms": 0})
    until_final(ws, earlier.id)
    launch.job_create(owner=other, kind="simulate", params={"steps": 1, "step_ms": 0})
    export = launch.job_create(owner=owner, kind="export_jobs", params={})

    final = until_final(ws, export.id)[-1]
    assert final["state"] == "succeeded" and final["download_url"]
    note = receive_until(
        ws, lambda e: e["type"] == "notification.new" and e["notification"]["job_id"] == str(export.id)
    )[-1]
    assert note["notification"]["link"] == final["download_url"]

    response = logged_in(owner).get(final["download_url"])
    body = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    assert str(earlier.id) in body and body.count("\n") == 2  # header + the owner's one other job
    row = next(csv.DictReader(io.StringIO(body)))
    assert json.loads(row["params"]) == Job.objects.get(pk=earlier.pk).params  # JSON, not a repr
    earlier.refresh_from_db()
    created, started, finished = earlier.created_at, earlier.started_at, earlier.finished_at
    assert started and finished
    assert datetime.fromisoformat(row["started_at"]) == started  # ISO 8601, to the microsecond
    assert float(row["duration_seconds"]) == round((finished - started).total_seconds(), 3)
    assert float(row["queue_wait_seconds"]) == round((started - created).total_seconds(), 3)
    assert logged_in(other).get(final["download_url"]).status_code == 404
    assert Client().get(final["download_url"]).status_code == 401

    assert housekeeping.job_purge_expired_result_files(older_than_days=-1) == 1
    assert logged_in(owner).get(final["download_url"]).status_code == 404


def test_a_broadcast_reaches_every_online_recipient_live(celery_worker, ws_connect, make_user):
    admin = make_user(operator=True)
    listeners = [make_user() for _ in range(3)]
    sockets = [signed_in_socket(ws_connect, user) for user in listeners]

    job = launch.job_create(
        owner=admin, kind="broadcast", params={"title": "Maintenance at 18:00", "body": "<b>short</b>"}
    )

    for ws in sockets:
        note = receive_until(
            ws, lambda e: e["type"] == "notification.new" and e["notification"]["title"].startswith("Maint")
        )
        assert note[-1]["notification"]["body"] == "<b>short</b>"  # text, escaped by the client
    done = wait_for_job(job.id, lambda j: j.is_final)
    assert done.state == "succeeded" and done.result["recipients"] >= 4


def test_a_csv_upload_is_profiled(celery_worker, make_user):
    user = make_user()
    content = b"id,price,name\n1,2.5,ann\n2,3.5,bob\n3,,ann\n"
    response = launch_csv(logged_in(user), content)
    assert response.status_code == 201, response.content

    job = wait_for_job(response.json()["id"], lambda j: j.is_final)
    assert job.state == "succeeded", job.error
    columns = {c["name"]: c for c in job.result["columns"]}
    assert job.result["rows"] == 3
    assert columns["id"]["type"] == "integer" and columns["price"]["empty"] == 1
    assert columns["price"]["mean"] == pytest.approx(3.0)
    assert job.progress_current == job.progress_total == len(content)


def test_spreadsheet_exports_in_utf16_and_latin1_are_profiled_with_decimal_commas(celery_worker, make_user):
    client = logged_in(make_user())
    # Excel's "Unicode text" (UTF-16 with its BOM, tabs, CRLF) and a German "CSV" (cp1252, semicolons).
    unicode_text = "\ufeffName\tBetrag\r\nJosé\t1,50\r\nBjörk\t-3,2\r\n".encode("utf-16-le")
    latin1 = "Name;Betrag\nMüller;1.234,5\nJosé;2,25\n".encode("cp1252")

    jobs = [
        launch_csv(client, unicode_text, "unicode.txt").json()["id"],
        launch_csv(client, latin1).json()["id"],
    ]

    utf16, legacy = (wait_for_job(job_id, lambda j: j.is_final) for job_id in jobs)
    assert utf16.state == legacy.state == "succeeded", (utf16.error, legacy.error)
    assert (utf16.result or {})["encoding"] == "utf-16-le" and (utf16.result or {})["notes"] == []
    assert (legacy.result or {})["encoding"] == "cp1252"
    assert (legacy.result_summary or {})["notes"] == ["Read as cp1252 (not valid UTF-8)."]
    assert "Read as cp1252 (not valid UTF-8)." in legacy.log_lines.values_list("text", flat=True)
    for job, low, high in ((utf16, -3.2, 1.5), (legacy, 2.25, 1234.5)):
        names, amounts = (job.result or {})["columns"]
        assert "José" in {top["value"] for top in names["top"]}
        assert (amounts["type"], amounts["min"], amounts["max"]) == ("float", low, high)


def test_a_declared_encoding_is_used_and_an_unknown_one_is_a_field_error(celery_worker, make_user):
    client = logged_in(make_user())
    shift_jis = "名前,都市\n田中,東京\n".encode("shift_jis")

    refused = launch_csv(client, shift_jis, params='{"encoding": "klingon"}')
    assert refused.status_code == 400
    assert refused.json()["fields"]["params.encoding"] == [
        "Unknown encoding 'klingon'; use a name Python knows, such as cp1252 or latin-1."
    ]
    assert not Job.objects.exists() and not Upload.objects.exists()

    response = launch_csv(client, shift_jis, params='{"encoding": "Shift-JIS"}')
    assert response.status_code == 201, response.content
    assert response.json()["params"]["encoding"] == "shift_jis"
    job = wait_for_job(response.json()["id"], lambda j: j.is_final)
    assert job.state == "succeeded", job.error
    result = job.result or {}
    assert result["encoding"] == "shift_jis"
    assert result["columns"][1]["top"] == [{"value": "東京", "count": 1}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b\n1,2\n3,4,5\n", "Line 3: expected 2 fields, found 3."),
        (b"", "The file is empty."),
        (b"a,b\n1,\x00\n", "Line 2: binary data"),
        ("a,b\n1,é\n".encode() + b"2,\xff\xfe\n", "Line 3: not valid UTF-8"),
    ],
)
def test_a_bad_csv_ends_failed_naming_the_line_and_the_problem(celery_worker, make_user, content, message):
    response = launch_csv(logged_in(make_user()), content)
    job = wait_for_job(response.json()["id"], lambda j: j.is_final)
    assert job.state == "failed"
    assert message in job.error and job.error.startswith("data.csv: ")


def test_oversized_and_non_csv_uploads_are_refused_and_nothing_is_kept(make_user, settings):
    settings.RUNBOARD_UPLOAD_MAX_BYTES = 10
    client = logged_in(make_user())

    too_big = launch_csv(client, b"a,b\n1,2\n3,4\n")
    assert too_big.status_code == 413 and "file" in too_big.json()["fields"]
    wrong = launch_csv(client, b"MZ\x90\x00", name="setup.exe")
    assert wrong.status_code == 400 and "file" in wrong.json()["fields"]
    missing = client.post("/api/v1/jobs/", {"kind": "csv_profile", "params": "{}"})
    assert missing.status_code == 400 and "file" in missing.json()["fields"]
    assert not Job.objects.exists() and not Upload.objects.exists()


def test_an_uploaded_file_name_cannot_choose_where_it_is_stored(make_user, settings):
    user = make_user()
    response = launch_csv(logged_in(user), b"a\n1\n", name="../../../etc/cron.d/evil.csv")
    assert response.status_code == 201
    upload = Upload.objects.get()
    assert upload.original_name == "evil.csv"
    assert upload.file.name == f"uploads/{user.pk}/{upload.id}.csv"


def test_a_job_cannot_read_another_users_upload(make_user):
    alice, bob = make_user(), make_user()
    launch_csv(logged_in(alice), b"a\n1\n")
    alices_upload = Upload.objects.get()

    response = logged_in(bob).post(
        "/api/v1/jobs/",
        data=json.dumps({"kind": "csv_profile", "params": {"upload_id": str(alices_upload.id)}}),
        content_type="application/json",
    )
    assert response.status_code == 400 and "params.upload_id" in response.json()["fields"]
    assert Job.objects.filter(owner=bob).count() == 0


def test_multipart_params_must_be_json(make_user):
    response = logged_in(make_user()).post(
        "/api/v1/jobs/", {"kind": "csv_profile", "params": "{nope", "file": io.BytesIO(b"a\n1\n")}
    )
    assert response.status_code == 400 and "params" in response.json()["fields"]
