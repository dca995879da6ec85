"""Numbers and values as the report's JSON holds them: rounded for reading, always valid JSON.

Numbers are rounded to what a person reads (4 significant digits; 3 for the
activations of examples, which are the bulk of a report), and a NaN or an
infinity from an in-memory harvest becomes null (JSON has no such numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def num(x: Any, digits: int = 4) -> float | int | None:
    """A number rounded for display; None for a missing or non-finite one."""
    if x is None:
        return None
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0
    return float(f"{x:.{digits}g}")


def f4(x: Any) -> Any:
    """4 significant digits, fast: the token and partner tables hold most numbers of a report.
    (0 and None pass through; a NaN from an in-memory harvest is caught by `safe_json`.)"""
    return float("%.4g" % x) if x else x


def clean_json(value: Any) -> Any:
    """Make a value JSON-safe: non-finite floats become null, tuples lists, arrays lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return clean_json(tolist())
    return str(value)
