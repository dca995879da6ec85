"""Run a harvest end to end: resolve the target, open the data, loop, checkpoint, save.

This is what ``autointerp harvest`` and ``autointerp merge`` call, and what a
notebook calls to do the same thing::

    from autointerp.run_harvest import HarvestOptions, run_harvest
    result = run_harvest(HarvestOptions(target="demo", n_batches=4))
    result["blocks.0.mlp.act:7"]

Files (see `autointerp.paths.RunPaths`)::

    <out>/<run_id>/harvest/{config.json,components.jsonl}       the result
    <out>/<run_id>/checkpoints/harvest-rank<R>-of-<N>.pt         loop state, rewritten atomically
    <out>/<run_id>/workers/rank<R>-of-<N>.pt                     a worker's final state (world_size > 1)
    <out>/<run_id>/.lock                                         held while a harvest or merge runs (`harvest_lock`)

This module only wires the pieces: `prepare_harvest` resolves the target and
opens the data (every check before long work), `ModelBatches` runs the model over
this worker's token batches, and `HarvestLoop.consume` owns the rest: progress,
timings, periodic checkpoints, resume and skipping the batches a checkpoint
already counted. Checkpoints and worker files share one format
(`autointerp.harvest_checkpoint`), holding the loop state plus the settings that
must match to resume it. Because sampling keys hash each firing's global sequence
id, a resumed run ends with the same counts and the same examples as an
uninterrupted one.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from attrs import asdict, define, evolve, field

from autointerp.accumulators import (
    Accumulator,
    ActivationHistogramAcc,
    CorrelationAcc,
    InputTokenAcc,
    OutputProbAcc,
    QuantileExampleAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TopActivationAcc,
)
from autointerp import distributed
from autointerp.adapters import targets
from autointerp.adapters.targets import Target, TargetRequest, resolve_device, resolve_dtype
from autointerp.batch import HarvestBatch
from autointerp.data import (
    TokenSource,
    Tokenizer,
    check_vocab,
    n_total_batches,
    open_dataset,
    rank_batch_count,
    token_batches,
)
from autointerp.harvest import HarvestLoop, HarvestResult, HarvestTimings, device_sync, read_shared
from autointerp.harvest_checkpoint import read_checkpoint
from autointerp.logit_lens import harvest_fn_logit_lens
from autointerp.paths import RunPaths, run_id_for
from autointerp.schemas import ComponentData, LogitLens
from autointerp.storage import (
    CorruptRunFile,
    RunLock,
    atomic_write_with,
    from_dict,
    iter_jsonl,
    recover_dir,
    replace_dir_atomically,
    structure_line,
    to_dict,
)
from autointerp.thresholds import check_threshold

# --------------------------------------------------------------------------- options


@define
class HarvestOptions:
    """Everything a harvest run needs; the command-line options map one to one."""

    target: str
    layers: list[str] | None = None
    dataset: str | None = None
    n_batches: int | None = None
    batch_size: int = 32
    context_length: int | None = None
    #: one value, or ``{layer: value}`` with an optional ``"default"`` entry (`autointerp.thresholds`);
    #: None: the target's default (demo 1.0, SPD 1e-6, others 0)
    threshold: float | dict[str, float] | None = None
    examples_per_component: int = 40
    top_examples_per_component: int = 20
    context_tokens_per_side: int = 10
    seed: int = 0
    device: str = "auto"
    dtype: str | None = None
    out: str | None = None
    run_id: str | None = None
    checkpoint_every: int | None = 50
    #: keep the final checkpoint after a successful harvest (for a later ``--resume --n_batches <more>``)
    keep_checkpoints: bool = False
    resume: bool = False
    overwrite: bool = False
    rank: int = 0
    world_size: int = 1
    tokenizer: str | None = None
    split: str = "train"
    text_column: str | None = None
    shuffle_buffer: int = 0
    token_dtype: str = "uint16"
    dataset_description: str = ""
    shuffle: bool = True
    correlations: bool = True
    input_tokens: bool = True
    output_tokens: bool = True
    window_pool: bool = True
    #: a log-binned activation histogram per component (accumulators/histogram.py)
    histogram: bool = True
    #: examples from each activation quantile (accumulators/quantile_examples.py; ~3x the reservoir's memory)
    quantile_examples: bool = True
    #: the logit lens of every component with an output direction, from weights after the pass
    output_logits: bool = True
    output_logits_k: int = 10
    capture: str = "output"
    #: next-token probabilities and the output-token statistics: ``auto`` (when the model has a
    #: trained next-token head), ``on`` (required: an error without one) or ``off``
    output_probs: str = "auto"
    wandb_project: str | None = None
    wandb_entity: str | None = None
    progress: bool = True
    #: extra accumulators appended to the default set (not recorded by the CLI)
    extra_accumulators: list[Accumulator] = field(factory=list)

    def paths(self) -> RunPaths:
        return RunPaths.of(self.run_id or run_id_for(self.target), self.out)

    def fingerprint(self) -> dict[str, Any]:
        """Settings a checkpoint must share with the run that resumes it."""
        keys = ("target", "layers", "dataset", "batch_size", "context_length", "threshold", "seed", "rank",
                "world_size", "split", "text_column", "shuffle_buffer", "token_dtype", "shuffle", "capture")
        d = asdict(self, filter=lambda a, v: a.name in keys)
        return json.loads(json.dumps(d))


# --------------------------------------------------------------------------- targets

#: tokens per sequence when neither --context_length nor the target gives one
DEFAULT_CONTEXT_LENGTH = 128


def target_request(opts: HarvestOptions) -> TargetRequest:
    """What a target loader may read of the options (see `autointerp.adapters.targets`)."""
    return TargetRequest(opts.target, layers=opts.layers, device=resolve_device(opts.device),
                         dtype=resolve_dtype(opts.dtype), capture=opts.capture, tokenizer=opts.tokenizer,
                         output_probs=opts.output_probs)


def load_target(opts: HarvestOptions) -> Target:
    """Turn ``opts.target`` into a `Target` (loads the model) with the kind of target that recognises it."""
    return targets.load_target(target_request(opts))


def with_target_defaults(opts: HarvestOptions, target: Target) -> HarvestOptions:
    """A copy of ``opts``: the target's suggestions where the caller gave none, then the last fallbacks."""

    def unset(name: str, value: Any) -> bool:
        return value is None or (name != "threshold" and not value)  # a threshold of 0.0 is a choice

    fill = {k: v for k, v in target.option_defaults().items() if unset(k, getattr(opts, k))}
    opts = evolve(opts, **fill)
    return evolve(opts, context_length=opts.context_length or DEFAULT_CONTEXT_LENGTH,
                  threshold=0.0 if opts.threshold is None else check_threshold(opts.threshold, "--threshold"))


