"""The one registry of job kinds. A kind is a module (or package) in this package, or an installed
app's ``jobkinds`` module, that calls ``register``."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules
from pydantic import BaseModel, ValidationError

from jobs.conf import app_settings

from ..context import KindContext
from ..models import LABEL_MAX
from ..permissions import Power, has_power
from ..retries import NO_RETRY, RetryPolicy
from ..units import DEFAULT_UNIT, UNIT_PATTERN

logger = logging.getLogger(__name__)


class UnknownKind(LookupError):
    """No kind is registered under that name."""


class InvalidParams(ValueError):
    """Parameters failed validation; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class JobKind:
    """Everything Runboard needs to offer, validate, run and show one kind of job.

    ``run(ctx, params)`` does the work and returns a JSON-serializable result. A parallel kind
    instead returns ``ctx.split(chunks)``; each chunk then runs ``run_chunk(ctx, params, chunk)``
    in its own Celery task (on any worker) and ``combine(params, results)`` makes the job's result.

    The result is stored whole (at most RUNBOARD_RESULT_MAX_BYTES of JSON, else the job fails)
    and served only by reference; payloads carry a summary of at most 768 bytes instead:
    ``summarize(result)`` when given (cut to fit all the same: put the telling keys first), else
    the start of the result.
    ``result_items`` names the list in the result that ``GET /api/v1/jobs/<id>/result/`` pages
    through (``?offset=&limit=``), for kinds whose results can be long.
    """

    name: str
    title: str
    description: str
    params_model: type[BaseModel]
    run: Callable[[KindContext, Any], Any]
    soft_time_limit: int = 300
    time_limit: int = 330
    queue: str = "default"
    # Safe to run again from the start if its worker was lost mid-way (the reaper re-queues it).
    rerun_safe: bool = False
    # Which failed attempts are retried, and when (jobs/retries.py). Default: none. A parallel
    # kind (run_chunk) cannot retry: a failed chunk ends its job.
    retry: RetryPolicy = NO_RETRY
    # Launching it takes a power (jobs/permissions.py): ``power`` if set, else, for an admin_only
    # kind, "launch staff-only kinds".
    admin_only: bool = False
    power: str | None = None
    # Running jobs of this kind per user (None: only the global RUNBOARD_MAX_RUNNING_PER_USER).
    max_running_per_user: int | None = None
    # Admission priority (jobs.admission): among users equally served, one whose waiting job has
    # a higher priority goes first, and a user's own waiting jobs go highest priority first.
    # Fairness comes first: a user with fewer jobs running is still admitted before.
    priority: int = 0
    # Set when the kind takes an uploaded file: the parameter that holds the upload's id.
    upload_param: str | None = None
    run_chunk: Callable[[KindContext, Any, dict[str, Any]], Any] | None = None
    combine: Callable[[Any, list[Any]], Any] | None = None
    summarize: Callable[[Any], Any] | None = None
    result_items: str | None = None
    # What ``ctx.progress`` counts, a plural noun: "bytes" (shown "12.9 MB/s"), "rows", "numbers",
    # "steps"... Rates read "614 M numbers/s" on the page and in the CLI (jobs/units.py).
    unit: str = DEFAULT_UNIT
    # What tells one job from another of this kind (issue 16 §4): ``label(params)``, given the
    # validated parameters at launch, returns a short text such as "sales.csv (12.4 MB)" or
    # "Primes below 10 G" (cut to jobs.models.LABEL_MAX characters; "" for none). It may read
    # the database (the launch's transaction); it must not fail: an exception is logged and the
    # job gets no label.
    label: Callable[[Any], str] | None = None

    def validate(self, params: Any) -> BaseModel:
        """Return the validated parameter model, or raise InvalidParams with per-field messages."""
        if not isinstance(params, dict):
            raise InvalidParams({"params": ["Must be a JSON object."]})
        try:
            return self.params_model.model_validate(params)
        except ValidationError as exc:
            raise InvalidParams(_field_errors(exc)) from None

    def label_for(self, params: BaseModel) -> str:
        """The job's label for validated ``params``: ``label(params)`` cut to LABEL_MAX
        characters on one line, "" when the kind gives none or its ``label`` raises (logged)."""
        if self.label is None:
            return ""
        try:
            text = str(self.label(params))
        except Exception:
            logger.exception("Job kind %r: label() failed", self.name)
            return ""
        # One line of plain text: no control characters (a terminal escape in a broadcast's title
        # reached `manage.py jobs` raw: found by review) nor bidirectional overrides.
        text = "".join(char for char in text if not _hidden(char))
        text = " ".join(text.split())
        return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"

    def params_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


