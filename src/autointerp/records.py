"""The one reader of a run's files, and the one rule for which record wins.

A run's files are read only here, so interpret, score, report and export agree
on what a run holds: the harvest (``harvest/config.json`` and
``harvest/components.jsonl``) and the append-only logs
(``interpretations/results.jsonl``, ``failures.jsonl``, ``scores/<scorer>.jsonl``).

* **Corruption policy.** A torn last line of a log (a writer killed mid-line) is
  skipped; the next writer repairs it before appending, a reader never changes
  a file. Anything else that is not what autointerp wrote there (an unparsable
  line in the middle, JSON that is not an object, a record that breaks the
  schema) is a `CorruptRunFile` naming the file, the line and what was expected,
  never a silent skip or a traceback. A harvest folder is written whole (one
  atomic swap), so for it any difference from ``config.json`` is damage too: a
  ``components.jsonl`` with fewer or more lines than the components config.json
  describes, a component twice, or out of the component-space order.
* **Which record wins.** Logs are append-only, so a later line is a later
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

from attrs import define, field

from autointerp.paths import COSTS_FILE, RESULTS_FILE, RefineFolder, RunPaths, ScoresFolder
from autointerp.schemas import (
    ComponentData,
    CostEntry,
    HarvestConfig,
    InterpretationResult,
    RefinementRound,
    ScoreResult,
    TokenUsage,
)
from autointerp.storage import CorruptRunFile, iter_jsonl, iter_jsonl_as, iter_jsonl_spans, structure_line

__all__ = [
    "CorruptRunFile", "Scores", "count_failures", "failed_keys", "group_scores", "iter_component_lines", "iter_component_records",
    "iter_records", "read_components", "read_harvest_config", "read_harvest_config_dict",
    "read_first_pass", "read_interpretations", "read_labels", "read_labels_and_first_pass", "read_records", "read_refinement", "read_score_file",
    "read_scores", "read_shared_json", "NEIGHBOURS_TAG", "RefinementHistory", "RefinementIndex",
]

T = TypeVar("T")

#: {scorer: {component_key: {label_source: ScoreResult}}}
Scores = dict[str, dict[str, dict[str, ScoreResult]]]

#: a harvest folder is swapped in whole, so a damaged one is restored or made again, not patched
HARVEST_FIX = ("a harvest folder is written whole, so restore it from a copy or make it again "
               "(`autointerp harvest ... --overwrite`)")


def iter_records(path: str | os.PathLike, expected: str = "one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every record of a JSONL file (missing file: none).

    A torn last line is dropped; any other bad line raises `CorruptRunFile`
    (the policy of `autointerp.storage.iter_jsonl`).
    """
    return iter_jsonl(path, expected)


def read_records(path: str | os.PathLike, cls: type[T]) -> Iterator[T]:
    """Every record of a JSONL file structured as ``cls`` (one of our attrs schemas)."""
    for _, rec in iter_jsonl_as(path, cls):
        yield rec


# -- the harvest -----------------------------------------------------------------------------


def read_harvest_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A harvest's ``config.json`` as the dict on disk, checked against `HarvestConfig`."""
    return _harvest_config(Path(path))[0]


def read_harvest_config(path: str | os.PathLike) -> HarvestConfig:
    """A harvest's ``config.json`` as a `HarvestConfig`; anything else is a `CorruptRunFile`."""
    return _harvest_config(Path(path))[1]


def _harvest_config(path: Path) -> tuple[dict[str, Any], HarvestConfig]:
    expected = "one HarvestConfig JSON object (what `autointerp harvest` writes)"
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptRunFile(path, None, f"not UTF-8 text ({e})", expected, HARVEST_FIX) from None
    except json.JSONDecodeError as e:
        raise CorruptRunFile(path, e.lineno, f"not JSON ({e.msg} at column {e.colno})", expected, HARVEST_FIX) from None
    if not isinstance(raw, dict):
        raise CorruptRunFile(path, None, "a JSON value that is not an object", expected, HARVEST_FIX)
    config = structure_line(raw, HarvestConfig, path, None, expected, HARVEST_FIX)
    names = [layer.name for layer in config.layers]
    for i, layer in enumerate(config.layers):
        if layer.width < 0 or names.index(layer.name) != i:
            problem = f"layer {i} ({layer.name!r}) has width {layer.width}" if layer.width < 0 else \
                f"layer {layer.name!r} is listed twice"
            raise CorruptRunFile(path, None, problem, "layers with distinct names and widths >= 0", HARVEST_FIX)
    return raw, config


