"""Export the user's own job history as CSV; the result is a download only the owner can use."""

from __future__ import annotations

import csv
import json
import unicodedata
from typing import Literal

from django.db import InterfaceError, OperationalError
from pydantic import BaseModel, ConfigDict, Field

from jobs.context import KindContext
from jobs.models import Job
from jobs.retries import RetryPolicy, TransientError

from .registry import JobKind, register

COLUMNS = ["id", "kind", "state", "created_at", "started_at", "finished_at", "progress_current",
           "progress_total", "error", "params"]  # fmt: skip


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
            row = [job.id, job.kind, job.state, job.created_at.isoformat(),
                   job.started_at.isoformat() if job.started_at else "",
                   job.finished_at.isoformat() if job.finished_at else "",
                   job.progress_current, job.progress_total if job.progress_total is not None else "",
                   job.error, json.dumps(job.params, ensure_ascii=False)]  # fmt: skip
            # Every text cell, not only the free-text ones: a new column cannot forget it.
            writer.writerow([_neutralize(cell) if isinstance(cell, str) else cell for cell in row])
            rows += 1
            ctx.progress(rows, total)
    ctx.log(f"Exported {rows} jobs")
    return {"rows": rows, "file_name": "runboard-jobs.csv"}


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
        # Writing the file or reading the history can fail for a moment (a full disk, a database
        # restart); the export starts again from nothing, so it is safe to repeat.
        retry=RetryPolicy(
            max_attempts=3,
            base=30,
            retry_on=(TransientError, OSError, OperationalError, InterfaceError),
            give_up_on=(PermissionError,),
        ),
    )
)
