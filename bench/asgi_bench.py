"""The ASGI app benchmarks run: the project's application, unchanged, plus baseline routes.

Run exactly as the Procfile runs the project, with this module in place of ``dashboard.asgi``
(scripts/harness.py ``WebServer(replace=...)``, from bench.stack), on the project's own settings:

- ``/ws/ceiling/<group>/``: the ceiling (bench/ceiling.py), same server, same channel layer;
- ``/ws/progress/<task_id>/``: celery-progress's WebSocket consumer;
- ``/celery-progress/<task_id>/``: celery-progress's polling endpoint, served by Django through
  the same middleware, behind the same body limit, with this module as its URLconf;
- everything else: ``dashboard.asgi.application`` as it is.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings.test")

# dashboard.asgi sets Django up; everything below needs the app registry ready.
from dashboard.asgi import application as project_application  # noqa: I001

from celery_progress.websockets.routing import urlpatterns as celery_progress_routes
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.handlers.asgi import ASGIHandler
from django.urls import include, path

from bench.ceiling import CeilingConsumer
from dashboard.body_limit import BodySizeLimit

# The URLconf of the baseline's HTTP endpoint (Django resolves request.urlconf by module name).
urlpatterns = [path("celery-progress/", include("celery_progress.urls"))]


class _BaselineHandler(ASGIHandler):
    def create_request(self, scope, body_file):  # type: ignore[no-untyped-def]
        request, error = super().create_request(scope, body_file)
        if request is not None:
            request.urlconf = __name__
        return request, error


_baseline_http = BodySizeLimit(_BaselineHandler())
_project_http = project_application.application_mapping["http"]
_baseline_websocket = URLRouter(
    [path("ws/ceiling/<str:group>/", CeilingConsumer.as_asgi()), *celery_progress_routes]
)
_project_websocket = project_application.application_mapping["websocket"]


async def _http(scope, receive, send):
    if scope["path"].startswith("/celery-progress/"):
        return await _baseline_http(scope, receive, send)
    return await _project_http(scope, receive, send)


async def _websocket(scope, receive, send):
    if scope["path"].startswith(("/ws/ceiling/", "/ws/progress/")):
        return await _baseline_websocket(scope, receive, send)
    return await _project_websocket(scope, receive, send)


application = ProtocolTypeRouter({"http": _http, "websocket": _websocket})
