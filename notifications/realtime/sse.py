"""The same events as the WebSocket, as Server-Sent Events at /events/ (for networks where
WebSockets don't pass). Notification events and every snapshot carry ``id:`` lines; a
reconnecting EventSource sends Last-Event-ID and gets everything after it replayed, a page at a
time, then a fresh snapshot (``snapshot.py``, the same catch-up as the socket's). The stream joins
the same groups as a socket (``events.groups_for``), is recorded and bound to its credential like a
socket (credentials.py, ``presence.py``), and ends when that does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from dashboard import metrics
from dashboard.db import database_sync_to_async
from dashboard.throttle.address import request_address
from dashboard.throttle.tokens import TokenThrottled, token_attempt
from notifications.conf import app_settings

from .. import credentials, events, selectors
from ..events import CLOSE_TYPE, RECHECK_TYPE, RELAY_TYPE
from . import presence, snapshot
from .snapshot import Delivery, resume_point

KEEPALIVE_SECONDS = 15.0


class _Watched:
    """A stream as the layer watch (presence.LayerWatch) sees a socket: its channel and groups,
    and a close that ends the stream with the code at its next step (issue 17: an SSE stream of
    an interrupted layer shard went on, silently missing what was published meanwhile)."""

    def __init__(self, channel_name: str, credential: credentials.Credential, groups: list[str]) -> None:
        self.channel_name = channel_name
        self.credential = credential
        self.joined = groups
        self.watching: set[str] = set()
        self.ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        raise NotImplementedError  # the stream writes its own frames

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        if not self.ended.done():
            self.ended.set_result(int(code) if isinstance(code, int) else events.CLOSE_EVENTS_INTERRUPTED)

    async def close_with(self, code: int) -> None:
        await self.close(code=code)


class _Ended(Exception):
    """The stream must end with ``code`` (its credential ended or changed) during its catch-up."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


RETRY_MS = 3000


