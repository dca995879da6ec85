"""The one file format of a harvest loop's state: checkpoints (``--resume``) and worker files (``merge``).

A checkpoint is one ``torch.save`` file holding a plain dict::

    {"format": "autointerp.harvest_checkpoint/1",
     "fingerprint": {...},        # the settings a resume must share (empty for a bare HarvestLoop)
     "done": bool,                # True once the loop reached the end of its batches
     "accumulators": [{"class": "module:QualName", "config": {...}}, ...],
     "model": {...}, "dataset": {...},
     "token_strings": [str] | None,   # every token's text (worker files), so merge needs no tokenizer
     "loop": HarvestLoop.state_dict()}

Only tensors and plain values (dict, list, tuple, str, int, float, bool, None) are
stored, and files are read back with ``torch.load(weights_only=True)``: a run folder
may be shared, and a full unpickle of a crafted file would run its code. The
accumulator classes named in a file are only instantiated when they are
`Accumulator` subclasses.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from autointerp.accumulators.base import Accumulator
from autointerp.storage import atomic_write_with

CHECKPOINT_FORMAT = "autointerp.harvest_checkpoint/1"

_PLAIN = (str, int, float, bool, type(None))


def accumulator_spec(acc: Accumulator) -> dict[str, Any]:
    """How to build ``acc`` again: its class path and its config."""
    return {"class": f"{type(acc).__module__}:{type(acc).__qualname__}", "config": acc.config()}


def accumulator_from_spec(spec: Mapping[str, Any], where: str | Path = "a checkpoint") -> Accumulator:
    """Build the accumulator an `accumulator_spec` describes; refuses a class that is not an `Accumulator`."""
    path = spec.get("class") if isinstance(spec, Mapping) else None
    mod, _, qual = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not mod or not qual:
        raise ValueError(f"{where} names an accumulator as {path!r}, expected 'package.module:ClassName'")
    cls: Any = importlib.import_module(mod)
    for part in qual.split("."):
        cls = getattr(cls, part, None)
    # calling whatever a file names would be code from data: only accumulator classes are built
    if not (isinstance(cls, type) and issubclass(cls, Accumulator)):
        raise ValueError(f"{where} names {path!r} as an accumulator, but that is not an Accumulator subclass")
    config = spec.get("config") or {}
    if not isinstance(config, Mapping):
        raise ValueError(f"{where} gives {path!r} the config {config!r}, expected a dict of keyword arguments")
    return cls(**config)


def check_plain(value: Any, where: str) -> None:
    """Refuse, at save time, anything ``torch.load(weights_only=True)`` would refuse at resume."""
    if isinstance(value, torch.Tensor) or isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, _PLAIN):
                raise TypeError(f"{where} has the key {k!r} of type {type(k).__name__}, expected str, int or float keys")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; a harvest checkpoint stores only tensors, dicts, lists, "
        "tuples, str, int, float, bool and None (convert it in the accumulator's state_dict)"
    )


def write_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    check_plain(dict(state), "the harvest checkpoint")
    atomic_write_with(path, lambda tmp: torch.save(dict(state), tmp))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file `write_checkpoint` wrote; only tensors and plain values are unpickled."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # torch's message is long; the line naming the refused global is the one that says what is in the file
        why = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(e).__name__)
        why = why.split(" was not an allowed global")[0]  # torch goes on to suggest allowlisting it: not here
        raise ValueError(
            f"{path} is not an autointerp harvest checkpoint: it holds objects other than tensors and plain "
            f"values ({why.rstrip('.')}). It was not loaded, because unpickling it could run code; remove it, "
            "or rerun the harvest that writes it with --overwrite"
        ) from None
    except (EOFError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable harvest checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not an autointerp harvest checkpoint: expected format {CHECKPOINT_FORMAT}, "
                         f"found {found!r}")
    return state


def settings_difference(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{option: (saved, now)}`` for every setting that differs."""
    return {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v} | {
        k: (v, None) for k, v in saved.items() if k not in now
    }


__all__ = [
    "CHECKPOINT_FORMAT",
    "accumulator_from_spec",
    "accumulator_spec",
    "check_plain",
    "read_checkpoint",
    "settings_difference",
    "write_checkpoint",
]
