"""The streaming CSV profiler: types, counts, distinct/top values, bad files, streaming and memory."""

from __future__ import annotations

import io
import json
import math
import random
import statistics
import tracemalloc

import pytest

from jobs.kinds.csv_profile.profiler import CsvProfileError, ProfileStopped, profile_csv


def profile(text: str | bytes, **options):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return profile_csv(io.BytesIO(data), **options)


def column(result: dict, name: str) -> dict:
    return next(col for col in result["columns"] if col["name"] == name)


def failure(text: str | bytes, **options) -> CsvProfileError:
    with pytest.raises(CsvProfileError) as caught:
        profile(text, **options)
    return caught.value


# -- types and statistics ------------------------------------------------------------------------------


def test_integers_get_min_max_mean_and_stddev():
    values = [3, -7, 12, 0, 5, 5]
    result = profile("n\n" + "\n".join(map(str, values)) + "\n")
    col = column(result, "n")

    assert col["type"] == "integer"
    assert (col["min"], col["max"]) == (-7, 12)
    assert isinstance(col["min"], int)
    assert col["mean"] == pytest.approx(statistics.mean(values))
    assert col["stddev"] == pytest.approx(statistics.stdev(values))


def test_integers_mixed_with_decimals_are_floats_with_sample_stddev():
    values = ["1", "2.5", "-3.25", "1e2", ".5"]
    col = column(profile("x\n" + "\n".join(values) + "\n"), "x")
    floats = [float(v) for v in values]

    assert col["type"] == "float"
    assert (col["min"], col["max"]) == (-3.25, 100.0)
    assert col["mean"] == pytest.approx(statistics.mean(floats))
    assert col["stddev"] == pytest.approx(statistics.stdev(floats))


def test_a_single_number_has_a_mean_but_no_stddev():
    col = column(profile("x\n42\n"), "x")

    assert (col["mean"], col["stddev"]) == (42.0, None)


def test_nan_inf_and_digit_separators_are_not_numbers():
    result = profile("a,b,c\n1.5,1,2\nnan,inf,1_000\n")

    assert [col["type"] for col in result["columns"]] == ["string", "string", "string"]
    json.dumps(result, allow_nan=False)


def test_booleans_are_true_false_yes_no_in_any_case():
    col = column(profile("flag\ntrue\nFALSE\nYes\nno\n"), "flag")

    assert col["type"] == "boolean"
    assert (col["min"], col["max"], col["mean"]) == (None, None, None)


def test_zero_one_columns_are_integers_unless_mixed_with_boolean_words():
    result = profile("bits,mixed\n0,0\n1,true\n1,1\n")

    assert column(result, "bits")["type"] == "integer"
    assert column(result, "mixed")["type"] == "boolean"


def test_iso_dates_get_iso_min_and_max():
    col = column(profile("day\n2024-03-01\n2023-12-31\n2024-02-29\n"), "day")

    assert col["type"] == "date"
    assert (col["min"], col["max"]) == ("2023-12-31", "2024-03-01")
    assert col["mean"] is None


def test_datetimes_mixed_with_dates_are_datetimes():
    col = column(profile("at\n2024-03-01T10:15:00\n2024-03-01 09:00\n2024-02-28\n"), "at")

    assert col["type"] == "datetime"
    assert (col["min"], col["max"]) == ("2024-02-28T00:00:00", "2024-03-01T10:15:00")


def test_datetimes_with_offsets_compare_as_instants():
    col = column(profile("at\n2024-03-01T10:00:00+02:00\n2024-03-01T09:30:00Z\n"), "at")

    assert col["type"] == "datetime"
    assert col["min"] == "2024-03-01T10:00:00+02:00"
    assert col["max"] == "2024-03-01T09:30:00+00:00"


def test_naive_and_offset_datetimes_together_are_strings():
    col = column(profile("at\n2024-03-01T10:00:00+02:00\n2024-03-01T09:30:00\n"), "at")

    assert col["type"] == "string"


def test_almost_dates_and_other_text_are_strings():
    result = profile("d,s\n2024-3-1,abc\n2024-03-01,12\n")

    assert column(result, "d")["type"] == "string"
    assert column(result, "s")["type"] == "string"
    assert column(result, "s")["min"] is None


