"""Refusing a WebSocket handshake for too many failed tokens, as HTTP 429 with ``Retry-After``."""

from __future__ import annotations

import json
from typing import Any

from .tokens import TokenThrottled

# Past the handshake, the protocol's own code for "too many" (docs/protocol.md).
CLOSE_TOO_MANY = 4429


async def websocket_refuse_throttled(
    scope: dict[str, Any], receive: Any, send: Any, throttled: TokenThrottled
) -> None:
    """HTTP 429 + ``Retry-After`` where the server offers the ASGI ``websocket.http.response``
    extension (uvicorn does); elsewhere accept and close with 4429, the reason saying when."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(throttled.retry_after).encode()),
                ],
            }
        )
        body = json.dumps({"detail": throttled.detail}).encode()
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_TOO_MANY, "reason": throttled.detail[:120]})
