"""Refinement: score a label on the validation set, show the labeller its mistakes, keep the best.

``Interpreter(backend, refine=R, candidates=K).run(harvest, out)`` (``autointerp
interpret RUN --refine R --candidates K``) labels each component in rounds:

1. **candidates**: K first labels (round 0 is the ordinary prompt; candidate k
   sees the earlier candidates and is asked for a different hypothesis);
2. **validation**: every label is scored by the detection and simulation scorers
   (`autointerp.scoring`, the same trials and metrics as ``autointerp score``)
   on the component's validation set (`autointerp.evidence_sets`): held-out
   windows the labeller never saw and ``autointerp score`` never uses. A label's
   validation score is the mean of detection's balanced accuracy and
   simulation's F1;
3. **revision**: up to R times, the best label so far is sent back with the
   validation windows it got wrong (misses with their firing tokens marked
   ``<<like this>>``, false positives with the tokens wrongly predicted;
   ``prompts/refine.j2``) and the labeller answers with a revised label, which is
   validated in turn. A component stops early when its best label makes no
   mistake, when a revision repeats an earlier label, or when its validation set
   is too small to score;
4. the label with the best validation score (the earliest on ties) is written to
   ``results.jsonl`` like any other, with its `EvidenceSplit` and a `Refinement`
   saying how it was chosen. ``autointerp score`` then scores it on the test set.

Every step is an append-only record in the interpretations folder's ``refine/``
(`autointerp.paths.RefineFolder`): the labeller's answers (``labels.jsonl``, one
per component and round; a revision's carries ``shown``, what its prompt showed,
for the report), the judge's trials (``trials.jsonl``) and one
`RefinementRound` per component and round (``rounds.jsonl``, with the round's
cost). The work runs stage by stage over all pending components (every
component's round k together), so a kill at any moment resumes at the stage it
was in and nothing written is asked again; with ``batch=True`` each stage is one
Message Batch. ``max_cost_usd`` caps the whole run, refinement included:
components whose rounds are not all done when it is reached stay pending.

The offline token-lookup labeller does not refine (it reads token statistics and
cannot take feedback): refinement needs an LLM labeller.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import define, field

from autointerp.evidence_sets import EvidenceSets
from autointerp.interpret_options import INTERPRETATION_SCHEMA
from autointerp.llm.base import Backend, InvalidResponse, LLMRequest, LLMResponse
from autointerp.llm.runner import Job, JobRunner, PriceTable, RunSummary
from autointerp.paths import COSTS_FILE, RESULTS_FILE, RefineFolder
from autointerp.prompts import load_template, sources_hash, template_source
from autointerp.records import read_interpretations, read_labels
from autointerp.schemas import ComponentData, InterpretationResult, Refinement, RefinementRound, TokenUsage
from autointerp.scoring.base import InsufficientEvidence, Scorer, trial_record_key, with_token_kind
from autointerp.scoring.detection import DetectionConfig, DetectionScorer
from autointerp.scoring.evidence import ComponentEvidence, EvidenceWindow
from autointerp.scoring.simulation import SimulationConfig, SimulationScorer
from autointerp.storage import RunLock, append_jsonl, from_dict, read_jsonl, to_dict

if TYPE_CHECKING:
    from autointerp.harvest import HarvestResult
    from autointerp.interpret_options import InterpretOptions

log = logging.getLogger("autointerp.refine")

REFINE_TEMPLATE = "refine.j2"
#: the scorers a label is validated with; its validation score is the mean of their headline metrics
VALIDATION_SCORERS = ("detection", "simulation")
#: the label source of validation trials (never a label source of ``autointerp score``)
VALIDATION_SOURCE = "validation"
#: at most this many misses and this many false positives are shown per revision
MAX_SHOWN = 8

OFFLINE_REFUSED = (
    "the offline token-lookup labeller does not refine (it reads token statistics and cannot take feedback): "
    "refine/candidates need an LLM labeller (--backend anthropic or --backend openai)"
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def validation_scorers(n_validate: int) -> dict[str, Scorer]:
    """The detection and simulation scorers sized for a validation set of ``n_validate`` examples."""
    n = max(1, n_validate)
    return {
        "detection": DetectionScorer(DetectionConfig(n_positives=n, n_negatives=n, examples_per_trial=10,
                                                     min_positives=2, min_negatives=2)),
        "simulation": SimulationScorer(SimulationConfig(n_activating=n, n_random=max(1, n // 2), windows_per_trial=5,
                                                        min_activating=1)),
    }


def _span(ref: Mapping[str, Any]) -> tuple[int, int, int]:
    return (int(ref["sequence_index"]), int(ref["start"]), int(ref["start"]) + int(ref["length"]))


def mistakes(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The validation windows a label got wrong, from the judge's trial records by scorer.

    Detection: a firing window judged not firing is a miss, a silent one judged
    firing a false positive. Simulation: a firing token predicted 0 is missed, a
    silent token predicted above 0 is wrongly predicted. One entry per window:
    ``span``, ``miss``, ``false_positive``, ``missed`` / ``predicted`` (token offsets).
    """
    by_span: dict[tuple[int, int, int], dict[str, Any]] = {}

    def entry(span: tuple[int, int, int]) -> dict[str, Any]:
        return by_span.setdefault(span, {"span": list(span), "miss": False, "false_positive": False, "missed": set(), "predicted": set()})

    for rec in records.get("detection", ()):
        for ref, truth, said in zip(rec["refs"], rec["truth"]["positive"], rec["answer"]):
            if truth and not said:
                entry(_span(ref))["miss"] = True
            elif said and not truth:
                entry(_span(ref))["false_positive"] = True
    for rec in records.get("simulation", ()):
        th = float(rec["truth"].get("threshold", 0.0))
        for ref, acts, pred in zip(rec["refs"], rec["truth"]["activations"], rec["answer"]):
            missed = {i for i, (a, p) in enumerate(zip(acts, pred)) if a > th and float(p) <= 0}
            wrong = {i for i, (a, p) in enumerate(zip(acts, pred)) if a <= th and float(p) > 0}
            if missed:
                e = entry(_span(ref))
                e["miss"] = True
                e["missed"] |= missed
            if wrong:
                e = entry(_span(ref))
                e["false_positive"] = True
                e["predicted"] |= wrong
    out = []
    for e in by_span.values():
        e["missed"], e["predicted"] = sorted(e["missed"]), sorted(e["predicted"])
        out.append(e)
    return out


