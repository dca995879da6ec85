"""Intruder: are a component's activating examples coherent enough to spot an outsider?

Needs no label: it scores the component itself (is there one pattern to
explain?), so it runs once per component with ``label_source="none"``. Each trial
shows ``n_real`` held-out activating examples of the component and one held-out
activating example of another component with a similar firing rate (among the
``n_neighbors`` nearest in log firing rate), firing tokens marked ``<<like this>>``,
in random order; the judge names the odd one. Headline: accuracy; chance is
``1 / (n_real + 1)`` (0.2 with the defaults).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import define

from autointerp.llm.base import Backend
from autointerp.schemas import ScoreResult
from autointerp.scoring.base import InsufficientEvidence, Scorer, Trial
from autointerp.scoring.evidence import ComponentEvidence, component_rng
from autointerp.scoring.prompts import ScorerTask


@define
class IntruderConfig:
    """``n_real`` examples of the component plus one intruder per trial, ``n_trials``
    trials per component, intruders drawn from the ``n_neighbors`` components
    closest in firing rate."""

    n_real: int = 4
    n_trials: int = 3
    n_neighbors: int = 5


class IntruderScorer(Scorer):
    name = "intruder"
    headline = "accuracy"
    uses_label = False
    config_class = IntruderConfig

    def chance(self) -> float:
        return 1.0 / (self.cfg.n_real + 1)

    def context_neighbors(self) -> int:
        return self.cfg.n_neighbors

    def neighbors(self, ev: ComponentEvidence, others: Mapping[str, ComponentEvidence]) -> list[ComponentEvidence]:
        """Other components with held-out examples, nearest in log firing rate first."""
        lr = math.log(max(ev.firing_rate, 1e-12))
        cands = [o for k, o in others.items() if k != ev.key and o.positives]
        cands.sort(key=lambda o: (abs(math.log(max(o.firing_rate, 1e-12)) - lr), o.key))
        return cands[: self.cfg.n_neighbors]

    def trials(
        self, ev: ComponentEvidence, label: str = "", *, label_source: str = "none", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        """``context``: a mapping key -> ComponentEvidence of the components intruders come from."""
        c = self.cfg
        if len(ev.positives) < c.n_real:
            raise InsufficientEvidence(
                f"{ev.key} has {len(ev.positives)} held-out activating examples ({ev.held_out_note()}); "
                f"intruder needs at least {c.n_real}"
            )
        near = self.neighbors(ev, context or {})
        if not near:
            raise InsufficientEvidence(f"no other component with held-out examples to draw an intruder for {ev.key} from")
        rng = component_rng(seed, self.name, ev.key)
        n_trials = min(c.n_trials, max(1, len(ev.positives) // c.n_real))
        out = []
        for i in range(n_trials):
            real = ev.positives[i * c.n_real : (i + 1) * c.n_real]
            other = rng.choice(near)
            odd = rng.choice(other.positives)
            pos = rng.randrange(len(real) + 1)
            windows = list(real)
            windows.insert(pos, odd)
            task = ScorerTask(self.name, "", [w.tokens for w in windows], [w.firing_positions for w in windows])
            refs = [{**w.ref(), "component_key": other.key if j == pos else ev.key} for j, w in enumerate(windows)]
            out.append(Trial(self.name, ev.key, label_source, i, task, {"intruder": pos}, refs))
        return out

    def metrics(self, records: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        hits = [int(r["answer"]) == int(r["truth"]["intruder"]) for r in records]
        acc = sum(hits) / len(hits) if hits else 0.0
        return acc, {"accuracy": acc, "chance": self.chance(), "n_correct": float(sum(hits))}


async def intruder(
    evidence: ComponentEvidence,
    others: Mapping[str, ComponentEvidence],
    *,
    backend: Backend,
    config: IntruderConfig | None = None,
    seed: int = 0,
    **runner_kwargs: Any,
) -> ScoreResult:
    """Score one component by intruder detection; ``others`` supplies the intruders."""
    return await IntruderScorer(config).score_one(
        evidence, "", backend=backend, label_source="none", seed=seed, context=others, **runner_kwargs
    )
