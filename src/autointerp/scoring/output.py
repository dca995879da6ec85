"""Output: does the label say what the component makes the model predict?

The other scorers test the input side (where a component fires). This one tests
the output side: each trial shows the label and ``n_candidates`` lists of
tokens, in random order. One list is the component's own top promoted tokens;
the others are the top promoted tokens of other components, drawn so that each
shares at most ``max_overlap`` of its tokens with the true list (lists that
nearly coincide could not be told apart by any label). The judge picks the list
that belongs to the labelled component. Headline: accuracy; chance is
``1 / n_candidates`` (0.25 with the defaults).

Where the promoted tokens come from (`output_list`), in this order:

* the weight-based logit lens (`ComponentData.output_logits`, `autointerp.logit_lens`):
  the tokens whose logits the component's output direction raises most;
* else the output-probability statistics (`ComponentData.output_tokens`, from
  `OutputProbAcc`): the tokens the model predicts more often while the component
  fires than overall (PMI > 0, with the PMI list's minimum support), best PMI first.

Only promoted tokens are listed (a positive logit, a positive PMI), so a list may
be shorter than ``n_tokens``.

A component with neither (no weights and no output probabilities were
harvested) is skipped with that reason. Distractors come from components whose
list has the same source, so the kind of list gives nothing away.

The output evidence is not held out the way windows are: the logit lens is a
property of the weights, and the output statistics sum over every firing. A
labeller shown them (the ``output_logits`` / ``output_tokens`` prompt sections)
can copy them into its label; the score then says that the label carries the
component's output, which is what this scorer asks. The shuffled-label
control lands at or slightly below chance: a shuffled label describes another
component, whose own list is sometimes one of the distractors (with N
components, in about ``(n_candidates - 1) / (N - 1)`` of the trials).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from autointerp.llm.base import Backend
from autointerp.schemas import ComponentData, ScoreResult
from autointerp.scoring.base import InsufficientEvidence, Scorer, Trial
from autointerp.scoring.evidence import ComponentEvidence, component_rng
from autointerp.scoring.prompts import ScorerTask

#: `OutputList.source` of a list from the weights, and of one from output-probability statistics
LOGIT_LENS, OUTPUT_PROBS = "logit_lens", "output_probs"

#: random draws tried for distractors before scanning every candidate (keeps planning O(N) at 10^5 components)
_DRAWS = 64


def _is_fraction(_: Any, a: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"OutputConfig.{a.name} must be a number from 0 to 1, got {value!r}")


def _at_least(minimum: int) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, a: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"OutputConfig.{a.name} must be a whole number >= {minimum}, got {value!r}")

    return check


@define
class OutputConfig:
    """``n_tokens`` promoted tokens per list, ``n_candidates`` lists per trial (the
    component's and ``n_candidates - 1`` distractors), ``n_trials`` trials per
    component; a distractor shares at most ``max_overlap`` of its tokens with the
    true list; a component with fewer than ``min_tokens`` promoted tokens is skipped."""

    n_tokens: int = field(default=10, validator=_at_least(1))
    n_candidates: int = field(default=4, validator=_at_least(2))
    n_trials: int = field(default=3, validator=_at_least(1))
    max_overlap: float = field(default=0.2, validator=_is_fraction)
    min_tokens: int = field(default=3, validator=_at_least(1))


@define(frozen=True)
class OutputList:
    """One component's top promoted tokens (best first) and where they came from."""

    key: str
    source: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]

    def overlap(self, other: OutputList) -> float:
        """The share of the shorter list's tokens that the two lists have in common."""
        n = min(len(self.token_ids), len(other.token_ids))
        return len(set(self.token_ids) & set(other.token_ids)) / n if n else 1.0

    def ref(self) -> dict[str, Any]:
        """The list as a trial records it (``tokens`` as the harvest recorded them, for the report; not
        part of the trial's key)."""
        return {"component_key": self.key, "source": self.source, "token_ids": list(self.token_ids),
                "tokens": list(self.tokens)}


