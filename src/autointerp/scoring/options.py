"""What a scoring run is asked to do: `ScoringConfig` (how each scorer builds its trials)
and `ScoreOptions` (which scorers, which judge, where to write, how fast, how costly).

`score`, `score_async` and `score_run` take the same options, built and checked
here in one place: ``score(harvest, labels, limit=20)`` and
``score(harvest, labels, options=ScoreOptions(limit=20))`` are the same call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field, frozen

from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP
from autointerp.llm.base import Backend
from autointerp.llm.runner import PriceTable
from autointerp.scoring.base import Scorer
from autointerp.scoring.detection import DetectionConfig
from autointerp.scoring.fuzzing import FuzzingConfig
from autointerp.scoring.intruder import IntruderConfig
from autointerp.scoring.output import OutputConfig
from autointerp.scoring.registry import SCORERS, check_scorer_names, scorer_class
from autointerp.scoring.simulation import SimulationConfig


def _split_size(_: Any, a: attrs.Attribute, value: Any) -> None:
    # a negative count would slice examples off the end of the held-out set
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"scoring config {a.name} must be a whole number >= 0 (examples the interpreter showed), got {value!r}")


@define
class ScoringConfig:
    """Every scoring parameter, with defaults (documented in docs/scoring.md).

    ``n_explain`` / ``n_top`` say what the interpreter showed for a label that
    carries no record of it (a plain string, or a results file written before
    `InterpretationResult.evidence`); a recorded split always wins. ``custom`` holds
    the config of a registered custom scorer by its name (absent: its
    ``config_class()``).
    """

    detection: DetectionConfig = field(factory=DetectionConfig)
    fuzzing: FuzzingConfig = field(factory=FuzzingConfig)
    simulation: SimulationConfig = field(factory=SimulationConfig)
    intruder: IntruderConfig = field(factory=IntruderConfig)
    output: OutputConfig = field(factory=OutputConfig)
    n_explain: int = field(default=DEFAULT_N_EXPLAIN, validator=_split_size)
    n_top: int = field(default=DEFAULT_N_TOP, validator=_split_size)
    custom: dict[str, Any] = field(factory=dict)

    def scorer(self, name: str) -> Scorer:
        """The registered scorer ``name`` with its config from here."""
        cls = scorer_class(name)
        if name in self.custom:
            return cls(self.custom[name])
        # the built-ins' configs are fields named after them
        return cls(getattr(self, name) if name in SCORERS else None)


def _options_error(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"score option {name} must be {expected}, got {value!r}")


def _scorer_names(value: Sequence[str]) -> tuple[str, ...]:
    return check_scorer_names(value, "scorers")


def _whole(minimum: int | None = None, optional: bool = False):
    expected = "a whole number" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if optional else "")

    def check(_: Any, a: attrs.Attribute, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise _options_error(a.name, expected, value)

    return check


def _cost(_: Any, a: attrs.Attribute, value: Any) -> None:
    # NaN passes every comparison with the spend, so the cap would never stop anything
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value < 0):
        raise _options_error(a.name, "a number of US dollars >= 0, or None for no cap", value)


def _backend(_: Any, a: attrs.Attribute, value: Any) -> None:
    if value is not None and not callable(getattr(value, "complete", None)):
        raise _options_error(a.name, "a Backend (an object with an async complete(request)) or None", value)


def _mapping(_: Any, a: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise _options_error(a.name, "a mapping or None", value)


def _names_or_none(what: str):
    def convert(value: Any) -> tuple[str, ...] | None:
        # a bare string is iterable too: "h.0.mlp:3" would become nine one-letter names
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, set, frozenset, tuple)):
            raise _options_error(what, f"a list of {'component keys' if what == 'keys' else 'layer names'} or None", value)
        out = tuple(value)
        bad = [v for v in out if not isinstance(v, str)]
        if bad:
            raise _options_error(what, "names as strings", bad[0])
        return tuple(dict.fromkeys(out))

    return convert


def _to_config(value: ScoringConfig | None) -> ScoringConfig:
    if value is None:
        return ScoringConfig()
    if not isinstance(value, ScoringConfig):
        raise _options_error("config", "a ScoringConfig or None", value)
    return value


def _to_folder(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


@frozen
class ScoreOptions:
    """The options of one scoring run (every keyword of `score` / `score_run`).

    ``scorers``: registered scorer names, repeats dropped. ``backend``: any
    `Backend`; None picks Claude when ANTHROPIC_API_KEY is set, else the
    token-match baseline. ``baselines``: also score shuffled and token-lookup
    labels. ``keys`` / ``layers``: score only these components / the components of
    these layers (checked against the harvest; not both). ``limit``: score a
    random subset of that many labelled components (of those, when ``keys`` or
    ``layers`` is given; reproducible for ``seed``). ``scores_dir``: where ``<scorer>.jsonl`` files are
    appended (and resumed from); None keeps everything in memory.
    ``max_concurrent`` / ``max_cost_usd`` / ``prices`` / ``progress`` /
    ``runner_options``: the `JobRunner`'s (``runner_options`` passes any other of
    its keywords, e.g. ``{"backoff_initial_s": 0.0}``).
    """

    scorers: tuple[str, ...] = field(default=SCORERS, converter=_scorer_names)
    backend: Backend | None = field(default=None, validator=_backend)
    baselines: bool = True
    keys: tuple[str, ...] | None = field(default=None, converter=_names_or_none("keys"))
    layers: tuple[str, ...] | None = field(default=None, converter=_names_or_none("layers"))
    limit: int | None = field(default=None, validator=_whole(0, optional=True))
    seed: int = field(default=0, validator=_whole())
    config: ScoringConfig = field(factory=ScoringConfig, converter=_to_config)
    scores_dir: Path | None = field(default=None, converter=_to_folder)
    max_concurrent: int = field(default=20, validator=_whole(1))
    max_cost_usd: float | None = field(default=None, validator=_cost)
    prices: PriceTable | Mapping[str, Any] | None = field(default=None)
    progress: bool = False
    runner_options: Mapping[str, Any] | None = field(default=None, validator=_mapping)

    def __attrs_post_init__(self) -> None:
        if self.keys is not None and self.layers is not None:
            raise ValueError(f"score options keys and layers pick the components two ways; give one, got keys={list(self.keys)!r} "
                             f"and layers={list(self.layers)!r}")

    @classmethod
    def from_kwargs(cls, options: ScoreOptions | None = None, /, **kwargs: Any) -> ScoreOptions:
        """``options`` (or the defaults) with ``kwargs`` replacing fields; an unknown keyword is an error."""
        names = [a.name for a in attrs.fields(cls)]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(f"unknown score option(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(names)}")
        if options is None:
            return cls(**kwargs)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a ScoreOptions or None, got {options!r}")
        return attrs.evolve(options, **kwargs) if kwargs else options

    def price_table(self, free_models: Mapping[str, tuple[float, float]]) -> PriceTable:
        """The runner's prices: ``prices``, with ``free_models`` (the offline judges) at zero unless priced."""
        if isinstance(self.prices, PriceTable):
            return self.prices
        return PriceTable({**free_models, **dict(self.prices or {})})