def test_a_column_without_values_is_empty():
    col = column(profile("a,b\n1,\n2, \n3,NA\n"), "b")

    assert col["type"] == "empty"
    assert (col["count"], col["empty"], col["distinct"], col["top"]) == (0, 3, 0, [])


def test_blank_whitespace_and_null_markers_count_as_empty():
    result = profile("a,b\n1,\n2,  \n3,NA\n4,NULL\n5,null\n6,N/A\n7, 8 \n")
    col = column(result, "b")

    assert result["rows"] == 7
    assert (col["count"], col["empty"]) == (1, 6)
    assert col["type"] == "integer"
    assert col["top"] == [{"value": "8", "count": 1}]


def test_values_are_stripped_before_counting_distinct_values():
    col = column(profile("a\nx\n x\nx \ny\n"), "a")

    assert col["distinct"] == 2
    assert col["top"][0] == {"value": "x", "count": 3}


# -- distinct and top values ---------------------------------------------------------------------------


def test_distinct_is_exact_and_top_five_are_ordered_by_count_then_value():
    values = ["b"] * 5 + ["a"] * 5 + ["c"] * 4 + ["d"] * 3 + ["e"] * 2 + ["f"] * 2 + ["g"]
    random.Random(7).shuffle(values)
    col = column(profile("v\n" + "\n".join(values) + "\n"), "v")

    assert (col["distinct"], col["distinct_exact"]) == (7, True)
    assert col["top"] == [
        {"value": "a", "count": 5},
        {"value": "b", "count": 5},
        {"value": "c", "count": 4},
        {"value": "d", "count": 3},
        {"value": "e", "count": 2},
    ]


def test_distinct_estimate_above_the_limit_is_within_five_percent_and_not_exact():
    rng = random.Random(11)
    truth = 60_000
    values = [f"user-{i}" for i in range(truth)] + [f"user-{rng.randrange(truth)}" for _ in range(20_000)]
    rng.shuffle(values)
    col = column(profile("v\n" + "\n".join(values) + "\n", distinct_exact_limit=1_000), "v")

    assert col["distinct_exact"] is False
    assert abs(col["distinct"] - truth) / truth < 0.05
    assert col["count"] == 80_000


def test_distinct_stays_exact_at_the_limit():
    values = [str(i) for i in range(1_000)] * 3
    col = column(profile("v\n" + "\n".join(values) + "\n", distinct_exact_limit=1_000), "v")

    assert (col["distinct"], col["distinct_exact"]) == (1_000, True)


def test_past_the_limit_top_values_still_find_the_frequent_values():
    rng = random.Random(3)
    values = [f"id-{i}" for i in range(40_000)] + ["hot"] * 6_000 + ["warm"] * 3_000
    rng.shuffle(values)
    col = column(profile("v\n" + "\n".join(values) + "\n", distinct_exact_limit=500), "v")

    assert col["distinct_exact"] is False
    top = {entry["value"]: entry["count"] for entry in col["top"]}
    assert list(top)[:2] == ["hot", "warm"]
    assert 0.9 * 6_000 <= top["hot"] <= 6_000  # lower bounds, close to the truth
    assert 0.9 * 3_000 <= top["warm"] <= 3_000


def test_past_the_limit_statistics_stay_exact():
    rng = random.Random(5)
    ints = [rng.randrange(-(10**6), 10**6) for _ in range(30_000)]
    floats = [round(rng.uniform(-1e3, 1e3), 3) for _ in range(30_000)]
    lines = [f"{i},{f},{'' if n % 10 == 0 else n}" for n, (i, f) in enumerate(zip(ints, floats, strict=True))]
    result = profile("i,f,n\n" + "\n".join(lines) + "\n", distinct_exact_limit=200)
    col_i, col_f, col_n = (column(result, name) for name in "ifn")

    assert col_i["distinct_exact"] is False
    assert (col_i["type"], col_i["min"], col_i["max"]) == ("integer", min(ints), max(ints))
    assert col_i["mean"] == pytest.approx(statistics.mean(ints), rel=1e-12)
    assert col_i["stddev"] == pytest.approx(statistics.stdev(ints), rel=1e-12)
    assert (col_f["type"], col_f["min"], col_f["max"]) == ("float", min(floats), max(floats))
    assert col_f["mean"] == pytest.approx(statistics.mean(floats), rel=1e-9)
    assert col_f["stddev"] == pytest.approx(statistics.stdev(floats), rel=1e-9)
    assert (col_n["count"], col_n["empty"]) == (27_000, 3_000)


