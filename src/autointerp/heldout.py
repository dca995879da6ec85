"""Which harvested examples the explainer sees, and which are held out for scoring.

The reservoir returns a component's examples in the order of their random keys,
which is itself a uniformly random order, so the first ``n_explain`` are a
uniform sample and the rest a disjoint uniform sample. The explainer also sees
the first ``n_top`` max-activating examples, and every quantile example
(`ComponentData.quantile_examples`, a few per activation quantile).

Held out means more than "another firing": firings cluster, so the window of a
held-out firing can contain tokens (and firings) the explainer was shown. A
held-out example is therefore dropped when its window shares any token position
(same sequence, overlapping ``[start, end)``) with a shown window.

Three disjoint sets. After the shown (explain) windows, the next ``n_validate``
reservoir examples whose windows share no position with a shown one are the
**validation** set (with window-pool crops chosen by
`autointerp.scoring.evidence.validation_evidence`): `autointerp.refine` scores
labels there and shows the labeller its mistakes. Everything that shares no
position with an explain or validation window is the **test** set, the only
evidence `autointerp score` uses.

What was shown and what was reserved is recorded with every label
(`evidence_split`, an `EvidenceSplit` on the `InterpretationResult`), so scoring
excludes exactly those windows (`split_shown`) whatever options the interpreter
ran with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attrs import define, field

from autointerp.schemas import EXPLAIN_SET, VALIDATE_SET, ActivationExample, ComponentData, EvidenceSplit, Span

DEFAULT_N_EXPLAIN = 10
DEFAULT_N_TOP = 5
#: held-out activating examples reserved for validation (and as many pool negatives)
DEFAULT_N_VALIDATE = 8


def example_span(e: ActivationExample) -> Span:
    """The token positions an example's window covers: ``(sequence_index, start, end)``."""
    start = e.position - e.firing_offset
    return (e.sequence_index, start, start + len(e.token_ids))


class SpanIndex:
    """Spans by sequence, to ask "does this window share a position with any of them?"."""

    def __init__(self, spans: Iterable[Span]):
        self._by_seq: dict[int, list[tuple[int, int]]] = {}
        for s, a, b in spans:
            self._by_seq.setdefault(int(s), []).append((int(a), int(b)))

    def overlaps(self, seq: int, start: int, end: int) -> bool:
        return any(a < end and start < b for a, b in self._by_seq.get(seq, ()))

    def of(self, seq: int) -> list[tuple[int, int]]:
        """The ``(start, end)`` spans of sequence ``seq``."""
        return self._by_seq.get(seq, [])

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_seq.values())


@define
class ExampleSplit:
    explain: list[ActivationExample] = field(factory=list)
    explain_top: list[ActivationExample] = field(factory=list)
    holdout: list[ActivationExample] = field(factory=list)
    holdout_top: list[ActivationExample] = field(factory=list)
    #: the quantile examples shown (all of them; the prompt lists each window once)
    explain_quantiles: list[ActivationExample] = field(factory=list)
    #: the validation examples (held out from the explainer, never in ``holdout``)
    validate: list[ActivationExample] = field(factory=list)
    #: windows neither shown nor scored on (the validation set: its examples and pool crops)
    reserved: list[Span] = field(factory=list)

    def shown_ids(self) -> set[tuple[int, int]]:
        return {(e.sequence_index, e.position) for e in self.explain + self.explain_top + self.explain_quantiles}

    def shown_spans(self) -> list[Span]:
        """The shown windows, each once, in the order shown (random examples, the strongest, the quantiles)."""
        return list(dict.fromkeys(example_span(e) for e in self.explain + self.explain_top + self.explain_quantiles))

    def excluded_spans(self) -> list[Span]:
        """Every window scoring must not touch: the shown ones and the reserved ones."""
        return list(dict.fromkeys(self.shown_spans() + [tuple(s) for s in self.reserved]))


def quantile_examples_of(comp: ComponentData) -> list[ActivationExample]:
    """Every quantile example of ``comp``, weakest quantile first."""
    return [e for q in comp.quantile_examples for e in q.examples]


def _held_out(comp: ComponentData, explain: list[ActivationExample], explain_top: list[ActivationExample], spans: Sequence[Span],
              explain_quantiles: list[ActivationExample] | None = None, reserved: Sequence[Span] = (),
              validate: list[ActivationExample] | None = None) -> ExampleSplit:
    reserved = [tuple(s) for s in reserved]
    excluded = SpanIndex([*spans, *reserved])

    def kept(examples: Sequence[ActivationExample]) -> list[ActivationExample]:
        return [e for e in examples if not excluded.overlaps(*example_span(e))]

    return ExampleSplit(explain, explain_top, kept(comp.examples), kept(comp.top_examples), explain_quantiles or [],
                        validate or [], reserved)


