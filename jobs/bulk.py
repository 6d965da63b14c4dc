"""Bulk actions on jobs selected by a filter (issue 16 §12)."""
