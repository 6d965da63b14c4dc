"""Browser push (Web Push, RFC 8030/8291/8292): VAPID keys, subscriptions, and sending.

Only users with no open socket get a push (``services._maybe_web_push`` decides, after commit);
this module sends it through ``pywebpush`` and keeps the subscription list clean.

Endpoints are URLs a browser's push service hands out, and the worker POSTs to whatever is stored,
so ``notifications.outbound`` checks them twice: when saved (https on the default port, a canonical
host, every address it resolves to public) and when the worker connects (resolved and checked again,
and the socket connects to the checked address, so a name rebound to an inside address gets no
connection). Redirects are never followed. ``RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL`` (a setting, or
the environment variable set to ``1``; off by default) additionally allows ``http://127.0.0.1``,
``http://[::1]`` and ``http://localhost`` on any port, for local push-service fakes in tests: the
web process needs it to accept such endpoints and the worker to send to them. Never in production.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from pywebpush import WebPushException, webpush

from notifications.conf import app_settings

from . import outbound, selectors
from .models import Notification, PushSubscription

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

VAPID_FILE_NAME = "vapid.json"
# Push services accept 4 KiB records; leave room for the encryption overhead and padding.
MAX_PAYLOAD_BYTES = 3000
# How long a push service keeps trying to reach an offline browser.
TTL_SECONDS = 24 * 3600
SEND_TIMEOUT_SECONDS = 10
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")
_ENDPOINT_MAX = PushSubscription._meta.get_field("endpoint").max_length or 1000
_USER_AGENT_MAX = PushSubscription._meta.get_field("user_agent").max_length or 300


class InvalidSubscription(ValueError):
    """The browser's subscription failed validation; ``fields`` maps field names to messages."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items()))
        self.fields = fields


