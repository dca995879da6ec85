"""Numbers and values as the report's JSON holds them: rounded for reading, always valid JSON.

Numbers are rounded to what a person reads (4 significant digits; 3 for the
activations of examples, which are the bulk of a report), and a NaN or an
infinity from an in-memory harvest becomes null (JSON has no such numbers).

`loads` and `dumps` are the report's JSON codec: ``orjson`` when it is installed
(3x faster to parse a harvest line and 8x faster to write a chunk: at 100,000
components that is most of a report's time), the standard library otherwise; both
give the same values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from autointerp.storage import json_loads


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


try:  # optional: the same JSON, several times faster
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _orjson = None


def loads(data: bytes | str) -> Any:
    """Parse JSON (a harvest line) by `autointerp.storage.json_loads`, the one reader of the run's
    files: orjson, and the standard library for whatever orjson refuses or would read otherwise
    (``NaN``, integers past 64 bits), so every value is the standard library's; what it refuses
    raises a `ValueError` (`json.JSONDecodeError` or `UnicodeDecodeError`)."""
    return json_loads(data if isinstance(data, bytes) else data.encode("utf-8"))


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj``; a NaN or an infinity is null, anything JSON cannot hold
    (numpy values, tuples as keys) is made JSON-safe by `clean_json` first."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError: numpy values, non-string keys, huge ints
            obj = clean_json(obj)
            try:
                return _orjson.dumps(obj)
            except TypeError:
                pass
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(clean_json(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")
