"""``autointerp demo``: run the pipeline on the embedded model (no network, no GPU, no API key)."""

from __future__ import annotations

import argparse

from autointerp.cli.arguments import out_root, whole


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the pipeline on the embedded demo model (no network, GPU or key needed)",
        description="The whole pipeline on the embedded tiny language model: harvest its MLP neurons over its "
        "bundled held-out text, label them (Claude when ANTHROPIC_API_KEY is set, otherwise the offline "
        "token-lookup baseline), score the labels, write the HTML report, and print where everything is.",
    )
    p.add_argument("--out", type=out_root, default=None, help="root of run folders; results go to <out>/demo (default: .data/autointerp)")
    p.add_argument("--n_batches", type=whole(1), default=None, help="limit the harvest to this many batches (default: all text)")
    p.add_argument("--batch_size", type=whole(1), default=32, help="sequences of 128 tokens per batch (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from autointerp.demo import run_demo

    run_demo(out=args.out, n_batches=args.n_batches, batch_size=args.batch_size, seed=args.seed,
             device=args.device, progress=args.progress)
    return 0
