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

from attrs import define, field

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
#: a label set's cost log: one `autointerp.schemas.CostEntry` per billed answer (summary.json is made from it)
COSTS_FILE = "costs.jsonl"
#: inside a scores folder: the judge's raw answers live in a subfolder, so ``scores/*.jsonl`` holds only ScoreResults
TRIALS_DIR = "trials"
TRIALS_FILE = "trials.jsonl"
#: the label set of ``interpretations/results.jsonl`` (what every command uses unless told otherwise)
DEFAULT_LABEL_SET = "default"
#: named label sets live in ``interpretations/sets/<name>/``, their scores in ``scores/sets/<name>/``
LABEL_SETS_DIR = "sets"
#: the report of a named set: ``reports/<name>/`` (``report/`` is swapped whole, so it cannot hold them)
LABEL_SET_REPORTS_DIR = "reports"
_LABEL_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABEL_SET_RULE = ("a name of letters, digits, '.', '_' or '-' that starts with a letter or digit "
                  f"(at most 64 characters; {DEFAULT_LABEL_SET!r} is the set in interpretations/{RESULTS_FILE})")


def check_label_set(name: object, option: str = "label_set") -> str:
    """``name`` when it can name a label set (a folder name: `LABEL_SET_RULE`); otherwise a
    ValueError naming ``option``, what was expected and what arrived. None is the default set."""
    if name is None:
        return DEFAULT_LABEL_SET
    if not isinstance(name, str) or not _LABEL_SET_NAME.fullmatch(name):
        raise ValueError(f"{option} must be {LABEL_SET_RULE}, got {name!r}")
    return name


def label_set_folder(interpretations: str | os.PathLike, name: str) -> Path:
    """The folder of label set ``name`` given an interpretations folder (the default set: that folder)."""
    name = check_label_set(name)
    base = Path(interpretations)
    return base if name == DEFAULT_LABEL_SET else base / LABEL_SETS_DIR / name


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


def _label_set(_: object, a: object, value: object) -> None:
    check_label_set(value)


#: inside an interpretations folder: the refinement records (`autointerp.refine`)
REFINE_DIR = "refine"


@define(frozen=True)
class RefineFolder:
    """The files of the refinement of one label set: ``<interpretations>/refine/``.

    ``labels.jsonl``: every labeller answer (one per component and round; a revision's
    with the windows it was shown);
    ``trials.jsonl``: the judge's answers on the validation set; ``rounds.jsonl``:
    one record per component and round (the label, its validation scores, the
    windows it got wrong, the round's cost). All append-only; a rerun resumes.
    """

    root: Path

    @classmethod
    def of(cls, interpretations: str | os.PathLike) -> RefineFolder:
        """The refinement folder of an interpretations folder (whichever label set it holds)."""
        return cls(Path(interpretations) / REFINE_DIR)

    @property
    def labels(self) -> Path:
        return self.root / "labels.jsonl"

    @property
    def label_failures(self) -> Path:
        return self.root / "label_failures.jsonl"

    @property
    def label_batch_state(self) -> Path:
        """The Message Batches state of the labeller's current stage (``--batch``)."""
        return self.root / "labels.batch.json"

    @property
    def trials(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def trial_failures(self) -> Path:
        return self.root / "trial_failures.jsonl"

    @property
    def trial_batch_state(self) -> Path:
        return self.root / "trials.batch.json"

    @property
    def rounds(self) -> Path:
        return self.root / "rounds.jsonl"


@define
class RunPaths:
    """Every folder and file of one run, named once.

    ``label_set`` picks which label set the interpretation, score, report and
    export names point into: `DEFAULT_LABEL_SET` is ``interpretations/``,
    ``scores/``, ``report/``, ``export/``; a named set ``A`` is
    ``interpretations/sets/A/``, ``scores/sets/A/``, ``reports/A/``,
    ``export/sets/A/``. The harvest is the run's, whatever the set.
    """

    root: Path
    label_set: str = field(default=DEFAULT_LABEL_SET, validator=_label_set, kw_only=True)

    @classmethod
    def of(cls, run_id: str, out: str | os.PathLike | None = None, *, label_set: str | None = None) -> RunPaths:
        if not run_id or "/" in run_id or run_id in (".", ".."):
            raise ValueError(f"run_id must be a plain folder name, got {run_id!r}")
        return cls(Path(out if out is not None else default_out()) / run_id, label_set=check_label_set(label_set))

    @classmethod
    def at(cls, run: RunPaths | str | os.PathLike, *, label_set: str | None = None) -> RunPaths:
        """A `RunPaths` as given, or for a run folder given as a path; ``label_set``
        (when given) picks that set of the run."""
        paths = run if isinstance(run, RunPaths) else cls(Path(run))
        return paths if label_set is None else paths.with_label_set(label_set)

    @property
    def run_id(self) -> str:
        return self.root.name

    # -- label sets ------------------------------------------------------------------

    def with_label_set(self, name: str | None) -> RunPaths:
        """The same run with label set ``name`` (None: the default set)."""
        return RunPaths(self.root, label_set=check_label_set(name))

    @property
    def is_default_set(self) -> bool:
        return self.label_set == DEFAULT_LABEL_SET

    @property
    def label_sets_dir(self) -> Path:
        """Where the named label sets' interpretation folders live."""
        return self.root / "interpretations" / LABEL_SETS_DIR

    def label_sets(self) -> list[str]:
        """The label sets this run holds: the default one when its results file exists, then the
        named ones with a results file, sorted by name."""
        names = [DEFAULT_LABEL_SET] if self.with_label_set(None).interpretation_results.exists() else []
        if self.label_sets_dir.is_dir():
            for d in sorted(self.label_sets_dir.iterdir()):
                if _LABEL_SET_NAME.fullmatch(d.name) and d.name != DEFAULT_LABEL_SET and (d / RESULTS_FILE).is_file():
                    names.append(d.name)
        return names

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
        """The label set's interpretations folder (results, failures, summary, prompts)."""
        return label_set_folder(self.root / "interpretations", self.label_set)

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
    def interpretation_costs(self) -> Path:
        return self.interpretations / COSTS_FILE

    @property
    def refinement(self) -> RefineFolder:
        """The refinement records of ``interpret --refine`` (`RefineFolder`)."""
        return RefineFolder.of(self.interpretations)

    @property
    def prompts(self) -> Path:
        """Where ``interpret --dry_run`` writes rendered prompts."""
        return self.interpretations / "prompts"

    # -- scores ----------------------------------------------------------------------

    @property
    def scores(self) -> Path:
        """The label set's scores folder (``scores/`` or ``scores/sets/<name>/``)."""
        base = self.root / "scores"
        return base if self.is_default_set else base / LABEL_SETS_DIR / self.label_set

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
        """The label set's HTML report folder (``report/`` or ``reports/<name>/``)."""
        return self.root / "report" if self.is_default_set else self.root / LABEL_SET_REPORTS_DIR / self.label_set

    @property
    def export(self) -> Path:
        """The label set's export folder (``export/`` or ``export/sets/<name>/``)."""
        base = self.root / "export"
        return base if self.is_default_set else base / LABEL_SETS_DIR / self.label_set

    @property
    def export_jsonl(self) -> Path:
        """``autointerp export --format jsonl``: one record per component."""
        return self.export / "components.jsonl"

    @property
    def export_neuronpedia(self) -> Path:
        """``autointerp export --format neuronpedia``: one document of Neuronpedia-shaped features."""
        return self.export / "neuronpedia.json"
