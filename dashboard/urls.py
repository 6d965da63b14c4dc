from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.health import healthz, metrics, readyz
from notifications.push_api import service_worker
from notifications.realtime.sse import event_stream

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Every route of the API, notifications and push included (dashboard/api.py).
    path("api/v1/", include("dashboard.api")),
    path("events/", event_stream, name="events"),
    path("sw.js", service_worker, name="service-worker"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("", include("frontend.urls")),
]
