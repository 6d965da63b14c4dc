"""``json_preview``'s shortcut for a value that fits whole (issue 15 §2: building a job's payload
was a third of a sign-in's snapshot, a fifth of that previewing its parameters item by item)
shows exactly what the item-by-item preview shows, for every JSON value and budget."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.results import _MISSING, MAX_PREVIEW_DEPTH, _preview, json_preview

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


def item_by_item(value, budget):
    preview, _size, complete = _preview(value, budget, 0)
    return (None, False) if preview is _MISSING else (preview, complete)


@settings(max_examples=400, deadline=None)
@given(value=json_values, budget=st.integers(min_value=0, max_value=600))
def test_a_value_that_fits_previews_as_the_item_by_item_path_would(value, budget):
    fast = json_preview(value, budget)
    slow = item_by_item(value, budget)
    assert json.dumps(fast[0]) == json.dumps(slow[0])
    assert fast[1] == slow[1]


def test_containers_deeper_than_the_preview_depth_are_still_left_out_of_a_small_value():
    deep: object = 1
    for _ in range(MAX_PREVIEW_DEPTH + 1):
        deep = [deep]
    preview, complete = json_preview(deep, 10_000)
    assert not complete
    # The innermost list, holding the 1, is shown empty.
    assert json.dumps(preview) == "[" * (MAX_PREVIEW_DEPTH + 1) + "]" * (MAX_PREVIEW_DEPTH + 1)


def test_an_empty_key_is_left_out_of_a_small_object_as_before():
    assert json_preview({"a": 1, "": 2}, 10_000) == ({"a": 1}, False)


def test_a_value_nested_past_the_recursion_limit_is_previewed_not_raised():
    deep: object = 1
    for _ in range(5_000):
        deep = [deep]
    preview, complete = json_preview(deep, 100)
    assert not complete and json.dumps(preview).startswith("[[[")


def test_a_huge_value_is_not_encoded_whole_to_preview_its_start(monkeypatch):
    import jobs.results as results

    encoded: list[int] = []
    real = results.wire_size
    monkeypatch.setattr(results, "wire_size", lambda value: encoded.append(1) or real(value))
    preview, complete = json_preview(list(range(1_000_000)), 64)
    assert not complete and len(json.dumps(preview)) <= 64
    assert len(encoded) < 100  # item by item within the budget, never the million-item list
