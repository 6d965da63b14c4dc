"""Kept for the tests that import from here; the helpers live in scripts/harness.py."""

from scripts.harness import free_port, wait_for_http, wait_for_redis

__all__ = ["free_port", "wait_for_http", "wait_for_redis"]
