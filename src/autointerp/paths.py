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
#: file names inside an interpretations (or scores trials) folder
RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"
SUMMARY_FILE = "summary.json"


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

    def score_file(self, scorer: str) -> Path:
        return self.scores / f"{scorer}.jsonl"

    def score_files(self) -> list[Path]:
        """Every ``scores/<scorer>.jsonl`` present, sorted by name."""
        return sorted(self.scores.glob("*.jsonl")) if self.scores.is_dir() else []

    @property
    def score_trials(self) -> Path:
        """The judge's raw answers, one line per trial (resumable)."""
        return self.scores / "trials"

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
