"""What the launch and action services refuse with; the API, the CLI and the admin turn each into
their own answer (403, 429, 409, 400/413)."""

from __future__ import annotations


class KindNotAllowed(PermissionError):
    """The kind is admin-only and the user is not staff."""


class RateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"Too many launches; try again in {retry_after} s.")
        self.retry_after = retry_after


class Conflict(Exception):
    """The job is not in a state that allows this (HTTP 409)."""


class InvalidUpload(ValueError):
    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.too_large = too_large
