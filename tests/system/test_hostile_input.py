"""Hostile input against the real processes (uvicorn, the Celery worker, Redis): CSRF, expired
sessions, socket abuse with the server's memory watched, markup, hostile uploads, owner-only
downloads. Cross-site socket hijacking, bad tokens, cross-user 404s, close codes and the browser
rendering of markup are proved where they were built (see docs/reliability.md)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import re
import time
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed

from jobs import launch
from jobs.models import FINAL_STATES, AccessToken, Job, JobLogLine, JobState, Upload
from jobs.tokens import token_create
from notifications import inbox as notification_services
from notifications.models import Notification, SocketConnection
from tests.conftest import ROOT, LiveServer, receive_json, session_cookie
from tests.jobs.factories import make_job
from tests.jobs.live import wait_for_job
from tests.support.slow_clients import run_async

pytestmark = pytest.mark.django_db(transaction=True)

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
CSV = b"name,amount\nalpha,1\nbeta,2\n"


def bearer(user: Any) -> dict[str, str]:
    _, raw = token_create(user=user, name="hostile")
    return {"Authorization": f"Bearer {raw}"}


def ws_url(base: str) -> str:
    return base.replace("http", "ws", 1) + "/ws/notifications/"


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> None:
    """Start the process's peak RSS (VmHWM) afresh from its current RSS (proc(5), clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def private_files() -> set[str]:
    root = Path(settings.RUNBOARD_PRIVATE_DIR)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def multipart(fields: dict[str, str], filename: bytes, content: bytes) -> tuple[bytes, str]:
    """A multipart body written byte for byte: the file name goes to the server exactly as given
    (client libraries would quote or strip it)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + b'"\r\nContent-Type: text/csv\r\n\r\n'
        + content
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload_job(base: str, headers: dict[str, str], content: bytes, filename: bytes = b"data.csv") -> Any:
    body, content_type = multipart({"kind": "csv_profile", "params": "{}"}, filename, content)
    return requests.post(
        f"{base}/api/v1/jobs/", data=body, headers={**headers, "Content-Type": content_type}, timeout=60
    )


# --- CSRF ----------------------------------------------------------------------------------------


def _csrf_session(base: str, user: Any) -> tuple[requests.Session, str]:
    http = requests.Session()
    name, value = session_cookie(user).split("=", 1)
    http.cookies.set(name, value)
    assert http.get(f"{base}/", timeout=10).status_code == 200  # sets the csrftoken cookie
    return http, http.cookies["csrftoken"]


def test_session_writes_without_a_valid_csrf_token_are_refused_and_change_nothing(live_server_url, make_user):
    """Every state-changing route a signed-in browser can reach, through the real server: no token,
    a wrong token, or the right token from a foreign Origin is a 403 and nothing changes; the same
    request done right succeeds (so the refusals are the CSRF check, not something else)."""
    user = make_user()
    # Rows no worker will touch (never enqueued), so only these requests can change them.
    finished = make_job(owner=user, state=JobState.SUCCEEDED)
    queued = make_job(owner=user)
    note = notification_services.notify(recipient_id=user.pk, title="unread")
    http, token = _csrf_session(live_server_url, user)
    csv_body, csv_type = multipart({"kind": "csv_profile", "params": "{}"}, b"a.csv", CSV)
    files_before = private_files()

    writes = {
        "launch (dashboard form, JSON)": ("/api/v1/jobs/", json.dumps({"kind": "simulate", "params": {}}),
                                          "application/json", 201),
        "launch with a file (dashboard form, multipart)": ("/api/v1/jobs/", csv_body, csv_type, 201),
        "cancel": (f"/api/v1/jobs/{queued.id}/cancel/", "{}", "application/json", 200),
        "retry": (f"/api/v1/jobs/{finished.id}/retry/", "{}", "application/json", 201),
        "mark read": ("/api/v1/notifications/read/", json.dumps({"ids": [note.pk]}), "application/json", 200),
        "mark all read": ("/api/v1/notifications/read-all/", "{}", "application/json", 200),
        "create a token (settings form)": ("/settings/", "name=stolen", "application/x-www-form-urlencoded",
                                           200),
    }  # fmt: skip

    def state() -> tuple[Any, ...]:
        return (
            Job.objects.count(),
            Upload.objects.count(),
            Job.objects.get(pk=queued.pk).state,
            Notification.objects.filter(recipient=user, read_at__isnull=True).count(),
            AccessToken.objects.filter(user=user).count(),
        )

    before = state()
    for what, (path, body, content_type, _) in writes.items():
        attempts = {
            "no token": {},
            "wrong token": {"X-CSRFToken": "x" * 32},
            "foreign origin": {"X-CSRFToken": token, "Origin": "http://evil.example"},
        }
        for how, headers in attempts.items():
            response = http.post(f"{live_server_url}{path}", data=body, timeout=10,
                                 headers={"Content-Type": content_type, **headers})  # fmt: skip
            assert response.status_code == 403, (what, how, response.status_code, response.text[:300])
    assert state() == before
    assert private_files() == files_before

    for what, (path, body, content_type, ok) in writes.items():
        headers = {"Content-Type": content_type, "X-CSRFToken": token, "Origin": live_server_url}
        response = http.post(f"{live_server_url}{path}", data=body, headers=headers, timeout=10)
        assert response.status_code == ok, (what, response.status_code, response.text[:300])
    assert state() != before


# --- Expired sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["expired", "password changed"])
def test_a_dead_session_is_refused_on_http_sse_and_websocket(live_server_url, make_user, how):
    from websockets.sync.client import connect

    user = make_user()
    cookie = session_cookie(user)
    headers = {"Cookie": cookie}

    def answers() -> tuple[Any, ...]:
        api = requests.get(f"{live_server_url}/api/v1/jobs/", headers=headers, timeout=10).status_code
        page = requests.get(f"{live_server_url}/", headers=headers, timeout=10, allow_redirects=False)
        events = requests.get(
            f"{live_server_url}/events/",
            headers={**headers, "Sec-Fetch-Site": "same-origin"},
            timeout=10,
            stream=True,
        )
        events.close()
        with connect(ws_url(live_server_url), origin=live_server_url, additional_headers=headers) as ws:
            try:
                first = receive_json(ws, timeout=5)["type"]
            except ConnectionClosed as closed:
                first = closed.rcvd.code
        return api, page.status_code, page.headers.get("Location", ""), events.status_code, first

    assert answers() == (200, 200, "", 200, "hello")  # the same requests work while the session lives

    if how == "expired":
        key = cookie.split("=", 1)[1]
        assert Session.objects.filter(session_key=key).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
    else:
        user.set_password("a-new-password")  # sessions carry a hash of the old one
        user.save()

    api, page, location, events, first = answers()
    assert (api, page, events, first) == (401, 302, 401, 4401)
    assert location.startswith("/login/")


# --- Socket abuse, memory flat ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def abuse_server(server_env: dict[str, str]) -> Any:
    server = LiveServer(server_env, name="abuse-web")
    yield server
    server.stop()


async def _close_code(ws: Any, timeout: float = 15) -> int | None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def _greeted(url: str, origin: str, cookie: str | None) -> Any:
    ws = await async_connect(url, origin=origin, additional_headers={"Cookie": cookie} if cookie else {},
                             open_timeout=30, max_size=None)  # fmt: skip
    if cookie:
        for expected in ("hello", "snapshot"):
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == expected
    return ws


async def _abuse_round(base: str, cookies: dict[str, list[str]], anonymous: int) -> dict[str, list[Any]]:
    """200 sockets: floods, oversized frames, garbage, one user over the socket limit, anonymous."""
    url, gate = ws_url(base), asyncio.Semaphore(40)

    async def flood(cookie: str) -> Any:
        async with gate:
            ws = await _greeted(url, base, cookie)
            for _ in range(61):
                await ws.send('{"type": "ping"}')
            return await _close_code(ws)

    async def oversized(cookie: str) -> Any:
        async with gate:
            ws = await _greeted(url, base, cookie)
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
            return await _close_code(ws)

    async def garbage(cookie: str) -> Any:
        async with gate:
            ws = await _greeted(url, base, cookie)
            for frame in (
                "not json",
                b"\x00\xff" * 100,
                "[" * 60_000,
                '{"type": "resume", "last_notification_id": 1e999}',
            ):
                await ws.send(frame)
            await ws.send('{"type": "ping"}')
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(5)]
            await ws.close()
            return replies[-1]["type"]

    async def anonymous_socket() -> Any:
        async with gate:
            return await _close_code(await _greeted(url, base, None))

    async def too_many(cookie: str) -> list[Any]:
        sockets = [await _greeted(url, base, cookie) for _ in range(25)]
        codes = await asyncio.gather(*(_close_code(ws, timeout=3) for ws in sockets[:5]))
        for ws in sockets[5:]:
            await ws.close()
        return list(codes)

    results = await asyncio.gather(
        asyncio.gather(*(flood(c) for c in cookies["flood"])),
        asyncio.gather(*(oversized(c) for c in cookies["oversized"])),
        asyncio.gather(*(garbage(c) for c in cookies["garbage"])),
        too_many(cookies["too_many"][0]),
        asyncio.gather(*(anonymous_socket() for _ in range(anonymous))),
    )
    return dict(zip(["flood", "oversized", "garbage", "too_many", "anonymous"], results, strict=True))


def test_socket_abuse_gets_the_protocols_close_codes_and_the_servers_memory_stays_flat(
    abuse_server, make_user
):
    """Three identical rounds of 200 abusive sockets against a dedicated uvicorn: every socket gets
    its documented answer, and the server's RSS after round 3 is within 30 MiB of round 1 (a leak of
    sockets, consumers or groups would grow with each round)."""
    pid = abuse_server.web.proc.pid
    rss = []
    for _round in range(3):
        users = {
            "flood": [make_user() for _ in range(3)],
            "oversized": [make_user() for _ in range(3)],
            "garbage": [make_user() for _ in range(2)],
            "too_many": [make_user()],
        }
        # 20 sockets per user, the most one user may hold: 60 + 60 + 40 + 25 + 15 anonymous = 200.
        cookies = {
            kind: [session_cookie(u) for u in group for _ in range(20)] for kind, group in users.items()
        }
        cookies["too_many"] = cookies["too_many"][:1]
        started = time.monotonic()
        outcome = run_async(_abuse_round(abuse_server.url, cookies, anonymous=15))

        assert outcome["flood"] == [4429] * 60
        assert outcome["oversized"] == [1009] * 60
        assert outcome["garbage"] == ["pong"] * 40  # errors for the garbage, and the socket lives on
        assert outcome["too_many"] == [4409] * 5  # the 5 oldest of 25 make room
        assert outcome["anonymous"] == [4401] * 15
        # Every socket's bookkeeping is gone once the sockets are.
        user_ids = [u.pk for group in users.values() for u in group]
        deadline = time.monotonic() + 30
        while SocketConnection.objects.filter(user_id__in=user_ids).exists():
            assert time.monotonic() < deadline, "socket rows outlived their sockets"
            time.sleep(0.2)
        time.sleep(2)  # let the server finish tearing down
        rss.append(rss_kib(pid))
        print(f"round {_round + 1}: {time.monotonic() - started:.1f} s, server RSS {rss[-1] / 1024:.1f} MiB")

    assert rss[2] - rss[0] < 30 * 1024, f"server RSS per round (KiB): {rss}"
    log = abuse_server.web.log()
    assert "Traceback (most recent call last)" not in log, log[-3000:]


# --- Stored markup --------------------------------------------------------------------------------


def test_templates_and_scripts_never_turn_user_text_into_html():
    """User text reaches pages only through autoescaped templates, json_script and textContent."""
    templates = list((ROOT / "frontend" / "templates").rglob("*.html"))
    scripts = list((ROOT / "frontend" / "static").rglob("*.js"))
    assert templates and scripts
    for path in templates:
        text = path.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+off|\|\s*safeseq\b", text), path
    for path in scripts:
        text = path.read_text()
        assert not re.search(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", text
        ), path
    for path in (ROOT / "frontend").rglob("*.py"):
        assert "mark_safe" not in path.read_text(), path


def test_markup_in_a_job_and_its_notification_is_escaped_in_the_server_rendered_pages(make_user):
    user = make_user()
    job = launch.job_create(owner=user, kind="test_echo", params={"text": XSS})
    Job.objects.filter(pk=job.pk).update(
        state=JobState.FAILED, progress_message=XSS, error=XSS, finished_at=timezone.now()
    )
    JobLogLine.objects.create(job=job, seq=1, text=XSS)
    notification_services.notify(recipient_id=user.pk, title=XSS, body=XSS)
    client = Client()
    client.force_login(user)

    for path in ("/", f"/jobs/{job.id}/", "/settings/"):
        html = client.get(path).content.decode()
        assert "<script>window" not in html and "<img src=x" not in html, path
    detail = client.get(f"/jobs/{job.id}/").content.decode()
    assert 'value="&lt;script&gt;window.__xss=1&lt;/script&gt;' in detail  # the re-run form's field
    assert "\\u003Cscript\\u003Ewindow.__xss" in detail  # the job's data for the script


# --- Uploads -----------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    b"../../etc/passwd.csv",
    b"/etc/passwd.csv",
    b"..\\..\\windows\\win.csv",
    b"C:\\Windows\\system32\\evil.csv",
    b"%2e%2e%2f%2e%2e%2fescape.csv",
    b"nul\x00byte.csv",
    b"nul.csv\x00.png",
    b"x" * 5000 + b".csv",
    b"y" * 300 + b".csv",
    "données ☃ 名前 😀.csv".encode(),
    b"<img src=x onerror=alert(1)>.csv",
    b".csv",
    b"",
]


def test_hostile_file_names_are_stored_privately_under_a_server_chosen_name(live_server_url, make_user):
    user = make_user()
    headers = bearer(user)
    scratch = Path(os.environ["RUNBOARD_VAR_DIR"]).parent
    before = {p for p in scratch.rglob("*") if p.is_file()}
    files_before = private_files()

    for index, name in enumerate(HOSTILE_NAMES):
        content = CSV + f"row{index},{index}\n".encode()
        response = upload_job(live_server_url, headers, content, filename=name)
        assert response.status_code in (201, 400), (name, response.status_code, response.text[:300])
        if response.status_code == 400:
            assert response.json()["detail"], name  # a clear JSON answer
            continue
        upload = Upload.objects.get(pk=response.json()["params"]["upload_id"])
        stored = Path(upload.file.path).resolve()
        assert (
            stored
            == Path(settings.RUNBOARD_PRIVATE_DIR).resolve() / "uploads" / str(user.pk) / f"{upload.id}.csv"
        )
        assert stored.read_bytes() == content
        shown = upload.original_name
        assert shown and len(shown) <= 255 and not set(shown) & {"/", "\\", "\x00"}, (name, shown)

    created = {p for p in scratch.rglob("*") if p.is_file()} - before
    private = Path(settings.RUNBOARD_PRIVATE_DIR).resolve()
    outside = [
        p
        for p in created
        if not p.resolve().is_relative_to(private) and p.suffix not in (".log", ".sqlite3", "")
    ]
    assert outside == []
    new_files = private_files() - files_before
    assert all(re.fullmatch(rf"uploads/{user.pk}/[0-9a-f-]{{36}}\.csv", f) for f in new_files), new_files
    assert Upload.objects.count() == len(new_files) > 0


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.csv", data)
    return buffer.getvalue()


NOT_CSV = {
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(1).randbytes(20_000),
    "random bytes": random.Random(2).randbytes(200_000),
    "gzip": gzip.compress(CSV * 1000),
    "zip": _zip(CSV * 1000),
}
# Text in another encoding than UTF-8 is CSV all the same (issue 16): read, not refused.
OTHER_ENCODINGS = {
    "utf-16": ("name,amount\nalpha,1\n".encode("utf-16"), "utf-16-le"),
    "latin-1": ("name,city\nJosé,Zürich\n".encode("latin-1"), "cp1252"),
}


def _final(job_id: Any, timeout: float = 60) -> Job:
    return wait_for_job(job_id, lambda job: job.state in FINAL_STATES, timeout=timeout)


def test_a_file_that_is_not_text_csv_fails_cleanly_with_a_clear_error(
    celery_worker, live_server_url, make_user
):
    user = make_user()
    headers = bearer(user)
    launched = {}
    for what, content in NOT_CSV.items():
        response = upload_job(live_server_url, headers, content, filename=f"{what}.csv".encode())
        assert response.status_code == 201, response.text
        launched[what] = response.json()["id"]
    good = upload_job(live_server_url, headers, CSV).json()["id"]
    other = {
        encoding: upload_job(live_server_url, headers, content).json()["id"]
        for content, encoding in OTHER_ENCODINGS.values()
    }

    for what, job_id in launched.items():
        job = _final(job_id)
        assert job.state == JobState.FAILED, (what, job.state)
        assert job.error.startswith(f"{what}.csv: Line "), (what, job.error)
        assert "NUL byte" in job.error or "not valid UTF-8" in job.error, (what, job.error)
        assert Notification.objects.filter(job=job, level="error").count() == 1
    # The worker is unharmed: a real CSV after them profiles.
    assert _final(good).state == JobState.SUCCEEDED
    for encoding, job_id in other.items():
        job = _final(job_id)
        assert (job.state, (job.result or {}).get("encoding")) == (JobState.SUCCEEDED, encoding), job.error


def _worker_children(worker: Any) -> list[int]:
    pid = worker.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


ONE_LINE_MB = 90  # under the default upload limit, and larger than any bound below
BOMBS = {
    # Decompresses to 50 MB of zeros; the profiler must not (and cannot) inflate it.
    "gzip bomb": (lambda: gzip.compress(b"0" * 50_000_000, 9), "NUL byte"),
    f"one {ONE_LINE_MB} MB line": (
        lambda: b"a" * (ONE_LINE_MB * 1024 * 1024),
        "a line is longer than 16 Mi characters",
    ),
    "two million columns": (lambda: b"c," * 2_000_000 + b"c\n1\n", "at most 1000 are supported"),
    "a 40 MB quoted field": (lambda: b'a,b\n"' + b"x\n" * (20 * 1024 * 1024), "longer than the limit"),
}


def test_zip_bomb_style_files_fail_cleanly_within_bounded_memory(celery_worker, web_server, make_user):
    """The web server streams the upload to disk and the worker reads it in bounded pieces: the peak
    RSS of each process grows by far less than the file (a naive read would hold it whole)."""
    user = make_user()
    headers = bearer(user)
    for what, (make, reason) in BOMBS.items():
        content = make()
        children = _worker_children(celery_worker)
        for pid in [web_server.web.proc.pid, *children]:
            reset_peak(pid)
        web_before = rss_kib(web_server.web.proc.pid)
        worker_before = {pid: rss_kib(pid) for pid in children}

        response = upload_job(web_server.url, headers, content, filename=f"{what}.csv".encode())
        assert response.status_code == 201, response.text
        job = _final(response.json()["id"], timeout=90)

        assert job.state == JobState.FAILED and reason in job.error, (what, job.error)
        web_peak = rss_kib(web_server.web.proc.pid, "VmHWM") - web_before
        worker_peak = max(rss_kib(pid, "VmHWM") - worker_before[pid] for pid in children)
        size, web, worker = len(content) / 2**20, web_peak / 1024, worker_peak / 1024
        print(f"{what}: {size:.1f} MiB; peak growth (MiB) web {web:.1f}, worker {worker:.1f}")
        # Holding the file whole would cost more than its size in either process.
        assert web_peak < 32 * 1024, (what, web_peak)
        assert worker_peak < 80 * 1024, (what, worker_peak)


@pytest.fixture(scope="module")
def small_upload_server(server_env: dict[str, str]) -> Any:
    server = LiveServer({**server_env, "RUNBOARD_UPLOAD_MAX_BYTES": "4096"}, name="small-upload-web")
    yield server
    server.stop()


def test_a_file_over_the_upload_limit_is_refused_with_413_and_nothing_is_stored(
    small_upload_server, make_user
):
    user = make_user()
    headers = bearer(user)
    line = b"abcdefghijklmnopqrstuvwxyz,0123456789\n"
    over = (line * 200)[:4097]
    files_before = private_files()

    response = upload_job(small_upload_server.url, headers, over)

    assert response.status_code == 413, response.text
    assert "4096 bytes" in response.json()["detail"]
    assert (Job.objects.count(), Upload.objects.count(), private_files()) == (0, 0, files_before)
    at_limit = over[:4096]
    assert upload_job(small_upload_server.url, headers, at_limit).status_code == 201  # the limit is the limit


def test_a_body_far_over_the_limit_is_refused_before_the_application_reads_it(small_upload_server, make_user):
    """Django spools a whole body to disk before any view runs; the ASGI wrapper
    (dashboard/body_limit.py) answers 413 first, whether the size is declared or streamed."""
    from dashboard.body_limit import ENVELOPE_BYTES

    user = make_user()
    headers = {**bearer(user), "Content-Type": "multipart/form-data; boundary=x"}
    limit = 4096 + ENVELOPE_BYTES
    url = f"{small_upload_server.url}/api/v1/jobs/"

    declared = requests.post(url, data=b"a" * (limit + 1), headers=headers, timeout=60)
    streamed_chunks = 0

    def stream():
        nonlocal streamed_chunks
        for _ in range(64):  # 64 MiB if nobody stopped reading
            streamed_chunks += 1
            yield b"a" * 2**20

    try:
        streamed = requests.post(url, data=stream(), headers=headers, timeout=60)
    except requests.ConnectionError:
        streamed = None  # the server may close before the client has finished sending

    assert declared.status_code == 413
    assert declared.json()["detail"] == f"The request body is larger than {limit} bytes."
    if streamed is not None:
        assert streamed.status_code == 413
        assert streamed.json()["detail"] == declared.json()["detail"]
    assert streamed_chunks < 64
    assert Job.objects.count() == Upload.objects.count() == 0
    # A body under the wrapper's limit still gets the view's precise answer.
    assert (
        upload_job(small_upload_server.url, bearer(user), b"a,b\n" * 2000)
        .json()["detail"]
        .endswith("4096 bytes.")
    )


def test_result_files_download_for_their_owner_only(celery_worker, live_server_url, make_user):
    alice, bob, staff = make_user(), make_user(), make_user(operator=True, is_superuser=True)
    earlier = launch.job_create(owner=alice, kind="test_echo", params={"text": "something to export"})
    export = launch.job_create(owner=alice, kind="export_jobs", params={})
    job = wait_for_job(export.id, lambda j: j.state in FINAL_STATES)
    assert job.state == JobState.SUCCEEDED and job.result_file, job.error
    url = f"{live_server_url}/api/v1/jobs/{job.id}/download/"

    mine = requests.get(url, headers=bearer(alice), timeout=10)
    assert mine.status_code == 200 and str(earlier.id).encode() in mine.content
    assert requests.get(url, headers={"Cookie": session_cookie(alice)}, timeout=10).status_code == 200
    for other in (bob, staff):
        assert requests.get(url, headers=bearer(other), timeout=10).status_code == 404
        assert requests.get(url, headers={"Cookie": session_cookie(other)}, timeout=10).status_code == 404
    assert requests.get(url, timeout=10).status_code == 401

    # Another user's upload cannot be named as an input either (nor re-run through a retry).
    alices_upload = upload_job(live_server_url, bearer(alice), CSV).json()["params"]["upload_id"]
    stolen = requests.post(f"{live_server_url}/api/v1/jobs/", headers=bearer(bob), timeout=10,
                           json={"kind": "csv_profile", "params": {"upload_id": alices_upload}})  # fmt: skip
    assert stolen.status_code == 400 and "params.upload_id" in stolen.json()["fields"]
    assert not Job.objects.filter(owner=bob).exists()
