"""JSON API under /api/v1/: the jobs routes, and what every route of the one API shares.

The API is one ``ninja.NinjaAPI`` (built in ``dashboard/api.py``) made of routers: this module's
(kinds and jobs), ``notifications/api.py`` and ``notifications/push_api.py``. Its OpenAPI document
is generated from the schemas declared on the routes (``/api/v1/openapi.json``).

Browser: the session cookie, with CSRF checked on every unsafe method. Scripts: a personal
access token in ``Authorization: Bearer ...`` (no CSRF; a bad token is a 401 even with a
session; too many from one address, a 429 with Retry-After). Another user's job is a 404 on every
route. Every error is ``{"detail": "...", "fields": {...}}`` (``ErrorBody``; ``fields`` only when
a field is to blame), whichever layer refuses the request.

Request bodies are read by the views themselves (``read_json``: strict JSON, bounded), and query
parameters from ``request.GET``: the schemas below document them, the views keep their exact
messages and clamping.
"""

import dataclasses
import json
import typing
import uuid
from collections.abc import AsyncIterator, Callable
from functools import cache, wraps
from typing import Annotated, Any, NotRequired, TypedDict

import pydantic
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, ValidationError
from django.db import IntegrityError
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import register_converter, reverse
from ninja import Query, Router
from ninja.security import APIKeyCookie, HttpBearer
from pydantic import BaseModel, Field, WithJsonSchema

from dashboard.db import database_sync_to_async
from dashboard.throttle.address import request_address
from dashboard.throttle.tokens import TokenThrottled, token_attempt
from notifications import events

from . import admission, bulk, launch, schedules, selectors
from .conf import app_settings
from .exceptions import Conflict, InvalidUpload, KindNotAllowed, RateLimited
from .kinds.registry import InvalidParams, UnknownKind, all_kinds, get_kind, may_launch
from .models import Job, JobLogLine, JobSchedule, JobState
from .permissions import Power, has_power, signed_in_user
from .results import result_page, wire_size
from .tokens import token_authenticate

MAX_JSON_BODY = 256 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FAILED = "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value."


# --- Errors ------------------------------------------------------------------------------------


class ErrorBody(TypedDict):
    """Every error of the API: what went wrong, and per field what to fix (only when a field is
    to blame; ``params.<name>`` for a kind's parameter)."""

    detail: str
    fields: NotRequired[dict[str, list[str]]]


def error_response(
    status: int, detail: str, fields: dict[str, list[str]] | None = None, **headers: str
) -> JsonResponse:
    body: ErrorBody = {"detail": detail}
    if fields:
        body["fields"] = fields
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


