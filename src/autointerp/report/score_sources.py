"""Which of a component's scores is shown: the label sources and the headline rule.

A scorer writes one line per (component, label source): the label itself, the
``shuffled`` (random label) and ``token_lookup`` baselines, or ``"none"`` for a
scorer that judges the component rather than a label (intruder). Every view
(page, notebook, export) shows the same number for a component, so the rule
lives here, below all of them; it needs no schema import, so the notebook
views that `schemas.py` calls can use it without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the label sources a scorer may write, in display order
LABEL_SOURCES = ("label", "shuffled", "token_lookup")
#: the label source of a component-level scorer (intruder): one line per component
COMPONENT_SOURCE = "none"


def headline(by_source: Mapping[str, Any]) -> Any | None:
    """The `ScoreResult` shown for a component: its label's, or the component-level one (intruder)."""
    return by_source.get("label") or by_source.get(COMPONENT_SOURCE)


def score_value(result: Any | None) -> float | None:
    """The number a view shows for one `ScoreResult`: None when absent or skipped."""
    return None if result is None or result.skipped else result.score
