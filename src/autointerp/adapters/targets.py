"""Harvest targets: what ``autointerp harvest TARGET`` can name, and how each form is loaded.

Each adapter registers the target forms it understands: a `TargetKind` is a
name, a predicate on the target string and a loader taking a `TargetRequest` (the
string plus the options that shape loading). `load_target` asks the kinds your
code registered (in registration order), then the built-in ones, and loads with
the first that matches: a new kind can claim strings a built-in one would also
accept (``zoo:x`` has the shape of ``module:function``). The built-in kinds are
registered at the bottom of this module, lazily, so that naming a kind never
imports its optional dependencies::

    from autointerp.adapters.targets import TargetKind, register_target
    register_target(TargetKind("my-zoo", lambda s: s.startswith("zoo:"), load_zoo, "`zoo:<name>`: my models"))

A loader returns a `Target`: the `HarvestFn`, its tokenizer and the defaults it
suggests for options the caller left unset (dataset, context length, threshold,
text column). Loaders never change the caller's options: ``run_harvest`` applies
`Target.option_defaults` to a copy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from attrs import define, evolve, field

from autointerp.data import Tokenizer


@define(frozen=True)
class TargetRequest:
    """A target string and the options a loader may read (frozen: a loader answers, it does not edit)."""

    spec: str
    layers: Sequence[str] | None = None
    device: torch.device = field(factory=lambda: torch.device("cpu"))
    dtype: torch.dtype | None = None
    capture: str = "output"
    tokenizer: str | None = None
    #: ``auto`` | ``on`` | ``off``: whether the harvest wants next-token probabilities (``--output_probs``)
    output_probs: str = "auto"


@define(frozen=True)
class Target:
    """A resolved harvest target: the adapter, its tokenizer and the option defaults it suggests."""

    harvest_fn: Any
    tokenizer: Tokenizer | None = None
    default_dataset: str | None = None
    default_context_length: int | None = None
    default_threshold: float | None = None
    default_text_column: str | None = None
    dataset_description: str = ""
    #: one-line messages the harvest prints before it starts (e.g. why output statistics are off)
    notices: tuple[str, ...] = ()

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.harvest_fn, "vocab_size", None)

    @property
    def max_context_length(self) -> int | None:
        return getattr(self.harvest_fn, "context_length", None)

    @property
    def description(self) -> dict[str, Any]:
        return dict(getattr(self.harvest_fn, "description", None) or {"class": type(self.harvest_fn).__name__})

    def option_defaults(self) -> dict[str, Any]:
        """``{harvest option: value}`` this target suggests where the caller gave none."""
        given = {
            "dataset": self.default_dataset,
            "context_length": self.default_context_length,
            "threshold": self.default_threshold,
            "text_column": self.default_text_column,
            "dataset_description": self.dataset_description or None,
        }
        return {k: v for k, v in given.items() if v is not None}


@define(frozen=True)
class TargetKind:
    """One form of target string: ``matches(spec)`` says whether it is one, ``load(request)`` loads it."""

    name: str
    matches: Callable[[str], bool]
    load: Callable[[TargetRequest], Target]
    #: how the form is written, for the error that lists every form
    form: str


_KINDS: dict[str, TargetKind] = {}
_BUILTIN: set[str] = set()


def register_target(kind: TargetKind) -> TargetKind:
    """Add a target form, asked before the built-in ones; refuses a name already taken."""
    if not isinstance(kind, TargetKind):
        raise TypeError(f"register_target takes a TargetKind, got {type(kind).__name__}")
    if kind.name in _KINDS:
        raise ValueError(f"a target kind named {kind.name!r} is already registered ({_KINDS[kind.name].form}); "
                         "give yours another name")
    _KINDS[kind.name] = kind
    return kind


def target_kinds() -> list[TargetKind]:
    """The registered kinds, in the order `kind_of` asks them: yours first, then the built-in ones."""
    kinds = list(_KINDS.values())
    return [k for k in kinds if k.name not in _BUILTIN] + [k for k in kinds if k.name in _BUILTIN]


def kind_of(spec: str) -> TargetKind:
    """The first kind (see `target_kinds`) whose predicate accepts ``spec``."""
    kinds = target_kinds()
    for kind in kinds:
        if kind.matches(spec):
            return kind
    raise ValueError(
        f"cannot tell what kind of target {spec!r} is. Expected one of: " + "; ".join(k.form for k in kinds)
    )


def load_target(request: TargetRequest) -> Target:
    """Load ``request.spec`` with the kind that recognises it."""
    request = evolve(request, spec=request.spec.strip())
    target = kind_of(request.spec).load(request)
    if not isinstance(target, Target):
        raise TypeError(f"the loader of {request.spec!r} returned {type(target).__name__}, expected a Target")
    return target


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or nothing) is CUDA when available, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | None) -> torch.dtype | None:
    if not dtype:
        return None
    if dtype not in _DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _lazy(path: str) -> Callable[..., Any]:
    """``"module:function"`` called on first use, so registering a kind imports nothing heavy."""
    mod, _, name = path.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(mod), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    return call


def _register_builtins() -> None:
    for kind in _builtin_kinds():
        register_target(kind)
        _BUILTIN.add(kind.name)


def _builtin_kinds() -> list[TargetKind]:
    # order matters: `module:function` is tried before a wandb path, and `wandb:x/y/z` is not a function
    return [
        TargetKind("demo", lambda s: s == "demo", _lazy("autointerp.adapters.demo:load_demo_target"), "`demo`"),
        TargetKind("hf", lambda s: s.startswith("hf:"), _lazy("autointerp.adapters.hf:load_hf_target"),
                   "`hf:<model name or path>` with --layers"),
        TargetKind("function", _lazy("autointerp.adapters.function:is_function_target"),
                   _lazy("autointerp.adapters.function:load_function_target"),
                   "`package.module:function` returning a HarvestFn"),
        TargetKind("spd", _lazy("autointerp.adapters.spd:is_spd_target"),
                   _lazy("autointerp.adapters.spd:load_spd_target"),
                   "a wandb run path `entity/project/run_id` (or `wandb:...`, or a wandb URL) "
                   "or a local folder of an SPD run"),
    ]


_register_builtins()

__all__ = [
    "Target",
    "TargetKind",
    "TargetRequest",
    "kind_of",
    "load_target",
    "register_target",
    "resolve_device",
    "resolve_dtype",
    "target_kinds",
]
