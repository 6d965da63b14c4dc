"""Export the user's own job history as CSV; the result is a download only the owner can use.

One row per job, newest first: times in ISO 8601 (UTC), ``duration_seconds`` (started to finished) and
``queue_wait_seconds`` (created to started; empty until it starts), ``params`` as JSON.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from datetime import UTC, datetime
from typing import Literal

from django.db import InterfaceError, OperationalError
from pydantic import BaseModel, ConfigDict, Field

from jobs.context import KindContext
from jobs.models import Job
from jobs.retries import RetryPolicy, TransientError

from .registry import JobKind, register

COLUMNS = ["id", "kind", "label", "state", "created_at", "started_at", "finished_at", "duration_seconds",
           "queue_wait_seconds", "progress_current", "progress_total", "error", "params"]  # fmt: skip


class ExportParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Export my job history")

    state: Literal["any", "queued", "running", "succeeded", "failed", "cancelled"] = Field(
        "any", title="Only jobs in state", description="Which jobs to include."
    )


def run(ctx: KindContext, params: ExportParams) -> dict[str, int | str]:
    jobs = Job.objects.filter(owner_id=ctx.owner_id).exclude(pk=ctx.job_id).order_by("-created_at")
    if params.state != "any":
        jobs = jobs.filter(state=params.state)
    total = jobs.count()
    ctx.progress(0, total, "Writing CSV")
    rows = 0
    with ctx.open_result_file("runboard-jobs.csv", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for job in jobs.iterator(chunk_size=500):
            if ctx.cancelled:
                break
            row = [job.id, job.kind, job.label, job.state, _iso(job.created_at), _iso(job.started_at),
                   _iso(job.finished_at), _seconds(job.started_at, job.finished_at),
                   _seconds(job.created_at, job.started_at),
                   job.progress_current, job.progress_total if job.progress_total is not None else "",
                   job.error, json.dumps(job.params, ensure_ascii=False)]  # fmt: skip
            # Every text cell, not only the free-text ones: a new column cannot forget it.
            writer.writerow([_neutralize(cell) if isinstance(cell, str) else cell for cell in row])
            rows += 1
            ctx.progress(rows, total)
    ctx.log(f"Exported {rows} jobs")
    return {"rows": rows, "file_name": "runboard-jobs.csv"}


def label(params: ExportParams) -> str:
    """ "All jobs", or "Failed jobs": which history it writes."""
    return "All jobs" if params.state == "any" else f"{params.state.capitalize()} jobs"


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def _seconds(start: datetime | None, end: datetime | None) -> float | str:
    """Seconds from ``start`` to ``end`` (milliseconds kept), empty while either is unknown."""
    if start is None or end is None:
        return ""
    # Never negative: web and worker clocks may disagree by a little, and a "-0.2" cell is a formula start.
    return round(max((end - start).total_seconds(), 0.0), 3)


def _neutralize(value: str) -> str:
    """Quote a cell a spreadsheet would run as a formula (CSV injection, OWASP's list) with a
    leading apostrophe, which spreadsheets read as "this is text"."""
    return "'" + value if _is_formula(value) else value


# Characters that start a formula (Excel, LibreOffice, Google Sheets, Numbers): = + - @ and their
# fullwidth and small forms, which IMEs type and some spreadsheets fold to ASCII (NFKC does the
# same here), plus the Unicode minus sign.
FORMULA_STARTS = frozenset("=+-@")
EXTRA_FORMULA_STARTS = frozenset("\u2212")
# A cell starting with one of these is quoted whatever follows (OWASP names tab and carriage
# return; line feed is the same kind of leading control, which some importers drop).
CONTROL_STARTS = frozenset("\t\r\n")


def _is_formula(value: str) -> bool:
    if value[:1] in CONTROL_STARTS:
        return True
    for char in value:
        # Spreadsheets trim leading blanks (spaces, no-break and ideographic spaces, controls)
        # before deciding, and invisible format characters (zero-width space, BOM) show nothing.
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):
            continue
        return char in EXTRA_FORMULA_STARTS or unicodedata.normalize("NFKC", char)[:1] in FORMULA_STARTS
    return False


register(
    JobKind(
        name="export_jobs",
        title="Export my job history",
        description="Writes your jobs to a CSV file you can download.",
        params_model=ExportParams,
        run=run,
        soft_time_limit=600,
        time_limit=660,
        rerun_safe=True,
        unit="rows",  # progress counts the jobs written, a row each
        # Writing the file or reading the history can fail for a moment (a full disk, a database
        # restart); the export starts again from nothing, so it is safe to repeat.
        retry=RetryPolicy(
            max_attempts=3,
            base=30,
            retry_on=(TransientError, OSError, OperationalError, InterfaceError),
            give_up_on=(PermissionError,),
        ),
        label=label,
    )
)