# --------------------------------------------------------------------------- accumulators


def default_accumulators(opts: HarvestOptions, has_output_probs: bool = True) -> list[Accumulator]:
    """The default statistic set: reservoir + top examples, correlations, input/output tokens, window pool,
    activation histogram, quantile examples."""
    c = opts.context_tokens_per_side
    accs: list[Accumulator] = [
        ReservoirAcc(k=opts.examples_per_component, context_tokens=c),
        TopActivationAcc(k=opts.top_examples_per_component, context_tokens=c),
    ]
    if opts.correlations:
        accs.append(CorrelationAcc())
    if opts.input_tokens:
        accs.append(InputTokenAcc())
    if opts.output_tokens and has_output_probs:
        accs.append(OutputProbAcc())
    if opts.window_pool:
        accs.append(RandomWindowAcc())
    if opts.histogram:
        accs.append(ActivationHistogramAcc())
    if opts.quantile_examples:
        accs.append(QuantileExampleAcc(context_tokens=c))
    accs.extend(opts.extra_accumulators)
    return accs


# --------------------------------------------------------------------------- the run


@define
class PreparedHarvest:
    """A harvest that is ready to loop: target loaded, data opened, every check done."""

    opts: HarvestOptions
    target: Target
    source: TokenSource
    loop: HarvestLoop
    paths: RunPaths
    total_batches: int | None
    rank_batches: int | None
    context_length: int
    threshold: float | dict[str, float]
    device: torch.device

    @property
    def settings(self) -> dict[str, Any]:
        """What a checkpoint must share with the run that resumes it (``opts`` has the defaults resolved)."""
        return self.opts.fingerprint()


def open_source(opts: HarvestOptions, target: Target) -> TokenSource:
    """The dataset of ``opts`` (defaults resolved by `with_target_defaults`), tokenized for ``target``."""
    if not opts.dataset:
        raise ValueError(f"no --dataset given and the target {opts.target!r} has no default dataset")
    tok = target.tokenizer
    if opts.tokenizer and (tok is None or not opts.target.startswith("hf:")):
        tok = Tokenizer.from_file(opts.tokenizer) if Path(opts.tokenizer).suffix == ".json" else Tokenizer.from_pretrained(opts.tokenizer)
    return open_dataset(opts.dataset, context_length=opts.context_length, tokenizer=tok, token_dtype=opts.token_dtype,
                        split=opts.split, text_column=opts.text_column, shuffle_buffer=opts.shuffle_buffer,
                        description=opts.dataset_description)


