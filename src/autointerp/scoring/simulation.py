"""Simulation: from the label alone, predict the component's activation at every token.

Each trial shows held-out activating windows and random windows (true
activations known from the pool) as token lists; the judge predicts 0-10 per
token. A prediction above 0 counts as a predicted firing. Metrics over all
tokens of a component: precision, recall, F1 (headline) against the real
firings, and the Pearson correlation between predicted and real activations
(the simulation score of the published explain-simulate-score method).
Chance for F1 depends on the firing rate, so none is stated: compare with the
shuffled-label baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define

from autointerp.llm.base import Backend
from autointerp.schemas import ScoreResult
from autointerp.scoring.base import InsufficientEvidence, Scorer, Trial, chunk
from autointerp.scoring.evidence import ComponentEvidence, component_rng
from autointerp.scoring.metrics import binary_metrics, pearson
from autointerp.scoring.prompts import ScorerTask


@define
class SimulationConfig:
    """``n_activating`` held-out activating and ``n_random`` random pool windows,
    ``windows_per_trial`` per LLM call; fewer than ``min_activating`` activating
    windows skips the component."""

    n_activating: int = 5
    n_random: int = 5
    windows_per_trial: int = 5
    min_activating: int = 2


class SimulationScorer(Scorer):
    name = "simulation"
    headline = "f1"
    also_summarize = ("correlation",)
    config_class = SimulationConfig

    def trials(
        self, ev: ComponentEvidence, label: str, *, label_source: str = "label", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        c = self.cfg
        act = ev.positives[: c.n_activating]
        if len(act) < c.min_activating:
            raise InsufficientEvidence(
                f"{ev.key} has {len(act)} held-out activating examples ({ev.held_out_note()}); "
                f"simulation needs at least {c.min_activating}"
            )
        items = act + ev.randoms[: c.n_random]
        component_rng(seed, self.name, ev.key).shuffle(items)
        out = []
        for i, group in enumerate(chunk(items, c.windows_per_trial)):
            task = ScorerTask(self.name, label, [w.tokens for w in group])
            truth = {"activations": [w.activations for w in group], "threshold": ev.threshold}
            out.append(Trial(self.name, ev.key, label_source, i, task, truth, [w.ref() for w in group]))
        return out

    def metrics(self, records: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        real: list[float] = []
        pred: list[float] = []
        truth: list[bool] = []
        for r in records:
            th = float(r["truth"].get("threshold", 0.0))
            for acts, p in zip(r["truth"]["activations"], r["answer"]):
                real.extend(acts)
                pred.extend(float(v) for v in p)
                truth.extend(a > th for a in acts)
        m = binary_metrics(truth, [p > 0 for p in pred])
        out = {k: m[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn")}
        out["correlation"] = pearson(pred, real)
        out["n_tokens"] = float(len(real))
        return out["f1"], out


async def simulation(
    evidence: ComponentEvidence,
    label: str,
    *,
    backend: Backend,
    config: SimulationConfig | None = None,
    label_source: str = "label",
    seed: int = 0,
    **runner_kwargs: Any,
) -> ScoreResult:
    """Score one label by simulation (see the module docstring)."""
    return await SimulationScorer(config).score_one(evidence, label, backend=backend, label_source=label_source, seed=seed, **runner_kwargs)
