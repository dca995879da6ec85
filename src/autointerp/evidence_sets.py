"""The three evidence sets of a component: explain, validate, test.

A component's evidence is split three ways, disjoint by window (no two sets share
a token position of a sequence):

* **explain**: what the labeller is shown (`autointerp.heldout.split_examples`:
  the first ``n_explain`` reservoir examples, the ``n_top`` strongest, the
  quantile examples);
* **validate**: the next ``n_validate`` reservoir examples whose windows touch no
  shown window, with as many window-pool crops where the component does not fire
  and half as many whole pool windows (`autointerp.scoring.evidence.validation_evidence`).
  `autointerp.refine` scores labels there and shows the labeller its mistakes;
* **test**: everything else. `autointerp score` uses only this: the explain and
  validate windows are recorded with the label (`EvidenceSplit`) and every
  scorer skips any window that overlaps one.

The validation set is reserved whether or not a run refines, so labels made
with and without refinement are tested on the same windows.

>>> sets = EvidenceSets(harvest, n_explain=10, n_top=5, n_validate=8)
>>> record, validation = sets.of(harvest["h.0.mlp:3"])
>>> sorted(record.windows)
['explain', 'validate']
"""

from __future__ import annotations

from typing import Any

from autointerp.heldout import (
    DEFAULT_N_EXPLAIN,
    DEFAULT_N_TOP,
    DEFAULT_N_VALIDATE,
    ExampleSplit,
    evidence_split,
    split_examples,
)
from autointerp.schemas import ComponentData, EvidenceSplit
from autointerp.scoring.evidence import ComponentEvidence, WindowPool, evidence_spans, validation_evidence


class EvidenceSets:
    """The explain / validate / test split of every component of one harvest.

    The harvest's window pool is read once; each `of` call is a pure function of
    the component, the options and the harvest's seed (the same sets on every run).
    """

    def __init__(self, harvest: Any, n_explain: int = DEFAULT_N_EXPLAIN, n_top: int = DEFAULT_N_TOP,
                 n_validate: int = DEFAULT_N_VALIDATE):
        self.harvest = harvest
        self.n_explain, self.n_top, self.n_validate = n_explain, n_top, n_validate
        pool_data = harvest.shared.get("window_pool") if harvest.shared else None
        self.pool = WindowPool.from_shared(pool_data) if pool_data else None
        self.threshold = float(harvest.config.threshold)  # the lowest; a component's is its layer's (threshold_for)
        self.seed = int(harvest.config.seed)

    def validation(self, comp: ComponentData) -> ComponentEvidence:
        """The validation windows of ``comp`` with its true activations (empty when ``n_validate`` is 0)."""
        return self._validation(comp, self._split(comp))

    def _split(self, comp: ComponentData) -> ExampleSplit:
        return split_examples(comp, self.n_explain, self.n_top, self.n_validate)

    def _validation(self, comp: ComponentData, split: ExampleSplit) -> ComponentEvidence:
        ev = validation_evidence(
            comp, self.pool, split, flat_index=self.harvest.space.flat_index(comp.layer, comp.index),
            threshold=float(self.harvest.config.threshold_for(comp.layer)), seed=self.seed,
        )  # fmt: skip
        ev.token_kind = self.harvest.config.tokenizer_kind
        return ev

    def of(self, comp: ComponentData) -> tuple[EvidenceSplit, ComponentEvidence]:
        """The record stored with the label (explain and validate windows), and the validation evidence."""
        split = self._split(comp)  # worked out once for both
        ev = self._validation(comp, split)
        record = evidence_split(comp, self.n_explain, self.n_top, self.seed, self.n_validate, evidence_spans(ev), split=split)
        return record, ev

    def record(self, comp: ComponentData) -> EvidenceSplit:
        return self.of(comp)[0]
