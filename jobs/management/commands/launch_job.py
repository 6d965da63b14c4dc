"""Launch a job from the shell through the same service as the web, and optionally follow it live.

The follower here is shared with ``manage.py jobs --follow``: it polls the Job row (the database is
the truth; the channel layer is only a hint) and draws one progress line, redrawn in place with
``\\r`` on a terminal and as plain lines, at most two a second, when the output is a pipe or a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter, OutputWrapper
from django.urls import reverse

from jobs.exceptions import InvalidUpload, KindNotAllowed
from jobs.kinds.registry import InvalidParams, JobKind, UnknownKind, all_kinds, get_kind
from jobs.launch import check_may_launch, job_launch
from jobs.models import Job, JobLogLine, JobState
from jobs.selectors import job_payload, progress_rate
from jobs.states import job_pushes_flush
from jobs.units import DEFAULT_UNIT, format_duration, format_rate

if TYPE_CHECKING:
    from django.contrib.auth.models import User

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130

FINAL_EXIT = {
    JobState.SUCCEEDED: EXIT_SUCCEEDED,
    JobState.FAILED: EXIT_FAILED,
    JobState.CANCELLED: EXIT_CANCELLED,
}

EXIT_CODES_HELP = """\
exit status when following:
  0    the job succeeded
  1    the job failed (its error is printed on stderr)
  2    {usage}
  3    the job was cancelled
  4    --timeout passed first (the job keeps running)
  130  interrupted with Ctrl-C (the job keeps running; follow it again with `jobs --follow ID`)"""

POLL_SECONDS = 0.25
# Without a terminal, one line per change but no more than this often (state changes go at once).
PLAIN_LINE_SECONDS = 0.5
BAR_WIDTH = 20
RESULT_MAX_CHARS = 1000
# Following a job that already has a long log starts with its tail, not the whole of it.
LOG_TAIL_ON_ATTACH = 10
LOG_BATCH = 500
WAITING_FOR_QUEUE = "waiting for the queue (the job queue is unreachable; the job is sent when it is back)"


class RawEpilogFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's ordering of options, but the epilog's tables keep their line breaks."""


def find_user(username: str) -> User:
    try:
        return get_user_model().objects.get(**{get_user_model().USERNAME_FIELD: username})
    except get_user_model().DoesNotExist:
        raise CommandError(f"No user named {username!r}.", returncode=EXIT_USAGE) from None


def follow_hint(job_id: Any) -> str:
    return f"python manage.py jobs --follow {job_id}"


# --- Parameters --------------------------------------------------------------------------------