def test_a_type_that_fails_late_is_dropped_past_the_limit():
    lines = [str(i) for i in range(20_000)] + ["2.5"] + [str(i) for i in range(20_000, 30_000)] + ["oops"]
    result = profile(
        "a,b\n" + "\n".join(f"{v},{v}" for v in lines[:-1]) + f"\n{lines[-1]},1\n", distinct_exact_limit=100
    )

    assert column(result, "a")["type"] == "string"
    assert column(result, "a")["min"] is None
    assert column(result, "b")["type"] == "float"
    assert column(result, "b")["max"] == 29_999.0


# -- file shape ----------------------------------------------------------------------------------------


def test_a_header_only_file_has_no_rows():
    result = profile("a,b,c\n")

    assert result["rows"] == 0
    assert [col["type"] for col in result["columns"]] == ["empty"] * 3


def test_duplicate_and_empty_header_names_are_made_unique():
    result = profile("name,,name, name ,x\n1,2,3,4,5\n")

    assert [col["name"] for col in result["columns"]] == ["name", "column_2", "name_2", "name_3", "x"]


def test_a_utf8_bom_is_dropped():
    result = profile(b"\xef\xbb\xbfid,label\n1,\xc3\xa9t\xc3\xa9\n")

    assert [col["name"] for col in result["columns"]] == ["id", "label"]
    assert column(result, "label")["top"] == [{"value": "été", "count": 1}]


@pytest.mark.parametrize(
    ("delimiter", "text"),
    [
        (";", "name;amount;note\nalice;1,5;x\nbob;2,25;y, z\ncarol;3;w\n"),
        ("\t", "name\tamount\tnote\nalice\t1.5\tx, y\nbob\t2\tz\n"),
        ("|", "name|amount|note\nalice|1.5|x\nbob|2|y; z\n"),
        (",", "name,amount\nalice,1.5\nbob,2\n"),
    ],
)
def test_the_delimiter_is_detected(delimiter, text):
    result = profile(text)

    assert result["delimiter"] == delimiter
    assert [col["name"] for col in result["columns"]][:2] == ["name", "amount"]


def test_a_single_column_file_falls_back_to_comma():
    result = profile("word\nalpha\nbeta\n")

    assert result["delimiter"] == ","
    assert column(result, "word")["count"] == 2


def test_values_with_unclosed_leading_apostrophes_are_sniffed_as_comma_separated():
    # Excel-style text markers ('0123); the stdlib sniffer's quote regexes are quadratic on these
    result = profile("id,code\n" + "".join(f"{i}, '{i:05d}\n" for i in range(8_000)))

    assert result["delimiter"] == ","
    assert result["rows"] == 8_000


def test_quoted_fields_keep_delimiters_quotes_and_line_breaks():
    result = profile('id,note\r\n1,"a, ""quoted""\r\nsecond line"\r\n2,plain\r\n')

    assert result["rows"] == 2
    assert column(result, "note")["top"][0]["value"] == 'a, "quoted"\r\nsecond line'


def test_blank_lines_are_skipped():
    result = profile("a,b\n\n1,2\n\n  \n3,4\n")

    assert result["rows"] == 2


def test_bytes_counts_the_whole_stream():
    data = b"\xef\xbb\xbfa\n1\n"

    assert profile(data)["bytes"] == len(data)


def test_the_result_is_plain_json():
    result = profile("i,f,d,t,b,s\n1,1.5,2024-01-01,2024-01-01T10:00Z,yes,x\n2,,,,no,\n")

    assert json.loads(json.dumps(result, allow_nan=False)) == result


