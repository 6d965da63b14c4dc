from __future__ import annotations

from django.db import models


class TokenFailure(models.Model):
    """Failed bearer tokens from one client address (see address.py), counted until that address
    has sent none for a cool-off."""

    address = models.CharField(max_length=45, unique=True)  # "unknown" when the server saw none
    failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "failed token attempts"
        verbose_name_plural = "failed token attempts"
        ordering = ["-last_failure_at"]

    def __str__(self) -> str:
        return f"{self.failures} failed tokens from {self.address}"
