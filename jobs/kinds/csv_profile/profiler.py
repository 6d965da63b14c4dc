"""Streaming CSV profiler: per-column type, counts, distinct values, numeric/date ranges and top values.

``profile_csv(stream)`` reads a binary stream in chunks (1 MiB by default), decodes it incrementally (see
*Encodings*) and feeds ``csv.reader``; memory is bounded per column and does not grow with the file,
and nothing decodes the whole file at once. The delimiter is sniffed among ``, ; TAB |`` on the first
64 KiB (when the sniffer cannot tell, the one the first line holds most of, else comma; its quote-based
guess only reads the first 4 KiB). The first non-blank row is the header; empty header names become
``column_<n>`` (1-based position) and duplicates get a suffix (``name_2``, ``name_3``...). Quoting is
standard: ``"`` with doubled ``""`` inside quotes.

Encodings, in this order:

- A byte order mark names the encoding whatever else was said: UTF-8, UTF-16 or UTF-32 (little or big
  endian; what spreadsheets export as "Unicode text"). It is dropped.
- Else the ``encoding`` given (any text codec Python knows, see ``check_encoding``), strictly.
- Else UTF-8. A file that turns out not to be (a byte UTF-8 cannot decode) while all it decoded before
  was ASCII is read on in a single-byte encoding that charset-normalizer detects from the lines holding
  non-ASCII bytes from that point on (cp1252 when it fits about as well as the best); the result says
  so in ``notes`` ("Read as cp1252 (not valid UTF-8)."). A file already past non-ASCII UTF-8 stays
  UTF-8, and its bad byte is an error; so is a UTF-8 character (lead and continuation bytes) cut short
  by the end of the file.

The result's ``encoding`` is the one used (a Python codec name: ``utf-8``, ``utf-16-le``, ``cp1252``...).
Binary data is refused: a NUL character in any encoding, and in any encoding but UTF-8 a C0 control
character other than tab, line breaks, vertical tab, form feed and escape (random bytes decode in a
single-byte code page, and have these).

Values:

- A value is *empty* when, after stripping surrounding whitespace, it is ``""`` or one of
  ``NA``, ``N/A``, ``n/a``, ``NULL``, ``null``, ``None`` (case-sensitive, see ``EMPTY_VALUES``).
  Empty values are counted in ``empty`` and ignored by everything else.
- Non-empty values are stripped before type inference, distinct counting and top values, so ``" 7"``
  and ``"7"`` are the same value.
- Blank lines are skipped (not rows); so are whitespace-only lines when the file has several columns.

Type inference: the narrowest type that every non-empty value of the column fits, in this order of
preference: ``integer`` (ASCII digits with an optional sign; ``0``/``1`` are integers) ⊂ ``float``
(finite decimal or exponent notation; ``nan``/``inf`` are not floats; when the delimiter is not a comma,
a decimal comma too: ``1,50``, ``-3,2``, ``1.234,5``, read as 1.5, -3.2, 1234.5); ``boolean``
(``true``/``false``/``yes``/``no`` in any case, plus ``0``/``1`` - so a column mixing ``0``/``1`` with
``true``/``false`` is boolean, while a column of only ``0``/``1`` is integer); ``date`` (exactly
``YYYY-MM-DD``) ⊂ ``datetime`` (what ``datetime.fromisoformat`` accepts with an extended ``YYYY-MM-...``
date part; date-only values count as midnight; a column mixing UTC-offset and naive values is a
string); else ``string``. A column without non-empty values is ``empty``. Once a type has failed for a
column it is no longer tested.

Statistics: ``min``/``max``/``mean``/``stddev`` for integer and float columns (mean and the sample
standard deviation, ``None`` with fewer than 2 values; computed exactly for integers, and for floats by
batches merged with Chan's parallel form of Welford's update); ``min``/``max`` as ISO strings for
date/datetime columns; ``None`` otherwise.

Distinct values and top values are exact (``distinct_exact: true``) while a column has at most
``distinct_exact_limit`` distinct values. Past that the column switches to bounded sketches:

- ``distinct`` becomes an *estimate* from a K-minimum-values sketch of 8192 hashes (standard error
  about 1.1%; clamped to [limit + 1, count]). Python salts string hashes per process, so the estimate
  can differ slightly from one run to the next.
- ``top`` becomes *approximate*: values are counted in windows of 8192 per column; the values seen
  more than once in a window are added, with their count, to a Misra-Gries summary of 1024 counters.
  Reported counts are lower bounds, too low by at most about one in 900 of the column's values, and
  every value more frequent than that is listed; for a column of nearly unique values ``top`` can
  therefore be shorter than five, or empty.

Top values are ordered by count (descending), then value.

Size: the result is bounded whatever the file holds - at most ``max_columns`` columns (1,000 by
default; a wider header is an error), at most five top values per column, and every value it
shows (a column name, a top value, an integer ``min``/``max``) at most ``VALUE_MAX_CHARS`` (200)
characters: a longer one is cut to 200 and ends with ``…``, its top entry gains
``"truncated": true``, an integer that long becomes a string, and its column says
``"truncated": true``. Counting and typing always use the whole values; only what is shown is
cut. The result says so: ``"truncated"`` (any value cut) and ``"limits"``. So a result is at most
about 1.5 KB per column of ASCII text (1,000 columns: ~1.5 MB), however long the cells.

Bad input raises ``CsvProfileError`` (``str()`` is ``"Line N: problem."``, N the 1-based physical line,
the header being line 1; for a ragged record that spans lines because of quoted line breaks, the line
it starts on). ``should_stop`` returning true raises ``ProfileStopped`` (not a ``CsvProfileError``).
"""

