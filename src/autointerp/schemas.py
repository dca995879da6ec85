"""The data model of a harvest: what every component's evidence looks like.

These are plain attrs classes. They know nothing about JSON; `autointerp.storage`
owns the one cattrs converter that turns them into dicts and back, so the
round trip `structure(unstructure(x)) == x` is the contract tested for each.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field


@define
class ActivationExample:
    """A token window around one firing, with the component's activation at each token.

    ``firing_offset`` is the index of the firing token *inside this window* (it is
    not always the centre: near a sequence edge the window is cut short).
    ``sequence_index`` and ``position`` say where the firing came from in the data,
    so held-out examples can be checked to be disjoint from the explained ones.
    """

    token_ids: list[int]
    activations: list[float]
    firing_offset: int
    sequence_index: int
    position: int
    tokens: list[str] | None = None

    @property
    def firing_token_id(self) -> int:
        return self.token_ids[self.firing_offset]

    @property
    def firing_activation(self) -> float:
        return self.activations[self.firing_offset]

    def __repr__(self) -> str:
        text = "".join(self.tokens) if self.tokens else str(self.token_ids)
        if len(text) > 40:
            text = text[:37] + "..."
        return (
            f"ActivationExample(seq={self.sequence_index}, pos={self.position}, "
            f"act={self.firing_activation:.3g}, text={text!r})"
        )


@define
class TokenStat:
    """One token's association with one component.

    ``count`` is the number of co-occurrences (a hard count for input tokens, a sum
    of probability mass for output tokens). ``precision`` is P(component fires |
    token), ``recall`` is P(token | component fires) and ``pmi`` is
    log P(token, fires) / (P(token) P(fires)).

    ``count_error`` bounds how much ``count`` under-states the true count: the
    true value is in ``[count, count + count_error]`` (0.0: exact, as in the
    dense tables; the bounded mode's heavy-hitter summary gives at most
    firings / (k + 1)). ``precision_lower`` is the Wilson score 95% lower bound
    of precision, the key the ``top_precision`` list is ranked by (None in
    harvests made before it existed). See docs/statistics.md.
    """

    token_id: int
    count: float
    precision: float
    recall: float
    pmi: float
    token: str | None = None
    count_error: float = 0.0
    precision_lower: float | None = None

    @property
    def exact(self) -> bool:
        return self.count_error == 0


@define
class TokenStats:
    """The top tokens of one component, ranked three ways."""

    top_precision: list[TokenStat] = field(factory=list)
    top_recall: list[TokenStat] = field(factory=list)
    top_pmi: list[TokenStat] = field(factory=list)


@define
class CorrelatedComponent:
    """One partner of a component. ``precision`` = P(this fires | partner fires),
    ``recall`` = P(partner fires | this fires), ``pmi`` as for tokens.

    ``count_error`` and ``precision_lower`` as in `TokenStat`: the true co-firing
    count is in ``[count, count + count_error]`` (0: exact)."""

    key: str
    count: int
    precision: float
    recall: float
    pmi: float
    count_error: int = 0
    precision_lower: float | None = None

    @property
    def exact(self) -> bool:
        return self.count_error == 0


@define
class ComponentCorrelations:
    """Partners ranked by precision, recall and PMI, and the least co-firing by PMI."""

    top_precision: list[CorrelatedComponent] = field(factory=list)
    top_recall: list[CorrelatedComponent] = field(factory=list)
    top_pmi: list[CorrelatedComponent] = field(factory=list)
    bottom_pmi: list[CorrelatedComponent] = field(factory=list)


@define
class LogitToken:
    """One token of a component's logit lens: ``logit`` is ``W_U[token] · norm(direction)``."""

    token_id: int
    logit: float
    token: str | None = None


