"""The scorers by short name: ``score(..., scorers=["detection", "mine"])`` finds them here.

A scorer is a `Scorer` subclass with a ``name``. `register_scorer` adds one and
refuses a name already taken; `scorer_class` finds one by name, and an unknown
name is an error that lists the known ones. The five built-ins are registered at
the bottom of this module, the one place that names them.

>>> @register_scorer
... class Echo(Scorer):
...     name = "echo"
...     headline = "accuracy"
...     def trials(self, ev, label, *, label_source="label", seed=0, context=None): ...
...     def metrics(self, records): ...
>>> score(harvest, labels, scorers=["detection", "echo"])
"""

from __future__ import annotations

from collections.abc import Iterable

from autointerp.scoring.base import Scorer
from autointerp.scoring.detection import DetectionScorer
from autointerp.scoring.fuzzing import FuzzingScorer
from autointerp.scoring.intruder import IntruderScorer
from autointerp.scoring.output import OutputScorer
from autointerp.scoring.simulation import SimulationScorer

_SCORERS: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Make ``cls`` usable by its ``name``; usable as a class decorator. A taken name is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"register_scorer expects a Scorer subclass, got {cls!r}")
    name = cls.name
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"{cls.__name__}.name must be a short non-empty name such as 'detection', got {name!r}")
    if name in _SCORERS:
        raise ValueError(
            f"a scorer named {name!r} is already registered ({_SCORERS[name].__qualname__}); "
            f"give {cls.__qualname__} another name, or unregister_scorer({name!r}) first"
        )
    _SCORERS[name] = cls
    return cls


def unregister_scorer(name: str) -> type[Scorer]:
    """Remove a registered scorer (tests, notebooks re-running a cell); returns its class."""
    scorer_class(name)  # the same error as any unknown name
    return _SCORERS.pop(name)


def scorer_names() -> tuple[str, ...]:
    """Every registered name: the built-ins first, then custom scorers in registration order."""
    return tuple(_SCORERS)


def scorer_class(name: str) -> type[Scorer]:
    try:
        return _SCORERS[name]
    except KeyError:
        raise ValueError(
            f"unknown scorer {name!r}; known scorers: {', '.join(_SCORERS)} "
            "(a custom one is added with autointerp.scoring.register_scorer)"
        ) from None


def check_scorer_names(names: Iterable[str], argument: str = "scorers") -> tuple[str, ...]:
    """``names`` without repeats, each one registered (else the error names ``argument``)."""
    if isinstance(names, str):
        raise TypeError(f"{argument} must be a list of scorer names such as ['detection', 'fuzzing'], got the string {names!r}")
    out = tuple(dict.fromkeys(names))
    for n in out:
        scorer_class(n)
    return out


for _builtin in (DetectionScorer, FuzzingScorer, SimulationScorer, IntruderScorer, OutputScorer):
    register_scorer(_builtin)

#: the built-in scorers, the default of ``score(..., scorers=...)``
SCORERS: tuple[str, ...] = scorer_names()
