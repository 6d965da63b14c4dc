from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import TokenFailure


@admin.register(TokenFailure)
class TokenFailureAdmin(admin.ModelAdmin):
    """Read-only counts; deleting a row lifts that address's pause (as ``token_throttle_reset``)."""

    list_display = ("address", "failures", "last_failure_at")
    search_fields = ("address",)
    readonly_fields = ("address", "failures", "last_failure_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TokenFailure | None = None) -> bool:
        return False
