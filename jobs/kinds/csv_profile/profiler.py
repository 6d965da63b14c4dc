"""Streaming CSV profiler: per-column type, counts, distinct values, numeric/date ranges and top values.

``profile_csv(stream)`` reads a binary stream in chunks (1 MiB by default) and decodes it incrementally
(see *Encodings*), in the caller's thread (which also runs ``progress`` and ``should_stop``). A seekable
stream's text goes, as UTF-8, to Arrow's streaming CSV reader in a worker thread (every column read as
strings, ``chunk_size`` bytes a batch), and each batch is profiled column by column with vectorized
kernels (``columns.ColumnProfile``). Where Arrow's outcome could differ from Python's csv module's - any
error (the csv module names the physical line), a row of another width (a whitespace-only line, which
the csv module skips), a field over ``csv.field_size_limit()``, a header past the sniffed start - the
stream is read again from its start with ``csv.reader``, as a stream that cannot seek always is, so
the outcome is the csv module's. Memory is bounded per column and does not grow with the file, and
nothing decodes the whole file at once. The delimiter is sniffed among ``, ; TAB |`` on the first
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
batches merged with Chan's parallel form of Welford's update, so their last bits depend on the batches);
``min``/``max`` as ISO strings for date/datetime columns; ``None`` otherwise.

Distinct values and top values are exact (``distinct_exact: true``) while a column has at most
``distinct_exact_limit`` distinct values. Past that the column switches to bounded sketches:

- ``distinct`` becomes an *estimate* from a K-minimum-values sketch of 8192 64-bit hashes (polars'
  seeded string hash; standard error about 1.1%; clamped to [limit + 1, count]). The hash is fixed, so
  a file gives the same estimate in every process (Python's own ``hash`` is salted per process).
- ``top`` becomes *approximate*: each batch's values seen more than once in that batch (the values
  of a batch, when the column leaves the exact mode, with their exact counts) are added, with their
  count, to an Apache DataSketches frequent-items sketch of 1024 slots. Reported counts are its lower
  bounds: too low by at most the sketch's error (about 3.5 in 1,000 of the values it was given), plus
  one per batch in which the value was seen once; only values whose lower bound exceeds that error are
  listed, so for a column of nearly unique values ``top`` can be shorter than five, or empty.

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
import io
import queue
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from typing import IO, Any, NamedTuple

from charset_normalizer import from_bytes

from .columns import EMPTY_VALUES, TOP_N, VALUE_MAX_CHARS, ColumnProfile

__all__ = ["EMPTY_VALUES", "CsvProfileError", "ProfileStopped", "check_encoding", "profile_csv"]

CHUNK_SIZE = 1 << 20
SNIFF_BYTES = 64 * 1024
QUOTE_SNIFF_CHARS = 4096
DELIMITERS = ",;\t|"
MAX_LINE_CHARS = 16 * 1024 * 1024
BATCH_CELLS = 1 << 16  # the csv module's rows are handled in batches of about this many cells
MIN_ARROW_BLOCK = 64 * 1024  # Arrow parses chunk_size bytes per batch, at least this many
FEED_CHUNKS = 2  # chunks read ahead of Arrow's reader
COLUMN_THREADS = 2  # columns profiled at once (measured: bench/README.md, scenario 8)
AHEAD_BLOCKS = 2  # blocks Arrow's reader may hold beyond the batch being profiled
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
    options = _Options(distinct_exact_limit, max_columns, chunk_size, declared, total_bytes, should_stop)
    if progress is not None:
        progress = _Forward(progress)
    start = stream.tell() if stream.seekable() else None
    if start is not None:
        try:
            return _profile(stream, options, progress, with_arrow=True)
        except _NotForArrow:
            # A bad file (its first problem found exactly by the csv module, with its physical line), or
            # one Arrow parses differently (whitespace-only lines, a header past the sniffed start): read
            # it again from the start with the csv module. The outcome is as if Arrow had not been tried.
            stream.seek(start)
    return _profile(stream, options, progress, with_arrow=False)


class _Options(NamedTuple):
    limit: int
    max_columns: int
    chunk_size: int
    declared: str | None
    total_bytes: int | None
    should_stop: Callable[[], bool] | None


class _Forward:
    """progress() that never goes back: a file read again by the csv module after Arrow gave up on it
    reports nothing until it passes the point the first reading reached."""

    def __init__(self, progress: Callable[[int, int | None], None]):
        self.progress = progress
        self.done = -1

    def __call__(self, done: int, total: int | None) -> None:
        if done >= self.done:
            self.done = done
            self.progress(done, total)


class _NotForArrow(Exception):
    """The Arrow reading cannot give the csv module's outcome for this file: read it with the csv module."""


