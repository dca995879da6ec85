"""Helpers for testing code built on autointerp.

* `check_accumulator`: a conformance check a plugin author runs on their own
  accumulator (split-then-merge equals one pass, state round trip, pure finalize).
* `SyntheticModel` and `rule_judge_responder`: components that fire by known rules,
  and a judge for the fake LLM server that applies the rule a label states (the
  scorers' calibration test); `scripted_labeller` answers interpretation prompts
  with given labels (planted-truth label sets to compare).
* ``autointerp.testing.llm_server``: a real HTTP server on 127.0.0.1 that speaks
  the Messages, Message Batches and OpenAI chat APIs, with injected faults.
"""

from autointerp.testing.accumulators import ConformanceError, check_accumulator
from autointerp.testing.synthetic import SyntheticModel, rule_judge_responder, scripted_labeller

__all__ = ["ConformanceError", "SyntheticModel", "check_accumulator", "rule_judge_responder", "scripted_labeller"]
