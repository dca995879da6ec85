"""Held-out evidence per component: what scorers show the judge, and where each piece came from.

For one component, `build_evidence` gathers

* **positives**: held-out activating windows — the reservoir's examples whose
  window shares no token position with a window the explainer saw
  (`autointerp.heldout`: the split recorded with the label, or else
  `split_examples`), interleaved with held-out max-activating ones, so trials
  cover the activation range, not only the top;
* **negatives**: crops of random pool windows (`RandomWindowAcc`) where the
  component verifiably does not fire (no firing in the crop according to the
  harvest), each as long as a positive, so length gives nothing away; chosen in
  an order seeded by (seed, component key): different negatives for different
  components, the same ones on every run;
* **randoms**: whole pool windows with the component's true activations (firing
  or not), for the simulator.

The true activation has one meaning in every window (`true_activations`): the
stored value where the component fires (``> threshold``), 0 elsewhere — a
held-out example's sub-threshold values are not kept, since pool windows cannot
have them.

Nothing shown to the explainer is reused: a pool window or crop that overlaps a
shown example's span is skipped, and so is one that overlaps a window reserved
for validation (`ExampleSplit.reserved`): scores are on the test set only.
`validation_evidence` builds the validation set itself the same way (its own
examples, negatives and random windows, away from what was shown). Every window carries its provenance
(`EvidenceWindow.ref`), which trials record.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from attrs import define, field

from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP, ExampleSplit, SpanIndex, example_span, split_examples
from autointerp.schemas import ActivationExample, ComponentData, Span


def component_rng(seed: int, *parts: object) -> random.Random:
    """A `random.Random` that depends only on ``seed`` and ``parts`` (stable across runs and machines)."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def silent_value(threshold: float) -> float:
    """The true activation where a component does not fire: 0, or the threshold itself when
    that is negative (so a silent position never reads as ``> threshold``)."""
    return min(0.0, float(threshold))


def true_activations(values: Sequence[float], threshold: float) -> list[float]:
    """The one definition for every window kind: the value where it fires (``> threshold``), else `silent_value`."""
    silent = silent_value(threshold)
    return [float(a) if a > threshold else silent for a in values]


@define
class EvidenceWindow:
    """A window of tokens with one component's true activation at each token.

    ``source`` is ``"holdout"`` / ``"holdout_top"`` (a held-out reservoir / top-k
    example; ``index`` is its position in ``examples`` / ``top_examples``) or
    ``"pool"`` (``index`` is the pool window). ``start`` is the sequence position
    of the first token; ``firing_offset`` the sampled firing inside the window.
    """

    tokens: list[str]
    token_ids: list[int]
    activations: list[float]
    source: str
    index: int
    sequence_index: int
    start: int
    threshold: float = 0.0
    firing_offset: int | None = None

    @property
    def fires(self) -> list[bool]:
        return [a > self.threshold for a in self.activations]

    @property
    def firing_positions(self) -> list[int]:
        return [i for i, a in enumerate(self.activations) if a > self.threshold]

    def __len__(self) -> int:
        return len(self.tokens)

    def ref(self) -> dict[str, Any]:
        r = {"source": self.source, "index": self.index, "sequence_index": self.sequence_index, "start": self.start, "length": len(self.tokens)}
        if self.firing_offset is not None:
            r["firing_offset"] = self.firing_offset
        return r

    def crop(self, lo: int, hi: int) -> EvidenceWindow:
        off = None if self.firing_offset is None or not lo <= self.firing_offset < hi else self.firing_offset - lo
        return EvidenceWindow(
            self.tokens[lo:hi], self.token_ids[lo:hi], self.activations[lo:hi], self.source, self.index,
            self.sequence_index, self.start + lo, self.threshold, off,
        )  # fmt: skip


