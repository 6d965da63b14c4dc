"""The job-history export never writes a cell a spreadsheet would run as a formula."""

import pytest

from jobs.kinds.export_jobs import _neutralize


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"])
def test_cells_that_would_start_a_formula_are_quoted(value):
    assert _neutralize(value) == "'" + value


@pytest.mark.parametrize("value", ["", "plain", "1=1", " =1"])
def test_other_cells_are_left_alone(value):
    assert _neutralize(value) == value
