"""Where a run's files live: ``<out>/<run_id>/{harvest,interpretations,scores,report}``.

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
    root: Path

    @classmethod
    def of(cls, run_id: str, out: str | os.PathLike | None = None) -> RunPaths:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise ValueError(f"run_id must be a plain folder name, got {run_id!r}")
        return cls(Path(out if out is not None else default_out()) / run_id)

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def harvest(self) -> Path:
        return self.root / "harvest"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def interpretations(self) -> Path:
        return self.root / "interpretations"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def report(self) -> Path:
        return self.root / "report"
