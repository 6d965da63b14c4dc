"""Browser push over HTTP: the VAPID public key, saving and removing this browser's subscription, and
the service worker script (served from the site root so it may control every page)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from jobs.api import api_view, error_response, read_json

from . import webpush
from .models import PushSubscription

SERVICE_WORKER = "frontend/sw.js"
MAX_BODY = 8 * 1024  # a subscription is well under 1 KiB


def _subscription_payload(subscription: PushSubscription) -> dict[str, object]:
    return {
        "endpoint": subscription.endpoint,
        "user_agent": subscription.user_agent,
        "created_at": subscription.created_at.isoformat(),
        "last_success_at": subscription.last_success_at.isoformat() if subscription.last_success_at else None,
    }


@api_view("GET")
def vapid_public_key(request: HttpRequest) -> JsonResponse:
    try:
        public_key, _ = webpush.vapid_keys()
    except ImproperlyConfigured:
        return error_response(503, "Browser push is not configured on this server.")
    return JsonResponse({"public_key": public_key})


@api_view("GET", "POST")
def subscription_collection(request: HttpRequest) -> HttpResponse:
    """GET: this user's browsers. POST: a browser's ``PushSubscription.toJSON()``."""
    if request.method == "GET":
        subscriptions = webpush.subscriptions_for_user(user_id=request.user.pk)
        return JsonResponse({"results": [_subscription_payload(s) for s in subscriptions]})
    body, failure = read_json(request, max_bytes=MAX_BODY)
    if failure:
        return failure
    if not isinstance(body, dict):
        return error_response(400, "Expected a PushSubscription as JSON: {endpoint, keys: {p256dh, auth}}.")
    keys = body.get("keys") if isinstance(body.get("keys"), dict) else {}
    try:
        subscription = webpush.subscription_save(
            user=request.user,
            endpoint=body.get("endpoint"),
            p256dh=keys.get("p256dh"),
            auth=keys.get("auth"),
            user_agent=request.headers.get("User-Agent", ""),
        )
    except webpush.InvalidSubscription as exc:
        return error_response(400, "Invalid subscription.", exc.fields)
    return JsonResponse(_subscription_payload(subscription), status=201)


@api_view("POST")
def subscription_delete(request: HttpRequest) -> JsonResponse:
    body, failure = read_json(request, max_bytes=MAX_BODY)
    if failure:
        return failure
    endpoint = body.get("endpoint") if isinstance(body, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        return error_response(400, "Invalid request.", {"endpoint": ["This field is required."]})
    if not webpush.subscription_delete(user=request.user, endpoint=endpoint):
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
