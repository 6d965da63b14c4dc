"""The one API under /api/v1/ (mounted by dashboard/urls.py): a ``ninja.NinjaAPI`` of the jobs,
notifications and push routers, its error format, and its generated OpenAPI document
(``openapi.json``)."""

import contextlib
import copy
from functools import cache, wraps
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern, path, re_path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Query, Router
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import BaseModel, WithJsonSchema

from dashboard import history
from jobs import api
from jobs.kinds.registry import all_kinds
from jobs.permissions import Power, has_power, signed_in_user
from notifications import api as notifications_api
from notifications import push_api

ninja_api = NinjaAPI(
    title="Runboard API",
    version="1",
    description='Every route of /api/v1/ (docs/api.md). Errors: `{"detail", "fields"}` (ErrorBody).',
    auth=api.AUTH,
    urls_namespace="api",
    openapi_url=None,  # served below: it adds the job kinds when asked for
    docs_url=None,
)
ninja_api.add_router("/", api.router)
ninja_api.add_router("/notifications/", notifications_api.router)
ninja_api.add_router("/push/", push_api.router)


# --- The operator's history (issue 16 §11, §13): the Operations page's charts and failure groups


ops_router = Router(tags=["ops"])
ops_router.add_decorator(api.checked)
WindowQuery = Annotated[
    Any,
    WithJsonSchema({"type": "string", "enum": list(history.WINDOWS)}),
    Query(None, description="hour (60 one-minute buckets, the default) or day (24 one-hour buckets)"),
]


@ops_router.get(
    "/ops/history/",
    response={200: api.schema_of(history.HistoryPayload), **api.errors(*api.COMMON, 403)},
    url_name="ops-history",
    summary="Jobs finished and failed, runtime and queue wait percentiles over time, failure groups",
    description="403 without the 'use the operator view' permission; the failures' messages and "
    "job ids only with 'see every user's jobs' (jobs.view_all_jobs), tracebacks only with 'see "
    "all results' (jobs.view_all_results) too.",
)
def ops_history(request: HttpRequest, window: WindowQuery) -> JsonResponse:
    user = signed_in_user(request)
    if not has_power(user, Power.USE_OPERATOR_VIEW):
        return api.error_response(403, "History takes the 'use the operator view' permission.")
    name = request.GET.get("window") or "hour"
    if name not in history.WINDOWS:
        choices = ", ".join(history.WINDOWS)
        return api.error_response(400, "Invalid request.", {"window": [f"One of: {choices}."]})
    payload = history.ops_history(
        window=name,
        include_messages=has_power(user, Power.VIEW_ALL_JOBS),
        include_tracebacks=has_power(user, Power.VIEW_ALL_RESULTS),
    )
    return JsonResponse(payload)


ninja_api.add_router("/", ops_router)


# --- The error format: {"detail": ..., "fields": {...}} for every refusal, whoever refuses ------


@ninja_api.exception_handler(api.ApiError)
def _api_error(request: HttpRequest, exc: api.ApiError) -> HttpResponse:
    return exc.response()


@ninja_api.exception_handler(AuthenticationError)
def _not_authenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.error_response(401, "Authentication required.", WWW_Authenticate="Bearer")


@ninja_api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # The views read their inputs themselves; should a declared one fail ninja's checks, it is
    # the same 400 with per-field messages.
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        loc = [str(part) for part in error.get("loc", ())[1:]] or ["request"]
        fields.setdefault(".".join(loc), []).append(str(error.get("msg", "Invalid.")))
    return api.error_response(400, "Invalid request.", fields)


@ninja_api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.error_response(exc.status_code, str(exc))


def _json_405(view: Any) -> Any:
    """Ninja answers an unrouted method with a bare 405; ours is JSON like every error."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = ", ".join(sorted(m.strip() for m in response["Allow"].split(",")))
            return api.error_response(405, f"Method {request.method} not allowed.", Allow=allowed)
        return response

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]
    return wrapper


# --- The document ----------------------------------------------------------------------------

REQUEST_MODELS: list[type[BaseModel]] = [
    *api.REQUEST_MODELS,
    *notifications_api.REQUEST_MODELS,
    *push_api.REQUEST_MODELS,
]


def _add_schema(schemas: dict[str, Any], name: str, model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[name] = schema


@cache
def _routes_document(prefix: str) -> dict[str, Any]:
    document = ninja_api.get_openapi_schema(path_prefix=prefix)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        _add_schema(schemas, model.__name__, model)
    return dict(document)


def openapi_document(request: HttpRequest, prefix: str = "api/v1/") -> dict[str, Any]:
    """The generated document, with the launch body of every registered kind this visitor may
    launch (``Params_<kind>`` from its parameter model): a kind another app registers appears
    without any change here."""
    document = copy.deepcopy(_routes_document(prefix))
    schemas = document["components"]["schemas"]
    variants = []
    for kind in all_kinds(user=request.user):
        name = f"Params_{kind.name}"
        _add_schema(schemas, name, kind.params_model)
        variants.append(
            {
                "type": "object",
                "title": kind.title,
                "required": ["kind"],
                "properties": {
                    "kind": {"const": kind.name},
                    "params": {"$ref": f"#/components/schemas/{name}"},
                },
            }
        )
    schemas["JobCreate"] = {"description": api.JobCreate.__doc__, "oneOf": variants}
    return document


@csrf_exempt  # it only reads: any other method is the API's JSON 405, not Django's CSRF page
def openapi(request: HttpRequest) -> HttpResponse:
    """Public: describes the API (and the kinds this visitor may launch: signed in with the
    session or a bearer token), holds no user data."""
    if request.method not in ("GET", "HEAD"):
        return api.error_response(405, f"Method {request.method} not allowed.", Allow="GET, HEAD")
    prefix = request.path_info.removesuffix("openapi.json").lstrip("/")
    return JsonResponse(openapi_document(_visitor(request), prefix))


def _visitor(request: HttpRequest) -> HttpRequest:
    """The request, its user the bearer token's when it carries a valid one (the document offers
    the kinds that user may launch); a bad token is no error here: the document is public."""
    # A valid token sets request.user (a failure counts as anywhere); a bad or throttled one gets
    # the document as anyone sees it.
    with contextlib.suppress(api.ApiError):
        api.TokenAuth()(request)
    return request


@csrf_exempt  # a refusal for any method: no state is read or changed
def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    """Anything under /api/v1/ that is no route: the API's JSON 404, never Django's HTML page
    (nor, for a POST without its trailing slash, CommonMiddleware's APPEND_SLASH error)."""
    hint = " (API paths end with '/')" if not rest.endswith("/") and not rest.endswith(".json") else ""
    return api.error_response(404, f"No such API route: /api/v1/{rest[:200]}{hint}.")


app_name = "api"  # reverse("api:job-detail", ...)
# Ninja's "api-root" (a 404 that names its docs page) is left out: no docs page is served. Ninja
# lists every route as a path() (a URLPattern, never an include()): isinstance only narrows.
patterns = [p for p in ninja_api.urls[0] if isinstance(p, URLPattern) and p.name != "api-root"]
urlpatterns = [
    *(URLPattern(p.pattern, _json_405(p.callback), p.default_args, p.name) for p in patterns),
    path("openapi.json", openapi, name="openapi"),
    re_path(r"^(?P<rest>.*)$", not_found),  # last: every other path under /api/v1/
]
