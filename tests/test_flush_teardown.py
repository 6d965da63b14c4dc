"""The test harness's own guard: a transactional test's teardown flush that loses a PostgreSQL
deadlock to a live server process of the session is tried again (it failed a CI run once)."""

import pytest
from django.core.management.base import CommandError
from django.db import OperationalError

from tests.conftest import _flush_retrying_on_deadlock


def flaky_flush(failures: list[Exception]):
    calls = []

    def flush(self):
        calls.append(self)
        if failures:
            cause = failures.pop(0)
            raise CommandError("Database test_runboard couldn't be flushed.") from cause

    return flush, calls


def test_a_flush_that_deadlocked_is_tried_again_until_it_succeeds():
    flush, calls = flaky_flush([OperationalError("deadlock detected"), OperationalError("deadlock detected")])
    _flush_retrying_on_deadlock(flush)("case")
    assert calls == ["case", "case", "case"]


def test_any_other_flush_failure_is_raised_at_once():
    flush, calls = flaky_flush([OperationalError("relation does not exist")])
    with pytest.raises(CommandError):
        _flush_retrying_on_deadlock(flush)("case")
    assert calls == ["case"]
