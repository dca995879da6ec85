"""A whole run read back for display: harvest, labels, scores, joined by component key.

`open_run` reads ``<out>/<run_id>/`` (or a run folder) and returns a `RunView`;
``run["h.0.mlp:12"]`` is a `LabeledComponent` (evidence + label + scores) that
shows itself in a notebook. The report writer and the exporter read runs
through `RunData`, which keeps components as plain dicts: turning 50,000
components into attrs objects only to turn them back into JSON costs more than
the rest of the report.

>>> run = open_run("demo")                      # doctest: +SKIP
>>> run["h.0.mlp:3"]                            # doctest: +SKIP
LabeledComponent('h.0.mlp:3', 'closing quotation marks', high, detection=0.82)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from attrs import define, field

from autointerp.paths import RunPaths
from autointerp.schemas import ComponentData, InterpretationResult, ScoreResult
from autointerp.storage import from_dict, read_jsonl, read_jsonl_as, recover_dir, to_dict

#: the label sources a scorer may write, in display order. ``"none"``: a scorer that
#: judges the component rather than a label (intruder) writes one line per component.
LABEL_SOURCES = ("label", "shuffled", "token_lookup")
COMPONENT_SOURCE = "none"


def headline(by_source: Mapping[str, ScoreResult]) -> ScoreResult | None:
    """The score shown for a component: its label's, or the component-level one (intruder)."""
    return by_source.get("label") or by_source.get(COMPONENT_SOURCE)

#: {scorer: {component_key: {label_source: ScoreResult}}}
Scores = dict[str, dict[str, dict[str, ScoreResult]]]


def _as_paths(run: RunPaths | str | os.PathLike) -> RunPaths:
    if isinstance(run, RunPaths):
        return run
    return RunPaths(Path(run))


def group_scores(results: Iterable[ScoreResult]) -> Scores:
    """Index score lines by scorer, component and label source; a later line wins
    (a rerun replaces an earlier verdict), but a skipped line never hides a scored one."""
    out: Scores = {}
    for r in results:
        slot = out.setdefault(r.scorer, {}).setdefault(r.component_key, {})
        old = slot.get(r.label_source)
        if old is not None and r.skipped and not old.skipped:
            continue
        slot[r.label_source] = r
    return out


def read_scores(scores_dir: str | os.PathLike) -> Scores:
    """Read every ``scores/<scorer>.jsonl`` of a run (missing folder: no scores)."""
    scores_dir = Path(scores_dir)
    results: list[ScoreResult] = []
    if scores_dir.is_dir():
        for p in sorted(scores_dir.glob("*.jsonl")):
            results.extend(read_jsonl_as(p, ScoreResult))
    return group_scores(results)


def read_interpretations(path: str | os.PathLike) -> dict[str, InterpretationResult]:
    """The latest label per component from ``interpretations/results.jsonl``."""
    return {r.component_key: r for r in read_jsonl_as(path, InterpretationResult)}


def count_failures(path: str | os.PathLike, succeeded: Iterable[str] = ()) -> int:
    """Components whose interpretation failed and has not succeeded since (from failures.jsonl,
    whose records name the component as ``key``, or ``component_key``)."""
    keys = set()
    for rec in read_jsonl(path):
        if isinstance(rec, dict):
            k = rec.get("key", rec.get("component_key"))
            if isinstance(k, str):
                keys.add(k)
    return len(keys - set(succeeded))


class RunData:
    """A run's harvest as plain dicts plus its labels and scores, ready to render.

    Components are dicts in the layout of ``components.jsonl``, in component-space
    order. Read from disk, they are streamed (`iter_components`) so a report or
    an export of a large run never holds every component in memory; the
    ``components`` list is read on first use. ``config`` is ``config.json`` as a dict.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        components: list[dict[str, Any]] | None = None,
        interpretations: Mapping[str, InterpretationResult] | None = None,
        scores: Scores | None = None,
        n_failures: int = 0,
        name: str = "",
        components_path: str | os.PathLike | None = None,
    ):
        if components is None and components_path is None:
            raise ValueError("RunData needs components or components_path")
        self.config = dict(config)
        self._components = components
        self.components_path = Path(components_path) if components_path is not None else None
        self.interpretations = dict(interpretations or {})
        self.scores: Scores = scores or {}
        self.n_failures = n_failures
        self.name = name

    @classmethod
    def from_run(cls, run: RunPaths | str | os.PathLike) -> RunData:
        """Read ``<run>/harvest``, ``interpretations/`` and ``scores/`` from disk."""
        paths = _as_paths(run)
        harvest = paths.harvest
        recover_dir(harvest)
        cfg_path, comp_path = harvest / "config.json", harvest / "components.jsonl"
        if not cfg_path.exists() or not comp_path.exists():
            raise FileNotFoundError(
                f"{paths.root} has no harvest: expected {cfg_path} and {comp_path} "
                "(run `autointerp harvest` first, or check the run id and --out)"
            )
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        interps = read_interpretations(paths.interpretations / "results.jsonl")
        return cls(
            config,
            None,
            interps,
            read_scores(paths.scores),
            count_failures(paths.interpretations / "failures.jsonl", interps),
            name=paths.run_id,
            components_path=comp_path,
        )

    @classmethod
    def from_objects(
        cls,
        harvest: Any,
        interpretations: Iterable[InterpretationResult] | Mapping[str, InterpretationResult] | None = None,
        scores: Iterable[ScoreResult] | Scores | None = None,
        name: str = "",
    ) -> RunData:
        """From a `HarvestResult` and in-memory results (for notebooks and tests)."""
        if isinstance(interpretations, Mapping):
            interp = dict(interpretations)
        else:
            interp = {r.component_key: r for r in (interpretations or [])}
        if isinstance(scores, Mapping):
            grouped: Scores = dict(scores)  # type: ignore[arg-type]
        else:
            grouped = group_scores(scores or [])
        return cls(to_dict(harvest.config), [to_dict(c) for c in harvest.components], interp, grouped, name=name)

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component dict, in order, streamed from disk when not already loaded."""
        if self._components is not None:
            yield from self._components
        else:
            assert self.components_path is not None
            yield from read_jsonl(self.components_path)

    @property
    def components(self) -> list[dict[str, Any]]:
        if self._components is None:
            self._components = list(self.iter_components())
        return self._components

    @property
    def n_components(self) -> int:
        if self._components is not None:
            return len(self._components)
        return sum(int(l.get("width", 0)) for l in self.config.get("layers") or [])

    @property
    def scorers(self) -> list[str]:
        return sorted(self.scores)

    def component_scores(self, key: str) -> dict[str, dict[str, ScoreResult]]:
        return {s: self.scores[s][key] for s in self.scorers if key in self.scores[s]}


