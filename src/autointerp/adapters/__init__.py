"""Model adapters: the only model-specific code. Each turns tokens ``[B, S]`` into a `HarvestBatch`.

* `HookHarvestFn` (``autointerp.adapters.hooks``): any torch module through forward hooks.
* `SPDHarvestFn` (``autointerp.adapters.spd``): SPD runs, the components' causal importances.
* `DemoModel` (``autointerp.adapters.demo``): the embedded demo model.

Imports are lazy so that ``import autointerp`` never pulls in optional dependencies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DemoModel", "HarvestFn", "HookHarvestFn", "SPDHarvestFn", "load_demo", "load_spd_run"]

_WHERE = {
    "HarvestFn": "autointerp.adapters.hooks",
    "HookHarvestFn": "autointerp.adapters.hooks",
    "SPDHarvestFn": "autointerp.adapters.spd",
    "load_spd_run": "autointerp.adapters.spd",
    "DemoModel": "autointerp.adapters.demo",
    "load_demo": "autointerp.adapters.demo",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'autointerp.adapters' has no attribute {name!r}")
