"""``autointerp interpret RUN_ID``: label every harvested component of a run with an LLM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from autointerp.cli.arguments import add_label_set, out_root, run_id
from autointerp.interpret_options import DEFAULT_TEMPLATE, InterpretOptions
from autointerp.llm.base import AuthenticationFailed, Backend, redact
from autointerp.paths import RESULTS_FILE, RunPaths
from autointerp.terminal import terminal_text

if TYPE_CHECKING:  # the interpreter and the harvest load when the command runs, not for --help
    from autointerp.harvest import HarvestResult
    from autointerp.interpret import Interpreter
    from autointerp.schemas import InterpretationResult


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "interpret",
        help="label every harvested component with an LLM",
        description=(
            f"Label the components of <out>/<RUN_ID>/harvest into <out>/<RUN_ID>/interpretations/{RESULTS_FILE} "
            "(with --label_set NAME: interpretations/sets/NAME/). "
            "Rerunning resumes: labeled components are skipped, failed ones retried."
        ),
    )
    p.add_argument("run_id", type=run_id, help="the run folder under --out (as printed by `autointerp harvest`)")
    p.add_argument("--out", type=out_root, default=None, help="root of the run folders (default: $AUTOINTERP_OUT or .data/autointerp)")
    add_label_set(p, "write the labels into")
    p.add_argument("--backend", choices=["anthropic", "openai", "offline"], default="anthropic",
                   help="anthropic (needs ANTHROPIC_API_KEY), openai (any OpenAI-compatible server, see --base_url), "
                   "offline (the token-lookup baseline; no network)")
    p.add_argument("--model", default=None, help="model name (default for anthropic: claude-haiku-4-5-20251001)")
    p.add_argument("--base_url", default=None, help="server URL (e.g. http://localhost:8000/v1 for vLLM)")
    p.add_argument("--api_key_env", default=None, help="environment variable holding the key for --backend openai (default OPENAI_API_KEY)")
    p.add_argument("--max_concurrent", type=int, default=50, help="requests in flight at once (default 50)")
    p.add_argument("--max_cost_usd", type=float, default=None, help="stop starting new requests once this much is spent")
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT[,CACHE_READ,CACHE_WRITE]",
                   help="override a model's price in USD per million tokens (repeatable)")
    p.add_argument("--batch", action="store_true", help="use the Message Batches API (half price; minutes to hours)")
    p.add_argument("--poll_interval", type=float, default=30.0, help="seconds between batch status checks")
    p.add_argument("--dry_run", action="store_true", help="write the rendered prompts to files and call nothing")
    p.add_argument("--dry_run_dir", default=None, help="where --dry_run writes (default <run>/interpretations/prompts)")
    p.add_argument("--prompt_template", default=None, help="a .j2 file to use instead of the default prompt")
    p.add_argument("--templates_dir", action="append", default=[], help="folder searched first for templates (e.g. sections/<name>.j2)")
    p.add_argument("--section", action="append", default=[], metavar="NAME=PATH",
                   help="section template for an accumulator output (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="label at most this many (pending) components")
    p.add_argument("--component", action="append", default=None, help="label only this component key (repeatable)")
    p.add_argument("--n_explain", type=int, default=10, help="random examples shown (the rest are held out)")
    p.add_argument("--n_top", type=int, default=5, help="max-activating examples shown")
    p.add_argument("--n_validate", type=int, default=8,
                   help="held-out examples (and as many pool windows) reserved for validation: never shown, never "
                   "scored on by `autointerp score` (default 8; 0: none)")
    p.add_argument("--refine", type=int, default=0, metavar="R",
                   help="revise each label up to R times: score it on the validation set, show the labeller the windows "
                   "it got wrong, keep the label with the best validation score (default 0)")
    p.add_argument("--candidates", type=int, default=1, metavar="K",
                   help="make K first labels and keep the best on the validation set (default 1)")
    p.add_argument("--judge_backend", choices=["anthropic", "openai", "offline"], default=None,
                   help="the judge that scores labels on the validation set with --refine/--candidates "
                   "(default: the labeller's --backend, --model and --base_url)")
    p.add_argument("--judge_model", default=None, help="the judge's model (default: the labeller's)")
    p.add_argument("--judge_base_url", default=None,
                   help="the judge's server URL, e.g. a local vLLM judge beside a Claude labeller "
                   "(default: the labeller's --base_url when the judge is the same backend)")
    p.add_argument("--max_tokens", type=int, default=1024, help="output token limit per answer")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    p.add_argument("--max_retries", type=int, default=6, help="retries of rate limits, overload, 5xx, timeouts")
    p.add_argument("--backoff", type=float, default=1.0, help="initial backoff in seconds (doubles, with jitter)")
    p.add_argument("--neighbours", action="store_true",
                   help="second pass: label every selected component again with the current labels of its strongest "
                   "co-firing partners and weight-space neighbours in the prompt (needs a first pass; its label wins)")
    p.add_argument("--n_neighbours", type=int, default=5, help="with --neighbours: partners and weight-space neighbours shown, each (default 5)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _prices(specs: list[str]) -> dict[str, tuple[float, ...]]:
    out = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        try:
            nums = tuple(float(v) for v in values.split(","))
        except ValueError:
            nums = ()
        if not name or len(nums) not in (2, 4):
            raise ValueError(f"--price {spec!r}: expected MODEL=IN,OUT or MODEL=IN,OUT,CACHE_READ,CACHE_WRITE (USD per million tokens)")
        out[name] = nums
    return out


def _sections(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise ValueError(f"--section {spec!r}: expected NAME=PATH")
        out[name] = path
    return out


def _options(args: argparse.Namespace) -> InterpretOptions:
    """The flags as one `InterpretOptions` (checked before the key or the harvest)."""
    return InterpretOptions(
        keys=args.component,
        limit=args.limit,
        prompt_template=args.prompt_template or DEFAULT_TEMPLATE,
        templates_dir=args.templates_dir,
        section_templates=_sections(args.section),
        n_explain=args.n_explain,
        n_top=args.n_top,
        n_validate=args.n_validate,
        refine=args.refine,
        candidates=args.candidates,
        max_tokens=args.max_tokens,
        batch=args.batch,
        poll_interval_s=args.poll_interval,
        max_concurrent=args.max_concurrent,
        request_timeout_s=args.timeout,
        max_retries=args.max_retries,
        backoff_initial_s=args.backoff,
        max_cost_usd=args.max_cost_usd,
        prices=_prices(args.price),
        progress=not args.no_progress,
        neighbours=args.neighbours,
        n_neighbours=args.n_neighbours,
    )


def _backend(args: argparse.Namespace) -> Backend:
    from autointerp.llm.factory import make_backend

    if args.dry_run:  # renders prompts only: no key needed
        return make_backend("offline")
    return make_backend(args.backend, args.model, base_url=args.base_url, timeout_s=args.timeout,
                        api_key_env=args.api_key_env)


def _judge(args: argparse.Namespace) -> Backend | None:
    """The validation judge of --refine / --candidates: None (the labeller's own backend) unless
    --judge_backend, --judge_model or --judge_base_url asks for another."""
    if args.dry_run or (args.judge_backend is None and args.judge_model is None and args.judge_base_url is None):
        return None
    from autointerp.llm.factory import make_backend

    kind = args.judge_backend or args.backend
    same = kind == args.backend
    return make_backend(kind, args.judge_model or (args.model if same else None), role="judge",
                        base_url=args.judge_base_url or (args.base_url if same else None), timeout_s=args.timeout,
                        api_key_env=args.api_key_env if same else None, announce=lambda _note: None)


def _load_harvest(paths: RunPaths) -> HarvestResult:
    from autointerp.harvest import load_harvest

    if not paths.harvest_config.exists():
        raise FileNotFoundError(
            f"no harvest at {paths.harvest}: run `autointerp harvest ...` first, or pass the right --out / RUN_ID"
        )
    return load_harvest(paths.harvest)


def _tell(interp: Interpreter, results: list[InterpretationResult], paths: RunPaths) -> None:
    """Say what happened (the run wrote summary.json): a few labels on stdout, the rest on stderr."""
    summary = interp.summary
    if summary is not None:
        print(str(summary), file=sys.stderr)
        if interp.n_dead:
            print(f"{interp.n_dead} components never fired and were not sent", file=sys.stderr)
    if interp.refine_stages:
        from autointerp.refine import stage_table

        print("refinement stages:\n" + stage_table(interp.refine_stages), file=sys.stderr)
        print(f"refinement records: {paths.refinement.root}", file=sys.stderr)
    for r in results[:5]:
        print(f"{terminal_text(r.component_key, 80)}: {terminal_text(r.label)} ({terminal_text(r.confidence, 20)})")
    if len(results) > 5:
        print(f"... {len(results)} labels in {paths.interpretation_results}")
    if summary is not None and summary.failed:
        print(f"{summary.failed} components failed (see {paths.interpretation_failures}); "
              "run the same command again to retry them", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from autointerp.interpret import Interpreter

    paths = RunPaths.of(args.run_id, args.out, label_set=args.label_set)
    options = _options(args)
    try:
        # the key is checked first: a missing key stops here, before the harvest is read
        backend = _backend(args)
        if options.refines and not args.dry_run:
            from autointerp.llm.offline import OfflineBackend
            from autointerp.refine import OFFLINE_REFUSED

            if isinstance(backend, OfflineBackend):
                print(f"autointerp interpret: --refine/--candidates: {OFFLINE_REFUSED}", file=sys.stderr)
                return 2
            options = attrs.evolve(options, judge=_judge(args))
        harvest = _load_harvest(paths)
        interp = Interpreter(backend, options)
        if args.dry_run:
            out_dir = Path(args.dry_run_dir) if args.dry_run_dir else paths.prompts
            written = interp.dry_run(harvest, out_dir)
            print(f"wrote {len(written)} prompts to {out_dir} (no requests were sent)")
            return 0
        print(f"labelling {paths.harvest} with {backend!r} -> {paths.interpretation_results}", file=sys.stderr)
        results = interp.run(harvest, paths)
    except AuthenticationFailed as e:
        print(f"autointerp interpret: authentication failed: {redact(str(e))}", file=sys.stderr)
        return 3
    _tell(interp, results, paths)
    return 0
