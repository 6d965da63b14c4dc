"""URLs for benchmark runs: the project's, plus celery-progress's polling endpoint (a baseline)."""

from django.urls import include, path

from dashboard.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("celery-progress/", include("celery_progress.urls")),
    *project_urlpatterns,
]
