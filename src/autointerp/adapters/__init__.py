"""Model adapters: the only model-specific code. Each turns tokens ``[B, S]`` into a `HarvestBatch`.

* `HookHarvestFn` (``autointerp.adapters.hooks``): any torch module through forward hooks.
* `SPDHarvestFn` (``autointerp.adapters.spd``): SPD runs, the components' causal importances.
* `DemoModel` (``autointerp.adapters.demo``): the embedded demo model.
* ``autointerp.adapters.targets``: the registry of target forms (``demo``, ``hf:...``,
  ``module:function``, SPD runs), each a predicate and a loader, and the `Target` a loader returns.
  ``hf:`` targets load in ``adapters.hf``, ``module:function`` ones in ``adapters.function``.

Imports are lazy so that ``import autointerp`` never pulls in optional dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DemoModel", "HarvestFn", "HookHarvestFn", "SPDHarvestFn", "Target", "TargetKind", "TargetRequest",
           "load_demo", "load_spd_run", "load_target", "register_target"]

_WHERE = {
    "HarvestFn": "autointerp.adapters.hooks",
    "HookHarvestFn": "autointerp.adapters.hooks",
    "SPDHarvestFn": "autointerp.adapters.spd",
    "load_spd_run": "autointerp.adapters.spd",
    "DemoModel": "autointerp.adapters.demo",
    "load_demo": "autointerp.adapters.demo",
    "Target": "autointerp.adapters.targets",
    "TargetKind": "autointerp.adapters.targets",
    "TargetRequest": "autointerp.adapters.targets",
    "load_target": "autointerp.adapters.targets",
    "register_target": "autointerp.adapters.targets",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'autointerp.adapters' has no attribute {name!r}")
