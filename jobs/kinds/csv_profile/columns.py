"""One CSV column's profile, built batch by batch from Arrow string arrays (vectorized).

``ColumnProfile.add(values)`` takes a batch of a column's raw cells (a ``pyarrow`` string array, as the
CSV reader parsed them) and keeps bounded state: exact counts of each distinct value while there are at
most ``limit`` of them, then a K-minimum-values sketch (distinct count) and an Apache DataSketches
frequent-items sketch (top values). The rules (what is empty, each type, the statistics, the sketches'
error bounds) are stated in ``profiler``'s module docstring; this module is their implementation.

Every check runs on a batch's *distinct* stripped values (``pyarrow.compute.value_counts``) with their
counts as weights, in Arrow kernels (RE2 regexes, casts) or NumPy, never a Python loop per cell; the few
checks with Python semantics no kernel has (``datetime.fromisoformat``, integers past 64 bits, floats
Arrow's parser refuses) fall back to Python on that batch's distinct values.

pyarrow, polars and datasketches are imported by the functions that use them: they cost about 0.9 s and
140 MiB to import, which only the worker processes that profile a CSV should pay (the web processes
import this package for the job kind's parameters).
"""

from __future__ import annotations

import heapq
import math
import sys
from datetime import date, datetime, time
from operator import attrgetter, mul
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

EMPTY_VALUES = frozenset({"", "NA", "N/A", "n/a", "NULL", "null", "None"})
_BOOL_TOKENS = ("true", "false", "yes", "no", "0", "1")
# What str.strip() strips: every character str.isspace() calls whitespace (Arrow's own
# utf8_trim_whitespace follows another Unicode table).
WHITESPACE = "".join(char for char in map(chr, range(sys.maxunicode + 1)) if char.isspace())

# Python's int() and float() on ASCII text without "_" (the only text they read as a number here):
# a sign, digits; and decimal or exponent notation. RE2 syntax ([0-9] is ASCII only).
_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_THOUSANDS_COMMA_RE = r"^[+-]?[0-9]{1,3}(?:\.[0-9]{3})+,[0-9]+$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # what date.isoformat() writes (years 0001-9999)

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

SKETCH_SIZE = 8192  # K of the K-minimum-values distinct estimator (standard error ~1/sqrt(K-2): 1.1%)
HASH_SEED = 0x5EED  # fixed: the same file gives the same estimate in every process
TOP_LG_MAX_MAP = 10  # frequent-items sketch of 2^10 slots (0.75 of them counters)
TOP_N = 5
VALUE_MAX_CHARS = 200  # longest value (name, top value, integer min/max) a result shows
_LIMB = 1 << 16  # exact integer sums in int64 limbs (see _int_sums)
_SMALL_INT = 1 << 31
_MAX_WEIGHT = 1 << 20

_tzinfo = attrgetter("tzinfo")