# -- bounded results ------------------------------------------------------------------------------------


def test_long_values_are_shown_cut_to_200_characters_and_flagged_but_counted_whole():
    name, a, b = "n" * 300, "a" * 250 + "1", "a" * 250 + "2"
    result = profile(f"{name},short\n{a},x\n{b},x\n{a},x\n")

    long_col, short_col = result["columns"]
    assert long_col["name"] == "n" * 200 + "…" and long_col["truncated"] is True
    assert long_col["distinct"] == 2  # the whole values: their shared 200-character start is not one
    assert long_col["top"] == [
        {"value": "a" * 200 + "…", "count": 2, "truncated": True},
        {"value": "a" * 200 + "…", "count": 1, "truncated": True},
    ]
    assert short_col["truncated"] is False and short_col["top"] == [{"value": "x", "count": 3}]
    assert result["truncated"] is True
    assert result["limits"] == {"columns": 1000, "top_values": 5, "value_chars": 200}


def test_integers_longer_than_200_digits_are_shown_as_cut_strings():
    big = "9" * 250
    col = profile(f"n\n1\n{big}\n")["columns"][0]

    assert col["type"] == "integer" and col["min"] == 1
    assert col["max"] == "9" * 200 + "…" and col["truncated"] is True


def test_a_profile_of_wide_cells_stays_small():
    cells = [[f"{row}{col}" + "z" * 5000 for col in range(50)] for row in range(6)]
    data = "\n".join([",".join(f"c{col}" for col in range(50))] + [",".join(row) for row in cells])

    result = profile(data)

    assert len(data) > 1_500_000 and len(json.dumps(result)) < 100_000
    shown = [top["value"] for col in result["columns"] for top in col["top"]]
    assert result["truncated"] is True and {len(value) for value in shown} == {201}


def test_nothing_is_flagged_when_nothing_was_cut():
    result = profile("a,b\n1,x\n2,y\n")

    assert result["truncated"] is False and not any(c["truncated"] for c in result["columns"])


# -- encodings ---------------------------------------------------------------------------------------


def test_a_utf8_file_says_so_without_notes():
    result = profile("name,city\nJosé,Zürich\n")

    assert (result["encoding"], result["notes"]) == ("utf-8", [])


@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 3])
def test_a_latin1_file_is_read_as_cp1252_with_a_note(chunk_size):
    result = profile("name,city\nJosé,Zürich\nRenée,Besançon\n".encode("latin-1"), chunk_size=chunk_size)

    assert result["encoding"] == "cp1252"
    assert result["notes"] == ["Read as cp1252 (not valid UTF-8)."]
    assert column(result, "name")["top"] == [{"value": "José", "count": 1}, {"value": "Renée", "count": 1}]
    assert column(result, "city")["top"][0] == {"value": "Besançon", "count": 1}


def test_a_cp1252_file_keeps_its_euro_signs_and_typographic_quotes():
    text = "item;price;note\nCafé;3,50 €;“naïve”\nCrème;1,20 €;\u2013\n"  # an en dash
    result = profile(text.encode("cp1252"))

    assert result["encoding"] == "cp1252"
    assert column(result, "price")["top"] == [
        {"value": "1,20 €", "count": 1},
        {"value": "3,50 €", "count": 1},
    ]
    assert {top["value"] for top in column(result, "note")["top"]} == {"“naïve”", "\u2013"}


def test_a_central_european_file_is_read_in_its_own_code_page():
    text = "jméno;město\nŽluťoučký kůň;Brno\nŠárka;Plzeň\n"
    result = profile(text.encode("cp1250"))

    assert result["encoding"] == "cp1250"
    assert result["notes"] == ["Read as cp1250 (not valid UTF-8)."]
    assert [col["name"] for col in result["columns"]] == ["jméno", "město"]


def test_a_file_that_is_not_utf8_deep_down_is_read_on_in_its_encoding_from_that_point():
    data = b"id,city\n" + b"".join(b"%d,Paris\n" % i for i in range(200_000)) + "9,Zürich\n".encode("latin-1")
    result = profile(data, chunk_size=64 * 1024)

    assert result["rows"] == 200_001 and result["encoding"] == "cp1252"
    assert column(result, "city")["distinct"] == 2
    assert {top["value"] for top in column(result, "city")["top"]} == {"Paris", "Zürich"}


