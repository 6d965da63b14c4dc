"""django-axes' lockout answer (``AXES_LOCKOUT_CALLABLE``): the login page with a clear message,
HTTP 429 and ``Retry-After``, on /login/ and /admin/login/ alike."""

from __future__ import annotations

import math
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone


def lockout_seconds(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Seconds until this request's username and client address are both under the limit again.

    Axes counts the failures of attempt rows whose latest failure is within the cool-off, so a
    count drops below the limit when the row that carried it there (newest first) ages out.
    """
    cool_off = get_cool_off(request)
    if cool_off is None:  # a permanent lockout: no time to give
        return 0
    now = timezone.now()
    limit = get_failure_limit(request, credentials)
    handler = AxesProxyHandler.get_implementation()
    get_attempts = getattr(handler, "get_user_attempts", None)
    if get_attempts is None:  # a handler without rows to read (not the database one)
        return math.ceil(cool_off.total_seconds())
    ends = []
    for attempts in get_attempts(request, credentials):
        total = 0
        for attempt_time, failures in attempts.order_by("-attempt_time").values_list(
            "attempt_time", "failures_since_start"
        ):
            total += failures
            if total >= limit:
                ends.append(attempt_time + cool_off)
                break
    end = max(ends, default=now + cool_off)
    return max(1, math.ceil((end - now).total_seconds()))


def lockout_response(request: HttpRequest, *_args: Any) -> HttpResponse:
    # Axes passes (request, response, credentials) from its sync middleware but (request,
    # credentials) from its async one, which ASGI uses: read the credentials it saved instead.
    credentials = getattr(request, "axes_credentials", None)
    seconds = lockout_seconds(request, credentials)
    next_url = request.POST.get("next") or request.GET.get("next")
    admin_index = reverse("admin:index")
    if not next_url and request.path.startswith(admin_index):
        next_url = admin_index
    context = {
        "locked_out": True,
        "lockout_minutes": math.ceil(seconds / 60) if seconds else None,
        "next": next_url or "",
    }
    response = render(request, "registration/login.html", context, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