def _profile(
    stream: IO[bytes],
    options: _Options,
    progress: Callable[[int, int | None], None] | None,
    *,
    with_arrow: bool,
) -> dict[str, Any]:
    source = _TextSource(
        stream, options.chunk_size, options.total_bytes, progress, options.should_stop, options.declared
    )
    pieces = source.pieces()
    head: list[str] = []
    head_chars = 0
    try:
        for piece in pieces:
            head.append(piece)
            head_chars += len(piece)
            if head_chars >= SNIFF_BYTES:
                break
        delimiter = _sniff_delimiter("".join(head)[:SNIFF_BYTES])
        if with_arrow:
            rows, columns = _profile_with_arrow(head, pieces, delimiter, options)
        else:
            rows, columns = _profile_with_csv(head, pieces, delimiter, options)
    except CsvProfileError:
        if with_arrow:
            raise _NotForArrow from None
        raise
    if progress is not None:
        progress(source.bytes_read, options.total_bytes)
    shown = [column.result() for column in columns]
    return {
        "rows": rows,
        "bytes": source.bytes_read,
        "delimiter": delimiter,
        "encoding": source.encoding,
        "notes": source.notes,
        "truncated": any(column["truncated"] for column in shown),
        "limits": {"columns": options.max_columns, "top_values": TOP_N, "value_chars": VALUE_MAX_CHARS},
        "columns": shown,
    }


def _profile_with_csv(
    head: list[str], pieces: Iterator[str], delimiter: str, options: _Options
) -> tuple[int, list[ColumnProfile]]:
    """The csv module's reading: every row in Python, errors naming their physical line."""
    lines = chain.from_iterable(map(_split_lines, chain(head, pieces)))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        return _profile_rows(reader, options.limit, options.max_columns, delimiter != ",")
    except csv.Error as exc:
        raise _csv_error(exc, reader.line_num) from None


def _profile_with_arrow(
    head: list[str], pieces: Iterator[str], delimiter: str, options: _Options
) -> tuple[int, list[ColumnProfile]]:
    """Arrow's streaming CSV reader, every column read as strings, batch by batch.

    The header is read by the csv module from the sniffed start (the same rules as ``_profile_rows``);
    Arrow parses what follows it. Raises _NotForArrow where Arrow's outcome could differ from the csv
    module's: any row of another width (the csv module skips whitespace-only lines, and names the line of
    a ragged row), a field over ``csv.field_size_limit()``, a header not wholly in the sniffed start; and
    CsvProfileError for a problem the text source found (decoding, binary data), which the caller turns
    into a reading with the csv module so that the first problem in the file is the one reported.
    """

    text = "".join(head)
    lines = _split_lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next((row for row in reader if row and (len(row) > 1 or row[0].strip())), None)
    except csv.Error:
        raise _NotForArrow from None
    if header is None or len(header) > options.max_columns:
        raise _NotForArrow  # the csv module's reading says why
    consumed = len(text) - sum(map(len, lines))  # the header's lines (and blank lines before it)
    if consumed == len(text) and next(pieces, None) is not None:
        raise _NotForArrow  # the header may go on past the sniffed start
    names = _unique_names(header)
    columns = [ColumnProfile(name, options.limit, decimal_comma=delimiter != ",") for name in names]
    feed = _Feed(max(options.chunk_size, MIN_ARROW_BLOCK))
    worker = threading.Thread(
        target=feed.parse, args=(names, columns, delimiter), name="csv-profile-arrow", daemon=True
    )
    worker.start()
    try:
        rest = text[consumed:]
        del head, text
        try:
            if feed.put(rest.encode("utf-8")):
                for piece in pieces:
                    if not feed.put(piece.encode("utf-8")):
                        break  # Arrow stopped: its reason is below
        except UnicodeEncodeError:
            # Lone surrogates (a declared unicode_escape or utf-7 file): no UTF-8 for Arrow; the
            # csv module reads the text as it is (found by review).
            raise _NotForArrow from None
    finally:
        feed.close()
        worker.join()
    if feed.error is not None:
        raise feed.error
    return feed.rows, columns