class WindowPool:
    """Reads the output of `RandomWindowAcc` (``HarvestResult.shared["window_pool"]``).

    >>> pool = WindowPool.from_shared(result.shared["window_pool"])
    >>> pool.firing_offsets(window=3, component=12)    # where component 12 fires in window 3
    >>> pool.window(3, component=12)                   # an EvidenceWindow with its activations
    """

    def __init__(self, shared: Any, decode: Callable[[int], str] | None = None):
        from autointerp.accumulators.window_pool import firing_columns, pool_meta

        meta = pool_meta(shared)  # a SharedRows table (format 2) or the JSON document of format 1
        self.window_len = int(meta["window_len"])
        self.threshold = float(meta.get("threshold", 0.0))
        #: (first flat index, end, threshold) per layer when layers have their own thresholds
        self._layer_thresholds = [(int(o), int(o) + int(w), float(t)) for _, o, w, t in meta.get("layer_thresholds") or []]
        self.windows: list[dict[str, Any]] = list(meta["windows"])
        self._strings = {int(k): v for k, v in (meta.get("token_strings") or {}).items()}
        self._decode = decode
        f = firing_columns(shared)
        # the firings grouped by component, and within a component by window, once, in tensors (a
        # window's firings keep the file's order); a component's firings are read from its slice
        # when first asked for, and the last few components' are kept (interpret's validation
        # sets ask for every component once, scoring for a few)
        comp, window = f["component"], f["window"]
        n_win = int(window.max()) + 1 if window.numel() else 1
        order = torch.argsort(comp * n_win + window, stable=True)
        uniq, counts = torch.unique_consecutive(comp[order], return_counts=True)
        starts = counts.cumsum(0) - counts
        self._spans = dict(zip(uniq.tolist(), zip(starts.tolist(), counts.tolist())))
        self._f_window = window[order]
        self._f_offset = f["offset"][order]
        self._f_act = f["activation"][order]  # the stored doubles, exactly
        self._n_firings = int(comp.numel())
        self._recent: collections.OrderedDict[int, tuple[list[int], list[int], list[float]]] = collections.OrderedDict()

    #: how many components' firings a pool keeps as Python lists (the most recently asked for)
    KEEP_COMPONENTS = 64

    def _firings(self, component: int) -> tuple[list[int], list[int], list[float]]:
        """The component's firings as (windows ascending, offsets, activations), three parallel lists."""
        got = self._recent.get(component)
        if got is not None:
            self._recent.move_to_end(component)
            return got
        span = self._spans.get(component)
        if span is None:
            got = ([], [], [])
        else:
            lo, hi = span[0], span[0] + span[1]
            got = (self._f_window[lo:hi].tolist(), self._f_offset[lo:hi].tolist(), self._f_act[lo:hi].tolist())
        self._recent[component] = got
        if len(self._recent) > self.KEEP_COMPONENTS:
            self._recent.popitem(last=False)
        return got

    def _in_window(self, window: int, component: int) -> tuple[list[int], list[float]]:
        """(offsets, activations) of the component's firings in one window, in the file's order."""
        wins, offs, acts = self._firings(component)
        lo, hi = bisect.bisect_left(wins, window), bisect.bisect_right(wins, window)
        return offs[lo:hi], acts[lo:hi]

    def _of(self, component: int) -> dict[int, list[tuple[int, float]]]:
        """``{window: [(offset, activation), ...]}`` of one component (empty if it never fires in the pool)."""
        out: dict[int, list[tuple[int, float]]] = {}
        for w, o, a in zip(*self._firings(component)):
            out.setdefault(w, []).append((o, a))
        return out

    @classmethod
    def from_shared(cls, shared: Any, decode: Callable[[int], str] | None = None) -> WindowPool:
        """From ``HarvestResult.shared["window_pool"]``: the `SharedRows` table `RandomWindowAcc` writes
        (format 2), or the JSON document of format 1 (a harvest saved before 2026-12)."""
        return cls(shared, decode)

    def __len__(self) -> int:
        return len(self.windows)

    def __repr__(self) -> str:
        return f"WindowPool({len(self)} windows of up to {self.window_len} tokens, {self._n_firings} firings)"

    def token_str(self, t: int) -> str:
        if t in self._strings:
            return self._strings[t]
        if self._decode is not None:
            return self._decode(t)
        return f"<{t}>"

    def firing_offsets(self, window: int, component: int) -> list[int]:
        return self._in_window(window, component)[0]

    def windows_firing(self, component: int) -> set[int]:
        return set(self._firings(component)[0])

    def threshold_of(self, component: int) -> float:
        """The threshold component ``component`` (a flat index) fires above: its layer's."""
        for lo, hi, t in self._layer_thresholds:
            if lo <= component < hi:
                return t
        return self.threshold

    def activations(self, window: int, component: int) -> list[float]:
        """The component's activation at every token of the window (0 where it does not fire, or a negative threshold)."""
        acts = [silent_value(self.threshold_of(component))] * len(self.windows[window]["token_ids"])
        for o, a in zip(*self._in_window(window, component)):
            acts[o] = a
        return acts

    def window(self, window: int, component: int) -> EvidenceWindow:
        w = self.windows[window]
        ids = list(w["token_ids"])
        return EvidenceWindow(
            [self.token_str(t) for t in ids], ids, self.activations(window, component), "pool", window,
            int(w["sequence_index"]), int(w["start"]), self.threshold_of(component),
        )  # fmt: skip


