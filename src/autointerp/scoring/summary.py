"""What a scoring run returns: the `ScoreReport`, and its summary table of every label next to both baselines."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field

from autointerp.llm.runner import RunSummary
from autointerp.schemas import ScoreResult
from autointerp.scoring.baselines import LABEL_SOURCES, NO_LABEL
from autointerp.scoring.metrics import mean_ci
from autointerp.scoring.options import ScoringConfig
from autointerp.scoring.registry import scorer_names


@define
class SummaryRow:
    """Mean and 95% CI over components of one metric, for one scorer and label source."""

    scorer: str
    metric: str
    label_source: str
    n: int
    mean: float
    lo: float
    hi: float
    n_skipped: int = 0
    chance: float | None = None

    def cell(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}] n={self.n}"


@define
class ScoreReport:
    """What `score` returns: every `ScoreResult`, and the summary table.

    ``results`` holds one result per (scorer, component, label source), skipped
    ones included (``skipped=True`` with a ``reason``). ``pending`` lists
    (scorer, component, label source) whose trials failed this time: the next
    run retries them. ``judge_is_baseline`` is True when the judge was the
    token-match simulator, not an LLM.
    """

    results: list[ScoreResult]
    summary: list[SummaryRow]
    judge: str = ""
    judge_is_baseline: bool = False
    run: RunSummary | None = None
    pending: list[tuple[str, str, str]] = field(factory=list)

    def for_component(self, key: str) -> list[ScoreResult]:
        return [r for r in self.results if r.component_key == key]

    def scores(self, scorer: str, label_source: str = "label") -> dict[str, float]:
        return {
            r.component_key: r.score
            for r in self.results
            if r.scorer == scorer and r.label_source == label_source and not r.skipped and r.score is not None
        }

    def row(self, scorer: str, label_source: str = "label", metric: str | None = None) -> SummaryRow | None:
        for r in self.summary:
            if r.scorer == scorer and r.label_source == label_source and (metric is None or r.metric == metric):
                return r
        return None

    def table(self) -> str:
        return format_summary(self.summary, self.judge, self.judge_is_baseline)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        n_ok = sum(1 for r in self.results if not r.skipped)
        return f"ScoreReport({n_ok} scores, {len(self.results) - n_ok} skipped, judge={self.judge!r})"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.table())}</pre>"


def summarize(results: Sequence[ScoreResult], config: ScoringConfig | None = None) -> list[SummaryRow]:
    """Per scorer and metric, mean with a 95% CI over components, for every label source."""
    config = config or ScoringConfig()
    rows: list[SummaryRow] = []
    present = {r.scorer for r in results}
    for name in (n for n in scorer_names() if n in present):
        sc = config.scorer(name)
        sources = [NO_LABEL] if not sc.uses_label else list(LABEL_SOURCES)
        for metric in (sc.headline, *sc.also_summarize):
            headline = metric == sc.headline
            for src in sources:
                mine = [r for r in results if r.scorer == name and r.label_source == src]
                vals = [float(r.metrics.get(metric, r.score if headline else 0.0) or 0.0) for r in mine if not r.skipped]
                m, lo, hi = mean_ci(vals)
                n_skipped = sum(1 for r in mine if r.skipped)
                rows.append(SummaryRow(name, metric, src, len(vals), m, lo, hi, n_skipped, sc.chance() if headline else None))
    return rows


def format_summary(rows: Sequence[SummaryRow], judge: str = "", is_baseline: bool = False) -> str:
    """The summary as a fixed-width table: real labels next to both baselines."""
    head = ["scorer (metric)", "chance", "label", "shuffled", "token_lookup"]
    lines: list[list[str]] = []
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r.scorer, r.metric) not in keys:
            keys.append((r.scorer, r.metric))
    for scorer, metric in keys:
        mine = {r.label_source: r for r in rows if r.scorer == scorer and r.metric == metric}
        chance = next((r.chance for r in mine.values() if r.chance is not None), None)
        if NO_LABEL in mine:
            cells = [mine[NO_LABEL].cell() + " (no label)", "-", "-"]
        else:
            cells = [mine[s].cell() if s in mine else "-" for s in LABEL_SOURCES]
        lines.append([f"{scorer} ({metric})", f"{chance:.2f}" if chance is not None else "-", *cells])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    out = []
    if judge:
        note = " -- a token-match BASELINE, not an LLM judge" if is_baseline else ""
        out.append(f"judge: {judge}{note}")
    out.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    skipped = {(r.scorer, r.label_source): r.n_skipped for r in rows if r.n_skipped}
    if skipped:
        out.append("skipped (see `reason` in scores/<scorer>.jsonl): " + ", ".join(f"{s}/{src}: {n}" for (s, src), n in skipped.items()))
    out.append("mean [95% CI] over components; a label that does not beat both baselines is not an explanation")
    return "\n".join(out)