from __future__ import annotations

import codecs
import csv
import heapq
import io
import math
import re
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, time
from functools import partial
from itertools import chain, compress, islice, repeat
from operator import attrgetter, gt, itemgetter, methodcaller, mul, sub
from typing import IO, Any

from charset_normalizer import from_bytes

__all__ = ["EMPTY_VALUES", "CsvProfileError", "ProfileStopped", "check_encoding", "profile_csv"]

CHUNK_SIZE = 1 << 20
SNIFF_BYTES = 64 * 1024
QUOTE_SNIFF_CHARS = 4096
DELIMITERS = ",;\t|"
MAX_LINE_CHARS = 16 * 1024 * 1024
BATCH_CELLS = 1 << 16  # rows are handled in batches of about this many cells
SKETCH_SIZE = 8192  # K of the K-minimum-values distinct estimator
TOP_COUNTERS = 1024  # Misra-Gries counters once a column is past the exact limit
TOP_PRUNE_AT = 4 * TOP_COUNTERS
TOP_N = 5
VALUE_MAX_CHARS = 200  # longest value (name, top value, integer min/max) a result shows
WINDOW = 8192  # values per column between two updates of the sketches, past the exact limit
DETECT_BYTES = 16 * 1024  # non-ASCII lines charset-normalizer is shown when a file is not UTF-8
# What a file that is not UTF-8 may be detected as: the single-byte code pages spreadsheets and older
# systems write (all ASCII supersets, so line breaks and delimiters are the same bytes).
SINGLE_BYTE_ENCODINGS = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
                         "cp1258", "iso8859_15", "koi8_r", "mac_roman", "cp437", "cp850")  # fmt: skip
# Windows' Western European code page, what most such files are: taken when it reads the evidence
# about as well as the best guess (within 0.01 of its chaos and 0.05 of its coherence). On a few lines
# of names charset-normalizer's scores barely differ between Latin code pages, and it breaks ties by
# its own order, cp1250 first: alone it read 46 of 50 generated cp1252 files as something else.
PREFERRED_SINGLE_BYTE = "cp1252"
_BOMS = (  # UTF-32-LE before UTF-16-LE: its mark starts with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# C0 controls no text file holds (tab, line breaks, form feed and vertical tab are text; ESC starts
# ISO-2022 shifts).
_CONTROL_BYTES = re.compile(rb"[\x01-\x08\x0e-\x1a\x1c-\x1f]")
_THOUSANDS_COMMA = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{3})+,[0-9]+")
_comma_to_point = methodcaller("replace", ",", ".")

EMPTY_VALUES = frozenset({"", "NA", "N/A", "n/a", "NULL", "null", "None"})
_BOOL_TOKENS = frozenset({"true", "false", "yes", "no", "0", "1"})

INTEGER, FLOAT, BOOLEAN, DATE, DATETIME = 1, 2, 4, 8, 16
_NUMERIC = INTEGER | FLOAT
_ALL_TYPES = INTEGER | FLOAT | BOOLEAN | DATE | DATETIME
_TYPE_NAMES = (
    (INTEGER, "integer"),
    (FLOAT, "float"),
    (BOOLEAN, "boolean"),
    (DATE, "date"),
    (DATETIME, "datetime"),
)

_HASH_OFFSET = 1 << 63
_HASH_SPACE = float(1 << 64)
_NO_THRESHOLD = 1 << 63  # above every hash(): accept all while the sketch is filling

_char_at_4 = itemgetter(4)
_tzinfo = attrgetter("tzinfo")


class CsvProfileError(Exception):
    """A file that cannot be profiled; str() names the line and the problem."""

    def __init__(self, message: str, *, line: int | None = None):
        self.message = message
        self.line = line
        super().__init__(f"Line {line}: {message}" if line is not None else message)


class ProfileStopped(Exception):
    """``should_stop`` asked to stop."""


