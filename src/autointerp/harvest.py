"""The harvest loop: one pass over the data, every accumulator fed from it.

`HarvestLoop` owns iteration, the device, ``torch.no_grad``, the progress bar,
timings, checkpoints, resume (skipping the batches a checkpoint already counted)
and the per-batch derivations (firing mask, sparse firings). It knows no
statistic by name: accumulators are plugins. Checkpoints have one format, in
`autointerp.harvest_checkpoint`; ``run_harvest`` and ``merge`` use it too. `HarvestResult` is what
``run`` returns: one `ComponentData` per component, indexable by key, saved as
``config.json`` + ``components.jsonl``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from attrs import define
from attrs import fields as attrs_fields

from autointerp import distributed
from autointerp.accumulators.base import Accumulator, HarvestContext
from autointerp.accumulators.firing_stats import FiringStatsAcc
from autointerp.batch import ComponentSpace, FiringBatch, HarvestBatch, SparseActivations
from autointerp.harvest_checkpoint import (
    CHECKPOINT_FORMAT,
    accumulator_from_spec,
    accumulator_spec,
    read_checkpoint,
    settings_difference,
    write_checkpoint,
)
from autointerp.harvest_store import ComponentSummary, HarvestStore, SharedOutputs, StoreWriter, filter_summaries
from autointerp.paths import HARVEST_COMPONENTS, HARVEST_CONFIG
from autointerp.records import read_components, read_harvest_config
from autointerp.schemas import ComponentData, HarvestConfig, LayerSpec
from autointerp.thresholds import base_threshold, check_threshold, resolve_thresholds
from autointerp.storage import (
    atomic_write_with,
    json_line,
    paused_gc,
    recover_dir,
    replace_dir_atomically,
    to_dict,
)

_COMPONENT_FIELDS = {f.name for f in attrs_fields(ComponentData)}
log = logging.getLogger(__name__)
#: per-batch temporaries as a multiple of the first batch's tensors: the batch itself on the device, the
#: firing mask and the sparse firings (values, component and position ids) derived from it
_BATCH_FACTOR = 3
#: the bounded tables' buffers are scaled up only while the whole plan stays within this share of the
#: budget (`HarvestLoop._scale_buffers`): the rest is left for what the plan does not count exactly
_BUFFER_ROOM = 0.9
#: components per block of a streaming finalize (`HarvestLoop.iter_components`, `HarvestLoop.save`)
FINALIZE_BLOCK = 1024


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("autointerp")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0+unknown"


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (CUDA: free device memory; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | float | str, what: str = "memory_budget") -> int:
    """``4294967296``, ``"4GiB"``, ``"512 MiB"``, ``"1.5GB"`` -> bytes."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be bytes or a string like '4GiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0 or value != value:
            raise ValueError(f"{what} must be a positive number of bytes, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(f"{what} must be bytes or a string like '4GiB', '512MiB' or '2GB', got {value!r}")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


@define
class HarvestTimings:
    """Where the time of `HarvestLoop.run` went (seconds), for the progress line and the benchmark.

    The loop counts drawing a batch as ``data``; a batch source that runs a model
    adds its forward time to ``forward`` while the batch is drawn, and the loop
    leaves that share out of ``data``.
    """

    data: float = 0.0
    forward: float = 0.0
    accumulate: float = 0.0
    checkpoint: float = 0.0
    tokens: int = 0
    batches: int = 0

    @property
    def total(self) -> float:
        return self.data + self.forward + self.accumulate + self.checkpoint


@runtime_checkable
class ResumableBatches(Protocol):
    """Batches that can start at any index, so a resume skips the seen ones without producing them."""

    def starting_at(self, skip: int) -> Iterable[HarvestBatch]: ...


def device_sync(device: torch.device | None) -> None:
    """Wait for ``device``'s queued work (CUDA), so a timer measures the step that queued it."""
    # CUDA work is asynchronous: without a sync its time lands in whichever step waits next
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class HarvestLoop:
    """One pass over batches of model evidence, feeding every accumulator.

    >>> loop = HarvestLoop([CorrelationAcc(), InputTokenAcc(), OutputProbAcc(),
    ...                     ReservoirAcc(k=20, context_tokens=10)], threshold=0.0, seed=0)
    >>> result = loop.run(batches)          # any iterable of HarvestBatch
    >>> result["h.0.mlp.c_fc:12"]           # ComponentData

    A component fires where its activation is strictly greater than ``threshold``: one
    number, or ``{layer: number}`` with an optional ``"default"`` entry for the layers it
    does not name (`autointerp.thresholds`; a layer with no value is refused at the first batch).
    ``vocab_size`` is needed by token statistics when batches carry no
    ``output_probs``. ``decode`` (token id -> str) puts readable tokens into the
    results. ``model`` and ``dataset`` are free-form descriptions recorded in
    ``config.json`` (the interpreter's prompt uses them). ``tokenizer_kind`` says how
    ``decode``'s strings join into text (`autointerp.token_text`), recorded for every reader.
    """

    def __init__(
        self,
        accumulators: Sequence[Accumulator],
        *,
        threshold: float | Mapping[str, float] = 0.0,
        seed: int = 0,
        device: str | torch.device | None = None,
        vocab_size: int | None = None,
        decode: Callable[[int], str] | None = None,
        model: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        progress: bool = True,
        validate: bool = True,
        memory_fraction: float = 0.9,
        tokenizer_kind: str | None = None,
        memory_budget: int | str | None = None,
    ):
        accs = list(accumulators)
        for a in accs:
            if not isinstance(a, Accumulator):
                raise TypeError(f"accumulators must be Accumulator instances, got {type(a).__name__}")
        if not any(isinstance(a, FiringStatsAcc) for a in accs):
            accs.insert(0, FiringStatsAcc())
        names = [a.name for a in accs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two accumulators write the same output name {dupes}; give each a distinct `name`")
        for a in accs:
            if not a.name:
                raise ValueError(f"{type(a).__name__} has no `name`: set a class attribute name = '...'")
        self.accumulators: list[Accumulator] = accs
        #: what the caller gave: a float, or ``{layer: float}`` (see `autointerp.thresholds`)
        self.threshold: float | dict[str, float] = check_threshold(threshold, "HarvestLoop threshold")
        #: ``{layer: threshold}`` for every layer once the first batch names them (a mapping was given)
        self.layer_thresholds: dict[str, float] | None = None
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else None
        self.vocab_size = vocab_size
        self.decode = decode
        self.tokenizer_kind = tokenizer_kind
        self.model = dict(model or {})
        self.dataset = dict(dataset or {})
        self.progress = progress
        self.validate = validate
        self.memory_fraction = memory_fraction
        # None: memory_fraction of what the device has free when the first batch arrives
        self.memory_budget = None if memory_budget is None else parse_bytes(memory_budget)
        #: what the memory check decided: {"budget", "state", "batch", "finalize", "modes": {name: mode}}
        self.memory_plan: dict[str, Any] | None = None
        self.space: ComponentSpace | None = None
        self.ctx: HarvestContext | None = None
        self.n_batches = 0
        self.n_rows = 0
        self.n_tokens = 0

    # -- setup -------------------------------------------------------------------------

    def _bind(self, batch: HarvestBatch) -> None:
        device = self.device or batch.tokens.device
        self.device = device
        space = ComponentSpace.from_activations(batch.activations)
        vocab = self.vocab_size
        if batch.output_probs is not None:
            vocab = batch.output_probs.shape[-1]
            if self.vocab_size is not None and self.vocab_size != vocab:
                raise ValueError(
                    f"output_probs has vocabulary size {vocab}, but HarvestLoop(vocab_size={self.vocab_size})"
                )
        for a in self.accumulators:
            if a.needs_output_probs and batch.output_probs is None:
                raise ValueError(
                    f"{type(a).__name__} needs output_probs [B, S, V] in every HarvestBatch, but the first batch has none"
                )
        ctx = self._context(space, vocab, device)
        self.check_memory(ctx, batch_bytes=_batch_bytes(batch))
        self.space, self.ctx, self.vocab_size = space, ctx, vocab
        for a in self.accumulators:
            a.bind(ctx)

    def _context(self, space: ComponentSpace, vocab: int | None, device: torch.device) -> HarvestContext:
        """The context of this loop's accumulators; resolves a per-layer threshold against ``space``."""
        per_layer = None
        if isinstance(self.threshold, dict):
            per_layer = resolve_thresholds(self.threshold, space.layer_names)
        self.layer_thresholds = per_layer
        base = min(per_layer.values()) if per_layer else float(self.threshold)
        ctx = HarvestContext(space, vocab, device, self.seed, base, self.decode, per_layer)
        # one [N] tensor for every batch, only when the layers differ
        self._firing_threshold: float | Tensor = base if ctx.uniform_threshold else \
            ctx.component_thresholds(torch.float32)
        return ctx

    def threshold_for(self, layer: str) -> float:
        """The threshold the components of ``layer`` fire above (known for every layer after the first batch)."""
        if self.layer_thresholds is not None:
            return self.layer_thresholds[layer]
        if isinstance(self.threshold, dict):
            return resolve_thresholds(self.threshold, [layer])[layer]
        return self.threshold

    def memory_table(self, ctx: HarvestContext) -> list[tuple[str, int]]:
        return [(type(a).__name__, int(a.state_bytes(ctx))) for a in self.accumulators]

    def budget_bytes(self, device: torch.device) -> int | None:
        """The harvest's memory budget on ``device``: ``memory_budget``, else ``memory_fraction`` of what is free."""
        if self.memory_budget is not None:
            return self.memory_budget
        free = available_memory_bytes(device)
        return None if free is None else int(self.memory_fraction * free)

    def check_memory(self, ctx: HarvestContext, batch_bytes: int = 0) -> None:
        """Choose each table's mode to fit the budget, before allocating; refuse what cannot fit.

        The budget covers the state, the per-batch temporaries (``_BATCH_FACTOR`` times
        the first batch), finalize's working memory (one block of outputs) and a bounded
        table's merge of its pending batches (`merge_bytes`). The
        accumulators that can choose (``mode="auto"``, see `accumulators._modes`) start
        dense; while the total does not fit, the largest dense table switches to its
        bounded mode (only where that is smaller).
        """
        budget = self.budget_bytes(ctx.device)
        auto = [a for a in self.accumulators if callable(getattr(a, "choose_mode", None)) and getattr(a, "mode", None) == "auto"]
        for a in self.accumulators:
            if callable(getattr(a, "choose_mode", None)):
                a.choose_mode(ctx, None)  # dense, or the mode it was given
        extra = _BATCH_FACTOR * batch_bytes + self.finalize_bytes(ctx)

        def total() -> int:
            return sum(b for _, b in self.memory_table(ctx)) + extra + self.merge_bytes(ctx)

        if budget is not None:
            for a in sorted(auto, key=lambda a: -int(a.dense_state_bytes(ctx))):
                if total() <= budget:
                    break
                if a.bounded_state_bytes(ctx) < a.dense_state_bytes(ctx):
                    a.choose_mode(ctx, 0)  # nothing fits in 0 bytes: the bounded mode
        buffers = self._scale_buffers(ctx, budget, total)
        table = self.memory_table(ctx)
        modes = {a.name: a.resolved_mode() for a in self.accumulators if callable(getattr(a, "resolved_mode", None))}
        self.memory_plan = {"budget": budget, "state": sum(b for _, b in table), "batch": _BATCH_FACTOR * batch_bytes,
                            "finalize": extra - _BATCH_FACTOR * batch_bytes, "merge": self.merge_bytes(ctx),
                            "modes": modes, "buffers": buffers}
        if budget is not None and total() > budget:
            lines = "\n".join(f"  {name:<20} {_fmt_bytes(b):>12}" for name, b in table)
            lines += f"\n  {'per-batch + finalize + merge':<20} {_fmt_bytes(extra + self.merge_bytes(ctx)):>12}"
            source = f"the memory budget is {_fmt_bytes(budget)}" if self.memory_budget is not None else \
                f"only {_fmt_bytes(budget / self.memory_fraction)} is free"
            raise MemoryError(
                f"the harvest state needs {_fmt_bytes(total())} on {ctx.device} but {source} "
                f"(N={ctx.n_components} components, V={ctx.vocab_size}):\n{lines}\n"
                f"Table modes, bounded where that helps: {modes or 'none can switch'}.\n"
                "Drop or shrink the largest table (see docs/memory.md): harvest fewer layers, leave out "
                "CorrelationAcc (N x N) or InputTokenAcc / OutputProbAcc (N x V), "
                + ("give the bounded tables a smaller summary_k (their summaries, buffers and merges "
                   "grow with it), " if "bounded" in (modes or {}).values() else "")
                + "or give the samplers a smaller k or context_tokens."
            )
        if modes:
            log.info("harvest memory: %s of %s budget; table modes: %s", _fmt_bytes(total()),
                     _fmt_bytes(budget) if budget is not None else "no",
                     ", ".join(f"{k}={v}" + (f" (buffer x{buffers[k]})" if buffers.get(k, 1) > 1 else "")
                               for k, v in modes.items()))

    def _scale_buffers(self, ctx: HarvestContext, budget: int | None, total: Callable[[], int]) -> dict[str, int]:
        """Scale up the bounded tables' buffers of pending batches where the plan leaves room.

        A bounded table merges its buffer when it holds ``buffer_scale x N x summary_k``
        entries; beyond its entries a merge passes over ``rows x width`` cells (width N
        for co-firing, V for the token tables), so doubling the buffer halves what a
        batch pays for that pass (co-firing at N = 65,536: 88 ms a batch at scale 2, 78 at 4),
        at the cost of the buffer and a larger merge. The widest tables are doubled
        first, up to ``MAX_BUFFER_SCALE``, while the whole plan stays within
        ``_BUFFER_ROOM`` of the budget; with no budget known, every scale stays 1.
        Returns each bounded table's scale (``memory_plan["buffers"]``).
        """
        from autointerp.accumulators._modes import MAX_BUFFER_SCALE

        # the table accumulators (`accumulators._modes.TableModeStates`) in their bounded mode
        tables = [a for a in self.accumulators
                  if callable(getattr(a, "summary_width", None)) and a.resolved_mode() == "bounded"]
        for a in tables:
            a.buffer_scale = 1
        if budget is not None and total() <= budget:
            for a in sorted(tables, key=lambda a: -int(a.summary_width(ctx))):
                while a.buffer_scale < MAX_BUFFER_SCALE:
                    a.buffer_scale *= 2
                    if total() > _BUFFER_ROOM * budget:
                        a.buffer_scale //= 2
                        break
        return {a.name: a.buffer_scale for a in tables}

    def merge_bytes(self, ctx: HarvestContext) -> int:
        """Working memory of a bounded table's merge of its pending batches: the largest accumulator's
        (they merge one at a time; see `accumulators.heavy_hitters.merge_working_bytes`)."""
        sizes = [int(f(ctx)) for a in self.accumulators if callable(f := getattr(a, "merge_bytes", None))]
        return max(sizes, default=0)

    def finalize_bytes(self, ctx: HarvestContext) -> int:
        """Working memory of finalize and save: the largest accumulator's output tensors (see `finalize`)."""
        sizes = [int(f(ctx)) for a in self.accumulators if callable(f := getattr(a, "finalize_bytes", None))]
        return max(sizes, default=0)

    # -- the loop ----------------------------------------------------------------------

    @torch.no_grad()
    def update(self, batch: HarvestBatch) -> None:
        """Feed one batch to every accumulator."""
        if not isinstance(batch, HarvestBatch):
            raise TypeError(f"expected a HarvestBatch, got {type(batch).__name__}")
        checked = False
        if self.space is None:
            if self.validate:
                batch.validate(self.vocab_size)
                checked = True
            self._bind(batch)
        assert self.space is not None and self.ctx is not None
        if self.device is not None and batch.tokens.device != self.device:
            batch = batch.to(self.device)
        if self.validate and not checked:
            batch.validate(self.vocab_size)
        self.space.check_batch(batch.activations)
        B, S = batch.tokens.shape
        seq_ids = batch.sequence_ids
        if seq_ids is None:
            seq_ids = torch.arange(self.n_rows, self.n_rows + B, device=batch.tokens.device)
        thr = self._firing_threshold
        if isinstance(thr, Tensor) and thr.device != batch.tokens.device:
            thr = self._firing_threshold = thr.to(batch.tokens.device)
        fb = FiringBatch.from_batch(batch, self.space, thr, seq_ids, self.vocab_size)
        for a in self.accumulators:
            a.update(fb)
        self.n_batches += 1
        self.n_rows += B
        self.n_tokens += fb.n_valid

    def run(
        self,
        batches: Iterable[HarvestBatch] | ResumableBatches,
        *,
        n_batches: int | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        settings: Mapping[str, Any] | None = None,
        timings: HarvestTimings | None = None,
        desc: str = "harvest",
        log: Callable[[str], None] | None = None,
        split_batches: bool = True,
    ) -> HarvestResult:
        """Consume ``batches`` (see `consume`) and return the finalized result."""
        self.consume(batches, n_batches=n_batches, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                     resume=resume, settings=settings, timings=timings, desc=desc, log=log,
                     split_batches=split_batches)
        return self.finalize()

    def consume(
        self,
        batches: Iterable[HarvestBatch] | ResumableBatches,
        *,
        n_batches: int | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        settings: Mapping[str, Any] | None = None,
        timings: HarvestTimings | None = None,
        desc: str = "harvest",
        log: Callable[[str], None] | None = None,
        split_batches: bool = True,
    ) -> None:
        """Feed ``batches`` (at most ``n_batches``) to every accumulator, with progress and checkpoints.

        With ``checkpoint`` and ``checkpoint_every``, the loop state is saved
        atomically every that many batches and once more at the end (see
        `save_checkpoint`; ``settings`` are stored with it).

        With ``resume=True``, the state in ``checkpoint`` (if that file exists) is
        loaded first (its settings must equal ``settings`` when given), and the
        batches it already counted are skipped: pass the same ``batches`` in the
        same order, and the result equals one uninterrupted pass. A
        `ResumableBatches` source starts after them without producing them; any
        other iterable is drawn from and the first ones dropped.

        ``timings`` collects where the time went; ``log`` receives the resume line.

        Under an initialized ``torch.distributed`` process group of several ranks
        (`autointerp.distributed`), every rank passes the same ``batches``: rank r
        takes batches r, r + world_size, ... below ``n_batches`` (``split_batches=False``:
        the caller already gave each rank its share), checkpoints to its own file
        (``ckpt.rank<R>-of-<W>.pt``, as given when the caller split), and the pass ends
        with the merge of every rank's state, so every rank then holds the whole harvest.
        """
        ranks = distributed.active_ranks()
        if ranks is not None and split_batches:
            batches, n_batches = distributed.RankShare(batches, *ranks, n_batches=n_batches), None
            if checkpoint is not None:
                checkpoint = distributed.rank_checkpoint(checkpoint, *ranks)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint, settings=settings)
            if log is not None:
                log(f"resuming from {checkpoint}: {self.n_batches} batches already done")
        skip = self.n_batches if resume else 0
        total = n_batches
        if total is None:
            try:
                total = len(batches)  # type: ignore[arg-type]
            except TypeError:
                total = None
        if skip and isinstance(batches, ResumableBatches):
            numbered: Iterable[tuple[int, HarvestBatch]] = enumerate(batches.starting_at(skip), start=skip)
        else:
            numbered = enumerate(batches)  # type: ignore[arg-type]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, unit="batch", initial=min(skip, total or skip), dynamic_ncols=True)
        t_start = time.perf_counter()
        tokens_before = self.n_tokens
        it = iter(numbered)
        try:
            while True:
                t0 = time.perf_counter()
                forward_before = timings.forward if timings is not None else 0.0
                item = next(it, None)
                if item is None:
                    break
                i, batch = item
                if n_batches is not None and i >= n_batches:
                    break
                if i < skip:
                    continue  # already in the state loaded from the checkpoint
                t1 = time.perf_counter()
                n_tokens = self.n_tokens
                self.update(batch)
                if timings is not None:
                    device_sync(self.device)
                    t2 = time.perf_counter()
                    timings.data += (t1 - t0) - (timings.forward - forward_before)
                    timings.accumulate += t2 - t1
                    timings.batches += 1
                    timings.tokens += self.n_tokens - n_tokens
                if bar is not None:
                    rate = (self.n_tokens - tokens_before) / max(time.perf_counter() - t_start, 1e-9)
                    bar.update(1)
                    bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)
                if checkpoint is not None and checkpoint_every and self.n_batches % checkpoint_every == 0:
                    self._timed_checkpoint(checkpoint, settings, False, timings)
        finally:
            if bar is not None:
                bar.close()
        # a loop that saw nothing leaves no checkpoint behind (a rerun would then ask for --resume)
        if checkpoint is not None and checkpoint_every and self.space is not None:
            self._timed_checkpoint(checkpoint, settings, True, timings)
        if ranks is not None:  # after the checkpoint, which keeps this rank's own state for a resume
            distributed.merge_across_ranks(self)

    def _timed_checkpoint(self, path: str | Path, settings: Mapping[str, Any] | None, done: bool,
                          timings: HarvestTimings | None) -> None:
        t = time.perf_counter()
        self.save_checkpoint(path, settings=settings, done=done)
        if timings is not None:
            timings.checkpoint += time.perf_counter() - t

    # -- merge, state, checkpoints -----------------------------------------------------

    def merge(self, other: HarvestLoop) -> HarvestLoop:
        """Fold in a loop with the same accumulators that saw another part of the data."""
        if [type(a) for a in other.accumulators] != [type(a) for a in self.accumulators]:
            raise ValueError(
                f"cannot merge loops with accumulators {[type(a).__name__ for a in other.accumulators]} "
                f"into {[type(a).__name__ for a in self.accumulators]}"
            )
        if other.space is None:
            return self
        if self.space is not None and other.space != self.space:
            raise ValueError(f"cannot merge harvests of different component spaces: {other.space} vs {self.space}")
        if other.threshold != self.threshold:
            raise ValueError(f"cannot merge harvests made with different thresholds: {other.threshold!r} "
                             f"into {self.threshold!r}")
        if self.space is None:
            self.space, self.ctx, self.vocab_size = other.space, other.ctx, other.vocab_size
            self.layer_thresholds, self._firing_threshold = other.layer_thresholds, other._firing_threshold
            self.device = self.device or other.device
        for mine, theirs in zip(self.accumulators, other.accumulators):
            mine.merge(theirs)
        self.n_batches += other.n_batches
        self.n_rows += other.n_rows
        self.n_tokens += other.n_tokens
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "autointerp.harvest_state/1",
            "space": [(l.name, l.width) for l in self.space.layers] if self.space else None,
            "vocab_size": self.vocab_size,
            "threshold": self.threshold,
            "seed": self.seed,
            "n_batches": self.n_batches,
            "n_rows": self.n_rows,
            "n_tokens": self.n_tokens,
            "accumulators": [
                {"type": type(a).__name__, "name": a.name, "config": a.config(), "state": a.state_dict() if a.bound else None}
                for a in self.accumulators
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = [(s["type"], s["config"]) for s in state["accumulators"]]
        mine = [(type(a).__name__, a.config()) for a in self.accumulators]
        if saved != mine:
            raise ValueError(f"the saved harvest state has accumulators {saved}, but this loop has {mine}")
        if state["threshold"] != self.threshold or state["seed"] != self.seed:
            raise ValueError(
                f"the saved harvest state used threshold={state['threshold']}, seed={state['seed']}; "
                f"this loop has threshold={self.threshold}, seed={self.seed}"
            )
        self.n_batches, self.n_rows, self.n_tokens = state["n_batches"], state["n_rows"], state["n_tokens"]
        if state["space"] is None:
            return
        space = ComponentSpace([LayerSpec(n, w) for n, w in state["space"]])
        device = self.device or torch.device("cpu")
        self.device = device
        self.vocab_size = state["vocab_size"]
        self.space = space
        self.ctx = self._context(space, self.vocab_size, device)
        for a, s in zip(self.accumulators, state["accumulators"]):
            a.bind(self.ctx)
            a.load_state_dict(s["state"])

    def checkpoint_state(self, *, settings: Mapping[str, Any] | None = None, done: bool = False,
                         token_strings: bool = False) -> dict[str, Any]:
        """The whole loop as a checkpoint (format in `autointerp.harvest_checkpoint`).

        ``token_strings=True`` adds every token's text, so that a merge in another
        process names tokens without loading the tokenizer.
        """
        table = None
        if token_strings and self.decode is not None and self.vocab_size is not None:
            table = [self.decode(i) for i in range(self.vocab_size)]
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": json.loads(json.dumps(dict(settings or {}))),
            "done": done,
            "accumulators": [accumulator_spec(a) for a in self.accumulators],
            "model": self.model,
            "dataset": self.dataset,
            "token_strings": table,
            "tokenizer_kind": self.tokenizer_kind,
            "loop": self.state_dict(),
        }

    def save_checkpoint(self, path: str | Path, *, settings: Mapping[str, Any] | None = None, done: bool = False,
                        token_strings: bool = False) -> None:
        """Write the whole loop state to ``path`` atomically (temp file, fsync, rename)."""
        write_checkpoint(path, self.checkpoint_state(settings=settings, done=done, token_strings=token_strings))

    def load_checkpoint(self, path: str | Path, *, settings: Mapping[str, Any] | None = None) -> None:
        """Continue from a checkpoint; with ``settings``, refuse one made with other settings."""
        state = read_checkpoint(path, map_location=self.device or "cpu")
        if settings is not None:
            want = json.loads(json.dumps(dict(settings)))
            diff = settings_difference(state["fingerprint"], want)
            if diff:
                raise ValueError(
                    f"the checkpoint {path} was made with different settings {{option: (checkpoint, now)}}: {diff}; "
                    "resume with the same settings, or pass --overwrite to start over"
                )
        self.load_state_dict(state["loop"])

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], where: str | Path = "a checkpoint") -> HarvestLoop:
        """Rebuild a loop, its accumulators included, from a `checkpoint_state` (on the CPU, no progress bar)."""
        accs = [accumulator_from_spec(s, where) for s in state["accumulators"]]
        ls = state["loop"]
        table = state.get("token_strings")
        loop = cls(accs, threshold=ls["threshold"], seed=ls["seed"], device="cpu", vocab_size=ls["vocab_size"],
                   decode=table.__getitem__ if table else None, model=state["model"], dataset=state["dataset"],
                   progress=False, tokenizer_kind=state.get("tokenizer_kind"))
        loop.load_state_dict(ls)
        return loop

    # -- results -----------------------------------------------------------------------

    def config(self) -> HarvestConfig:
        return HarvestConfig(
            layers=list(self.space.layers) if self.space else [],
            threshold=self.ctx.threshold if self.ctx is not None else base_threshold(self.threshold),
            layer_thresholds=dict(self.layer_thresholds) if self.layer_thresholds is not None else None,
            seed=self.seed,
            vocab_size=self.vocab_size,
            n_batches=self.n_batches,
            n_tokens=self.n_tokens,
            accumulators=[
                {"type": type(a).__name__, "name": a.name, "prompt_section": a.prompt_section, **a.config(),
                 # which table mode the memory check chose (docs/memory.md)
                 **({"mode_used": a.mode_used} if getattr(a, "mode_used", None) else {})}
                for a in self.accumulators
            ],
            model=self.model,
            dataset=self.dataset,
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            autointerp_version=_version(),
            tokenizer_kind=self.tokenizer_kind,
        )

    @torch.no_grad()
    def iter_components(self, block_size: int = FINALIZE_BLOCK) -> Iterator[ComponentData]:
        """Every component's `ComponentData`, built ``block_size`` components at a time.

        Each accumulator hands out one block (`Accumulator.finalize_block`), so only a
        block of outputs is alive at once where the accumulators build them blockwise.
        """
        if self.space is None:
            raise ValueError("the harvest saw no batches: the dataset was empty (or n_batches=0)")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        space = self.space
        n = sum(layer.width for layer in space.layers)
        try:
            for lo in range(0, n, block_size):
                hi = min(lo + block_size, n)
                comps = [ComponentData(key=f"{name}:{i}", layer=name, index=i) for name, i in _names(space, lo, hi)]
                for a in self.accumulators:
                    for idx, value in a.finalize_block(lo, hi).items():
                        comp = comps[idx - lo]
                        if a.sets_fields:
                            for k, v in value.items():
                                setattr(comp, k, v)
                        elif a.name in _COMPONENT_FIELDS:
                            setattr(comp, a.name, value)
                        else:
                            comp.extras[a.name] = value
                yield from comps
        finally:
            for a in self.accumulators:
                a.finalize_done()

    def finalize_shared(self) -> dict[str, Any]:
        shared: dict[str, Any] = {}
        for a in self.accumulators:
            s = a.finalize_shared()
            if s is not None:
                shared[a.name] = s
        return shared

    @torch.no_grad()
    def finalize(self) -> HarvestResult:
        """Join every accumulator's output into one `ComponentData` per component, in memory."""
        with paused_gc():
            comps = list(self.iter_components())
        return HarvestResult(self.config(), comps, self.finalize_shared())

    @torch.no_grad()
    def save(self, directory: str | Path, *, block_size: int = FINALIZE_BLOCK,
             transform: Callable[[ComponentData], None] | None = None,
             shared: Mapping[str, Any] | None = None) -> HarvestResult:
        """Finalize straight to a harvest folder, a block at a time, and return it lazily (`load_harvest`).

        The same folder as ``finalize().save(directory)``, without holding every
        component: peak memory is a block of outputs (the built-in accumulators
        build them blockwise). ``transform`` may change each component before it is
        written; ``shared`` adds outputs for the whole harvest (``shared/<name>.json``)
        beside the accumulators' own.
        """
        def components() -> Iterator[ComponentData]:
            for comp in self.iter_components(block_size):
                if transform is not None:
                    transform(comp)
                yield comp

        if self.space is None:
            raise ValueError("the harvest saw no batches: the dataset was empty (or n_batches=0)")
        # the shared outputs are built after the last block (the window pool's lists are large)
        write_harvest(directory, self.config(), components(), lambda: {**self.finalize_shared(), **(shared or {})})
        return load_harvest(directory)


