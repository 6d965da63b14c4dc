"""Who is on the other end of a WebSocket: a browser session behind the Origin check, or a
script with a personal access token; and the credential the socket is bound to
(``scope["credential"]``, see credentials.py)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from dashboard.db import database_sync_to_async
from dashboard.throttle.address import scope_address
from dashboard.throttle.asgi import websocket_refuse_throttled
from dashboard.throttle.tokens import TokenThrottled, token_attempt

from .credentials import origin_trusted, scope_headers, session_sign_in, token_sign_in


class SocketAuthMiddleware:
    """``Authorization: Bearer <token>`` wins over the session; a bad token means anonymous, and
    too many from one address an HTTP 429 handshake (dashboard/throttle).
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
        headers = scope_headers(scope)
        header = headers.get("authorization")
        # Only a Bearer token signs in; another scheme (Basic from a proxy in front) is not ours.
        if header is not None and header.partition(" ")[0].lower() == "bearer":
            scheme, _, raw = header.partition(" ")
            try:
                signed_in = (
                    await database_sync_to_async(token_attempt)(
                        raw.strip(), address=scope_address(scope), sign_in=token_sign_in
                    )
                    if scheme.lower() == "bearer"
                    else None
                )
            except TokenThrottled as throttled:
                return await websocket_refuse_throttled(scope, receive, send, throttled)
            scope = dict(
                scope,
                user=signed_in[0] if signed_in is not None else AnonymousUser(),
                auth_method="token",
                credential=signed_in[1] if signed_in is not None else None,
            )
        else:
            cookie = headers.get("cookie")
            key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None
            scope = dict(scope, session=self.session_store(key), auth_method="session")
            scope["user"], scope["credential"] = await database_sync_to_async(session_sign_in)(scope)
            # Keep the key, not the loaded data: the socket lives for hours and needs no more.
            scope["session"] = self.session_store(scope["session"].session_key)
        return await self.inner(scope, receive, send)


class OriginOrTokenValidator:
    """A browser always sends Origin on a WebSocket handshake, and it must be one Django's CSRF
    check trusts for this request (scheme + host + port, or ``CSRF_TRUSTED_ORIGINS``): no
    cross-site WebSocket hijacking. A handshake without Origin is not a browser's: it may only
    authenticate with a token. Refused handshakes get HTTP 403."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = scope_headers(scope)
        bearer = headers.get("authorization", "").partition(" ")[0].lower() == "bearer"
        if "origin" not in headers and bearer:
            return await self.application(scope, receive, send)
        if origin_trusted(headers=headers, scheme=scope.get("scheme", "ws"), server=scope.get("server")):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def RealtimeAuthStack(inner: Any) -> Any:
    return OriginOrTokenValidator(SocketAuthMiddleware(inner))