def _shown(token: str | None, token_id: int) -> str:
    return token if token is not None else f"<{token_id}>"


def output_list(comp: ComponentData, n_tokens: int = 10) -> OutputList | None:
    """``comp``'s top ``n_tokens`` promoted tokens: its logit lens (tokens with a positive logit),
    else its output-probability statistics (tokens with PMI > 0 and at least the PMI list's
    minimum support, best PMI first); None when it has neither."""
    lens = comp.output_logits
    promoted = [t for t in lens.promoted if t.logit > 0] if lens is not None else []
    if promoted:
        top = promoted[:n_tokens]
        return OutputList(comp.key, LOGIT_LENS, tuple(t.token_id for t in top), tuple(_shown(t.token, t.token_id) for t in top))
    stats = comp.output_tokens
    if stats is not None and comp.firing_count > 0:
        from autointerp.llm.offline import MIN_SUPPORT, by_supported_pmi

        # promoted: predicted more often while it fires than overall (PMI > 0), with enough support
        ranked = [s for s in by_supported_pmi(stats.top_pmi) if s.pmi > 0 and s.count >= MIN_SUPPORT]
        if ranked:
            top = ranked[:n_tokens]
            return OutputList(comp.key, OUTPUT_PROBS, tuple(s.token_id for s in top), tuple(_shown(s.token, s.token_id) for s in top))
    return None


NO_OUTPUT_EVIDENCE = (
    "{key} has no output evidence: no logit lens (the harvest function exposes no output direction and "
    "unembedding, or it was harvested with --no_output_logits) and no output-token statistics (the harvest "
    "recorded no output probabilities: OutputProbAcc)"
)


class OutputCandidates:
    """Every component's `OutputList`, built once per scoring run; distractors are drawn from here.

    Holds ``n_tokens`` token ids and strings per component (about 1 KB each with
    the defaults, so 100 MB at 10^5 components).
    """

    def __init__(self, components: Iterable[ComponentData], n_tokens: int = 10):
        self.lists: dict[str, OutputList] = {}
        by_source: dict[str, list[str]] = {}
        for c in components:
            ol = output_list(c, n_tokens)
            if ol is not None:
                self.lists[c.key] = ol
                by_source.setdefault(ol.source, []).append(c.key)
        self._by_source = by_source

    @classmethod
    def of(cls, components: Iterable[ComponentData] | Mapping[str, ComponentData], n_tokens: int = 10) -> OutputCandidates:
        return cls(components.values() if isinstance(components, Mapping) else components, n_tokens)

    def __len__(self) -> int:
        return len(self.lists)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{len(v)} from {k}" for k, v in self._by_source.items())
        return f"OutputCandidates({len(self)} lists: {kinds or 'none'})"

    def get(self, key: str) -> OutputList | None:
        return self.lists.get(key)

    def distractors(self, truth: OutputList, n: int, rng: random.Random, max_overlap: float) -> list[OutputList]:
        """Up to ``n`` lists of other components with ``truth``'s source, each sharing at most
        ``max_overlap`` of its tokens with ``truth``, distinct, in random order.

        A few random draws first, then (only if they found too few) a scan of every
        candidate from a random start, so a component among 10^5 costs O(n) draws.
        """
        keys = self._by_source.get(truth.source, [])
        chosen: list[OutputList] = []
        seen = {truth.key}

        def consider(k: str) -> None:
            if k not in seen:
                seen.add(k)
                ol = self.lists[k]
                if ol.overlap(truth) <= max_overlap:
                    chosen.append(ol)

        if not keys:
            return chosen
        for i in rng.sample(range(len(keys)), min(len(keys), _DRAWS)):
            if len(chosen) >= n:
                return chosen
            consider(keys[i])
        start = rng.randrange(len(keys))
        for j in range(len(keys)):
            if len(chosen) >= n:
                break
            consider(keys[(start + j) % len(keys)])
        return chosen


