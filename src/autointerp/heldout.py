"""Which harvested examples the explainer sees, and which are held out for scoring.

The reservoir returns a component's examples in the order of their random keys,
which is itself a uniformly random order, so the first ``n_explain`` are a
uniform sample and the rest a disjoint uniform sample. The explainer also sees
the first ``n_top`` max-activating examples; a held-out example is dropped when
it is the same firing as a shown one (same sequence and position), so the two
sets never share a firing.
"""

from __future__ import annotations

from attrs import define, field

from autointerp.schemas import ActivationExample, ComponentData

DEFAULT_N_EXPLAIN = 10
DEFAULT_N_TOP = 5


@define
class ExampleSplit:
    explain: list[ActivationExample] = field(factory=list)
    explain_top: list[ActivationExample] = field(factory=list)
    holdout: list[ActivationExample] = field(factory=list)
    holdout_top: list[ActivationExample] = field(factory=list)

    def shown_ids(self) -> set[tuple[int, int]]:
        return {(e.sequence_index, e.position) for e in self.explain + self.explain_top}


def split_examples(comp: ComponentData, n_explain: int = DEFAULT_N_EXPLAIN, n_top: int = DEFAULT_N_TOP) -> ExampleSplit:
    """Split a component's examples into shown-to-the-explainer and held-out, disjointly."""
    explain = list(comp.examples[:n_explain])
    explain_top = list(comp.top_examples[:n_top])
    shown = {(e.sequence_index, e.position) for e in explain + explain_top}
    holdout = [e for e in comp.examples[n_explain:] if (e.sequence_index, e.position) not in shown]
    holdout_top = [e for e in comp.top_examples[n_top:] if (e.sequence_index, e.position) not in shown]
    return ExampleSplit(explain, explain_top, holdout, holdout_top)
