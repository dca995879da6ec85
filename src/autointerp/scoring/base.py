"""What every scorer shares: trials, the skip signal, and turning answers into a `ScoreResult`.

A scorer splits its work into *trials* — one LLM call each, a `ScorerTask` plus
the ground truth it is judged against and the provenance of every window — and
turns the checked answers of all trials of a component into metrics. The calls
themselves go through `autointerp.llm.JobRunner` (the interpreter's runner):
concurrency, retries, resume, failure records and the cost cap live there.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from attrs import asdict, define

from autointerp.llm.base import Backend, LLMResponse
from autointerp.llm.runner import Job, JobRunner
from autointerp.paths import ScoresFolder
from autointerp.schemas import ComponentData, ScoreResult, TokenUsage
from autointerp.scoring.evidence import ComponentEvidence
from autointerp.scoring.metrics import binary_metrics
from autointerp.scoring.prompts import ScorerTask, check_answer, render_request
from autointerp.storage import from_dict, read_jsonl, to_dict


class InsufficientEvidence(Exception):
    """A component cannot be scored by this scorer (too few held-out examples or negatives).

    Recorded as a `ScoreResult` with ``skipped=True`` and this message as ``reason``.
    """


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@define
class Trial:
    """One LLM call of one scorer for one (component, label source)."""

    scorer: str
    component_key: str
    label_source: str
    index: int
    task: ScorerTask
    truth: dict[str, Any]
    refs: list[dict[str, Any]]

    @property
    def fingerprint(self) -> str:
        blob = json.dumps([self.task.to_dict(), self.truth], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """The runner's job key: a changed label or harvest is a new trial, never a stale answer."""
        return f"{self.scorer}|{self.component_key}|{self.label_source}|{self.index}|{self.fingerprint}"

    def job(self, model: str = "") -> Job:
        request = render_request(self.task, metadata={"component_key": self.component_key, "label_source": self.label_source})

        def parse(resp: LLMResponse) -> dict[str, Any]:
            answer = check_answer(self.task, resp.data, resp.raw_text)
            return {
                "key": self.key,
                "scorer": self.scorer,
                "component_key": self.component_key,
                "label_source": self.label_source,
                "trial": self.index,
                "answer": answer,
                "truth": self.truth,
                "refs": self.refs,
                "model": resp.model or model,
                "usage": to_dict(resp.usage),
                "created_at": now(),
            }

        return Job(self.key, request, parse)


def with_token_kind(trials: list[Trial], ev: ComponentEvidence) -> list[Trial]:
    """``trials`` with the evidence's tokenizer kind on each task (where the scorer set none), so the
    judge reads the windows as text (`autointerp.scoring.prompts.render_text`)."""
    for t in trials:
        if t.task.token_kind is None:
            t.task.token_kind = ev.token_kind
    return trials


def trial_record_key(record: dict[str, Any]) -> str:
    return str(record["key"])