def _is_text_field(schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    """True when the field only takes strings: its value is then never read as JSON."""
    if "$ref" in schema:
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
    variants = schema.get("anyOf") or schema.get("oneOf") or [schema]
    types: set[str] = set()
    for variant in variants:
        if "$ref" in variant:
            variant = defs.get(variant["$ref"].rsplit("/", 1)[-1], {})
        kind = variant.get("type")
        if kind is None and "enum" in variant:
            types.update("string" if isinstance(v, str) else "other" for v in variant["enum"])
        elif isinstance(kind, list):
            types.update(kind)
        else:
            types.add(kind or "other")
    types.discard("null")
    return types == {"string"}


def parse_params(kind: JobKind, pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings to a params dict: a value is JSON when it parses (steps=5 is 5,
    flag=true is True), else text; a text field keeps text (title=123 is "123"), quoted JSON or not."""
    schema = kind.params_schema()
    properties, defs = schema.get("properties", {}), schema.get("$defs", {})
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"--param takes KEY=VALUE, got {pair!r}.", returncode=EXIT_USAGE)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        if key in properties and _is_text_field(properties[key], defs) and not isinstance(value, str):
            value = raw
        params[key] = value
    return params


def _params_usage(kind: JobKind) -> str:
    schema = kind.params_schema()
    required = set(schema.get("required", []))
    parts = []
    for name, prop in schema.get("properties", {}).items():
        if name == kind.upload_param:
            parts.append("--file PATH")
        elif name in required:
            parts.append(f"{name}=…")
        else:
            parts.append(f"{name}={json.dumps(prop.get('default'))}")
    return " ".join(parts) or "(no parameters)"


def kinds_help() -> str:
    kinds = all_kinds()
    if not kinds:
        return ""
    width = max(len(kind.name) for kind in kinds)
    lines = ["kinds and their parameters (defaults shown; `…` is required):"]
    for kind in kinds:
        staff = "  [staff only]" if kind.admin_only else ""
        lines.append(f"  {kind.name:<{width}}  {_params_usage(kind)}{staff}")
    return "\n".join(lines)


# --- Following ---------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def percent(current: int, total: int | None) -> int | None:
    if not total or total <= 0:
        return None
    # 100% only once really done: 199 of 200 shows 99%.
    return max(0, min(100, math.floor(100 * current / total)))


def shown_percent(state: str, current: int, total: int | None) -> int | None:
    """``percent``, but only a success is 100%: a job that failed or was cancelled stops short of
    it (its last progress may count work read ahead: a CSV's bytes past the line that failed)."""
    pct = percent(current, total)
    return min(pct, 99) if pct is not None and state in (JobState.FAILED, JobState.CANCELLED) else pct


def progress_line(payload: dict[str, Any]) -> str:
    """One line for a job's state, e.g.
    ``[#########-----------]  45%  Step 9 of 20  4.1 steps/s  ETA 3 s``."""
    progress = payload["progress"]
    current, total, message = progress["current"], progress["total"], progress["message"]
    state = payload["state"]
    if state == JobState.QUEUED:
        if payload.get("waiting_for_queue"):
            return f"queued, {WAITING_FOR_QUEUE}"
        reason = payload.get("wait_reason")
        if reason:
            # Why it waits and where it stands (jobs.admission): "3rd in line for a worker."
            return f"queued, {reason[0].lower()}{reason[1:]}{'  ' + message if message else ''}"
        return f"queued, waiting for a worker{'  ' + message if message else ''}"
    pct = shown_percent(state, current, total)
    if pct is not None:
        filled = BAR_WIDTH * pct // 100  # full only at 100%
        parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {pct:3d}%"]
    else:
        parts = [f"{current:,} done" if current else state]
    if message:
        parts.append(message)
    if state == JobState.RUNNING and payload.get("stalled"):
        # Its worker has been silent past the heartbeat limit (frozen or gone): no rate, no ETA.
        silent = round(payload.get("silent_for") or 0)
        parts.append(f"no progress for {f'{silent} s' if silent < 60 else format_seconds(silent)}")
    else:
        if payload.get("rate"):
            parts.append(format_rate(payload["rate"], payload.get("unit") or DEFAULT_UNIT))
        if payload.get("eta_seconds") is not None:
            parts.append(f"ETA {format_duration(payload['eta_seconds'])}")
    if state == JobState.RUNNING and payload.get("cancel_requested"):
        parts.append("(cancelling)")
    attempt, most = payload.get("attempt") or 0, payload.get("max_attempts") or 0
    if attempt > 1:
        # A lost worker's re-queue may go past the kind's retries (max_attempts): no "of" then.
        parts.append(f"attempt {attempt} of {most}" if most >= attempt else f"attempt {attempt}")
    return "  ".join(parts)


def steady_payload(job: Job) -> dict[str, Any]:
    """The job's payload, with its rate measured when its progress was written.

    ``job_payload`` divides progress written up to a second ago by the time until now, so between
    heartbeats the rate sags and the ETA climbs; measured at the heartbeat, the ETA counts down.
    """
    payload: dict[str, Any] = dict(job_payload(job))
    if job.state == JobState.RUNNING and job.started_at and job.heartbeat_at and not payload["stalled"]:
        beat = job.heartbeat_at.timestamp()
        rate, eta = progress_rate(job.progress_current, job.progress_total, job.started_at.timestamp(), beat)
        if eta is not None:
            eta = max(0.0, eta - (time.time() - beat))
        payload.update(rate=rate, eta_seconds=eta)
    return payload


class _Screen:
    """Writes the status line in place on a terminal, or as plain lines otherwise."""

    def __init__(self, out: OutputWrapper, tty: bool) -> None:
        self.out, self.tty, self.status_shown = out, tty, False

    def status(self, line: str) -> None:
        if self.tty:
            # A line wider than the terminal would wrap, and \r would then redraw only its tail.
            width = max(20, shutil.get_terminal_size().columns - 1)
            self.out.write("\r" + line[:width] + "\x1b[K", ending="")
            self.out.flush()
            self.status_shown = True
        else:
            self.out.write(line)

    def line(self, text: str, style_func: Any = None) -> None:
        """A line that stays (a log line, the summary); on a terminal it goes above the status."""
        if self.status_shown:
            self.out.write("\r\x1b[K", ending="")
            self.status_shown = False
        self.out.write(text, style_func=style_func)

    def end_status(self) -> None:
        if self.status_shown:
            self.out.write("")
            self.status_shown = False


class Follower:
    """Follows one job until it ends, reading the Job row (and its log lines) every ``interval``."""

    def __init__(
        self,
        *,
        out: OutputWrapper,
        err: OutputWrapper,
        style: Any = None,
        show_progress: bool = True,
        show_log: bool = True,
        log_from_start: bool = False,
        interval: float = POLL_SECONDS,
    ) -> None:
        self.out, self.err = out, err
        # Colour only reaches a terminal (OutputWrapper drops it otherwise).
        self.styles = (
            {}
            if style is None
            else {
                JobState.SUCCEEDED: style.SUCCESS,
                JobState.FAILED: style.ERROR,
                JobState.CANCELLED: style.WARNING,
            }
        )
        self.screen = _Screen(out, tty=out.isatty())
        self.show_progress, self.show_log, self.interval = show_progress, show_log, interval
        # None: start from the log's tail (attaching to a job that may have run for a while).
        self.last_seq: int | None = 0 if log_from_start else None
        self._printed_key: tuple[Any, ...] | None = None
        self._printed_at = 0.0

    def follow(self, job_id: Any, *, timeout: float | None = None) -> int:
        """Returns the exit status: see EXIT_CODES_HELP."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                job = self._load(job_id)
                self._print_log(job)
                payload = steady_payload(job)
                if job.is_final:
                    if self.show_progress:
                        self.screen.status(progress_line(payload))
                        self.screen.end_status()
                    return self._summary(payload)
                if self.show_progress and self._due(payload):
                    self.screen.status(progress_line(payload))
                if deadline is not None and time.monotonic() >= deadline:
                    self.screen.end_status()
                    self.err.write(
                        f"Still {job.state} after {format_seconds(timeout or 0)} (--timeout); the job keeps "
                        f"running. Follow it again with: {follow_hint(job.id)}"
                    )
                    return EXIT_TIMEOUT
                time.sleep(self.interval)
        except KeyboardInterrupt:
            self.screen.end_status()
            self.err.write(
                f"Stopped following; job {job_id} keeps running. Follow it again with: {follow_hint(job_id)}"
            )
            return EXIT_INTERRUPTED

    def _due(self, payload: dict[str, Any]) -> bool:
        """Whether to draw the status now: every poll on a terminal (the rate and ETA move);
        otherwise on a change, at once for a new state (or a worker going silent: "no progress for
        N s" instead of the last ETA, a review's pipe kept "ETA 26 s" through a freeze) and at most
        every PLAIN_LINE_SECONDS else."""
        if self.screen.tty:
            return True
        progress = payload["progress"]
        key = (payload["state"], payload["cancel_requested"], bool(payload.get("stalled")),
               progress["current"], progress["total"], progress["message"])  # fmt: skip
        now = time.monotonic()
        last = self._printed_key
        if key == last or (
            last is not None and key[:3] == last[:3] and now - self._printed_at < PLAIN_LINE_SECONDS
        ):
            return False
        self._printed_key, self._printed_at = key, now
        return True

    def _load(self, job_id: Any) -> Job:
        try:
            return Job.objects.select_related("owner").get(pk=job_id)
        except Job.DoesNotExist:
            self.screen.end_status()
            raise CommandError(f"Job {job_id} no longer exists.", returncode=EXIT_FAILED) from None

    def _print_log(self, job: Job) -> None:
        if not self.show_log:
            return
        lines = JobLogLine.objects.filter(job_id=job.pk)
        if self.last_seq is None:
            # Attaching to a job that may have a long log: its newest lines, then what follows.
            tail = list(lines.order_by("-seq").values_list("seq", "text")[:LOG_TAIL_ON_ATTACH])
            self.last_seq = tail[-1][0] - 1 if tail else 0
        while True:
            rows = list(
                lines.filter(seq__gt=self.last_seq).order_by("seq").values_list("seq", "text")[:LOG_BATCH]
            )
            for seq, text in rows:
                self.screen.line(f"  | {text}")
                self.last_seq = seq
            if len(rows) < LOG_BATCH:
                return

    def _summary(self, payload: dict[str, Any]) -> int:
        state = JobState(payload["state"])
        job = Job.objects.get(pk=payload["id"])
        ran = (
            f" after {format_seconds((job.finished_at - job.started_at).total_seconds())}"
            if job.started_at and job.finished_at
            else " before it started"
            if state == JobState.CANCELLED
            else ""
        )
        waited = payload.get("queue_wait_seconds")
        queue = f" (waited {format_seconds(waited)} in the queue)" if waited else ""
        self.screen.line(f"Job {payload['id']} {state.value}{ran}{queue}.", self.styles.get(state))
        if state == JobState.SUCCEEDED:
            if job.result is not None:
                text = json.dumps(job.result, ensure_ascii=False)
                if len(text) > RESULT_MAX_CHARS:
                    page = reverse("frontend:job-detail", args=[payload["id"]])
                    text = f"{text[:RESULT_MAX_CHARS]}… (truncated; all of it is on the job's page, {page})"
                self.screen.line(f"Result: {text}")
            if payload["download_url"]:
                self.screen.line(f"Download (owner only): {payload['download_url']}")
        elif state == JobState.FAILED:
            self.err.write(f"Error: {payload['error'] or 'unknown error'}")
        return FINAL_EXIT[state]


# --- The command -------------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Launch a job of KIND for a user through the same service as the web (the same validation,\n"
        "queue and notifications). Prints the job id; with --follow, shows its progress and log until\n"
        "it ends and exits with a status that says how it ended."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        kwargs.setdefault("formatter_class", RawEpilogFormatter)
        kwargs.setdefault(
            "epilog",
            "--param KEY=VALUE: VALUE is read as JSON when it parses (steps=5, flag=true,\n"
            'fail_at_step=null), else as text; text parameters always get text (title=123 is "123").\n\n'
            + EXIT_CODES_HELP.format(
                usage="bad usage, nothing launched: unknown kind or user, invalid parameters, bad file"
            )
            + "\nwithout --follow: 0 once the job is queued (its id is printed on stdout), or 2.\n\n"
            + kinds_help(),
        )
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("kind", metavar="KIND", help="The job kind (listed below).")
        parser.add_argument("--user", required=True, metavar="NAME", help="Launch as (and for) this user.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A parameter of the kind; repeat for each.",
        )
        parser.add_argument(
            "--file", metavar="PATH", help="The file to upload, for kinds that take one (csv_profile)."
        )
        parser.add_argument(
            "--follow", action="store_true", help="Show live progress and the log until the job ends."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="With --follow: stop following after this long (exit 4; the job keeps running).",
        )
        parser.add_argument(
            "--no-log", action="store_true", help="With --follow: leave out the job's log lines."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["timeout"] is not None and not options["follow"]:
            raise CommandError("--timeout only applies with --follow.", returncode=EXIT_USAGE)
        owner = find_user(options["user"])
        if not owner.is_active:
            raise CommandError(f"User {options['user']!r} is inactive.", returncode=EXIT_USAGE)
        try:
            kind = get_kind(options["kind"])
        except UnknownKind:
            names = ", ".join(kind.name for kind in all_kinds())
            raise CommandError(
                f"Unknown job kind {options['kind']!r}. Kinds: {names}.", returncode=EXIT_USAGE
            ) from None
        params = parse_params(kind, options["param"])
        job = self._launch(owner=owner, kind=kind, params=params, path=options["file"])
        # The "queued" event for open dashboards is published from a background thread: let it out
        # before this short-lived process ends.
        job_pushes_flush(timeout=2)

        if not options["follow"]:
            # As the database holds it after the launch (jobs.launch.job_create).
            waiting = job_payload(job)["waiting_for_queue"]
            state = f"{job.state}, {WAITING_FOR_QUEUE}" if waiting else job.state
            self.stderr.write(
                f"Launched {kind.title} for {owner.get_username()}, {state}. "
                f"Follow it with: {follow_hint(job.id)}"
            )
            self.stdout.write(str(job.id))
            return
        self.stdout.write(f"Launched {kind.title} ({kind.name}) job {job.id} for {owner.get_username()}.")
        code = Follower(
            out=self.stdout,
            err=self.stderr,
            style=self.style,
            show_progress=options["verbosity"] > 0,
            show_log=not options["no_log"] and options["verbosity"] > 0,
            log_from_start=True,
        ).follow(job.id, timeout=options["timeout"])
        if code:
            sys.exit(code)

    def _launch(self, *, owner: User, kind: JobKind, params: dict[str, Any], path: str | None) -> Job:
        if path is not None and kind.upload_param is None:
            raise CommandError(f"{kind.name} takes no file; leave out --file.", returncode=EXIT_USAGE)
        if kind.upload_param and path is None and kind.upload_param not in params:
            raise CommandError(f"{kind.name} needs a file: --file PATH.", returncode=EXIT_USAGE)
        try:
            # Before storing any upload: a refused launch keeps nothing.
            check_may_launch(owner, kind)
        except KindNotAllowed:
            raise CommandError(
                f"{owner.get_username()} may not launch {kind.title!r}: "
                "it takes a permission they do not have.",
                returncode=EXIT_USAGE,
            ) from None
        if path is not None and not Path(path).is_file():
            raise CommandError(f"No such file: {path}", returncode=EXIT_USAGE)
        with contextlib.ExitStack() as stack:
            file = None
            if path is not None:
                file = File(stack.enter_context(Path(path).open("rb")), name=Path(path).name)
            try:
                # An operator's tool: the per-user launch rate limit guards the web, not the shell.
                return job_launch(
                    owner=owner,
                    kind=kind.name,
                    params=params,
                    file=file,  # type: ignore[arg-type]
                    rate_limit=False,
                )
            except InvalidUpload as exc:
                raise CommandError(str(exc), returncode=EXIT_USAGE) from None
            except InvalidParams as exc:
                fields = "\n".join(
                    f"  {field}: {'; '.join(messages)}" for field, messages in exc.errors.items()
                )
                raise CommandError(
                    f"Invalid parameters for {kind.name}; nothing was launched:\n{fields}",
                    returncode=EXIT_USAGE,
                ) from None
            except KindNotAllowed as exc:
                raise CommandError(str(exc), returncode=EXIT_USAGE) from None
