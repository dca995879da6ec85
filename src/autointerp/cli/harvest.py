"""``autointerp harvest TARGET``: one pass over the data, evidence for every component."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING

from autointerp.cli.arguments import out_root
from autointerp.cli.arguments import threshold as threshold_arg
from autointerp.terminal import terminal_text

if TYPE_CHECKING:  # the harvest (torch) loads when the command runs, not for --help
    from autointerp.run_harvest import HarvestOptions

EPILOG = textwrap.dedent(
    """\
    targets:
      demo                          the embedded demo model (no network, no GPU)
      hf:NAME_OR_PATH --layers L    a Hugging Face causal LM; L = dotted module paths, comma separated
      entity/project/run_id         an SPD run on wandb (also wandb:..., or the run's URL); needs `spd`
      path/to/run_folder            a local SPD run (final_config.yaml + model_<step>.pth)
      package.module:function       a function returning a HarvestFn (tokens [B,S] -> HarvestBatch);
                                    called as function(layers=[...]) when --layers is given

    examples:
      autointerp harvest demo --n_batches 4
      autointerp harvest hf:gpt2 --layers transformer.h.0.mlp.act,transformer.h.1.mlp.act \\
          --dataset Skylion007/openwebtext --n_batches 200
      autointerp harvest goodfire/spd/abc123 --n_batches 1000 --batch_size 256 --context_length 512
      # a job array of 8 workers, then one merge:
      autointerp harvest goodfire/spd/abc123 --n_batches 8000 --rank $I --world_size 8
      autointerp merge goodfire-spd-abc123
      # one harvest over 8 GPUs of a node, merged in memory, saved by rank 0 (no merge step):
      torchrun --nproc_per_node 8 -m autointerp harvest goodfire/spd/abc123 --n_batches 8000

    output: <out>/<run_id>/harvest/{config.json,components.jsonl}; see docs/harvest.md
    """
)


def _layers(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "harvest",
        help="harvest evidence for every component of a model in one pass",
        description="Run the model over a dataset once and collect, for every component: firing counts, "
        "activation examples (uniform sample and max-activating), co-firing components, input tokens and "
        "predicted output tokens. Running the same command again finds the same run folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="what to harvest: demo | hf:NAME | wandb run path | SPD run folder | module:function")
    g = p.add_argument_group("model")
    g.add_argument("--layers", type=_layers, default=None,
                   help="comma-separated layer names: module paths (HF), hook names (TransformerLens) or a subset "
                   "of an SPD run's decomposed modules; required for hf: targets; passed as layers=[...] to a "
                   "module:function target")
    g.add_argument("--capture", choices=["output", "input"], default="output",
                   help="capture each layer module's output (default) or its input (hf: targets)")
    g.add_argument("--device", default="auto", help="cuda, cuda:1, cpu, or auto (cuda if available; default)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="cast the model to this dtype (default: as loaded); probabilities are always float32")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="a Hugging Face dataset (NAME or NAME:CONFIG, streamed), a .npy or .bin token file, "
                   ".txt file(s)/folder/glob, a local .json/.jsonl/.parquet/.csv file, or `demo`. "
                   "Default: the target's own (the demo text; an SPD run's training dataset)")
    g.add_argument("--split", default="train", help="dataset split (default: train)")
    g.add_argument("--text_column", default=None,
                   help="column holding the text (default: input_ids if present, else text; SPD: the run's column)")
    g.add_argument("--tokenizer", default=None,
                   help="tokenizer name or tokenizer.json path (default: the model's own)")
    g.add_argument("--token_dtype", default="uint16", help="dtype of raw .bin token files (default: uint16)")
    g.add_argument("--shuffle_buffer", type=int, default=0,
                   help="shuffle a streamed dataset's documents with this buffer size (default 0: dataset order)")
    g.add_argument("--no_shuffle", dest="shuffle", action="store_false",
                   help="read token files in file order instead of a seeded random order of sequences")
    g.add_argument("--dataset_description", default="",
                   help="words describing the data, for the interpreter's prompt")
    g.add_argument("--n_batches", type=int, default=None,
                   help="number of batches in total (over all workers); default: the whole dataset")
    g.add_argument("--batch_size", type=int, default=32, help="sequences per batch (default: 32)")
    g.add_argument("--context_length", type=int, default=None,
                   help="tokens per sequence (default: the target's own: demo 128, SPD the run's max_seq_len, "
                   "hf min(512, model's))")
    g = p.add_argument_group("statistics")
    g.add_argument("--threshold", type=threshold_arg, default=None, metavar="VALUE|LAYER=VALUE,...",
                   help="a component fires where its activation is > this: one value for every layer, or one per "
                   "layer as layer=value,... (default=value for the layers not named; `autointerp probe` prints "
                   "one to paste). Default: demo 1.0, SPD 1e-6 as spd's own harvest, others 0")
    g.add_argument("--examples_per_component", type=int, default=40,
                   help="uniformly sampled activation examples kept per component (default: 40; part is held out "
                   "for scoring)")
    g.add_argument("--top_examples_per_component", type=int, default=20,
                   help="max-activating examples kept per component (default: 20)")
    g.add_argument("--context_tokens_per_side", type=int, default=10,
                   help="tokens kept on each side of a firing in an example (default: 10)")
    g.add_argument("--no_correlations", dest="correlations", action="store_false",
                   help="skip the component co-firing table (N x N counts)")
    g.add_argument("--no_input_tokens", dest="input_tokens", action="store_false",
                   help="skip input-token statistics (N x V counts)")
    g.add_argument("--no_output_tokens", dest="output_tokens", action="store_false",
                   help="skip output-token statistics (N x V probability mass)")
    g.add_argument("--output_probs", choices=["auto", "on", "off"], default="auto",
                   help="next-token probabilities for the output-token statistics: auto (default: when the "
                   "checkpoint has a trained next-token head; an encoder or a checkpoint without its head gets "
                   "the base model, no output statistics and a notice), on (an error without such a head), off")
    g.add_argument("--no_output_logits", dest="output_logits", action="store_false",
                   help="skip the weight-based logit lens (tokens each component's output direction promotes "
                   "and suppresses; one product per layer after the pass, no data)")
    g.add_argument("--output_logits_k", type=int, default=10, help="tokens kept each way by the logit lens (default 10)")
    g.add_argument("--no_window_pool", dest="window_pool", action="store_false",
                   help="skip the pool of random context windows that scoring uses")
    g.add_argument("--no_histogram", dest="histogram", action="store_false",
                   help="skip the per-component activation histogram (N x 82 counts)")
    g.add_argument("--no_quantile_examples", dest="quantile_examples", action="store_false",
                   help="skip the examples drawn from each activation quantile (about 24 KB a component)")
    g.add_argument("--seed", type=int, default=0, help="seed of the data order and of example sampling (default: 0)")
    g = p.add_argument_group("run folder, checkpoints, workers")
    g.add_argument("--out", type=out_root, default=None, help="root of run folders (default: $AUTOINTERP_OUT or .data/autointerp)")
    g.add_argument("--run_id", default=None, help="run folder name (default: derived from the target, stable)")
    g.add_argument("--checkpoint_every", type=int, default=50,
                   help="save the whole harvest state atomically every N batches, and at the end (default: 50; "
                   "0: no checkpoints, so no --resume)")
    g.add_argument("--resume", action="store_true",
                   help="continue from this run's checkpoint; the result equals an uninterrupted run")
    g.add_argument("--overwrite", action="store_true", help="discard an existing checkpoint and start over")
    g.add_argument("--keep_checkpoints", action="store_true",
                   help="keep the final checkpoint after a successful harvest, so that a later --resume with a "
                   "larger --n_batches extends it (default: removed once the result is saved)")
    g.add_argument("--rank", type=int, default=0, help="this worker's index, 0..world_size-1 (default: 0)")
    g.add_argument("--world_size", type=int, default=1,
                   help="number of workers; each takes every world_size-th batch and writes its state for "
                   "`autointerp merge` (default: 1, no merge needed); under torchrun leave --rank and "
                   "--world_size out: the ranks come from its environment and merge in memory")
    g = p.add_argument_group("logging")
    g.add_argument("--wandb_project", default=None,
                   help="log config and summary to this wandb project and upload the harvest as an artifact")
    g.add_argument("--wandb_entity", default=None, help="wandb entity (team or user) for --wandb_project")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=main)


def options_from_args(args: argparse.Namespace) -> HarvestOptions:
    from autointerp.run_harvest import HarvestOptions

    names = HarvestOptions.__attrs_attrs__  # type: ignore[attr-defined]
    return HarvestOptions(**{a.name: getattr(args, a.name) for a in names if hasattr(args, a.name)})


def main(args: argparse.Namespace) -> int:
    from autointerp.harvest import HarvestResult
    from autointerp.run_harvest import HarvestSummary, run_harvest, summarize

    opts = options_from_args(args)
    summary = HarvestSummary()  # gathered while the harvest is written, so it is not read back
    try:
        result = run_harvest(opts, summary=summary)
    except ImportError as e:  # an optional dependency (spd, transformers, datasets): say how to install it
        print(f"autointerp harvest: error: {e}", file=sys.stderr)
        return 2
    if isinstance(result, HarvestResult):  # a worker (world_size > 1) returns its state file instead
        # a resumed run that was already finished writes nothing: then read it
        text = summary.text() if summary.seen else summarize(result)
        if text:
            # the lines quote dataset tokens, which may hold escapes or carriage returns
            print("a few components:\n" + "\n".join("  " + terminal_text(line, 300) for line in text.splitlines()))
    return 0
