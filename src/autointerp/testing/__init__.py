"""Helpers for testing code built on autointerp: conformance checks for plugins."""

from autointerp.testing.accumulators import ConformanceError, check_accumulator

__all__ = ["ConformanceError", "check_accumulator"]
