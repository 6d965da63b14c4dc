"""What a live connection (WebSocket or SSE stream) was opened with, and whether that still holds.

A connection is bound to its credential (a session key, or a personal access token's id) and to
the privileges it was granted at open. When either ends or changes, the connection must close
(docs/protocol.md, *Close codes*; design.md §5b): ``credential_problems`` is the one check, run
by the services that end credentials (through the signal receivers), at a credential's own
expiry instant, and at every heartbeat as the safety net.

Origin: ``origin_trusted`` is the one decision for both transports, and it is Django's own CSRF
origin check (``CsrfViewMiddleware``), so a socket trusts exactly the origins a form POST would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import TYPE_CHECKING, Any

from channels.auth import get_user as channels_get_user
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from jobs.models import AccessToken
from jobs.permissions import Power, powers_of, powers_of_users
from jobs.tokens import token_lookup

from . import events

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@dataclass(frozen=True, slots=True)
class Credential:
    """One connection's credential: exactly one of ``session_key`` and ``token_id`` is set.

    ``auth_hash`` is the session's auth hash at open (Django's ``get_session_auth_hash``: it
    changes with the password), ``privileges`` a short fingerprint of what the user was granted
    (see ``privileges_of``), ``expires_at`` when the credential itself ends (epoch seconds, or
    None for never)."""

    user_id: int
    session_key: str = ""
    token_id: int | None = None
    auth_hash: str = ""
    privileges: str = ""
    expires_at: float | None = None
    powers: frozenset[Power] = frozenset()

    @property
    def kind(self) -> str:
        return "token" if self.token_id is not None else "session"


def privileges_of(user: Any, powers: frozenset[Power] | None = None) -> str:
    """What a connection was granted, as a short string: the active, staff and superuser flags
    and the operator powers held (``powers``, or read now: queries, so sync code only).

    Group and permission changes close a user's connections directly (``m2m_changed``); a change
    of a flag closes them through the user's ``post_save``; the heartbeat's re-check compares
    this string, so a change made behind the services' back closes them too."""
    if powers is None:
        powers = powers_of(user)
    flags = (user.is_active, user.is_staff, getattr(user, "is_superuser", False))
    held = "".join(str(i) for i, power in enumerate(Power) if power in powers)
    return "a{:d}s{:d}u{:d}".format(*(bool(flag) for flag in flags)) + (f"p{held}" if held else "")


def session_credential(user: User, session_key: str) -> Credential:
    """The credential of a connection signed in with the session ``session_key`` (sync: reads
    the user's powers; the session's expiry is read when the connection is recorded, see
    ``session_expiry``)."""
    powers = powers_of(user)
    return Credential(
        user_id=user.pk,
        session_key=session_key,
        auth_hash=user.get_session_auth_hash(),
        privileges=privileges_of(user, powers),
        powers=powers,
    )


def session_sign_in(scope: dict[str, Any]) -> tuple[Any, Credential | None]:
    """The user of ``scope["session"]`` checked as Channels' ``get_user`` checks it (session,
    user, session auth hash), and, if signed in, their credential (``session_credential``): one
    trip to the database thread for a connect's sign-in, not two (sync)."""
    user = channels_get_user.func(scope)  # the sync body of channels.auth.get_user
    key = scope["session"].session_key
    if not user.is_authenticated or not key:
        return user, None
    return user, session_credential(user, key)


def token_sign_in(raw: str) -> tuple[User, Credential] | None:
    """The user and credential of a raw personal access token, or None (sync)."""
    token = token_lookup(raw)
    if token is None:
        return None
    powers = powers_of(token.user)
    credential = Credential(
        user_id=token.user_id,
        token_id=token.pk,
        privileges=privileges_of(token.user, powers),
        expires_at=token.expires_at.timestamp() if token.expires_at else None,
        powers=powers,
    )
    return token.user, credential


def connection_groups(credential: Credential) -> list[str]:
    """The groups a connection with this credential joins, on every transport."""
    return events.groups_for(
        credential.user_id,
        all_jobs=Power.VIEW_ALL_JOBS in credential.powers,
        all_results=Power.VIEW_ALL_RESULTS in credential.powers,
    )


def _session_backend_is_db() -> bool:
    return settings.SESSION_ENGINE in {
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cached_db",
    }


def session_expiry(session_key: str) -> float | None:
    """When the session ends (epoch seconds), as its row says; None on backends without rows."""
    if not session_key or not _session_backend_is_db():
        return None
    expire = Session.objects.filter(session_key=session_key).values_list("expire_date", flat=True).first()
    return expire.timestamp() if expire is not None else 0.0


def credential_problems(credentials: Mapping[str, Credential]) -> dict[str, int]:
    """The connections (by channel name) whose credential ended or changed, each with its close
    code: 4401 the session or token ended, expired or the password changed; 4403 the user was
    deactivated or deleted; 4412 the user's privileges changed. At most four queries (three without
    tokens), however many connections are checked."""
    return _checked(credentials)[0]


