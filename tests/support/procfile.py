"""Kept for the tests that import from here; the Procfile is read in scripts/harness.py."""

from scripts.harness import ROOT, procfile

__all__ = ["ROOT", "procfile"]
