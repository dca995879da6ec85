"""The firing threshold: one value for every layer, or one per layer.

A component fires where its activation is strictly greater than its layer's
threshold. A harvest takes either one number (every layer) or a mapping
``{layer: value}``; the key ``"default"`` (`DEFAULT_KEY`) gives the value of
every layer the mapping does not name. Without it, every harvested layer must be
named, and a layer the mapping names that the harvest does not have is refused
too (a typo would otherwise fall back silently)::

    >>> parse_threshold("0.5")
    0.5
    >>> parse_threshold("h.0.mlp=0.2,h.1.mlp=1e-3")
    {'h.0.mlp': 0.2, 'h.1.mlp': 0.001}
    >>> resolve_thresholds({"a": 0.2, "default": 0.0}, ["a", "b"])
    {'a': 0.2, 'b': 0.0}

This module is the one place that parses, checks and resolves that choice;
`HarvestConfig.threshold_for` and `HarvestContext.threshold_for` answer it for a
layer afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

#: the mapping key that gives the threshold of every layer not named
DEFAULT_KEY = "default"

#: one value for every layer, or ``{layer: value}`` (with an optional ``"default"`` entry)
ThresholdSpec = Union[float, Mapping[str, float]]


def _finite(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return math.isfinite(float(v))


def check_threshold(value: Any, name: str = "threshold") -> float | dict[str, float]:
    """``value`` as a float or a ``{layer: float}`` dict, or a ValueError naming ``name``.

    NaN fires nowhere and inf everywhere or nowhere: the whole pass would be
    wasted, and a checkpoint holding it could never be resumed (NaN != NaN).
    """
    what = (f"{name} must be a finite number or a mapping {{layer: finite number}} (a layer's components fire "
            f"where their activation is > it; {DEFAULT_KEY!r} gives the value of layers not named)")
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{what}, got an empty mapping")
        out: dict[str, float] = {}
        for layer, v in value.items():
            if not isinstance(layer, str) or not layer:
                raise ValueError(f"{what}; the key {layer!r} is not a layer name")
            if not _finite(v):
                raise ValueError(f"{what}; the value for layer {layer!r} is {v!r}")
            out[layer] = float(v)
        return out
    if not _finite(value):
        raise ValueError(f"{what}, got {value!r}")
    return float(value)


def parse_threshold(text: str) -> float | dict[str, float]:
    """The command line's ``--threshold``: ``0.5`` or ``layer=value,...`` (``default=value`` allowed).

    A layer name may contain ``=`` (the value is after the last one); it cannot contain ``,``.
    """
    s = str(text).strip()
    if "=" not in s:
        try:
            return check_threshold(float(s), "--threshold")
        except ValueError:
            raise ValueError(f"--threshold must be a finite number or layer=value,... (e.g. "
                             f"h.0.mlp=0.5,h.1.mlp=0.2 or h.0.mlp=0.5,{DEFAULT_KEY}=0), got {text!r}") from None
    out: dict[str, float] = {}
    for item in s.split(","):
        item = item.strip()
        if not item:
            continue
        layer, sep, v = item.rpartition("=")
        layer = layer.strip()
        if not sep or not layer:
            raise ValueError(f"--threshold: {item!r} is not layer=value (in {text!r})")
        if layer in out:
            raise ValueError(f"--threshold names layer {layer!r} twice (in {text!r})")
        try:
            out[layer] = float(v)
        except ValueError:
            raise ValueError(f"--threshold: the value for layer {layer!r} is {v.strip()!r}, not a number "
                             f"(in {text!r})") from None
    return check_threshold(out, "--threshold")


def _num(v: float) -> str:
    short = f"{float(v):g}"
    return short if float(short) == float(v) else repr(float(v))


def format_threshold(spec: ThresholdSpec) -> str:
    """The ``--threshold`` argument that gives ``spec`` (what `parse_threshold` reads back exactly).

    >>> format_threshold({"h.0.mlp": 0.25, "default": 0.0})
    'h.0.mlp=0.25,default=0'
    """
    if isinstance(spec, Mapping):
        return ",".join(f"{layer}={_num(v)}" for layer, v in spec.items())
    return _num(spec)


def resolve_thresholds(spec: ThresholdSpec, layers: Sequence[str]) -> dict[str, float]:
    """``{layer: threshold}`` for every one of ``layers``, in their order.

    A mapping without ``"default"`` must name every layer; a mapping may not name
    a layer that is not among ``layers``. Both are refused naming the layers.
    """
    spec = check_threshold(spec)
    if not isinstance(spec, dict):
        return {layer: spec for layer in layers}
    unknown = [k for k in spec if k != DEFAULT_KEY and k not in layers]
    if unknown:
        raise ValueError(f"threshold names layer(s) {unknown} that the harvest does not have; "
                         f"its layers are {list(layers)}")
    missing = [layer for layer in layers if layer not in spec]
    if missing and DEFAULT_KEY not in spec:
        raise ValueError(f"threshold gives no value for layer(s) {missing}: name each layer "
                         f"(layer=value,...) or add a {DEFAULT_KEY}=value entry")
    return {layer: spec.get(layer, spec.get(DEFAULT_KEY, 0.0)) for layer in layers}


def base_threshold(spec: ThresholdSpec) -> float:
    """The one number recorded as ``threshold``: the value itself, a mapping's ``default``, else its lowest value."""
    spec = check_threshold(spec)
    if not isinstance(spec, dict):
        return spec
    return spec[DEFAULT_KEY] if DEFAULT_KEY in spec else min(spec.values())


def is_uniform(per_layer: Mapping[str, float] | None) -> bool:
    """True when every layer has the same threshold (or there is no per-layer table)."""
    return per_layer is None or len(set(per_layer.values())) <= 1


__all__ = ["DEFAULT_KEY", "ThresholdSpec", "base_threshold", "check_threshold", "format_threshold", "is_uniform",
           "parse_threshold", "resolve_thresholds"]
