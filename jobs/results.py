"""Bounded views of what jobs hold: sizes, clipped text, JSON previews and result summaries.

Everything a job carries onto the wire (docs/protocol.md, "Size bounds") is cut here to a byte
budget. Sizes are **wire bytes**: the length of the value serialized the largest way Runboard
ever sends it - JSON with non-ASCII escaped (``\\u00e9``: 6 bytes, 12 for a character outside
the BMP), ``", "``/``": "`` separators (HTTP responses) and ``< > &`` escaped to 6 bytes each (the
page's ``json_script``). The compact UTF-8 JSON of sockets and SSE is never larger, so a bound
in wire bytes holds on every transport.

Pure functions: no database, no settings. The costs are bounded by the budget, not by the
value: a 100 MB string or a million-item list is cut after reading about ``max_bytes`` of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

ELLIPSIS = "…"
# The most wire bytes one code point can take (a character outside the BMP: two \\uXXXX).
MAX_BYTES_PER_CHAR = 12
# Deeper containers are left out of a preview: a summary is for people, not for round trips.
MAX_PREVIEW_DEPTH = 8
_SEP = 2  # ", " between items, ": " between a key and its value
# A result's summary, as stored beside it and shown in every payload.
RESULT_SUMMARY_BYTES = 768

_MISSING = object()


class ResultTooLarge(ValueError):
    """A job's result is larger than RUNBOARD_RESULT_MAX_BYTES (compact UTF-8 JSON)."""


def wire_size(value: Any) -> int:
    """Wire bytes of ``value`` (see the module docstring); raises TypeError if not JSON."""
    text = json.dumps(value)
    return len(text) + 5 * (text.count("<") + text.count(">") + text.count("&"))


