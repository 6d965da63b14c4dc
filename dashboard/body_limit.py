"""Refuse oversized HTTP request bodies before Django reads them.

Django's ASGI handler spools the whole body to a temporary file before any view runs, so without
this an upload far over ``RUNBOARD_UPLOAD_MAX_BYTES`` would still fill the disk before the view's
413. This wrapper answers 413 at once when ``Content-Length`` is over the limit, and stops reading
(and answers 413) as soon as a body without one, or lying about it, streams past the limit.

The limit is the upload limit plus room for the multipart envelope and the other form fields;
bodies between the upload limit and this one still reach the view, which gives the precise error.
A proxy body-size limit in front of the web processes remains a good idea (docs/operations.md).
"""

from __future__ import annotations

import json
from typing import Any

from jobs.conf import app_settings

ENVELOPE_BYTES = 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]


def body_limit() -> int:
    return app_settings.UPLOAD_MAX_BYTES + ENVELOPE_BYTES


class BodySizeLimit:
    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if self.max_bytes is not None else body_limit()
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Tell the application the client went away: Django stops reading and sends
                    # nothing, and we answer below.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if exceeded:
                    return
                started = True
            elif exceeded and not started:
                return
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if exceeded and not started:
            await _refuse(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"The request body is larger than {limit} bytes."}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
