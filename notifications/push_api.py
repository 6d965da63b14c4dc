"""Browser push over HTTP: the VAPID public key, saving and removing this browser's subscription (a
router of the one API, ``dashboard/api.py``, at ``/api/v1/push/``), and the service worker script
(served from the site root so it may control every page)."""

from pathlib import Path
from typing import TypedDict

from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from ninja import Router
from pydantic import BaseModel, Field, ValidationError

from jobs.api import COMMON, checked, error_response, errors, json_body, read_json, schema_of
from jobs.permissions import signed_in_user

from . import webpush
from .models import PushSubscription

SERVICE_WORKER = "frontend/sw.js"
MAX_BODY = 8 * 1024  # a subscription is well under 1 KiB


class SubscriptionPayload(TypedDict):
    endpoint: str
    user_agent: str
    created_at: str
    last_success_at: str | None


class SubscriptionList(TypedDict):
    results: list[SubscriptionPayload]


class VapidKey(TypedDict):
    public_key: str


class Deleted(TypedDict):
    deleted: bool


class SubscriptionKeys(BaseModel):
    p256dh: str
    auth: str


class SubscriptionIn(BaseModel):
    """This browser's ``PushSubscription.toJSON()``: an https push service on the internet
    (docs/api.md, "Push endpoint rules")."""

    endpoint: str
    keys: SubscriptionKeys


class Unsubscribe(BaseModel):
    endpoint: str = Field(strict=True, min_length=1)


REQUEST_MODELS: list[type[BaseModel]] = [SubscriptionIn, Unsubscribe]

router = Router(tags=["push"])
router.add_decorator(checked)


def _subscription_payload(subscription: PushSubscription) -> SubscriptionPayload:
    return {
        "endpoint": subscription.endpoint,
        "user_agent": subscription.user_agent,
        "created_at": subscription.created_at.isoformat(),
        "last_success_at": subscription.last_success_at.isoformat() if subscription.last_success_at else None,
    }


@router.get("/vapid-public-key/", response={200: schema_of(VapidKey), **errors(*COMMON, 503)},
            url_name="vapid-public-key",
            summary="The key a browser subscribes with (503 when push is not set up)")  # fmt: skip
def vapid_public_key(request: HttpRequest) -> JsonResponse:
    try:
        public_key, _ = webpush.vapid_keys()
    except ImproperlyConfigured:
        return error_response(503, "Browser push is not configured on this server.")
    return JsonResponse({"public_key": public_key})


@router.get("/subscriptions/", response={200: schema_of(SubscriptionList), **errors(*COMMON)},
            url_name="subscriptions", summary="Your browsers' subscriptions")  # fmt: skip
def subscription_list(request: HttpRequest) -> JsonResponse:
    subscriptions = webpush.subscriptions_for_user(user_id=signed_in_user(request).pk)
    return JsonResponse({"results": [_subscription_payload(s) for s in subscriptions]})


@router.post("/subscriptions/", response={201: schema_of(SubscriptionPayload), **errors(*COMMON, 403, 413)},
             url_name="subscriptions", summary="Save this browser's subscription",
             openapi_extra=json_body(SubscriptionIn))  # fmt: skip
def subscription_create(request: HttpRequest) -> HttpResponse:
    body, failure = read_json(request, max_bytes=MAX_BODY)
    if failure:
        return failure
    if not isinstance(body, dict):
        return error_response(400, "Expected a PushSubscription as JSON: {endpoint, keys: {p256dh, auth}}.")
    keys = body.get("keys")
    if not isinstance(keys, dict):
        keys = {}
    try:
        subscription = webpush.subscription_save(
            user=signed_in_user(request),
            endpoint=body.get("endpoint"),
            p256dh=keys.get("p256dh"),
            auth=keys.get("auth"),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except webpush.InvalidSubscription as exc:
        return error_response(400, "Invalid subscription.", exc.fields)
    return JsonResponse(_subscription_payload(subscription), status=201)


@router.post("/subscriptions/delete/", response={200: schema_of(Deleted), **errors(*COMMON, 403, 404, 413)},
             url_name="subscription-delete", summary="Unsubscribe a browser (404 if not yours)",
             openapi_extra=json_body(Unsubscribe))  # fmt: skip
def subscription_delete(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request, max_bytes=MAX_BODY)
    if failure:
        return failure
    try:
        endpoint = Unsubscribe.model_validate(body).endpoint
    except ValidationError:
        return error_response(400, "Invalid request.", {"endpoint": ["This field is required."]})
    if not webpush.subscription_delete(user=signed_in_user(request), endpoint=endpoint):
        return error_response(404, "No such subscription.")
    return JsonResponse({"deleted": True})


@require_safe
def service_worker(request: HttpRequest) -> HttpResponse:
    path = finders.find(SERVICE_WORKER)
    if not path:
        raise Http404("No service worker.")
    response = HttpResponse(Path(path).read_bytes(), content_type="application/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    # Browsers check for a new worker on navigation; let them always see the current one.
    response["Cache-Control"] = "no-cache"
    return response