def compact_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, the form results are stored and served in."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def clip_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` as it is if its JSON string literal fits ``max_bytes`` wire bytes, else its longest
    prefix that fits with ``…`` appended; and whether it was cut. Below 8 bytes (``"…"`` escaped)
    a cut text is empty."""
    if len(text) * MAX_BYTES_PER_CHAR + 2 <= max_bytes:
        return text, False
    if len(text) + 2 <= max_bytes and wire_size(text) <= max_bytes:
        return text, False
    if max_bytes < wire_size(ELLIPSIS):
        return "", True
    # Every character takes at least one byte: no prefix longer than max_bytes can fit.
    lo, hi = 0, min(len(text), max_bytes)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if wire_size(text[:mid] + ELLIPSIS) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + ELLIPSIS, True


def json_preview(value: Any, max_bytes: int) -> tuple[Any, bool]:
    """A JSON value of at most ``max_bytes`` wire bytes that shows the start of ``value``, and
    whether it is all of ``value``.

    Strings are clipped (with ``…``); lists and objects keep their first items and entries in
    order, the last one kept possibly previewed in turn; containers nested deeper than
    ``MAX_PREVIEW_DEPTH`` are left out. When not even a clipped value fits, ``None``.
    """
    # Most values fit whole (a job's parameters: a few short fields), and then the preview is the
    # value itself: one encoding instead of one per item (a fifth of building a job's payload).
    # The walk first is bounded by the budget and the depth, so a huge or deeply nested value
    # costs what the item-by-item preview costs, not an encoding of all of it (found by review).
    if _lower_bound(value, MAX_PREVIEW_DEPTH, max_bytes) >= 0:
        with contextlib.suppress(TypeError, ValueError):  # not JSON, or an int too long for str()
            if wire_size(value) <= max_bytes:
                return value, True
    preview, _size, complete = _preview(value, max_bytes, 0)
    if preview is _MISSING:
        return None, False
    return preview, complete


def _lower_bound(value: Any, depth: int, room: int) -> int:
    """About ``value``'s wire size from below (a container's count may be 2 bytes over), or -1
    when that already exceeds ``room`` bytes, or when the
    preview would not show ``value`` as it is: a container ``depth`` or more containers deep, a
    mapping key that is not a non-empty string. Visits at most about ``room`` items."""
    kind = type(value)
    if kind is str:
        size = len(value) + 2
    elif kind in _SCALARS:
        size = 1
    elif isinstance(value, Mapping):
        if depth <= 0:
            return -1
        size = 2
        for key, item in value.items():
            if type(key) is not str or key == "":
                return -1
            size += len(key) + 2 + _SEP + _SEP
            inner = _lower_bound(item, depth - 1, room - size) if size <= room else -1
            if inner < 0:
                return -1
            size += inner
    elif isinstance(value, list | tuple):
        if depth <= 0:
            return -1
        size = 2
        for item in value:
            inner = _lower_bound(item, depth - 1, room - size - _SEP) if size <= room else -1
            if inner < 0:
                return -1
            size += inner + _SEP
    else:
        size = 1  # shown as str(value) by the preview; wire_size raises TypeError for it
    return size if size <= room else -1


_SCALARS = frozenset({int, float, bool, type(None)})


def _preview(value: Any, budget: int, depth: int) -> tuple[Any, int, bool]:
    """(preview or _MISSING, its wire size, complete)."""
    if isinstance(value, str):
        text, cut = clip_text(value, budget)
        if cut and not text:
            return _MISSING, 0, False
        return text, wire_size(text), not cut
    if value is None or isinstance(value, bool | int | float):
        try:
            size = wire_size(value)
        except ValueError:  # an integer too long for str() (sys.get_int_max_str_digits)
            return _MISSING, 0, False
        return (value, size, True) if size <= budget else (_MISSING, 0, False)
    if isinstance(value, Mapping):
        return _preview_items(value.items(), budget, depth, keyed=True)
    if isinstance(value, list | tuple):
        return _preview_items(((None, item) for item in value), budget, depth, keyed=False)
    return _preview(str(value), budget, depth)


def _preview_items(items: Any, budget: int, depth: int, *, keyed: bool) -> tuple[Any, int, bool]:
    if budget < 2:
        return _MISSING, 0, False
    if depth >= MAX_PREVIEW_DEPTH:
        return ({} if keyed else []), 2, False
    kept: list[tuple[Any, Any]] = []
    size = 2  # the brackets
    complete = True
    for key, item in items:
        room = budget - size - (_SEP if kept else 0)
        key_size = 0
        if keyed:
            key, key_cut = clip_text(str(key), room)
            if not key or key_cut:
                complete = False
                break
            key_size = wire_size(key) + _SEP
        shown, item_size, item_complete = _preview(item, room - key_size, depth + 1)
        if shown is _MISSING:
            complete = False
            break
        size += (_SEP if kept else 0) + key_size + item_size
        kept.append((key, shown))
        if not item_complete:
            complete = False
            break
    if keyed:
        return dict(kept), size, complete
    return [shown for _, shown in kept], size, complete


def result_digest(
    result: Any, *, summarize: Callable[[Any], Any] | None, summary_bytes: int, max_bytes: int
) -> tuple[Any, bool, int]:
    """What the state machine stores beside a result: ``(summary, complete, size)``.

    ``summary`` is at most ``summary_bytes`` wire bytes: the kind's ``summarize(result)`` when it
    has one (a different shape, so never complete), else a preview of the result itself;
    ``complete`` tells whether it is the whole result. ``size`` is the result's compact UTF-8
    JSON size in bytes. Raises TypeError (not JSON) or ResultTooLarge (over ``max_bytes``).
    """
    size = compact_size(result)
    if size > max_bytes:
        raise ResultTooLarge(
            f"The job's result is {size:,} bytes of JSON; at most {max_bytes:,} may be stored."
        )
    if summarize is not None:
        summary, _ = json_preview(summarize(result), summary_bytes)
        return summary, False, size
    summary, complete = json_preview(result, summary_bytes)
    return summary, complete, size


def result_page(
    result: Any, *, key: str | None, offset: int, limit: int | None
) -> tuple[Any, dict[str, Any] | None]:
    """``result`` with its list under ``key`` cut to ``[offset, offset + limit)``, and the page
    (``{"key", "offset", "limit", "total"}``); the whole result and None when there is nothing
    to page (no key, no limit, or the result has no list there)."""
    if key is None or limit is None or not isinstance(result, dict) or not isinstance(result.get(key), list):
        return result, None
    items = result[key]
    return (
        {**result, key: items[offset : offset + limit]},
        {"key": key, "offset": offset, "limit": limit, "total": len(items)},
    )