# Unicode's bidirectional embeddings, overrides and isolates: they reorder what follows them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _hidden(char: str) -> bool:
    """A control character (C0, DEL, C1: ESC starts a terminal escape) or a bidi control."""
    return (unicodedata.category(char) == "Cc" and char not in "\t\n\r") or char in _BIDI_CONTROLS


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "params"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "Unknown parameter."
        errors.setdefault(loc, []).append(message)
    return errors


_kinds: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.name in _kinds and _kinds[kind.name] is not kind:
        raise ImproperlyConfigured(f"Job kind {kind.name!r} is registered twice.")
    if (kind.run_chunk is None) != (kind.combine is None):
        raise ImproperlyConfigured(f"Job kind {kind.name!r}: run_chunk and combine go together.")
    if kind.retry.retries and kind.run_chunk is not None:
        raise ImproperlyConfigured(f"Job kind {kind.name!r}: a parallel kind cannot declare retries.")
    if not UNIT_PATTERN.fullmatch(kind.unit):
        # Every payload carries it: short and plain, so the payload's size bound holds.
        raise ImproperlyConfigured(f"Job kind {kind.name!r}: unit must be a short plain word, like 'rows'.")
    if not 0 < kind.soft_time_limit < kind.time_limit <= app_settings.MAX_JOB_TIME_LIMIT:
        raise ImproperlyConfigured(
            f"Job kind {kind.name!r}: need 0 < soft_time_limit < time_limit <= "
            f"RUNBOARD_MAX_JOB_TIME_LIMIT ({app_settings.MAX_JOB_TIME_LIMIT}s), "
            "or the broker could redeliver it while it still runs."
        )
    _kinds[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _kinds.pop(name, None)


def get_kind(name: str) -> JobKind:
    try:
        return _kinds[name]
    except KeyError:
        raise UnknownKind(name) from None


def all_kinds(*, user: Any = None) -> list[JobKind]:
    """Every kind by title; with ``user``, only those they may launch (``may_launch``)."""
    kinds = (kind for kind in _kinds.values() if user is None or may_launch(user, kind))
    return sorted(kinds, key=lambda kind: kind.title)


def kind_unit(name: str) -> str:
    """What progress of kind ``name`` counts (DEFAULT_UNIT for a kind no longer registered)."""
    kind = _kinds.get(name)
    return kind.unit if kind is not None else DEFAULT_UNIT


def may_launch(user: Any, kind: JobKind) -> bool:
    """Whether ``user`` may launch (or own a launch of) ``kind``."""
    needed = kind.power or (Power.LAUNCH_STAFF_KINDS.value if kind.admin_only else None)
    return needed is None or has_power(user, Power(needed))


def autodiscover() -> None:
    """Import every module of this package, those named in RUNBOARD_KIND_MODULES, and every
    installed app's ``jobkinds`` module (as the admin finds ``admin`` modules), so each kind
    registers itself (in the web, worker and beat processes alike)."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"{__package__}.{module.name}")
    for name in app_settings.KIND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # the module exists: something it imports is missing
            raise ImproperlyConfigured(
                f"RUNBOARD_KIND_MODULES names {name!r}, which is no module: {exc}"
            ) from exc
    autodiscover_modules("jobkinds")