def chunk(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Split into ``ceil(n / size)`` chunks of near-equal size (never a tiny last one)."""
    n = len(items)
    if n == 0:
        return []
    k = max(1, -(-n // max(1, size)))
    base, extra = divmod(n, k)
    out, i = [], 0
    for j in range(k):
        m = base + (1 if j < extra else 0)
        out.append(list(items[i : i + m]))
        i += m
    return out


class Scorer:
    """Base of every scorer. Subclasses set ``name``, ``headline``, ``chance`` and
    implement `trials` and `metrics`; `autointerp.scoring.register_scorer` makes
    one usable by name."""

    #: the short name scorers are chosen by, and the ``scores/<name>.jsonl`` file
    name: ClassVar[str] = ""
    #: the metric reported as ScoreResult.score
    headline: ClassVar[str] = ""
    #: metrics the summary table shows beside the headline
    also_summarize: ClassVar[tuple[str, ...]] = ()
    #: whether the scorer reads the label (intruder does not)
    uses_label: ClassVar[bool] = True
    #: the attrs class of the scorer's options (DetectionConfig, ...)
    config_class: ClassVar[type | None] = None

    def __init__(self, config: Any = None):
        self.cfg = config if config is not None else (self.config_class() if self.config_class else None)

    def chance(self) -> float | None:
        """The headline metric of a judge that answers at random (None if not fixed)."""
        return None

    def context_neighbors(self) -> int:
        """How many components nearest in firing rate `trials` wants as ``context``
        (a mapping key -> their held-out `ComponentEvidence`); 0: no context."""
        return 0

    def context_maker(self, components: Sequence[ComponentData]) -> Callable[[ComponentData], Any] | None:
        """Called once per scoring run with the harvest (a sequence of its components: index,
        ``len``, iterate; a lazy harvest reads them as it goes, so iterate once): a function giving
        `trials` its ``context`` for one component, or None (the default: ``context`` is then
        the firing-rate neighbours `context_neighbors` asks for, or None). A scorer that needs
        more of the harvest than held-out windows (output: other components' promoted tokens)
        builds what it needs here, once."""
        return None

    def config(self) -> dict[str, Any]:
        return asdict(self.cfg) if self.cfg is not None else {}

    def trials(
        self, ev: ComponentEvidence, label: str, *, label_source: str = "label", seed: int = 0, context: Any = None
    ) -> list[Trial]:
        raise NotImplementedError

    def metrics(self, records: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        """Headline score and all metrics from the stored trial records (``answer`` + ``truth``)."""
        raise NotImplementedError

    def result(self, component_key: str, label_source: str, label: str, records: Sequence[dict[str, Any]]) -> ScoreResult:
        records = sorted(records, key=lambda r: r["trial"])
        score, metrics = self.metrics(records)
        usage = TokenUsage()
        for r in records:
            usage = usage + from_dict(r.get("usage") or {}, TokenUsage)
        details: dict[str, Any] = {"config": self.config(), "windows": [r["refs"] for r in records]}
        if self.chance() is not None:
            details["chance"] = self.chance()
        return ScoreResult(
            component_key=component_key,
            scorer=self.name,
            label_source=label_source,
            label=label,
            score=score,
            metrics=metrics,
            n_trials=len(records),
            model=records[0].get("model", "") if records else "",
            usage=usage,
            details=details,
            created_at=now(),
        )

    def skipped(self, component_key: str, label_source: str, label: str, reason: str) -> ScoreResult:
        return ScoreResult(
            component_key=component_key,
            scorer=self.name,
            label_source=label_source,
            label=label,
            score=None,
            skipped=True,
            reason=reason,
            created_at=now(),
        )

    async def score_one(
        self,
        ev: ComponentEvidence,
        label: str,
        *,
        backend: Backend,
        label_source: str = "label",
        seed: int = 0,
        context: Any = None,
        **runner_kwargs: Any,
    ) -> ScoreResult:
        """Score one component's label (notebooks, tests). Runs the trials through a
        `JobRunner` writing to a temporary folder; `autointerp.scoring.score` is the
        batch path with resume."""
        try:
            trials = with_token_kind(self.trials(ev, label, label_source=label_source, seed=seed, context=context), ev)
        except InsufficientEvidence as e:
            return self.skipped(ev.key, label_source, label, str(e))
        with tempfile.TemporaryDirectory(prefix="autointerp-score-") as tmp:
            folder = ScoresFolder(Path(tmp))
            runner_kwargs.setdefault("progress", False)
            runner_kwargs.setdefault("failures_path", folder.trial_failures)
            runner = JobRunner(backend, folder.trial_records, record_key=trial_record_key, **runner_kwargs)
            await runner.run([t.job(getattr(backend, "model", "")) for t in trials])
            records = list(read_jsonl(folder.trial_records))
        if len(records) < len(trials):
            res = self.skipped(ev.key, label_source, label, f"{len(trials) - len(records)} of {len(trials)} trials failed")
            return res
        return self.result(ev.key, label_source, label, records)


__all__ = ["InsufficientEvidence", "Scorer", "Trial", "chunk", "trial_record_key"]


class BinaryJudgementScorer(Scorer):
    """A scorer whose judge says yes/no per window, scored by balanced accuracy
    against ``truth[truth_key]`` (detection: is it activating; fuzzing: are the marks right)."""

    headline = "balanced_accuracy"
    truth_key: ClassVar[str] = ""

    def chance(self) -> float:
        return 0.5

    def metrics(self, records: Sequence[dict[str, Any]]) -> tuple[float, dict[str, float]]:
        truth = [t for r in records for t in r["truth"][self.truth_key]]
        pred = [bool(a) for r in records for a in r["answer"]]
        m = binary_metrics(truth, pred)
        return m["balanced_accuracy"], m