def _check_values(opts: HarvestOptions) -> None:
    """Values that would be silently changed, or would fail only after the whole pass."""

    def bad(name: str, expected: str, value: Any) -> ValueError:
        return ValueError(f"--{name} must be {expected}, got {value!r}")

    if opts.threshold is not None:
        check_threshold(opts.threshold, "--threshold")
    for name, minimum, optional in (("context_length", 1, True), ("checkpoint_every", 0, True),
                                    ("examples_per_component", 0, False), ("top_examples_per_component", 0, False),
                                    ("context_tokens_per_side", 0, False), ("shuffle_buffer", 0, False)):
        v = getattr(opts, name)
        if (v is None and not optional) or (v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum)):
            raise bad(name, f"a whole number >= {minimum}" + (" or None" if optional else ""), v)
    if opts.run_id is not None and (not opts.run_id.strip() or "/" in opts.run_id or "\\" in opts.run_id
                                    or opts.run_id.strip() in (".", "..")):
        raise bad("run_id", "a run folder name (no '/'), or None to derive one from the target", opts.run_id)
    if opts.out is not None and not str(opts.out).strip():
        raise bad("out", "a folder (the root of the run folders), or None for $AUTOINTERP_OUT or .data/autointerp",
                  opts.out)


def check_options(opts: HarvestOptions) -> RunPaths:
    """The checks that need neither the model nor the data; returns the run's paths."""
    _check_values(opts)
    if opts.world_size < 1 or not 0 <= opts.rank < opts.world_size:
        raise ValueError(f"need 0 <= --rank < --world_size, got rank={opts.rank}, world_size={opts.world_size}")
    if opts.n_batches is not None and opts.n_batches < 1:
        raise ValueError(f"--n_batches must be at least 1, got {opts.n_batches}")
    if opts.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {opts.batch_size}")
    if opts.output_logits and opts.output_logits_k < 1:  # checked now, not after the pass
        raise ValueError(f"--output_logits_k must be at least 1, got {opts.output_logits_k} "
                         "(or pass --no_output_logits)")
    if opts.output_probs not in ("auto", "on", "off"):
        raise ValueError(f"--output_probs must be auto, on or off, got {opts.output_probs!r}")
    return opts.paths()


def prepare_harvest(opts: HarvestOptions, target: Target | None = None) -> PreparedHarvest:
    """Every check that can fail, before any long work: target, layers, data, lengths, vocabulary."""
    paths = check_options(opts)
    target = target or load_target(opts)
    opts = with_target_defaults(opts, target)
    ctx_len = opts.context_length
    if target.max_context_length is not None and ctx_len > target.max_context_length:
        raise ValueError(
            f"--context_length {ctx_len} is longer than the model's context length {target.max_context_length}; "
            f"pass --context_length {target.max_context_length} or less"
        )
    source = open_source(opts, target)
    check_vocab(source, target.vocab_size)
    if not source.random_access and next(iter(source.stream(opts.seed)), None) is None:
        # a stream's length is unknown: read its first sequence now, so an empty dataset (or a
        # wrong --text_column) fails here rather than after the progress bar starts
        raise ValueError(f"the dataset {source.name} is empty: it gave no tokens")
    threshold = opts.threshold
    device = resolve_device(opts.device)
    has_probs = getattr(target.harvest_fn, "output_probs", True) is not False and opts.output_probs != "off"
    if opts.output_probs == "on" and not has_probs:
        raise ValueError(f"--output_probs on, but the target {opts.target!r} gives no output probabilities; "
                         "use --output_probs auto or off")
    accs = default_accumulators(opts, has_output_probs=has_probs)
    decode = source.decode or (target.tokenizer.decode if target.tokenizer else None)
    tokenizer = source.tokenizer if source.decode else target.tokenizer
    tokenizer_kind = getattr(tokenizer, "kind", None) if decode is not None else None
    dataset_info = source.info()
    loop = HarvestLoop(accs, threshold=threshold, seed=opts.seed, device=device, vocab_size=target.vocab_size,
                       decode=decode, model={"target": opts.target, **target.description}, dataset=dataset_info,
                       progress=opts.progress, tokenizer_kind=tokenizer_kind)
    total = n_total_batches(source, opts.batch_size, opts.n_batches)
    if total == 0:
        raise ValueError(f"the dataset {source.name} is empty")
    return PreparedHarvest(opts, target, source, loop, paths, total,
                           rank_batch_count(total, opts.rank, opts.world_size), ctx_len, threshold, device)


