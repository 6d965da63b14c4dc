"""The ASGI app benchmarks run: the project's application, unchanged, plus baseline routes.

Run exactly as the Procfile runs the project, with this module in place of ``dashboard.asgi``::

    uvicorn bench.asgi_bench:application --ws-max-size 65536 --ws-per-message-deflate false

- ``/ws/ceiling/<group>/``: the ceiling (bench/ceiling.py), same server, same channel layer;
- ``/ws/progress/<task_id>/``: celery-progress's WebSocket consumer;
- ``/celery-progress/<task_id>/``: celery-progress's polling endpoint (bench/urls.py);
- everything else: ``dashboard.asgi.application`` as it is.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

# dashboard.asgi sets Django up; everything below needs the app registry ready.
from dashboard.asgi import application as project_application  # noqa: I001

from celery_progress.websockets.routing import urlpatterns as celery_progress_routes
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from bench.ceiling import CeilingConsumer

_baseline_websocket = URLRouter(
    [path("ws/ceiling/<str:group>/", CeilingConsumer.as_asgi()), *celery_progress_routes]
)
_project_websocket = project_application.application_mapping["websocket"]


async def _websocket(scope, receive, send):
    if scope["path"].startswith(("/ws/ceiling/", "/ws/progress/")):
        return await _baseline_websocket(scope, receive, send)
    return await _project_websocket(scope, receive, send)


application = ProtocolTypeRouter(
    {"http": project_application.application_mapping["http"], "websocket": _websocket}
)
