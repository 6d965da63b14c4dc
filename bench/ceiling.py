"""The ceiling baseline: the least a Channels app can do to relay a pushed event to a socket.

``CeilingConsumer`` joins one group and forwards the text of each ``event.relay`` message as it
is: no authentication, no database, no protocol, and none of Channels' per-frame hop to the
database thread (``aclose_old_connections()`` before every handler, which Runboard's consumer
skips too: a ceiling that kept it was partly slower for that hop, issue 15 §1). It runs in the
same uvicorn process, on the same channel layer, as the project (see bench/asgi_bench.py).
``LayerSender`` is the matching sender: a bare ``group_send`` from one kept event loop in a
thread, the same mechanism the project's publisher uses, minus everything else.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer


def ceiling_group(name: str) -> str:
    return f"ceiling.{name}"


class CeilingConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its hop to the database thread before each handler (this
        consumer never touches the database): the lightest correct relay."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.group = ceiling_group(self.scope["url_route"]["kwargs"]["group"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def event_relay(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])


class LayerSender:
    """``group_send`` through the configured channel layer from one long-lived loop."""

    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        self._layer = get_channel_layer()
        self._pending: deque[Future[None]] = deque()
        self.failed = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ceiling-send", daemon=True)
        self._thread.start()

    def group_send(self, group: str, text: str) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self._layer.group_send(group, {"type": "event.relay", "text": text}), self._loop
        )
        self._pending.append(future)
        while self._pending and self._pending[0].done():
            if self._pending.popleft().exception() is not None:
                self.failed += 1

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        for future in list(self._pending):
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
            except Exception:
                self.failed += 1
        self._pending.clear()
        return True