def test_a_latin1_character_ending_the_file_without_a_line_break_is_read_too():
    result = profile("name\nJosé".encode("latin-1"))

    assert column(result, "name")["top"] == [{"value": "José", "count": 1}]


def test_a_byte_the_detected_encoding_cannot_read_names_its_line_and_asks_for_the_encoding():
    # The first chunk reads as cp1252; 0x81, far after it, is undefined in cp1252.
    data = "name\nJosé\nZürich\n".encode("latin-1") + b"plain\n" * 100 + b"x\x81y\n"
    error = failure(data, chunk_size=64)

    assert str(error) == (
        "Line 104: not valid cp1252 (byte 0x81); it was read as that because it is not valid UTF-8:"
        " declare its encoding."
    )


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 5])
def test_utf16_with_a_byte_order_mark_is_read_as_unicode_text(codec, chunk_size):
    # What spreadsheets save as "Unicode text": UTF-16 with a BOM, tab-separated, CRLF.
    text = '\ufeffname\tamount\tnote\r\nJosé\t1,5\t€ 𝄞\r\nBjörk\t-3,25\t"a\r\nb"\r\n'
    result = profile(text.encode(codec), chunk_size=chunk_size)

    assert (result["encoding"], result["delimiter"], result["rows"]) == (codec, "\t", 2)
    assert result["notes"] == [] and result["bytes"] == len(text.encode(codec))
    assert [col["name"] for col in result["columns"]] == ["name", "amount", "note"]
    assert column(result, "name")["top"] == [{"value": "Björk", "count": 1}, {"value": "José", "count": 1}]
    assert column(result, "note")["top"] == [{"value": "a\r\nb", "count": 1}, {"value": "€ 𝄞", "count": 1}]
    assert (column(result, "amount")["type"], column(result, "amount")["min"]) == ("float", -3.25)


def test_utf32_with_a_byte_order_mark_is_read_too():
    result = profile("\ufeffa,b\n1,ü\n".encode("utf-32-le"))

    assert result["encoding"] == "utf-32-le"
    assert column(result, "b")["top"] == [{"value": "ü", "count": 1}]


@pytest.mark.parametrize("chunk_size", [1 << 20, 2])
def test_utf16_errors_name_their_line(chunk_size):
    ragged = failure("\ufeffa\tb\r\n1\t2\r\n3\t4\t5\r\n".encode("utf-16-le"), chunk_size=chunk_size)
    nul = failure("\ufeffa\tb\r\n1\t2\r\n3\t\x00\r\n".encode("utf-16-le"), chunk_size=chunk_size)
    lone_surrogate = failure(
        "\ufeffa\n1\n".encode("utf-16-le") + b"\x00\xd8x\x00\n\x00", chunk_size=chunk_size
    )

    assert str(ragged) == "Line 3: expected 2 fields, found 3."
    assert str(nul) == "Line 3: binary data (NUL byte); this is not a text CSV file."
    assert str(lone_surrogate).startswith("Line 3: not valid UTF-16-LE")
    # Random bytes after what looks like a byte order mark are no UTF-16 text either.
    assert "not valid UTF-16-LE" in str(failure(b"\xff\xfe" + random.Random(8).randbytes(4096)))


def test_a_short_sample_the_sniffer_cannot_tell_takes_the_delimiter_of_its_first_line():
    result = profile('name\tnote\r\nann\t"a\r\nb, c"\r\nbob\tplain\r\n')

    assert (result["delimiter"], result["rows"]) == ("\t", 2)


def test_a_declared_encoding_is_used_instead_of_detecting_one():
    data = "名前,都市\n田中,東京\n".encode("shift_jis")

    result = profile(data, encoding="shift_jis")

    assert (result["encoding"], result["notes"]) == ("shift_jis", [])
    assert column(result, "都市")["top"] == [{"value": "東京", "count": 1}]
    assert str(failure(data)).startswith(
        "Line 1: not valid UTF-8 (byte 0x96), nor text in a single-byte encoding"
    )