class ColumnProfile:
    """One column's state: counts, possible types, statistics, distinct values and top values.

    Exact mode: ``exact_counts`` holds every distinct stripped non-empty value and its count, until more
    than ``limit``. Then sketch mode: ``sketch`` (the SKETCH_SIZE smallest 64-bit hashes seen, sorted) and
    ``top`` (a datasketches ``frequent_strings_sketch``), fed each batch's distinct values.
    """

    def __init__(self, name: str, limit: int, *, decimal_comma: bool = False):
        self.name = name
        self.limit = limit
        self.decimal_comma = decimal_comma  # "1,5" is a number (the delimiter is not a comma)
        self.exact = True
        self.exact_counts: pa.Table | None = None  # exact mode: v (stripped non-empty value), n (count)
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
        self.sketch: np.ndarray | None = None  # sketch mode: sorted uint64 hashes
        self.top: Any = None  # sketch mode: datasketches.frequent_strings_sketch

    # -- streaming -----------------------------------------------------------------------------------

    def add(self, cells: pa.Array) -> None:
        """Count a batch of raw cells (a pyarrow string or large_string array without nulls)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        counted = pc.value_counts(cells)
        values, counts = counted.field(0), counted.field(1)
        stripped = pc.utf8_trim(values, characters=WHITESPACE)
        if not stripped.equals(values):
            # Some values had surrounding whitespace: " 7" and "7" are one value.
            merged = pa.table({"v": stripped, "n": counts}).group_by("v").aggregate([("n", "sum")])
            values, counts = merged.column("v").combine_chunks(), merged.column("n_sum").combine_chunks()
        else:
            values = stripped
        # Empty tokens are at most 4 bytes long: most batches of a column have no value that short.
        if pc.min(pc.binary_length(values)).as_py() <= 4:
            empty = pc.is_in(values, value_set=pa.array(sorted(EMPTY_VALUES)))
            self.empty += pc.sum(pc.filter(counts, empty)).as_py() or 0
            keep = pc.invert(empty)
            values, counts = pc.filter(values, keep), pc.filter(counts, keep)
        if not len(values):
            return
        self.count += pc.sum(counts).as_py()
        if self.exact:
            self._count_exactly(values, counts)
        else:
            self._absorb_weighted(values, counts)
            self._sketch_add(values, counts)

    def _absorb_weighted(self, values: pa.Array, counts: pa.Array) -> None:
        import pyarrow.compute as pc

        if self.types:
            self._absorb(values, counts if pc.sum(counts).as_py() != len(counts) else None)

    def _count_exactly(self, values: pa.Array, counts: pa.Array) -> None:
        """Merge a batch's counts into the exact ones (Arrow's group-by); past ``limit`` distinct values,
        type them all and move to the sketches. Exact values are typed once, at the end."""
        import datasketches
        import numpy as np
        import pyarrow as pa

        batch = pa.table({"v": values, "n": counts})
        if self.exact_counts is not None:
            batch = pa.concat_tables([self.exact_counts, batch]).group_by("v").aggregate([("n", "sum")])
            batch = batch.select(["v", "n_sum"]).rename_columns(["v", "n"])
        if batch.num_rows <= self.limit:
            self.exact_counts = batch
            return
        self.exact = False
        self.exact_counts = None
        self.sketch = np.empty(0, np.uint64)
        self.top = datasketches.frequent_strings_sketch(TOP_LG_MAX_MAP)
        values, counts = batch.column("v").combine_chunks(), batch.column("n").combine_chunks()
        self._absorb_weighted(values, counts)
        self._sketch_add(values, counts, all_values=True)

    def _sketch_add(self, values: pa.Array, counts: pa.Array, all_values: bool = False) -> None:
        """Add a batch's distinct values to the distinct-count sketch, and to the top-values sketch those
        seen more than once in the batch (all of them when ``all_values``: exact counts)."""
        import numpy as np
        import polars as pl

        assert self.sketch is not None
        hashes = pl.Series(values).hash(HASH_SEED).to_numpy()
        sketch = self.sketch
        if len(sketch) >= SKETCH_SIZE:
            hashes = hashes[hashes < sketch[-1]]
        if len(hashes) > SKETCH_SIZE:  # (distinct values: only the smallest K can enter)
            hashes = np.partition(hashes, SKETCH_SIZE - 1)[:SKETCH_SIZE]
        if len(hashes):
            merged = np.concatenate((sketch, hashes))
            merged.sort()
            fresh = np.empty(len(merged), bool)
            fresh[0] = True
            np.not_equal(merged[1:], merged[:-1], out=fresh[1:])
            self.sketch = merged[fresh][:SKETCH_SIZE]
        if not all_values:
            # A value seen once in a batch is left out of the top values (what keeps them cheap on a
            # column of unique values): its reported count is a lower bound, short by at most one per batch.
            repeated = np.flatnonzero(counts.to_numpy() > 1)
            values, counts = values.take(repeated), counts.take(repeated)
        update = self.top.update
        for value, n in zip(values.to_pylist(), counts.to_pylist(), strict=True):
            update(value, n)

    def _absorb(self, vals: pa.Array, weights: pa.Array | None) -> None:
        """Narrow the possible types with these distinct stripped non-empty values (``weights``: their
        counts, ``None`` when all are 1), then update the statistics."""
        import pyarrow as pa
        import pyarrow.compute as pc

        types = self.types
        ints: Any = None
        floats: Any = None
        if types & INTEGER:
            ints = _ints(vals)
            if ints is None:
                types &= ~INTEGER
        if ints is None and types & FLOAT:
            floats = _floats(vals, self.decimal_comma)
            if floats is None:
                types &= ~FLOAT
        if types & BOOLEAN:
            lowered = pc.utf8_lower(vals)
            if not pc.all(pc.is_in(lowered, value_set=pa.array(_BOOL_TOKENS))).as_py():
                types &= ~BOOLEAN
        dates: tuple[date, date] | None = None
        stamps: list[datetime] | None = None
        if types & DATE:
            dates = _date_range(vals)
            if dates is None:
                types &= ~DATE
        if types & DATETIME and dates is None:
            stamps = _datetimes(vals)
            if stamps is None:
                types &= ~DATETIME
            else:
                zones = set(map(_tzinfo, stamps))
                aware = None not in zones
                mixed = (len(zones) > 1 and not aware) or self.tz_aware not in (None, aware)
                if mixed:
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
            assert dates is not None
            self._add_temporal(*dates)
        elif types & DATETIME:
            assert stamps is not None
            if previous & DATE and self.dt_lo is not None:
                self.dt_lo = datetime.combine(self.dt_lo, time())
                self.dt_hi = datetime.combine(self.dt_hi, time())
            self._add_temporal(min(stamps), max(stamps))
        elif self.dt_lo is not None:
            self.dt_lo = self.dt_hi = None

    def _add_ints(self, ints: np.ndarray | list[int], weights: pa.Array | None) -> None:
        n, total, sumsq, lo, hi = _int_sums(ints, weights)
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

    def _add_floats(self, floats: np.ndarray, weights: pa.Array | None) -> None:
        import numpy as np

        lo, hi = float(floats.min()), float(floats.max())
        if self.num_kind is None:
            self.num_kind, self.num_lo, self.num_hi = "float", lo, hi
        else:
            self.num_lo, self.num_hi = min(self.num_lo, lo), max(self.num_hi, hi)
        if not self.num_ok:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            if weights is None:
                n = len(floats)
                mean = float(floats.sum()) / n
                deltas = floats - mean
                m2 = float((deltas * deltas).sum())
            else:  # (no np.dot: BLAS threads spin on a busy machine)
                counts = weights.to_numpy().astype(np.float64)
                n = int(weights.to_numpy().sum())
                mean = float((floats * counts).sum()) / n
                deltas = floats - mean
                m2 = float((deltas * deltas * counts).sum())
        if not math.isfinite(mean):  # the sum overflowed (Python's math.fsum raises there)
            self.num_ok = False
            return
        # Chan et al.: merge this batch's (n, mean, M2) into the running Welford state.
        before = self.n_num
        total = before + n
        delta = mean - self.f_mean
        self.f_mean += delta * n / total
        self.f_m2 += m2 + delta * delta * before * n / total
        self.n_num = total

    def _add_temporal(self, lo: Any, hi: Any) -> None:
        if self.dt_lo is None:
            self.dt_lo, self.dt_hi = lo, hi
        else:
            self.dt_lo, self.dt_hi = min(self.dt_lo, lo), max(self.dt_hi, hi)

    # -- result --------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """The column as ``profile_csv`` shows it (see its docstring for the keys)."""
        import datasketches

        top: list[tuple[str, int]]
        if self.exact:
            counts = self.exact_counts
            distinct = counts.num_rows if counts is not None else 0
            top = []
            if counts is not None:
                self._absorb_weighted(
                    counts.column("v").combine_chunks(), counts.column("n").combine_chunks()
                )
                best = counts.sort_by([("n", "descending"), ("v", "ascending")]).slice(0, TOP_N)
                top = list(zip(best.column("v").to_pylist(), best.column("n").to_pylist(), strict=True))
        else:
            distinct = self._estimate_distinct()
            items = self.top.get_frequent_items(datasketches.frequent_items_error_type.NO_FALSE_POSITIVES)
            # (value, estimate, lower bound, upper bound): the lower bound is what is shown.
            top = heapq.nsmallest(TOP_N, ((i[0], i[2]) for i in items if i[2] > 0), key=_top_order)
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
        name, truncated = shown(self.name)
        shown_top = []
        for value, n in top:
            text, cut = shown(value)
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
        assert sketch is not None
        if len(sketch) < SKETCH_SIZE:
            estimate = len(sketch)
        else:
            kth = (int(sketch[-1]) + 1) / float(1 << 64)
            estimate = round((SKETCH_SIZE - 1) / kth)
        return max(self.limit + 1, min(estimate, self.count))


def _all_match(vals: pa.Array, pattern: str) -> bool:
    import pyarrow.compute as pc

    return bool(pc.all(pc.match_substring_regex(vals, pattern)).as_py())


def _ints(vals: pa.Array) -> np.ndarray | list[int] | None:
    """The values as int64 (NumPy) or Python ints (past 64 bits) when every one is an integer as
    Python's int() reads it (matches _INT_RE); else None.

    Arrow's integer parser reads a subset of what _INT_RE matches ("-"? digits), plus hexadecimal
    ("0x1f"): what it reads, but for that, needs no regex."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        ints = pc.cast(vals, pa.int64())
    except pa.ArrowInvalid:
        pass  # not integers, or a "+", or past 64 bits: the regex tells
    else:
        hexadecimal = pc.or_(pc.starts_with(vals, "0x"), pc.starts_with(vals, "0X"))
        if not pc.any(hexadecimal).as_py():
            return ints.to_numpy()
    if not _all_match(vals, _INT_RE):
        return None
    return list(map(int, vals.to_pylist()))