@define
class LogitLens:
    """The tokens a component's output direction promotes and suppresses, from weights alone
    (`autointerp.logit_lens`). ``promoted`` is highest logit first, ``suppressed`` lowest
    first; ``source`` says which weights and which final norm were used."""

    promoted: list[LogitToken] = field(factory=list)
    suppressed: list[LogitToken] = field(factory=list)
    source: str = ""


@define
class ActivationHistogram:
    """How strongly one component fires: counts of its firings in activation bins.

    Bin ``i`` holds the firings with ``edges[i] < activation <= edges[i + 1]``, so
    ``len(edges) == len(counts) + 1`` and ``sum(counts)`` is the firing count. The
    bins are log-spaced (`autointerp.accumulators.histogram.LogBins`) and trimmed
    to the range where the component fired; the first bin (at or below the lowest
    fixed edge) starts at the harvest's threshold, and the open top bin (above the
    highest) ends at the largest activation seen.
    """

    edges: list[float]
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def coarsened(self, max_bins: int) -> ActivationHistogram:
        """The same firings in at most ``max_bins`` bins, merging runs of adjacent bins (counts stay exact).

        >>> ActivationHistogram([0, 1, 2, 3, 4], [1, 2, 3, 4]).coarsened(2)
        ActivationHistogram(edges=[0, 2, 4], counts=[3, 7])
        """
        if max_bins < 1:
            raise ValueError(f"max_bins must be at least 1, got {max_bins}")
        step = -(-len(self.counts) // max_bins)
        if step <= 1:
            return self
        idx = range(0, len(self.counts), step)
        return ActivationHistogram(edges=[self.edges[i] for i in idx] + [self.edges[-1]],
                                   counts=[sum(self.counts[i : i + step]) for i in idx])


@define
class QuantileExamples:
    """Examples drawn uniformly from the firings in one activation quantile of a component.

    The firings between the ``lower_share`` and ``upper_share`` quantiles of the
    component's activations (e.g. 0.2 and 0.4), whose activations lie in
    ``(lower, upper]``: ``count`` of them, of which ``examples`` is a uniform sample
    (`autointerp.accumulators.quantile_examples`). Quantiles are made of whole
    histogram bins, so the shares are those of the bins' edges. ``upper`` is None
    for the open top bin (above the highest fixed edge).
    """

    lower_share: float
    upper_share: float
    lower: float
    upper: float | None
    count: int
    examples: list[ActivationExample] = field(factory=list)


@define
class ComponentData:
    """Everything harvested about one component, joined from every accumulator.

    Built-in accumulators fill the named fields; a custom accumulator's output lands
    in ``extras[acc.name]``. A component that never fired is still present, with
    ``firing_count == 0`` and empty evidence.
    """

    key: str
    layer: str
    index: int
    firing_count: int = 0
    firing_rate: float = 0.0
    mean_activation: float = 0.0
    max_activation: float = 0.0
    examples: list[ActivationExample] = field(factory=list)
    top_examples: list[ActivationExample] = field(factory=list)
    input_tokens: TokenStats | None = None
    output_tokens: TokenStats | None = None
    correlations: ComponentCorrelations | None = None
    #: weight-based output evidence (the logit lens), None where the model has no unembedding
    #: or the component no output direction; set once after the pass, never by an accumulator
    output_logits: LogitLens | None = None
    histogram: ActivationHistogram | None = None
    quantile_examples: list[QuantileExamples] = field(factory=list)
    #: share of its firings at the first positions of their sequence (`FiringStatsAcc`)
    early_firing_share: float = 0.0
    #: fires mostly at the first positions (the rule: `accumulators.firing_stats.fires_early`)
    fires_early: bool = False
    extras: dict[str, Any] = field(factory=dict)

    def __repr__(self) -> str:
        return (
            f"ComponentData({self.key!r}, fires={self.firing_count}, "
            f"rate={self.firing_rate:.3g}, examples={len(self.examples)})"
        )

    def _repr_html_(self) -> str:
        from autointerp.report.notebook import component_html

        return component_html(self)


@define
class LayerSpec:
    """One layer of the component space: its name and its number of components."""

    name: str
    width: int


@define
class HarvestConfig:
    """How a harvest was made, and what it saw. Saved as ``config.json``."""

    layers: list[LayerSpec] = field(factory=list)
    threshold: float = 0.0
    seed: int = 0
    vocab_size: int | None = None
    n_batches: int = 0
    n_tokens: int = 0
    accumulators: list[dict[str, Any]] = field(factory=list)
    model: dict[str, Any] = field(factory=dict)
    dataset: dict[str, Any] = field(factory=dict)
    created_at: str = ""
    autointerp_version: str = ""
    #: how recorded tokens join into text (`autointerp.token_text`); None: shown as recorded (older harvests)
    tokenizer_kind: str | None = None
    #: ``{layer: threshold}`` for every layer when the harvest was given one per layer
    #: (``--threshold layer=value,...``); None: ``threshold`` applies to every layer
    layer_thresholds: dict[str, float] | None = None

    @property
    def n_components(self) -> int:
        return sum(layer.width for layer in self.layers)

    def threshold_for(self, layer: str) -> float:
        """The threshold a component of ``layer`` fires above (``threshold`` where no per-layer table)."""
        if self.layer_thresholds is None:
            return self.threshold
        try:
            return self.layer_thresholds[layer]
        except KeyError:
            raise KeyError(f"layer {layer!r} has no threshold in this harvest; its layers are "
                           f"{list(self.layer_thresholds)}") from None


@define
class TokenUsage:
    """Tokens billed for one or many LLM calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


#: a window of one sequence: ``(sequence_index, start, end)``, the token positions ``[start, end)``
Span = tuple[int, int, int]

#: the name of the windows shown to the explainer in `EvidenceSplit.windows`
EXPLAIN_SET = "explain"
#: the windows held for validating (and refining) a label: never shown to the explainer
#: as evidence, never scored on by `autointerp score`
VALIDATE_SET = "validate"


@define
class EvidenceSplit:
    """What of a component's evidence a label was made from, recorded with the label.

    ``windows`` names sets of windows (`Span` lists): ``"explain"``, every
    window shown to the explainer, and ``"validate"``, the windows held for
    validating the label (held-out activating examples and window-pool crops;
    `autointerp.refine` scores labels on them and shows the labeller its
    mistakes there). Everything else is the test set: scoring uses no window
    that shares a token position with any recorded window, so the three sets
    are disjoint and the split is honoured whatever the interpreter's options
    were. ``n_explain`` / ``n_top`` / ``n_validate`` are the options that chose
    the windows; ``seed`` is the harvest's, whose keys ordered its examples.
    """

    n_explain: int
    n_top: int
    seed: int = 0
    windows: dict[str, list[Span]] = field(factory=dict)
    n_validate: int = 0

    def spans(self) -> list[Span]:
        """Every recorded window, of every set (none of them may be scored on)."""
        return [tuple(s) for spans in self.windows.values() for s in spans]

    def shown(self) -> list[Span]:
        """The windows shown to the explainer."""
        return [tuple(s) for s in self.windows.get(EXPLAIN_SET, [])]

    def reserved(self) -> list[Span]:
        """The recorded windows that were not shown (the validation set): excluded from scoring too."""
        return [tuple(s) for name, spans in self.windows.items() if name != EXPLAIN_SET for s in spans]


@define
class Refinement:
    """How a refined label was chosen (`autointerp.refine`), stored with the label.

    ``rounds``: labels made (candidates and revisions); ``chosen_round`` /
    ``chosen_kind``: which one was kept (``"candidate"`` or ``"revision"``);
    ``validation_score``: its score on the validation set (the mean of the
    validation scorers' headline metrics), ``first_validation_score`` that of
    the first label; ``scores``: the chosen label's score per validation scorer;
    ``cost_usd``: labeller and judge together, every round; ``stopped``: why no
    further round was made.
    """

    rounds: int
    chosen_round: int
    chosen_kind: str
    validation_score: float | None
    first_validation_score: float | None
    scores: dict[str, float] = field(factory=dict)
    cost_usd: float = 0.0
    stopped: str = ""


@define
class RefinementRound:
    """One round of refinement of one component: one line of ``refine/rounds.jsonl``.

    ``kind`` is ``"candidate"`` (a first label) or ``"revision"`` (a label revised
    after seeing ``revised_from``'s mistakes). ``scores``: headline metric per
    validation scorer, ``score`` their mean (None with ``reason`` when the
    validation set cannot score it); ``wrong``: the validation windows the label
    got wrong (``span``, ``miss`` / ``false_positive`` and the token offsets
    ``missed`` / ``predicted``); ``usage`` / ``cost_usd``: the round's labeller
    and judge calls.
    """

    component_key: str
    round: int
    kind: str
    label: str
    confidence: str = ""
    reasoning: str = ""
    score: float | None = None
    scores: dict[str, float] = field(factory=dict)
    wrong: list[dict[str, Any]] = field(factory=list)
    n_windows: int = 0
    revised_from: int | None = None
    reason: str = ""
    model: str = ""
    judge_model: str = ""
    usage: TokenUsage = field(factory=TokenUsage)
    judge_usage: TokenUsage = field(factory=TokenUsage)
    cost_usd: float = 0.0
    created_at: str = ""


@define
class CostEntry:
    """One billed answer: one line of a label set's ``interpretations/costs.jsonl``.

    Written by the runner as each answer is billed (an invalid answer that is
    asked again is billed too), by every pass that spends on the label set: the
    labels (``stage`` ``"interpret"``), the neighbour pass and each refinement
    stage. The file is append-only, so the label set's cost survives resumes and
    kills; ``summary.json`` is computed from it. ``priced`` is False when no
    price was known for ``model`` (``cost_usd`` is then 0).
    """

    stage: str
    key: str
    model: str
    usage: TokenUsage = field(factory=TokenUsage)
    cost_usd: float = 0.0
    priced: bool = True
    created_at: str = ""


@define
class InterpretationResult:
    """An LLM's label for one component. One line of ``interpretations/results.jsonl``.

    ``evidence`` records what the label was made from (None in results files
    written before it was recorded); ``refinement`` how it was chosen when the
    run refined (`Refinement`; None otherwise).
    """

    component_key: str
    label: str
    confidence: str
    reasoning: str
    raw_response: str = ""
    model: str = ""
    template_name: str = ""
    template_hash: str = ""
    usage: TokenUsage = field(factory=TokenUsage)
    created_at: str = ""
    elapsed_s: float = 0.0
    evidence: EvidenceSplit | None = None
    refinement: Refinement | None = None

    def __repr__(self) -> str:
        return f"InterpretationResult({self.component_key!r}, {self.label!r}, {self.confidence})"

    def _repr_html_(self) -> str:
        from autointerp.report.notebook import interpretation_html

        return interpretation_html(self)


@define
class ScoreResult:
    """One scorer's verdict on one component's label. One line of ``scores/<scorer>.jsonl``.

    ``label_source`` says which label was scored: ``"label"`` (the interpreter's),
    ``"shuffled"`` (labels permuted between components: the random-label control)
    or ``"token_lookup"`` (the offline baseline). ``score`` is the scorer's headline
    metric (balanced accuracy, F1, accuracy); ``metrics`` holds the rest.
    ``skipped`` is set with a ``reason`` when the component could not be scored.
    """

    component_key: str
    scorer: str
    label_source: str
    label: str
    score: float | None
    metrics: dict[str, float] = field(factory=dict)
    n_trials: int = 0
    skipped: bool = False
    reason: str = ""
    model: str = ""
    usage: TokenUsage = field(factory=TokenUsage)
    details: dict[str, Any] = field(factory=dict)
    created_at: str = ""