def read_shared_json(path: str | os.PathLike) -> Any:
    """One ``harvest/shared/<name>.json`` (an accumulator's output for the whole harvest)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", None)
        raise CorruptRunFile(path, line, f"not JSON ({e})", "one JSON document (what `autointerp harvest` writes)",
                             HARVEST_FIX) from None


def read_components(path: str | os.PathLike, config: HarvestConfig) -> list[ComponentData]:
    """Every `ComponentData` of a ``components.jsonl``, checked line by line against ``config``."""
    return list(_components(Path(path), config, structured=True))


def iter_component_records(
    path: str | os.PathLike, config: HarvestConfig, *, check_schema: bool = True
) -> Iterator[dict[str, Any]]:
    """The component dicts of a ``components.jsonl`` in order, streamed, checked against ``config``.

    Each line is one component, in the order of ``config.layers`` (the component
    space), each exactly once and the file holding all of them; ``check_schema``
    also structures every line as a `ComponentData` (and drops the result), so a
    line that breaks the schema is found here rather than by the page that shows it.
    A fault is a `CorruptRunFile` raised when the stream reaches it.
    """
    return _components(Path(path), config, structured=False, check_schema=check_schema)


def iter_component_lines(path: str | os.PathLike, config: HarvestConfig) -> Iterator[bytes]:
    """The raw line of every component, for workers that parse them themselves, checked without parsing.

    Each line must start with the key ``config`` puts there (as `HarvestResult.save`
    writes it, ``{"key": "<key>", ...``); a line that does not is parsed to say
    exactly what is wrong (`iter_component_records`' messages), and a missing or
    extra line is the same error as there. Only the schema of each line is left
    to the worker that parses it.
    """
    path = Path(path)
    expected = _expected_keys(config)
    checked = False  # once the full reader has passed the whole file, nothing is left to find
    n_seen = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            want = expected[n_seen] if n_seen < len(expected) else None
            usual = (want is not None and raw.endswith(b"}\n")
                     and raw.startswith(b'{"key": ' + json.dumps(want, ensure_ascii=False).encode() + b", "))
            if not usual and not checked:
                for _ in _components(path, config, structured=False):  # raises, naming the fault
                    pass
                checked = True
            n_seen += 1
            yield raw if raw.endswith(b"\n") else raw + b"\n"
    if n_seen < len(expected) and not checked:
        for _ in _components(path, config, structured=False, check_schema=False):  # raises: too few
            pass


def _expected_keys(config: HarvestConfig) -> list[str]:
    from autointerp.batch import ComponentSpace  # imports torch; only a reader of a harvest needs it

    return list(ComponentSpace(list(config.layers)).keys())


def _components(path: Path, config: HarvestConfig, *, structured: bool, check_schema: bool = True) -> Iterator[Any]:
    from autointerp.batch import ComponentSpace

    keys = _expected_keys(config)
    n = len(keys)
    whole = f"the {n} components config.json describes, one ComponentData JSON object per line"
    expected = "one ComponentData JSON object per line"
    seen: dict[str, int] = {}
    last_line = 0
    for line_no, rec in iter_jsonl(path, expected):
        i = len(seen)
        if i == n:
            raise CorruptRunFile(path, line_no, "a component after the last one", whole, HARVEST_FIX)
        obj = structure_line(rec, ComponentData, path, line_no, expected, HARVEST_FIX) if structured or check_schema else None
        key = rec.get("key")
        if key != keys[i]:
            if not isinstance(key, str):
                problem = f"a record without a component key (key is {key!r})"
            elif key in seen:
                problem = f"a second record of {key!r} (the first is on line {seen[key]})"
            else:
                problem = f"the record of {key!r}"
            order = "components in the order of config.json's layers, each once"
            raise CorruptRunFile(path, line_no, problem, f"{keys[i]!r} here ({order})", HARVEST_FIX)
        layer, index = ComponentSpace.split_key(key)
        if rec.get("layer") != layer or rec.get("index") != index:
            problem = f"the record of {key!r} says layer {rec.get('layer')!r}, index {rec.get('index')!r}"
            raise CorruptRunFile(path, line_no, problem, f"layer {layer!r}, index {index}", HARVEST_FIX)
        seen[key] = line_no
        last_line = line_no
        yield obj if structured else rec
    if len(seen) < n:
        if not seen and path.stat().st_size == 0:
            raise CorruptRunFile(path, 1, "the file is empty", whole, HARVEST_FIX)
        problem = f"the file ends after {len(seen)} of the {n} components config.json describes"
        raise CorruptRunFile(path, last_line + 1, problem, f"{keys[len(seen)]!r} here", HARVEST_FIX)


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


#: the mark a neighbour-pass record (``interpret --neighbours``) carries at the end of its ``template_name``
NEIGHBOURS_TAG = " + sections/neighbours.j2"


def is_neighbour_pass(result: InterpretationResult) -> bool:
    """True for a label made by the neighbour pass (its ``template_name`` ends with `NEIGHBOURS_TAG`)."""
    return result.template_name.endswith(NEIGHBOURS_TAG)


def read_first_pass(source: RunPaths | str | os.PathLike) -> dict[str, InterpretationResult]:
    """``{component_key: result}`` of the first pass, for the components whose winning label came from
    the neighbour pass: the last labelled record before the winner that is not a neighbour-pass record
    (what the first pass said; the winner is what the second pass said). Other components are absent."""
    return read_labels_and_first_pass(source)[1]


def read_labels_and_first_pass(
    source: RunPaths | str | os.PathLike,
) -> tuple[dict[str, InterpretationResult], dict[str, InterpretationResult]]:
    """``(read_interpretations(source), read_first_pass(source))`` from one read of the results file
    (a report of 100,000 components read and structured it twice)."""
    by_key: dict[str, InterpretationResult] = {}
    first: dict[str, InterpretationResult] = {}
    seen: dict[str, None] = {}  # first labelled line per component: read_first_pass's order
    for r in read_records(_results_file(source), InterpretationResult):
        if not r.label.strip():
            continue
        key = r.component_key
        by_key.pop(key, None)  # re-insert: dict order follows the winning line
        by_key[key] = r
        seen.setdefault(key)
        if not is_neighbour_pass(r):
            first[key] = r
    return by_key, {k: first[k] for k in seen if is_neighbour_pass(by_key[k]) and k in first}


@define
class RefinementHistory:
    """Every round of one component's refinement (`autointerp.refine`), read back for display.

    ``rounds``: one `RefinementRound` per round, in round order (the last record of a round
    wins); ``shown``: per revision round, what its prompt showed the labeller (the windows
    of the label it revised: ``misses`` and ``false_positives``, each a dict with ``tokens``,
    ``activations``, ``marked`` offsets, ``sequence_index``, ``start``; and the totals
    ``n_misses`` / ``n_false_positives`` before the prompt's cut). A round recorded before
    the labels carried what they were shown has no entry.
    """

    rounds: list[RefinementRound] = field(factory=list)
    shown: dict[int, dict[str, Any]] = field(factory=dict)

    def best(self) -> RefinementRound | None:
        """The round refinement keeps: the best validation score, the earliest on ties (round 0
        when none could be scored)."""
        scored = [r for r in self.rounds if r.score is not None]
        if not scored:
            return self.rounds[0] if self.rounds else None
        return max(scored, key=lambda r: (r.score, -r.round))


def read_refinement(source: RunPaths | RefineFolder | str | os.PathLike,
                    keys: Iterable[str] | None = None) -> dict[str, RefinementHistory]:
    """``{component_key: RefinementHistory}`` from a label set's ``refine/`` folder (a `RunPaths`, a
    `RefineFolder`, or an interpretations folder); ``keys`` keeps only those. No folder: ``{}``."""
    index = RefinementIndex(source, keys)
    return {k: index[k] for k in index}


class RefinementIndex(Mapping[str, RefinementHistory]):
    """A label set's refinement histories, each read when asked for (`read_refinement`'s rule).

    Opening it reads ``rounds.jsonl`` and ``labels.jsonl`` once and keeps, per refined
    component, where its lines lie (byte offsets), not the records: ``index[key]`` reads
    and structures that component's lines only, so a report of 10^5 refined components
    holds one history at a time. A damaged line is refused by the scan (bad JSON) or
    when its component is read (a record that breaks the schema), naming file and line.
    Picklable (paths and offsets; no open file). ``reads`` counts the histories read.
    """

    def __init__(self, source: RunPaths | RefineFolder | str | os.PathLike, keys: Iterable[str] | None = None):
        if isinstance(source, RunPaths):
            folder = source.refinement
        elif isinstance(source, RefineFolder):
            folder = source
        else:
            folder = RefineFolder.of(source)
        self.rounds_file, self.labels_file = folder.rounds, folder.labels
        wanted = set(keys) if keys is not None else None
        self._rounds: dict[str, list[tuple[int, int]]] = {}  # key -> [(line number, offset)] in file order
        for line_no, at, rec in iter_jsonl_spans(self.rounds_file, self._ROUND):
            key = rec.get("component_key")
            if isinstance(key, str) and (wanted is None or key in wanted):
                self._rounds.setdefault(key, []).append((line_no, at))
            elif not isinstance(key, str):  # the schema's error, at the scan: the line has no key to file it under
                structure_line(rec, RefinementRound, self.rounds_file, line_no, self._ROUND)
        self._labels: dict[str, list[tuple[int, int]]] = {}
        for line_no, at, rec in iter_jsonl_spans(self.labels_file, self._LABEL):
            key = rec.get("component_key")
            if isinstance(key, str) and key in self._rounds and isinstance(rec.get("shown"), dict) and str(rec.get("label", "")).strip():
                self._labels.setdefault(key, []).append((line_no, at))  # type: ignore[arg-type]
        self.reads = 0

    _ROUND = f"one {RefinementRound.__name__} JSON object per line"
    _LABEL = "one labeller answer (a JSON object) per line"

    @staticmethod
    def _lines(path: Path, spans: list[tuple[int, int]]) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(path, "rb") as f:
            for line_no, at in spans:
                f.seek(at)
                yield line_no, json.loads(f.readline().decode("utf-8"))  # parsed once by the scan already

    def __getitem__(self, key: str) -> RefinementHistory:
        spans = self._rounds[key]  # KeyError: not refined
        by_round: dict[int, RefinementRound] = {}
        for line_no, rec in self._lines(self.rounds_file, spans):
            r = structure_line(rec, RefinementRound, self.rounds_file, line_no, self._ROUND)
            by_round[r.round] = r  # the last record of a round wins
        hist = RefinementHistory([by_round[i] for i in sorted(by_round)])
        for _, rec in self._lines(self.labels_file, self._labels.get(key, [])):
            hist.shown[int(rec.get("round", 0))] = rec["shown"]
        self.reads += 1
        return hist

    def __contains__(self, key: object) -> bool:
        return key in self._rounds

    def __iter__(self) -> Iterator[str]:
        return iter(self._rounds)

    def __len__(self) -> int:
        return len(self._rounds)


def read_labels(source: RunPaths | str | os.PathLike) -> dict[str, str]:
    """``{component_key: label}`` by the same rule as `read_interpretations`."""
    return {k: r.label for k, r in read_interpretations(source).items()}


@define
class CostTotals:
    """What a label set's billed answers cost, from its ``costs.jsonl`` (`read_costs`):
    in all and per stage (``"interpret"``, ``"interpret --neighbours"``, refinement stages)."""

    cost_usd: float = 0.0
    cost_known: bool = True
    billed_answers: int = 0
    usage: TokenUsage = field(factory=TokenUsage)
    by_stage: dict[str, dict[str, Any]] = field(factory=dict)

    def add(self, e: CostEntry) -> None:
        self.cost_usd += e.cost_usd
        self.cost_known = self.cost_known and e.priced
        self.billed_answers += 1
        self.usage = self.usage + e.usage
        st = self.by_stage.setdefault(e.stage, {"cost_usd": 0.0, "cost_known": True, "billed_answers": 0, "usage": TokenUsage()})
        st["cost_usd"] += e.cost_usd
        st["cost_known"] = st["cost_known"] and e.priced
        st["billed_answers"] += 1
        st["usage"] = st["usage"] + e.usage


def read_costs(source: RunPaths | str | os.PathLike) -> CostTotals:
    """The totals of a label set's cost log (a `RunPaths`, its interpretations folder or the
    ``costs.jsonl``); no log: zero. Every line counts: each was one billed answer."""
    if isinstance(source, RunPaths):
        path = source.interpretation_costs
    else:
        path = Path(source)
        if path.is_dir() or path.suffix != ".jsonl":
            path = path / COSTS_FILE
    totals = CostTotals()
    for e in read_records(path, CostEntry):
        totals.add(e)
    return totals


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
    folder = source.scores_folder if isinstance(source, RunPaths) else ScoresFolder(Path(source))
    files = folder.score_files()
    results: list[ScoreResult] = []
    for p in files:
        results.extend(read_score_file(p))
    return group_scores(results)