def credential_check(channel_name: str, credential: Credential) -> tuple[int | None, float | None]:
    """One connection's ``credential_problems`` (its close code or None) and when its credential
    ends (epoch seconds; None: never, or a session backend without rows), in the same three or
    four queries: a connect's re-check reads the session's end in the row it checks."""
    problems, session_ends = _checked({channel_name: credential})
    if credential.token_id is not None:
        return problems.get(channel_name), credential.expires_at
    if not _session_backend_is_db():
        return problems.get(channel_name), None
    return problems.get(channel_name), session_ends.get(credential.session_key, 0.0)


def _checked(credentials: Mapping[str, Credential]) -> tuple[dict[str, int], dict[str, float]]:
    """``credential_problems``, and the end (epoch seconds) of each live session read."""
    if not credentials:
        return {}, {}
    now = timezone.now()
    users = {
        user.pk: user
        for user in get_user_model().objects.filter(pk__in={c.user_id for c in credentials.values()})
    }
    token_ids = {c.token_id for c in credentials.values() if c.token_id is not None}
    live_tokens = set(
        AccessToken.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now), pk__in=token_ids
        ).values_list("pk", flat=True)
        if token_ids
        else ()
    )
    session_keys = {c.session_key for c in credentials.values() if c.session_key}
    live_sessions = _live_sessions(session_keys, now)
    powers = powers_of_users(users.values())
    problems: dict[str, int] = {}
    for name, credential in credentials.items():
        user = users.get(credential.user_id)
        if user is None or not user.is_active:
            problems[name] = events.CLOSE_FORBIDDEN
        elif not _credential_live(credential, user, live_tokens, live_sessions):
            problems[name] = events.CLOSE_NOT_AUTHENTICATED
        elif privileges_of(user, powers.get(user.pk, frozenset())) != credential.privileges:
            problems[name] = events.CLOSE_PRIVILEGES_CHANGED
    return problems, {key: end for key, end in live_sessions.items() if end is not None}


def _credential_live(
    credential: Credential, user: Any, live_tokens: set[int], live_sessions: Mapping[str, float | None]
) -> bool:
    if credential.token_id is not None:
        return credential.token_id in live_tokens
    # A password change changes the session auth hash, which ends the session's sign-in.
    return credential.session_key in live_sessions and user.get_session_auth_hash() == credential.auth_hash


def _live_sessions(keys: Iterable[str], now: datetime) -> dict[str, float | None]:
    """The live ones of session ``keys``, each with its end (epoch seconds; None on backends
    without rows)."""
    keys = set(keys)
    if not keys:
        return {}
    if _session_backend_is_db():
        rows = Session.objects.filter(session_key__in=keys, expire_date__gt=now).values_list(
            "session_key", "expire_date"
        )
        return {key: expire.timestamp() for key, expire in rows}
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return {key: None for key in keys if store().exists(key)}


# --- Origin --------------------------------------------------------------------------------------


class _HandshakeRequest(HttpRequest):
    """Just enough of a request for Django's CSRF origin check: headers, and the scheme the
    connection came in on (``SECURE_PROXY_SSL_HEADER`` is honoured by ``HttpRequest.scheme``)."""

    def __init__(self, headers: Mapping[str, str], scheme: str, server: tuple[str, int] | None) -> None:
        super().__init__()
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            self.META[key if key in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{key}"] = value
        if server is not None:
            self.META["SERVER_NAME"], self.META["SERVER_PORT"] = str(server[0]), str(server[1])
        self._connection_scheme = scheme

    def _get_scheme(self) -> str:
        return self._connection_scheme


def _csrf_check() -> CsrfViewMiddleware:
    # get_response is never called: only the middleware's origin check is used.
    return CsrfViewMiddleware(lambda request: HttpResponse())


def origin_trusted(*, headers: Mapping[str, str], scheme: str, server: tuple[str, int] | None = None) -> bool:
    """Whether the request's ``Origin`` header names an origin Django's CSRF check trusts for this
    request: scheme + host + port equal to the request's own (``Host`` validated against
    ``ALLOWED_HOSTS``), or listed in ``CSRF_TRUSTED_ORIGINS``. A missing or ``null`` Origin is
    never trusted. ``headers`` are lower-case names; ``scheme`` is ``http``/``https`` (``ws`` and
    ``wss`` are taken as those)."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return False
    request = _HandshakeRequest(headers, {"ws": "http", "wss": "https"}.get(scheme, scheme), server)
    # A private method of Django's (the CSRF check's origin rule), absent from django-stubs.
    return bool(_csrf_check()._origin_verified(request))  # type: ignore[attr-defined]


def scope_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as a dict of lower-case names (the last value of a repeated one)."""
    return {key.decode("latin1").lower(): value.decode("latin1") for key, value in scope.get("headers", [])}
