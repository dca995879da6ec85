"""``autointerp export RUN_ID --format jsonl|neuronpedia``: labels, scores and top examples for other apps."""

from __future__ import annotations

import argparse

from autointerp.cli.arguments import add_label_set, out_root, run_id, whole
from autointerp.paths import RunPaths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export labels, scores and top examples as JSON (see docs/export.md)",
        description="Write <out>/<run_id>/export/components.jsonl (one record per component) or "
        "export/neuronpedia.json (Neuronpedia-shaped features). The layouts are described in docs/export.md.",
    )
    p.add_argument("run_id", type=run_id, help="the run to export (a folder name under --out)")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "neuronpedia"], help="output layout (default: jsonl)")
    p.add_argument("--out", type=out_root, default=None, help="root folder of runs (default: $AUTOINTERP_OUT or .data/autointerp)")
    add_label_set(p, "export")
    p.add_argument("--output", default=None, help="file to write (default: <run>/export/components.jsonl or neuronpedia.json)")
    p.add_argument("--top-examples", type=whole(0), default=10, help="examples per component (default: 10)")
    p.add_argument("--model-id", default=None, help="neuronpedia modelId (default: the harvest's model name)")
    p.add_argument(
        "--token-style",
        default="auto",
        choices=["auto", "gpt2", "sentencepiece", "plain"],
        help="how token strings are spelled (default: guessed from the tokens)",
    )
    p.add_argument(
        "--workers",
        type=whole(1),
        default=None,
        help="processes that make the records (default: as autointerp report: up to 8 for runs of 5,000+ components)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autointerp.cli.report import default_workers
    from autointerp.report.export import export_run

    paths = RunPaths.of(args.run_id, args.out, label_set=args.label_set)
    path = export_run(
        paths,
        args.format,
        args.output,
        top_examples=args.top_examples,
        model_id=args.model_id,
        token_style=args.token_style,
        workers=args.workers or default_workers(paths),
    )
    print(path.resolve())
    return 0