def test_a_declared_single_byte_encoding_reads_what_detection_would_not_guess():
    result = profile("name\nJosé\n".encode("latin-1"), encoding="Latin-1")

    assert (result["encoding"], result["notes"]) == ("iso8859-1", [])
    assert column(result, "name")["top"] == [{"value": "José", "count": 1}]


def test_a_byte_order_mark_wins_over_a_declared_encoding():
    result = profile("\ufeffname\nJosé\n".encode("utf-16-le"), encoding="cp1252")

    assert result["encoding"] == "utf-16-le"
    assert column(result, "name")["top"] == [{"value": "José", "count": 1}]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("klingon", "Unknown encoding 'klingon'"),
        ("base64", "'base64' is not a text encoding"),
        ("rot13", "'rot13' is not a text encoding"),
    ],
)
def test_an_encoding_python_cannot_decode_text_with_is_refused(name, message):
    with pytest.raises(ValueError, match=message):
        profile("a\n1\n", encoding=name)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
        b"PK\x03\x04\x14\x00\x06\x00\x08\x00",  # a zip / xlsx
        bytes(random.Random(7).randbytes(8192)).replace(b"\x00", b""),  # no NUL, not UTF-8
        b"\x1f\x8b\x08\x08\xa5\xb1\xc3e\x02\xffdata.csv",  # gzip, without NUL in its first bytes
    ],
    ids=["png", "zip", "random", "gzip"],
)
def test_binary_files_still_fail_as_binary(data):
    assert "binary data" in str(failure(data))


# -- decimal commas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_decimal_commas_are_numbers_when_the_delimiter_is_not_a_comma(delimiter):
    rows = [
        ["price", "balance", "big", "count"],
        ["1,50", "-3,2", "1.234,5", "7"],
        ["2,25", "+0,5", "12.345.678,9", "8"],
    ]
    result = profile("".join(delimiter.join(row) + "\n" for row in rows))

    price, balance, big = column(result, "price"), column(result, "balance"), column(result, "big")
    assert [price["type"], balance["type"], big["type"]] == ["float", "float", "float"]
    assert (price["min"], price["max"], price["mean"]) == (1.5, 2.25, pytest.approx(1.875))
    assert (balance["min"], balance["max"]) == (-3.2, 0.5)
    assert (big["min"], big["max"]) == (1234.5, 12345678.9)
    assert column(result, "count")["type"] == "integer"
    assert price["top"][0]["value"] == "1,50"  # shown as written


def test_decimal_commas_mix_with_decimal_points_and_integers_in_one_column():
    col = column(profile("x;y\n1,5;a\n2.5;b\n3;c\n"), "x")

    assert (col["type"], col["min"], col["max"]) == ("float", 1.5, 3.0)


@pytest.mark.parametrize(
    "value", ["1,2,3", "1.2,3.4", "1,234.5", "12.34,5", "1,5e", "nan,0", "inf,5", ",", "1 ,5"]
)
def test_things_that_only_look_like_decimal_commas_stay_text(value):
    col = column(profile(f"x;y\n{value};a\n1,5;b\n"), "x")

    assert col["type"] == "string", value


def test_a_comma_in_a_comma_separated_file_is_never_a_decimal_comma():
    col = column(profile('x,y\n"1,5",a\n"2,5",b\n'), "x")

    assert col["type"] == "string"


def test_decimal_commas_stay_numbers_past_the_exact_distinct_limit():
    values = [f"{i},{i % 100:02d}" for i in range(5_000)]
    col = column(profile("v;w\n" + "".join(f"{v};x\n" for v in values), distinct_exact_limit=100), "v")

    assert (col["type"], col["distinct_exact"], col["min"], col["max"]) == ("float", False, 0.0, 4999.99)
    assert col["mean"] == pytest.approx(statistics.mean(float(v.replace(",", ".")) for v in values))