def _floats(vals: pa.Array, decimal_comma: bool) -> np.ndarray | None:
    """The values as finite float64 if every one is a float as Python's float() reads it (with a decimal
    comma: ``1,5`` and ``1.234,5`` too); else None."""
    import numpy as np
    import pyarrow.compute as pc

    floats = _parsed_floats(vals)
    if floats is None and decimal_comma and pc.any(pc.match_substring(vals, ",")).as_py():
        thousands = pc.match_substring_regex(vals, _THOUSANDS_COMMA_RE)
        vals = pc.if_else(thousands, pc.replace_substring(vals, ".", ""), vals)
        floats = _parsed_floats(pc.replace_substring(vals, ",", "."))
    if floats is None or not np.isfinite(floats).all():  # nan, inf, 1e999
        return None
    return floats


def _parsed_floats(vals: pa.Array) -> np.ndarray | None:
    """float() of each value, when every one is a float as Python reads it (matches _FLOAT_RE, or is
    nan or inf); else None.

    Arrow's float parser reads a subset of what Python's float() does (tests/jobs/test_csv_columns.py
    compares them), to the same correctly rounded value: what it reads needs no regex."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(vals, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        pass
    if not _all_match(vals, _FLOAT_RE):
        return None
    return np.array(list(map(float, vals.to_pylist())), dtype=np.float64)


def _date_range(vals: pa.Array) -> tuple[date, date] | None:
    """(min, max) when every value is a date as ``date.isoformat()`` writes it; else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _all_match(vals, _DATE_RE) or pc.any(pc.starts_with(vals, "0000")).as_py():
        return None  # Arrow reads year 0, Python's date does not
    try:
        days = pc.cast(vals, pa.date32())
    except pa.ArrowInvalid:  # 2023-02-29
        return None
    bounds = pc.min_max(days)
    return bounds["min"].as_py(), bounds["max"].as_py()


