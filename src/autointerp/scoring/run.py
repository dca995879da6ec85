"""Scoring a whole run: evidence, trials for every (component, label source), one runner, a summary.

`score` is the notebook entry point, `score_run` reads a run folder and writes
``scores/<scorer>.jsonl`` (append-only, one `ScoreResult` per component per label
source; the last line for a key wins). Every LLM call goes through one
`JobRunner` per call of `score`, into ``scores/trials/trials.jsonl`` (one record
per trial: the task's ground truth, where every window came from, the checked
answer), so an interrupted run resumes without paying twice and failed trials
(``scores/trials/failures.jsonl``) are retried by the next run.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import random
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from autointerp.harvest import HarvestResult, load_harvest
from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP
from autointerp.llm.base import Backend
from autointerp.llm.factory import make_backend
from autointerp.llm.runner import JobRunner, PriceTable, RunSummary, run_coroutine_sync
from autointerp.paths import RunPaths
from autointerp.schemas import ComponentData, InterpretationResult, ScoreResult
from autointerp.scoring.base import InsufficientEvidence, Scorer, trial_record_key
from autointerp.scoring.baselines import LABEL_SOURCES, shuffled_labels, token_lookup_labels
from autointerp.scoring.detection import DetectionConfig, DetectionScorer
from autointerp.scoring.evidence import ComponentEvidence, WindowPool, build_evidence
from autointerp.scoring.fuzzing import FuzzingConfig, FuzzingScorer
from autointerp.scoring.intruder import IntruderConfig, IntruderScorer
from autointerp.scoring.metrics import mean_ci
from autointerp.scoring.simulation import SimulationConfig, SimulationScorer
from autointerp.scoring.token_match import TOKEN_MATCH_MODEL
from autointerp.storage import RunLock, append_jsonl, from_dict, read_jsonl, read_jsonl_as

log = logging.getLogger("autointerp.scoring")

SCORERS = ("detection", "fuzzing", "simulation", "intruder")
NO_LABEL = "none"
#: per-trial records and failures live in a subfolder, so ``scores/*.jsonl`` holds only ScoreResults
TRIALS_DIR = "trials"


@define
class ScoringConfig:
    """Every scoring parameter, with defaults (documented in docs/scoring.md).

    ``n_explain`` / ``n_top`` must match what the interpreter showed, so that the
    held-out split is the complement of what the explainer saw.
    """

    detection: DetectionConfig = field(factory=DetectionConfig)
    fuzzing: FuzzingConfig = field(factory=FuzzingConfig)
    simulation: SimulationConfig = field(factory=SimulationConfig)
    intruder: IntruderConfig = field(factory=IntruderConfig)
    n_explain: int = DEFAULT_N_EXPLAIN
    n_top: int = DEFAULT_N_TOP

    def scorer(self, name: str) -> Scorer:
        if name == "detection":
            return DetectionScorer(self.detection)
        if name == "fuzzing":
            return FuzzingScorer(self.fuzzing)
        if name == "simulation":
            return SimulationScorer(self.simulation)
        if name == "intruder":
            return IntruderScorer(self.intruder)
        raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")


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


# -- the summary ---------------------------------------------------------------------------


def summarize(results: Sequence[ScoreResult], config: ScoringConfig | None = None) -> list[SummaryRow]:
    """Per scorer and metric, mean with a 95% CI over components, for every label source."""
    config = config or ScoringConfig()
    rows: list[SummaryRow] = []
    scorers = [s for s in SCORERS if any(r.scorer == s for r in results)]
    for name in scorers:
        sc = config.scorer(name)
        metrics = [sc.headline] + (["correlation"] if name == "simulation" else [])
        sources = [NO_LABEL] if not sc.uses_label else list(LABEL_SOURCES)
        for metric in metrics:
            for src in sources:
                mine = [r for r in results if r.scorer == name and r.label_source == src]
                vals = [float(r.metrics.get(metric, r.score if metric == sc.headline else 0.0) or 0.0) for r in mine if not r.skipped]
                m, lo, hi = mean_ci(vals)
                rows.append(
                    SummaryRow(name, metric, src, len(vals), m, lo, hi, sum(1 for r in mine if r.skipped), sc.chance() if metric == sc.headline else None)
                )
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


# -- labels --------------------------------------------------------------------------------


def latest_interpretations(path: str | os.PathLike) -> dict[str, InterpretationResult]:
    """The last interpretation per component in an append-only results file."""
    out: dict[str, InterpretationResult] = {}
    for r in read_jsonl_as(path, InterpretationResult):
        if r.label and r.label.strip():
            out[r.component_key] = r
    return out


def _labels_of(labels: Mapping[str, str | InterpretationResult] | Iterable[InterpretationResult]) -> dict[str, str]:
    if isinstance(labels, Mapping):
        return {k: (v.label if isinstance(v, InterpretationResult) else str(v)) for k, v in labels.items()}
    return {r.component_key: r.label for r in labels}


# -- scoring -------------------------------------------------------------------------------


def default_backend(model: str | None = None) -> Backend:
    """Claude when ``ANTHROPIC_API_KEY`` is set, otherwise the token-match baseline (with a warning).

    Kept as the public name of ``make_backend("auto", model, role="judge")``, the one picker.
    """
    return make_backend("auto", model, role="judge")


def _is_baseline(backend: Backend) -> bool:
    return bool(getattr(backend, "is_baseline", False))


def _intruder_context(
    target: ComponentData, fired: Sequence[ComponentData], rates: list[float], n: int, make: Any
) -> dict[str, ComponentEvidence]:
    """Evidence of the ``2n`` components nearest in log firing rate (intruder candidates)."""
    lr = math.log(max(target.firing_rate, 1e-12))
    i = bisect.bisect_left(rates, lr)
    lo, hi = max(0, i - 2 * n - 1), min(len(fired), i + 2 * n + 1)
    out = {}
    for c in fired[lo:hi]:
        if c.key != target.key:
            out[c.key] = make(c)
    return out


def score(
    harvest: HarvestResult,
    labels: Mapping[str, str | InterpretationResult] | Iterable[InterpretationResult],
    *,
    scorers: Sequence[str] = SCORERS,
    backend: Backend | None = None,
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    config: ScoringConfig | None = None,
    scores_dir: str | os.PathLike | None = None,
    max_concurrent: int = 20,
    max_cost_usd: float | None = None,
    prices: PriceTable | Mapping[str, Any] | None = None,
    progress: bool = False,
    runner_options: Mapping[str, Any] | None = None,
) -> ScoreReport:
    """Score labels on held-out evidence; returns a `ScoreReport` (per-component results + summary).

    >>> report = score(harvest, {"h.0.mlp:12": "the token ' cat'"}, backend=TokenMatchBackend())
    >>> print(report.table())

    ``labels``: component key -> label, or InterpretationResults. ``backend``: any
    `Backend`; None picks Claude when ANTHROPIC_API_KEY is set, else the
    token-match baseline. ``baselines``: also score shuffled and token-lookup
    labels. ``limit``: score a random subset of that many labelled components
    (reproducible for ``seed``). ``scores_dir``: where ``<scorer>.jsonl`` files are
    appended (and resumed from); None keeps everything in memory.
    """
    return run_coroutine_sync(
        lambda: score_async(
            harvest, labels, scorers=scorers, backend=backend, baselines=baselines, limit=limit, seed=seed,
            config=config, scores_dir=scores_dir, max_concurrent=max_concurrent, max_cost_usd=max_cost_usd,
            prices=prices, progress=progress, runner_options=runner_options,
        )  # fmt: skip
    )


async def score_async(
    harvest: HarvestResult,
    labels: Mapping[str, str | InterpretationResult] | Iterable[InterpretationResult],
    *,
    scorers: Sequence[str] = SCORERS,
    backend: Backend | None = None,
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    config: ScoringConfig | None = None,
    scores_dir: str | os.PathLike | None = None,
    max_concurrent: int = 20,
    max_cost_usd: float | None = None,
    prices: PriceTable | Mapping[str, Any] | None = None,
    progress: bool = False,
    runner_options: Mapping[str, Any] | None = None,
) -> ScoreReport:
    """`score` for code that is already inside an event loop."""
    config = config or ScoringConfig()
    names = list(dict.fromkeys(scorers))
    for n in names:
        config.scorer(n)  # unknown names fail before any work
    backend = backend or make_backend("auto", role="judge")
    label_map = {k: v for k, v in _labels_of(labels).items() if v and v.strip()}

    if scores_dir is None:
        with tempfile.TemporaryDirectory(prefix="autointerp-scores-") as tmp:
            return await _score_into(
                Path(tmp), harvest, label_map, names, backend, baselines, limit, seed, config,
                max_concurrent, max_cost_usd, prices, progress, runner_options,
            )  # fmt: skip
    d = Path(scores_dir)
    d.mkdir(parents=True, exist_ok=True)
    with RunLock(d, what=f"the scores of {d.parent.name or d}"):
        return await _score_into(
            d, harvest, label_map, names, backend, baselines, limit, seed, config,
            max_concurrent, max_cost_usd, prices, progress, runner_options,
        )  # fmt: skip


async def _score_into(
    d: Path,
    harvest: HarvestResult,
    label_map: dict[str, str],
    names: list[str],
    backend: Backend,
    baselines: bool,
    limit: int | None,
    seed: int,
    config: ScoringConfig,
    max_concurrent: int,
    max_cost_usd: float | None,
    prices: PriceTable | Mapping[str, Any] | None,
    progress: bool,
    runner_options: Mapping[str, Any] | None,
) -> ScoreReport:
    model = getattr(backend, "model", "")
    space = harvest.space
    threshold = float(harvest.config.threshold)
    pool_data = harvest.shared.get("window_pool")
    pool = WindowPool.from_shared(pool_data) if pool_data else None
    if pool is None:
        log.warning("the harvest has no window pool (RandomWindowAcc): detection has no negatives and simulation no random windows")

    unknown = [k for k in label_map if k not in harvest]
    if unknown:
        log.warning("%d labels name components that are not in the harvest (e.g. %r); they are ignored", len(unknown), unknown[0])
    # which components: the labelled ones (or all, recording a skip, when none is labelled)
    keys = [c.key for c in harvest.components if c.key in label_map]
    no_labels = not keys
    if no_labels:
        keys = [c.key for c in harvest.components]
    if limit is not None and limit < len(keys):
        position = {k: i for i, k in enumerate(keys)}
        keys = sorted(random.Random(seed).sample(keys, limit), key=position.__getitem__)
    comps = [harvest[k] for k in keys]

    sources: dict[str, dict[str, str]] = {"label": {k: label_map[k] for k in keys if k in label_map}}
    if baselines and not no_labels:
        sources["shuffled"] = shuffled_labels(sources["label"], seed)
        sources["token_lookup"] = token_lookup_labels([c for c in comps if c.key in label_map], config.n_explain, config.n_top)

    cache: dict[str, ComponentEvidence] = {}

    def evidence(c: ComponentData) -> ComponentEvidence:
        if c.key not in cache:
            cache[c.key] = build_evidence(
                c, pool, flat_index=space.flat_index(c.layer, c.index), threshold=threshold,
                n_explain=config.n_explain, n_top=config.n_top, seed=seed,
            )  # fmt: skip
        return cache[c.key]

    held_out: dict[str, ComponentEvidence] = {}

    def positives_only(c: ComponentData) -> ComponentEvidence:
        """An intruder candidate needs only its held-out activating windows."""
        if c.key in cache:
            return cache[c.key]
        if c.key not in held_out:
            held_out[c.key] = build_evidence(
                c, None, flat_index=space.flat_index(c.layer, c.index), threshold=threshold,
                n_explain=config.n_explain, n_top=config.n_top, seed=seed,
            )  # fmt: skip
        return held_out[c.key]

    fired = sorted((c for c in harvest.components if c.firing_count > 0), key=lambda c: math.log(max(c.firing_rate, 1e-12)))
    rates = [math.log(max(c.firing_rate, 1e-12)) for c in fired]

    # what is already done: the last ScoreResult per key, kept if it scored the same label
    done: dict[tuple[str, str, str], ScoreResult] = {}
    for name in names:
        for r in read_jsonl_as(d / f"{name}.jsonl", ScoreResult):
            done[(name, r.component_key, r.label_source)] = r

    results: dict[tuple[str, str, str], ScoreResult] = {}
    expected: dict[tuple[str, str, str], tuple[Scorer, str, list[str]]] = {}
    jobs = []

    def record(name: str, res: ScoreResult) -> None:
        results[(name, res.component_key, res.label_source)] = res
        append_jsonl(d / f"{name}.jsonl", res)

    def skip(name: str, sc: Scorer, key: str, src: str, label: str, reason: str) -> None:
        prev = done.get((name, key, src))
        if prev is not None and prev.skipped and prev.reason == reason and prev.label == label:
            results[(name, key, src)] = prev  # recorded by an earlier run
        else:
            record(name, sc.skipped(key, src, label, reason))

    shuffled = sources.get("shuffled", {})
    for name in names:
        sc = config.scorer(name)
        for c in comps:
            if no_labels or c.key not in label_map:
                src = "label" if sc.uses_label else NO_LABEL
                skip(name, sc, c.key, src, "", "no interpretation for this component: run `autointerp interpret` first")
                continue
            if not sc.uses_label:
                todo: list[tuple[str, str | None]] = [(NO_LABEL, "")]
            else:
                todo = [("label", label_map[c.key])]
                if baselines:
                    todo += [("shuffled", shuffled.get(c.key)), ("token_lookup", sources["token_lookup"][c.key])]
            for src, label in todo:
                if label is None:
                    skip(name, sc, c.key, src, "", "shuffled labels need at least two labelled components")
                    continue
                prev = done.get((name, c.key, src))
                if prev is not None and not prev.skipped and prev.label == label:
                    results[(name, c.key, src)] = prev
                    continue
                if c.firing_count == 0:
                    skip(name, sc, c.key, src, label, f"{c.key} never fired in the harvest: nothing to score")
                    continue
                ev = evidence(c)
                ctx = _intruder_context(c, fired, rates, config.intruder.n_neighbors, positives_only) if name == "intruder" else None
                try:
                    trials = sc.trials(ev, label, label_source=src, seed=seed, context=ctx)
                except InsufficientEvidence as e:
                    skip(name, sc, c.key, src, label, str(e))
                    continue
                trial_keys = []
                for t in trials:
                    job = t.job(model)
                    jobs.append(job)
                    trial_keys.append(job.key)
                expected[(name, c.key, src)] = (sc, label, trial_keys)

    run_summary = None
    if jobs:
        price_table = prices if isinstance(prices, PriceTable) else PriceTable({TOKEN_MATCH_MODEL: (0.0, 0.0), **dict(prices or {})})
        runner = JobRunner(
            backend,
            d / TRIALS_DIR / "trials.jsonl",
            failures_path=d / TRIALS_DIR / "failures.jsonl",
            max_concurrent=max_concurrent,
            max_cost_usd=max_cost_usd,
            prices=price_table,
            record_key=trial_record_key,
            lock=False,  # we hold the folder's RunLock
            progress=progress,
            desc="score",
            **dict(runner_options or {}),
        )
        run_summary = await runner.run(jobs, total=len(jobs))

    pending = []
    if expected:
        wanted = {k for _, _, ks in expected.values() for k in ks}
        got: dict[str, dict[str, Any]] = {}
        for rec in read_jsonl(d / TRIALS_DIR / "trials.jsonl"):
            k = rec.get("key")
            if k in wanted:
                got[k] = rec
        for (name, ckey, src), (sc, label, tkeys) in expected.items():
            recs = [got[k] for k in tkeys if k in got]
            if len(recs) < len(tkeys):
                pending.append((name, ckey, src))
                continue
            res = sc.result(ckey, src, label, recs)
            res.model = res.model or model
            record(name, res)

    order = {k: i for i, k in enumerate(keys)}
    ordered = [results[k] for k in sorted(results, key=lambda k: (names.index(k[0]), order.get(k[1], 0), k[2]))]
    return ScoreReport(ordered, summarize(ordered, config), judge=model, judge_is_baseline=_is_baseline(backend), run=run_summary, pending=pending)


def score_run(
    run: RunPaths | str | os.PathLike,
    *,
    backend: Backend | None = None,
    scorers: Sequence[str] = SCORERS,
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    config: ScoringConfig | None = None,
    **kwargs: Any,
) -> ScoreReport:
    """Score a run folder's interpretations and write ``<run>/scores/<scorer>.jsonl``.

    ``run``: a `RunPaths` or the run folder. Without a backend: Claude when
    ``ANTHROPIC_API_KEY`` is set, otherwise the token-match simulator — a
    baseline, not an LLM judge (the report says so).
    """
    paths = run if isinstance(run, RunPaths) else RunPaths(Path(run))
    harvest = load_harvest(paths.harvest)
    interp = paths.interpretations / "results.jsonl"
    labels = latest_interpretations(interp)
    if not labels:
        log.warning(
            "no interpretations in %s: run `autointerp interpret %s` first; every component is recorded as skipped",
            interp, paths.run_id,
        )  # fmt: skip
    return score(
        harvest, labels, backend=backend, scorers=scorers, baselines=baselines, limit=limit, seed=seed,
        config=config, scores_dir=paths.scores, **kwargs,
    )  # fmt: skip


def load_scores(run: RunPaths | str | os.PathLike, scorer: str) -> list[ScoreResult]:
    """The current `ScoreResult` per (component, label source) of one scorer (last line wins)."""
    paths = run if isinstance(run, RunPaths) else RunPaths(Path(run))
    latest: dict[tuple[str, str], ScoreResult] = {}
    for rec in read_jsonl(paths.scores / f"{scorer}.jsonl"):
        try:
            r = from_dict(rec, ScoreResult)
        except Exception:  # noqa: BLE001 - a line from another version is skipped, not fatal
            continue
        latest[(r.component_key, r.label_source)] = r
    return list(latest.values())


#: components the demo scores (scoring every neuron of the demo model costs minutes offline and dollars with Claude)
DEMO_LIMIT = 24


def demo_stage(run: Any) -> None:
    """The ``score`` stage of ``autointerp demo`` (add ``("score", "autointerp.scoring:demo_stage")``
    to ``autointerp.demo.DEMO_STAGES``): scores the demo's labels, with Claude when
    ``ANTHROPIC_API_KEY`` is set, otherwise with the token-match simulator, and says which."""
    backend = make_backend("auto", role="judge")  # says so when it falls back to the token-match baseline
    if not getattr(backend, "is_baseline", False):
        run.log(f"score: judging labels with {getattr(backend, 'model', backend)}")
    report = score_run(run.paths, backend=backend, limit=DEMO_LIMIT, seed=run.seed, progress=run.progress)
    run.results["scores"] = report
    run.log(report.table())
    run.log(f"scores: {run.paths.scores}/<scorer>.jsonl")
