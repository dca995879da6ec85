"""What an interpretation run is asked to do: `InterpretOptions`, built and checked in one place.

`Interpreter(backend, ...)`, `Interpreter.run` / `arun` / `jobs` / `dry_run` and
`interpret_run` take the same options: ``Interpreter(b, limit=3).run(h, out)``,
``Interpreter(b).run(h, out, limit=3)`` and
``Interpreter(b, InterpretOptions(limit=3)).run(h, out)`` are the same run.

The prompt's options (`PROMPT_FIELDS`: template, sections, example counts) are
fixed when the `Interpreter` is made, since its templates are compiled then;
the others (which components, batch or live, concurrency, cost) may change per
run.

>>> InterpretOptions(limit=-1)
Traceback (most recent call last):
ValueError: interpret option limit must be a whole number >= 0 or None, got -1
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import field, frozen

from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP, DEFAULT_N_VALIDATE
from autointerp.llm.runner import PriceTable
from autointerp.paths import check_label_set

#: the JSON schema every interpretation answer must match. ``reasoning`` comes
#: first so the model writes its argument before committing to a label.
INTERPRETATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "description": "One to three sentences on the evidence."},
        "label": {"type": "string", "description": "A short, specific label (at most about 8 words)."},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
    },
    "required": ["reasoning", "label", "confidence"],
    "additionalProperties": False,
}

DEFAULT_TEMPLATE = "interpret.j2"
#: accumulator outputs that are for scoring, not for the explainer
DEFAULT_EXCLUDED_SECTIONS = ("window_pool", "firing_stats")


def _error(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"interpret option {name} must be {expected}, got {value!r}")


def _whole(minimum: int, optional: bool = False):
    expected = f"a whole number >= {minimum}" + (" or None" if optional else "")

    def check(_: Any, a: attrs.Attribute, value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _error(a.name, expected, value)

    return check


def _seconds(positive: bool = False, optional: bool = False):
    expected = "a number of seconds " + ("> 0" if positive else ">= 0") + (" or None" if optional else "")

    def check(_: Any, a: attrs.Attribute, value: Any) -> None:
        if value is None and optional:
            return
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
                or (positive and value == 0)):
            raise _error(a.name, expected, value)

    return check


def _flag(_: Any, a: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, bool):
        raise _error(a.name, "True or False", value)


def _cost(_: Any, a: attrs.Attribute, value: Any) -> None:
    # NaN passes every comparison with the spend, so the cap would never stop anything
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value < 0):
        raise _error(a.name, "a number of US dollars >= 0, or None for no cap", value)


def _prices(_: Any, a: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, (PriceTable, Mapping)):
        raise _error(a.name, "a PriceTable, a mapping {model: (input, output[, cache read, cache write])} or None", value)


def _judge(_: Any, a: attrs.Attribute, value: Any) -> None:
    if value is not None and not callable(getattr(value, "complete", None)):
        raise _error(a.name, "a Backend (an object with an async complete(request)) or None for the labeller's own backend", value)


def _keys(value: Iterable[str] | None) -> tuple[str, ...] | None:
    # a bare string is iterable too: "h.0.mlp:3" would become nine one-letter keys
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise _error("keys", "a list of component keys (e.g. ['h.0.mlp:3']) or None", value)
    keys = tuple(value)
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        raise _error("keys", "component keys as strings", bad[0])
    return keys


def _label_set(value: str | None) -> str | None:
    return None if value is None else check_label_set(value, "interpret option label_set")


def _folders(value: str | os.PathLike | Iterable[str | os.PathLike] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    if not isinstance(value, Iterable):
        raise _error("templates_dir", "a folder, a list of folders or None", value)
    return tuple(os.fspath(v) for v in value)


def _template_map(value: Mapping[str, str | os.PathLike] | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _error("section_templates", "a mapping {accumulator name: template name or path}", value)
    return {str(k): os.fspath(v) for k, v in value.items()}


def _names(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _error("exclude_sections", "a list of accumulator output names", value)
    return frozenset(value)


@frozen
class InterpretOptions:
    """The options of an interpretation run (every keyword of `Interpreter` and its runs).

    Which components: ``keys`` (only these; None: all), ``limit`` (at most this
    many pending ones), ``skip_dead`` (components that never fired are not sent).
    Where: ``label_set`` (the run's label set the labels go to, `autointerp.paths`;
    None: the one ``out`` names, the default set for a plain `RunPaths`).

    The prompt (fixed per `Interpreter`): ``prompt_template`` (a name under
    ``autointerp/prompts`` or a path to a ``.j2`` file with ``{% block system %}``
    and ``{% block prompt %}``); ``templates_dir`` (folders searched before the
    package, e.g. holding ``sections/<name>.j2``); ``section_templates``
    (``{accumulator_name: template name or path}``); ``exclude_sections`` (outputs
    never shown to the explainer); ``n_explain`` / ``n_top`` (examples shown, the
    rest held out for scoring); ``n_tokens`` / ``n_partners`` (rows per token
    ranking and co-firing list); ``max_tokens`` (output limit per answer).

    Evidence sets and refinement (`autointerp.refine`): ``n_validate`` held-out
    examples (and pool windows) are reserved for validation, never shown and
    never scored on by ``autointerp score`` (0: none); ``refine`` rounds of
    revision against the validation set's mistakes (0: none); ``candidates``
    first labels, the best on validation kept; ``judge``: the backend that
    scores on the validation set (None: the labeller's backend).

    Neighbour context (`autointerp.neighbours`): ``neighbours`` makes this run the
    second pass: every selected component is labelled again with the current
    labels of its ``n_neighbours`` strongest co-firing partners and nearest
    weight-space neighbours (``prompts/sections/neighbours.j2``); it needs labels
    from a first pass, and its label wins.

    Sending: ``batch`` (the Message Batches API, polled every ``poll_interval_s``)
    or live through the `JobRunner` with ``max_concurrent``, ``request_timeout_s``,
    ``max_retries``, ``max_invalid_retries``, ``backoff_initial_s``,
    ``backoff_max_s``; both honour ``max_cost_usd``, ``prices`` and ``progress``.
    """

    keys: tuple[str, ...] | None = field(default=None, converter=_keys)
    limit: int | None = field(default=None, validator=_whole(0, optional=True))
    skip_dead: bool = field(default=True, validator=_flag)
    label_set: str | None = field(default=None, converter=_label_set)

    prompt_template: str | os.PathLike = DEFAULT_TEMPLATE
    templates_dir: tuple[str, ...] = field(default=(), converter=_folders)
    section_templates: dict[str, str] = field(factory=dict, converter=_template_map)
    exclude_sections: frozenset[str] = field(default=frozenset(DEFAULT_EXCLUDED_SECTIONS), converter=_names)
    n_explain: int = field(default=DEFAULT_N_EXPLAIN, validator=_whole(0))
    n_top: int = field(default=DEFAULT_N_TOP, validator=_whole(0))
    n_tokens: int = field(default=8, validator=_whole(0))
    n_partners: int = field(default=8, validator=_whole(0))
    max_tokens: int = field(default=1024, validator=_whole(1))

    n_validate: int = field(default=DEFAULT_N_VALIDATE, validator=_whole(0))
    refine: int = field(default=0, validator=_whole(0))
    candidates: int = field(default=1, validator=_whole(1))
    judge: Any = field(default=None, validator=_judge)
    neighbours: bool = field(default=False, validator=_flag)
    n_neighbours: int = field(default=5, validator=_whole(1))

    batch: bool = field(default=False, validator=_flag)
    poll_interval_s: float = field(default=30.0, validator=_seconds(positive=True))
    max_concurrent: int = field(default=50, validator=_whole(1))
    request_timeout_s: float | None = field(default=120.0, validator=_seconds(positive=True, optional=True))
    max_retries: int = field(default=6, validator=_whole(0))
    max_invalid_retries: int = field(default=2, validator=_whole(0))
    backoff_initial_s: float = field(default=1.0, validator=_seconds())
    backoff_max_s: float = field(default=60.0, validator=_seconds())
    max_cost_usd: float | None = field(default=None, validator=_cost)
    prices: PriceTable | Mapping[str, Any] | None = field(default=None, validator=_prices)
    progress: bool = field(default=True, validator=_flag)

    @classmethod
    def from_kwargs(cls, options: InterpretOptions | None = None, /, **kwargs: Any) -> InterpretOptions:
        """``options`` (or the defaults) with ``kwargs`` replacing fields; an unknown keyword is an error."""
        names = [a.name for a in attrs.fields(cls)]
        for k in kwargs:
            if k not in names:
                close = difflib.get_close_matches(k, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of {', '.join(names)}"
                raise TypeError(f"unknown interpret option {k!r}{hint}")
        if options is None:
            return cls(**kwargs)
        if not isinstance(options, cls):
            raise TypeError(f"options must be an InterpretOptions or None, got {options!r}")
        return attrs.evolve(options, **kwargs) if kwargs else options

    def for_run(self, options: InterpretOptions | None = None, /, **changes: Any) -> InterpretOptions:
        """The options of one run of an `Interpreter` made with ``self``: ``options``
        (default ``self``) with ``changes``; the prompt's options cannot change."""
        opts = InterpretOptions.from_kwargs(options if options is not None else self, **changes)
        for name in PROMPT_FIELDS:
            if getattr(opts, name) != getattr(self, name):
                raise ValueError(
                    f"interpret option {name} is fixed when the Interpreter is made (its templates are "
                    f"compiled then): got {getattr(opts, name)!r} for this run, the Interpreter has "
                    f"{getattr(self, name)!r}; make a new Interpreter({name}=...) instead"
                )
        return opts

    @property
    def refines(self) -> bool:
        """Whether a run goes through `autointerp.refine` (revision rounds or several candidates)."""
        return self.refine > 0 or self.candidates > 1

    def runner_options(self) -> dict[str, Any]:
        """The keywords of the live `JobRunner`."""
        return {
            "max_concurrent": self.max_concurrent,
            "request_timeout_s": self.request_timeout_s,
            "max_retries": self.max_retries,
            "max_invalid_retries": self.max_invalid_retries,
            "backoff_initial_s": self.backoff_initial_s,
            "backoff_max_s": self.backoff_max_s,
            "max_cost_usd": self.max_cost_usd,
            "prices": self.prices,
            "progress": self.progress,
        }


#: options that shape the prompts, fixed when an `Interpreter` is made
PROMPT_FIELDS = ("prompt_template", "templates_dir", "section_templates", "exclude_sections",
                 "n_explain", "n_top", "n_tokens", "n_partners", "max_tokens")
