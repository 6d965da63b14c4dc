from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("kinds/", api.kind_list, name="kind-list"),
    path("jobs/", api.job_collection, name="job-list"),
    path("jobs/<uuid:job_id>/", api.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", api.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/retry/", api.job_retry, name="job-retry"),
    path("jobs/<uuid:job_id>/log/", api.job_log, name="job-log"),
    path("jobs/<uuid:job_id>/download/", api.job_download, name="job-download"),
    path("openapi.json", api.openapi, name="openapi"),
]