class ApiError(Exception):
    """Raised anywhere under a route (authentication included): answered as ``error_response``."""

    def __init__(
        self, status: int, detail: str, fields: dict[str, list[str]] | None = None, **headers: str
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.fields, self.headers = status, detail, fields, headers

    def response(self) -> JsonResponse:
        return error_response(self.status, self.detail, self.fields, **self.headers)


# --- Authentication ------------------------------------------------------------------------------


def _csrf_failure(request: HttpRequest) -> bool:
    check = CsrfViewMiddleware(lambda req: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda req: HttpResponse(), (), {}) is not None


class TokenAuth(HttpBearer):
    """A personal access token (``rb_...``). Only the Bearer scheme is read: another
    ``Authorization`` (Basic from a proxy in front) is not ours, and the session signs in."""

    def __call__(self, request: HttpRequest) -> Any:
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.authenticate(request, raw.strip())

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        try:
            user = token_attempt(token, address=request_address(request), sign_in=token_authenticate)
        except TokenThrottled as throttled:
            raise ApiError(429, throttled.detail, Retry_After=str(throttled.retry_after)) from None
        if user is None:  # never falls back to the session
            raise ApiError(401, "Invalid, expired or revoked token.", WWW_Authenticate="Bearer")
        request.user = user
        return user


class SessionAuth(APIKeyCookie):
    """The session cookie of a signed-in browser; unsafe methods need the CSRF token."""

    param_name = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Any:
        return self.authenticate(request, None)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not request.user.is_authenticated:
            return None  # AuthenticationError: the 401 (dashboard/api.py)
        if request.method not in SAFE_METHODS and _csrf_failure(request):
            raise ApiError(403, CSRF_FAILED)
        return request.user


AUTH = [TokenAuth(), SessionAuth()]


def checked(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run on every operation once signed in: no NUL in the query, a job id that is a UUID (else
    the API's 404), and a missing job or a refused change as their JSON errors."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            # No database stores it the same way (PostgreSQL refuses it): never a 500.
            raise ApiError(400, "Invalid request: a query parameter contains a NUL character.")
        if "job_id" in kwargs:
            try:
                kwargs["job_id"] = str(uuid.UUID(kwargs["job_id"]))
            except ValueError:
                raise ApiError(404, "No such job.") from None
        try:
            return view(request, *args, **kwargs)
        except Job.DoesNotExist:
            raise ApiError(404, "No such job.") from None
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None

    return wrapper


# --- Bodies ------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _contains_nul(value: Any) -> bool:
    # Iterative: the value may be nested as deep as the parser allows.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(raw: str | bytes) -> Any:
    """Strict JSON from a client; ValueError (with a reason to show) for anything else.

    Beyond json.loads: nesting too deep for the parser, NaN/Infinity, and NUL characters (which
    PostgreSQL cannot store) are refused the same way on every database.
    """
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _contains_nul(value):
        raise ValueError("strings may not contain NUL (\\u0000) characters")
    return value


def read_json(request: HttpRequest, *, max_bytes: int = MAX_JSON_BODY) -> tuple[Any, JsonResponse | None]:
    """The request's JSON body, or the error response to send (413 too large, 400 malformed)."""
    if len(request.body) > max_bytes:
        return None, error_response(413, f"The request body is larger than {max_bytes} bytes.")
    try:
        return parse_json(request.body or b"{}"), None
    except ValueError as exc:  # UnicodeDecodeError included
        return None, error_response(400, f"Malformed JSON: {exc}")


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route whose view reads a JSON body shaped like ``model``."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


# --- Schemas -----------------------------------------------------------------------------------


@cache
def schema_of(typed_dict: Any) -> type[BaseModel]:
    """A pydantic model with the shape of a TypedDict (nested ones included), so a payload's shape
    is written once (``notifications/events.py``) and documented from there. Named after it,
    without ``Payload``: ``JobPayload`` is ``Job``."""
    hints = typing.get_type_hints(typed_dict)
    fields: dict[str, Any] = {
        key: (_model_type(hint), ... if key in typed_dict.__required_keys__ else None)
        for key, hint in hints.items()
    }
    name = typed_dict.__name__.removesuffix("Payload")
    return pydantic.create_model(name, __doc__=typed_dict.__doc__, **fields)


def _model_type(hint: Any) -> Any:
    if typing.is_typeddict(hint):
        return schema_of(hint)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if not args or origin is None:
        return hint
    converted = tuple(_model_type(arg) for arg in args)
    if origin in (list, dict):
        return origin[converted]
    return typing.Union[converted]  # noqa: UP007 (X | Y of a tuple of types)


def errors(*statuses: int) -> dict[int, Any]:
    return dict.fromkeys(statuses, schema_of(ErrorBody))


# Query parameters: documented here (written out, so they are types mypy reads), read by the views
# themselves from ``request.GET``.
StateQuery = Annotated[
    Any,
    WithJsonSchema({"type": "array", "items": {"type": "string"}}),
    Query(None, description="Only these states"),
]
KindQuery = Annotated[
    Any,
    WithJsonSchema({"type": "array", "items": {"type": "string"}}),
    Query(None, description="Only these kinds"),
]
SearchQuery = Annotated[Any, WithJsonSchema({"type": "string"}), Query(None, description="Search")]
ErrorClassQuery = Annotated[
    Any,
    WithJsonSchema({"type": "string"}),
    Query(None, description="Only failures of this exact error class"),
]
CursorQuery = Annotated[
    Any, WithJsonSchema({"type": "string"}), Query(None, description="From the previous page's `next`")
]
JobLimitQuery = Annotated[
    Any,
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 200}),
    Query(None, description="At most this many jobs (50)"),
]
AfterQuery = Annotated[
    Any, WithJsonSchema({"type": "integer", "minimum": 0}), Query(None, description="A line's seq")
]
OffsetQuery = Annotated[Any, WithJsonSchema({"type": "integer", "minimum": 0}), Query(None, description="")]


JobOut = schema_of(events.JobPayload)
LogLineOut = schema_of(events.LogLinePayload)
JobId = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
# Every route may answer these: a NUL in the query (400), not signed in or a bad token (401), too
# many bad tokens from this address (429).
COMMON = (400, 401, 429)


class KindInfo(TypedDict):
    name: str
    title: str
    description: str
    params_schema: dict[str, Any]  # JSON Schema of the kind's parameters
    accepts_upload: bool
    upload_param: str | None
    parallel: bool
    soft_time_limit: int


class KindList(TypedDict):
    results: list[KindInfo]


class JobPage(TypedDict):
    """At most ``limit`` jobs and 256 KiB: a page may end early; ``next`` continues after it."""

    results: list[events.JobPayload]
    next: str | None


class LogPage(TypedDict):
    lines: list[events.LogLinePayload]


class ResultPage(TypedDict):
    key: str
    offset: int
    limit: int
    total: int


class AttemptFailure(TypedDict):
    """One failed attempt that was retried (jobs/retries.py)."""

    attempt: int
    error: str  # at most 300 characters
    failed_at: str  # ISO 8601
    retry_in: float  # seconds of backoff before the next attempt


class JobResult(TypedDict):
    """The job's whole result and error (one page of the kind's list with ``limit``), and the
    attempts that failed before its last (oldest first)."""

    id: str
    state: str
    result: Any  # null if none
    result_bytes: int | None
    error: str
    # The failure's Python traceback (its tail): only for those who may see every user's results
    # (jobs.view_all_results); null for anyone else, the job's owner included (server detail).
    traceback: str | None
    attempts: list[AttemptFailure]
    page: ResultPage | None
    next: str | None


class JobCreate(BaseModel):
    """Launch a job: ``params`` as the kind's ``Params_<kind>`` (the document's ``JobCreate``
    lists each kind as its own variant)."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class JobRetry(BaseModel):
    """Retry with the same parameters, or re-run with new ``params``."""

    params: dict[str, Any] | None = None


JOB_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"type": "string"},
                        "params": {"type": "string", "description": "The parameters as JSON text."},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}
# Models the views read themselves: dashboard/api.py adds them to the document's components.
REQUEST_MODELS: list[type[BaseModel]] = [JobRetry]


def _param_fields(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {key if key == "params" else f"params.{key}": msgs for key, msgs in errors.items()}


def _job_response(job: Job, viewer: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(selectors.job_payload_for(job, viewer), status=status)


# --- Routes ------------------------------------------------------------------------------------


class AnyText:
    """Any non-empty text, line breaks and slashes included (the views check it is a job id)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: object) -> str:
        return str(value)


