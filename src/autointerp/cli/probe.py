"""``autointerp probe TARGET``: activation quantiles and firing densities per layer, to choose --threshold."""

from __future__ import annotations

import argparse
import math
import sys

from autointerp.cli.arguments import whole


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a share of tokens in (0, 1), e.g. 0.01 for 1%, got {text!r}")
    return value


def _layers(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="look at a few batches of activations and suggest a firing threshold per layer",
        description="Run the target over a few batches and print, per layer, activation quantiles, the firing "
        "density (share of token x component pairs above the threshold) at candidate thresholds, and a suggested "
        "threshold for --target_density. Pass the printed --threshold to `autointerp harvest`. See "
        "docs/harvest.md, 'Choosing the threshold'.",
    )
    p.add_argument("target", help="as for `autointerp harvest`: demo | hf:NAME | wandb run path | SPD run folder | "
                   "module:function")
    p.add_argument("--layers", type=_layers, default=None, help="comma-separated layer names, as for harvest")
    p.add_argument("--n_batches", type=whole(1), default=4, help="batches to look at (default: 4)")
    p.add_argument("--batch_size", type=whole(1), default=8, help="sequences per batch (default: 8)")
    p.add_argument("--context_length", type=whole(1), default=None, help="tokens per sequence (default: the target's)")
    p.add_argument("--target_density", type=_share, default=0.01,
                   help="the share of token x component pairs that should fire (default: 0.01, 1%%)")
    p.add_argument("--dataset", default=None, help="as for harvest (default: the target's own)")
    p.add_argument("--split", default="train", help="dataset split (default: train)")
    p.add_argument("--text_column", default=None, help="column holding the text, as for harvest")
    p.add_argument("--tokenizer", default=None, help="tokenizer name or tokenizer.json path (default: the model's)")
    p.add_argument("--capture", choices=["output", "input"], default="output",
                   help="capture each layer module's output (default) or its input (hf: targets)")
    p.add_argument("--device", default="auto", help="cuda, cpu, or auto (default)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="cast the model to this dtype (default: as loaded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and the sample (default: 0)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from autointerp.probe import format_probe, probe_layers
    from autointerp.run_harvest import HarvestOptions

    opts = HarvestOptions(target=args.target, layers=args.layers, batch_size=args.batch_size,
                          context_length=args.context_length, dataset=args.dataset, split=args.split,
                          text_column=args.text_column, tokenizer=args.tokenizer, capture=args.capture,
                          device=args.device, dtype=args.dtype, seed=args.seed)
    try:
        layers = probe_layers(opts, n_batches=args.n_batches, target_density=args.target_density)
    except ImportError as e:
        print(f"autointerp probe: error: {e}", file=sys.stderr)
        return 2
    print(format_probe(layers))
    return 0
