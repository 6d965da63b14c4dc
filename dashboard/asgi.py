"""ASGI entry point: Django for HTTP (behind a request body size limit), Channels for WebSockets
(a session behind the Origin check, or a bearer token)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.local")
# Populate the app registry before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.body_limit import BodySizeLimit  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app),
        # notifications.routing: the sign-in and Origin check wrap /ws/notifications/ only.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
