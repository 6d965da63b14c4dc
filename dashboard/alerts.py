"""Alerts on failure rate and queue wait (issue 16 §14)."""