def checkpoint_path(paths: RunPaths, rank: int, world_size: int) -> Path:
    return paths.checkpoints / f"harvest-rank{rank}-of-{world_size}.pt"


def remove_checkpoint(ckpt: Path) -> None:
    """Delete a finished run's checkpoint (its result is saved) and the checkpoints folder once empty."""
    # a checkpoint holds every accumulator's tables: left behind, a large harvest's ones run to gigabytes
    ckpt.unlink(missing_ok=True)
    try:
        ckpt.parent.rmdir()
    except OSError:  # not empty (another rank's files, a lock folder): leave it
        pass


def worker_path(paths: RunPaths, rank: int, world_size: int) -> Path:
    return paths.root / "workers" / f"rank{rank}-of-{world_size}.pt"


class ModelBatches:
    """This worker's batches of model evidence: token batches run through the target's `HarvestFn`.

    A `ResumableBatches` source: a resume starts after the batches a checkpoint
    counted without reading or running them. The forward pass's time goes to
    ``timings.forward`` (the loop counts the rest of drawing a batch as data).
    """

    def __init__(self, prep: PreparedHarvest, timings: HarvestTimings | None = None):
        self.prep = prep
        self.timings = timings if timings is not None else HarvestTimings()

    def __iter__(self) -> Iterator[HarvestBatch]:
        return self.starting_at(0)

    def starting_at(self, skip: int) -> Iterator[HarvestBatch]:
        prep, opts = self.prep, self.prep.opts
        fn = prep.target.harvest_fn
        fn_device = getattr(fn, "device", prep.device)
        vocab = prep.target.vocab_size
        for tb in token_batches(prep.source, opts.batch_size, n_batches=opts.n_batches, seed=opts.seed,
                                shuffle=opts.shuffle, rank=opts.rank, world_size=opts.world_size, skip=skip):
            if tb.tokens.numel() and int(tb.tokens.min()) < 0:  # an embedding lookup would give an IndexError
                raise ValueError(
                    f"the dataset {prep.source.name} has a negative token id {int(tb.tokens.min())}, expected ids in "
                    f"[0, {vocab if vocab is not None else 'vocabulary size'}): was the file written with a signed "
                    "dtype, or padded with -1?"
                )
            if vocab is not None and tb.tokens.numel() and int(tb.tokens.max()) >= vocab:
                raise ValueError(
                    f"the dataset {prep.source.name} has token ids up to {int(tb.tokens.max())}, expected ids in "
                    f"[0, {vocab}) for the model's vocabulary of {vocab}: was it tokenized with another tokenizer?"
                )
            tokens = tb.tokens.to(fn_device)
            t0 = time.perf_counter()
            with torch.no_grad():
                batch = fn(tokens)
            batch.sequence_ids = tb.sequence_ids.to(batch.tokens.device)
            if tb.mask is not None:
                m = tb.mask.to(batch.tokens.device)
                batch.mask = m if batch.mask is None else (batch.mask & m)
            device_sync(batch.tokens.device)
            self.timings.forward += time.perf_counter() - t0
            yield batch


def harvest_lock(paths: RunPaths, rank: int = 0, world_size: int = 1) -> RunLock:
    """The lock a harvest holds while it runs, so that a second harvest of the run is refused.

    One process (``world_size`` 1) and ``merge`` write ``harvest/`` and lock the run
    folder itself (``<run>/.lock``: the folder where ``harvest/`` is swapped in).
    The workers of a job array run side by side, so each locks only its own rank
    (``<run>/checkpoints/rank<R>-of-<N>/.lock``).
    """
    if world_size == 1:
        return RunLock(paths.root, what=f"the harvest of run {paths.run_id}")
    return RunLock(paths.checkpoints / f"rank{rank}-of-{world_size}",
                   what=f"worker {rank} of {world_size} of the harvest of run {paths.run_id}")


def run_harvest(opts: HarvestOptions, *, target: Target | None = None,
                timings: HarvestTimings | None = None, log: Callable[[str], None] | None = print,
                summary: HarvestSummary | None = None) -> HarvestResult | Path:
    """Run (or resume) a harvest. Returns the `HarvestResult` (world_size 1, and rank 0 under torchrun),
    the worker state file (a job array's worker) or, on the other ranks under torchrun, the harvest folder
    rank 0 wrote. ``summary``: a `HarvestSummary` that sees every component as it is written
    (then ``summary.text()`` is ``summarize(result)`` without reading the harvest back)."""
    opts = torchrun_options(opts)
    if distributed.active_ranks() is not None and opts.rank != 0:
        log = None  # one rank speaks; the others' errors still raise
    paths = check_options(opts)
    # taken before the model loads, so a second harvest of the run fails at once
    with harvest_lock(paths, opts.rank, opts.world_size):
        return _run_locked(opts, target, timings, log or (lambda s: None), summary)