def profile_csv(
    stream: IO[bytes],
    *,
    total_bytes: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    distinct_exact_limit: int = 10_000,
    max_columns: int = 1_000,
    chunk_size: int = CHUNK_SIZE,
    encoding: str | None = None,
) -> dict[str, Any]:
    """Profile the CSV in ``stream`` (binary, read to the end). See the module docstring for the rules.

    ``encoding`` is the file's declared encoding (``None``: detect; a byte order mark wins over it).

    ``progress(bytes_read, total_bytes)`` is called after each chunk read and once at the end;
    ``should_stop()`` is checked before each chunk read. Returns a JSON-serializable dict::

        {"rows": int, "bytes": int, "delimiter": str, "encoding": str, "notes": [str], "truncated": bool,
         "limits": {"columns": int, "top_values": 5, "value_chars": 200},
         "columns": [{"name", "type", "count", "empty", "distinct", "distinct_exact", "min", "max",
                      "mean", "stddev", "top": [{"value", "count"[, "truncated"]}], "truncated"}]}

    Shown values are at most VALUE_MAX_CHARS characters (see "Size" in the module docstring).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if distinct_exact_limit < 0 or max_columns < 1:
        raise ValueError("distinct_exact_limit must be >= 0 and max_columns >= 1")
    declared = check_encoding(encoding) if encoding else None
    source = _TextSource(stream, chunk_size, total_bytes, progress, should_stop, declared)
    pieces = source.pieces()

    head: list[str] = []
    head_chars = 0
    for piece in pieces:
        head.append(piece)
        head_chars += len(piece)
        if head_chars >= SNIFF_BYTES:
            break
    delimiter = _sniff_delimiter("".join(head)[:SNIFF_BYTES])

    lines = chain.from_iterable(map(_split_lines, chain(head, pieces)))
    del head
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        rows, columns = _profile_rows(reader, distinct_exact_limit, max_columns, delimiter != ",")
    except csv.Error as exc:
        raise _csv_error(exc, reader.line_num) from None
    if progress is not None:
        progress(source.bytes_read, total_bytes)
    shown = [column.result() for column in columns]
    return {
        "rows": rows,
        "bytes": source.bytes_read,
        "delimiter": delimiter,
        "encoding": source.encoding,
        "notes": source.notes,
        "truncated": any(column["truncated"] for column in shown),
        "limits": {"columns": max_columns, "top_values": TOP_N, "value_chars": VALUE_MAX_CHARS},
        "columns": shown,
    }


def check_encoding(name: str) -> str:
    """Python's name for the text encoding ``name``; ValueError saying why when there is none."""
    try:
        canonical = codecs.lookup(name.strip()).name
    except LookupError:
        raise ValueError(
            f"Unknown encoding {name!r}; use a name Python knows, such as cp1252 or latin-1."
        ) from None
    try:
        codecs.getincrementaldecoder(canonical)
        b"a\n".decode(canonical)
    except (LookupError, ValueError):  # a bytes-to-bytes codec (base64, zlib...), or one that decodes nothing
        raise ValueError(f"{name!r} is not a text encoding; use one such as cp1252 or latin-1.") from None
    return canonical


