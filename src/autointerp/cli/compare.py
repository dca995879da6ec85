"""``autointerp compare RUN_ID --sets A,B``: two label sets of a run, scorer by scorer, with paired bootstrap CIs."""

from __future__ import annotations

import argparse
import json

from autointerp.cli.arguments import label_set, out_root, run_id, whole


def _sets(text: str) -> tuple[str, str]:
    names = [s.strip() for s in text.split(",")]
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"expected two label sets as A,B (e.g. default,sonnet), got {text!r}")
    a, b = (label_set(n) for n in names)
    if a == b:
        raise argparse.ArgumentTypeError(f"expected two different label sets, got {a!r} twice")
    return a, b


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated scorer names (e.g. detection,simulation), got {text!r}")
    return names


def register(sub: argparse._SubParsersAction) -> None:
    from autointerp.compare import DEFAULT_RESAMPLES, DEFAULT_SEED, DEFAULT_TOP

    p = sub.add_parser(
        "compare",
        help="compare two label sets of a run: paired score differences with bootstrap CIs",
        description="Over the components both label sets labelled and scored, per scorer: the mean paired difference "
        "A - B of the score with a 95%% CI by paired bootstrap, wins/ties/losses, and the components where the sets "
        "disagree most. Score each set first (`autointerp score RUN_ID --label_set NAME`). See docs/scoring.md.",
    )
    p.add_argument("run_id", type=run_id, help="the run (a folder name under --out)")
    p.add_argument("--sets", type=_sets, required=True, metavar="A,B",
                   help="the two label sets ('default' is interpretations/results.jsonl)")
    p.add_argument("--scorers", type=_names, default=None, help="comma-separated (default: every scorer both sets were scored with)")
    p.add_argument("--top", type=whole(0), default=DEFAULT_TOP, help=f"components shown per scorer where the sets disagree most (default {DEFAULT_TOP})")
    p.add_argument("--resamples", type=whole(1), default=DEFAULT_RESAMPLES, help=f"bootstrap resamples (default {DEFAULT_RESAMPLES:,})")
    p.add_argument("--seed", type=whole(0), default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON document instead of the table")
    p.add_argument("--out", type=out_root, default=None, help="root folder of runs (default: $AUTOINTERP_OUT or .data/autointerp)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autointerp.compare import compare_label_sets
    from autointerp.paths import RunPaths
    from autointerp.terminal import terminal_text

    a, b = args.sets
    result = compare_label_sets(RunPaths.of(args.run_id, args.out), a, b, scorers=args.scorers,
                                n_resamples=args.resamples, seed=args.seed, top=args.top)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1, allow_nan=False))
    else:
        print(result.table(top=args.top, text=terminal_text))
    return 0