def torchrun_options(opts: HarvestOptions) -> HarvestOptions:
    """Under torchrun (or an initialized process group): ``opts`` with this process's rank, world size and GPU.

    Joins the process group torchrun set up (`autointerp.distributed`); the ranks then
    merge in memory at the end of the pass and rank 0 saves, with no worker files.
    """
    env = distributed.torchrun_env()
    if distributed.active_ranks() is None and (env is None or env.world_size == 1):
        return opts
    if opts.rank != 0 or opts.world_size != 1:
        raise ValueError(
            f"--rank {opts.rank} --world_size {opts.world_size} under torchrun: those options are for job arrays "
            "merged by `autointerp merge`; under torchrun every process takes its rank from the environment, "
            "so leave them out"
        )
    device = resolve_device(opts.device)
    if device.type == "cuda" and device.index is None and env is not None:
        device = torch.device("cuda", env.local_rank)  # one GPU a process
    ranks = distributed.init_from_environment(device)
    assert ranks is not None
    return evolve(opts, rank=ranks[0], world_size=ranks[1], device=str(device),
                  progress=opts.progress and ranks[0] == 0)


def _run_locked(opts: HarvestOptions, target: Target | None, timings: HarvestTimings | None,
                log: Callable[[str], None], summary: HarvestSummary | None = None) -> HarvestResult | Path:
    prep = prepare_harvest(opts, target)
    for notice in prep.target.notices:
        log(notice)
    paths = prep.paths
    ckpt = checkpoint_path(paths, opts.rank, opts.world_size)
    if ckpt.exists() and not opts.resume and not opts.overwrite:
        raise ValueError(
            f"a checkpoint of this run already exists at {ckpt}; pass --resume to continue it, "
            "or --overwrite to start over (or --run_id for a new run)"
        )
    timings = timings or HarvestTimings()
    prep.loop.consume(ModelBatches(prep, timings), n_batches=prep.rank_batches, checkpoint=ckpt,
                      checkpoint_every=opts.checkpoint_every, resume=opts.resume, settings=prep.settings,
                      timings=timings, desc=f"harvest {paths.run_id}", log=log, split_batches=False)
    if prep.loop.space is None:
        raise ValueError(f"the harvest saw no batches: the dataset {prep.source.name} gave no data for rank {opts.rank}")
    in_memory = distributed.active_ranks() is not None  # torchrun: consume ended with the merge of every rank
    if in_memory and opts.rank != 0:
        distributed.barrier()  # rank 0 saves; this rank's checkpoint stays until the harvest is on disk
        if not opts.keep_checkpoints:
            remove_checkpoint(ckpt)
        return paths.harvest
    if opts.world_size > 1 and not in_memory:
        wp = worker_path(paths, opts.rank, opts.world_size)
        if opts.rank == 0 and opts.output_logits:
            # from weights, the same on every worker: one writes them, before its state file, so
            # that merge finds them whenever it finds every worker's state
            save_worker_weight_outputs(prep, log)
        prep.loop.save_checkpoint(wp, settings=prep.settings, done=True, token_strings=True)
        if not opts.keep_checkpoints:  # the worker file holds the same state
            remove_checkpoint(ckpt)
        log(f"worker {opts.rank} of {opts.world_size} done: {prep.loop.n_batches} batches -> {wp}\n"
            f"when every worker is done: autointerp merge {paths.run_id}" + (f" --out {opts.out}" if opts.out else ""))
        return wp
    # finalize streams into the folder a block of components at a time (peak memory: a block of
    # outputs, not the whole harvest); the result reads the saved folder lazily
    transform, shared = None, {}
    if opts.output_logits:
        lenses, shared = weight_outputs(prep, log)
        transform = _lens_transform(lenses)
    if summary is not None:
        transform = _then_summary(transform, summary)
    if in_memory:
        with harvest_lock(paths):  # rank 0 swaps in harvest/, as a one-process run or merge does
            result = prep.loop.save(paths.harvest, transform=transform, shared=shared)
        distributed.barrier()
    else:
        result = prep.loop.save(paths.harvest, transform=transform, shared=shared)
    if not opts.keep_checkpoints:
        remove_checkpoint(ckpt)
    tok_s = timings.tokens / max(timings.total, 1e-9)
    log(f"harvested {result.config.n_tokens:,} tokens, {len(result)} components ({result.n_fired()} fired) "
        f"in {timings.total:.1f}s ({tok_s:,.0f} tok/s) -> {paths.harvest}")
    if opts.wandb_project:
        from autointerp.wandb_log import log_harvest

        log_harvest(result, paths, project=opts.wandb_project, entity=opts.wandb_entity, options=prep.opts)
    return result