# -- bad files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"   \n\t\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \r\n"])
def test_an_empty_file_is_rejected(data):
    error = failure(data)

    assert str(error) == "The file is empty."
    assert error.line is None


@pytest.mark.parametrize("chunk_size", [1 << 20, 7])
def test_a_nul_byte_is_binary_data_on_its_line(chunk_size):
    error = failure(b"a,b\n1,2\n3,4\n5,\x006\n", chunk_size=chunk_size)

    assert str(error) == "Line 4: binary data (NUL byte); this is not a text CSV file."
    assert error.line == 4


@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 5])
def test_invalid_utf8_names_its_line_and_byte(chunk_size):
    error = failure(b"a,b\n1,caf\xc3\xa9\n2,\xff\n3,4\n", chunk_size=chunk_size)

    assert str(error) == "Line 3: not valid UTF-8 (byte 0xff)."


def test_a_truncated_utf8_character_at_the_end_is_invalid():
    error = failure(b"a\nx\n\xe2\x82")

    assert str(error) == "Line 3: not valid UTF-8 (byte 0xe2)."


def test_a_file_past_non_ascii_utf8_with_a_bad_byte_stays_utf8_and_names_its_line():
    # Mixed: valid UTF-8 before, latin-1 after; no single encoding reads it, so no guess.
    error = failure("name\nJosé\n".encode() + "Zoë\n".encode("latin-1"))

    assert str(error) == "Line 3: not valid UTF-8 (byte 0xeb)."


def test_a_ragged_row_names_its_line_and_field_counts():
    error = failure("a,b,c\n1,2,3\n4,5,6,7,8\n")

    assert str(error) == "Line 3: expected 3 fields, found 5."
    assert error.line == 3


def test_a_ragged_row_after_a_quoted_multiline_field_names_its_physical_line():
    text = 'a,b,c\n1,"two\nlines",3\n4,"three\r\nmore\nlines",6\n7,8\n'
    error = failure(text)

    assert str(error) == "Line 7: expected 3 fields, found 2."


def test_a_ragged_row_deep_in_a_large_file_names_its_line():
    lines = ["a,b,c,d,e,f,g,h", '0,"x\ny",2,3,4,5,6,7']
    lines += [",".join(str(n + k) for k in range(8)) for n in range(1, 20_000)]
    lines[15_000] = "1,2,3"
    error = failure("\r\n".join(lines) + "\r\n", chunk_size=4096)

    assert (
        str(error) == "Line 15002: expected 8 fields, found 3."
    )  # +1 for the header, +1 for the quoted break


def test_a_ragged_record_spanning_lines_is_reported_on_its_first_line():
    error = failure('a,b,c\n1,2,3\n4,"five\nstill five"\n6,7,8\n')

    assert str(error) == "Line 3: expected 3 fields, found 2."


def test_a_line_without_end_is_rejected_with_its_line(monkeypatch):
    from jobs.kinds.csv_profile import profiler as csv_profiler

    monkeypatch.setattr(csv_profiler, "MAX_LINE_CHARS", 1_000)
    error = failure("a,b\n1,2\n" + "x" * 5_000, chunk_size=256)

    assert error.line == 3
    assert "a line is longer than" in str(error)


def test_too_many_columns_are_rejected():
    error = failure("a,b,c,d\n1,2,3,4\n", max_columns=3)

    assert str(error) == "Line 1: the header has 4 columns; at most 3 are supported."


def test_a_field_over_the_csv_size_limit_names_its_line():
    error = failure("a,b\n1,2\n3," + "x" * 200_000 + "\n")

    assert error.line == 3
    assert "longer than the limit of" in str(error)


def test_an_unclosed_quote_hits_the_field_size_limit():
    error = failure('a,b\n1,"never closed\n' + "2,3\n" * 50_000)

    assert "longer than the limit of" in str(error)


def test_a_text_stream_is_refused():
    with pytest.raises(TypeError, match="binary stream"):
        profile_csv(io.StringIO("a\n1\n"))


def test_profiling_errors_are_not_stops():
    assert not issubclass(ProfileStopped, CsvProfileError)
    assert str(CsvProfileError("The file is empty.")) == "The file is empty."
    assert (
        str(CsvProfileError("expected 3 fields, found 5.", line=7)) == "Line 7: expected 3 fields, found 5."
    )


