"""Scoring a whole run: plan, ask the judge, collect, summarize.

`score` is the notebook entry point, `score_run` reads a run folder and writes
``scores/<scorer>.jsonl`` (append-only, one `ScoreResult` per component per label
source; `autointerp.records` says which line wins). One call is three steps:

* **plan** (`autointerp.scoring.plan`): which results are reused from an
  earlier run, which are skips (with the reason), which trials to ask;
* **run**: one `JobRunner` asks every trial, into ``scores/trials/trials.jsonl``
  (one record per trial: the task's ground truth, where every window came from,
  the checked answer), so an interrupted run resumes without paying twice and
  failed trials (``scores/trials/failures.jsonl``) are retried by the next run;
* **collect**: a result for every (scorer, component, label source) whose
  trials are all answered; the rest are pending.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from autointerp.harvest import HarvestResult, load_harvest
from autointerp.llm.base import Backend
from autointerp.llm.factory import make_backend
from autointerp.llm.runner import JobRunner, RunSummary, run_coroutine_sync
from autointerp.paths import RunPaths, ScoresFolder
from autointerp.records import group_scores, read_interpretations, read_score_file
from autointerp.schemas import EvidenceSplit, InterpretationResult, ScoreResult
from autointerp.scoring.base import trial_record_key
from autointerp.scoring.options import ScoreOptions
from autointerp.scoring.plan import ExpectedScore, ScoringPlan, Slot, plan_scoring
from autointerp.scoring.summary import ScoreReport, summarize
from autointerp.scoring.token_match import TOKEN_MATCH_MODEL
from autointerp.storage import RunLock, append_jsonl, read_jsonl

log = logging.getLogger("autointerp.scoring")


# -- labels --------------------------------------------------------------------------------


#: what `score` accepts as labels: component key -> label (or result), or InterpretationResults
Labels = Mapping[str, str | InterpretationResult] | Iterable[InterpretationResult]


def _labels_of(labels: Labels) -> dict[str, str]:
    if isinstance(labels, Mapping):
        return {k: (v.label if isinstance(v, InterpretationResult) else str(v)) for k, v in labels.items()}
    return {r.component_key: r.label for r in labels}


def _records_of(labels: Labels) -> dict[str, EvidenceSplit | None]:
    """What each label was made from, where the labels are `InterpretationResult`s that recorded it."""
    items = labels.items() if isinstance(labels, Mapping) else ((r.component_key, r) for r in labels)
    return {k: v.evidence for k, v in items if isinstance(v, InterpretationResult) and v.evidence is not None}


# -- scoring -------------------------------------------------------------------------------


def default_backend(model: str | None = None) -> Backend:
    """Claude when ``ANTHROPIC_API_KEY`` is set, otherwise the token-match baseline (with a warning).

    Kept as the public name of ``make_backend("auto", model, role="judge")``, the one picker.
    """
    return make_backend("auto", model, role="judge")


def _is_baseline(backend: Backend) -> bool:
    return bool(getattr(backend, "is_baseline", False))


def score(harvest: HarvestResult, labels: Labels, *, options: ScoreOptions | None = None, **kwargs: Any) -> ScoreReport:
    """Score labels on held-out evidence; returns a `ScoreReport` (per-component results + summary).

    >>> report = score(harvest, {"h.0.mlp:12": "the token ' cat'"}, backend=TokenMatchBackend())
    >>> print(report.table())

    ``labels``: component key -> label, or InterpretationResults. What each label
    was made from is held out: the split an InterpretationResult records, else the
    one ``config.n_explain`` / ``n_top`` say (the interpreter's defaults). The keywords
    are the fields of `ScoreOptions` (``scorers``, ``backend``, ``baselines``,
    ``limit``, ``seed``, ``config``, ``scores_dir``, ``max_concurrent``,
    ``max_cost_usd``, ``prices``, ``progress``, ``runner_options``), documented
    there; ``options=ScoreOptions(...)`` passes them at once (keywords then
    override it). None of ``backend`` picks Claude when ANTHROPIC_API_KEY is
    set, else the token-match baseline; ``scores_dir=None`` keeps everything in memory.
    """
    opts = ScoreOptions.from_kwargs(options, **kwargs)
    return run_coroutine_sync(lambda: score_async(harvest, labels, options=opts))


async def score_async(harvest: HarvestResult, labels: Labels, *, options: ScoreOptions | None = None, **kwargs: Any) -> ScoreReport:
    """`score` for code that is already inside an event loop."""
    opts = ScoreOptions.from_kwargs(options, **kwargs)  # unknown scorers fail here, before any work
    backend = opts.backend or make_backend("auto", role="judge")
    if not isinstance(labels, Mapping):
        labels = list(labels)  # read twice: labels and records
    label_map = {k: v for k, v in _labels_of(labels).items() if v and v.strip()}
    records = _records_of(labels)
    if opts.scores_dir is None:
        with tempfile.TemporaryDirectory(prefix="autointerp-scores-") as tmp:
            return await _score_into(ScoresFolder(Path(tmp)), harvest, label_map, opts, backend, records)
    folder = ScoresFolder(opts.scores_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    with RunLock(folder.root, what=f"the scores of {folder.root.parent.name or folder.root}"):
        return await _score_into(folder, harvest, label_map, opts, backend, records)


async def _score_into(
    folder: ScoresFolder,
    harvest: HarvestResult,
    labels: dict[str, str],
    opts: ScoreOptions,
    backend: Backend,
    records: Mapping[str, EvidenceSplit | None] | None = None,
) -> ScoreReport:
    """Plan -> run -> collect, in a scores folder the caller holds."""
    model = getattr(backend, "model", "")
    plan = plan_scoring(harvest, labels, opts, read_done(folder, opts.scorers), model, records)
    for (name, _, _), res in plan.skips.items():
        append_jsonl(folder.score_file(name), res)
    run_summary = await run_trials(plan, backend, folder, opts) if plan.jobs else None
    scored, pending = collect_results(plan.expected, folder.trial_records, model)
    for (name, _, _), res in scored.items():
        append_jsonl(folder.score_file(name), res)
    results = plan.ordered(scored)
    return ScoreReport(
        results, summarize(results, opts.config), judge=model, judge_is_baseline=_is_baseline(backend),
        run=run_summary, pending=pending,
    )  # fmt: skip


def read_done(folder: ScoresFolder, names: Iterable[str]) -> dict[Slot, ScoreResult]:
    """What earlier runs wrote for the scorers ``names``, by `autointerp.records`' rule of which line wins."""
    lines = [r for name in names for r in read_score_file(folder.score_file(name))]
    return {
        (scorer, key, src): r
        for scorer, by_key in group_scores(lines).items()
        for key, by_src in by_key.items()
        for src, r in by_src.items()
    }


async def run_trials(plan: ScoringPlan, backend: Backend, folder: ScoresFolder, opts: ScoreOptions) -> RunSummary:
    """Ask the judge every trial of the plan (answered ones are skipped by the runner's resume)."""
    runner = JobRunner(
        backend,
        folder.trial_records,
        failures_path=folder.trial_failures,
        max_concurrent=opts.max_concurrent,
        max_cost_usd=opts.max_cost_usd,
        prices=opts.price_table({TOKEN_MATCH_MODEL: (0.0, 0.0)}),
        record_key=trial_record_key,
        lock=False,  # the caller holds the folder's RunLock
        progress=opts.progress,
        desc="score",
        **dict(opts.runner_options or {}),
    )
    return await runner.run(plan.jobs, total=len(plan.jobs))


def collect_results(
    expected: Mapping[Slot, ExpectedScore], trial_records: Path, model: str
) -> tuple[dict[Slot, ScoreResult], list[Slot]]:
    """A result for every expected slot whose trials are all in ``trial_records``; the others are pending."""
    if not expected:
        return {}, []
    wanted = {k for e in expected.values() for k in e.trial_keys}
    answered: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(trial_records):
        if rec.get("key") in wanted:
            answered[rec["key"]] = rec
    scored: dict[Slot, ScoreResult] = {}
    pending: list[Slot] = []
    for slot, e in expected.items():
        recs = [answered[k] for k in e.trial_keys if k in answered]
        if len(recs) < len(e.trial_keys):
            pending.append(slot)
            continue
        _, key, src = slot
        res = e.scorer.result(key, src, e.label, recs)
        res.model = res.model or model
        res.details["held_out"] = e.held_out
        scored[slot] = res
    return scored, pending


def score_run(
    run: RunPaths | str | os.PathLike, *, label_set: str | None = None, options: ScoreOptions | None = None, **kwargs: Any
) -> ScoreReport:
    """Score a run folder's interpretations and write ``<run>/scores/<scorer>.jsonl``.

    ``run``: a `RunPaths` or the run folder. ``label_set``: which label set of the
    run (None: the one a `RunPaths` names, else the default set); a named set's
    scores go to ``scores/sets/<name>/``. The keywords are `score`'s
    (`ScoreOptions`), except ``scores_dir``: it is the set's scores folder. Without
    a backend: Claude when ``ANTHROPIC_API_KEY`` is set, otherwise the
    token-match simulator — a baseline, not an LLM judge (the report says so).
    """
    paths = RunPaths.at(run, label_set=label_set)
    opts = ScoreOptions.from_kwargs(options, **kwargs)
    if opts.scores_dir is not None and opts.scores_dir != paths.scores:
        raise ValueError(
            f"score_run writes into the run's own scores folder {paths.scores}, got scores_dir={str(opts.scores_dir)!r}; "
            "call score(load_harvest(...), labels, scores_dir=...) to write elsewhere"
        )
    harvest = load_harvest(paths.harvest)
    labels = read_interpretations(paths)
    if not labels:
        log.warning(
            "no interpretations in %s: run `autointerp interpret %s%s` first; every component is recorded as skipped",
            paths.interpretation_results, paths.run_id, "" if paths.is_default_set else f" --label_set {paths.label_set}",
        )  # fmt: skip
    return score(harvest, labels, options=attrs.evolve(opts, scores_dir=paths.scores))


def load_scores(run: RunPaths | str | os.PathLike, scorer: str, *, label_set: str | None = None) -> list[ScoreResult]:
    """The current `ScoreResult` per (component, label source) of one scorer (`autointerp.records`' rule)."""
    by_key = group_scores(read_score_file(RunPaths.at(run, label_set=label_set).score_file(scorer))).get(scorer, {})
    return [r for by_src in by_key.values() for r in by_src.values()]


#: components the demo scores (scoring every neuron of the demo model costs minutes offline and dollars with Claude)
DEMO_LIMIT = 24


def demo_stage(run: Any) -> None:
    """The ``score`` stage of ``autointerp demo`` (`autointerp.demo` imports it): scores the
    demo's labels, with Claude when ``ANTHROPIC_API_KEY`` is set, otherwise with the
    token-match simulator, and says which."""
    backend = make_backend("auto", role="judge")  # says so when it falls back to the token-match baseline
    if not getattr(backend, "is_baseline", False):
        run.log(f"score: judging labels with {getattr(backend, 'model', backend)}")
    report = score_run(run.paths, backend=backend, limit=DEMO_LIMIT, seed=run.seed, progress=run.progress)
    run.results["scores"] = report
    run.log(report.table())
    run.log(f"scores: {run.paths.scores}/<scorer>.jsonl")