def attach_output_logits(result: HarvestResult, fn: Any, *, k: int = 10, decode: Callable[[int], str] | None = None,
                         log: Callable[[str], None] = print) -> int:
    """Fill ``output_logits`` (the weight-based logit lens, `autointerp.logit_lens`) of every component
    whose adapter can say its output direction; returns how many got one. No data pass.

    A result in memory is changed in place; a lazy one (`load_harvest`) is streamed through
    and saved over its folder (one atomic swap), one component in memory at a time."""
    widths = {layer.name: layer.width for layer in result.config.layers}
    lenses, notice = harvest_fn_logit_lens(fn, widths, k=k, decode=decode)
    attach = _lens_transform(lenses)
    if result.lazy:
        assert result.folder is not None
        result.save(result.folder, transform=attach)
    else:
        for comp in result:
            attach(comp)
    log(f"autointerp: {notice}")
    return len(lenses)


def weight_outputs(prep: PreparedHarvest, log: Callable[[str], None]) -> tuple[dict[str, LogitLens], dict[str, Any]]:
    """What a harvest takes from the weights after the pass: each component's logit lens
    (`autointerp.logit_lens`) and the shared outputs (the weight-space neighbours,
    `autointerp.neighbours`). Computed by a one-process harvest before its save, and by a
    job array's worker 0 for ``merge`` (`save_worker_weight_outputs`)."""
    from autointerp.neighbours import WEIGHT_NEIGHBOURS, weight_neighbours_of

    assert prep.loop.space is not None
    widths = {layer.name: layer.width for layer in prep.loop.space.layers}
    lenses, notice = harvest_fn_logit_lens(prep.target.harvest_fn, widths, k=prep.opts.output_logits_k,
                                           decode=prep.loop.decode)
    log(f"autointerp: {notice}")
    shared: dict[str, Any] = {}
    neighbours = weight_neighbours_of(prep.target.harvest_fn, widths, log=log)  # the same weights
    if neighbours is not None:
        shared[WEIGHT_NEIGHBOURS] = neighbours
    return lenses, shared


def _lens_transform(lenses: dict[str, LogitLens]) -> Callable[[ComponentData], None]:
    def attach(comp: ComponentData) -> None:
        comp.output_logits = lenses.get(comp.key)

    return attach


def _then_summary(transform: Callable[[ComponentData], None] | None,
                  summary: HarvestSummary) -> Callable[[ComponentData], None]:
    def step(comp: ComponentData) -> None:
        if transform is not None:
            transform(comp)
        summary.add(comp)  # the component as it is written

    return step


#: the logit lens of a job array, written by worker 0 beside the worker states and read by merge:
#: one line per component that has one, ``{"key": ..., "lens": LogitLens}``, in component-space order
WORKER_OUTPUT_LOGITS = "output-logits.jsonl"
#: the same as one JSON object ``{key: LogitLens}``, as workers wrote it before (still read by merge)
WORKER_OUTPUT_LOGITS_V1 = "output-logits.json"


