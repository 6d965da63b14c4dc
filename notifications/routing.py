from django.urls import path

from .realtime.consumer import EchoConsumer, NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    path("ws/echo/", EchoConsumer.as_asgi()),
]
