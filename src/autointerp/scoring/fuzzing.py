"""Fuzzing: do the tokens a label points at match where the component really fires?

Each held-out activating window is shown twice, in different trials: once with
its real firing tokens marked ``<<like this>>``, once with the same number of
marks on randomly chosen tokens where it does not fire. The judge says, per
window, whether the marks fit the label. Headline: balanced accuracy over all
marked windows (chance 0.5).
"""

from __future__ import annotations

from typing import Any

from attrs import define

from autointerp.llm.base import Backend
from autointerp.schemas import ScoreResult
from autointerp.scoring.base import BinaryJudgementScorer, InsufficientEvidence, Trial
from autointerp.scoring.evidence import ComponentEvidence, component_rng
from autointerp.scoring.prompts import ScorerTask


@define
class FuzzingConfig:
    """``n_windows`` held-out activating windows, each shown correctly and wrongly marked;
    ``examples_per_trial`` marked windows per LLM call; fewer than ``min_windows``
    usable windows skips the component."""

    n_windows: int = 10
    examples_per_trial: int = 10
    min_windows: int = 4


class FuzzingScorer(BinaryJudgementScorer):
    name = "fuzzing"
    truth_key = "correct"
    config_class = FuzzingConfig

    def trials(
        self, ev: ComponentEvidence, label: str, *, label_source: str = "label", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        c = self.cfg
        rng = component_rng(seed, self.name, ev.key)
        usable = []
        for w in ev.positives:
            real = w.firing_positions
            quiet = [i for i in range(len(w)) if i not in set(real)]
            # a window firing on most tokens cannot be marked wrongly with as many marks
            if real and len(quiet) >= len(real):
                usable.append((w, real, sorted(rng.sample(quiet, len(real)))))
            if len(usable) >= c.n_windows:
                break
        if len(usable) < c.min_windows:
            raise InsufficientEvidence(
                f"{ev.key} has {len(usable)} held-out activating windows that can be marked wrongly "
                f"({ev.held_out_note()}); fuzzing needs at least {c.min_windows}"
            )
        n_trials = max(1, -(-2 * len(usable) // c.examples_per_trial))
        groups: list[list[tuple[Any, list[int], bool]]] = [[] for _ in range(n_trials)]
        for k, (w, real, fake) in enumerate(usable):
            groups[k % n_trials].append((w, real, True))
            # the wrongly marked copy goes to another trial, so no call sees both copies
            groups[(k + 1) % n_trials].append((w, fake, False))
        out = []
        for i, group in enumerate(groups):
            rng.shuffle(group)
            task = ScorerTask(self.name, label, [w.tokens for w, _, _ in group], [m for _, m, _ in group])
            truth = {"correct": [ok for _, _, ok in group]}
            refs = [{**w.ref(), "marks": m, "correct": ok} for w, m, ok in group]
            out.append(Trial(self.name, ev.key, label_source, i, task, truth, refs))
        return out



async def fuzzing(
    evidence: ComponentEvidence,
    label: str,
    *,
    backend: Backend,
    config: FuzzingConfig | None = None,
    label_source: str = "label",
    seed: int = 0,
    **runner_kwargs: Any,
) -> ScoreResult:
    """Score one label by fuzzing (see the module docstring)."""
    return await FuzzingScorer(config).score_one(evidence, label, backend=backend, label_source=label_source, seed=seed, **runner_kwargs)
