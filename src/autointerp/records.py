"""The one reader of a run's JSONL records, and the one rule for which record wins.

A run's append-only files (``interpretations/results.jsonl``, ``failures.jsonl``,
``scores/<scorer>.jsonl``) are read only here, so interpret, score, report and
export agree on what a run holds:

* **Corruption policy.** A torn last line (a writer killed mid-line) is dropped;
  the next writer repairs it before appending. Anything else that is not a
  record of the expected kind (an unparsable line in the middle, JSON that is
  not an object, a record that breaks the schema) is a `CorruptRunFile` naming
  the file, the line and what was expected, never a silent skip or a traceback.
* **Which record wins.** Files are append-only, so a later line is a later
  decision: for interpretations the *last* record of a component with a
  non-empty label wins (an empty label is never a result); for scores the last
  line of a (scorer, component, label source) wins, but a skipped line never
  hides a scored one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cattrs

from autointerp.paths import RESULTS_FILE, RunPaths
from autointerp.schemas import InterpretationResult, ScoreResult
from autointerp.storage import from_dict

T = TypeVar("T")

#: {scorer: {component_key: {label_source: ScoreResult}}}
Scores = dict[str, dict[str, dict[str, ScoreResult]]]


class CorruptRunFile(ValueError):
    """A run file holds a line that is not a record of the kind expected there."""

    def __init__(self, path: Path, line_no: int, problem: str, expected: str):
        self.path, self.line_no = path, line_no
        super().__init__(
            f"{path}, line {line_no}: {problem}; expected {expected}. "
            f"The file was changed outside autointerp: fix or delete that line (or the file) and run again"
        )


def iter_records(path: str | os.PathLike, expected: str = "one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every record of a JSONL file (missing file: none).

    A torn last line is dropped; any other bad line raises `CorruptRunFile`.
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # the text after the last newline is a complete record only if it parses
    last = len(lines)
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if line_no == last:  # no newline after it: a torn write
                continue
            raise CorruptRunFile(path, line_no, f"not JSON ({e})", expected) from None
        if not isinstance(rec, dict):
            raise CorruptRunFile(path, line_no, f"a JSON {type(rec).__name__}, not an object", expected)
        yield line_no, rec


def read_records(path: str | os.PathLike, cls: type[T]) -> Iterator[T]:
    """Every record of a JSONL file structured as ``cls`` (one of our attrs schemas)."""
    expected = f"one {cls.__name__} JSON object per line"
    for line_no, rec in iter_records(path, expected):
        try:
            yield from_dict(rec, cls)
        except (cattrs.BaseValidationError, TypeError, KeyError, ValueError) as e:
            problem = "; ".join(cattrs.transform_error(e)) if isinstance(e, cattrs.BaseValidationError) else str(e)
            raise CorruptRunFile(Path(path), line_no, f"breaks the schema ({problem})", expected) from None


# -- interpretations -------------------------------------------------------------------------


def _results_file(source: RunPaths | str | os.PathLike) -> Path:
    """``interpretations/results.jsonl`` of a run, of a folder, or the file itself."""
    if isinstance(source, RunPaths):
        return source.interpretation_results
    p = Path(source)
    return p / RESULTS_FILE if p.is_dir() else p


def read_interpretations(
    source: RunPaths | str | os.PathLike,
    *,
    keys: Iterable[str] | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, InterpretationResult]:
    """``{component_key: result}``: the last record with a non-empty label per component.

    ``source`` is a `RunPaths`, an interpretations folder or a results file;
    ``keys`` keeps only those components; ``order`` sorts the result (others last).
    """
    wanted = set(keys) if keys is not None else None
    by_key: dict[str, InterpretationResult] = {}
    for r in read_records(_results_file(source), InterpretationResult):
        if r.label.strip() and (wanted is None or r.component_key in wanted):
            by_key.pop(r.component_key, None)  # re-insert: dict order follows the winning line
            by_key[r.component_key] = r
    if order is not None:
        rank = {k: i for i, k in enumerate(order)}
        return dict(sorted(by_key.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return by_key


def read_labels(source: RunPaths | str | os.PathLike) -> dict[str, str]:
    """``{component_key: label}`` by the same rule as `read_interpretations`."""
    return {k: r.label for k, r in read_interpretations(source).items()}


def failed_keys(path: str | os.PathLike) -> set[str]:
    """Components named in a ``failures.jsonl`` (records name them as ``key`` or ``component_key``)."""
    out = set()
    for _, rec in iter_records(path, "one failure record (a JSON object) per line"):
        k = rec.get("key", rec.get("component_key"))
        if isinstance(k, str):
            out.add(k)
    return out


def count_failures(path: str | os.PathLike, succeeded: Iterable[str] = ()) -> int:
    """Components whose interpretation failed and has not succeeded since."""
    return len(failed_keys(path) - set(succeeded))


# -- scores ----------------------------------------------------------------------------------


def group_scores(results: Iterable[ScoreResult]) -> Scores:
    """Index score lines by scorer, component and label source by the rule above."""
    out: Scores = {}
    for r in results:
        slot = out.setdefault(r.scorer, {}).setdefault(r.component_key, {})
        old = slot.get(r.label_source)
        if old is not None and r.skipped and not old.skipped:
            continue
        slot[r.label_source] = r
    return out


def read_score_file(path: str | os.PathLike) -> list[ScoreResult]:
    """Every line of one ``scores/<scorer>.jsonl``, in order."""
    return list(read_records(path, ScoreResult))


def read_scores(source: RunPaths | str | os.PathLike) -> Scores:
    """Every ``scores/<scorer>.jsonl`` of a run (a `RunPaths` or its scores folder); none: ``{}``."""
    files = source.score_files() if isinstance(source, RunPaths) else (
        sorted(Path(source).glob("*.jsonl")) if Path(source).is_dir() else [])
    results: list[ScoreResult] = []
    for p in files:
        results.extend(read_score_file(p))
    return group_scores(results)


def latest_scores(scores: Scores, scorer: str) -> Mapping[str, Mapping[str, ScoreResult]]:
    """``{component_key: {label_source: ScoreResult}}`` of one scorer (empty if it never ran)."""
    return scores.get(scorer, {})