def validation_examples(comp: ComponentData, shown: Sequence[Span], n_validate: int) -> list[ActivationExample]:
    """The first ``n_validate`` reservoir examples (after the shown ones, in the reservoir's
    random order) whose windows share no position with a shown window."""
    if n_validate <= 0:
        return []
    index = SpanIndex(shown)
    out: list[ActivationExample] = []
    for e in comp.examples:
        if len(out) >= n_validate:
            break
        span = example_span(e)
        if span in shown or index.overlaps(*span):
            continue
        out.append(e)
    return out


def shown_examples(comp: ComponentData, n_explain: int = DEFAULT_N_EXPLAIN,
                   n_top: int = DEFAULT_N_TOP) -> tuple[list[ActivationExample], list[ActivationExample]]:
    """The random and the strongest examples the explainer is shown (``split_examples``'
    ``explain`` and ``explain_top``), without working out what is held out."""
    return list(comp.examples[:n_explain]), list(comp.top_examples[:n_top])


def split_examples(comp: ComponentData, n_explain: int = DEFAULT_N_EXPLAIN, n_top: int = DEFAULT_N_TOP,
                   n_validate: int = 0, reserved: Sequence[Span] = ()) -> ExampleSplit:
    """Split a component's examples into shown-to-the-explainer, validation (``n_validate``
    examples, plus any other ``reserved`` windows) and held-out for testing: no held-out
    window shares a token position with a shown or a validation one."""
    explain, explain_top = shown_examples(comp, n_explain, n_top)
    quantiles = quantile_examples_of(comp)
    spans = [example_span(e) for e in explain + explain_top + quantiles]
    validate = validation_examples(comp, spans, n_validate)
    held = list(dict.fromkeys([example_span(e) for e in validate] + [tuple(s) for s in reserved]))
    return _held_out(comp, explain, explain_top, spans, quantiles, held, validate)


def split_shown(comp: ComponentData, spans: Sequence[Span], reserved: Sequence[Span] = ()) -> ExampleSplit:
    """The split a recorded list of shown windows says (see `missing_spans` first);
    ``reserved``: the recorded windows that were not shown (`EvidenceSplit.reserved`),
    excluded from the held-out examples too."""
    wanted = {tuple(s) for s in spans}
    explain = [e for e in comp.examples if example_span(e) in wanted]
    explain_top = [e for e in comp.top_examples if example_span(e) in wanted]
    quantiles = [e for e in quantile_examples_of(comp) if example_span(e) in wanted]
    kept = {tuple(s) for s in reserved}
    validate = [e for e in comp.examples if example_span(e) in kept]
    return _held_out(comp, explain, explain_top, [tuple(s) for s in spans], quantiles, reserved, validate)


def split_recorded(comp: ComponentData, record: EvidenceSplit) -> ExampleSplit:
    """The split an `EvidenceSplit` says: its explain windows shown, its other sets reserved."""
    return split_shown(comp, record.shown(), record.reserved())


def missing_spans(comp: ComponentData, spans: Sequence[Span]) -> list[Span]:
    """Recorded shown windows that are no example of ``comp`` in this harvest (it is another harvest)."""
    have = {example_span(e) for e in comp.examples + comp.top_examples + quantile_examples_of(comp)}
    return [tuple(s) for s in spans if tuple(s) not in have]


def evidence_split(comp: ComponentData, n_explain: int = DEFAULT_N_EXPLAIN, n_top: int = DEFAULT_N_TOP, seed: int = 0,
                   n_validate: int = 0, validate_spans: Sequence[Span] | None = None, *,
                   split: ExampleSplit | None = None) -> EvidenceSplit:
    """The record of what the explainer is shown of ``comp`` and what is held for validation
    (stored with its label).

    ``validate_spans``: the validation windows (examples and pool crops, from
    `autointerp.scoring.evidence.validation_evidence`); without them, the
    ``n_validate`` validation examples alone. ``split``: ``split_examples(comp, n_explain,
    n_top, n_validate)`` when the caller has it already (it is not worked out again).

    >>> evidence_split(comp, 20, 5).windows["explain"][:1]
    [(412, 3, 24)]
    """
    split = split if split is not None else split_examples(comp, n_explain, n_top, n_validate)
    windows = {EXPLAIN_SET: split.shown_spans()}
    val = [tuple(s) for s in validate_spans] if validate_spans is not None else [example_span(e) for e in split.validate]
    if val:
        windows[VALIDATE_SET] = list(dict.fromkeys(val))
    return EvidenceSplit(n_explain=n_explain, n_top=n_top, seed=seed, windows=windows, n_validate=n_validate)
