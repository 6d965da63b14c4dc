"""The CSV profiler's Arrow reading against its csv-module reading, and the columnar rules behind it."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.kinds.csv_profile import profiler
from jobs.kinds.csv_profile.profiler import ProfileStopped, profile_csv

ROOT = Path(__file__).resolve().parents[2]


class Unseekable(io.BytesIO):
    """A stream that cannot be read twice: profile_csv reads it with the csv module only."""

    def seekable(self) -> bool:
        return False


def both_readings(data: bytes, **options) -> tuple[dict, dict]:
    return profile_csv(io.BytesIO(data), **options), profile_csv(Unseekable(data), **options)


@pytest.fixture
def csv_module_readings(monkeypatch):
    """Counts the readings that went (or fell back) to the csv module."""
    calls = []
    original = profiler._profile_with_csv

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(profiler, "_profile_with_csv", counted)
    return calls


WELL_FORMED = {
    "types": "i,f,b,d,t,s,e\n1,1.5,yes,2024-01-01,2024-01-01T10:00Z,x,\n-2,,no,2023-12-31,2024-01-01,y,NA\n"
    "+3,2e3,true,,2024-02-29 09:00:00+01:00,,null\n007,.5,1,2024-02-29,,z,None\n",
    "quirky quotes": 'a,b,c\n"ab"c,d,"x""y"\na"b"c, "q",\n"""",\'\'," , "\n',
    "line breaks": 'a,b\r\n1,"x\ry"\r2,"p\nq"\n3,"r\r\ns"\r\n\r\n\n4,5',
    "whitespace and empties": "a,b\n 1 , x\n1,x \n\t1\t,\u00a0x\u2003\nN/A, n/a\n",
    "decimal commas": "p;q;r\n1,5;1.234,5;x\n-2,25;+0,5;1,2,3\n3;7;y\n",
    "unicode": "名前|値\n田中|\uff11\uff12\nJosé|\u0663\nZoë|1_000\n",  # fullwidth, Arabic-Indic digits
    "no trailing line break": "a,b\n1,2\n3,4",
    "header only": "a,b,c\n",
    "wide values": "v\n" + "\n".join("x" * 250 + str(i % 3) for i in range(10)) + "\n",
    "big integers": "n,m\n" + "9" * 30 + ",1\n-" + "9" * 25 + ",2\n5,3\n",
    "hexadecimal and signs": "h,s\n0x10,+1\n0X1f,-1\n",
    "non-finite": "a,b,c\nnan,inf,1e999\n1,2,3\n",
}


@pytest.mark.parametrize("name", list(WELL_FORMED))
def test_arrow_and_the_csv_module_read_well_formed_files_alike(name, csv_module_readings):
    arrow, csv_module = both_readings(WELL_FORMED[name].encode())

    assert arrow == csv_module
    assert len(csv_module_readings) == 1  # the unseekable stream's: Arrow read the other one
    json.dumps(arrow, allow_nan=False)


def test_arrow_and_the_csv_module_agree_past_the_exact_distinct_limit(csv_module_readings):
    rng = random.Random(4)
    lines = [
        f"{i},{rng.random():.4f},k{rng.randrange(40)},{rng.choice(['hot', 'cold', f'u{i}'])}"
        for i in range(3_000)
    ]
    data = ("i,f,k,v\n" + "\n".join(lines) + "\n").encode()

    arrow, csv_module = both_readings(data, distinct_exact_limit=100)

    assert arrow == csv_module
    assert len(csv_module_readings) == 1
    assert [col["distinct_exact"] for col in arrow["columns"]] == [False, False, True, False]


@pytest.mark.parametrize(
    "text",
    [
        "a,b\n1,2\n   \n3,4\n",  # a whitespace-only line: Arrow reads it as a row of 1 field
        'a,b\n1,2\n""\n3,4\n',  # a quoted empty line: the same
        "a,b\n1,2\n3,4,5\n",  # a ragged row: Arrow has no physical line number for it
        "\n\n  \na,b\n1,2\n",  # blank lines before the header
    ],
)
def test_what_arrow_reads_otherwise_is_read_again_with_the_csv_module(text, csv_module_readings):
    data = text.encode()
    try:
        expected = profile_csv(Unseekable(data))
    except profiler.CsvProfileError as exc:
        expected = str(exc)
    try:
        got = profile_csv(io.BytesIO(data))
    except profiler.CsvProfileError as exc:
        got = str(exc)

    assert got == expected


def test_a_file_read_again_reports_progress_that_never_goes_back():
    data = ("a,b\n" + "".join(f"{i},{i}\n" for i in range(20_000)) + "  \n1,2\n").encode()
    calls = []

    result = profile_csv(
        io.BytesIO(data),
        total_bytes=len(data),
        progress=lambda done, total: calls.append(done),
        chunk_size=4096,
    )

    assert result["rows"] == 20_001
    assert calls == sorted(calls) and calls[-1] == len(data)


def test_progress_and_should_stop_run_in_the_callers_thread():
    # A Celery task's callbacks use its thread's database connection: Arrow's threads must not call them.
    data = ("a,b\n" + "".join(f"{i},x{i}\n" for i in range(50_000))).encode()
    threads = set()

    def progress(done, total):
        threads.add(threading.get_ident())

    def should_stop():
        threads.add(threading.get_ident())
        return False

    profile_csv(io.BytesIO(data), progress=progress, should_stop=should_stop, chunk_size=8192)

    assert threads == {threading.get_ident()}


