"""``autointerp merge RUN``: combine the states of ``--world_size`` workers into the run's harvest."""

from __future__ import annotations

import argparse

from autointerp.cli.arguments import out_root, whole


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="combine worker states (harvest --rank/--world_size) into one harvest",
        description="Read <out>/<run>/workers/rank<R>-of-<N>.pt one at a time, merge them (the result equals "
        "one process that saw all batches) and write <out>/<run>/harvest/.",
    )
    p.add_argument("run", help="run id (folder name under --out) or the run folder's path")
    p.add_argument("--out", type=out_root, default=None, help="root of run folders (default: $AUTOINTERP_OUT or .data/autointerp)")
    p.add_argument("--world_size", type=whole(1), default=None,
                   help="which set of worker files to merge when the folder holds several (default: the only one)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from autointerp.run_harvest import merge_workers

    merge_workers(args.run, out=args.out, world_size=args.world_size)
    return 0
