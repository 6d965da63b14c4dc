"""Notifications over HTTP: list, mark read, mark all read (the same services as the socket)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from jobs.api import api_view, error_response, read_json

from . import selectors, services

# Ids are 64-bit; a larger integer would overflow the database driver (a 500, not a 400).
MAX_ID = 2**63 - 1


@api_view("GET")
def notification_list(request: HttpRequest) -> JsonResponse:
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        return error_response(400, "Invalid request.", {"limit": ["limit and before must be integers."]})
    rows = selectors.notifications_page(
        user_id=request.user.pk,
        before_id=before,
        unread_only=request.GET.get("unread") == "1",
        limit=limit + 1,
    )
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        query = request.GET.copy()
        query["before"] = str(rows[-1].pk)
        next_url = f"{request.path}?{query.urlencode()}"
    return JsonResponse(
        {
            "results": [selectors.notification_payload(n) for n in rows],
            "unread_count": selectors.unread_count(user_id=request.user.pk),
            "next": next_url,
        }
    )


@api_view("POST")
def notification_read(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request)
    if failure:
        return failure
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= MAX_ID for i in ids
    ):
        return error_response(400, "Invalid request.", {"ids": ["A list of notification ids (integers)."]})
    marked, unread = services.notification_mark_read(user_id=request.user.pk, ids=ids)
    return JsonResponse({"ids": marked, "unread_count": unread})


@api_view("POST")
def notification_read_all(request: HttpRequest) -> JsonResponse:
    """The shape of the ``notification.read`` event it sends: everything up to ``up_to`` is read."""
    up_to, unread = services.notification_mark_all_read(user_id=request.user.pk)
    return JsonResponse({"ids": [], "up_to": up_to, "unread_count": unread})