def write_lens_lines(path: Path, lenses: Mapping[str, LogitLens], layers: Iterable[Any]) -> None:
    """``lenses`` as `WORKER_OUTPUT_LOGITS` lines in the order of ``layers`` (``LayerSpec``s), written
    whole or not at all (a temporary file renamed), one line encoded at a time."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for layer in layers:
                for i in range(layer.width):
                    lens = lenses.get(f"{layer.name}:{i}")
                    if lens is not None:
                        f.write(json.dumps({"key": f"{layer.name}:{i}", "lens": to_dict(lens)}, allow_nan=False) + "\n")

    atomic_write_with(path, write)


class LensLines:
    """Reads `WORKER_OUTPUT_LOGITS` a line at a time while components come by in the same order.

    ``attach(comp)`` gives ``comp`` its lens when the next line is its own, so merge holds one
    lens at a time whatever N x k is. Opening it checks every line's key (one scan, nothing
    kept): a component of ``space``, after the line before in component order, so the join
    consumes every line; a file that breaks that is refused before anything is written.
    ``parsed`` counts the lines read by the join.
    """

    EXPECTED = 'one {"key": component, "lens": LogitLens} object per line, in component order'

    def __init__(self, path: Path, space: Any):
        self.path = path
        last = -1
        for line_no, rec in iter_jsonl(path, self.EXPECTED):
            try:
                flat = space.flat_index(*space.split_key(rec.get("key")))
            except (KeyError, IndexError, AttributeError, TypeError):
                raise CorruptRunFile(path, line_no, f"key {rec.get('key')!r} is not a component of this harvest",
                                     self.EXPECTED) from None
            if flat <= last or not isinstance(rec.get("lens"), dict):
                problem = "no lens" if flat > last else f"{rec['key']!r} comes after a later component"
                raise CorruptRunFile(path, line_no, problem, self.EXPECTED)
            last = flat
        self._lines = iter_jsonl(path, self.EXPECTED)
        self._next: tuple[int, dict[str, Any]] | None = None
        self.parsed = 0
        self._advance()

    def _advance(self) -> None:
        self._next = next(self._lines, None)
        if self._next is not None:
            self.parsed += 1

    def attach(self, comp: ComponentData) -> None:
        if self._next is not None and self._next[1]["key"] == comp.key:
            line_no, rec = self._next
            comp.output_logits = structure_line(rec["lens"], LogitLens, self.path, line_no, self.EXPECTED)
            self._advance()
        else:
            comp.output_logits = None

    @property
    def done(self) -> bool:
        """True once every line was attached."""
        return self._next is None
#: the shared outputs from weights (``<name>.json`` and any ``<name>.rows``) of a job array, by worker 0
WORKER_SHARED = "shared"


def save_worker_weight_outputs(prep: PreparedHarvest, log: Callable[[str], None]) -> None:
    """Worker 0 of a job array: the logit lens (``workers/output-logits.json``) and the shared
    outputs from weights (``workers/shared/``, swapped in whole), for ``merge`` to store as a
    one-process harvest does."""
    lenses, shared = weight_outputs(prep, log)
    workers = prep.paths.root / "workers"
    assert prep.loop.space is not None
    write_lens_lines(workers / WORKER_OUTPUT_LOGITS, lenses, prep.loop.space.layers)

    def fill(tmp: Path) -> None:
        for name, value in shared.items():
            value.write_shared(tmp, name)

    replace_dir_atomically(workers / WORKER_SHARED, fill)


def merge_workers(run: str | Path, *, out: str | None = None, world_size: int | None = None,
                  log: Callable[[str], None] | None = print) -> HarvestResult:
    """Combine the workers' states of a run into its harvest, one worker file in memory at a time."""
    log = log or (lambda s: None)
    root = Path(run)
    if not (root / "workers").is_dir():
        root = RunPaths.of(str(run), out).root
    if not (root / "workers").is_dir():  # before the lock, which would make the folder of a mistyped run
        raise FileNotFoundError(f"no worker states in {root / 'workers'}: run "
                                "`autointerp harvest ... --rank R --world_size N` first")
    with harvest_lock(RunPaths(root)):  # it writes harvest/, as a one-process harvest does
        return _merge_locked(root, world_size, log)


def _merge_locked(root: Path, world_size: int | None, log: Callable[[str], None]) -> HarvestResult:
    wdir = root / "workers"
    files = sorted(wdir.glob("rank*-of-*.pt"))
    if not files:
        raise FileNotFoundError(f"no worker states in {wdir}: run `autointerp harvest ... --rank R --world_size N` first")
    sizes = {int(m.group(1)) for f in files if (m := re.search(r"-of-(\d+)\.pt$", f.name))}
    if world_size is None:
        if len(sizes) != 1:
            raise ValueError(f"{wdir} holds worker files of several world sizes {sorted(sizes)}; pass --world_size")
        world_size = sizes.pop()
    paths = [wdir / f"rank{r}-of-{world_size}.pt" for r in range(world_size)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"workers not finished (missing {missing} in {wdir}); run them, then merge again")
    loop: HarvestLoop | None = None
    first: dict[str, Any] | None = None
    for p in paths:
        state = read_checkpoint(p)
        if first is None:
            first = {k: state[k] for k in ("fingerprint", "accumulators", "model", "dataset")}
        elif state["accumulators"] != first["accumulators"]:
            raise ValueError(f"{p.name} used accumulators {state['accumulators']}, unlike rank 0: {first['accumulators']}")
        else:
            fa = {k: v for k, v in state["fingerprint"].items() if k != "rank"}
            fb = {k: v for k, v in first["fingerprint"].items() if k != "rank"}
            if fa != fb:
                raise ValueError(f"{p.name} was run with settings {fa}, unlike rank 0: {fb}")
        part = HarvestLoop.from_checkpoint(state, where=p)
        if loop is None:
            loop = part
        else:
            loop.merge(part)
        del state, part
        log(f"merged {p.name}")
    assert loop is not None and first is not None
    transform, lens_lines = None, None
    if (wdir / WORKER_OUTPUT_LOGITS).exists():  # read a line at a time as the components are written
        lens_lines = LensLines(wdir / WORKER_OUTPUT_LOGITS, loop.space)
        transform = lens_lines.attach
    elif (wdir / WORKER_OUTPUT_LOGITS_V1).exists():  # a worker of an earlier version: one JSON object
        lenses = json.loads((wdir / WORKER_OUTPUT_LOGITS_V1).read_text(encoding="utf-8"))
        transform = _lens_transform({k: from_dict(v, LogitLens) for k, v in lenses.items()})
    recover_dir(wdir / WORKER_SHARED)
    shared = read_shared(wdir, WORKER_SHARED)  # worker 0's weight-space neighbours, as a one-process harvest stores them
    harvest_dir = root / "harvest"
    # streamed into the folder a block of components at a time, as a one-process harvest saves
    result = loop.save(harvest_dir, transform=transform, shared=shared)
    assert lens_lines is None or lens_lines.done  # the scan checked the order: the join used every line
    log(f"merged {world_size} workers: {result.config.n_tokens:,} tokens, {len(result)} components -> {harvest_dir}")
    return result


