"""``autointerp report RUN_ID``: write the static HTML report of a run and print its path."""

from __future__ import annotations

import argparse
import os
import sys
import time

from autointerp.cli.arguments import add_label_set, out_root, run_id, whole
from autointerp.paths import RunPaths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the offline HTML report of a run",
        description="Write <out>/<run_id>/report/index.html: every component with its label, scores, examples and "
        "token statistics. It opens from disk and loads nothing from the network.",
    )
    p.add_argument("run_id", type=run_id, help="the run to show (a folder name under --out)")
    p.add_argument("--out", type=out_root, default=None, help="root folder of runs (default: $AUTOINTERP_OUT or .data/autointerp)")
    add_label_set(p, "show")
    p.add_argument(
        "--token-style",
        default="auto",
        choices=["auto", "gpt2", "sentencepiece", "plain"],
        help="how token strings are spelled (default: guessed from the tokens)",
    )
    p.add_argument("--title", default=None, help="page title (default: the run id)")
    p.add_argument(
        "--workers",
        type=whole(1),
        default=None,
        help="processes that render the evidence (default: up to 8 for runs of 5,000+ components, else 1)",
    )
    p.add_argument("--compare", type=_set_list, default=None, metavar="NAME,...",
                   help="label sets to compare this one with, each on a page of its own (default: every other label set "
                   "of the run that has scores; 'none': no comparison)")
    p.set_defaults(func=run)


def _set_list(text: str) -> list[str]:
    from autointerp.cli.arguments import label_set

    if text.strip() == "none":
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated label set names (or 'none'), got {text!r}")
    return [label_set(n) for n in names]


#: runs this large are rendered by several processes unless --workers says otherwise
PARALLEL_FROM_COMPONENTS = 5000


def default_workers(paths: RunPaths) -> int:
    """Up to 8 processes for a run of `PARALLEL_FROM_COMPONENTS` or more components, else 1."""
    if not paths.harvest_config.exists():
        return 1  # write_report says what is missing
    from autointerp.records import read_harvest_config

    n = read_harvest_config(paths.harvest_config).n_components  # a damaged config.json is a clear error here
    return max(1, min(8, os.cpu_count() or 1)) if n >= PARALLEL_FROM_COMPONENTS else 1


def run(args: argparse.Namespace) -> int:
    from autointerp.report.writer import write_report

    paths = RunPaths.of(args.run_id, args.out, label_set=args.label_set)
    workers = args.workers if args.workers is not None else default_workers(paths)
    t0 = time.perf_counter()
    index = write_report(paths, token_style=args.token_style, title=args.title, workers=workers, compare=args.compare)
    print(f"wrote the report in {time.perf_counter() - t0:.1f}s; open this file in a browser:", file=sys.stderr)
    print(index.resolve())
    return 0
