"""JSON API under /api/v1/.

Browser: the session cookie, with CSRF checked on every unsafe method. Scripts: a personal
access token in ``Authorization: Bearer ...`` (no CSRF; a bad token is a 401 even with a
session; too many from one address, a 429 with Retry-After). Another user's job is a 404 on every
route.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from dashboard.throttle.address import request_address
from dashboard.throttle.tokens import TokenThrottled, token_attempt

from . import selectors, services
from .kinds.registry import InvalidParams, UnknownKind, all_kinds, get_kind, may_launch
from .models import Job, JobState
from .openapi import openapi_schema
from .results import result_page, wire_size
from .tokens import token_authenticate

MAX_JSON_BODY = 256 * 1024
View = Callable[..., HttpResponse]


def error_response(
    status: int, detail: str, fields: dict[str, list[str]] | None = None, **headers: str
) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail}
    if fields:
        body["fields"] = fields
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    check = CsrfViewMiddleware(lambda req: HttpResponse())
    check.process_request(request)
    rejected = check.process_view(request, lambda req: HttpResponse(), (), {})
    if rejected is not None:
        return error_response(
            403, "CSRF check failed: send the X-CSRFToken header with the csrftoken cookie's value."
        )
    return None


def api_view(*methods: str) -> Callable[[View], View]:
    """Authenticate (token or session+CSRF), check the method, turn a missing job into 404."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(405, f"Method {request.method} not allowed.", Allow=", ".join(methods))
            header = request.headers.get("Authorization", "")
            # Only a Bearer token signs in; another scheme (Basic from a proxy in front) is not ours.
            if header.partition(" ")[0].lower() == "bearer":
                scheme, _, raw = header.partition(" ")
                try:
                    user = (
                        token_attempt(
                            raw.strip(), address=request_address(request), sign_in=token_authenticate
                        )
                        if scheme.lower() == "bearer"
                        else None
                    )
                except TokenThrottled as throttled:
                    return error_response(429, throttled.detail, Retry_After=str(throttled.retry_after))
                if user is None:
                    return error_response(
                        401, "Invalid, expired or revoked token.", WWW_Authenticate="Bearer"
                    )
                request.user = user
            elif not request.user.is_authenticated:
                return error_response(401, "Authentication required.", WWW_Authenticate="Bearer")
            elif request.method not in ("GET", "HEAD", "OPTIONS") and (failure := _csrf_failure(request)):
                return failure
            if any("\x00" in value for _, values in request.GET.lists() for value in values):
                # No database stores it the same way (PostgreSQL refuses it): never a 500.
                return error_response(400, "Invalid request: a query parameter contains a NUL character.")
            if "job_id" in kwargs:
                try:
                    kwargs["job_id"] = str(uuid.UUID(kwargs["job_id"]))
                except ValueError:
                    return error_response(404, "No such job.")
            try:
                return view(request, *args, **kwargs)
            except Job.DoesNotExist:
                return error_response(404, "No such job.")
            except services.Conflict as exc:
                return error_response(409, str(exc))

        return wrapper

    return decorate