class HarvestSummary:
    """The few components `summarize` shows, gathered one component at a time.

    ``add`` every component (in component-space order); ``text()`` is then what
    ``summarize`` of those components prints. It keeps only the best ``n`` candidates
    of each layer, so `run_harvest` (``summary=``) gathers them while the harvest is
    written, instead of reading the saved harvest back.
    """

    def __init__(self, n: int = 5, top: int = 6, min_count: int = 3):
        self.n, self.top, self.min_count = n, top, min_count
        self._seen = 0
        #: per layer, a min-heap of the best n candidates: (score, -position, key, firing rate, tokens)
        self._best: dict[str, list[tuple[float, int, str, float, list[Any]]]] = {}

    @property
    def seen(self) -> int:
        """How many components were added."""
        return self._seen

    def add(self, comp: ComponentData) -> None:
        pos = self._seen
        self._seen += 1
        if comp.firing_count <= 0 or not comp.input_tokens:
            return
        reliable = [t for t in comp.input_tokens.top_precision if t.count >= self.min_count]
        if not reliable:
            return
        # share of the component's firings on its few most reliable tokens
        score = sum(t.count for t in reliable[:3] if t.precision >= 0.5) / max(comp.firing_count, 1) \
            * min(1.0, comp.firing_count / 20)
        heap = self._best.setdefault(comp.layer, [])
        item = (score, -pos, comp.key, comp.firing_rate, reliable[: self.top])
        if len(heap) < self.n:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)

    def text(self) -> str:
        # best first (ties: the earlier component), layers in the order of their best candidate, one per layer in turn
        by_layer = {layer: sorted(h, key=lambda x: (-x[0], -x[1])) for layer, h in self._best.items()}
        order = sorted(by_layer, key=lambda layer: (-by_layer[layer][0][0], -by_layer[layer][0][1]))
        queues = [by_layer[layer] for layer in order]
        picked: list[tuple[float, int, str, float, list[Any]]] = []
        while len(picked) < self.n and any(queues):
            for q in queues:
                if q and len(picked) < self.n:
                    picked.append(q.pop(0))
        lines = []
        for _, _, key, rate, tokens in picked:
            toks = ", ".join(f"{t.token if t.token is not None else t.token_id!r} ({t.precision:.0%})" for t in tokens)
            lines.append(f"  {key:<20} fires on {rate:6.2%} of tokens; top tokens: {toks}")
        return "\n".join(lines)


def summarize(result: Iterable[ComponentData], n: int = 5, top: int = 6, min_count: int = 3) -> str:
    """A few components and the input tokens they fire on most reliably, for the terminal.

    Tokens are ranked by precision P(fires | token) among tokens seen at least
    ``min_count`` times with the component; components are taken, spread over the
    layers, from those whose firings are best covered by a few reliable tokens.
    Streams ``result`` once (`HarvestSummary`); `run_harvest` can gather the same
    while it writes the harvest (``summary=``).
    """
    summary = HarvestSummary(n, top, min_count)
    for comp in result:
        summary.add(comp)
    return summary.text()


__all__ = [
    "HarvestOptions",
    "HarvestSummary",
    "HarvestTimings",
    "ModelBatches",
    "PreparedHarvest",
    "Target",
    "default_accumulators",
    "harvest_lock",
    "load_target",
    "merge_workers",
    "prepare_harvest",
    "run_harvest",
    "summarize",
]
