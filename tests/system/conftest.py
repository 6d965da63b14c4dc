"""Fixtures shared by the system tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.system.stack import Stack


@pytest.fixture
def stacks(server_env: dict[str, str]) -> Iterator[Any]:
    """Start private stacks with ``stacks(**options)``; all are stopped after the test."""
    started: list[Stack] = []

    def start(**options: Any) -> Stack:
        stack = Stack(server_env, **options)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.close()