def _param_fields(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {key if key == "params" else f"params.{key}": msgs for key, msgs in errors.items()}


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


def read_json(request: HttpRequest, *, max_bytes: int = MAX_JSON_BODY) -> tuple[Any, HttpResponse | None]:
    """The request's JSON body, or the error response to send (413 too large, 400 malformed)."""
    if len(request.body) > max_bytes:
        return None, error_response(413, f"The request body is larger than {max_bytes} bytes.")
    try:
        return parse_json(request.body or b"{}"), None
    except ValueError as exc:  # UnicodeDecodeError included
        return None, error_response(400, f"Malformed JSON: {exc}")


def _job_response(job: Job, viewer: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(selectors.job_payload_for(job, viewer), status=status)


@api_view("GET")
def kind_list(request: HttpRequest) -> JsonResponse:
    kinds = all_kinds(user=request.user)
    return JsonResponse(
        {
            "results": [
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
                for kind in kinds
            ]
        }
    )


@api_view("GET", "POST")
def job_collection(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _job_list(request)
    upload = None
    if request.content_type == "multipart/form-data":
        try:
            request.POST, request.FILES  # noqa: B018 (parse now, to answer in JSON)
        except RequestDataTooBig as exc:
            return error_response(413, f"The request's form fields are too large: {exc}")
        except (MultiPartParserError, SuspiciousOperation) as exc:
            return error_response(400, f"Malformed multipart body: {exc}")
        kind = request.POST.get("kind", "")
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
    try:
        if file is not None:
            if job_kind.upload_param is None:
                return error_response(
                    400, "Invalid request.", {"file": [f"{job_kind.title!r} takes no file."]}
                )
            if not may_launch(request.user, job_kind):
                raise services.KindNotAllowed(
                    f"Launching {job_kind.title!r} takes a permission you do not have."
                )
            upload = services.upload_create(owner=request.user, file=file)
        job = services.job_create(owner=request.user, kind=kind, params=params, upload=upload)
    except services.InvalidUpload as exc:
        return error_response(413 if exc.too_large else 400, str(exc), {"file": [str(exc)]})
    except services.KindNotAllowed as exc:
        _discard(upload)
        return error_response(403, str(exc))
    except services.RateLimited as exc:
        _discard(upload)
        return error_response(429, str(exc), Retry_After=str(exc.retry_after))
    except InvalidParams as exc:
        _discard(upload)
        return error_response(400, "Invalid parameters.", _param_fields(exc.errors))
    response = _job_response(job, request.user, status=201)
    response["Location"] = reverse("api:job-detail", args=[job.id])
    return response


def _discard(upload: Any) -> None:
    # Nothing is kept from a refused launch.
    if upload is not None:
        services.upload_delete(upload=upload)


def _job_list(request: HttpRequest) -> JsonResponse:
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
    except ValueError:
        return error_response(400, "Invalid request.", {"limit": ["Must be an integer from 1 to 200."]})
    states = [s for s in request.GET.getlist("state") if s]
    bad_states = set(states) - set(JobState.values)
    if bad_states:
        return error_response(
            400, "Invalid request.", {"state": [f"Unknown state(s): {', '.join(sorted(bad_states))}."]}
        )
    try:
        jobs = list(
            selectors.job_list_for_user(
                user=request.user,
                limit=limit + 1,
                states=states,
                kinds=[k for k in request.GET.getlist("kind") if k],
                search=request.GET.get("q", "").strip()[:100],
                cursor=request.GET.get("cursor") or None,
            )
        )
    except selectors.InvalidCursor:
        return error_response(400, "Invalid request.", {"cursor": ["Invalid cursor."]})
    more = len(jobs) > limit
    jobs = jobs[:limit]
    # A page is at most JOB_LIST_MAX_BYTES whatever its jobs hold: it ends early if need be, and
    # `next` continues after its last job. The envelope's room is kept: `next` repeats the query.
    envelope = 2 * len(request.get_full_path()) + 256
    results, complete = selectors.job_payload_page(
        jobs, max_bytes=selectors.JOB_LIST_MAX_BYTES - envelope, viewer=request.user
    )
    next_url = None
    if (more or not complete) and results:
        query = request.GET.copy()
        query["cursor"] = selectors.job_cursor(jobs[len(results) - 1])
        next_url = f"{request.path}?{query.urlencode()}"
    return JsonResponse({"results": results, "next": next_url})


@api_view("GET")
def job_detail(request: HttpRequest, job_id: str) -> JsonResponse:
    return _job_response(selectors.job_get_for_user(user=request.user, job_id=job_id), request.user)


@api_view("POST")
def job_cancel(request: HttpRequest, job_id: str) -> JsonResponse:
    return _job_response(services.job_cancel(user=request.user, job_id=job_id), request.user)


@api_view("POST")
def job_retry(request: HttpRequest, job_id: str) -> HttpResponse:
    """Retry with the same parameters, or re-run with ``{"params": {...}}``."""
    body, failure = read_json(request)
    if failure:
        return failure
    if not isinstance(body, dict):
        return error_response(400, "Expected a JSON object (optionally with 'params').")
    params = body.get("params")
    try:
        job = services.job_retry(user=request.user, job_id=job_id, params=params)
    except services.RateLimited as exc:
        return error_response(429, str(exc), Retry_After=str(exc.retry_after))
    except InvalidParams as exc:
        return error_response(400, "Invalid parameters.", _param_fields(exc.errors))
    except services.KindNotAllowed as exc:
        return error_response(403, str(exc))
    return _job_response(job, request.user, status=201)


@api_view("GET")
def job_log(request: HttpRequest, job_id: str) -> JsonResponse:
    """Lines after ``after``, oldest first: at most 1,000 and 256 KiB (ask again from the last)."""
    try:
        after = max(0, int(request.GET.get("after", 0)))
    except ValueError:
        return error_response(400, "Invalid request.", {"after": ["Must be an integer."]})
    lines = selectors.job_log_for_user(user=request.user, job_id=job_id, after=after)
    page, size = [], 0
    for line in lines:
        shown = {"seq": line.seq, "text": line.text}
        size += wire_size(shown) + 2
        if page and size > selectors.JOB_LIST_MAX_BYTES - 64:
            break
        page.append(shown)
    return JsonResponse({"lines": page})


RESULT_PAGE_MAX = 500


@api_view("GET")
def job_result(request: HttpRequest, job_id: str) -> HttpResponse:
    """The job's whole result and error, by reference (payloads only summarize them): for the
    owner or staff, like the job. ``?limit=&offset=`` page the kind's ``result_items`` list."""
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
    job = selectors.job_result_for_user(user=request.user, job_id=job_id)
    try:
        key = get_kind(job.kind).result_items
    except UnknownKind:
        key = None
    result, page = result_page(job.result, key=key, offset=offset, limit=limit)
    next_url = None
    if page is not None and offset + page["limit"] < page["total"]:
        query = request.GET.copy()
        query["offset"] = str(offset + page["limit"])
        next_url = f"{request.path}?{query.urlencode()}"
    body = {
        "id": str(job.id),
        "state": job.state,
        "result": result,
        "result_bytes": job.result_bytes,
        "error": job.error,
        "page": page,
        "next": next_url,
    }
    try:
        # Compact UTF-8: the result is served as it is stored, not inflated by escapes.
        return JsonResponse(body, json_dumps_params={"ensure_ascii": False, "separators": (",", ":")})
    except UnicodeEncodeError:  # a lone surrogate (SQLite stores them): escaped, it is valid JSON
        return JsonResponse(body)


@api_view("GET")
def job_download(request: HttpRequest, job_id: str) -> HttpResponse:
    # Owner only, staff included: a produced file is the owner's data, not operational state.
    job = Job.objects.get(pk=job_id, owner=request.user)
    if not job.result_file:
        return error_response(404, "This job has no file (or it was removed by retention).")
    try:
        handle = job.result_file.open("rb")
    except FileNotFoundError:
        return error_response(404, "The file was removed by retention.")
    name = (job.result or {}).get("file_name") if isinstance(job.result, dict) else None
    return FileResponse(handle, as_attachment=True, filename=name or "result")


def openapi(request: HttpRequest) -> JsonResponse:
    """Public: describes the API (and the kinds this visitor may launch), holds no user data."""
    return JsonResponse(openapi_schema(kinds=all_kinds(user=request.user)))
