"""The ``autointerp`` command line: probe | harvest | merge | interpret | score | compare | report | export | demo.

Each subcommand lives in its own module under ``autointerp.cli`` and exposes
``register(subparsers)``; this module only wires them together. The modules
import little at the top (the work is imported when a command runs), so
``autointerp --help`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import sys

from autointerp.cli import compare, demo, export, harvest, interpret, merge, probe, report, score

#: subcommand modules, in the order --help lists them
COMMANDS = (probe, harvest, merge, interpret, score, compare, report, export, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autointerp",
        description="Explain the components of neural networks: harvest evidence, label with an LLM, score, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, MemoryError, KeyError) as e:
        if getattr(args, "debug", False) or os.environ.get("AUTOINTERP_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"autointerp {args.command}: error: {msg}", file=sys.stderr)
        return 2