def test_stopping_during_the_arrow_reading_leaves_no_thread_behind():
    data = ("a,b\n" + "".join(f"{i},x{i}\n" for i in range(100_000))).encode()
    before = threading.active_count()
    checks = []

    def should_stop():
        checks.append(1)
        return len(checks) > 20

    with pytest.raises(ProfileStopped):
        profile_csv(io.BytesIO(data), should_stop=should_stop, chunk_size=8192)

    assert len(checks) == 21
    assert threading.active_count() <= before


def test_distinct_estimates_are_the_same_in_every_process():
    # Python salts str hashes per process (PYTHONHASHSEED): the estimate must not depend on it.
    script = (
        "import django, io, json; django.setup()\n"
        "from jobs.kinds.csv_profile.profiler import profile_csv\n"
        "data = ('v\\n' + ''.join(f'value-{i * 7919 % 100003}\\n' for i in range(60_000))).encode()\n"
        "result = profile_csv(io.BytesIO(data), distinct_exact_limit=1_000)\n"
        "print(json.dumps(result['columns'][0]['distinct']))\n"
    )
    estimates = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "DJANGO_SETTINGS_MODULE": "dashboard.settings.test"}
        completed = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        estimates.add(json.loads(completed.stdout.strip().splitlines()[-1]))

    assert len(estimates) == 1
    assert abs(estimates.pop() - 60_000) / 60_000 < 0.05


# -- the columnar rules: Arrow's parsers against Python's ------------------------------------------------


def _fuzz(alphabet: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    values = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))).strip() for _ in range(count)}
    values.discard("")
    return sorted(values)


def test_what_arrow_reads_as_a_float_python_reads_as_the_same_float():
    # columns._parsed_floats trusts Arrow's float parser without a regex where it succeeds.
    for value in [*_fuzz("0123456789+-.eE_xXpPinfatyINF ,d", 4_000, seed=1), "1e999", "-1e-400", "1" * 40]:
        try:
            parsed = pc.cast(pa.array([value]), pa.float64()).to_pylist()[0]
        except pa.ArrowInvalid:
            continue
        assert "_" not in value, value
        python = float(value)
        assert parsed == python or (parsed != parsed and python != python), value


def test_what_arrow_reads_as_an_integer_python_reads_as_the_same_integer_but_hexadecimal():
    # columns._ints trusts Arrow's integer parser where it succeeds, but for "0x..." (hexadecimal).
    for value in _fuzz("0123456789+-_xXaAfF ", 4_000, seed=2):
        try:
            parsed = pc.cast(pa.array([value]), pa.int64()).to_pylist()[0]
        except pa.ArrowInvalid:
            continue
        if value[:2] in ("0x", "0X"):
            continue
        assert "_" not in value and int(value) == parsed, value


def test_hexadecimal_integers_are_strings_as_before():
    result = profile_csv(io.BytesIO(b"h\n0x10\n0X1f\n"))

    assert result["columns"][0]["type"] == "string"


def test_a_column_of_repeated_big_integers_keeps_exact_sums():
    # Past 2^31 the limb sums give way to Python integers; with weights (repeated values) too.
    values = [2**40 + 3, -(2**35), 7, 2**40 + 3] * 50
    result = profile_csv(io.BytesIO(("n\n" + "\n".join(map(str, values)) + "\n").encode()))
    col = result["columns"][0]

    assert (col["type"], col["min"], col["max"]) == ("integer", -(2**35), 2**40 + 3)
    assert col["mean"] == sum(values) / len(values)


# --- found by review: inputs the Arrow path must hand to the csv module, or read alike --------------


def test_a_declared_encoding_that_decodes_to_lone_surrogates_is_read_by_the_csv_module(csv_module_readings):
    data = b"h\n\\ud800\nx\n"  # unicode_escape: the second row is a lone surrogate, no UTF-8 for Arrow

    arrow, csv_module = both_readings(data, encoding="unicode_escape")

    assert arrow == csv_module
    assert arrow["rows"] == 2
    assert {top["value"] for top in arrow["columns"][0]["top"]} == {"x", "\ufffd"}  # shown, not a crash
    assert len(csv_module_readings) == 2  # the unseekable stream's, and the fallback's


@pytest.mark.parametrize(
    "data", [b"a,b\n" + b"\n" * 300_000 + b"1,2\n", b"a,b\n\n\n"], ids=["blank block", "blank tail"]
)
def test_blank_blocks_arrow_yields_empty_are_read_alike(data):
    arrow, csv_module = both_readings(data, chunk_size=64 * 1024)
    assert arrow == csv_module


def test_an_arrow_io_error_falls_back_to_the_csv_module_not_to_a_retry(monkeypatch, csv_module_readings):
    import pyarrow.csv as pa_csv

    def failing(*args, **kwargs):
        raise pa.ArrowIOError("simulated Arrow I/O failure")

    monkeypatch.setattr(pa_csv, "open_csv", failing)

    result = profile_csv(io.BytesIO(b"a,b\n1,2\n3,4\n"))

    assert result["rows"] == 2
    assert len(csv_module_readings) == 1