@define
class ComponentEvidence:
    """Everything the scorers may show about one component, all held out from the explainer."""

    key: str
    flat_index: int
    firing_rate: float
    threshold: float
    positives: list[EvidenceWindow] = field(factory=list)
    negatives: list[EvidenceWindow] = field(factory=list)
    randoms: list[EvidenceWindow] = field(factory=list)
    shown: list[tuple[int, int]] = field(factory=list)
    firing_count: int = 0
    #: the harvest's tokenizer kind: how the windows' tokens read as text in the judge's prompts
    token_kind: str | None = None

    def held_out_note(self) -> str:
        """Why positives may be few: how often it fired and how many examples the explainer saw."""
        return f"it fired {self.firing_count} times in the harvest and {len(self.shown)} examples were shown to the explainer"

    def __repr__(self) -> str:
        return (
            f"ComponentEvidence({self.key!r}, positives={len(self.positives)}, "
            f"negatives={len(self.negatives)}, randoms={len(self.randoms)})"
        )


def _example_window(ex: ActivationExample, source: str, index: int, threshold: float, decode: Callable[[int], str] | None) -> EvidenceWindow:
    if ex.tokens is not None:
        toks = list(ex.tokens)
    elif decode is not None:
        toks = [decode(t) for t in ex.token_ids]
    else:
        toks = [f"<{t}>" for t in ex.token_ids]
    return EvidenceWindow(
        toks, list(ex.token_ids), true_activations(ex.activations, threshold), source, index, ex.sequence_index,
        ex.position - ex.firing_offset, threshold, ex.firing_offset,
    )  # fmt: skip


def build_evidence(
    comp: ComponentData,
    pool: WindowPool | None,
    *,
    flat_index: int,
    threshold: float = 0.0,
    n_explain: int = DEFAULT_N_EXPLAIN,
    n_top: int = DEFAULT_N_TOP,
    max_negatives: int = 20,
    max_randoms: int = 10,
    seed: int = 0,
    decode: Callable[[int], str] | None = None,
    split: ExampleSplit | None = None,
) -> ComponentEvidence:
    """The held-out evidence of one component (see the module docstring).

    ``split``: what the explainer saw (`autointerp.heldout.split_shown` of the
    split recorded with the label); without it, ``split_examples(comp, n_explain,
    n_top)``, so ``n_explain`` / ``n_top`` must then be the values the interpreter used.
    """
    if split is None:
        split = split_examples(comp, n_explain=n_explain, n_top=n_top)
    shown_examples = split.explain + split.explain_top
    spans = SpanIndex(split.excluded_spans())
    positives = _held_out_positives(comp, split, threshold, decode)
    ev = ComponentEvidence(
        comp.key, flat_index, comp.firing_rate, threshold, positives,
        shown=[(e.sequence_index, e.position) for e in shown_examples], firing_count=comp.firing_count,
    )  # fmt: skip
    if pool is None or not len(pool):
        return ev
    lengths = [len(p) for p in positives] or [pool.window_len]
    ev.negatives = _negatives(pool, flat_index, spans, lengths, max_negatives, component_rng(seed, "negatives", comp.key))
    ev.randoms = _randoms(pool, flat_index, spans, max_randoms, component_rng(seed, "randoms", comp.key))
    return ev


