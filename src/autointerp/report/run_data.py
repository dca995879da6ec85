"""A whole run read back for display: harvest, labels and scores, joined by component key.

The bottom layer of `autointerp.report`: the page writer, the exporter and the
notebook views all read a run through `RunData` and nothing else reads a run's
files. Labels, failures and scores come through `autointerp.records` (one rule
for which record wins, one corruption policy); file names come from `RunPaths`.

Components stay plain dicts in the layout of ``components.jsonl``: turning
50,000 components into attrs objects only to turn them back into JSON costs more
than the rest of the report.

>>> data = RunData.from_run(RunPaths.of("demo"))      # doctest: +SKIP
>>> data.scorers                                      # doctest: +SKIP
['detection', 'fuzzing']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autointerp.paths import DEFAULT_LABEL_SET, RunPaths
from autointerp.records import (
    Scores,
    count_failures,
    group_scores,
    iter_component_lines,
    iter_component_records,
    read_harvest_config_dict,
    RefinementIndex,
    read_labels_and_first_pass,
    read_scores,
)
from autointerp.schemas import ComponentData, HarvestConfig, InterpretationResult, ScoreResult
from autointerp.storage import from_dict, recover_dir, to_dict

__all__ = ["RunData", "Scores"]


class RunData:
    """A run's harvest as plain dicts plus its labels and scores, ready to render.

    Components are dicts in component-space order. Read from disk, they are
    streamed (`iter_components`) so a report or an export of a large run never
    holds every component in memory; the ``components`` list is read on first
    use. ``config`` is the harvest's ``config.json`` as a dict.
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
        label_set: str = DEFAULT_LABEL_SET,
        refinement: Mapping[str, Any] | None = None,
        first_pass: Mapping[str, InterpretationResult] | None = None,
    ):
        if components is None and components_path is None:
            raise ValueError("RunData needs components (a list of dicts) or components_path; got neither")
        self.config = dict(config)
        self._components = components
        self.components_path = Path(components_path) if components_path is not None else None
        self.interpretations = dict(interpretations or {})
        self.scores: Scores = scores or {}
        self.n_failures = n_failures
        self.name = name
        #: which label set of the run the labels and scores are
        self.label_set = label_set
        #: per refined component its `autointerp.records.RefinementHistory` (``interpret --refine``); from
        #: disk a `RefinementIndex`, which reads a component's rounds when asked for (never all at once)
        self.refinement: Mapping[str, Any] = refinement if isinstance(refinement, RefinementIndex) else dict(refinement or {})
        #: per component whose label came from the neighbour pass, the first pass's result
        self.first_pass = dict(first_pass or {})
        self._store: Any = None
        self._by_key: dict[str, int] | None = None

    @classmethod
    def from_run(cls, run: RunPaths | str | os.PathLike, *, label_set: str | None = None) -> RunData:
        """Read a run folder: its harvest and one label set's interpretations and scores
        (``label_set``; None: the set a `RunPaths` names, else the default set)."""
        paths = RunPaths.at(run, label_set=label_set)
        recover_dir(paths.harvest)
        if not paths.harvest_config.exists() or not paths.harvest_components.exists():
            raise FileNotFoundError(
                f"{paths.root} has no harvest: expected {paths.harvest_config} and {paths.harvest_components} "
                "(run `autointerp harvest` first, or check the run id and --out)"
            )
        config = read_harvest_config_dict(paths.harvest_config)
        interps, first_pass = read_labels_and_first_pass(paths)
        return cls(
            config,
            None,
            interps,
            read_scores(paths),
            count_failures(paths.interpretation_failures, interps),
            name=paths.run_id if paths.is_default_set else f"{paths.run_id} [{paths.label_set}]",
            components_path=paths.harvest_components,
            label_set=paths.label_set,
            refinement=RefinementIndex(paths),
            first_pass=first_pass,
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
        if not (hasattr(harvest, "components") and hasattr(harvest, "config")):
            raise TypeError(f"harvest must be a HarvestResult (with .config and .components), got {type(harvest).__name__}")
        if isinstance(interpretations, Mapping):
            interp = dict(interpretations)
        else:
            interp = {r.component_key: r for r in (interpretations or [])}
        grouped: Scores = dict(scores) if isinstance(scores, Mapping) else group_scores(scores or [])  # type: ignore[arg-type]
        return cls(to_dict(harvest.config), [to_dict(c) for c in harvest], interp, grouped, name=name)

    def without_components(self) -> RunData:
        """The labels and scores only (what a worker process needs: components reach it separately)."""
        return RunData(self.config, [], self.interpretations, self.scores, self.n_failures, self.name, label_set=self.label_set,
                       refinement=self.refinement, first_pass=self.first_pass)

    @property
    def streams_from_disk(self) -> bool:
        """True when the components are read from ``components_path`` rather than held in memory."""
        return self._components is None and self.components_path is not None

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component dict, in order, streamed from disk when not already loaded.

        From disk, each line is checked against ``config`` as it streams (`records.iter_component_records`):
        a damaged ``components.jsonl`` is a `CorruptRunFile`, never a report of fewer components.
        """
        if self._components is not None:
            yield from self._components
        else:
            assert self.components_path is not None
            # keys, order and count are checked on every line; the schema of each line only where the
            # harvest's index does not vouch for it (see `schema_checked`)
            yield from iter_component_records(self.components_path, from_dict(self.config, HarvestConfig),
                                              check_schema=not self.schema_checked)

    @property
    def schema_checked(self) -> bool:
        """True when every component line is known to fit the schema without structuring it again.

        For a run in memory, the dicts came from `ComponentData` objects. From disk, it
        is the harvest's index (`autointerp.harvest_store`): it is written only by a save
        (from `ComponentData` objects) or by one strict scan of the file (which
        structures every line), and it is tied to the file's size and modification
        time, so an edited ``components.jsonl`` is scanned strictly again when the
        index is opened. Opening it here is that check for a run without one.
        """
        return self._components is not None or self.store() is not None

    def iter_component_lines(self) -> Iterator[bytes]:
        """The raw JSON line of every component (read from disk), for workers that parse them
        themselves: parsing is half the work of a report."""
        if self.components_path is None:
            raise ValueError("iter_component_lines needs a run read from disk (components_path is None)")
        # keys, order and count are checked here; each line's schema by the worker that parses it
        yield from iter_component_lines(self.components_path, from_dict(self.config, HarvestConfig))

    def line_spans(self) -> list[tuple[str, int, int]] | None:
        """``(key, offset, length)`` of every component's line, from the harvest's index (None without
        one: a run in memory), so that workers can read their own lines (`read_lines`)."""
        store = self.store()
        return None if store is None else store.line_spans()

    def store(self) -> Any:
        """The harvest folder's index (`autointerp.harvest_store.HarvestStore`) for a run read from disk,
        opened on first use (built by one checked scan where it is missing); None for a run in memory."""
        if not self.streams_from_disk:
            return None
        if self._store is None:
            from autointerp.harvest_store import HarvestStore

            assert self.components_path is not None
            self._store = HarvestStore(self.components_path.parent, from_dict(self.config, HarvestConfig))
        return self._store

    def summaries(self) -> list[Any]:
        """Every component's index row (`ComponentSummary`: key, layer, index, firing count/rate, mean/max
        activation) in order; from the harvest's index when read from disk, so no evidence is parsed."""
        store = self.store()
        if store is not None:
            return store.summaries()
        from autointerp.harvest_store import ComponentSummary

        return [ComponentSummary(c["key"], c.get("layer", ""), c.get("index", 0), int(c.get("firing_count", 0)),
                                 float(c.get("firing_rate", 0.0)), float(c.get("mean_activation", 0.0)),
                                 float(c.get("max_activation", 0.0))) for c in self.components]

    def component(self, key: str) -> ComponentData:
        """One component by key (read through the index from disk: nothing else is parsed); KeyError if absent."""
        store = self.store()
        if store is not None:
            pos = store.position(key)
            if pos is None:
                raise KeyError(key)
            return store.get(pos)
        if self._by_key is None:
            self._by_key = {c["key"]: i for i, c in enumerate(self.components)}
        return from_dict(self.components[self._by_key[key]], ComponentData)

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


def read_lines(path: str | os.PathLike, spans: list[tuple[str, int, int]]) -> list[bytes]:
    """The lines at ``spans`` (consecutive components' ``(key, offset, length)`` from the harvest's
    index), read in one go. Each line is checked to be its key's record by whoever parses it."""
    if not spans:
        return []
    start = spans[0][1]
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(spans[-1][1] + spans[-1][2] - start)
    return [data[off - start : off - start + length] for _, off, length in spans]
