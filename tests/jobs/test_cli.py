"""`manage.py launch_job` and `manage.py jobs`: launching through the service, following live, listing.

Following runs the real command as a subprocess against a real Celery worker, so exit statuses
and terminal output are what an operator sees.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs import launch
from jobs.management.commands.launch_job import progress_line
from jobs.models import Job, JobLogLine, JobState, Upload
from tests.jobs.factories import make_job

ROOT = Path(__file__).resolve().parents[2]
live = pytest.mark.django_db(transaction=True)


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_manage(env: dict[str, str], *args: str, stdout: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {predicate}")


def running_job_of(user: Any) -> Job | None:
    return Job.objects.filter(owner=user, state=JobState.RUNNING).first()


def cancel_and_wait(user: Any, job: Job) -> None:
    """Free the worker process for the next test."""
    job.refresh_from_db()
    if not job.is_final:
        launch.job_cancel(user=user, job_id=job.id)
    wait_for(lambda: Job.objects.get(pk=job.id).is_final)


def run_command(name: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def command_error(name: str, *args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        run_command(name, *args)
    return raised.value


# --- Following, for real -----------------------------------------------------------------------


@live
def test_follow_shows_live_progress_and_exits_0_when_the_job_succeeds(celery_worker, server_env, make_user):
    user = make_user()

    done = manage(
        server_env, "launch_job", "simulate", "--user", user.username,
        "--param", "steps=10", "--param", "step_ms=300", "--follow",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    job = Job.objects.get(owner=user)
    assert job.state == JobState.SUCCEEDED and job.params["steps"] == 10
    out = done.stdout
    assert f"job {job.id} for {user.username}" in out
    # Progress while it ran, not only at the end: some line between 1% and 99%.
    assert re.search(r"\]\s+([1-9]|[1-9]\d)%\s+Step \d+ of 10", out), out
    assert "[####################] 100%  Step 10 of 10" in out
    assert "  | Finished step 10 of 10" in out  # the log
    assert f"Job {job.id} succeeded after" in out
    assert 'Result: {"steps": 10}' in out
    assert "\r" not in out and "\x1b" not in out  # not a terminal: plain lines


@live
def test_follow_exits_1_and_prints_the_error_and_the_whole_log_when_the_job_fails(
    celery_worker, server_env, make_user
):
    user = make_user()

    done = manage(
        server_env, "launch_job", "simulate", "--user", user.username, "--follow",
        "--param", "steps=30", "--param", "step_ms=10", "--param", "fail_at_step=25",
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    assert "80%  Step 24 of 30" in done.stdout
    assert " failed after " in done.stdout
    assert "Error: Simulated failure at step 25 of 30" in done.stderr
    logged = re.findall(r"^  \| Finished step (\d+) of 30$", done.stdout, re.MULTILINE)
    assert logged == [str(step) for step in range(1, 25)]
    assert Job.objects.get(owner=user).state == JobState.FAILED


@live
def test_follow_exits_3_when_the_job_is_cancelled(celery_worker, server_env, make_user, tmp_path):
    user = make_user()
    with (tmp_path / "out").open("w+") as out:
        proc = start_manage(
            server_env, "launch_job", "simulate", "--user", user.username, "--follow",
            "--param", "steps=100", "--param", "step_ms=100", stdout=out,
        )  # fmt: skip
        job = wait_for(lambda: running_job_of(user))
        launch.job_cancel(user=user, job_id=job.id)
        _, err = proc.communicate(timeout=30)
        out.seek(0)
        stdout = out.read()

    assert proc.returncode == 3, err
    assert f"Job {job.id} cancelled after" in stdout
    assert Job.objects.get(pk=job.id).state == JobState.CANCELLED


@live
def test_follow_stops_at_the_timeout_with_exit_4_and_leaves_the_job_running(
    celery_worker, server_env, make_user
):
    user = make_user()

    done = manage(
        server_env, "launch_job", "simulate", "--user", user.username, "--follow", "--timeout", "1.5",
        "--param", "steps=100", "--param", "step_ms=100",
    )  # fmt: skip

    job = Job.objects.get(owner=user)
    assert done.returncode == 4, done.stderr
    assert f"jobs --follow {job.id}" in done.stderr
    assert not job.is_final and job.cancel_requested_at is None
    cancel_and_wait(user, job)


@live
def test_ctrl_c_stops_following_with_exit_130_and_does_not_cancel_the_job(
    celery_worker, server_env, make_user, tmp_path
):
    user = make_user()
    with (tmp_path / "out").open("w+") as out:
        proc = start_manage(
            server_env, "launch_job", "simulate", "--user", user.username, "--follow",
            "--param", "steps=100", "--param", "step_ms=100", stdout=out,
        )  # fmt: skip
        job = wait_for(lambda: running_job_of(user))
        wait_for(lambda: "Launched" in Path(out.name).read_text())  # following by now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, err
    assert f"Follow it again with: python manage.py jobs --follow {job.id}" in err
    job.refresh_from_db()
    assert job.state == JobState.RUNNING and job.cancel_requested_at is None
    cancel_and_wait(user, job)


@live
def test_on_a_terminal_the_progress_bar_is_redrawn_in_place(celery_worker, server_env, make_user):
    user = make_user()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "launch_job", "simulate", "--user", user.username, "--follow",
         "--param", "steps=8", "--param", "step_ms=300"],
        env={**server_env, "COLUMNS": "200"}, cwd=ROOT, stdout=follower, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if not ready:
            continue
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        screen += data
    os.close(leader)
    proc.wait(timeout=30)

    text = screen.decode()
    assert proc.returncode == 0
    # Each redraw returns to the line start (a bare \r: the terminal shows \n as \r\n) and clears
    # what was left of the previous one; the bar is redrawn while the job runs, not only at the end.
    assert len(re.findall("\r(?!\n)", text)) >= 5 and "\x1b[K" in text
    assert len(re.findall(r"\r\[#*-+\]", text)) >= 2, repr(text)
    assert "[####################] 100%  Step 8 of 8" in text
    assert "\x1b[32" in text  # "succeeded" in green, on a terminal only


@live
def test_follow_a_csv_file_profile_uploaded_from_the_shell(celery_worker, server_env, make_user, tmp_path):
    user = make_user()
    csv = tmp_path / "people.csv"
    csv.write_text("name,age\nada,36\ngrace,45\n")

    done = manage(
        server_env, "launch_job", "csv_profile", "--user", user.username, "--file", str(csv), "--follow"
    )

    assert done.returncode == 0, done.stderr
    upload = Upload.objects.get(owner=user)
    assert upload.original_name == "people.csv"
    assert Job.objects.get(owner=user).params == {"upload_id": str(upload.id)}
    assert '"rows": 2' in done.stdout and '"file_name": "people.csv"' in done.stdout


@live
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["simulate", "--param", "steps=-1"], "steps: Input should be greater than or equal to 0"),
        (["no_such_kind"], "Unknown job kind 'no_such_kind'. Kinds: "),
        (["simulate", "--user", "nobody"], "No user named 'nobody'."),
    ],
    ids=["invalid-params", "unknown-kind", "unknown-user"],
)
def test_a_refused_launch_exits_2_and_creates_nothing(server_env, make_user, args, expected):
    user = make_user()
    user_args = [] if "--user" in args else ["--user", user.username]

    done = manage(server_env, "launch_job", *args, *user_args, "--follow")

    assert done.returncode == 2
    assert expected in done.stderr
    assert not Job.objects.exists()


# --- Launching, in process ---------------------------------------------------------------------


@pytest.mark.django_db
def test_without_follow_the_job_is_queued_and_only_its_id_goes_to_stdout(make_user):
    user = make_user()

    out, err = run_command("launch_job", "simulate", "--user", user.username, "--param", "steps=2")

    job = Job.objects.get(owner=user)
    assert out.strip() == str(job.id)
    assert job.state == JobState.QUEUED and job.kind == "simulate"
    assert job.params == {"steps": 2, "step_ms": 200, "fail_at_step": None, "fail_attempts": 0}
    assert f"jobs --follow {job.id}" in err


@pytest.mark.django_db
def test_invalid_params_name_every_field_and_create_nothing(make_user):
    user = make_user()

    error = command_error(
        "launch_job", "simulate", "--user", user.username,
        "--param", "steps=lots", "--param", "colour=red",
    )  # fmt: skip

    assert error.returncode == 2
    assert "Invalid parameters for simulate; nothing was launched" in str(error)
    assert "steps: Input should be a valid integer" in str(error)
    assert "colour: Unknown parameter." in str(error)
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "pairs", "expected"),
    [
        (
            "simulate",
            ["steps=5", "fail_at_step=null"],
            {"steps": 5, "step_ms": 200, "fail_at_step": None, "fail_attempts": 0},
        ),
        (
            "test_sleep",
            ["seconds=0.5", "ignore_soft_limit=true"],
            {"seconds": 0.5, "ignore_soft_limit": True},
        ),
        ("test_echo", ["text=123"], {"text": "123"}),  # a text field keeps text
        ("test_echo", ['text="a b"'], {"text": "a b"}),
        ("test_echo", ["text=a b=c"], {"text": "a b=c"}),
        ("test_echo", ["text="], {"text": ""}),
    ],
)
def test_param_values_are_json_when_they_parse_and_text_otherwise(make_user, kind, pairs, expected):
    user = make_user()
    args = [arg for pair in pairs for arg in ("--param", pair)]

    run_command("launch_job", kind, "--user", user.username, *args)

    assert Job.objects.get(owner=user).params == expected


@pytest.mark.django_db
def test_a_param_without_equals_sign_is_refused(make_user):
    error = command_error("launch_job", "simulate", "--user", make_user().username, "--param", "steps")
    assert error.returncode == 2 and "--param takes KEY=VALUE" in str(error)


@pytest.mark.django_db
def test_a_staff_only_kind_is_refused_for_other_users(make_user):
    user = make_user()

    error = command_error("launch_job", "broadcast", "--user", user.username, "--param", "title=Hi")

    assert error.returncode == 2 and "takes a permission they do not have" in str(error)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_file_is_stored_as_the_users_upload_for_kinds_that_take_one(make_user, tmp_path):
    user = make_user()
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")

    run_command("launch_job", "csv_profile", "--user", user.username, "--file", str(csv))

    upload = Upload.objects.get(owner=user)
    assert (upload.original_name, upload.size) == ("data.csv", csv.stat().st_size)
    assert Job.objects.get(owner=user).params == {"upload_id": str(upload.id)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "file_name", "extra", "expected"),
    [
        ("csv_profile", None, [], "csv_profile needs a file: --file PATH."),
        ("simulate", "data.csv", [], "simulate takes no file"),
        ("csv_profile", "data.xlsx", [], "Expected a .csv, .tsv or .txt file"),
        ("csv_profile", "missing.csv", [], "No such file"),
        ("csv_profile", "data.csv", ["--param", "colour=red"], "colour: Unknown parameter."),
    ],
    ids=["no-file", "file-not-taken", "wrong-type", "missing", "invalid-params"],
)
def test_a_refused_file_launch_keeps_no_job_and_no_upload(
    make_user, tmp_path, kind, file_name, extra, expected
):
    user = make_user()
    file_args: list[str] = []
    if file_name:
        path = tmp_path / file_name
        if file_name != "missing.csv":
            path.write_text("a,b\n1,2\n")
        file_args = ["--file", str(path)]

    error = command_error("launch_job", kind, "--user", user.username, *file_args, *extra)

    assert error.returncode == 2 and expected in str(error)
    assert not Job.objects.exists() and not Upload.objects.exists()


def test_the_progress_line_shows_bar_percent_message_rate_and_eta():
    payload = {
        "state": "running",
        "cancel_requested": False,
        "progress": {"current": 9, "total": 20, "message": "Step 9 of 20"},
        "unit": "steps",
        "rate": 4.1,
        "eta_seconds": 3.0,
    }
    assert progress_line(payload) == "[#########-----------]  45%  Step 9 of 20  4.1 steps/s  ETA 3 s"
    bytes_read = {**payload, "unit": "bytes", "rate": 12865672, "eta_seconds": 65}
    assert progress_line(bytes_read).endswith("  12.9 MB/s  ETA 1 min 5 s")
    payload.update(cancel_requested=True, rate=None, eta_seconds=None)
    payload["progress"] = {"current": 1234, "total": None, "message": "Reading"}
    assert progress_line(payload) == "1,234 done  Reading  (cancelling)"


def test_the_progress_line_of_a_failed_job_stops_short_of_100_percent():
    """Its last progress may count work read ahead (a CSV read whole before its line 2 failed)."""
    payload = {"state": "failed", "progress": {"current": 14, "total": 14, "message": "Reading"}}
    assert progress_line(payload) == "[###################-]  99%  Reading"
    assert progress_line({**payload, "state": "succeeded"}).startswith("[####################] 100%")


def test_the_progress_line_of_a_stalled_job_says_how_long_since_progress_instead_of_an_eta():
    payload = {
        "state": "running",
        "cancel_requested": False,
        "progress": {"current": 290, "total": 580, "message": "Step 290 of 580"},
        "rate": None,
        "eta_seconds": None,
        "silent_for": 40.2,
        "stall_after": 10.0,
        "stalled": True,
    }
    assert progress_line(payload) == "[##########----------]  50%  Step 290 of 580  no progress for 40 s"


def test_into_a_pipe_a_job_going_silent_prints_a_no_progress_line_at_once():
    """Plain lines are printed on a change only: a worker freezing changed nothing but the time,
    so a pipe kept "ETA 26 s" through the freeze (a review)."""
    from django.core.management.base import OutputWrapper

    from jobs.management.commands.launch_job import Follower

    follower = Follower(out=OutputWrapper(io.StringIO()), err=OutputWrapper(io.StringIO()))
    running = {
        "state": "running", "cancel_requested": False, "stalled": False,
        "progress": {"current": 6, "total": 60, "message": "Step 6 of 60"},
    }  # fmt: skip
    assert follower._due(running)
    assert not follower._due(running)  # nothing changed
    assert follower._due({**running, "stalled": True})  # silent past the limit: said at once


def test_the_progress_line_says_which_attempt_and_why_a_retried_job_waits():
    backing_off = {
        "state": "queued", "waiting_for_queue": False, "attempt": 1, "max_attempts": 3,
        "wait_reason": "Attempt 1 of 3 failed: service unavailable — retrying in 30 s.",
        "progress": {"current": 0, "total": None, "message": ""},
    }  # fmt: skip
    assert (
        progress_line(backing_off) == "queued, attempt 1 of 3 failed: service unavailable — retrying in 30 s."
    )
    running = {
        "state": "running", "cancel_requested": False, "attempt": 2, "max_attempts": 3,
        "progress": {"current": 1, "total": 2, "message": ""}, "rate": None, "eta_seconds": None,
        "stalled": False,
    }  # fmt: skip
    assert progress_line(running).endswith("attempt 2 of 3")
    # A lost worker's re-queue of a kind without retries: past its max_attempts, no "of".
    assert progress_line({**running, "max_attempts": 1}).endswith("attempt 2")


# --- Listing -----------------------------------------------------------------------------------


def make_jobs(make_user: Any) -> dict[str, Job]:
    ada, bob = make_user("ada"), make_user("bob")
    now = timezone.now()
    jobs = {
        "old_ok": make_job(owner=ada, state=JobState.SUCCEEDED, progress_current=1, progress_total=1),
        "failed": make_job(owner=bob, state=JobState.FAILED, error="boom"),
        "running": make_job(owner=ada, state=JobState.RUNNING, progress_current=3, progress_total=4),
        "queued": make_job(
            owner=bob,
            wait_code="user_limit",
            wait_note="2 of your jobs are running or next in line, limit 2.",
        ),
    }
    Job.objects.filter(pk=jobs["running"].pk).update(kind="test_echo")
    # created_at is set on insert: spread them out so "newest first" is meaningful.
    for age, job in enumerate(reversed(list(jobs.values()))):
        Job.objects.filter(pk=job.pk).update(created_at=now - timedelta(minutes=age))
    return jobs


def listed_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


def short(job: Job) -> str:
    return str(job.id)[:8]


@pytest.mark.django_db
def test_jobs_lists_each_job_s_label_to_tell_jobs_of_a_kind_apart(make_user):
    from jobs.models import Job

    jobs = make_jobs(make_user)
    Job.objects.filter(pk=jobs["running"].pk).update(label="sales.csv (12.4 MB)")
    Job.objects.filter(pk=jobs["failed"].pk).update(label="x" * 200)

    out, _ = run_command("jobs")

    running = next(line for line in out.splitlines() if line.startswith(short(jobs["running"])))
    assert re.search(r"test_echo +sales\.csv \(12\.4 MB\) +running", running)
    failed = next(line for line in out.splitlines() if line.startswith(short(jobs["failed"])))
    assert "x" * 31 + "…" in failed and "x" * 32 not in failed


@pytest.mark.django_db
def test_jobs_lists_every_users_jobs_newest_first_as_a_table(make_user):
    jobs = make_jobs(make_user)

    out, _ = run_command("jobs")

    lines = out.splitlines()
    header = ["ID", "OWNER", "KIND", "LABEL", "STATE", "PROGRESS", "CREATED", "DURATION", "NOTE"]
    assert lines[0].split() == header
    assert listed_ids(out) == [short(jobs[name]) for name in ("queued", "running", "failed", "old_ok")]
    running = next(line for line in lines if line.startswith(short(jobs["running"])))
    assert running.split()[1:6] == ["ada", "test_echo", "-", "running", "75%"]
    # Why a queued job waits, why a failed one failed (the list said neither: a review).
    queued = next(line for line in lines if line.startswith(short(jobs["queued"])))
    assert queued.endswith("2 of your jobs are running or next in line, limit 2.")
    assert next(line for line in lines if line.startswith(short(jobs["failed"]))).endswith("boom")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "failed"], ["failed"]),
        (["--state", "failed", "queued"], ["queued", "failed"]),
        (["--state", "failed", "--state", "running"], ["running", "failed"]),
        (["--user", "ada"], ["running", "old_ok"]),
        (["--kind", "test_echo"], ["running"]),
        (["--user", "bob", "--state", "succeeded"], []),
        (["--limit", "2"], ["queued", "running"]),
    ],
)
def test_jobs_filters_by_state_user_kind_and_limit(make_user, args, expected):
    jobs = make_jobs(make_user)

    out, err = run_command("jobs", *args)

    assert listed_ids(out) == [short(jobs[name]) for name in expected]
    if not expected:
        assert err.strip() == "No jobs match."


@pytest.mark.django_db
def test_jobs_json_prints_the_api_payloads(make_user):
    jobs = make_jobs(make_user)

    out, _ = run_command("jobs", "--json", "--state", "failed", "running")

    payloads = json.loads(out)
    assert [payload["id"] for payload in payloads] == [str(jobs["running"].id), str(jobs["failed"].id)]
    assert payloads[1]["error"] == "boom" and payloads[1]["owner"] == "bob"
    assert payloads[0]["progress"] == {"current": 3, "total": 4, "message": ""}


@pytest.mark.django_db
def test_jobs_refuses_an_unknown_user_or_state(make_user):
    assert command_error("jobs", "--user", "nobody").returncode == 2
    with pytest.raises(CommandError, match="invalid choice: 'done'"):
        run_command("jobs", "--state", "done")


@pytest.mark.django_db
def test_following_a_finished_job_by_its_short_id_reports_how_it_ended(make_user):
    user = make_user()
    failed = make_job(owner=user, state=JobState.FAILED, error="boom")
    succeeded = make_job(owner=user, state=JobState.SUCCEEDED, result={"n": 1})

    with pytest.raises(SystemExit) as exit_status:
        run_command("jobs", "--follow", short(failed))
    out, _ = run_command("jobs", "--follow", str(succeeded.id))

    assert exit_status.value.code == 1
    assert f"Job {succeeded.id} succeeded" in out and 'Result: {"n": 1}' in out


@pytest.mark.django_db
def test_following_a_job_that_has_run_for_a_while_starts_with_the_tail_of_its_log(make_user):
    job = make_job(owner=make_user(), state=JobState.SUCCEEDED)
    JobLogLine.objects.bulk_create(JobLogLine(job=job, seq=seq, text=f"line {seq}") for seq in range(1, 16))

    out, _ = run_command("jobs", "--follow", str(job.id))

    assert re.findall(r"^  \| line (\d+)$", out, re.MULTILINE) == [str(seq) for seq in range(6, 16)]


@pytest.mark.django_db
def test_following_an_ambiguous_or_unknown_id_is_refused(make_user):
    user = make_user()
    make_job(owner=user, id=uuid.UUID("abcd0000-0000-4000-8000-000000000001"))
    make_job(owner=user, id=uuid.UUID("abcd0000-0000-4000-8000-000000000002"))

    assert "ambiguous" in str(command_error("jobs", "--follow", "abcd"))
    assert "No job id starts with" in str(command_error("jobs", "--follow", "0123"))
    assert command_error("jobs", "--follow", "not-an-id").returncode == 2
