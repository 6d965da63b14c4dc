"""Failed bearer tokens, counted per client address in the database (so every web process sees
the same count): ``RUNBOARD_TOKEN_FAILURE_LIMIT`` failures, each within
``RUNBOARD_TOKEN_COOLOFF`` seconds of the previous one, pause that address for the cool-off.
While paused, tokens from it are refused without being looked up (and without counting, so the
pause ends on time): a valid token then gets no other answer than a guess, so there is nothing to
learn. Every bearer sign-in (the API, the WebSocket, SSE) goes through ``token_attempt``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dashboard.conf import app_settings

from .address import client_address
from .models import TokenFailure

UNKNOWN_ADDRESS = "unknown"
T = TypeVar("T")


class TokenThrottled(Exception):
    """Too many failed tokens from this client address: answer 429 with ``Retry-After``."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        return f"Too many failed token attempts from your address: try again in {self.retry_after} seconds."


def _key(address: str | None) -> str:
    return address or UNKNOWN_ADDRESS


def _cool_off() -> timedelta:
    return timedelta(seconds=app_settings.TOKEN_COOLOFF)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def token_pause_remaining(*, address: str | None) -> int:
    """Seconds left of ``address``'s pause for failed tokens; 0 if it is not paused."""
    now = timezone.now()
    last = (
        TokenFailure.objects.filter(
            address=_key(address),
            failures__gte=app_settings.TOKEN_FAILURE_LIMIT,
            last_failure_at__gt=now - _cool_off(),
        )
        .values_list("last_failure_at", flat=True)
        .first()
    )
    return _seconds_until(last + _cool_off(), now) if last is not None else 0


@transaction.atomic
def token_failure_record(*, address: str | None) -> int:
    """Count one failed token from ``address``; returns the seconds it is now paused for (0 while
    under the limit)."""
    now = timezone.now()
    cool_off = _cool_off()
    # Counts end a cool-off after their last failure (this one included, for its own address).
    TokenFailure.objects.filter(last_failure_at__lte=now - cool_off).delete()
    row, created = TokenFailure.objects.select_for_update().get_or_create(
        address=_key(address), defaults={"failures": 1, "last_failure_at": now}
    )
    failures = 1
    if not created:
        # The row is locked (PostgreSQL) or the whole write transaction is (SQLite's IMMEDIATE
        # mode): nobody else counted in between.
        TokenFailure.objects.filter(pk=row.pk).update(failures=F("failures") + 1, last_failure_at=now)
        failures = row.failures + 1
    if failures >= app_settings.TOKEN_FAILURE_LIMIT:
        return _seconds_until(now + cool_off, now)
    return 0


def token_failures_reset(*, addresses: Iterable[str] | None = None) -> int:
    """Forget the failed tokens of ``addresses`` (as typed: an IPv6 address stands for its /64),
    or of every address; returns how many addresses were forgotten."""
    rows = TokenFailure.objects.all()
    if addresses is not None:
        rows = rows.filter(address__in=[client_address(a) or a for a in addresses])
    deleted, _ = rows.delete()
    return deleted


def token_attempt(raw: str, *, address: str | None, sign_in: Callable[[str], T | None]) -> T | None:
    """``sign_in(raw)`` for a client at ``address`` (sync; one database thread hop from async code):
    a None counts as a failed token, and an address with too many gets TokenThrottled, before
    anything is looked up while its pause lasts."""
    if paused := token_pause_remaining(address=address):
        raise TokenThrottled(paused)
    signed_in = sign_in(raw)
    if signed_in is None and (paused := token_failure_record(address=address)):
        raise TokenThrottled(paused)
    return signed_in
