"""Detection: can a judge who reads only the label tell activating text from random text?

Each trial shows a shuffled mix of held-out activating windows and negatives
(random windows where the component verifiably does not fire, cut to the same
lengths) as plain text; the judge says which ones the label's component would
fire on. Metrics over all windows of a component: balanced accuracy (headline;
chance 0.5 whatever the mix), precision, recall, F1.
"""

from __future__ import annotations

from typing import Any

from attrs import define

from autointerp.llm.base import Backend
from autointerp.schemas import ScoreResult
from autointerp.scoring.base import BinaryJudgementScorer, InsufficientEvidence, Trial, chunk
from autointerp.scoring.evidence import ComponentEvidence, component_rng
from autointerp.scoring.prompts import ScorerTask


@define
class DetectionConfig:
    """``n_positives`` held-out activating and ``n_negatives`` non-activating windows per
    component, ``examples_per_trial`` per LLM call; fewer than ``min_positives`` /
    ``min_negatives`` available skips the component."""

    n_positives: int = 10
    n_negatives: int = 10
    examples_per_trial: int = 10
    min_positives: int = 4
    min_negatives: int = 4


class DetectionScorer(BinaryJudgementScorer):
    name = "detection"
    truth_key = "positive"
    config_class = DetectionConfig

    def trials(
        self, ev: ComponentEvidence, label: str, *, label_source: str = "label", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        c = self.cfg
        pos, neg = ev.positives[: c.n_positives], ev.negatives[: c.n_negatives]
        if len(pos) < c.min_positives:
            raise InsufficientEvidence(
                f"{ev.key} has {len(pos)} held-out activating examples ({ev.held_out_note()}); detection needs at least "
                f"{c.min_positives} (harvest with a larger ReservoirAcc k, or explain with fewer examples)"
            )
        if len(neg) < c.min_negatives:
            raise InsufficientEvidence(
                f"{ev.key} has {len(neg)} windows where it does not fire; detection needs at least {c.min_negatives} "
                "(it fires almost everywhere, or the harvest has no RandomWindowAcc pool)"
            )
        items = [(w, True) for w in pos] + [(w, False) for w in neg]
        # the order depends on the component, not on the label: baselines see the same trials
        component_rng(seed, self.name, ev.key).shuffle(items)
        out = []
        for i, group in enumerate(chunk(items, c.examples_per_trial)):
            task = ScorerTask(self.name, label, [w.tokens for w, _ in group])
            truth = {"positive": [p for _, p in group]}
            out.append(Trial(self.name, ev.key, label_source, i, task, truth, [w.ref() for w, _ in group]))
        return out



async def detection(
    evidence: ComponentEvidence,
    label: str,
    *,
    backend: Backend,
    config: DetectionConfig | None = None,
    label_source: str = "label",
    seed: int = 0,
    **runner_kwargs: Any,
) -> ScoreResult:
    """Score one label by detection (see the module docstring)."""
    return await DetectionScorer(config).score_one(
        evidence, label, backend=backend, label_source=label_source, seed=seed, **runner_kwargs
    )