# -- streaming -----------------------------------------------------------------------------------------


def test_progress_is_monotonic_and_reaches_total_bytes():
    data = ("id,name\n" + "".join(f"{i},name {i}\n" for i in range(2_000))).encode()
    calls = []

    profile_csv(
        io.BytesIO(data),
        total_bytes=len(data),
        progress=lambda done, total: calls.append((done, total)),
        chunk_size=1024,
    )

    chunks = -(-len(data) // 1024)
    assert len(calls) <= chunks + 1
    assert calls[-1] == (len(data), len(data))
    assert all(total == len(data) for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_progress_without_a_known_total_reports_none():
    calls = []

    profile("a\n1\n", progress=lambda done, total: calls.append((done, total)))

    assert calls[-1] == (4, None)


def test_should_stop_raises_profile_stopped():
    data = ("n\n" + "1\n" * 10_000).encode()
    checks = []

    def should_stop():
        checks.append(1)
        return len(checks) >= 3

    with pytest.raises(ProfileStopped):
        profile_csv(io.BytesIO(data), should_stop=should_stop, chunk_size=1024)
    assert len(checks) == 3


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_multibyte_characters_split_across_chunks_decode_the_same(chunk_size):
    text = "word,sign\r\n" + "".join(f"é{i}€,𝄞ü{i % 3}\r\n" for i in range(40)) + '"a\rb",ø\r'
    expected = profile(text)

    assert profile(text, chunk_size=chunk_size) == {**expected}
    assert column(expected, "word")["distinct"] == 41
    assert expected["rows"] == 41


def test_crlf_split_between_chunks_is_one_line_break():
    text = "a,b\r\n1,2\r\n3,4,5\r\n"

    for chunk_size in (1, 2, 3, 4, 9, 10):
        assert failure(text, chunk_size=chunk_size).line == 3


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "cp1252"])
def test_memory_stays_flat_as_the_file_grows(encoding):
    from jobs.kinds.csv_profile import profiler as csv_profiler

    # UTF-16 (with its BOM) is transcoded chunk by chunk; cp1252 is found after the first chunk failed
    # as UTF-8: neither decodes the whole file.
    def make(rows: int) -> bytes:
        rng = random.Random(rows)
        return (
            "id,amount,tag,note\n"
            + "".join(
                f"{i},{rng.random() * 1000:.3f},t{i % 50}é,note {rng.getrandbits(48):x}\n"
                for i in range(rows)
            )
        ).encode(encoding)

    def peak(data: bytes) -> int:
        stream = io.BytesIO(data)
        tracemalloc.start()
        try:
            profile_csv(stream, distinct_exact_limit=2_000, chunk_size=64 * 1024)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = make(30_000), make(120_000)
    small_peak, large_peak = peak(small), peak(large)

    assert len(large) > 3.5 * len(small)
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    # A 4x file: ~no growth. The reader hands Arrow a bounded pipeline of chunks (profiler.FEED_CHUNKS +
    # AHEAD_BLOCKS + the one being parsed, each copied once), which a small file may never fill.
    pipeline = 2 * (csv_profiler.FEED_CHUNKS + csv_profiler.AHEAD_BLOCKS + 1) * 64 * 1024
    assert large_peak - small_peak < 0.1 * (len(large) - len(small)) + pipeline


def test_sketches_stay_bounded_with_many_distinct_values():
    import pyarrow as pa

    from jobs.kinds.csv_profile import columns as csv_columns

    column_state = csv_columns.ColumnProfile("v", 1_000)
    for start in range(0, 200_000, 5_000):
        column_state.add(pa.array([f"value-{i}" for i in range(start, start + 5_000)]))
    result = column_state.result()

    assert len(column_state.sketch) == csv_columns.SKETCH_SIZE
    assert column_state.top.num_active_items <= 2**csv_columns.TOP_LG_MAX_MAP
    assert column_state.exact_counts is None
    assert math.isclose(result["distinct"], 200_000, rel_tol=0.05)
