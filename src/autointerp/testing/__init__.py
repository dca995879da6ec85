"""Helpers for testing code built on autointerp: conformance checks for plugins."""

from autointerp.testing.accumulators import ConformanceError, check_accumulator

__all__ = ["ConformanceError", "check_accumulator"]
from autointerp.testing.synthetic import SyntheticModel, rule_judge_responder  # noqa: E402, F401 - planted ground truth for scorers
