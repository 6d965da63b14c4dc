from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from .realtime.consumer import NotificationConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other path: the handshake is refused (HTTP 403), not answered with an error page and a
    traceback in the log (found by review: Channels' router raised, a 500 per attempt)."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    re_path(r"", NoSuchSocket.as_asgi()),
]
