"""Who is on the other end of a WebSocket: a browser session behind the Origin check, or a
script with a personal access token."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from jobs.tokens import token_authenticate


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


class TokenAuthMiddleware(BaseMiddleware):
    """``Authorization: Bearer <token>`` wins over the session; a bad token means anonymous."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        header = _header(scope, b"authorization")
        if header is not None:
            scheme, _, raw = header.partition(" ")
            user = (
                await database_sync_to_async(token_authenticate)(raw.strip())
                if scheme.lower() == "bearer"
                else None
            )
            scope = dict(scope, user=user or AnonymousUser(), auth_method="token")
        else:
            scope = dict(scope, auth_method="session")
        return await super().__call__(scope, receive, send)


class OriginOrTokenValidator(OriginValidator):
    """A browser always sends Origin, and it must be ours (no cross-site WebSocket hijacking).
    A request without Origin is not a browser: it may only authenticate with a token."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if _header(scope, b"origin") is None and _header(scope, b"authorization") is not None:
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)


def allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = ["localhost", "127.0.0.1", "[::1]"]
    return hosts


def RealtimeAuthStack(inner: Any) -> Any:
    return OriginOrTokenValidator(AuthMiddlewareStack(TokenAuthMiddleware(inner)), allowed_hosts())