@define
class OutputContext:
    """What `OutputScorer.trials` needs beyond the held-out windows: the candidates to draw from."""

    candidates: OutputCandidates


class OutputScorer(Scorer):
    name = "output"
    headline = "accuracy"
    config_class = OutputConfig

    def chance(self) -> float:
        return 1.0 / self.cfg.n_candidates

    def context_maker(self, components: Sequence[ComponentData]) -> Callable[[ComponentData], Any]:
        ctx = OutputContext(OutputCandidates(components, self.cfg.n_tokens))
        return lambda _c: ctx

    def trials(
        self, ev: ComponentEvidence, label: str, *, label_source: str = "label", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        """``context``: an `OutputContext` (or an `OutputCandidates`) holding this component's list and the others'."""
        c = self.cfg
        cands = context.candidates if isinstance(context, OutputContext) else context
        if not isinstance(cands, OutputCandidates):
            raise TypeError(f"output trials need context=OutputCandidates.of(components), got {context!r}")
        truth = cands.get(ev.key)
        if truth is None:
            raise InsufficientEvidence(NO_OUTPUT_EVIDENCE.format(key=ev.key))
        if len(truth.token_ids) < c.min_tokens:
            raise InsufficientEvidence(
                f"{ev.key} has {len(truth.token_ids)} promoted tokens ({truth.source}); output needs at least {c.min_tokens}"
            )
        rng = component_rng(seed, self.name, ev.key)
        out = []
        for i in range(c.n_trials):
            others = cands.distractors(truth, c.n_candidates - 1, rng, c.max_overlap)
            if len(others) < c.n_candidates - 1:
                raise InsufficientEvidence(
                    f"only {len(others)} other components have {truth.source} output lists sharing at most "
                    f"{c.max_overlap:.0%} of their tokens with {ev.key}'s; output needs {c.n_candidates - 1} distractors"
                )
            pos = rng.randrange(c.n_candidates)
            lists = list(others)
            lists.insert(pos, truth)
            task = ScorerTask(self.name, label, [list(ol.tokens) for ol in lists])
            out.append(Trial(self.name, ev.key, label_source, i, task, {"list": pos}, [ol.ref() for ol in lists]))
        return out

    def result(self, component_key: str, label_source: str, label: str, records: Sequence[dict[str, Any]]) -> ScoreResult:
        """The base result, with each trial's true list and the judge's pick in ``details["trials"]``
        (``{"truth": i, "answer": j}``, 0-based, trial ``t``'s lists being ``details["windows"][t]``;
        the report shows them)."""
        res = super().result(component_key, label_source, label, records)
        res.details["trials"] = [{"truth": int(r["truth"]["list"]), "answer": int(r["answer"])}
                                 for r in sorted(records, key=lambda r: r["trial"])]
        return res

    def metrics(self, records: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        hits = [int(r["answer"]) == int(r["truth"]["list"]) for r in records]
        acc = sum(hits) / len(hits) if hits else 0.0
        return acc, {"accuracy": acc, "chance": self.chance(), "n_correct": float(sum(hits))}


async def output(
    component: ComponentData,
    label: str,
    others: Iterable[ComponentData] | Mapping[str, ComponentData],
    *,
    backend: Backend,
    config: OutputConfig | None = None,
    label_source: str = "label",
    seed: int = 0,
    **runner_kwargs: Any,
) -> ScoreResult:
    """Score one label on the output side; ``others`` supplies the distractor lists
    (``component`` itself may be among them)."""
    sc = OutputScorer(config)
    pool = list(others.values() if isinstance(others, Mapping) else others)
    if all(o.key != component.key for o in pool):
        pool.append(component)
    ev = ComponentEvidence(component.key, component.index, component.firing_rate, 0.0, firing_count=component.firing_count)
    ctx = OutputContext(OutputCandidates(pool, sc.cfg.n_tokens))
    return await sc.score_one(ev, label, backend=backend, label_source=label_source, seed=seed, context=ctx, **runner_kwargs)
