"""A ``package.module:function`` or ``path/to/file.py:function`` target: any function returning a `HarvestFn`.

The function is called with no arguments, or as ``function(layers=[...])`` when
``--layers`` is given (it decides what the names mean). It returns a `HarvestFn`,
or a ``(harvest_fn, tokenizer)`` pair; a tokenizer may also hang on the
function's result as ``.tokenizer``.

A module name resolves as ``python -m`` resolves it: the current directory is
put on ``sys.path`` first, so ``my_targets:make`` finds ``./my_targets.py``
without installing anything. A file path is imported as a script is run: its
folder goes on ``sys.path`` so that it can import its neighbours.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from autointerp.adapters.targets import Target, TargetRequest
from autointerp.data import Tokenizer

_MODULE_FN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FILE_FN = re.compile(r"^(?P<file>.+\.py):(?P<fn>[A-Za-z_]\w*)$")


def is_function_target(spec: str) -> bool:
    # `wandb:entity/...` has the same shape when the path is one word; it is an SPD run, not a function
    return (bool(_MODULE_FN.match(spec)) and not spec.startswith("wandb:")) or bool(_FILE_FN.match(spec))


def _on_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def import_module_of(spec: str) -> tuple[ModuleType, str]:
    """``(module, function name)`` of a ``module:function`` or ``file.py:function`` target."""
    m = _FILE_FN.match(spec)
    if m:
        return _import_file(Path(m["file"]), spec), m["fn"]
    mod_name, fn_name = spec.split(":")
    cwd = os.getcwd()
    _on_path(cwd)  # as `python -m` does
    try:
        return importlib.import_module(mod_name), fn_name
    except ModuleNotFoundError as e:
        if e.name is None or not (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise  # the module exists, but something it imports is missing: that error says which
        raise ImportError(
            f"cannot import module {mod_name!r} of the target {spec!r}: no {e.name!r} in the current directory "
            f"({cwd}) or on sys.path. Run from the folder that holds {mod_name.replace('.', '/')}.py, install its "
            f"package, or give the file instead: path/to/file.py:{fn_name}"
        ) from None


def _import_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ImportError(f"the target {spec!r} names the file {path}, but there is no such file "
                          f"(looked in {Path.cwd()}); give a path to a .py file, relative to the current directory or absolute")
    path = path.resolve()
    # a stable name per file, so that two files named targets.py do not replace each other
    stem = re.sub(r"\W", "_", path.stem)
    name = f"autointerp_target_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {path} (target {spec!r}) as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    _on_path(str(path.parent))  # as `python path/to/file.py` does: its neighbours import
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_function_target(request: TargetRequest) -> Target:
    module, fn_name = import_module_of(request.spec)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        have = sorted(n for n, v in vars(module).items()
                      if inspect.isfunction(v) and not n.startswith("_") and v.__module__ == module.__name__)
        raise ValueError(f"{module.__file__ or module.__name__} has no function {fn_name!r} (target {request.spec!r}); "
                         f"its functions are: {', '.join(have) or '(none)'}")
    made = fn(layers=list(request.layers)) if request.layers else fn()
    harvest_fn, tok = made if isinstance(made, tuple) else (made, getattr(made, "tokenizer", None))
    if not callable(harvest_fn):
        raise ValueError(f"{request.spec} returned {type(harvest_fn).__name__}, expected a HarvestFn "
                         "(tokens [B, S] -> HarvestBatch)")
    if tok is not None and not isinstance(tok, Tokenizer):
        tok = Tokenizer(tok)
    return Target(harvest_fn, tokenizer=tok)