def _datetimes(vals: pa.Array) -> list[datetime] | None:
    """The values as ``datetime.fromisoformat`` reads them, when every one has an extended
    ``YYYY-MM-...`` date part; else None."""
    import pyarrow.compute as pc

    if not pc.all(pc.equal(pc.utf8_slice_codeunits(vals, 4, 5), "-")).as_py():
        return None
    try:
        return list(map(datetime.fromisoformat, vals.to_pylist()))
    except ValueError:
        return None


def _int_sums(ints: np.ndarray | list[int], weights: pa.Array | None) -> tuple[int, int, int, int, int]:
    """(n, sum, sum of squares, min, max) of integers, each value counted ``weights`` times; exact.

    Small values (|v| < 2^31, at most 2^20 weighted values) are summed in NumPy by 16-bit limbs, so no
    int64 sum can overflow: v = hi * 2^16 + lo, v^2 = hi^2 * 2^32 + hi * lo * 2^17 + lo^2, each limb sum
    below 2^53. Others are summed as Python integers."""
    import numpy as np

    if isinstance(ints, np.ndarray):
        counts = weights.to_numpy() if weights is not None else None
        n = int(counts.sum()) if counts is not None else len(ints)
        lo, hi = int(ints.min()), int(ints.max())
        if lo > -_SMALL_INT and hi < _SMALL_INT and n <= _MAX_WEIGHT:
            high, low = ints >> 16, ints & (_LIMB - 1)
            if counts is None:
                total = int(high.sum()) * _LIMB + int(low.sum())
                sumsq = (
                    int(np.dot(high, high)) * _LIMB * _LIMB
                    + int(np.dot(high, low)) * 2 * _LIMB
                    + int(np.dot(low, low))
                )
            else:
                total = int(np.dot(high, counts)) * _LIMB + int(np.dot(low, counts))
                sumsq = (
                    int(np.dot(high * high, counts)) * _LIMB * _LIMB
                    + int(np.dot(high * low, counts)) * 2 * _LIMB
                    + int(np.dot(low * low, counts))
                )
            return n, total, sumsq, lo, hi
        ints = ints.tolist()
    assert isinstance(ints, list)
    if weights is None:
        return len(ints), sum(ints), sum(map(mul, ints, ints)), min(ints), max(ints)
    counted = weights.to_pylist()
    return (
        sum(counted),
        sum(map(mul, ints, counted)),
        sum(map(mul, map(mul, ints, ints), counted)),
        min(ints),
        max(ints),
    )


def shown(value: str) -> tuple[str, bool]:
    """A value as the result shows it: at most VALUE_MAX_CHARS characters, ``…`` ending a cut one."""
    if len(value) <= VALUE_MAX_CHARS:
        return value, False
    return value[:VALUE_MAX_CHARS] + "…", True


def _shown_integer(value: int | None) -> tuple[int | str | None, bool]:
    # Python reads integers of up to 4,300 digits; more than 200 are shown as a cut string.
    if value is None or -(10**VALUE_MAX_CHARS) < value < 10**VALUE_MAX_CHARS:
        return value, False
    return shown(str(value))


def _top_order(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
