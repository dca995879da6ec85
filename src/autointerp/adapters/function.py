"""A ``package.module:function`` target: any Python function that returns a `HarvestFn`.

The function is called with no arguments, or as ``function(layers=[...])`` when
``--layers`` is given (it decides what the names mean). It returns a `HarvestFn`,
or a ``(harvest_fn, tokenizer)`` pair; a tokenizer may also hang on the
function's result as ``.tokenizer``.
"""

from __future__ import annotations

import importlib
import re

from autointerp.adapters.targets import Target, TargetRequest
from autointerp.data import Tokenizer

_MODULE_FN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_function_target(spec: str) -> bool:
    # `wandb:entity/...` has the same shape when the path is one word; it is an SPD run, not a function
    return bool(_MODULE_FN.match(spec)) and not spec.startswith("wandb:")


def load_function_target(request: TargetRequest) -> Target:
    mod_name, fn_name = request.spec.split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name, None)
    if fn is None:
        raise ValueError(f"module {mod_name!r} has no function {fn_name!r}")
    made = fn(layers=list(request.layers)) if request.layers else fn()
    harvest_fn, tok = made if isinstance(made, tuple) else (made, getattr(made, "tokenizer", None))
    if not callable(harvest_fn):
        raise ValueError(f"{request.spec} returned {type(harvest_fn).__name__}, expected a HarvestFn "
                         "(tokens [B, S] -> HarvestBatch)")
    if tok is not None and not isinstance(tok, Tokenizer):
        tok = Tokenizer(tok)
    return Target(harvest_fn, tokenizer=tok)