def _profile_rows(
    reader: Any, limit: int, max_columns: int, decimal_comma: bool
) -> tuple[int, list[_Column]]:
    header = None
    for row in reader:
        if row and (len(row) > 1 or row[0].strip()):
            header = row
            break
    if header is None:
        raise CsvProfileError("The file is empty.")
    header_line = reader.line_num
    width = len(header)
    if width > max_columns:
        raise CsvProfileError(
            f"the header has {width} columns; at most {max_columns} are supported.", line=header_line
        )
    columns = [_Column(name, limit, decimal_comma=decimal_comma) for name in _unique_names(header)]
    batch_rows = max(64, BATCH_CELLS // width)
    rows = 0
    line = header_line  # last physical line before the batch
    batch: list[list[str]] = []
    try:
        for row in reader:
            batch.append(row)
            if len(batch) == batch_rows:
                rows += _add_batch(columns, batch, line)
                line = reader.line_num
                batch = []
    except (CsvProfileError, csv.Error):
        _drop_blank_or_raise(batch, width, line)  # a bad row before the failure is the first problem
        raise
    rows += _add_batch(columns, batch, line)
    return rows, columns


def _add_batch(columns: list[_Column], batch: list[list[str]], line: int) -> int:
    width = len(columns)
    lengths = set(map(len, batch))
    if len(lengths) != 1 or width not in lengths:
        batch = _drop_blank_or_raise(batch, width, line)
    if batch:
        for column, values in zip(columns, zip(*batch, strict=True), strict=True):
            column.add(values)
    return len(batch)


def _drop_blank_or_raise(batch: list[list[str]], width: int, line: int) -> list[list[str]]:
    """Skip blank rows; raise for a row of the wrong width, naming the physical line it starts on."""
    kept = []
    for row in batch:
        start = line + 1
        line = start + sum(map(_line_breaks, row))
        if len(row) == width:
            kept.append(row)
        elif row and (len(row) > 1 or row[0].strip()):
            raise CsvProfileError(f"expected {width} fields, found {len(row)}.", line=start)
    return kept


def _line_breaks(text: str) -> int:
    """Line breaks in a (quoted) field: \\n, \\r\\n and lone \\r each count once, like the line splitter."""
    if "\r" not in text:
        return text.count("\n")
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _unique_names(header: list[str]) -> list[str]:
    names = [name.strip() or f"column_{position}" for position, name in enumerate(header, 1)]
    taken = set()
    unique = []
    for name in names:
        candidate, suffix = name, 1
        while candidate in taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        taken.add(candidate)
        unique.append(candidate)
    return unique


class _Sniffer(csv.Sniffer):
    """csv.Sniffer whose quote-based guess only looks at the start of the sample.

    Its regexes (``,".*?",`` with DOTALL) take time quadratic in the sample when quotes are left open
    (e.g. Excel's leading-apostrophe values): about 14 s on 64 KiB. The delimiter-frequency guess
    still uses the whole sample.
    """

    def _guess_quote_and_delimiter(self, data: str, delimiters: str | None) -> Any:
        return super()._guess_quote_and_delimiter(data[:QUOTE_SNIFF_CHARS], delimiters)  # type: ignore[misc]


def _sniff_delimiter(sample: str) -> str:
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    if cut > 0:
        sample = sample[: cut + 1]
    first_line = sample.split("\n", 1)[0]
    try:
        delimiter = _Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        # A short sample with a ragged row or a quoted line break: the header line's delimiter.
        return max(DELIMITERS, key=first_line.count) if any(map(first_line.count, DELIMITERS)) else ","
    if delimiter not in DELIMITERS:
        return ","
    if delimiter not in first_line and "," in first_line:
        return ","
    return delimiter


def _split_lines(text: str) -> Iterator[str]:
    # \n, \r\n and \r end lines (kept, so quoted fields keep their line breaks); other Unicode line
    # separators do not, unlike str.splitlines().
    return iter(io.StringIO(text, newline=""))


def _csv_error(exc: csv.Error, line: int) -> CsvProfileError:
    message = str(exc)
    if "field larger than field limit" in message:
        return CsvProfileError(
            f"a field is longer than the limit of {csv.field_size_limit()} characters"
            " (is a quote left unclosed?).",
            line=line,
        )
    return CsvProfileError(f"malformed CSV ({message}).", line=line)


class _TextSource:
    """Reads the byte stream in chunks and yields decoded text made of whole lines."""

    def __init__(
        self,
        stream: IO[bytes],
        chunk_size: int,
        total_bytes: int | None,
        progress: Callable[[int, int | None], None] | None,
        should_stop: Callable[[], bool] | None,
        declared: str | None = None,
    ):
        self.stream = stream
        self.chunk_size = chunk_size
        self.total_bytes = total_bytes
        self.progress = progress
        self.should_stop = should_stop
        self.declared = declared
        self.encoding = "utf-8"  # the one in use; a fallback changes it
        self.notes: list[str] = []
        self.guessed = False
        self.check_controls = False
        self.bytes_read = 0
        self.lines_before = 0  # physical line breaks in the bytes before the current chunk
        self.ended_with_cr = False

    def raw_chunks(self) -> Iterator[bytes]:
        read, size = self.stream.read, self.chunk_size
        while True:
            if self.should_stop is not None and self.should_stop():
                raise ProfileStopped("Profiling was stopped.")
            chunk = read(size)
            if not chunk:
                return
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError("profile_csv needs a binary stream (open the file in 'rb' mode)")
            chunk = bytes(chunk)
            self.bytes_read += len(chunk)
            if self.progress is not None:
                self.progress(self.bytes_read, self.total_bytes)
            yield chunk

    def checked(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks (bytes in which line breaks, NUL and controls are ASCII), refused when binary;
        counts their line breaks."""
        for chunk in chunks:
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise CsvProfileError(
                    "binary data (NUL byte); this is not a text CSV file.", line=self._line_of(chunk, nul)
                )
            if self.check_controls:
                self._refuse_controls(chunk)
            yield chunk
            self.lines_before += _byte_line_breaks(chunk)
            if self.ended_with_cr and chunk[:1] == b"\n":
                self.lines_before -= 1
            self.ended_with_cr = chunk[-1:] == b"\r"

    def _refuse_controls(self, data: bytes) -> None:
        control = _CONTROL_BYTES.search(data)
        if control is not None:
            raise CsvProfileError(
                f"binary data (control byte 0x{data[control.start()]:02x}); this is not a text CSV file.",
                line=self._line_of(data, control.start()),
            )

    def _line_of(self, data: bytes, offset: int) -> int:
        before = data[:offset]
        line = self.lines_before + _byte_line_breaks(before) + 1
        if self.ended_with_cr and before[:1] == b"\n":
            line -= 1
        return line

    def pieces(self) -> Iterator[str]:
        raw = self.raw_chunks()
        head = b""
        for chunk in raw:
            head += chunk
            if len(head) >= 4:  # the longest byte order mark
                break
        chunks = chain((head,), raw) if head else raw
        encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
        may_fall_back = encoding is None and self.declared is None
        self.encoding = encoding or self.declared or "utf-8"
        self.check_controls = self.encoding != "utf-8"
        if not _ascii_compatible(self.encoding):
            chunks = self._transcoded(chunks)  # to UTF-8, so lines and NULs are counted on bytes
            decode = codecs.getincrementaldecoder("utf-8")("strict").decode
        else:
            decode = codecs.getincrementaldecoder(self.encoding)("strict").decode
        ascii_so_far = True
        carry = ""
        started = False
        for chunk in self.checked(chunks):
            try:
                text = decode(chunk)
            except UnicodeDecodeError as exc:
                if not (may_fall_back and ascii_so_far and _ascii_before(exc)):
                    raise self._decode_error(exc) from None
                may_fall_back = False
                decode, text = self._fall_back(exc)
            if ascii_so_far and not text.isascii():  # O(1) on str
                ascii_so_far = False
            if not started and text:
                started = True
                if text[0] == "\ufeff":
                    text = text[1:]
            if carry:
                text = carry + text
            end = len(text) - 1 if text.endswith("\r") else len(text)  # \r\n may straddle chunks
            cut = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end)) + 1
            if cut:
                yield text[:cut]
                carry = text[cut:]
            else:
                carry = text
            if len(carry) > MAX_LINE_CHARS:
                # carry is the unfinished last line (plus maybe a \r the next chunk may pair with \n)
                line = self.lines_before + _byte_line_breaks(chunk) + 1 - carry.endswith("\r")
                raise CsvProfileError(
                    f"a line is longer than {MAX_LINE_CHARS // (1024 * 1024)} Mi characters;"
                    " this does not look like a CSV file.",
                    line=line,
                )
        try:
            text = decode(b"", True)
        except UnicodeDecodeError as exc:
            # A lead byte and its continuation bytes cut by the end are a UTF-8 character cut short.
            cut_short = len(exc.object) - exc.start > 1
            if cut_short or not (may_fall_back and ascii_so_far and _ascii_before(exc)):
                raise self._decode_error(exc) from None
            decode, text = self._fall_back(exc)
            text += decode(b"", True)
        if not started and text[:1] == "\ufeff":
            text = text[1:]
        carry += text
        if carry:
            yield carry

    def _fall_back(self, exc: UnicodeDecodeError) -> tuple[Callable[..., str], str]:
        """Read on, from the bytes UTF-8 could not decode, in the single-byte encoding they look like.

        Everything decoded before was ASCII, which every candidate reads the same: the file is
        read as if it had been in that encoding from the start."""
        data = bytes(exc.object)  # the decoder's pending bytes (no line break) + this chunk
        self._refuse_controls(data)  # this chunk passed checked() before the fallback turned these on
        encoding = _detect_single_byte(data, exc.start)
        if encoding is None:
            byte = data[exc.start] if exc.start < len(data) else 0
            raise CsvProfileError(
                f"not valid UTF-8 (byte 0x{byte:02x}), nor text in a single-byte encoding;"
                " declare the file's encoding.",
                line=self._line_of(data, exc.start),
            )
        self.encoding, self.guessed, self.check_controls = encoding, True, True
        self.notes.append(f"Read as {encoding} (not valid UTF-8).")
        decode = codecs.getincrementaldecoder(encoding)("strict").decode
        try:
            return decode, decode(data)
        except UnicodeDecodeError as again:
            raise self._decode_error(again) from None

    def _transcoded(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Decode an encoding whose line breaks are not single ASCII bytes (UTF-16, UTF-32), as UTF-8."""
        decode = codecs.getincrementaldecoder(self.encoding)("strict").decode
        for chunk in chunks:
            try:
                yield decode(chunk).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._transcoding_error(exc) from None
        try:
            yield decode(b"", True).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._transcoding_error(exc) from None

    def _transcoding_error(self, exc: UnicodeDecodeError) -> CsvProfileError:
        # checked() has counted the lines of all the text yielded before; count those of the part of
        # this chunk that decoded.
        data = bytes(exc.object)
        before = data[: exc.start].decode(self.encoding, "replace").encode("utf-8")
        byte = data[exc.start] if exc.start < len(data) else 0
        return CsvProfileError(
            f"not valid {_shown_encoding(self.encoding)} (byte 0x{byte:02x}).",
            line=self._line_of(before, len(before)),
        )

    def _decode_error(self, exc: UnicodeDecodeError) -> CsvProfileError:
        # exc.object is the decoder's pending bytes (part of one character, no line break) + this chunk.
        data = bytes(exc.object)
        line = self._line_of(data, exc.start)
        byte = data[exc.start] if exc.start < len(data) else 0
        guessed = (
            "; it was read as that because it is not valid UTF-8: declare its encoding"
            if self.guessed
            else ""
        )
        return CsvProfileError(
            f"not valid {_shown_encoding(self.encoding)} (byte 0x{byte:02x}){guessed}.", line=line
        )


def _ascii_before(exc: UnicodeDecodeError) -> bool:
    """Whether the bytes the decoder took before the one it could not decode are ASCII."""
    return bytes(exc.object[: exc.start]).isascii()


def _shown_encoding(name: str) -> str:
    """UTF-8, UTF-16-LE; other codec names as Python spells them (cp1252)."""
    return name.upper() if name.startswith("utf") else name


def _ascii_compatible(encoding: str) -> bool:
    """Whether ASCII text (line breaks, delimiters, NUL) is the same bytes in ``encoding``."""
    sample = b'\r\n\x00\t,;|"a'
    try:
        return sample.decode(encoding) == sample.decode("ascii")
    except UnicodeDecodeError:
        return False


def _detect_single_byte(data: bytes, start: int) -> str | None:
    """The single-byte encoding charset-normalizer finds for the non-ASCII lines of ``data`` from
    ``start`` on (``None``: none fits, e.g. a multi-byte encoding)."""
    lines = data[data.rfind(b"\n", 0, start) + 1 :].splitlines(keepends=True)
    # Only the lines that tell encodings apart: every candidate reads ASCII the same.
    evidence = b"".join(islice((line for line in lines if not line.isascii()), 256))[:DETECT_BYTES]
    steps = max(1, len(evidence) // 512)  # every byte of the evidence, not a sample of it
    matches = from_bytes(evidence, cp_isolation=list(SINGLE_BYTE_ENCODINGS), steps=steps)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if (
            PREFERRED_SINGLE_BYTE in match.could_be_from_charset
            and match.chaos - best.chaos < 0.01
            and best.coherence - match.coherence < 0.05
        ):
            return PREFERRED_SINGLE_BYTE
    return codecs.lookup(best.encoding).name


def _byte_line_breaks(data: bytes) -> int:
    if b"\r" not in data:
        return data.count(b"\n")
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


class _Column:
    """One column's state.

    Exact mode: a Counter of raw values, until more than ``limit`` distinct values. Then windowed mode:
    values are counted per window of about ``WINDOW`` values (a Counter again, so the per-cell work stays
    in C) and each window's distinct values update the type, statistics, the distinct-value sketch and
    the top-values summary.
    """

    __slots__ = (
        "count",
        "counter",
        "decimal_comma",
        "dt_hi",
        "dt_lo",
        "empty",
        "exact",
        "exact_check_at",
        "f_m2",
        "f_mean",
        "i_sumsq",
        "i_total",
        "limit",
        "n_num",
        "name",
        "num_hi",
        "num_kind",
        "num_lo",
        "num_ok",
        "pending",
        "sketch",
        "threshold",
        "top",
        "types",
        "tz_aware",
    )

    def __init__(self, name: str, limit: int, *, decimal_comma: bool = False):
        self.name = name
        self.limit = limit
        self.decimal_comma = decimal_comma  # "1,5" is a number (the delimiter is not a comma)
        self.exact = True
        self.counter: Counter[str] = Counter()  # all values (exact mode) or this window's (windowed)
        self.exact_check_at = limit
        self.pending = 0  # values in the current window
        self.count = 0
        self.empty = 0
        self.types = _ALL_TYPES
        self.num_kind: str | None = None  # "int" or "float" while a numeric type is possible
        self.num_ok = True
        self.n_num = 0
        self.i_total = self.i_sumsq = 0
        self.f_mean = self.f_m2 = 0.0
        self.num_lo: Any = None
        self.num_hi: Any = None
        self.dt_lo: Any = None
        self.dt_hi: Any = None
        self.tz_aware: bool | None = None
        self.sketch = array("q")  # the SKETCH_SIZE smallest hashes seen, sorted
        self.threshold = _NO_THRESHOLD
        self.top: Counter[str] = Counter()

    # -- streaming -----------------------------------------------------------------------------------

    def add(self, values: tuple[str, ...]) -> None:
        self.counter.update(values)
        if self.exact:
            if len(self.counter) > self.exact_check_at:
                self._maybe_leave_exact()
        else:
            self.pending += len(values)
            if self.pending >= WINDOW:
                self._flush()

    def _maybe_leave_exact(self) -> None:
        merged, empty = _merge_stripped(self.counter)
        if len(merged) <= self.limit:
            # Raw spellings ("7", " 7", "") outnumber the distinct values; look again when they could not.
            self.exact_check_at = self.limit + len(self.counter) - len(merged)
            return
        self.exact = False
        self.counter = Counter()
        self.empty = empty
        keys, counts = list(merged), list(merged.values())
        self.count = sum(counts)
        self._absorb(keys, counts if self.count != len(counts) else None)
        self._sketch_add(list(map(hash, keys)))
        self.top = Counter(merged)
        self._prune_top()

    def _flush(self) -> None:
        window: dict[str, int]  # a Counter, then the plain dict _merge_stripped makes of it
        window, self.counter, self.pending = self.counter, Counter(), 0
        pop = window.pop
        empty = 0
        for token in EMPTY_VALUES:
            empty += pop(token, 0)
        keys = list(window)
        if list(map(str.strip, keys)) != keys:  # some values have surrounding whitespace
            window, more_empty = _merge_stripped(window)
            empty += more_empty
            keys = list(window)
        counts = list(window.values())
        total = sum(counts)
        self.empty += empty
        self.count += total
        if not keys:
            return
        if self.types:
            self._absorb(keys, counts if total != len(counts) else None)
        new = list(filter(partial(gt, self.threshold), map(hash, keys)))
        if new:
            self._sketch_add(new)
        if total != len(counts):
            # Values seen more than once in this window go to the Misra-Gries summary (with their full
            # count, so counts stay lower bounds); a value loses at most one occurrence per window.
            self.top.update(dict(compress(zip(keys, counts, strict=True), map(gt, counts, repeat(1)))))
            if len(self.top) > TOP_PRUNE_AT:
                self._prune_top()

    def _sketch_add(self, new: list[int]) -> None:
        """Merge hashes into the sorted sketch of the SKETCH_SIZE smallest distinct hashes."""
        new.sort()
        sketch = self.sketch
        if len(new) > len(sketch) // 4:
            merged = dict.fromkeys(sorted(chain(sketch, new)))  # two sorted runs: a linear merge
            sketch = array("q", islice(merged, SKETCH_SIZE))
        else:  # a few new hashes (the usual case once the sketch is full): splice them in
            spliced = array("q")
            start, size = 0, len(sketch)
            for value in new:
                at = bisect_left(sketch, value, start)
                if at < size and sketch[at] == value:
                    continue
                spliced += sketch[start:at]
                spliced.append(value)
                start = at
            spliced += sketch[start:]
            del spliced[SKETCH_SIZE:]
            sketch = spliced
        self.sketch = sketch
        if len(sketch) >= SKETCH_SIZE:
            self.threshold = sketch[-1]

    def _prune_top(self) -> None:
        """Misra-Gries merge step: subtract the (k+1)-th largest count, drop counters at or below zero."""
        top = self.top
        if len(top) <= TOP_COUNTERS:
            return
        cut = sorted(top.values(), reverse=True)[TOP_COUNTERS]
        self.top = Counter({value: n - cut for value, n in top.items() if n > cut})

    def _absorb(self, vals: list[str], weights: list[int] | None) -> None:
        """Narrow the possible types with these stripped non-empty values, then update the statistics."""
        types = self.types
        ints: Any = None
        floats: Any = None
        if types & _NUMERIC:
            joined = "".join(vals)
            if "_" in joined or not joined.isascii():  # int()/float() accept 1_000 and non-ASCII digits
                types &= ~_NUMERIC
            else:
                if types & INTEGER:
                    try:
                        ints = list(map(int, vals))
                    except ValueError:
                        types &= ~INTEGER
                if ints is None and types & FLOAT:
                    try:
                        floats = list(map(float, vals))
                    except ValueError:
                        if self.decimal_comma and "," in joined:
                            floats = _decimal_comma_floats(vals)
                    if floats is None:
                        types &= ~FLOAT
                    elif not math.isfinite(sum(floats)) and not all(map(math.isfinite, floats)):
                        types &= ~FLOAT  # nan, inf, 1e999
                        floats = None
            del joined
        if types & BOOLEAN and not _BOOL_TOKENS.issuperset(map(str.lower, vals)):
            types &= ~BOOLEAN
        dates: Any = None
        stamps: Any = None
        if types & DATE:
            try:
                dates = list(map(date.fromisoformat, vals))
            except ValueError:
                types &= ~DATE
            else:
                if list(map(date.isoformat, dates)) != vals:
                    types &= ~DATE
                    dates = None
        if types & DATETIME and dates is None:
            try:
                stamps = list(map(datetime.fromisoformat, vals))
            except ValueError:
                types &= ~DATETIME
            else:
                zones = set(map(_tzinfo, stamps))
                aware = None not in zones
                mixed = (len(zones) > 1 and not aware) or self.tz_aware not in (None, aware)
                if mixed or set(map(_char_at_4, vals)) != {"-"}:
                    types &= ~DATETIME
                    stamps = None
                else:
                    self.tz_aware = aware
        elif dates is not None:
            if self.tz_aware:
                types &= ~DATETIME
            self.tz_aware = False
        previous, self.types = self.types, types

        if types & INTEGER:
            self._add_ints(ints, weights)
        elif types & FLOAT:
            if previous & INTEGER and self.num_kind == "int":
                self._ints_to_floats()
            self._add_floats(floats, weights)
        elif self.num_kind is not None:
            self.num_kind = self.num_lo = self.num_hi = None
        if types & DATE:
            self._add_temporal(dates)
        elif types & DATETIME:
            if previous & DATE and self.dt_lo is not None:
                self.dt_lo = datetime.combine(self.dt_lo, time())
                self.dt_hi = datetime.combine(self.dt_hi, time())
            self._add_temporal(stamps)
        elif self.dt_lo is not None:
            self.dt_lo = self.dt_hi = None

    def _add_ints(self, ints: list[int], weights: list[int] | None) -> None:
        if weights is None:
            n = len(ints)
            total = sum(ints)
            sumsq = sum(map(mul, ints, ints))
        else:
            n = sum(weights)
            total = sum(map(mul, ints, weights))
            sumsq = sum(map(mul, map(mul, ints, ints), weights))
        lo, hi = min(ints), max(ints)
        if self.num_kind is None:
            self.num_kind, self.num_lo, self.num_hi = "int", lo, hi
        else:
            self.num_lo, self.num_hi = min(self.num_lo, lo), max(self.num_hi, hi)
        self.n_num += n
        self.i_total += total
        self.i_sumsq += sumsq

    def _ints_to_floats(self) -> None:
        n = self.n_num
        self.num_kind = "float"
        try:
            self.num_lo, self.num_hi = float(self.num_lo), float(self.num_hi)
            self.f_mean = self.i_total / n
            self.f_m2 = (n * self.i_sumsq - self.i_total * self.i_total) / n
        except OverflowError:
            self.num_ok = False
        self.i_total = self.i_sumsq = 0

    def _add_floats(self, floats: list[float], weights: list[int] | None) -> None:
        lo, hi = min(floats), max(floats)
        if self.num_kind is None:
            self.num_kind, self.num_lo, self.num_hi = "float", lo, hi
        else:
            self.num_lo, self.num_hi = min(self.num_lo, lo), max(self.num_hi, hi)
        if not self.num_ok:
            return
        try:
            if weights is None:
                n = len(floats)
                mean = math.fsum(floats) / n
                deltas = list(map(sub, floats, repeat(mean)))
                m2 = math.fsum(map(mul, deltas, deltas))
            else:
                n = sum(weights)
                mean = math.fsum(map(mul, floats, weights)) / n
                deltas = list(map(sub, floats, repeat(mean)))
                m2 = math.fsum(map(mul, map(mul, deltas, deltas), weights))
            # Chan et al.: merge this batch's (n, mean, M2) into the running Welford state.
            before = self.n_num
            total = before + n
            delta = mean - self.f_mean
            self.f_mean += delta * n / total
            self.f_m2 += m2 + delta * delta * before * n / total
            self.n_num = total
        except OverflowError:
            self.num_ok = False

    def _add_temporal(self, values: list[date] | list[datetime]) -> None:
        lo, hi = min(values), max(values)
        if self.dt_lo is None:
            self.dt_lo, self.dt_hi = lo, hi
        else:
            self.dt_lo, self.dt_hi = min(self.dt_lo, lo), max(self.dt_hi, hi)

    # -- result --------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        if self.exact:
            merged, self.empty = _merge_stripped(self.counter)
            self.counter = Counter()
            keys, counts = list(merged), list(merged.values())
            self.count = sum(counts)
            if keys:
                self._absorb(keys, counts if self.count != len(counts) else None)
            distinct, top = len(merged), merged
        else:
            if self.pending:
                self._flush()
            distinct, top = self._estimate_distinct(), self.top
        kind = "empty" if not self.count else "string"
        for flag, name in _TYPE_NAMES:
            if self.count and self.types & flag:
                kind = name
                break
        low = high = mean = stddev = None
        if kind in ("integer", "float"):
            low, high = self.num_lo, self.num_hi
            if self.num_ok:
                mean, stddev = self._mean_stddev(kind)
        elif kind in ("date", "datetime"):
            low, high = self.dt_lo.isoformat(), self.dt_hi.isoformat()
        best = heapq.nsmallest(TOP_N, top.items(), key=_top_order)
        name, truncated = _shown(self.name)
        shown_top = []
        for value, n in best:
            text, cut = _shown(value)
            entry: dict[str, Any] = {"value": text, "count": n}
            if cut:
                entry["truncated"] = truncated = True
            shown_top.append(entry)
        if kind == "integer":
            low, low_cut = _shown_integer(low)
            high, high_cut = _shown_integer(high)
            truncated |= low_cut or high_cut
        return {
            "name": name,
            "type": kind,
            "count": self.count,
            "empty": self.empty,
            "distinct": distinct,
            "distinct_exact": self.exact,
            "min": low,
            "max": high,
            "mean": mean,
            "stddev": stddev,
            "top": shown_top,
            "truncated": truncated,
        }

    def _mean_stddev(self, kind: str) -> tuple[float | None, float | None]:
        n = self.n_num
        try:
            if kind == "integer":
                mean = self.i_total / n
                variance = (n * self.i_sumsq - self.i_total * self.i_total) / (n * (n - 1)) if n > 1 else None
            else:
                mean = self.f_mean
                variance = max(self.f_m2, 0.0) / (n - 1) if n > 1 else None
        except OverflowError:
            return None, None
        stddev = math.sqrt(variance) if variance is not None else None
        return _finite(mean), _finite(stddev)

    def _estimate_distinct(self) -> int:
        sketch = self.sketch
        if len(sketch) < SKETCH_SIZE:
            estimate = len(sketch)
        else:
            kth = (sketch[-1] + _HASH_OFFSET + 1) / _HASH_SPACE
            estimate = round((SKETCH_SIZE - 1) / kth)
        return max(self.limit + 1, min(estimate, self.count))


def _decimal_comma_floats(vals: list[str]) -> list[float] | None:
    """The values as numbers where a comma may be the decimal point (``1,5``, ``1.234,5``); else None."""
    try:
        return list(map(float, map(_comma_to_point, vals)))
    except ValueError:
        pass
    try:
        return list(map(float, map(_comma_to_point, map(_without_thousands, vals))))
    except ValueError:
        return None


def _without_thousands(value: str) -> str:
    return value.replace(".", "") if _THOUSANDS_COMMA.fullmatch(value) else value


def _merge_stripped(counter: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Counts by stripped value, without the empty values; and the number of empty values."""
    merged: dict[str, int] = {}
    empty = 0
    get = merged.get
    for raw, n in counter.items():
        value = raw.strip()
        if value in EMPTY_VALUES:
            empty += n
        else:
            merged[value] = get(value, 0) + n
    return merged, empty


def _shown(value: str) -> tuple[str, bool]:
    """A value as the result shows it: at most VALUE_MAX_CHARS characters, ``…`` ending a cut one."""
    if len(value) <= VALUE_MAX_CHARS:
        return value, False
    return value[:VALUE_MAX_CHARS] + "…", True


def _shown_integer(value: int | None) -> tuple[int | str | None, bool]:
    # Python reads integers of up to 4,300 digits; more than 200 are shown as a cut string.
    if value is None or -(10**VALUE_MAX_CHARS) < value < 10**VALUE_MAX_CHARS:
        return value, False
    return _shown(str(value))


def _top_order(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
