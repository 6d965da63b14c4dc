from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from .auth import RealtimeAuthStack
from .realtime.consumer import NotificationConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other path: the handshake is refused (HTTP 403), not answered with an error page and a
    traceback in the log (found by review: Channels' router raised, a 500 per attempt), and
    before any sign-in (a bearer token sent to a path that does not exist is not looked up, nor
    counted against its address)."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    # The Origin check and the sign-in wrap the one real socket only.
    path("ws/notifications/", RealtimeAuthStack(NotificationConsumer.as_asgi())),
    re_path(r"", NoSuchSocket.as_asgi()),
]
