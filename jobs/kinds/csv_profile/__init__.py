"""Profile an uploaded CSV: per column type, counts, distinct values, numeric stats, top values."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from django.db import OperationalError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from jobs.context import KindContext
from jobs.models import Upload
from jobs.retries import RetryPolicy, TransientError
from jobs.units import BYTES, format_count

from ..registry import JobKind, register
from .profiler import CsvProfileError, ProfileStopped, check_encoding, profile_csv


class CsvProfileParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Profile a CSV file")

    upload_id: uuid.UUID = Field(
        title="CSV file", description="The file to profile (upload it with the job).",
        json_schema_extra={"format": "upload", "accept": ".csv,.tsv,.txt"},
    )  # fmt: skip
    # Left out of the stored params when not given: a job's params are what its owner chose.
    encoding: str | None = Field(
        None, max_length=64, title="Encoding",
        description="The file's text encoding, e.g. cp1252 or latin-1; leave empty to detect it"
        " (UTF-8, UTF-16 by its byte order mark, else a single-byte code page).",
        exclude_if=lambda value: value is None,
    )  # fmt: skip

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return check_encoding(value)
        except ValueError as exc:  # the reason alone, without pydantic's "Value error, "
            raise PydanticCustomError("encoding", "{reason}", {"reason": str(exc)}) from None


class InvalidCsv(Exception):
    pass


def run(ctx: KindContext, params: CsvProfileParams) -> dict | None:
    # The owner check again at run time: the params name an upload, it must be this user's.
    upload = Upload.objects.get(pk=params.upload_id, owner_id=ctx.owner_id)
    ctx.log(f"Profiling {upload.original_name} ({upload.size:,} bytes)")
    with upload.file.open("rb") as stream:
        try:
            result = profile_csv(
                stream,
                total_bytes=upload.size,
                progress=lambda done, total: ctx.progress(done, total, "Reading"),
                should_stop=lambda: ctx.cancelled,
                encoding=params.encoding,
            )
        except ProfileStopped:
            return None
        except CsvProfileError as exc:
            raise InvalidCsv(f"{upload.original_name}: {exc}") from None
    result["file_name"] = upload.original_name
    for note in result["notes"]:
        ctx.log(note)
    ctx.progress(upload.size, upload.size, "Done")
    ctx.log(f"{result['rows']:,} rows, {len(result['columns'])} columns")
    return result


def label(params: CsvProfileParams) -> str:
    """ "sales.csv (12.4 MB)", and the encoding when one was chosen: what tells one profile from
    another (issue 16 §4)."""
    upload = Upload.objects.filter(pk=params.upload_id).values_list("original_name", "size").first()
    if upload is None:
        return ""
    name, size = upload
    encoding = f", {params.encoding}" if params.encoding else ""
    return f"{name} ({format_count(size, BYTES)}{encoding})"


def summarize(result: Any) -> dict[str, Any]:
    """What every payload shows of a profile (the columns are fetched by reference, paged):
    ``{"rows", "bytes", "delimiter", "encoding", "notes", "columns": count, "types": {type: count},
    "truncated", "file_name"}``; the name last, so a long one is what gets cut."""
    if not isinstance(result, dict):
        return {}
    columns = result.get("columns")
    if not isinstance(columns, list):
        columns = []
    types = Counter(column.get("type") for column in columns if isinstance(column, dict))
    return {
        "rows": result.get("rows"),
        "bytes": result.get("bytes"),
        "delimiter": result.get("delimiter"),
        "encoding": result.get("encoding"),
        "notes": result.get("notes") or [],
        "columns": len(columns),
        "types": {str(name): n for name, n in types.most_common()},
        "truncated": bool(result.get("truncated")),
        "file_name": result.get("file_name"),
    }


register(
    JobKind(
        name="csv_profile",
        title="Profile a CSV file",
        description="Streams through an uploaded CSV and profiles every column.",
        params_model=CsvProfileParams,
        run=run,
        soft_time_limit=1800,
        time_limit=1860,
        rerun_safe=True,
        # Reading the upload can fail for a moment on shared storage (NFS, a full disk being
        # cleared); the file being gone or unreadable, or its data being bad, is for good.
        retry=RetryPolicy(
            max_attempts=3,
            base=30,
            retry_on=(TransientError, OSError, OperationalError),
            give_up_on=(FileNotFoundError, PermissionError, IsADirectoryError),
        ),
        upload_param="upload_id",
        unit="bytes",  # progress counts the bytes read
        summarize=summarize,
        result_items="columns",
        label=label,
    )
)
