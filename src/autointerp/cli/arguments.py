"""argparse ``type=`` checks for the options no options object validates (report, export, merge, demo, --out).

Options that map one to one onto `HarvestOptions`, `InterpretOptions` or
`ScoreOptions` are checked there, so the command line and the Python API refuse
the same values with the same words; the ones here have no such object behind
them. A refused value stops argparse before any work, and its message names the
option (argparse prefixes ``argument --workers:``), what was expected and what
arrived::

    autointerp report: error: argument --workers: expected a whole number >= 1, got '0'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def out_root(text: str) -> str:
    """The root of the run folders: a non-empty path (an empty one would put runs in the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"expected a folder (the root of the run folders), got {text!r}; omit --out for the default "
            "($AUTOINTERP_OUT or .data/autointerp)"
        )
    return text


def run_id(text: str) -> str:
    """A run folder's name under --out: non-empty, no path separator, not ``.`` or ``..``."""
    if not text.strip() or "/" in text or "\\" in text or text.strip() in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"expected a run folder name under --out (as printed by `autointerp harvest`), got {text!r}"
        )
    return text
