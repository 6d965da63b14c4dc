"""Personal access tokens: created shown once, stored as a SHA-256 digest, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import AccessToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOKEN_PREFIX = "rb_"


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, user: User, name: str, expires_in_days: float | None = None) -> tuple[AccessToken, str]:
    """Returns the token row and the raw token, which is never stored and shown only now."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AccessToken.objects.create(
        user=user,
        name=name.strip()[:100] or "token",
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        digest=_digest(raw),
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    return token, raw


def token_revoke(*, user: User, token_id: int) -> bool:
    deleted, _ = AccessToken.objects.filter(pk=token_id, user=user).delete()
    return bool(deleted)


def token_list(*, user: User) -> QuerySet[AccessToken]:
    return AccessToken.objects.filter(user=user)


def token_authenticate(raw: str) -> User | None:
    """The active user a raw token belongs to, or None (unknown, expired or inactive)."""
    token = token_lookup(raw)
    return token.user if token is not None else None


def token_lookup(raw: str) -> AccessToken | None:
    """The live token (its ``user`` loaded and active) a raw token is, or None (unknown, expired,
    or its user inactive). Marks it used, at most once a minute."""
    if not raw.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    token = (
        AccessToken.objects.select_related("user")
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), digest=_digest(raw))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