# --- Keys --------------------------------------------------------------------------------------


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url (padding optional); raises ValueError on anything else."""
    if not isinstance(text, str) or not _B64URL.match(text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def vapid_file() -> Path:
    return Path(settings.VAR_DIR) / VAPID_FILE_NAME


def generate_vapid_keypair() -> dict[str, str]:
    """A new P-256 key pair: the public key as browsers want it, the private key as pywebpush does."""
    key = ec.generate_private_key(ec.SECP256R1())
    return {"public_key": _public_b64url(key), "private_key": _private_b64url(key)}


def _public_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(point)


def _private_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))


def _load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A raw 32-byte scalar or DER (base64url), or PEM: the forms people paste into env vars."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        raw = b64url_decode(text.replace("\n", ""))
        if len(raw) == 32:
            return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        key = serialization.load_der_private_key(raw, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 (prime256v1) key")
    return key


def vapid_keys() -> tuple[str, str]:
    """``(public key, private key)``, both base64url: from settings, else from ``VAR_DIR/vapid.json``.

    The public key is derived from the private one, so a mismatched pair is refused here rather than
    every push being rejected by the push services later.
    """
    private_text = app_settings.VAPID_PRIVATE_KEY
    public_text = app_settings.VAPID_PUBLIC_KEY
    source = "RUNBOARD_VAPID_PRIVATE_KEY"
    if not private_text:
        if public_text:
            raise ImproperlyConfigured(
                "RUNBOARD_VAPID_PUBLIC_KEY is set but RUNBOARD_VAPID_PRIVATE_KEY is not; set both."
            )
        path = vapid_file()
        try:
            stored = json.loads(path.read_text())
            private_text, public_text = stored["private_key"], stored.get("public_key", "")
        except FileNotFoundError:
            raise ImproperlyConfigured(
                "Browser push has no VAPID keys: set RUNBOARD_VAPID_PUBLIC_KEY and "
                f"RUNBOARD_VAPID_PRIVATE_KEY, or run `manage.py generate_vapid_keys` (writes {path})."
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImproperlyConfigured(f"{path} is unreadable or malformed: {exc}") from exc
        source = str(path)
    try:
        key = _load_private_key(private_text)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"The VAPID private key from {source} is not usable: {exc}") from exc
    public = _public_b64url(key)
    if public_text and public_text.rstrip("=") != public:
        raise ImproperlyConfigured(f"The VAPID public key does not belong to the private key from {source}.")
    return public, _private_b64url(key)


# --- Subscriptions -----------------------------------------------------------------------------


def insecure_local_allowed() -> bool:
    return bool(app_settings.WEBPUSH_ALLOW_INSECURE_LOCAL) or (
        os.environ.get("RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL") == "1"
    )


def _endpoint_errors(endpoint: Any) -> list[str]:
    if not isinstance(endpoint, str) or not endpoint:
        return ["This field is required."]
    if len(endpoint) > _ENDPOINT_MAX:
        return [f"At most {_ENDPOINT_MAX} characters."]
    try:
        outbound.check_and_resolve(endpoint, allow_local=insecure_local_allowed())
    except outbound.RefusedURL as exc:
        return [str(exc)]
    return []


def _key_errors(value: Any, *, size: int, what: str) -> tuple[bytes | None, list[str]]:
    if not isinstance(value, str) or not value:
        return None, ["This field is required."]
    try:
        raw = b64url_decode(value)
    except ValueError:
        return None, ["Must be base64url."]
    if len(raw) != size:
        return None, [f"Must be {what} ({size} bytes), got {len(raw)} bytes."]
    return raw, []


def validate_subscription(*, endpoint: Any, p256dh: Any, auth: Any) -> tuple[str, str, str]:
    """The normalized ``(endpoint, p256dh, auth)``; raises InvalidSubscription with per-field errors."""
    errors: dict[str, list[str]] = {}
    if messages := _endpoint_errors(endpoint):
        errors["endpoint"] = messages
    point, messages = _key_errors(p256dh, size=65, what="an uncompressed P-256 point")
    if point is not None:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            messages = ["Not a point on the P-256 curve."]
    if messages:
        errors["keys.p256dh"] = messages
    secret, messages = _key_errors(auth, size=16, what="a 16-byte secret")
    if messages:
        errors["keys.auth"] = messages
    if errors:
        raise InvalidSubscription(errors)
    assert point is not None and secret is not None
    return endpoint, b64url_encode(point), b64url_encode(secret)


@transaction.atomic
def subscription_save(
    *, user: User, endpoint: Any, p256dh: Any, auth: Any, user_agent: str = ""
) -> PushSubscription:
    """Store (or refresh) this browser's subscription for ``user``.

    An endpoint is one browser profile. The same endpoint with the same keys under another login is
    that browser changing hands (someone else logged in): it moves to the new user, so the previous
    user's notifications stop showing on a device they no longer use. The same endpoint with other
    keys is refused: only someone who merely learned the URL would send that.
    """
    endpoint, p256dh, auth = validate_subscription(endpoint=endpoint, p256dh=p256dh, auth=auth)
    existing = PushSubscription.objects.select_for_update().filter(endpoint=endpoint).first()
    if existing is not None and existing.user_id != user.pk:
        if (existing.p256dh, existing.auth) != (p256dh, auth):
            raise InvalidSubscription({"endpoint": ["This endpoint is registered with other keys."]})
        logger.info("Push subscription %s moves from user %s to %s", existing.pk, existing.user_id, user.pk)
    user_agent = (user_agent or "")[:_USER_AGENT_MAX]
    if existing is None:
        return PushSubscription.objects.create(
            user=user, endpoint=endpoint, p256dh=p256dh, auth=auth, user_agent=user_agent
        )
    moved = existing.user_id != user.pk
    existing.user = user
    existing.p256dh, existing.auth, existing.user_agent = p256dh, auth, user_agent
    if moved:
        existing.last_success_at = None
    existing.save()
    return existing


@transaction.atomic
def subscription_delete(*, user: User, endpoint: str) -> bool:
    """Forget one of the user's own subscriptions; False if they have none with this endpoint."""
    deleted, _ = PushSubscription.objects.filter(user_id=user.pk, endpoint=endpoint).delete()
    return deleted > 0