register_converter(AnyText, "anytext")

# job_id is matched loosely and checked (``checked``), so a malformed id is the API's JSON 404 like
# any unknown job, never Django's HTML page. The detail route comes last: it would otherwise
# swallow the routes below it.
JOB = "/jobs/{anytext:job_id}/"

router = Router(tags=["jobs"])
router.add_decorator(checked)


@router.get("/kinds/", response={200: schema_of(KindList), **errors(*COMMON)}, url_name="kind-list",
            summary="Job kinds you may launch, with their parameter JSON Schema")  # fmt: skip
def kind_list(request: HttpRequest) -> JsonResponse:
    results: list[KindInfo] = [
        {
            "name": kind.name,
            "title": kind.title,
            "description": kind.description,
            "params_schema": kind.params_schema(),
            "accepts_upload": kind.upload_param is not None,
            "upload_param": kind.upload_param,
            "parallel": kind.run_chunk is not None,
            "soft_time_limit": kind.soft_time_limit,
        }
        for kind in all_kinds(user=request.user)
    ]
    return JsonResponse({"results": results})


@router.get(
    "/jobs/",
    response={200: schema_of(JobPage), **errors(*COMMON)},
    url_name="job-list",
    summary="Your jobs, newest first (a page is at most 256 KiB: it may end early)",
)
def job_list(
    request: HttpRequest,
    state: StateQuery,
    kind: KindQuery,
    q: SearchQuery,
    error_class: ErrorClassQuery,
    cursor: CursorQuery,
    limit: JobLimitQuery,
) -> JsonResponse:
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
    except ValueError:
        raise ApiError(400, "Invalid request.", {"limit": ["Must be an integer from 1 to 200."]}) from None
    states = [s for s in request.GET.getlist("state") if s]
    bad_states = set(states) - set(JobState.values)
    if bad_states:
        raise ApiError(
            400, "Invalid request.", {"state": [f"Unknown state(s): {', '.join(sorted(bad_states))}."]}
        )
    user = signed_in_user(request)
    try:
        jobs = list(
            selectors.job_list_for_user(
                user=user,
                limit=limit + 1,
                states=states,
                kinds=[k for k in request.GET.getlist("kind") if k],
                search=request.GET.get("q", "").strip()[:100],
                # The Operations page's failure groups link to one class (the page asks with it).
                error_class=request.GET.get("error_class", "").strip()[:100],
                cursor=request.GET.get("cursor") or None,
            )
        )
    except selectors.InvalidCursor:
        raise ApiError(400, "Invalid request.", {"cursor": ["Invalid cursor."]}) from None
    more = len(jobs) > limit
    jobs = jobs[:limit]
    # A page is at most JOB_LIST_MAX_BYTES whatever its jobs hold: it ends early if need be, and
    # `next` continues after its last job. The envelope's room is kept: `next` repeats the query.
    envelope = 2 * len(request.get_full_path()) + 256
    results, complete = selectors.job_payload_page(
        jobs, max_bytes=selectors.JOB_LIST_MAX_BYTES - envelope, viewer=user
    )
    next_url = None
    if (more or not complete) and results:
        params = request.GET.copy()
        params["cursor"] = selectors.job_cursor(jobs[len(results) - 1])
        next_url = f"{request.path}?{params.urlencode()}"
    return JsonResponse({"results": results, "next": next_url})