class _Feed:
    """The text source's bytes, handed from the calling thread to Arrow's reader in a worker thread.

    The calling thread reads and decodes the file (so ``progress`` and ``should_stop`` run where the
    caller runs them, e.g. a Celery task's thread with its database connection) and puts UTF-8 bytes in a
    bounded queue; ``parse`` (the worker thread) has Arrow read them through ``read`` and profiles each
    batch. Memory stays bounded: the queue holds at most FEED_CHUNKS chunks, and ``read`` (called by
    Arrow's I/O thread, which would otherwise read dozens of blocks ahead) waits while Arrow holds
    AHEAD_BLOCKS blocks more than have been profiled (unless the worker has waited 1 s for a batch).
    """

    def __init__(self, block_size: int):
        self.block_size = block_size
        self.chunks: queue.Queue[bytes | None] = queue.Queue(FEED_CHUNKS)
        self.pending = b""
        self.ended = False
        self.stopped = threading.Event()  # the worker has stopped: put() must not wait
        self.state = threading.Condition()
        self.blocks_read = 0
        self.batches_done = 0
        self.waiting = True  # the worker waits for Arrow (open_csv reads the first block)
        self.rows = 0
        self.error: BaseException | None = None

    # -- the calling thread ---------------------------------------------------------------------------

    def put(self, data: bytes) -> bool:
        """Queue bytes for Arrow; False once the worker has stopped (an error, or done)."""
        while not self.stopped.is_set():
            try:
                self.chunks.put(data, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """The end of the data (or of the calling thread's reading, on an error)."""
        while not self.stopped.is_set():
            try:
                self.chunks.put(None, timeout=0.05)
                return
            except queue.Full:
                continue

    # -- Arrow's I/O thread --------------------------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        with self.state:
            while self.blocks_read - self.batches_done >= AHEAD_BLOCKS and not self.stopped.is_set():
                # Arrow may need more blocks for one batch (a record longer than a block): when the worker
                # has waited 1 s for one, it gets them.
                if not self.state.wait(timeout=1.0) and self.waiting:
                    break
            self.blocks_read += 1
        parts = [self.pending]
        have = len(self.pending)
        while not self.ended and (size < 0 or have < size):
            chunk = self._next_chunk()
            if chunk is None:
                self.ended = True
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            size = len(data)
        self.pending = data[size:]
        return data[:size]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    # -- the worker thread ----------------------------------------------------------------------------

    def parse(self, names: list[str], columns: list[ColumnProfile], delimiter: str) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv

        limit = csv.field_size_limit()
        pool = ThreadPoolExecutor(COLUMN_THREADS, thread_name_prefix="csv-profile-column")
        try:
            first = self._peek()
            if not first:
                return
            batches = pa_csv.open_csv(
                self,
                read_options=pa_csv.ReadOptions(
                    block_size=self.block_size, column_names=names, use_threads=False
                ),
                parse_options=pa_csv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, ignore_empty_lines=True
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    check_utf8=False,  # encoded from str
                ),
            )
            while True:
                self._waiting(True)
                batch = next(batches, None)
                self._waiting(False)
                if batch is None:
                    break
                if batch.num_rows == 0:  # Arrow yields empty blocks (blank lines): nothing to add
                    continue
                # The csv module refuses a field over its limit (in characters; bytes are at least as many).
                for cells in batch.columns:
                    if (
                        pc.max(pc.binary_length(cells)).as_py() > limit
                        and pc.max(pc.utf8_length(cells)).as_py() > limit
                    ):
                        raise _NotForArrow
                # Columns in parallel: Arrow's, NumPy's and polars' kernels release the GIL.
                for _ in pool.map(ColumnProfile.add, columns, batch.columns):
                    pass
                self.rows += batch.num_rows
        except (pa.ArrowException, pa.ArrowIOError):
            # A row of another width, mostly; any other of Arrow's errors too (ArrowIOError is an
            # OSError, which the kind would retry): the csv module reads the file again and says
            # what is wrong with it, as it always did.
            self.error = _NotForArrow()
        except BaseException as exc:
            self.error = exc
        finally:
            pool.shutdown(cancel_futures=True)
            self.stopped.set()
            self._waiting(True)

    def _peek(self) -> bool:
        """Whether there are any bytes to parse (Arrow refuses an empty stream)."""
        while not self.ended and not self.pending:
            chunk = self._next_chunk()
            if chunk is None:
                self.ended = True
            else:
                self.pending = chunk
        return bool(self.pending)

    def _next_chunk(self) -> bytes | None:
        """The next chunk the calling thread put; None at the end, or once the worker has stopped."""
        while not self.stopped.is_set():
            try:
                return self.chunks.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def _waiting(self, waiting: bool) -> None:
        with self.state:
            self.waiting = waiting
            if not waiting:
                self.batches_done += 1
            self.state.notify_all()


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
) -> tuple[int, list[ColumnProfile]]:
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
    columns = [ColumnProfile(name, limit, decimal_comma=decimal_comma) for name in _unique_names(header)]
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


def _add_batch(columns: list[ColumnProfile], batch: list[list[str]], line: int) -> int:
    import pyarrow as pa

    width = len(columns)
    lengths = set(map(len, batch))
    if len(lengths) != 1 or width not in lengths:
        batch = _drop_blank_or_raise(batch, width, line)
    if batch:
        for column, values in zip(columns, zip(*batch, strict=True), strict=True):
            try:
                cells = pa.array(values, pa.string())
            except UnicodeEncodeError:
                # Lone surrogates, which only a declared unicode_escape or utf-7 file decodes to:
                # no UTF-8 for Arrow, so each is shown as U+FFFD (found by review).
                cells = pa.array([_without_lone_surrogates(value) for value in values], pa.string())
            column.add(cells)
    return len(batch)


def _without_lone_surrogates(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


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
