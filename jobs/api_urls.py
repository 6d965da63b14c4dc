from django.urls import path, register_converter

from . import api


class AnyText:
    """Any non-empty text, line breaks and slashes included (the views check it is a job id)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


register_converter(AnyText, "anytext")

app_name = "api"

# job_id is matched loosely and checked by the views, so a malformed id is the API's JSON 404 like
# any unknown job, never Django's HTML page. The detail route comes last: it would otherwise
# swallow the routes below it.
urlpatterns = [
    path("kinds/", api.kind_list, name="kind-list"),
    path("jobs/", api.job_collection, name="job-list"),
    path("jobs/<anytext:job_id>/cancel/", api.job_cancel, name="job-cancel"),
    path("jobs/<anytext:job_id>/retry/", api.job_retry, name="job-retry"),
    path("jobs/<anytext:job_id>/log/", api.job_log, name="job-log"),
    path("jobs/<anytext:job_id>/download/", api.job_download, name="job-download"),
    path("jobs/<anytext:job_id>/result/", api.job_result, name="job-result"),
    path("jobs/<anytext:job_id>/", api.job_detail, name="job-detail"),
    path("openapi.json", api.openapi, name="openapi"),
]
