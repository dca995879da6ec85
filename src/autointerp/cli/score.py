"""``autointerp score RUN_ID``: score a run's labels on held-out data and print the summary.

Writes ``<out>/<run_id>/scores/<scorer>.jsonl`` (append-only, one line per
component per label source; running again resumes) and prints, per scorer, the
mean with a 95% CI for the real labels next to the shuffled-label and
token-lookup baselines.
"""

from __future__ import annotations

import argparse
import logging
import sys

from autointerp.cli.arguments import add_label_set, out_root, run_id
from autointerp.paths import RunPaths

BACKEND_CHOICES = ("auto", "anthropic", "openai", "token-match", "offline")


def _scorer_list(text: str) -> list[str]:
    from autointerp.scoring.registry import scorer_names

    known = scorer_names()
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown scorer(s) {bad or text!r}; choose from {','.join(known)}")
    return names


def _key_list(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError(f"expected comma-separated component keys ('layer:index'), got {text!r}")
    return keys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a run's labels on held-out data (detection, fuzzing, simulation, intruder, output)",
        description="Score each label on examples the explainer never saw, next to two baselines "
        "(labels shuffled between components, and offline token-lookup labels). Writes "
        "<out>/<run_id>/scores/<scorer>.jsonl, append-only and resumable. See docs/scoring.md.",
    )
    p.add_argument("run_id", type=run_id, help="the run to score (a folder name under --out)")
    p.add_argument("--scorers", type=_scorer_list, default=None,
                   help="comma-separated (default: every built-in: detection,fuzzing,simulation,intruder,output)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="auto (default): anthropic when ANTHROPIC_API_KEY is set, else token-match; "
                   "token-match / offline: the token-match simulator, a baseline that needs no network")
    p.add_argument("--model", default=None, help="judge model (default for anthropic: claude-haiku-4-5-20251001)")
    p.add_argument("--base_url", default=None, help="API base URL (a proxy, vLLM, Ollama, OpenRouter)")
    add_label_set(p, "score")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--components", type=_key_list, default=None, metavar="KEY,...",
                       help="score only these components (comma-separated keys, e.g. h.0.mlp:3,h.0.mlp:7)")
    which.add_argument("--layer", action="append", default=None, metavar="LAYER",
                       help="score only the components of this layer (repeatable)")
    p.add_argument("--limit", type=int, default=None,
                   help="score a random subset of N labelled components (of --components / --layer when given; "
                   "reproducible for --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, the trials and the shuffled labels (default: 0)")
    p.add_argument("--no_baselines", dest="baselines", action="store_false",
                   help="score only the real labels (no shuffled / token-lookup controls)")
    p.add_argument("--max_concurrent", type=int, default=20, help="requests in flight (default: 20)")
    p.add_argument("--max_cost_usd", type=float, default=None, help="start no new request once this much is spent")
    p.add_argument("--n_explain", type=int, default=None,
                   help="for labels without a recorded split (results files from before it was recorded): the random "
                   "examples the interpreter showed (default: its default, 10); a recorded split always wins")
    p.add_argument("--n_top", type=int, default=None,
                   help="likewise, the max-activating examples it showed (default: its default, 5)")
    p.add_argument("--out", type=out_root, default=None, help="root folder of runs (default: $AUTOINTERP_OUT or .data/autointerp)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def make_judge(kind: str, model: str | None, base_url: str | None):
    """The judge, through the one backend picker (``token-match`` is the judge role's offline stand-in);
    the CLI prints its own baseline notice, so the picker's is silenced."""
    from autointerp.llm.factory import make_backend

    kind = "offline" if kind == "token-match" else kind
    return make_backend(kind, model, role="judge", base_url=base_url, announce=lambda _note: None)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    paths = RunPaths.of(args.run_id, args.out, label_set=args.label_set)
    if not paths.harvest_config.exists():
        raise FileNotFoundError(f"no harvest in {paths.harvest}: run `autointerp harvest ... --run_id {args.run_id}` first")
    from autointerp.llm.base import AuthenticationFailed, redact

    try:
        return _run(args, paths)
    except AuthenticationFailed as e:
        print(f"autointerp score: authentication failed: {redact(str(e))}", file=sys.stderr)
        return 3


def _run(args: argparse.Namespace, paths: RunPaths) -> int:
    from autointerp.records import read_interpretations
    from autointerp.scoring.options import ScoreOptions, ScoringConfig
    from autointerp.scoring.registry import SCORERS
    from autointerp.scoring.run import score_run

    # the options are checked before the judge is made or a file is read
    config = ScoringConfig()
    if args.n_explain is not None:
        config.n_explain = args.n_explain
    if args.n_top is not None:
        config.n_top = args.n_top
    from autointerp.records import read_harvest_config
    from autointerp.scoring.plan import check_subset

    check_subset(read_harvest_config(paths.harvest_config).layers, args.components, args.layer,
                 keys_option="--components", layers_option="--layer")
    options = ScoreOptions(scorers=args.scorers or SCORERS, baselines=args.baselines, keys=args.components, layers=args.layer,
                           limit=args.limit, seed=args.seed,
                           config=config, max_concurrent=args.max_concurrent, max_cost_usd=args.max_cost_usd,
                           progress=not args.quiet)
    backend = make_judge(args.backend, args.model, args.base_url)
    if getattr(backend, "is_baseline", False):
        print(
            "judge: the token-match simulator -- a BASELINE that predicts a firing wherever a token named in "
            "the label occurs, not an LLM judge (set ANTHROPIC_API_KEY or pass --backend anthropic for Claude)",
            file=sys.stderr,
        )
    n_labels = len(read_interpretations(paths))
    if n_labels == 0:
        print(
            f"autointerp score: no interpretations in {paths.interpretation_results}: run `autointerp interpret {args.run_id}"
            f"{'' if paths.is_default_set else ' --label_set ' + paths.label_set}` first. "
            "Every component is recorded as skipped.",
            file=sys.stderr,
        )
    report = score_run(paths, options=options, backend=backend)
    if report.run is not None:
        print(str(report.run), file=sys.stderr)
    if report.pending:
        why = report.run.stopped_reason if report.run is not None and report.run.stopped_reason else "trials failed"
        print(
            f"{len(report.pending)} (scorer, component, label source) results are pending: {why} "
            f"(failure reasons in {paths.score_trial_failures}); run the same command again to finish them",
            file=sys.stderr,
        )
    print(report.table())
    print(f"scores: {paths.scores}", file=sys.stderr)
    if n_labels == 0:
        return 1
    if report.run is not None and report.run.failed and not report.run.completed:
        # a table of nothing but pending rows is not a result: scripts must not read it as one
        print(f"autointerp score: no trial succeeded ({report.run.failed} failed; reasons in "
              f"{paths.score_trial_failures}); fix the cause and run the same command again", file=sys.stderr)
        return 1
    return 0
