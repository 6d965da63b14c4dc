from django.urls import path

from . import views
from .alerts import alerts_page
from .bulk import bulk_page
from .diagnostics import diagnostics
from .operations import operations
from .schedules import schedules_page

app_name = "frontend"

urlpatterns = [
    path("", views.home, name="home"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
    path("settings/", views.settings_page, name="settings"),
    path("diagnostics/", diagnostics, name="diagnostics"),
    path("operations/", operations, name="operations"),
    path("operations/schedules/", schedules_page, name="schedules"),
    path("operations/bulk/", bulk_page, name="bulk"),
    path("operations/alerts/", alerts_page, name="alerts"),
]
