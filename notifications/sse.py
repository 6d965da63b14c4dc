"""The same events as the WebSocket, as Server-Sent Events at /events/ (for networks where
WebSockets don't pass). Notification events carry ``id:`` lines; a reconnecting EventSource
sends Last-Event-ID and gets everything after it replayed, then a fresh snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from jobs.tokens import token_authenticate

from . import events, selectors, services
from .push import CLOSE_TYPE, RELAY_TYPE

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 3000


def _frame(data: str, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {data}\n\n"


async def _user(request: HttpRequest) -> Any:
    header = request.headers.get("Authorization")
    if header:
        scheme, _, raw = header.partition(" ")
        return (
            await database_sync_to_async(token_authenticate)(raw.strip())
            if scheme.lower() == "bearer"
            else None
        )
    user = await request.auser()
    return user if user.is_authenticated else None


def _resume_point(request: HttpRequest) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        point = int(raw) if raw is not None else None
    except ValueError:
        return None
    return point if point is not None and point >= 0 else None


async def event_stream(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return JsonResponse({"detail": "Use GET."}, status=405)
    user = await _user(request)
    if user is None:
        return JsonResponse({"detail": "Authentication required."}, status=401)
    response = StreamingHttpResponse(
        _stream(request, user, _resume_point(request)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell proxies not to buffer the stream
    return response


async def _stream(request: HttpRequest, user: Any, resume_from: int | None) -> AsyncIterator[str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = events.user_group(user.pk)
    # Join before reading anything, as the WebSocket consumer does.
    await layer.group_add(group, channel)
    session_key = getattr(getattr(request, "session", None), "session_key", "") or ""
    await database_sync_to_async(services.socket_open)(
        channel_name=channel, user_id=user.pk, session_key=session_key
    )
    sent: set[int] = set()
    receiving: asyncio.Future[Any] | None = None
    try:
        yield f"retry: {RETRY_MS}\n\n"
        yield _frame(events.dumps(selectors.hello_for(user)))
        last = 0
        if resume_from is not None:
            rows, unread = await database_sync_to_async(selectors.replay_after)(
                user_id=user.pk, after_id=resume_from
            )
            last = resume_from
            for row in rows:
                sent.add(row["id"])
                last = row["id"]
                yield _frame(
                    events.dumps(events.notification_new(notification=row, unread_count=unread)),
                    event_id=row["id"],
                )
        snapshot = await database_sync_to_async(selectors.snapshot_for_user)(
            user=user, replayed_up_to=last if resume_from is not None else None
        )
        sent.update(n["id"] for n in snapshot["notifications"])
        yield _frame(events.dumps(snapshot), event_id=snapshot["last_notification_id"] or None)
        # One receive stays pending across keepalives: cancelling it would unsubscribe the channel.
        receiving = asyncio.ensure_future(layer.receive(channel))
        ticks = 0
        while True:
            done, _ = await asyncio.wait({receiving}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield ": keepalive\n\n"
                ticks += 1
                if ticks % 2 == 0:
                    await database_sync_to_async(services.socket_seen)(channel_name=channel)
                continue
            message = receiving.result()
            receiving = asyncio.ensure_future(layer.receive(channel))
            if message.get("type") == CLOSE_TYPE:
                yield _frame(json.dumps({"type": "closed", "code": message.get("code")}))
                return
            if message.get("type") != RELAY_TYPE:
                continue
            notification_id = message.get("notification_id")
            if notification_id is not None:
                if notification_id in sent:
                    continue
                sent.add(notification_id)
            yield _frame(message["text"], event_id=notification_id)
    finally:
        if receiving is not None:
            receiving.cancel()
            with contextlib.suppress(BaseException):
                await receiving
        await layer.group_discard(group, channel)
        await database_sync_to_async(services.socket_closed)(channel_name=channel)
