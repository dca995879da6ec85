"""Where a run's files live: ``<out>/<run_id>/{harvest,interpretations,scores,report}``.

`RunPaths` is the only place that spells a run's file names: every reader and
writer asks it (``paths.interpretation_results``, ``paths.score_file("detection")``)
instead of joining strings, so renaming a file is one edit.

Run ids are stable (given, or derived from the target), so running a command
again resumes the same folder instead of starting a new one.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from attrs import define

DEFAULT_OUT = Path(".data") / "autointerp"

#: file names inside a harvest folder
HARVEST_CONFIG = "config.json"
HARVEST_COMPONENTS = "components.jsonl"
#: the random-access index beside it (`autointerp.harvest_store`)
HARVEST_STORE = "components.sqlite"
#: file names inside an interpretations (or scores trials) folder
RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"
SUMMARY_FILE = "summary.json"
#: inside a scores folder: the judge's raw answers live in a subfolder, so ``scores/*.jsonl`` holds only ScoreResults
TRIALS_DIR = "trials"
TRIALS_FILE = "trials.jsonl"


def default_out() -> Path:
    return Path(os.environ.get("AUTOINTERP_OUT", DEFAULT_OUT))


def run_id_for(target: str) -> str:
    """A stable, filesystem-safe run id for a harvest target ("goodfire/spd/abc123" -> "goodfire-spd-abc123")."""
    t = target.strip()
    t = re.sub(r"^(wandb:|hf:|https?://[^/]+/)", "", t)
    t = t.replace("/runs/", "/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", t).strip("-.")
    if not slug:
        slug = "run"
    if len(slug) > 64:
        slug = slug[:48] + "-" + hashlib.sha1(target.encode()).hexdigest()[:8]
    return slug


@define(frozen=True)
class ScoresFolder:
    """The files of one scores folder: a run's ``scores/``, or any ``score(..., scores_dir=...)``.

    `RunPaths` delegates to it, so a scores folder outside a run is named the same way.
    """

    root: Path

    def score_file(self, scorer: str) -> Path:
        return self.root / f"{scorer}.jsonl"

    def score_files(self) -> list[Path]:
        """Every ``<scorer>.jsonl`` present, sorted by name."""
        return sorted(self.root.glob("*.jsonl")) if self.root.is_dir() else []

    @property
    def trials(self) -> Path:
        return self.root / TRIALS_DIR

    @property
    def trial_records(self) -> Path:
        """One record per LLM call of a scorer (the runner's results file)."""
        return self.trials / TRIALS_FILE

    @property
    def trial_failures(self) -> Path:
        return self.trials / FAILURES_FILE


@define
class RunPaths:
    """Every folder and file of one run, named once."""

    root: Path

    @classmethod
    def of(cls, run_id: str, out: str | os.PathLike | None = None) -> RunPaths:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise ValueError(f"run_id must be a plain folder name, got {run_id!r}")
        return cls(Path(out if out is not None else default_out()) / run_id)

    @classmethod
    def at(cls, run: RunPaths | str | os.PathLike) -> RunPaths:
        """A `RunPaths` as given, or for a run folder given as a path."""
        return run if isinstance(run, RunPaths) else cls(Path(run))

    @property
    def run_id(self) -> str:
        return self.root.name

    # -- harvest ---------------------------------------------------------------------

    @property
    def harvest(self) -> Path:
        return self.root / "harvest"

    @property
    def harvest_config(self) -> Path:
        return self.harvest / HARVEST_CONFIG

    @property
    def harvest_components(self) -> Path:
        return self.harvest / HARVEST_COMPONENTS

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    # -- interpretations -------------------------------------------------------------

    @property
    def interpretations(self) -> Path:
        return self.root / "interpretations"

    @property
    def interpretation_results(self) -> Path:
        return self.interpretations / RESULTS_FILE

    @property
    def interpretation_failures(self) -> Path:
        return self.interpretations / FAILURES_FILE

    @property
    def interpretation_summary(self) -> Path:
        return self.interpretations / SUMMARY_FILE

    @property
    def prompts(self) -> Path:
        """Where ``interpret --dry_run`` writes rendered prompts."""
        return self.interpretations / "prompts"

    # -- scores ----------------------------------------------------------------------

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def scores_folder(self) -> ScoresFolder:
        return ScoresFolder(self.scores)

    def score_file(self, scorer: str) -> Path:
        return self.scores_folder.score_file(scorer)

    def score_files(self) -> list[Path]:
        """Every ``scores/<scorer>.jsonl`` present, sorted by name."""
        return self.scores_folder.score_files()

    @property
    def score_trials(self) -> Path:
        """The judge's raw answers, one line per trial (resumable)."""
        return self.scores_folder.trials

    @property
    def score_trial_records(self) -> Path:
        return self.scores_folder.trial_records

    @property
    def score_trial_failures(self) -> Path:
        return self.scores_folder.trial_failures

    # -- outputs ---------------------------------------------------------------------

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def export_jsonl(self) -> Path:
        """``autointerp export --format jsonl``: one record per component."""
        return self.export / "components.jsonl"

    @property
    def export_neuronpedia(self) -> Path:
        """``autointerp export --format neuronpedia``: one document of Neuronpedia-shaped features."""
        return self.export / "neuronpedia.json"
