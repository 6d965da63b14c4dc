"""What a job's progress counts (its kind's ``unit``), and a rate or a time left as people read them:
"12.9 MB/s", "614 M numbers/s", "3.2 rows/s", "1 min 5 s". The command line's formatting; the
browser's twin is ``formatRate`` and ``duration`` in frontend/static/frontend/common.js (same rules:
keep the two in step)."""

from __future__ import annotations

import math
import re

BYTES = "bytes"
# A kind that declares no unit counts "items".
DEFAULT_UNIT = "items"
# A unit is a short plain plural noun: every payload carries it, and a payload's size is bounded.
UNIT_PATTERN = re.compile(r"[A-Za-z][A-Za-z ._-]{0,23}")

_PREFIXES = ("", "k", "M", "G", "T", "P", "E")


def format_rate(rate: float, unit: str = DEFAULT_UNIT) -> str:
    """``rate`` per second with SI prefixes: bytes as "12.9 MB/s", anything else as
    "614 M numbers/s" or "3.2 rows/s"."""
    number, prefix = _scaled(rate)
    if unit == BYTES:
        return f"{number} {prefix}B/s"
    return f"{number} {prefix} {unit}/s" if prefix else f"{number} {unit}/s"


def format_count(value: float, unit: str = DEFAULT_UNIT) -> str:
    """An amount of ``unit`` as people read it: bytes as "12.4 MB" (SI, as rates are), anything
    else as "10 G numbers" or "250 rows"; 0 as "0 B" / "0 rows"."""
    number, prefix = _scaled(value)
    if value and not prefix and float(value).is_integer():
        number = str(int(value))  # a whole count under 1000 reads "250", not "250.0"
    if unit == BYTES:
        return f"{number} {prefix}B"
    return f"{number} {prefix} {unit}" if prefix else f"{number} {unit}"


def _scaled(value: float) -> tuple[str, str]:
    """``value`` as at most three significant figures (two decimals below 1) and its SI prefix."""
    if not math.isfinite(value) or value <= 0:
        return "0", ""
    index = 0
    # Judged on the figure as shown, so 999.7 reads "1.0 k", never "1000".
    while index < len(_PREFIXES) - 1 and float(_figure(value, scaled=index > 0)) >= 1000:
        value /= 1000
        index += 1
    return _figure(value, scaled=index > 0), _PREFIXES[index]


def _figure(value: float, *, scaled: bool) -> str:
    if value < 1 and not scaled:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 99.95 else f"{value:.0f}"


def format_duration(seconds: float) -> str:
    """Whole seconds as "5 s", "1 min 5 s" or "2 h 3 min"."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60} min"