@router.post(
    "/jobs/",
    response={201: JobOut, **errors(*COMMON, 403, 413)},
    url_name="job-list",
    summary="Launch a job (JSON, or multipart: `kind`, `params` as JSON text, `file`)",
    description="403: a kind that takes a permission you do not hold, or a failed CSRF check. "
    "413: the upload is too large. 429: too many launches (or bad tokens); see Retry-After.",
    openapi_extra=JOB_CREATE_BODY,
)
def job_create(request: HttpRequest) -> HttpResponse:
    if request.content_type == "multipart/form-data":
        try:
            request.POST, request.FILES  # noqa: B018 (parse now, to answer in JSON)
        except RequestDataTooBig as exc:
            return error_response(413, f"The request's form fields are too large: {exc}")
        except (MultiPartParserError, SuspiciousOperation) as exc:
            return error_response(400, f"Malformed multipart body: {exc}")
        kind: object = request.POST.get("kind", "")
        try:
            params = parse_json(request.POST.get("params") or "{}")
        except ValueError as exc:
            return error_response(400, "Invalid request.", {"params": [f"Malformed JSON: {exc}"]})
        file = request.FILES.get("file")
    else:
        body, failure = read_json(request)
        if failure:
            return failure
        if not isinstance(body, dict):
            return error_response(400, "Expected a JSON object with 'kind' and 'params'.")
        kind, params, file = body.get("kind"), body.get("params", {}), None
    if not isinstance(kind, str) or not kind:
        return error_response(400, "Invalid request.", {"kind": ["This field is required."]})
    try:
        job_kind = get_kind(kind)
    except UnknownKind:
        return error_response(400, "Invalid request.", {"kind": [f"Unknown job kind {kind[:64]!r}."]})
    if (
        job_kind.upload_param
        and file is None
        and not (isinstance(params, dict) and params.get(job_kind.upload_param))
    ):
        return error_response(
            400, "Invalid request.", {"file": ["Attach the file to profile (multipart field 'file')."]}
        )
    if file is not None and job_kind.upload_param is None:
        return error_response(400, "Invalid request.", {"file": [f"{job_kind.title!r} takes no file."]})
    user = signed_in_user(request)
    try:
        job = launch.job_launch(owner=user, kind=kind, params=params, file=file)
    except InvalidUpload as exc:
        return error_response(413 if exc.too_large else 400, str(exc), {"file": [str(exc)]})
    except KindNotAllowed as exc:
        return error_response(403, str(exc))
    except RateLimited as exc:
        return error_response(429, str(exc), Retry_After=str(exc.retry_after))
    except InvalidParams as exc:
        return error_response(400, "Invalid parameters.", _param_fields(exc.errors))
    response = _job_response(job, user, status=201)
    response["Location"] = reverse("api:job-detail", args=[job.id])
    return response


# --- Bulk actions (issue 16 §12) -------------------------------------------------------------------
# Before the job routes: "/jobs/{job_id}/" matches any text, "bulk/preview" included.


class BulkPreviewBody(BaseModel):
    """A bulk action and the jobs it is for (``filter``: see ``BulkFilter``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    action: bulk.BulkAction
    filter: bulk.BulkFilter = Field(default_factory=bulk.BulkFilter)


class BulkApplyBody(BulkPreviewBody):
    """Apply it to exactly the jobs previewed: ``confirmation`` is the preview's (good for one
    apply, within 15 minutes); if the jobs to act on are no longer those, nothing is done (409).
    ``confirmed_count``, optional, is the preview's ``actionable`` as the user read it: checked too."""

    confirmation: str = Field(min_length=1, max_length=bulk.CONFIRMATION_MAX_LENGTH)
    confirmed_count: pydantic.StrictInt | None = Field(default=None, ge=0)


REQUEST_MODELS.extend([bulk.BulkFilter, BulkPreviewBody, BulkApplyBody])


def _bulk_body(body: Any, model: type[BulkPreviewBody]) -> Any:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for error in exc.errors():
            fields.setdefault(".".join(str(p) for p in error["loc"]) or "body", []).append(error["msg"])
        raise ApiError(400, "Invalid request.", fields) from None


@router.post(
    "/jobs/bulk/preview/",
    response={200: schema_of(bulk.BulkPreview), **errors(*COMMON, 403, 413)},
    url_name="job-bulk-preview",
    summary="How many jobs a bulk retry, cancel or delete would act on, why others would be left "
    "alone, a few examples, and the confirmation that applies it to exactly these jobs",
    description="Only jobs you may see are ever selected. 403: a failed CSRF check.",
    openapi_extra=json_body(BulkPreviewBody),
)
def job_bulk_preview(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request)
    if failure:
        return failure
    data = _bulk_body(body, BulkPreviewBody)
    user = signed_in_user(request)
    return JsonResponse(bulk.bulk_preview(user=user, bulk_filter=data.filter, action=data.action))


@router.post(
    "/jobs/bulk/",
    response={200: schema_of(bulk.BulkResult), **errors(*COMMON, 403, 409, 413)},
    url_name="job-bulk",
    summary="Retry, cancel or delete exactly the jobs a preview confirmed, once "
    f"(at most {bulk.BULK_MAX_JOBS}); audited",
    description="Each job is checked as its single-job action is; those refused are skipped and "
    "counted by reason. 400: more than the limit (narrow the filter), or not a confirmation of "
    "this action and filter. 409: the jobs are not those previewed any more, the confirmation "
    "expired, or it was applied already (preview again). Retries count in their owner's launch "
    "limit. 403: a failed CSRF check.",
    openapi_extra=json_body(BulkApplyBody),
)
def job_bulk_apply(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request)
    if failure:
        return failure
    data = _bulk_body(body, BulkApplyBody)
    user = signed_in_user(request)
    try:
        result = bulk.bulk_apply(
            user=user,
            bulk_filter=data.filter,
            action=data.action,
            confirmation=data.confirmation,
            confirmed_count=data.confirmed_count,
        )
    except bulk.SelectionTooLarge as exc:
        raise ApiError(400, str(exc), {"filter": [str(exc)]}) from None
    except bulk.ConfirmationInvalid as exc:
        raise ApiError(400, str(exc), {"confirmation": [str(exc)]}) from None
    except (bulk.PreviewAgain, bulk.AlreadyApplied) as exc:
        raise ApiError(409, str(exc), {"confirmation": [str(exc)]}) from None
    return JsonResponse(result)