def subscriptions_for_user(*, user_id: int) -> list[PushSubscription]:
    return list(PushSubscription.objects.filter(user_id=user_id).order_by("-created_at", "-pk"))


# --- Sending -----------------------------------------------------------------------------------


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _cut_to_fit(payload: dict[str, Any], field: str) -> str:
    """The longest prefix of ``payload[field]`` (plus an ellipsis) that keeps the payload small enough."""
    text = payload[field][:MAX_PAYLOAD_BYTES]
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_encode({**payload, field: text[:middle] + "…"})) <= MAX_PAYLOAD_BYTES:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…" if low else ""


def push_payload(notification: Notification, *, unread_count: int | None = None) -> str:
    """The JSON the service worker shows, cut to fit a push message (the body is cut first)."""
    payload: dict[str, Any] = {
        "title": notification.title,
        "body": notification.body,
        "link": notification.link,
        "level": notification.level,
        "notification_id": notification.pk,
    }
    if unread_count is not None:
        payload["unread_count"] = unread_count
    for field in ("body", "title", "link"):
        if len(_encode(payload)) <= MAX_PAYLOAD_BYTES:
            break
        payload[field] = _cut_to_fit(payload, field)
    return _encode(payload).decode()


def _push_session() -> outbound.PinnedSession:
    # A push service answers directly: the session follows no redirect and dials only checked addresses.
    return outbound.PinnedSession(allow_local=insecure_local_allowed())


def send_for_notification(*, notification_id: int) -> int:
    """Push one notification to each of its recipient's browsers; returns how many accepted it.

    A push service answering 404 or 410 means the subscription is gone: it is deleted. An endpoint
    that is (now) refused by the outbound rules gets no connection and is kept; that and anything
    else that fails is logged and skipped, so one broken browser never stops the others.
    """
    notification = Notification.objects.filter(pk=notification_id).first()
    if notification is None:
        return 0
    subscriptions = subscriptions_for_user(user_id=notification.recipient_id)
    if not subscriptions:
        return 0
    _, private_key = vapid_keys()
    data = push_payload(notification, unread_count=selectors.unread_count(user_id=notification.recipient_id))
    with _push_session() as session:
        return sum(_send_one(session, subscription, data, private_key) for subscription in subscriptions)


def _send_one(
    session: outbound.PinnedSession, subscription: PushSubscription, data: str, private_key: str
) -> bool:
    try:
        # Rows saved before today's rules (or by hand) are checked again; the session checks the address.
        outbound.check_url(subscription.endpoint, allow_local=session.allow_local)
    except outbound.RefusedURL as exc:
        logger.warning("Push to subscription %s refused, no connection made: %s", subscription.pk, exc)
        return False
    try:
        webpush(
            subscription_info={
                "endpoint": subscription.endpoint,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
            },
            data=data,
            vapid_private_key=private_key,
            # A fresh dict each time: pywebpush writes aud and exp into it.
            vapid_claims={"sub": app_settings.VAPID_SUBJECT},
            ttl=TTL_SECONDS,
            timeout=SEND_TIMEOUT_SECONDS,
            headers={"Urgency": "normal"},
            requests_session=session,
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (404, 410):
            PushSubscription.objects.filter(pk=subscription.pk, endpoint=subscription.endpoint).delete()
            logger.info("Push subscription %s is gone (HTTP %s): deleted", subscription.pk, status)
        else:
            logger.warning("Push to subscription %s failed (HTTP %s): %s", subscription.pk, status, exc)
        return False
    except requests.RequestException as exc:
        if refusal := outbound.refusal_of(exc):
            logger.warning(
                "Push to subscription %s refused, no connection made: %s", subscription.pk, refusal
            )
        else:
            logger.warning("Push to subscription %s failed: %s", subscription.pk, exc)
        return False
    except Exception:
        logger.warning("Push to subscription %s failed", subscription.pk, exc_info=True)
        return False
    PushSubscription.objects.filter(pk=subscription.pk).update(last_success_at=timezone.now())
    return True