class HarvestResult:
    """The finalized harvest: one `ComponentData` per component, in component-space order.

    Index by key (``result["h.0.mlp:12"]``) or position, iterate, ``len``,
    ``keys()``, ``summaries(...)`` (key, layer, firing rate... without the
    evidence), ``save(dir)``. ``shared`` holds outputs of accumulators that belong
    to the whole harvest (saved under ``shared/``).

    Two kinds, one API: what ``HarvestLoop.finalize`` returns holds its components
    in memory; what ``load_harvest`` returns is lazy: it reads a component from
    the folder's index when asked (a fresh object each time: change one, then keep
    that object), and iteration streams them a line at a time. ``.components``
    is the whole list, which for a lazy result parses and holds every component
    (about 200 KiB each): iterate or index instead where you can.
    """

    def __init__(self, config: HarvestConfig, components: list[ComponentData] | None = None,
                 shared: Mapping[str, Any] | None = None, *, store: HarvestStore | None = None):
        if (components is None) == (store is None):
            raise TypeError("HarvestResult takes its components as a list or a HarvestStore (load_harvest), one of them")
        self.config = config
        self._components = components
        self._store = store
        self._shared: MutableMapping[str, Any] | None = None if shared is None and store is not None else dict(shared or {})
        self._index = None if components is None else {c.key: i for i, c in enumerate(components)}

    @property
    def components(self) -> list[ComponentData]:
        """Every component as one list; for a lazy result this parses the whole harvest (kept from then on)."""
        if self._components is None:
            self._components = list(self._store)
            self._index = {c.key: i for i, c in enumerate(self._components)}
        return self._components

    @components.setter
    def components(self, value: list[ComponentData]) -> None:
        self._components = list(value)
        self._index = {c.key: i for i, c in enumerate(self._components)}

    @property
    def shared(self) -> MutableMapping[str, Any]:
        """The outputs that belong to the whole harvest, by accumulator name (``shared/<name>.json``).

        For a lazy result a `SharedOutputs` mapping: each output is read when its
        key is first asked for (the window pool, tens of MB, only by who uses it).
        """
        if self._shared is None:
            self._shared = SharedOutputs(self._store.folder / "shared")
        return self._shared

    @shared.setter
    def shared(self, value: Mapping[str, Any]) -> None:
        self._shared = dict(value)

    @property
    def lazy(self) -> bool:
        """True while components are read from the folder on demand (nothing parsed and held)."""
        return self._components is None

    def _missing(self, key: object) -> KeyError:
        layers = [l.name for l in self.config.layers]
        return KeyError(f"no component {key!r}; keys look like '{layers[0] if layers else 'layer'}:0' (layers: {layers})")

    def __getitem__(self, key: str | int) -> ComponentData:
        if isinstance(key, int) and not isinstance(key, bool):
            if self._components is not None:
                return self._components[key]
            n = len(self._store)
            if not -n <= key < n:
                raise IndexError(f"component position {key} is out of range (the harvest has {n} components)")
            return self._store.get(key % n)
        pos = self._index.get(key) if self._index is not None else (
            self._store.position(key) if isinstance(key, str) else None)
        if pos is None:
            raise self._missing(key) from None
        return self._components[pos] if self._components is not None else self._store.get(pos)

    def get(self, key: str, default: Any = None) -> ComponentData | Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if self._index is not None:
            return key in self._index
        return isinstance(key, str) and self._store.position(key) is not None

    def __iter__(self) -> Iterator[ComponentData]:
        return iter(self._components) if self._components is not None else iter(self._store)

    def __len__(self) -> int:
        return len(self._components) if self._components is not None else len(self._store)

    def keys(self) -> list[str]:
        return [c.key for c in self._components] if self._components is not None else self._store.keys()

    def summaries(self, *, layer: str | None = None, min_firing_rate: float | None = None,
                  order: str = "position", limit: int | None = None) -> list[ComponentSummary]:
        """Components as index rows (key, layer, index, firing count/rate, mean/max activation), no evidence parsed.

        ``layer`` and ``min_firing_rate`` filter; ``order`` is ``"position"`` (component
        space) or ``"firing_rate"`` (highest first); ``limit`` keeps the first rows.
        """
        if self._components is None:
            return self._store.summaries(layer=layer, min_firing_rate=min_firing_rate, order=order, limit=limit)
        return filter_summaries([ComponentSummary.of(c) for c in self._components], layer=layer,
                                min_firing_rate=min_firing_rate, order=order, limit=limit)

    @property
    def space(self) -> ComponentSpace:
        return ComponentSpace(list(self.config.layers))

    def n_fired(self) -> int:
        if self._components is None:
            return self._store.n_fired()
        return sum(1 for c in self._components if c.firing_count > 0)

    def __repr__(self) -> str:
        return (
            f"HarvestResult({len(self)} components in {len(self.config.layers)} layers, "
            f"{self.n_fired()} fired, {self.config.n_tokens} tokens)"
        )

    def _repr_html_(self) -> str:
        from autointerp.report.notebook import harvest_html

        return harvest_html(self)

    @property
    def folder(self) -> Path | None:
        """The harvest folder a lazy result reads (None for one in memory)."""
        return self._store.folder if self._store is not None else None

    def save(self, directory: str | Path, *, transform: Callable[[ComponentData], None] | None = None) -> Path:
        """Write ``config.json``, ``components.jsonl`` with its index (and ``shared/*.json``) as one atomic swap.

        Components are written one at a time, so saving a lazy result streams it;
        ``transform`` may change each one before it is written (saved over its own
        folder, that changes a lazy harvest without holding it).
        """
        directory = Path(directory)

        def components() -> Iterator[ComponentData]:
            for comp in self:
                if transform is not None:
                    transform(comp)
                yield comp

        # shared is read before the swap: a lazy result may be saving over its own folder
        write_harvest(directory, self.config, components(), dict(self.shared))
        if self._store is not None and self._store.folder.resolve() == directory.resolve():
            # the folder under this result was swapped: read the new one from now on
            self._store.close()
            self._store = HarvestStore(directory, self.config)
        return directory


