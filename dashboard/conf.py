"""Settings read only by dashboard/ (the project package), each with its default, type and
meaning (issue 13). Settings the apps read live in ``jobs.conf`` and ``notifications.conf``.

Read them as ``app_settings.NAME``: each is a ``Setting`` (declared once: its default, which
gives its type, and its meaning) that reads the Django setting ``RUNBOARD_<NAME>`` when accessed
(so ``override_settings`` works), or falls back to the default, so the app runs in a project whose
settings define none of them. Runboard's own settings set one only when the environment variable
of the same name is set (``settings_from_environment``). docs/settings.md lists them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class Setting(Generic[T]):
    """One ``RUNBOARD_<NAME>`` setting, declared once: its default (which also gives its type) and
    a one-line meaning. Read on an instance (``app_settings.NAME``) it is the Django setting, or
    the default when the project defines none, converted to the default's type; read at access
    time, so ``override_settings`` works. Read on the class it is this declaration, which
    ``settings_from_environment`` uses to parse the environment without repeating a default."""

    def __init__(self, default: T, doc: str) -> None:
        self.default = default
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def setting(self) -> str:
        return f"RUNBOARD_{self.name}"

    @property
    def kind(self) -> str:
        """The type, as docs/settings.md shows it."""
        if isinstance(self.default, list):
            return "list[str]"
        return "Path" if isinstance(self.default, Path) else type(self.default).__name__

    def convert(self, value: Any) -> T:
        if isinstance(self.default, Path):
            return Path(value)  # type: ignore[return-value]  # T is Path here
        return type(self.default)(value)  # type: ignore[call-arg]  # float("1"), list(("a",)), …

    def problem(self, value: T) -> str | None:
        """Why an environment's value cannot be meant, or None: counts, sizes and seconds are
        finite and not negative (``nan``, ``inf`` or ``-1`` would stop the reaper or the
        coalescing quietly); a path is not empty (it would be the working directory)."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
            return f"{value!r} is not a finite number of at least 0"
        if isinstance(value, Path) and str(value) in ("", "."):
            return "an empty path would be the working directory"
        return None

    @overload
    def __get__(self, instance: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> T: ...

    def __get__(self, instance: object | None, owner: type) -> Setting[T] | T:
        if instance is None:
            return self
        return self.convert(getattr(settings, self.setting, self.default))


def declared_settings(*holders: type) -> dict[str, Setting[Any]]:
    """``RUNBOARD_<NAME>`` -> its declaration, for every Setting of the given settings classes."""
    return {
        value.setting: value
        for holder in holders
        for value in vars(holder).values()
        if isinstance(value, Setting)
    }


def settings_from_environment(
    environ: Mapping[str, str], read: Mapping[str, Callable[[str], Any]], *holders: type
) -> dict[str, Any]:
    """The ``RUNBOARD_*`` Django settings a project's settings module should set: one per declared
    setting whose environment variable of the same name is set, parsed by ``read[kind]`` (e.g.
    django-environ's ``env.float``, which raises on a bad value). An unset variable sets nothing,
    so the declared default applies: defaults are written only in the conf modules."""
    values = {}
    for name, declaration in declared_settings(*holders).items():
        if name in environ:
            value = declaration.convert(read[declaration.kind](name))
            problem = declaration.problem(value)
            if problem:
                raise ImproperlyConfigured(f"Environment variable {name}: {problem}")
            values[name] = value
    return values


# Environment variables named RUNBOARD_* that are not Django settings: dashboard/settings/ reads
# them to build other settings, and nothing reads them through django.conf.settings.
ENVIRONMENT_ONLY = {
    "RUNBOARD_VAR_DIR": (
        "Directory of local state (SQLite, uploads, results, VAPID keys); default var/ in the checkout."
    ),
    "RUNBOARD_LOGIN_FAILURE_LIMIT": (
        "Sets AXES_FAILURE_LIMIT: failed sign-ins per account and per address (default 10)."
    ),
    "RUNBOARD_LOGIN_COOLOFF": "Sets AXES_COOLOFF_TIME: seconds a sign-in lockout lasts (default 900).",
}


class DashboardSettings:
    """``RUNBOARD_*`` settings read only by dashboard/: HTTP limits, token throttling, the sockets'
    database connection, metrics."""

    # --- HTTP limits (dashboard/http_limits.py; docs/operations.md "HTTP limits") ----------------
    HTTP_HEADER_TIMEOUT = Setting(
        10.0, "Seconds from a connection's opening (or a request's first byte) to its headers' end; then 408."
    )

    HTTP_MAX_HEADER_BYTES = Setting(
        65536, "Bytes of request line and headers, then 431 (64 KiB: twice nginx's default 4 x 8 KiB)."
    )

    HTTP_BODY_TIMEOUT = Setting(
        15.0, "Seconds a request body may take, plus the rate allowance; then 408 (mod_reqtimeout's body=15)."
    )

    HTTP_BODY_MIN_RATE = Setting(
        16 * 1024,
        "Bytes per second: each this many body bytes earn 1 s more (mod_reqtimeout's MinRate=16384).",
    )

    HTTP_WRITE_STALL_TIMEOUT = Setting(
        60.0, "Seconds a client may leave a response (SSE stream, download) unread before it is disconnected."
    )

    HTTP_MAX_PENDING_PER_CLIENT = Setting(
        32, "Connections per client address (IPv6: /64) still sending their first headers; more get 503."
    )

    # --- Bearer-token throttling (dashboard/throttle/tokens.py) ----------------------------------
    TOKEN_FAILURE_LIMIT = Setting(
        20, "Failed bearer tokens per client address, each within the cool-off of the last, to pause it."
    )

    TOKEN_COOLOFF = Setting(
        900.0,
        "Seconds: how long a token pause lasts after the last failure (and the window between failures).",
    )

    # --- Database (dashboard/db.py; docs/operations.md "Database connections") ---------------------
    SOCKET_DB_CONN_MAX_AGE = Setting(
        60.0,
        "Seconds the sockets' shared database thread reuses its connection (one per web process), "
        "replaced by the first call after; 0: a connection per call, as every other thread.",
    )

    # --- Metrics (dashboard/health.py) -----------------------------------------------------------
    METRICS_TOKEN = Setting(
        "", "Bearer token that may read /metrics; empty: bearer access off (unless the env var is set)."
    )


app_settings = DashboardSettings()