@router.post(
    f"{JOB}cancel/",
    response={200: JobOut, **errors(*COMMON, 403, 404, 409)},
    url_name="job-cancel",
    summary="Cancel (queued: at once; running: cooperatively); 409 once finished",
)
def job_cancel(request: HttpRequest, job_id: JobId) -> JsonResponse:
    user = signed_in_user(request)
    return _job_response(launch.job_cancel(user=user, job_id=job_id), user)


@router.post(
    f"{JOB}retry/",
    response={201: JobOut, **errors(*COMMON, 403, 404, 409, 413)},
    url_name="job-retry",
    summary='Retry a finished job, or re-run it with {"params": {...}}; 409 if not finished',
    openapi_extra=json_body(JobRetry, required=False),
)
def job_retry(request: HttpRequest, job_id: JobId) -> HttpResponse:
    body, failure = read_json(request)
    if failure:
        return failure
    if not isinstance(body, dict):
        return error_response(400, "Expected a JSON object (optionally with 'params').")
    params = body.get("params")
    user = signed_in_user(request)
    try:
        job = launch.job_retry(user=user, job_id=job_id, params=params)
    except RateLimited as exc:
        return error_response(429, str(exc), Retry_After=str(exc.retry_after))
    except InvalidParams as exc:
        return error_response(400, "Invalid parameters.", _param_fields(exc.errors))
    except KindNotAllowed as exc:
        return error_response(403, str(exc))
    return _job_response(job, user, status=201)


@router.get(
    f"{JOB}log/",
    response={200: schema_of(LogPage), **errors(*COMMON, 404)},
    url_name="job-log",
    summary="Log lines after `after`, oldest first: at most 1,000 and 256 KiB (ask again from the last)",
)
def job_log(request: HttpRequest, job_id: JobId, after: AfterQuery) -> JsonResponse:
    try:
        after = max(0, int(request.GET.get("after", 0)))
    except ValueError:
        raise ApiError(400, "Invalid request.", {"after": ["Must be an integer."]}) from None
    lines = selectors.job_log_for_user(user=signed_in_user(request), job_id=job_id, after=after)
    page: list[events.LogLinePayload] = []
    size = 0
    for line in lines:
        shown = selectors.log_line_payload(line)
        size += wire_size(shown) + 2
        if page and size > selectors.JOB_LIST_MAX_BYTES - 64:
            break
        page.append(shown)
    return JsonResponse({"lines": page})


LOG_TEXT_CHUNK = 200  # lines per query while the whole log streams out


async def _log_text(user: Any, job_id: str, first: list[JobLogLine]) -> AsyncIterator[bytes]:
    """The log as text, one line each (``<time> <text>``), a chunk of lines per query (streamed
    by the ASGI server): at most the kept lines however fast the job writes while it streams.
    Each chunk asks again whether ``user`` may read it."""
    chunk, left = first, app_settings.LOG_LINES_KEPT
    while chunk and left > 0:
        chunk = chunk[:left]
        left -= len(chunk)
        text = "".join(f"{line.created_at.isoformat()} {line.text}\n" for line in chunk)
        yield text.encode("utf-8", "replace")  # a lone surrogate (SQLite stores them) as "?"
        try:
            # A connection per chunk, closed after it: a slow reader pins none (dashboard/db.py).
            chunk = await database_sync_to_async(selectors.job_log_for_user)(
                user=user, job_id=job_id, after=chunk[-1].seq, limit=LOG_TEXT_CHUNK
            )
        except Job.DoesNotExist:  # deleted, or no longer theirs to read, meanwhile
            return


