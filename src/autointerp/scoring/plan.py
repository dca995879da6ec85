"""The first step of a scoring run: for every (scorer, component, label source), reuse, skip or ask.

`plan_scoring` reads nothing and writes nothing: given the harvest, the labels,
the options and what earlier runs already wrote, it decides which results are
reused, which are recorded as skips (with the reason) and which trials the
judge must answer. `autointerp.scoring.run` then runs those trials and turns
their answers into results.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import define, field

from autointerp.harvest import HarvestResult
from autointerp.heldout import ExampleSplit, missing_spans, split_examples, split_recorded
from autointerp.llm.runner import Job
from autointerp.schemas import ComponentData, EvidenceSplit, LayerSpec, ScoreResult
from autointerp.scoring.base import InsufficientEvidence, Scorer, with_token_kind
from autointerp.scoring.baselines import NO_LABEL, shuffled_labels, token_lookup_labels
from autointerp.scoring.evidence import ComponentEvidence, WindowPool, build_evidence
from autointerp.scoring.options import ScoreOptions, ScoringConfig

log = logging.getLogger("autointerp.scoring")

#: (scorer, component key, label source): one result of a scoring run
Slot = tuple[str, str, str]

NO_INTERPRETATION = "no interpretation for this component: run `autointerp interpret` first"
NO_SHUFFLE = "shuffled labels need at least two labelled components"


@define
class ExpectedScore:
    """A result that waits on the judge: the scorer, the label it judges, the keys of its
    trials and how its evidence was held out (`HeldOut.note`, kept in the result's details)."""

    scorer: Scorer
    label: str
    trial_keys: list[str]
    held_out: dict = field(factory=dict)


@define
class HeldOut:
    """What the explainer saw of one component, as scoring will honour it.

    ``split`` is None when it cannot be honoured; ``problem`` then says why (the
    skip reason). ``note`` goes into every result's ``details["held_out"]``, so a
    result is reused only while the split it was scored under is unchanged.
    """

    split: ExampleSplit | None
    note: dict
    problem: str = ""


def held_out(c: ComponentData, record: EvidenceSplit | None, config: ScoringConfig) -> HeldOut:
    """The split recorded with the label, checked against this harvest; without a record,
    the split ``config.n_explain`` / ``config.n_top`` say (the interpreter's defaults unless set)."""
    if record is None:
        split = split_examples(c, config.n_explain, config.n_top)
        note = {"split": "assumed", "n_explain": config.n_explain, "n_top": config.n_top, "shown_windows": len(split.shown_spans())}
        return HeldOut(split, note)
    spans = record.spans()
    blob = json.dumps(sorted(list(s) for s in spans)).encode()
    note = {
        "split": "recorded", "n_explain": record.n_explain, "n_top": record.n_top, "shown_windows": len(record.shown()),
        "shown_hash": hashlib.sha256(blob).hexdigest()[:12],
    }  # fmt: skip
    if record.reserved():  # the validation windows, excluded from the test set as well
        note["validate_windows"] = len(record.reserved())
    # the shown windows must be this harvest's examples; validation windows may be pool crops
    shown = record.shown()
    missing = missing_spans(c, shown)
    if missing:
        s, a, b = missing[0]
        problem = (
            f"the label of {c.key} was made from {len(missing)} of {len(shown)} shown windows that are not in this "
            f"harvest (e.g. sequence {s}, tokens {a}-{b}): it was labelled from another harvest, so what the "
            f"labeller saw cannot be held out; label this harvest again (`autointerp interpret`)"
        )
        return HeldOut(None, note, problem)
    return HeldOut(split_recorded(c, record), note)


@define
class ScoringPlan:
    """What `plan_scoring` decided. ``keys``: the components in scoring order."""

    names: tuple[str, ...]
    keys: list[str]
    reused: dict[Slot, ScoreResult] = field(factory=dict)
    skips: dict[Slot, ScoreResult] = field(factory=dict)
    expected: dict[Slot, ExpectedScore] = field(factory=dict)
    jobs: list[Job] = field(factory=list)

    def ordered(self, scored: Mapping[Slot, ScoreResult]) -> list[ScoreResult]:
        """Reused, skipped and newly ``scored`` results, by scorer, then component, then label source."""
        results = {**self.reused, **self.skips, **scored}
        rank = {k: i for i, k in enumerate(self.keys)}
        return [results[s] for s in sorted(results, key=lambda s: (self.names.index(s[0]), rank.get(s[1], 0), s[2]))]


#: components an `EvidenceCache` keeps parsed at once (a scoring run reads one component at a time)
CACHE_COMPONENTS = 256


class EvidenceCache:
    """Held-out evidence per component: with pool negatives for a scored component,
    positives only for an intruder candidate.

    Components are read from the harvest by key when first needed (a lazy harvest
    parses only those) and kept, with their split and evidence, for the last
    `CACHE_COMPONENTS` keys used; one parsed object per key is used for its split and
    its evidence alike. Evidence is a pure function of the component, the split and
    the seed, so one built again after eviction is the same.
    """

    def __init__(self, harvest: HarvestResult, config: ScoringConfig, seed: int, records: Mapping[str, EvidenceSplit | None] | None = None,
                 max_components: int = CACHE_COMPONENTS):
        self._harvest, self._config, self._seed = harvest, config, seed
        self._records = dict(records or {})
        pool_data = harvest.shared.get("window_pool")
        self._pool = WindowPool.from_shared(pool_data) if pool_data else None
        self._max = max(1, int(max_components))
        # key -> {"comp": ComponentData, "held_out": HeldOut, "full": ..., "positives": ...}, least recently used first
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _entry(self, key: str) -> dict[str, Any]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = {"comp": self._harvest[key]}
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry

    def component(self, key: str) -> ComponentData:
        """The component ``key`` (read from the harvest once while it stays cached)."""
        return self._entry(key)["comp"]

    def held_out(self, c: ComponentData | str) -> HeldOut:
        entry = self._entry(c if isinstance(c, str) else c.key)
        if "held_out" not in entry:
            comp = entry["comp"]
            entry["held_out"] = held_out(comp, self._records.get(comp.key), self._config)
        return entry["held_out"]

    def _build(self, entry: dict[str, Any], pool: WindowPool | None) -> ComponentEvidence:
        c = entry["comp"]
        split = self.held_out(c.key).split
        if split is None:  # nothing can be shown as held out (the caller records the skip)
            split = ExampleSplit(explain=list(c.examples), explain_top=list(c.top_examples))
        ev = build_evidence(
            c, pool, flat_index=self._harvest.space.flat_index(c.layer, c.index),
            threshold=float(self._harvest.config.threshold_for(c.layer)), seed=self._seed, split=split,
        )  # fmt: skip
        ev.token_kind = self._harvest.config.tokenizer_kind
        return ev

    def full(self, c: ComponentData | str) -> ComponentEvidence:
        entry = self._entry(c if isinstance(c, str) else c.key)
        if "full" not in entry:
            entry["full"] = self._build(entry, self._pool)
        return entry["full"]

    def positives_only(self, c: ComponentData | str) -> ComponentEvidence:
        """An intruder candidate needs only its held-out activating windows."""
        entry = self._entry(c if isinstance(c, str) else c.key)
        if "full" in entry:
            return entry["full"]
        if "positives" not in entry:
            entry["positives"] = self._build(entry, None)
        return entry["positives"]


class FiringRateNeighbors:
    """The harvest's firing components sorted by log firing rate, to find those near a component.

    Built from index rows (`HarvestResult.summaries`: key, firing count and rate),
    so no component's evidence is parsed to find its neighbours.
    """

    def __init__(self, rows: Iterable[Any]):
        # a stable sort: components with the same rate keep their harvest order
        fired = sorted(((_log_rate(r.firing_rate), r.key) for r in rows if r.firing_count > 0), key=lambda t: t[0])
        self._rates = [rate for rate, _ in fired]
        self._keys = [key for _, key in fired]

    def around(self, target: ComponentData, n: int, make: Callable[[str], ComponentEvidence]) -> dict[str, ComponentEvidence]:
        """Evidence of the ``2n`` components nearest in log firing rate (the target excluded); ``make(key)`` builds one."""
        i = bisect.bisect_left(self._rates, _log_rate(target.firing_rate))
        lo, hi = max(0, i - 2 * n - 1), min(len(self._keys), i + 2 * n + 1)
        return {k: make(k) for k in self._keys[lo:hi] if k != target.key}


def _log_rate(firing_rate: float) -> float:
    return math.log(max(firing_rate, 1e-12))


def check_subset(
    layers: Sequence[LayerSpec], keys: Sequence[str] | None, layer_names: Sequence[str] | None, *,
    keys_option: str = "score option keys", layers_option: str = "score option layers",
) -> None:
    """Every key in ``keys`` names a component of the harvest's ``layers`` and every name in
    ``layer_names`` one of its layers; otherwise a ValueError naming the option, what the
    harvest has and what arrived."""
    widths = {layer.name: layer.width for layer in layers}
    have = ", ".join(f"{n} ({w} components)" for n, w in widths.items())
    if layer_names is not None:
        unknown = [n for n in layer_names if n not in widths]
        if unknown or not layer_names:
            raise ValueError(f"{layers_option} must name layers of the harvest ({have}), got {list(unknown or layer_names)!r}")
    if keys is not None:
        if not keys:
            raise ValueError(f"{keys_option} must name at least one component, got none")
        for k in keys:
            layer, _, idx = k.rpartition(":")
            if layer not in widths or not idx.isdigit() or int(idx) >= widths[layer]:
                example = f"{next(iter(widths))}:0" if widths else "layer:0"
                raise ValueError(
                    f"{keys_option} must be component keys of the harvest ('layer:index', e.g. {example!r}; layers: {have}), "
                    f"got {k!r}"
                )


def choose_components(
    harvest: HarvestResult, labels: Mapping[str, str], limit: int | None, seed: int,
    keys: Sequence[str] | None = None, layers: Sequence[str] | None = None,
) -> tuple[list[str], bool]:
    """The components to score, in harvest order, and whether none of them is labelled.

    The pool is the whole harvest, the components ``keys`` names or those of
    ``layers``; of the pool, the labelled ones (with ``keys``, every named one, so an
    unlabelled one is recorded as a skip; with no labelled one, all of the pool, to
    record a skip each), then a reproducible random subset of ``limit`` of them.
    """
    check_subset(harvest.config.layers, keys, layers)
    if keys is not None:
        wanted = set(keys)
        pool = [k for k in harvest.keys() if k in wanted]
    elif layers is not None:
        wanted = set(layers)
        pool = [k for k in harvest.keys() if k.rpartition(":")[0] in wanted]
    else:
        pool = list(harvest.keys())
    chosen = pool if keys is not None else [k for k in pool if k in labels]
    no_labels = not any(k in labels for k in chosen)
    if not chosen:
        chosen = pool
    if limit is not None and limit < len(chosen):
        position = {k: i for i, k in enumerate(chosen)}
        chosen = sorted(random.Random(seed).sample(chosen, limit), key=position.__getitem__)
    return chosen, no_labels


def plan_scoring(
    harvest: HarvestResult,
    labels: Mapping[str, str],
    opts: ScoreOptions,
    done: Mapping[Slot, ScoreResult],
    model: str,
    records: Mapping[str, EvidenceSplit | None] | None = None,
) -> ScoringPlan:
    """Decide every result of a run (see the module docstring). ``done``: what earlier runs
    wrote; ``records``: the split recorded with each label (`InterpretationResult.evidence`)."""
    if not harvest.shared.get("window_pool"):
        log.warning("the harvest has no window pool (RandomWindowAcc): detection has no negatives and simulation no random windows")
    unknown = [k for k in labels if k not in harvest]
    if unknown:
        log.warning("%d labels name components that are not in the harvest (e.g. %r); they are ignored", len(unknown), unknown[0])
    keys, no_labels = choose_components(harvest, labels, opts.limit, opts.seed, opts.keys, opts.layers)
    return _Planner(harvest, labels, opts, done, model, keys, no_labels, records).plan()


class _Planner:
    """The decisions of `plan_scoring`, one named step per level: scorer, component, label source."""

    def __init__(self, harvest, labels, opts: ScoreOptions, done, model: str, keys: list[str], no_labels: bool, records=None):
        self.labels, self.opts, self.done, self.model, self.no_labels = labels, opts, done, model, no_labels
        self.keys = keys
        self.evidence = EvidenceCache(harvest, opts.config, opts.seed, records)
        self.harvest = harvest
        self.neighbors = FiringRateNeighbors(harvest.summaries())
        self.context_makers: dict[str, Callable[[ComponentData], object] | None] = {}
        self.shuffled: dict[str, str] = {}
        self.token_lookup: dict[str, str] = {}
        if opts.baselines and not no_labels:
            real = {k: labels[k] for k in keys if k in labels}
            self.shuffled = shuffled_labels(real, opts.seed)
        self.out = ScoringPlan(opts.scorers, keys)

    def plan(self) -> ScoringPlan:
        """Component by component (each read once, while it is planned), every scorer for each."""
        scorers = [(name, self.opts.config.scorer(name)) for name in self.opts.scorers]
        for key in self.keys:
            c = self.evidence.component(key)
            for name, sc in scorers:
                self.component(name, sc, c)
        return self.out

    def _token_lookup(self, c: ComponentData) -> str:
        """The token-lookup label of ``c``, from what its explainer saw (made once)."""
        if c.key not in self.token_lookup:
            split = self.evidence.held_out(c).split
            self.token_lookup.update(token_lookup_labels([c], splits={c.key: split}, kind=self.harvest.config.tokenizer_kind))
        return self.token_lookup[c.key]

    def component(self, name: str, sc: Scorer, c: ComponentData) -> None:
        if self.no_labels or c.key not in self.labels:
            self.skip(name, sc, c.key, "label" if sc.uses_label else NO_LABEL, "", NO_INTERPRETATION)
            return
        if not sc.uses_label:
            todo: list[tuple[str, str | None]] = [(NO_LABEL, "")]
        else:
            todo = [("label", self.labels[c.key])]
            if self.opts.baselines:
                todo += [("shuffled", self.shuffled.get(c.key)), ("token_lookup", self._token_lookup(c))]
        for src, label in todo:
            if label is None:
                self.skip(name, sc, c.key, src, "", NO_SHUFFLE)
            else:
                self.label_source(name, sc, c, src, label)

    def label_source(self, name: str, sc: Scorer, c: ComponentData, src: str, label: str) -> None:
        held = self.evidence.held_out(c)
        prev = self.done.get((name, c.key, src))
        if prev is not None and not prev.skipped and prev.label == label and prev.details.get("held_out") == held.note:
            self.out.reused[(name, c.key, src)] = prev
            return
        if c.firing_count == 0:
            self.skip(name, sc, c.key, src, label, f"{c.key} never fired in the harvest: nothing to score")
            return
        if held.split is None:
            self.skip(name, sc, c.key, src, label, held.problem)
            return
        ev = self.evidence.full(c)
        ctx = self.context(name, sc, c)
        try:
            trials = with_token_kind(sc.trials(ev, label, label_source=src, seed=self.opts.seed, context=ctx), ev)
        except InsufficientEvidence as e:
            self.skip(name, sc, c.key, src, label, str(e))
            return
        jobs = [t.job(self.model) for t in trials]
        self.out.jobs.extend(jobs)
        self.out.expected[(name, c.key, src)] = ExpectedScore(sc, label, [j.key for j in jobs], held.note)

    def context(self, name: str, sc: Scorer, c: ComponentData) -> object:
        """What ``sc.trials`` gets as ``context`` for ``c``: from the scorer's own `Scorer.context_maker`
        (built once per run), else the firing-rate neighbours it asks for."""
        if name not in self.context_makers:
            # every component is parsed only for a scorer that builds its own context from them; it
            # gets the harvest itself (index, len, iterate), so a lazy one streams rather than
            # holding every component (``.components``: ~200 KiB each, 20 GB at 10^5)
            own = type(sc).context_maker is not Scorer.context_maker
            self.context_makers[name] = sc.context_maker(self.harvest) if own else None
        make = self.context_makers[name]
        if make is not None:
            return make(c)
        n = sc.context_neighbors()
        return self.neighbors.around(c, n, self.evidence.positives_only) if n else None

    def skip(self, name: str, sc: Scorer, key: str, src: str, label: str, reason: str) -> None:
        prev = self.done.get((name, key, src))
        if prev is not None and prev.skipped and prev.reason == reason and prev.label == label:
            self.out.reused[(name, key, src)] = prev  # recorded by an earlier run
        else:
            self.out.skips[(name, key, src)] = sc.skipped(key, src, label, reason)