def validation_evidence(
    comp: ComponentData,
    pool: WindowPool | None,
    split: ExampleSplit,
    *,
    flat_index: int,
    threshold: float = 0.0,
    n_negatives: int | None = None,
    n_randoms: int | None = None,
    seed: int = 0,
    decode: Callable[[int], str] | None = None,
) -> ComponentEvidence:
    """The validation set of one component: ``split.validate`` as positives, and pool crops
    where it does not fire (``n_negatives``, default as many as positives) and whole pool
    windows (``n_randoms``, default half as many), none touching a shown window or a
    validation example. Its windows (`evidence_spans`) are recorded as the ``"validate"``
    set, so `build_evidence` never scores on them."""
    positives = [_example_window(e, "validate", i, threshold, decode) for i, e in enumerate(split.validate)]
    ev = ComponentEvidence(
        comp.key, flat_index, comp.firing_rate, threshold, positives,
        shown=[(e.sequence_index, e.position) for e in split.explain + split.explain_top], firing_count=comp.firing_count,
    )  # fmt: skip
    if pool is None or not len(pool) or not positives:
        return ev
    n_neg = len(positives) if n_negatives is None else n_negatives
    n_rand = max(1, len(positives) // 2) if n_randoms is None else n_randoms
    spans = SpanIndex(split.shown_spans() + [example_span(e) for e in split.validate])
    lengths = [len(p) for p in positives]
    ev.negatives = _negatives(pool, flat_index, spans, lengths, n_neg, component_rng(seed, "validate-negatives", comp.key))
    ev.randoms = _randoms(pool, flat_index, spans, n_rand, component_rng(seed, "validate-randoms", comp.key))
    return ev


def evidence_spans(ev: ComponentEvidence) -> list[Span]:
    """The token positions every window of ``ev`` covers, each once."""
    return list(dict.fromkeys((w.sequence_index, w.start, w.start + len(w)) for w in ev.positives + ev.negatives + ev.randoms))


def _held_out_positives(
    comp: ComponentData, split: ExampleSplit, threshold: float, decode: Callable[[int], str] | None
) -> list[EvidenceWindow]:
    """Uniform and top held-out examples, interleaved; a firing in both is used once."""
    index_of = {id(e): i for i, e in enumerate(comp.examples)}
    top_index_of = {id(e): i for i, e in enumerate(comp.top_examples)}
    positives: list[EvidenceWindow] = []
    seen: set[tuple[int, int]] = set()
    uni, top = split.holdout, split.holdout_top
    for i in range(max(len(uni), len(top))):
        for lst, src, idx in ((uni, "holdout", index_of), (top, "holdout_top", top_index_of)):
            if i < len(lst):
                ex = lst[i]
                ident = (ex.sequence_index, ex.position)
                if ident in seen:
                    continue
                seen.add(ident)
                positives.append(_example_window(ex, src, idx[id(ex)], threshold, decode))
    return positives


def shuffled(n: int, rng: random.Random) -> Iterator[int]:
    """``0 .. n-1`` in a uniformly random order, each drawn when it is read: a Fisher-Yates
    shuffle run from the front, so a reader that stops after ``k`` pays ``k`` draws (and a dict
    of at most ``k`` moved entries), not ``n``. The negatives and randoms walk the pool in this
    order and stop after a handful of windows (``random.shuffle`` of the whole pool was half of
    interpret's validation sets)."""
    moved: dict[int, int] = {}  # position -> the value now there, where it is not the position itself
    for i in range(n):
        j = rng.randrange(i, n)
        got = moved.get(j, j)
        moved[j] = moved.pop(i, i)  # position i is never read again; j takes what was at i
        yield got


def _negatives(
    pool: WindowPool, flat_index: int, spans: SpanIndex, lengths: list[int], limit: int, rng: random.Random
) -> list[EvidenceWindow]:
    """Crops of pool windows where the component never fires, as long as its positives, away from what was shown."""
    out: list[EvidenceWindow] = []
    for w in shuffled(len(pool), rng):
        if len(out) >= limit:
            break
        info = pool.windows[w]
        n_tok = len(info["token_ids"])
        want = min(lengths[len(out) % len(lengths)], n_tok)
        if want < 1:
            continue
        seq, start = int(info["sequence_index"]), int(info["start"])
        ok = _free_offsets(pool.firing_offsets(w, flat_index), spans.of(seq), start, n_tok, want)
        if not ok:
            continue
        o = rng.choice(ok)
        out.append(pool.window(w, flat_index).crop(o, o + want))
    return out


def _free_offsets(fired: Sequence[int], spans: Sequence[tuple[int, int]], start: int, n_tok: int, want: int) -> list[int]:
    """Every offset ``o`` of a window of ``n_tok`` tokens (its first token at sequence position
    ``start``) where the crop ``[o, o + want)`` holds no firing offset of ``fired`` and shares no
    position with a span ``[a, b)`` of ``spans`` (of the same sequence), in increasing order."""
    if any(a >= b for a, b in spans):  # an empty span: the general rule, as `SpanIndex.overlaps` reads it
        return [o for o in range(n_tok - want + 1) if not any(o <= f < o + want for f in fired)
                and not any(a < start + o + want and start + o < b for a, b in spans)]
    blocked = [False] * n_tok
    for f in fired:
        if 0 <= f < n_tok:
            blocked[f] = True
    for a, b in spans:
        for p in range(max(a - start, 0), min(b - start, n_tok)):
            blocked[p] = True
    out = []
    run = 0  # free positions ending at p
    for p in range(n_tok):
        run = 0 if blocked[p] else run + 1
        if run >= want:
            out.append(p - want + 1)
    return out


def _randoms(
    pool: WindowPool, flat_index: int, spans: SpanIndex, limit: int, rng: random.Random
) -> list[EvidenceWindow]:
    """Whole pool windows (with the component's true activations) away from what was shown."""
    out: list[EvidenceWindow] = []
    for w in shuffled(len(pool), rng):
        if len(out) >= limit:
            break
        info = pool.windows[w]
        seq, start, n_tok = int(info["sequence_index"]), int(info["start"]), len(info["token_ids"])
        if n_tok < 2 or spans.overlaps(seq, start, start + n_tok):
            continue
        out.append(pool.window(w, flat_index))
    return out