def _names(space: ComponentSpace, lo: int, hi: int) -> Iterator[tuple[str, int]]:
    """(layer, index) of global components lo <= i < hi."""
    start = 0
    for layer in space.layers:
        for i in range(max(lo - start, 0), min(hi - start, layer.width)):
            yield layer.name, i
        start += layer.width


def write_harvest(directory: str | Path, config: HarvestConfig, components: Iterator[ComponentData],
                  shared: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> None:
    """Write a harvest folder (``config.json``, ``components.jsonl`` + index, ``shared/``) as one atomic swap.

    Components are encoded and written one at a time, so the writer holds one line;
    ``shared`` may be a function, called once the components are written.
    """
    def fill(tmp: Path) -> None:
        with paused_gc():  # finalize + encode: ~200 acyclic objects a component (`paused_gc`)
            _fill(tmp)

    def _fill(tmp: Path) -> None:
        writer = StoreWriter(tmp)
        try:
            for c in components:
                rec = to_dict(c)
                writer.add_record(rec, json_line(rec))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        outputs = shared() if callable(shared) else shared
        if outputs:
            (tmp / "shared").mkdir()
            for name, value in outputs.items():
                write_shared = getattr(value, "write_shared", None)
                if callable(write_shared):  # a table read a row at a time (`SharedRows`): its JSON and its rows
                    write_shared(tmp / "shared", name)
                else:
                    # orjson (json_line): the window pool's millions of firings took 7 s through the standard library
                    (tmp / "shared" / f"{name}.json").write_bytes(json_line(value))
        (tmp / HARVEST_CONFIG).write_text(json.dumps(to_dict(config), indent=2, allow_nan=False), encoding="utf-8")

    replace_dir_atomically(Path(directory), fill)


def read_shared(directory: Path, folder: str = "shared") -> dict[str, Any]:
    """The shared outputs saved in ``directory/folder`` (``<name>.json``, with ``<name>.rows`` for a `SharedRows`)."""
    return dict(SharedOutputs(directory / folder))  # every one read now (SharedRows tables opened)


def _batch_bytes(batch: HarvestBatch) -> int:
    tensors = [batch.tokens, *batch.activations.values(), batch.output_probs, getattr(batch, "mask", None)]
    return sum(t.nbytes for t in tensors if isinstance(t, (torch.Tensor, SparseActivations)))


def load_harvest(directory: str | Path, *, lazy: bool = True) -> HarvestResult:
    """Open a harvest folder written by `HarvestResult.save`; nothing is parsed until asked.

    The result reads components on demand through the folder's index
    (``components.sqlite``, `autointerp.harvest_store`); a folder saved before the
    index existed gets one on first open (one checked scan of ``components.jsonl``;
    in memory where the folder is read-only). ``lazy=False`` reads every component
    into memory at once, as before.
    """
    directory = Path(directory)
    recover_dir(directory)
    cfg_path = directory / HARVEST_CONFIG
    comp_path = directory / HARVEST_COMPONENTS
    if not cfg_path.exists() or not comp_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a harvest folder: expected config.json and components.jsonl in it "
            "(run `autointerp harvest` first, or pass the folder that HarvestResult.save wrote)"
        )
    # one reader per file kind (records.py): a damaged file is a CorruptRunFile naming file and line
    config = read_harvest_config(cfg_path)
    if not lazy:
        return HarvestResult(config, read_components(comp_path, config), read_shared(directory))
    return HarvestResult(config, store=HarvestStore(directory, config))
