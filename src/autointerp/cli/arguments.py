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


def label_set(text: str) -> str:
    """A label set's name (`autointerp.paths.check_label_set`): argparse names the option."""
    from autointerp.paths import LABEL_SET_RULE, check_label_set

    try:
        return check_label_set(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {LABEL_SET_RULE}, got {text!r}") from None


def add_label_set(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--label_set NAME`` option of a command that reads or writes one label set."""
    from autointerp.paths import DEFAULT_LABEL_SET

    parser.add_argument(
        "--label_set", type=label_set, default=DEFAULT_LABEL_SET, metavar="NAME",
        help=f"the label set to {what} (default: {DEFAULT_LABEL_SET!r}, interpretations/results.jsonl; "
        "a named set lives in interpretations/sets/NAME/ with its own scores in scores/sets/NAME/)",
    )


def threshold(text: str) -> float | dict[str, float]:
    """``--threshold``: one number, or ``layer=value,...`` with an optional ``default=value`` (`autointerp.thresholds`)."""
    from autointerp.thresholds import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--threshold: ").removeprefix("--threshold ")) from None