def _same_label(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


@define
class _Progress:
    """What the records say about one component: its label answers and round records by round."""

    labels: dict[int, dict[str, Any]] = field(factory=dict)
    rounds: dict[int, RefinementRound] = field(factory=dict)

    def best(self) -> RefinementRound | None:
        scored = [r for r in self.rounds.values() if r.score is not None]
        if not scored:
            return self.rounds.get(0)
        return max(scored, key=lambda r: (r.score, -r.round))


class Refiner:
    """Runs the refinement of one `Interpreter` run (see the module docstring)."""

    def __init__(self, interp: Any, opts: InterpretOptions):  # an Interpreter (which imports this module)
        from autointerp.llm.offline import OfflineBackend

        if isinstance(interp.backend, OfflineBackend):
            raise ValueError(OFFLINE_REFUSED)
        if opts.n_validate < 1:
            raise ValueError(f"interpret option n_validate must be >= 1 to refine (refine={opts.refine}, "
                             f"candidates={opts.candidates}), got {opts.n_validate}")
        self.interp, self.opts = interp, opts
        self.labeller: Backend = interp.backend
        self.judge: Backend = opts.judge if opts.judge is not None else interp.backend
        if opts.batch:
            from autointerp.llm.anthropic import AnthropicBackend

            if not isinstance(self.labeller, AnthropicBackend):
                raise ValueError(f"interpret option batch=True needs an AnthropicBackend labeller (the Message Batches "
                                 f"API is Anthropic's), got {self.labeller!r}")
        self.template = load_template(interp.env, REFINE_TEMPLATE)
        self.scorers = validation_scorers(opts.n_validate)
        self.prices = opts.prices if isinstance(opts.prices, PriceTable) else PriceTable(opts.prices)
        self.total = RunSummary(model=getattr(self.labeller, "model", ""))
        self.stages: list[tuple[str, RunSummary]] = []
        self.stop = ""

    # -- the run ---------------------------------------------------------------------

    async def run(self, harvest: HarvestResult, out_dir: Path) -> list[InterpretationResult]:
        t0 = time.monotonic()
        out_dir = Path(out_dir)
        results_path = self.interp.results_path = out_dir / RESULTS_FILE
        self.folder = RefineFolder.of(out_dir)
        self.cost_log = out_dir / COSTS_FILE  # the label set's cost log: every stage's billed answers
        self.harvest = harvest
        self.sets = EvidenceSets(harvest, self.interp.options.n_explain, self.interp.options.n_top, self.opts.n_validate)
        self._validation: dict[str, ComponentEvidence] = {}
        self.thash = sources_hash([self.interp.template_hash(harvest), template_source(self.interp.env, REFINE_TEMPLATE)])
        out_dir.mkdir(parents=True, exist_ok=True)
        with RunLock(out_dir, what=f"the interpretations in {out_dir}"):
            self.labels = read_labels(results_path)
            done = set(self.labels)
            selected = self.interp._selected(harvest, self.opts)  # keys, from the harvest's index
            pending_keys = [k for k in selected if k not in done]
            if self.opts.limit is not None:
                pending_keys = pending_keys[: self.opts.limit]
            pending = [harvest[k] for k in pending_keys]
            self.progress = self._load(pending)
            await self._stages(pending)
            finished = self._finish(pending, results_path)
        s = self.total
        s.total = len(pending) + len(done.intersection(selected))
        s.skipped = s.total - len(pending)
        s.completed = finished
        s.not_started = len(pending) - finished
        s.stopped_reason = self.stop
        s.wall_time_s = time.monotonic() - t0
        self.interp.summary = s
        self.interp.refine_stages = self.stages
        found = read_interpretations(results_path, keys=selected, order=harvest.keys())
        return list(found.values())

    def _load(self, comps: Sequence[ComponentData]) -> dict[str, _Progress]:
        wanted = {c.key for c in comps}
        progress = {k: _Progress() for k in wanted}
        for rec in read_jsonl(self.folder.labels):
            k = rec.get("component_key")
            if k in wanted and str(rec.get("label", "")).strip():
                progress[k].labels[int(rec["round"])] = rec
        for rec in read_jsonl(self.folder.rounds):
            k = rec.get("component_key")
            if k in wanted:
                r = from_dict(rec, RefinementRound)
                progress[k].rounds[r.round] = r
        return progress

    async def _stages(self, comps: Sequence[ComponentData]) -> None:
        K, R = self.opts.candidates, self.opts.refine
        for k in range(K):
            todo = [c for c in comps if k not in self.progress[c.key].labels
                    and all(j in self.progress[c.key].labels for j in range(k))]
            await self._label_stage(todo, k, "candidate")
        await self._validate_stage(comps, range(K))
        for r in range(K, K + R):
            todo = [c for c in comps if self._next_revision(c.key) == r]
            await self._label_stage(todo, r, "revision")
            await self._validate_stage(todo, [r])

    def _next_revision(self, key: str) -> int | None:
        """The round this component's next revision would be, or None when it has stopped (or waits)."""
        p, K = self.progress[key], self.opts.candidates
        if any(k not in p.rounds for k in range(K)):
            return None  # its candidates are not all validated yet
        if self._stopped(key):
            return None
        r = K
        while r in p.rounds:
            r += 1
        return r if r < K + self.opts.refine else None

    def _stopped(self, key: str) -> str:
        """Why this component's refinement is over ("" while it goes on)."""
        p, K = self.progress[key], self.opts.candidates
        best = p.best()
        if best is None:
            return ""
        if best.score is None:
            return f"the validation set cannot score it: {best.reason}"
        if not best.wrong:
            return "no mistake on the validation set"
        last = max(p.rounds)
        if last >= K:
            if any(_same_label(p.rounds[last].label, p.rounds[j].label) for j in p.rounds if j != last):
                return "the revision repeated an earlier label"
            if last + 1 >= K + self.opts.refine:
                return f"{self.opts.refine} revision rounds done"
        elif self.opts.refine == 0:
            return f"best of {K} candidates"
        return ""

    def _complete(self, key: str) -> bool:
        p, K = self.progress[key], self.opts.candidates
        return all(k in p.rounds for k in range(K)) and self._next_revision(key) is None and bool(self._stopped(key))

    # -- budget and runners ----------------------------------------------------------

    def _remaining(self) -> float | None:
        cap = self.opts.max_cost_usd
        return None if cap is None else cap - self.total.cost_usd

    def _runner(self, backend: Backend, results: Path, failures: Path, state: Path, record_key: Any, desc: str) -> Any:
        remaining = self._remaining()
        if self.opts.batch and _is_anthropic(backend):
            from autointerp.llm.batches import BatchRunner

            return BatchRunner(backend, results, failures_path=failures, state_path=state,
                               poll_interval_s=self.opts.poll_interval_s, max_cost_usd=remaining, prices=self.prices,
                               progress=self.opts.progress, record_key=record_key, lock=False, desc=desc,
                               cost_log=self.cost_log)
        kw = {**self.opts.runner_options(), "max_cost_usd": remaining, "prices": self.prices}
        return JobRunner(backend, results, failures_path=failures, record_key=record_key, lock=False, desc=desc,
                         cost_log=self.cost_log, **kw)

    async def _run_stage(self, name: str, runner: Any, jobs: list[Job]) -> None:
        if not jobs or self.stop:
            return
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            self.stop = f"cost limit reached (${self.total.cost_usd:.4f} >= ${self.opts.max_cost_usd:.4f})"
            return
        summary = await runner.run(jobs, total=len(jobs))
        self.stages.append((name, summary))
        t = self.total
        t.requests += summary.requests
        t.retries += summary.retries
        t.failed += summary.failed
        t.usage = t.usage + summary.usage
        t.cost_usd += summary.cost_usd
        t.cost_known = t.cost_known and summary.cost_known
        for reason, n in summary.failure_reasons.items():
            t.failure_reasons[reason] = t.failure_reasons.get(reason, 0) + n
        if summary.stopped_reason:
            self.stop = summary.stopped_reason

    # -- labelling -------------------------------------------------------------------

    async def _label_stage(self, comps: Sequence[ComponentData], rnd: int, kind: str) -> None:
        jobs = [self._label_job(c, rnd, kind) for c in comps]
        runner = self._runner(self.labeller, self.folder.labels, self.folder.label_failures, self.folder.label_batch_state,
                              trial_record_key, f"label round {rnd}")
        await self._run_stage(f"label round {rnd} ({kind})", runner, jobs)
        for rec in read_jsonl(self.folder.labels):
            k = rec.get("component_key")
            if k in self.progress and int(rec["round"]) == rnd and str(rec.get("label", "")).strip():
                self.progress[k].labels[rnd] = rec

    def _label_job(self, comp: ComponentData, rnd: int, kind: str) -> Job:
        parts = self.interp.render(comp, self.harvest, self.labels)
        prompt = parts["prompt"]
        revised_from, shown = None, None
        if rnd > 0:
            variables, revised_from = self._feedback(comp, rnd, kind)
            prompt = prompt.rstrip("\n") + "\n\n" + self.template.render(**variables).strip() + "\n"
            if variables["mode"] == "revision":
                shown = _shown(variables)
        request = LLMRequest(prompt=prompt, system=parts["system"], schema=_schema(), schema_name="interpretation",
                             max_tokens=self.opts.max_tokens, metadata={"component": comp, "key": comp.key, "round": rnd})
        key = f"{comp.key}|{rnd}"

        def parse(resp: LLMResponse) -> dict[str, Any]:
            d = resp.data
            label = str(d.get("label", "")).strip()
            if not label:
                raise InvalidResponse("the answer has an empty label", resp.raw_text, resp.usage)
            return {
                "key": key, "component_key": comp.key, "round": rnd, "kind": kind, "revised_from": revised_from,
                **({"shown": shown} if shown is not None else {}), "label": label, "confidence": str(d.get("confidence", "")), "reasoning": str(d.get("reasoning", "")),
                "raw_response": resp.raw_text, "model": resp.model, "usage": to_dict(resp.usage),
                "elapsed_s": round(resp.elapsed_s, 3), "created_at": _now(),
            }  # fmt: skip

        return Job(key, request, parse)

    def _feedback(self, comp: ComponentData, rnd: int, kind: str) -> tuple[dict[str, Any], int | None]:
        """The variables of ``refine.j2`` for round ``rnd`` of ``comp``, and the round it revises."""
        p = self.progress[comp.key]
        base = {"component_key": comp.key, "threshold": self.harvest.config.threshold_for(comp.layer),
                "token_kind": self.harvest.config.tokenizer_kind}  # fmt: skip
        if kind == "candidate":
            earlier = [{"label": p.labels[j]["label"], "score": None} for j in range(rnd)]
            return {**base, "mode": "candidate", "earlier": earlier}, None
        best = p.best()
        assert best is not None and best.score is not None
        windows = {(w.sequence_index, w.start, w.start + len(w)): w for w in self._evidence(comp).all_windows()}
        misses, false_positives = [], []
        for e in best.wrong:
            w = windows.get(tuple(e["span"]))
            if w is None:
                continue
            if e["miss"] and len(misses) < MAX_SHOWN:
                missed = [i for i in (e["missed"] or w.firing_positions) if i < len(w)]
                misses.append({"window": w, "missed": _unique(w.tokens[i] for i in missed), "offsets": missed})
            if e["false_positive"] and len(false_positives) < MAX_SHOWN:
                predicted = [i for i in e["predicted"] if i < len(w)]
                false_positives.append({"window": w, "predicted": _unique(w.tokens[i] for i in predicted), "offsets": predicted})
        earlier = [{"label": r.label, "score": r.score} for _, r in sorted(p.rounds.items())]
        variables = {**base, "mode": "revision", "label": best.label, "score": best.score, "scores": best.scores,
                     "n_windows": best.n_windows, "misses": misses, "false_positives": false_positives,
                     "revised_from": best.round, "n_misses": sum(bool(e["miss"]) for e in best.wrong),
                     "n_false_positives": sum(bool(e["false_positive"]) for e in best.wrong),
                     "earlier": earlier if len(earlier) > 1 else []}  # fmt: skip
        return variables, best.round

    # -- validation ------------------------------------------------------------------

    def _evidence(self, comp: ComponentData) -> _Validation:
        if comp.key not in self._validation:
            self._validation[comp.key] = self.sets.validation(comp)
        return _Validation(self._validation[comp.key])

    async def _validate_stage(self, comps: Sequence[ComponentData], rounds: Iterable[int]) -> None:
        rounds = list(rounds)
        work: list[tuple[ComponentData, int, dict[str, list[str]], dict[str, str]]] = []
        jobs: list[Job] = []
        seed = int(self.harvest.config.seed)
        for c in comps:
            p = self.progress[c.key]
            for r in rounds:
                if r in p.rounds or r not in p.labels:
                    continue
                ev = self._evidence(c).ev
                label = p.labels[r]["label"]
                keys: dict[str, list[str]] = {}
                skipped: dict[str, str] = {}
                for name, sc in self.scorers.items():
                    try:
                        trials = with_token_kind(sc.trials(ev, label, label_source=VALIDATION_SOURCE, seed=seed), ev)
                    except InsufficientEvidence as e:
                        skipped[name] = str(e)
                        continue
                    js = [t.job(getattr(self.judge, "model", "")) for t in trials]
                    keys[name] = [j.key for j in js]
                    jobs.extend(js)
                work.append((c, r, keys, skipped))
        if not work:
            return
        runner = self._runner(self.judge, self.folder.trials, self.folder.trial_failures, self.folder.trial_batch_state,
                              trial_record_key, "validate")
        await self._run_stage(f"validate rounds {rounds[0]}-{rounds[-1]}", runner, jobs)
        wanted = {k for _, _, keys, _ in work for ks in keys.values() for k in ks}
        answered = {rec["key"]: rec for rec in read_jsonl(self.folder.trials) if rec.get("key") in wanted}
        for c, r, keys, skipped in work:
            if any(k not in answered for ks in keys.values() for k in ks):
                continue  # a trial failed or was not started: the round stays pending
            self._record_round(c, r, {n: [answered[k] for k in ks] for n, ks in keys.items()}, skipped)

    def _record_round(self, comp: ComponentData, rnd: int, records: dict[str, list[dict[str, Any]]], skipped: dict[str, str]) -> None:
        p = self.progress[comp.key]
        lab = p.labels[rnd]
        scores: dict[str, float] = {}
        judge_usage = TokenUsage()
        for name, recs in records.items():
            score, _ = self.scorers[name].metrics(sorted(recs, key=lambda x: x["trial"]))
            scores[name] = float(score)
            for rec in recs:
                judge_usage = judge_usage + from_dict(rec.get("usage") or {}, TokenUsage)
        usage = from_dict(lab.get("usage") or {}, TokenUsage)
        discount = 0.5 if self.opts.batch else 1.0
        cost = (self.prices.cost(lab.get("model") or getattr(self.labeller, "model", ""), usage, discount)
                + self.prices.cost(getattr(self.judge, "model", ""), judge_usage, discount if _is_anthropic(self.judge) else 1.0))
        n_windows = len({_span(ref) for recs in records.values() for rec in recs for ref in rec["refs"]})
        result = RefinementRound(
            component_key=comp.key, round=rnd, kind=lab.get("kind", "candidate"), label=lab["label"],
            confidence=lab.get("confidence", ""), reasoning=lab.get("reasoning", ""),
            score=sum(scores.values()) / len(scores) if scores else None, scores=scores,
            wrong=mistakes(records) if scores else [], n_windows=n_windows, revised_from=lab.get("revised_from"),
            reason="; ".join(f"{n}: {why}" for n, why in skipped.items()), model=lab.get("model", ""),
            judge_model=getattr(self.judge, "model", ""), usage=usage, judge_usage=judge_usage,
            cost_usd=round(cost, 8), created_at=_now(),
        )  # fmt: skip
        append_jsonl(self.folder.rounds, result)
        p.rounds[rnd] = result

    # -- the final label -------------------------------------------------------------

    def _finish(self, comps: Sequence[ComponentData], results_path: Path) -> int:
        n = 0
        for c in comps:
            if not self._complete(c.key):
                continue
            append_jsonl(results_path, self._result(c))
            n += 1
        return n

    def _result(self, comp: ComponentData) -> InterpretationResult:
        p = self.progress[comp.key]
        best = p.best()
        assert best is not None
        lab = p.labels[best.round]
        usage = TokenUsage()
        for rec in p.labels.values():
            usage = usage + from_dict(rec.get("usage") or {}, TokenUsage)
        first = p.rounds.get(0)
        refinement = Refinement(
            rounds=len(p.rounds), chosen_round=best.round, chosen_kind=best.kind, validation_score=best.score,
            first_validation_score=first.score if first is not None else None, scores=dict(best.scores),
            cost_usd=round(sum(r.cost_usd for r in p.rounds.values()), 8), stopped=self._stopped(comp.key),
        )  # fmt: skip
        return InterpretationResult(
            component_key=comp.key, label=lab["label"], confidence=lab.get("confidence", ""),
            reasoning=lab.get("reasoning", ""), raw_response=lab.get("raw_response", ""), model=lab.get("model", ""),
            template_name=f"{self.interp.template_name}+{REFINE_TEMPLATE}", template_hash=self.thash, usage=usage,
            created_at=_now(), elapsed_s=round(sum(float(r.get("elapsed_s", 0.0)) for r in p.labels.values()), 3),
            evidence=self.sets.record(comp), refinement=refinement,
        )  # fmt: skip


@define
class _Validation:
    ev: ComponentEvidence

    def all_windows(self) -> list[EvidenceWindow]:
        return self.ev.positives + self.ev.negatives + self.ev.randoms


def _shown(variables: Mapping[str, Any]) -> dict[str, Any]:
    """What a revision prompt showed the labeller, recorded with its answer (the report shows it):
    the round it revised, the totals of its mistakes and the windows shown (at most `MAX_SHOWN` of
    each): tokens, activations, the marked offsets (missed / wrongly predicted), where."""

    def window(item: Mapping[str, Any]) -> dict[str, Any]:
        w: EvidenceWindow = item["window"]
        return {"tokens": list(w.tokens), "activations": [float("%.4g" % a) for a in w.activations],
                "marked": list(item["offsets"]), "sequence_index": w.sequence_index, "start": w.start,
                "threshold": w.threshold}  # fmt: skip

    return {"revised_from": variables["revised_from"], "n_misses": variables["n_misses"],
            "n_false_positives": variables["n_false_positives"],
            "misses": [window(m) for m in variables["misses"]],
            "false_positives": [window(f) for f in variables["false_positives"]]}  # fmt: skip


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _schema() -> dict[str, Any]:
    return INTERPRETATION_SCHEMA


def _is_anthropic(backend: Any) -> bool:
    from autointerp.llm.anthropic import AnthropicBackend

    return isinstance(backend, AnthropicBackend)


def stage_table(stages: Sequence[tuple[str, RunSummary]]) -> str:
    """One line per stage of a refinement run: requests, failures and cost."""
    lines = []
    for name, s in stages:
        cost = f"${s.cost_usd:.4f}" if s.cost_known else "cost unknown"
        lines.append(f"  {name}: {s.completed} done, {s.failed} failed, {s.skipped} already done, {s.requests} requests, {cost}")
    return "\n".join(lines)