@router.get(
    f"{JOB}log/download/",
    response=errors(*COMMON, 404),
    url_name="job-log-download",
    summary="The whole kept log as text, a `<time> <text>` line each (owner or view_all_results)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "The log as UTF-8 text, streamed (at most the kept lines)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        }
    },
)
def job_log_download(request: HttpRequest, job_id: JobId) -> StreamingHttpResponse:
    # Asked here, before any byte is sent: another user's job is the same 404 as the log's.
    user = signed_in_user(request)
    first = selectors.job_log_for_user(user=user, job_id=job_id, limit=LOG_TEXT_CHUNK)
    response = StreamingHttpResponse(_log_text(user, job_id, first), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="job-{job_id[:8]}-log.txt"'
    return response


@router.get(
    f"{JOB}download/",
    response=errors(*COMMON, 404),
    url_name="job-download",
    summary="The file the job produced (owner only)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "The file",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def job_download(request: HttpRequest, job_id: JobId) -> HttpResponse | FileResponse:
    # Owner only, staff included: a produced file is the owner's data, not operational state.
    job = Job.objects.get(pk=job_id, owner=signed_in_user(request))
    if not job.result_file:
        return error_response(404, "This job has no file (or it was removed by retention).")
    try:
        handle = job.result_file.open("rb")
    except FileNotFoundError:
        return error_response(404, "The file was removed by retention.")
    name = (job.result or {}).get("file_name") if isinstance(job.result, dict) else None
    return FileResponse(handle, as_attachment=True, filename=name or "result")


RESULT_PAGE_MAX = 500
ResultLimitQuery = Annotated[
    Any,
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": RESULT_PAGE_MAX}),
    Query(None, description="Page the kind's list (csv_profile: `columns`)"),
]


@router.get(
    f"{JOB}result/",
    response={200: schema_of(JobResult), **errors(*COMMON, 404)},
    url_name="job-result",
    summary="The job's whole result and error, by reference (owner or staff)",
)
def job_result(
    request: HttpRequest,
    job_id: JobId,
    offset: OffsetQuery,
    limit: ResultLimitQuery,
) -> HttpResponse:
    """``?limit=&offset=`` page the kind's ``result_items`` list."""
    fields: dict[str, list[str]] = {}
    offset, limit = 0, None
    try:
        offset = max(0, int(request.GET.get("offset", 0)))
    except ValueError:
        fields["offset"] = ["Must be an integer."]
    if request.GET.get("limit"):
        try:
            limit = int(request.GET["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= RESULT_PAGE_MAX:
            fields["limit"] = [f"Must be an integer from 1 to {RESULT_PAGE_MAX}."]
    if fields:
        return error_response(400, "Invalid request.", fields)
    user = signed_in_user(request)
    job = selectors.job_result_for_user(user=user, job_id=job_id)
    try:
        key = get_kind(job.kind).result_items
    except UnknownKind:
        key = None
    result, page = result_page(job.result, key=key, offset=offset, limit=limit)
    next_url = None
    if page is not None and offset + page["limit"] < page["total"]:
        params = request.GET.copy()
        params["offset"] = str(offset + page["limit"])
        next_url = f"{request.path}?{params.urlencode()}"
    body = {
        "id": str(job.id),
        "state": job.state,
        "result": result,
        "result_bytes": job.result_bytes,
        "error": job.error,
        "traceback": job.traceback if has_power(user, Power.VIEW_ALL_RESULTS) else None,
        "attempts": job.attempt_errors or [],
        "page": page,
        "next": next_url,
    }
    try:
        # Compact UTF-8: the result is served as it is stored, not inflated by escapes.
        return JsonResponse(body, json_dumps_params={"ensure_ascii": False, "separators": (",", ":")})
    except UnicodeEncodeError:  # a lone surrogate (SQLite stores them): escaped, it is valid JSON
        return JsonResponse(body)


@router.get(JOB, response={200: JobOut, **errors(*COMMON, 404)}, url_name="job-detail",
            summary="One of your jobs")  # fmt: skip
def job_detail(request: HttpRequest, job_id: JobId) -> JsonResponse:
    user = signed_in_user(request)
    return _job_response(selectors.job_get_for_user(user=user, job_id=job_id), user)


# --- Schedules (issue 14 §4) ---------------------------------------------------------------------


class ScheduleInfo(TypedDict):
    """A job schedule: its timing, next run (UTC, null when paused or none within 5 years), last
    run and that run's outcome (the job's state)."""

    id: int
    name: str
    kind: str
    params: dict[str, Any]
    owner: str
    every_seconds: int | None
    crontab: str
    timezone: str
    enabled: bool
    next_run_at: str | None
    last_run_at: str | None
    last_job_id: str | None
    last_outcome: str | None
    failure_streak: int


class ScheduleList(TypedDict):
    results: list[ScheduleInfo]


class ScheduleCreate(BaseModel):
    """Add a schedule: either ``every_seconds`` or a five-field ``crontab`` (Celery's syntax, read
    in ``timezone``); ``owner`` (a username) defaults to you."""

    name: str = Field(min_length=1, max_length=150)
    kind: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    owner: str | None = Field(default=None, max_length=150)
    # No bounds here: the service's field error says the real ones ("From 60 to … seconds").
    every_seconds: int | None = None
    crontab: str = Field(default="", max_length=100)
    timezone: str = Field(default="UTC", max_length=63)
    enabled: bool = True


REQUEST_MODELS.append(ScheduleCreate)
SCHEDULE = "/schedules/{anytext:schedule_id}/"
SCHEDULE_FIELDS = ("name", "kind", "params", "owner", "every_seconds", "crontab", "timezone", "enabled")


def _schedule_info(status: schedules.ScheduleStatus) -> ScheduleInfo:
    schedule = status.schedule
    return {
        "id": schedule.pk,
        "name": schedule.name,
        "kind": schedule.kind,
        "params": schedule.params,
        "owner": schedule.owner.get_username(),
        "every_seconds": schedule.every_seconds,
        "crontab": schedule.crontab,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "next_run_at": status.next_run_at.isoformat() if status.next_run_at else None,
        "last_run_at": status.last_run_at.isoformat() if status.last_run_at else None,
        "last_job_id": str(schedule.last_job_id) if schedule.last_job_id else None,
        "last_outcome": status.last_outcome or None,
        "failure_streak": schedule.failure_streak,
    }


NAME_TAKEN = "A schedule with this name exists already."


def _schedule_for_action(request: HttpRequest, schedule_id: str) -> tuple[Any, JobSchedule]:
    """The schedule a Run now / pause / resume acts on: its owner, or 'act on any job'."""
    user = signed_in_user(request)
    schedule = (
        JobSchedule.objects.select_related("owner", "last_job").filter(pk=int(schedule_id)).first()
        # ASCII digits only: "²".isdigit() is true and int() of it raised (a 500).
        if schedule_id.isascii() and schedule_id.isdigit() and len(schedule_id) < 19
        else None
    )
    if schedule is None or (schedule.owner_id != user.pk and not has_power(user, Power.USE_OPERATOR_VIEW)):
        raise ApiError(404, "No such schedule.")
    if schedule.owner_id != user.pk and not has_power(user, Power.ACT_ON_ANY_JOB):
        raise ApiError(403, "Acting on another user's schedule takes the 'act on any job' permission.")
    return user, schedule


@router.get(
    "/schedules/",
    response={200: schema_of(ScheduleList), **errors(*COMMON)},
    url_name="schedule-list",
    summary="Every job schedule (the operator view's permission), else the user's own",
)
def schedule_list(request: HttpRequest) -> JsonResponse:
    user = signed_in_user(request)
    # An owner may run, pause and resume their schedules: they may list them too.
    owner = None if has_power(user, Power.USE_OPERATOR_VIEW) else user
    statuses = schedules.schedules_status(owner=owner)
    return JsonResponse({"results": [_schedule_info(status) for status in statuses]})


@router.post(
    "/schedules/",
    response={201: schema_of(ScheduleInfo), **errors(*COMMON, 403)},
    url_name="schedule-list",
    summary="Add a job schedule (validated like the admin form: Celery's crontab parser, a crontab "
    "that can fire, a known time zone)",
    description="403: without the 'add job schedule' permission, for another owner without 'act on "
    "any job', or a kind you may not launch.",
    openapi_extra=json_body(ScheduleCreate),
)
def schedule_create(request: HttpRequest) -> JsonResponse:
    user = signed_in_user(request)
    if not user.has_perm("jobs.add_jobschedule"):
        return error_response(403, "Adding schedules takes the 'add job schedule' permission.")
    body, failure = read_json(request)
    if failure:
        return failure
    try:
        data = ScheduleCreate.model_validate(body)
    except pydantic.ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for error in exc.errors():
            fields.setdefault(".".join(str(p) for p in error["loc"]) or "body", []).append(error["msg"])
        return error_response(400, "Invalid request.", fields)
    owner = user
    if data.owner and data.owner != user.get_username():
        if not has_power(user, Power.ACT_ON_ANY_JOB):
            return error_response(
                403, "Scheduling jobs for another user takes the 'act on any job' permission."
            )
        other = get_user_model().objects.filter(username=data.owner).first()
        if other is None:
            return error_response(400, "Invalid request.", {"owner": [f"No user named {data.owner!r}."]})
        owner = other
    try:
        if not may_launch(user, get_kind(data.kind)):
            return error_response(403, f"You may not launch {data.kind!r}.")
    except UnknownKind:
        return error_response(400, "Invalid request.", {"kind": [f"Unknown job kind {data.kind[:64]!r}."]})
    if JobSchedule.objects.filter(name=data.name).exists():
        return error_response(400, "Invalid request.", {"name": [NAME_TAKEN]})
    schedule = JobSchedule(
        name=data.name, kind=data.kind, params=data.params, owner=owner, every_seconds=data.every_seconds,
        crontab=data.crontab, timezone=data.timezone, enabled=data.enabled,
    )  # fmt: skip
    try:
        schedule = schedules.schedule_save(schedule=schedule)
    except ValidationError as exc:
        return error_response(400, "Invalid schedule.", exc.message_dict)
    except IntegrityError:  # the same name saved at the same moment (the check above raced it)
        return error_response(400, "Invalid request.", {"name": [NAME_TAKEN]})
    return JsonResponse(_schedule_info(schedules.schedule_status(schedule)), status=201)


@router.post(
    f"{SCHEDULE}run/",
    response={201: JobOut, **errors(*COMMON, 403, 404, 409, 429)},
    url_name="schedule-run",
    summary="Run a schedule now (paused or not): an ordinary job of its owner",
)
def schedule_run_now(request: HttpRequest, schedule_id: str) -> JsonResponse:
    user, schedule = _schedule_for_action(request, schedule_id)
    try:
        job = schedules.schedule_run(schedule_id=schedule.pk, manual=True)
    except RateLimited as exc:
        return error_response(429, str(exc), Retry_After=str(exc.retry_after))
    if job is None:
        return error_response(409, "The schedule's owner is inactive: nothing was run.")
    return _job_response(job, user, status=201)


@router.post(
    f"{SCHEDULE}pause/",
    response={200: schema_of(ScheduleInfo), **errors(*COMMON, 403, 404)},
    url_name="schedule-pause",
    summary="Pause a schedule (beat skips it until resumed)",
)
def schedule_pause(request: HttpRequest, schedule_id: str) -> JsonResponse:
    return _schedule_set_enabled(request, schedule_id, enabled=False)


@router.post(
    f"{SCHEDULE}resume/",
    response={200: schema_of(ScheduleInfo), **errors(*COMMON, 403, 404)},
    url_name="schedule-resume",
    summary="Resume a paused schedule",
)
def schedule_resume(request: HttpRequest, schedule_id: str) -> JsonResponse:
    return _schedule_set_enabled(request, schedule_id, enabled=True)


def _schedule_set_enabled(request: HttpRequest, schedule_id: str, *, enabled: bool) -> JsonResponse:
    _, schedule = _schedule_for_action(request, schedule_id)
    schedule = schedules.schedule_set_enabled(schedule_id=schedule.pk, enabled=enabled)
    return JsonResponse(_schedule_info(schedules.schedule_status(schedule)))


# --- Admission: queues, kinds, pause / resume / drain (issue 14) ---------------------------------


class QueueInfo(TypedDict):
    queue: str
    waiting: int  # queued, not yet admitted by the scheduler
    in_line: int  # admitted, waiting for a worker
    running: int
    oldest_wait_seconds: float | None  # the oldest queued job's wait so far
    paused: bool
    draining: bool
    drained: bool  # draining, and nothing of it is running or in line


class AdmissionAuditInfo(TypedDict):
    at: str
    user: str
    action: str  # pause, resume, drain
    target: str  # kind, queue
    name: str


class AdmissionInfo(TypedDict):
    queues: list[QueueInfo]
    paused_kinds: list[str]
    audit: list[AdmissionAuditInfo]  # the newest 20 actions


class AdmissionControlBody(BaseModel):
    """Pause (queued jobs stay queued and say so; running ones finish), resume, or drain (pause
    before maintenance: the queue's running jobs finish, nothing more is admitted) a kind or a
    queue."""

    model_config = pydantic.ConfigDict(extra="forbid")
    action: typing.Literal["pause", "resume", "drain"]
    target: typing.Literal["kind", "queue"]
    name: str = Field(min_length=1, max_length=64)


REQUEST_MODELS.append(AdmissionControlBody)


def _admission_info() -> AdmissionInfo:
    audit: list[AdmissionAuditInfo] = [
        {
            "at": row.at.isoformat(),
            "user": row.username,
            "action": row.action,
            "target": row.target,
            "name": row.name,
        }
        for row in admission.admission_audit_recent()
    ]
    queues = [
        typing.cast(QueueInfo, dataclasses.asdict(d)) for d in admission.queue_depths(kinds=all_kinds())
    ]
    return {"queues": queues, "paused_kinds": admission.paused_kinds(), "audit": audit}


@router.get(
    "/ops/queues/",
    response={200: schema_of(AdmissionInfo), **errors(*COMMON, 403)},
    url_name="ops-queues",
    summary="Per-queue depth and oldest wait, paused kinds and queues, and who changed them",
)
def ops_queues(request: HttpRequest) -> JsonResponse:
    if not has_power(signed_in_user(request), Power.USE_OPERATOR_VIEW):
        return error_response(403, "Queues take the 'use the operator view' permission.")
    return JsonResponse(_admission_info())


@router.post(
    "/ops/queues/control/",
    response={200: schema_of(AdmissionInfo), **errors(*COMMON, 403)},
    url_name="ops-queues-control",
    summary="Pause, resume or drain a kind or a queue (audited: who, when)",
    description="403 without the 'pause, resume and drain' permission (jobs.control_queues).",
    openapi_extra=json_body(AdmissionControlBody),
)
def ops_queues_control(request: HttpRequest) -> JsonResponse:
    user = signed_in_user(request)
    if not has_power(user, Power.CONTROL_QUEUES):
        return error_response(403, "Pausing and resuming takes the 'pause, resume and drain' permission.")
    body, failure = read_json(request)
    if failure:
        return failure
    try:
        data = AdmissionControlBody.model_validate(body)
        admission.admission_control_set(user=user, action=data.action, target=data.target, name=data.name)
    except pydantic.ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for error in exc.errors():
            fields.setdefault(".".join(str(p) for p in error["loc"]) or "body", []).append(error["msg"])
        return error_response(400, "Invalid request.", fields)
    except ValueError as exc:
        return error_response(400, str(exc), {"name": [str(exc)]})
    if not has_power(user, Power.USE_OPERATOR_VIEW):
        # Depths and who changed what are the operator view's: this power alone sees its change.
        return JsonResponse({"queues": [], "paused_kinds": admission.paused_kinds(), "audit": []})
    return JsonResponse(_admission_info())
