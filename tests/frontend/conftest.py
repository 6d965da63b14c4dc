"""Fixtures the browser tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# The widths every page is tried at: a desktop's and a phone's (issue 16: nothing overflows at 390 px).
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=list(VIEWPORTS))
def context(request: pytest.FixtureRequest, browser: Any, live_server_url: str) -> Iterator[Any]:
    """A browser context at a desktop's and at a phone's width (one test each)."""
    context = browser.new_context(base_url=live_server_url, viewport=VIEWPORTS[request.param])
    context.set_default_timeout(15_000)
    yield context
    context.close()
