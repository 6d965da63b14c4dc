"""Who is on the other end of a WebSocket: a browser session behind the Origin check, or a
script with a personal access token."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from jobs.tokens import token_authenticate


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


class SocketAuthMiddleware:
    """``Authorization: Bearer <token>`` wins over the session; a bad token means anonymous.
    Otherwise the session cookie, checked as Django's own middleware checks it (session, user,
    session hash: ``channels.auth.get_user``), in one database call.

    It stands in for Channels' AuthMiddlewareStack, which wraps ``send`` to save the session on
    HTTP responses a socket never makes, looking at the session on every frame sent (a tenth of a
    relayed frame's server CPU), and keeps three more middleware frames and scope copies alive
    per socket. Here ``scope["user"]`` is the user itself and ``scope["session"]`` (session
    sign-ins only) a session store for the checked session's key (logout closes its sockets)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

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
            cookie = _header(scope, b"cookie")
            key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None
            scope = dict(scope, session=self.session_store(key), auth_method="session")
            scope["user"] = await get_user(scope)
            # Keep the key, not the loaded data: the socket lives for hours and needs no more.
            scope["session"] = self.session_store(scope["session"].session_key)
        return await self.inner(scope, receive, send)


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
    return OriginOrTokenValidator(SocketAuthMiddleware(inner), allowed_hosts())