def _frame(data: str, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n"


def _origin_ok(request: HttpRequest, *, token: bool) -> bool:
    """The WebSocket's rule (notifications/auth.py ``OriginOrTokenValidator``): an Origin, when
    sent, must be one Django's CSRF check trusts (``credentials.origin_trusted``), whatever the
    credential. Without one, a token passes (not a browser's request), and a cookie sign-in only
    with the browser's own, unforgeable-by-pages ``Sec-Fetch-Site: same-origin`` (a same-origin
    EventSource sends no Origin: Fetch sends it only on cross-origin GETs)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if "origin" not in headers:
        return token or headers.get("sec-fetch-site") == "same-origin"
    return credentials.origin_trusted(headers=headers, scheme=request.scheme or "http")


async def _signed_in(request: HttpRequest) -> tuple[Any, credentials.Credential] | None:
    header = request.headers.get("Authorization")
    # Only a Bearer token signs in; another scheme (Basic from a proxy in front) is not ours.
    if header and header.partition(" ")[0].lower() == "bearer":
        raw = header.partition(" ")[2]
        return await database_sync_to_async(token_attempt)(
            raw.strip(), address=request_address(request), sign_in=credentials.token_sign_in
        )
    user = await request.auser()
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if not user.is_authenticated or not session_key:
        return None
    return user, await database_sync_to_async(credentials.session_credential)(user, session_key)


def _resume_point(request: HttpRequest) -> int | None:
    return resume_point(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id"))


@csrf_exempt  # GET only: any other method is the JSON 405 below, not Django's CSRF page
async def event_stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if request.method != "GET":
        return JsonResponse({"detail": "Use GET."}, status=405)
    try:
        signed_in = await _signed_in(request)
    except TokenThrottled as throttled:
        retry_after = {"Retry-After": str(throttled.retry_after)}
        return JsonResponse({"detail": throttled.detail}, status=429, headers=retry_after)
    if signed_in is None:
        return JsonResponse({"detail": "Authentication required."}, status=401)
    user, credential = signed_in
    if not _origin_ok(request, token=credential.token_id is not None):
        return JsonResponse({"detail": "Cross-origin request refused."}, status=403)
    response = StreamingHttpResponse(
        _stream(user, credential, _resume_point(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell proxies not to buffer the stream
    return response


def _keepalive_seconds() -> float:
    """The stream's heartbeat (its presence row refreshed, its credential re-checked, a keepalive
    line) comes at least once a socket heartbeat, busy or idle."""
    return min(KEEPALIVE_SECONDS, app_settings.SOCKET_HEARTBEAT)


async def _stream(
    user: Any, credential: credentials.Credential, resume_from: int | None
) -> AsyncIterator[str]:
    metrics.socket_connected("sse")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    groups = credentials.connection_groups(credential)
    # Join before reading anything, as the WebSocket consumer does.
    for group in groups:
        await layer.group_add(group, channel)
    # Watched like a socket: a layer interruption ends it with 4503 (the client resumes with
    # Last-Event-ID) instead of leaving it to miss what was published meanwhile.
    watched = _Watched(channel, credential, groups)
    presence.LayerWatch.get(layer).add(watched)
    # What this stream has sent, to drop repeats; a resume's snapshot says it has all up to the
    # resume point (its ``id:`` line is where the stream resumes from next time).
    delivery = Delivery(sent_up_to=resume_from or 0)
    receiving: asyncio.Future[Any] | None = None
    try:
        opened = await database_sync_to_async(snapshot.connection_open)(
            channel_name=channel, user=user, credential=credential
        )
        if opened.problem is not None:  # the credential ended while it connected
            yield _frame(json.dumps({"type": "closed", "code": opened.problem}))
            return
        expires_at = opened.expires_at
        # One receive stays pending from here on (cancelling it would unsubscribe the channel):
        # while the catch-up pages, a close or a credential re-check is acted on between frames
        # (found by review: a stream revoked mid catch-up sent 999 notifications, then closed),
        # and live notifications wait for the snapshot: held by ``delivery`` while a resume pages
        # (beyond its bound, dropped and fetched by one more page, as on the socket), in
        # ``early`` on a fresh connect.
        receiving = asyncio.ensure_future(layer.receive(channel))
        early: list[dict[str, Any]] = []
        if resume_from is not None:
            delivery.hold()

        async def ending_code(timeout: float = 0.0) -> int | None:
            """Handle what the channel has (waiting up to ``timeout`` for it): the close code
            if the stream must end, else None (relayed events are held)."""
            nonlocal receiving
            deadline = time.monotonic() + timeout
            while True:
                pending = receiving
                assert pending is not None  # set before the catch-up, renewed as it is read
                if watched.ended.done():
                    return watched.ended.result()
                done, _ = await asyncio.wait(
                    {pending, watched.ended}, timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if watched.ended.done():
                    return watched.ended.result()
                if not done:
                    return None
                message = pending.result()
                receiving = asyncio.ensure_future(layer.receive(channel))
                if message.get("type") == CLOSE_TYPE:
                    return int(message.get("code", events.CLOSE_NOT_AUTHENTICATED))
                if message.get("type") == RECHECK_TYPE:
                    problems = await database_sync_to_async(credentials.credential_problems)(
                        {channel: credential}
                    )
                    if problems:
                        return problems[channel]
                elif message.get("type") == RELAY_TYPE:
                    if delivery.held is not None:
                        delivery.live(message)  # held for the last page (or fetched by it)
                    elif len(early) >= snapshot.HELD_KEPT:
                        # More than a page of them during one snapshot: start again from it.
                        return events.CLOSE_EVENTS_INTERRUPTED
                    else:
                        early.append(message)  # checked against the snapshot once it is sent

        async def wait_checking(seconds: float) -> None:
            code = await ending_code(seconds)
            if code is None:
                problems = await database_sync_to_async(credentials.credential_problems)(
                    {channel: credential}
                )
                code = problems.get(channel)
            if code is not None:
                raise _Ended(code)

        yield f"retry: {RETRY_MS}\n\n"
        yield _frame(events.dumps(selectors.hello_for(user, powers=credential.powers)))
        ending: events.SnapshotEvent | None = None
        first_page = True
        try:
            while True:
                # Page by page, as the client reads (each yield waits for the socket to drain),
                # each paid from the user's catch-up budget (snapshot.py: waits when it is spent).
                await snapshot.user_budget_wait(user.pk, lambda: False, check=wait_checking)
                # The first step follows the check made when the stream was recorded; each later
                # one checks the credential in its own trip (a close may still be on its way).
                after_id = None if resume_from is None else delivery.sent_up_to
                if first_page:
                    step = await database_sync_to_async(snapshot.catch_up_step)(
                        user=user, after_id=after_id, sent_up_to=delivery.sent_up_to
                    )
                else:
                    step = await database_sync_to_async(snapshot.checked_catch_up_step)(
                        channel_name=channel,
                        user=user,
                        credential=credential,
                        after_id=after_id,
                        sent_up_to=delivery.sent_up_to,
                        first_page=False,
                    )
                if step.problem is not None:
                    raise _Ended(step.problem)
                snapshot.user_budgets.charge(user.pk, snapshot.step_bytes(step), time.monotonic())
                first_page = False
                if step.page is not None:
                    for notification_id, event in delivery.replayed(step.page):
                        if receiving.done() and (code := await ending_code()) is not None:
                            raise _Ended(code)
                        yield _frame(events.dumps(event), event_id=notification_id)
                if (code := await ending_code()) is not None:
                    raise _Ended(code)
                if not delivery.more_pages(step):
                    ending = step.snapshot
                    break
        except _Ended as ended:
            yield _frame(json.dumps({"type": "closed", "code": ended.code}))
            return
        delivery.snapshot_sent(ending)
        # Always an id, 0 included, so a dropped stream resumes from here and misses nothing.
        yield _frame(events.dumps(ending), event_id=ending["last_notification_id"])
        # Live notifications that came during the catch-up, in order, less what it sent.
        for message in [*delivery.release(), *early]:
            if delivery.live(message):
                yield _frame(message["text"], event_id=message.get("notification_id"))
        # The heartbeat (presence refresh, credential re-check, keepalive) is due at fixed times,
        # whether or not events flow: a busy stream skipped it before (found by review: its row
        # went stale and a raw-SQL credential change never closed it).
        next_beat = time.monotonic() + _keepalive_seconds()
        while True:
            timeout = max(0.0, next_beat - time.monotonic())
            if expires_at is not None:
                timeout = max(0.0, min(timeout, expires_at - time.time() + 0.05))
            done, _ = await asyncio.wait(
                {receiving, watched.ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if watched.ended.done():
                yield _frame(json.dumps({"type": "closed", "code": watched.ended.result()}))
                return
            if done:
                message = receiving.result()
                receiving = asyncio.ensure_future(layer.receive(channel))
                if message.get("type") == RECHECK_TYPE:
                    # The session was saved: its end date may have moved (either way).
                    problem, expires_at = await database_sync_to_async(credentials.credential_check)(
                        channel, credential
                    )
                    if problem is not None:
                        yield _frame(json.dumps({"type": "closed", "code": problem}))
                        return
                elif message.get("type") == CLOSE_TYPE:
                    yield _frame(json.dumps({"type": "closed", "code": message.get("code")}))
                    return
                elif message.get("type") == RELAY_TYPE and delivery.live(message):
                    yield _frame(message["text"], event_id=message.get("notification_id"))
                expired = expires_at is not None and expires_at <= time.time()
                if time.monotonic() < next_beat and not expired:
                    continue
            next_beat = time.monotonic() + _keepalive_seconds()
            problems = await database_sync_to_async(presence.sockets_heartbeat)(due={channel: credential})
            if problems:
                yield _frame(json.dumps({"type": "closed", "code": problems[channel]}))
                return
            if expires_at is not None and expires_at <= time.time() and credential.token_id is None:
                expires_at = await database_sync_to_async(credentials.session_expiry)(credential.session_key)
            yield ": keepalive\n\n"
    finally:
        metrics.socket_closed("sse")
        presence.LayerWatch.get(layer).discard(watched)
        if receiving is not None:
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving
        for group in groups:
            with contextlib.suppress(Exception):
                await layer.group_discard(group, channel)
        await database_sync_to_async(presence.socket_closed)(channel_name=channel)
