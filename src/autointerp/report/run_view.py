"""A run in a notebook: ``open_run("demo")["h.0.mlp:3"]`` shows one component.

`open_run` reads a run (through `RunData`) and returns a `RunView`; indexing it
gives a `LabeledComponent` (evidence + label + scores) that shows itself with
the HTML of `autointerp.report.notebook`. This module sits above the run data
and the views, and beside the page writer, which `RunView.write_report` calls.

>>> run = open_run("demo")                      # doctest: +SKIP
>>> run["h.0.mlp:3"]                            # doctest: +SKIP
LabeledComponent('h.0.mlp:3', 'closing quotation marks', high, detection=0.82)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attrs import define, field

from autointerp.paths import RunPaths
from autointerp.records import RefinementHistory
from autointerp.report.notebook import labeled_component_html, run_html
from autointerp.report.run_data import RunData
from autointerp.report.score_sources import headline, score_value
from autointerp.report.writer import write_report_from_data
from autointerp.schemas import ComponentData, InterpretationResult, ScoreResult


@define
class LabeledComponent:
    """One component with everything known about it: evidence, label and scores.

    ``scores`` maps scorer -> label source (``"label"``, ``"shuffled"``,
    ``"token_lookup"``) -> `ScoreResult`. ``token_kind`` is the harvest's tokenizer kind,
    so its examples read as the text they came from (`autointerp.token_text`).
    Its view shows the label's history too: the refinement rounds and the first pass's label.
    """

    component: ComponentData
    interpretation: InterpretationResult | None = None
    scores: dict[str, dict[str, ScoreResult]] = field(factory=dict)
    token_kind: str | None = None
    #: its refinement rounds (``interpret --refine``): `autointerp.records.RefinementHistory`, or None
    refinement: RefinementHistory | None = None
    #: where the label came from the neighbour pass (``interpret --neighbours``): the first pass's result
    first_pass: InterpretationResult | None = None

    @property
    def key(self) -> str:
        return self.component.key

    @property
    def label(self) -> str | None:
        return self.interpretation.label if self.interpretation else None

    def score(self, scorer: str, label_source: str = "label") -> float | None:
        by_src = self.scores.get(scorer, {})
        return score_value(headline(by_src) if label_source == "label" else by_src.get(label_source))

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
        return labeled_component_html(self)


class RunView:
    """A run for a person at a notebook: index by key, iterate, or view the whole table.

    ``run[key]`` returns a `LabeledComponent`; ``run.data`` is the `RunData`;
    ``run.write_report()`` writes the static HTML report.
    """

    def __init__(self, data: RunData, paths: RunPaths | None = None):
        self.data = data
        self.paths = paths
        # the keys come from the harvest's index (a run on disk): no component is parsed until shown
        self._keys = [r.key for r in data.summaries()]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._cache: dict[str, ComponentData] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return list(self._keys)

    def component(self, key: str) -> ComponentData:
        if key not in self._cache:
            if key not in self._index:
                some = ", ".join(self._keys[:3])
                raise KeyError(f"no component {key!r} in this run; keys look like {some}") from None
            if len(self._cache) >= 256:  # the components last shown, not the whole run
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self.data.component(key)
        return self._cache[key]

    def __getitem__(self, key: str | int) -> LabeledComponent:
        if isinstance(key, int):
            key = self._keys[key]
        comp = self.component(key)
        return LabeledComponent(comp, self.data.interpretations.get(key), self.data.component_scores(key),
                                token_kind=(self.data.config or {}).get("tokenizer_kind"),
                                refinement=self.data.refinement.get(key), first_pass=self.data.first_pass.get(key))

    def __iter__(self) -> Iterator[LabeledComponent]:
        for k in self.keys():
            yield self[k]

    def __repr__(self) -> str:
        return (
            f"RunView({self.data.name!r}: {len(self)} components, {len(self.data.interpretations)} labeled, "
            f"scorers={self.data.scorers})"
        )

    def _repr_html_(self) -> str:
        return run_html(self.data)

    def write_report(self, out_dir: str | os.PathLike | None = None, **options: Any) -> Path:
        """Write the static report (default: the run's ``report/`` folder); options as `write_report`."""
        if out_dir is None:
            if self.paths is None:
                raise ValueError("out_dir is needed: this run was not read from a run folder, so it has no report folder")
            out_dir = self.paths.report
        return write_report_from_data(self.data, out_dir, **options)


def open_run(run: RunPaths | str | os.PathLike, out: str | os.PathLike | None = None, *, label_set: str | None = None) -> RunView:
    """Open a run for viewing: a run id (under ``out``, default ``.data/autointerp``) or a run folder;
    ``label_set`` picks which of its label sets (None: the set a `RunPaths` names, else the default set)."""
    if isinstance(run, RunPaths):
        paths = run
    elif out is None and RunPaths.at(run).harvest.is_dir():
        paths = RunPaths.at(run)
    else:
        paths = RunPaths.of(str(run), out)
    paths = RunPaths.at(paths, label_set=label_set)
    return RunView(RunData.from_run(paths), paths)
