"""The command line's rate and time-left formatting (jobs/units.py; the browser's twin is tested in
tests/frontend/test_bars_and_rates_browser.py with the same figures)."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

from jobs.kinds.registry import JobKind, get_kind, kind_unit, register
from jobs.units import format_duration, format_rate


@pytest.mark.parametrize(
    ("rate", "unit", "shown"),
    [
        (12865672, "bytes", "12.9 MB/s"),
        (614379711, "numbers", "614 M numbers/s"),
        (3.2, "rows", "3.2 rows/s"),
        (512, "bytes", "512 B/s"),
        (12345, "rows", "12.3 k rows/s"),
        (999.7, "rows", "1.0 k rows/s"),  # rounded up, it moves to the next prefix: never "1000"
        (99.96, "steps", "100 steps/s"),
        (0.05, "steps", "0.05 steps/s"),
        (4.1, "items", "4.1 items/s"),
    ],
)
def test_rates_read_with_their_unit_and_si_prefixes(rate, unit, shown):
    assert format_rate(rate, unit) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"), [(3.4, "3 s"), (65, "1 min 5 s"), (7384, "2 h 3 min"), (-1, "0 s")]
)
def test_times_left_read_in_whole_seconds_minutes_and_hours(seconds, shown):
    assert format_duration(seconds) == shown


def test_each_shipped_kind_declares_what_its_progress_counts():
    names = ("csv_profile", "primes", "simulate", "broadcast", "export_jobs")
    assert {name: get_kind(name).unit for name in names} == {
        "csv_profile": "bytes", "primes": "numbers", "simulate": "steps", "broadcast": "recipients",
        "export_jobs": "rows",
    }  # fmt: skip
    assert kind_unit("no-such-kind") == "items"


def test_a_kind_with_a_unit_that_would_swell_every_payload_is_refused():
    kind = JobKind(
        name="long_unit", title="t", description="d", params_model=BaseModel, run=lambda ctx, params: None,
        unit="x" * 100,
    )  # fmt: skip
    with pytest.raises(ImproperlyConfigured, match="unit"):
        register(kind)
