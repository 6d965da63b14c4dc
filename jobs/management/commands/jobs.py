"""List jobs (every user's: an operator's view) with filters, or follow one job live."""

from __future__ import annotations

import json
import re
import sys
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from jobs.management.commands.launch_job import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    Follower,
    RawEpilogFormatter,
    find_user,
    format_seconds,
    shown_percent,
)
from jobs.models import Job, JobState
from jobs.selectors import job_payload

SHORT_ID = 8
HEX_PREFIX = re.compile(r"[0-9a-f-]{4,36}")


def resolve_job(ref: str) -> Job:
    """A job by its id or an unambiguous prefix of it (the short id ``jobs`` shows)."""
    ref = ref.strip().lower()
    try:
        return Job.objects.get(pk=uuid.UUID(ref))
    except ValueError:
        pass
    except Job.DoesNotExist:
        raise CommandError(f"No job {ref}.", returncode=EXIT_USAGE) from None
    if not HEX_PREFIX.fullmatch(ref):
        raise CommandError(
            f"{ref!r} is not a job id (or the first 4+ characters of one).", returncode=EXIT_USAGE
        )
    matches = list(Job.objects.filter(id__startswith=ref).order_by("-created_at")[:5])
    if not matches:
        raise CommandError(f"No job id starts with {ref}.", returncode=EXIT_USAGE)
    if len(matches) > 1:
        ids = ", ".join(str(job.id) for job in matches)
        raise CommandError(f"{ref} is ambiguous: {ids}…", returncode=EXIT_USAGE)
    return matches[0]


def _duration(job: Job) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or timezone.now()
    return format_seconds(max(0.0, (end - job.started_at).total_seconds()))


def _row(job: Job) -> list[str]:
    state = "cancelling" if job.state == JobState.RUNNING and job.cancel_requested_at else job.state
    pct = shown_percent(job.state, job.progress_current, job.progress_total)
    return [
        str(job.id)[:SHORT_ID],
        job.owner.get_username(),
        job.kind,
        _label(job),
        state,
        "-" if pct is None else f"{pct}%",
        timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M:%S"),
        _duration(job),
        _note(job),
    ]


# Characters of a row's label ("sales.csv (12.4 MB)"): a long one is cut with "…".
LABEL_CHARS = 32


def _label(job: Job) -> str:
    label = job.label or "-"
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


# Characters of a row's note (why a queued job waits, why a failed one failed).
NOTE_CHARS = 60


def _note(job: Job) -> str:
    """Why a queued job waits (as the page and the API say it) or why a failed one failed."""
    if job.state == JobState.QUEUED:
        text = job.wait_note or ("waiting for the queue" if job.enqueued_at is None else "")
    elif job.state == JobState.FAILED:
        text = (job.error.strip().splitlines() or [""])[0]
    else:
        text = ""
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


class Command(BaseCommand):
    help = (
        "List jobs, newest first: every user's (an operator's view) or --user's, as a table or as\n"
        "the API's JSON payloads. Or follow one job's progress live with --follow ID."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        kwargs.setdefault("formatter_class", RawEpilogFormatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP.format(usage="bad usage: unknown user, job or option"))
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", metavar="NAME", help="Only this user's jobs.")
        parser.add_argument(
            "--state",
            action="extend",
            nargs="+",
            default=[],
            choices=JobState.values,
            metavar="STATE",
            help=f"Only jobs in these states ({', '.join(JobState.values)}); repeatable.",
        )
        parser.add_argument(
            "--kind",
            action="extend",
            nargs="+",
            default=[],
            metavar="KIND",
            help="Only these kinds; repeatable.",
        )
        parser.add_argument("--limit", type=int, default=20, metavar="N", help="At most N jobs (default 20).")
        parser.add_argument(
            "--json", action="store_true", help="Print the jobs' full payloads as a JSON array."
        )
        parser.add_argument(
            "--follow",
            metavar="ID",
            help="Follow this job (id or its first characters) until it ends; exit status below.",
        )
        parser.add_argument(
            "--timeout", type=float, metavar="SECONDS", help="With --follow: stop following after this long."
        )
        parser.add_argument(
            "--no-log", action="store_true", help="With --follow: leave out the job's log lines."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["follow"]:
            self._follow(options)
            return
        if options["timeout"] is not None:
            raise CommandError("--timeout only applies with --follow.", returncode=EXIT_USAGE)
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.", returncode=EXIT_USAGE)
        jobs = Job.objects.select_related("owner")
        if options["user"]:
            jobs = jobs.filter(owner=find_user(options["user"]))
        if options["state"]:
            jobs = jobs.filter(state__in=options["state"])
        if options["kind"]:
            jobs = jobs.filter(kind__in=options["kind"])
        found = list(jobs.order_by("-created_at", "-id")[: options["limit"]])

        if options["json"]:
            self.stdout.write(json.dumps([job_payload(job) for job in found], indent=2, ensure_ascii=False))
        elif found:
            header = ["ID", "OWNER", "KIND", "LABEL", "STATE", "PROGRESS", "CREATED", "DURATION", "NOTE"]
            self.stdout.write(table([_row(job) for job in found], header))
        else:
            self.stderr.write("No jobs match.")

    def _follow(self, options: dict[str, Any]) -> None:
        if options["user"] or options["state"] or options["kind"] or options["json"]:
            raise CommandError("--follow takes only --timeout and --no-log.", returncode=EXIT_USAGE)
        job = resolve_job(options["follow"])
        self.stdout.write(f"Following {job.kind} job {job.id} of {job.owner.get_username()}.")
        code = Follower(
            out=self.stdout,
            err=self.stderr,
            style=self.style,
            show_progress=options["verbosity"] > 0,
            show_log=not options["no_log"] and options["verbosity"] > 0,
        ).follow(job.id, timeout=options["timeout"])
        if code:
            sys.exit(code)
