"""Notifications over HTTP: list, mark read, mark all read (the same services as the socket).
A router of the one API (``dashboard/api.py``), mounted at ``/api/v1/notifications/``."""

from typing import Annotated, Any, NotRequired, TypedDict

from django.http import HttpRequest, JsonResponse
from ninja import Query, Router
from pydantic import BaseModel, Field, ValidationError, WithJsonSchema

from jobs.api import COMMON, checked, error_response, errors, json_body, read_json, schema_of
from jobs.permissions import signed_in_user

from . import events, inbox, selectors

# Ids are 64-bit; a larger integer would overflow the database driver (a 500, not a 400).
MAX_ID = 2**63 - 1


class NotificationPage(TypedDict):
    results: list[events.NotificationPayload]
    unread_count: int
    next: str | None


class NotificationsRead(TypedDict):
    """The shape of the ``notification.read`` event: ``ids`` marked read, or after "mark all
    read" everything up to ``up_to``."""

    ids: list[int]
    up_to: NotRequired[int]
    unread_count: int


class MarkRead(BaseModel):
    """Your notifications to mark read (others' ids are ignored)."""

    ids: list[Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]]


REQUEST_MODELS: list[type[BaseModel]] = [MarkRead]
INVALID_IDS = {"ids": ["A list of notification ids (integers)."]}

# Query parameters, read by the view itself from ``request.GET``.
LimitQuery = Annotated[
    Any,
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 200}),
    Query(None, description="At most this many (50)"),
]
BeforeQuery = Annotated[
    Any,
    WithJsonSchema({"type": "integer"}),
    Query(None, description="Older than this id (the previous page's `next`)"),
]
UnreadQuery = Annotated[
    Any, WithJsonSchema({"type": "string", "enum": ["1"]}), Query(None, description="1: only unread ones")
]

router = Router(tags=["notifications"])
router.add_decorator(checked)


@router.get("/", response={200: schema_of(NotificationPage), **errors(*COMMON)}, url_name="notification-list",
            summary="Your notifications, newest first, with the unread count")  # fmt: skip
def notification_list(
    request: HttpRequest, limit: LimitQuery, before: BeforeQuery, unread: UnreadQuery
) -> JsonResponse:
    fields: dict[str, list[str]] = {}
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), 200)
    except ValueError:
        fields["limit"] = ["limit must be an integer."]
    try:
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        fields["before"] = ["before must be an integer (a notification id)."]
    if fields:  # each field blamed for itself
        return error_response(400, "Invalid request.", fields)
    user_id = signed_in_user(request).pk
    rows = selectors.notifications_page(
        user_id=user_id,
        before_id=before,
        unread_only=request.GET.get("unread") == "1",
        limit=limit + 1,
    )
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        params = request.GET.copy()
        params["before"] = str(rows[-1].pk)
        next_url = f"{request.path}?{params.urlencode()}"
    return JsonResponse(
        {
            "results": [selectors.notification_payload(n) for n in rows],
            "unread_count": selectors.unread_count(user_id=user_id),
            "next": next_url,
        }
    )


@router.post("/read/", response={200: schema_of(NotificationsRead), **errors(*COMMON, 403, 413)},
             url_name="notification-read", summary="Mark yours read; every open tab hears it",
             openapi_extra=json_body(MarkRead))  # fmt: skip
def notification_read(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request)
    if failure:
        return failure
    try:
        ids = MarkRead.model_validate(body).ids
    except ValidationError:
        return error_response(400, "Invalid request.", INVALID_IDS)
    marked, unread = inbox.notification_mark_read(user_id=signed_in_user(request).pk, ids=ids)
    return JsonResponse({"ids": marked, "unread_count": unread})


@router.post("/read-all/", response={200: schema_of(NotificationsRead), **errors(*COMMON, 403)},
             url_name="notification-read-all",
             summary="Mark all read: every one of yours with an id up to `up_to` is read")  # fmt: skip
def notification_read_all(request: HttpRequest) -> JsonResponse:
    """The shape of the ``notification.read`` event it sends: everything up to ``up_to`` is read."""
    up_to, unread = inbox.notification_mark_all_read(user_id=signed_in_user(request).pk)
    return JsonResponse({"ids": [], "up_to": up_to, "unread_count": unread})