@define
class LabeledComponent:
    """One component with everything known about it: evidence, label and scores.

    ``scores`` maps scorer -> label source (``"label"``, ``"shuffled"``,
    ``"token_lookup"``) -> `ScoreResult`.
    """

    component: ComponentData
    interpretation: InterpretationResult | None = None
    scores: dict[str, dict[str, ScoreResult]] = field(factory=dict)

    @property
    def key(self) -> str:
        return self.component.key

    @property
    def label(self) -> str | None:
        return self.interpretation.label if self.interpretation else None

    def score(self, scorer: str, label_source: str = "label") -> float | None:
        by_src = self.scores.get(scorer, {})
        r = headline(by_src) if label_source == "label" else by_src.get(label_source)
        return None if r is None or r.skipped else r.score

    def __repr__(self) -> str:
        parts = [repr(self.key)]
        if self.interpretation is not None:
            parts += [repr(self.interpretation.label), self.interpretation.confidence]
        else:
            parts.append("unlabeled")
        for s in sorted(self.scores):
            v = self.score(s)
            parts.append(f"{s}={v:.2f}" if v is not None else f"{s}=n/a")
        return f"LabeledComponent({', '.join(parts)})"

    def _repr_html_(self) -> str:
        from autointerp.report.notebook import labeled_component_html

        return labeled_component_html(self)


class RunView:
    """A run for a person at a notebook: index by key, iterate, or view the whole table.

    ``run[key]`` returns a `LabeledComponent`; ``run.harvest`` is the plain
    component list; ``run.write_report()`` writes the static HTML report.
    """

    def __init__(self, data: RunData, paths: RunPaths | None = None):
        self.data = data
        self.paths = paths
        self._index = {c["key"]: i for i, c in enumerate(data.components)}
        self._cache: dict[str, ComponentData] = {}

    def __len__(self) -> int:
        return len(self.data.components)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return [c["key"] for c in self.data.components]

    def component(self, key: str) -> ComponentData:
        if key not in self._cache:
            try:
                rec = self.data.components[self._index[key]]
            except KeyError:
                some = ", ".join(self.keys()[:3])
                raise KeyError(f"no component {key!r} in this run; keys look like {some}") from None
            self._cache[key] = from_dict(rec, ComponentData)
        return self._cache[key]

    def __getitem__(self, key: str | int) -> LabeledComponent:
        if isinstance(key, int):
            key = self.data.components[key]["key"]
        comp = self.component(key)
        return LabeledComponent(comp, self.data.interpretations.get(key), self.data.component_scores(key))

    def __iter__(self) -> Iterator[LabeledComponent]:
        for k in self.keys():
            yield self[k]

    def __repr__(self) -> str:
        return (
            f"RunView({self.data.name!r}: {len(self)} components, {len(self.data.interpretations)} labeled, "
            f"scorers={self.data.scorers})"
        )

    def _repr_html_(self) -> str:
        from autointerp.report.notebook import run_html

        return run_html(self.data)

    def write_report(self, out_dir: str | os.PathLike | None = None, **kwargs: Any) -> Path:
        from autointerp.report.writer import write_report

        if out_dir is None:
            if self.paths is None:
                raise ValueError("this run was not read from disk: pass out_dir")
            out_dir = self.paths.report
        return write_report(self.data, out_dir, **kwargs)


def open_run(run: RunPaths | str | os.PathLike, out: str | os.PathLike | None = None) -> RunView:
    """Open a run for viewing: a run id (under ``out``, default ``.data/autointerp``) or a run folder."""
    if isinstance(run, RunPaths):
        paths = run
    else:
        p = Path(run)
        if out is None and (p / "harvest").is_dir():
            paths = RunPaths(p)
        else:
            paths = RunPaths.of(str(run), out)
    return RunView(RunData.from_run(paths), paths)
