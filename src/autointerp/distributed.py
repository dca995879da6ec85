"""One harvest over several processes under ``torch.distributed`` (``torchrun``), merged in memory.

Each rank takes every ``world_size``-th batch (batch ``i`` goes to rank
``i % world_size``: the split of the ``--rank/--world_size`` job arrays, see
`autointerp.data.token_batches`), feeds them to its own `HarvestLoop`, and at
the end of the pass the ranks merge their states through collectives instead of
worker files:

- an accumulator whose states all have an elementwise reduction (``reduce="sum"``,
  ``"max"``, ``"min"`` in `TensorAccumulator.add_state`: counts, sums, maxima) is
  all-reduced in place, one collective per state;
- any other one (samplers, heavy-hitter summaries, custom accumulators) sends its
  ``state_dict`` to every rank with ``all_gather_object``, and each rank rebuilds
  the merge with the class's own `merge`, in rank order, so every rank ends with
  the same state and the result does not depend on which process finished first.

Afterwards every rank holds the whole harvest; rank 0 saves it (``run_harvest``
does so, and a script should do the same: ``if is_main_rank(): result.save(...)``).

>>> # torchrun --nproc_per_node 2 script.py
>>> torch.distributed.init_process_group("gloo")
>>> result = HarvestLoop(accs, threshold=0.0).run(batches)   # every rank passes all the batches
>>> if is_main_rank():
...     result.save("harvest")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from attrs import frozen

from autointerp.accumulators.base import Accumulator, TensorAccumulator
from autointerp.batch import ComponentSpace, HarvestBatch
from autointerp.harvest_checkpoint import accumulator_from_spec, accumulator_spec
from autointerp.schemas import LayerSpec

#: the loop these functions serve is `autointerp.harvest.HarvestLoop`, which imports this module;
#: it is typed as `Any` here so the import runs one way
HarvestLoop = Any

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


@frozen
class TorchrunEnv:
    """What ``torchrun`` tells each process it starts (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The ``torchrun`` environment of this process, or None when it was not started by torchrun."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        raw = env.get(name, env["RANK"] if name == "LOCAL_RANK" else "")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValueError(f"the environment variable {name} is {raw!r}, expected a whole number "
                             "(torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; unset them to run one process)") from None
    if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ValueError(f"the environment says RANK={values['RANK']}, WORLD_SIZE={values['WORLD_SIZE']}, "
                         "expected 0 <= RANK < WORLD_SIZE")
    return TorchrunEnv(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


def active_ranks() -> tuple[int, int] | None:
    """``(rank, world_size)`` under an initialized process group of more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def is_main_rank() -> bool:
    """True in rank 0 of a process group, and in a process that is not part of one: the one that saves."""
    ranks = active_ranks()
    return ranks is None or ranks[0] == 0


def init_from_environment(device: torch.device | None = None) -> tuple[int, int] | None:
    """Join the process group torchrun set up (``gloo`` on the CPU, ``nccl`` on CUDA), if not joined yet.

    Returns ``(rank, world_size)``, or None when the process was not started by
    torchrun with more than one process (or a group of one is already initialized).
    """
    if active_ranks() is not None:
        return active_ranks()
    env = torchrun_env()
    if env is None or env.world_size == 1:
        return None
    if not dist.is_available():
        raise RuntimeError("torchrun started this process, but this torch build has no torch.distributed")
    cuda = device is not None and device.type == "cuda"
    if cuda:
        # one GPU a process: without this every rank's collectives would run on cuda:0
        torch.cuda.set_device(env.local_rank if device.index is None else device.index)
    dist.init_process_group("nccl" if cuda else "gloo")
    return active_ranks()


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if active_ranks() is not None:
        dist.barrier()


def rank_checkpoint(path: str | Path, rank: int, world_size: int) -> Path:
    """The checkpoint file of one rank: ``ckpt.pt`` becomes ``ckpt.rank0-of-2.pt``, so ranks never share one."""
    p = Path(path)
    return p.with_name(f"{p.stem}.rank{rank}-of-{world_size}{p.suffix}")


class RankShare:
    """This rank's share of ``batches``: global batches ``rank, rank + world_size, ...`` below ``n_batches``.

    Resumable (``starting_at(skip)`` skips this rank's first ``skip`` batches): a
    `ResumableBatches` source is asked to start at the right global batch; any
    other iterable is drawn from and the others' batches dropped.
    """

    def __init__(self, batches: Iterable[HarvestBatch], rank: int, world_size: int, n_batches: int | None = None):
        self.batches, self.rank, self.world_size, self.n_batches = batches, rank, world_size, n_batches

    def __len__(self) -> int:
        total = self.n_batches
        if total is None:
            total = len(self.batches)  # type: ignore[arg-type]  # TypeError when unknown: the loop expects that
        elif hasattr(self.batches, "__len__"):
            total = min(total, len(self.batches))  # type: ignore[arg-type]
        return max(0, (total - self.rank + self.world_size - 1) // self.world_size)

    def __iter__(self) -> Iterator[HarvestBatch]:
        return self.starting_at(0)

    def starting_at(self, skip: int) -> Iterator[HarvestBatch]:
        first = self.rank + skip * self.world_size
        if skip and hasattr(self.batches, "starting_at"):
            numbered: Iterable[tuple[int, HarvestBatch]] = enumerate(self.batches.starting_at(first), start=first)
        else:
            numbered = enumerate(self.batches)
        for i, batch in numbered:
            if self.n_batches is not None and i >= self.n_batches:
                return
            if i >= first and i % self.world_size == self.rank:
                yield batch


def merge_across_ranks(loop: HarvestLoop, group: Any = None) -> None:
    """Fold every rank's loop state into every rank's ``loop`` (a collective: every rank must call it).

    Before: each rank's ``loop`` holds what it saw. After: each holds the merge of
    all of them, equal to one loop that saw every batch (counts exactly; samples
    identically, since sampling keys hash global sequence ids). Refuses ranks whose
    accumulators, threshold, seed or component space differ, naming the rank.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    header = {
        "space": [(l.name, l.width) for l in loop.space.layers] if loop.space is not None else None,
        "vocab_size": loop.vocab_size,
        "threshold": loop.threshold,
        "seed": loop.seed,
        "accumulators": [accumulator_spec(a) for a in loop.accumulators],
        "counts": (loop.n_batches, loop.n_rows, loop.n_tokens),
    }
    headers: list[Any] = [None] * world
    dist.all_gather_object(headers, header, group=group)
    ref = headers[0]
    for r, h in enumerate(headers):
        for what in ("accumulators", "threshold", "seed"):
            if h[what] != ref[what]:
                raise ValueError(f"rank {r} of {world} harvests with {what} {h[what]!r}, but rank 0 with "
                                 f"{ref[what]!r}: every rank must build the same HarvestLoop")
    bound = [r for r, h in enumerate(headers) if h["space"] is not None]
    if not bound:
        return  # no rank saw a batch
    first = headers[bound[0]]
    for r in bound:
        if headers[r]["space"] != first["space"] or headers[r]["vocab_size"] != first["vocab_size"]:
            raise ValueError(
                f"rank {r} saw the component space {headers[r]['space']} (vocabulary {headers[r]['vocab_size']}), "
                f"rank {bound[0]} saw {first['space']} (vocabulary {first['vocab_size']}): every rank must harvest "
                "the same layers of the same model"
            )
    if loop.space is None:  # this rank got no batch: join with empty state, which every merge leaves unchanged
        _bind_empty(loop, first)
    # an accumulator may pick its layout when it binds (a dense or a bounded table): all-reduce only
    # states laid out alike on every rank; any other mix merges through the class's own merge
    layouts: list[Any] = [None] * world
    dist.all_gather_object(layouts, [_layout(a) for a in loop.accumulators], group=group)
    for i, acc in enumerate(loop.accumulators):
        reduce = layouts[rank][i] is not None and all(layouts[r][i] == layouts[rank][i] for r in range(world))
        _merge_accumulator(acc, [r in bound for r in range(world)], rank, world, group, reduce)
    loop.n_batches, loop.n_rows, loop.n_tokens = (sum(h["counts"][i] for h in headers) for i in range(3))


def _bind_empty(loop: HarvestLoop, header: Mapping[str, Any]) -> None:
    space = ComponentSpace([LayerSpec(n, w) for n, w in header["space"]])
    loop.device = loop.device or torch.device("cpu")
    loop.space, loop.vocab_size = space, header["vocab_size"]
    loop.ctx = loop._context(space, loop.vocab_size, loop.device)
    for acc in loop.accumulators:
        acc.bind(loop.ctx)


def _layout(acc: Accumulator) -> list[tuple[str, tuple[int, ...], str]] | None:
    if not _all_reducible(acc):
        return None  # merged by all-gather whatever its layout: no need to read its state here
    state = acc.state_dict()
    if set(state) != set(acc.state_reductions()):  # a state_dict that is not just the declared states
        return None
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in state.items()]


def _all_reducible(acc: Accumulator) -> bool:
    if not isinstance(acc, TensorAccumulator):
        return False
    reductions = acc.state_reductions()
    return bool(reductions) and all(r in _OPS and fixed for r, fixed in reductions.values())


def _merge_accumulator(acc: Accumulator, bound: list[bool], rank: int, world: int, group: Any,
                       reduce: bool) -> None:
    if reduce:
        assert isinstance(acc, TensorAccumulator)
        reductions = acc.state_reductions()
        state = acc.state_dict()  # folds staged buffers into the tables first
        in_place = True
        for name, tensor in state.items():
            t = tensor if tensor.is_contiguous() else tensor.contiguous()
            dist.all_reduce(t, op=_OPS[reductions[name][0]], group=group)
            in_place &= t is getattr(acc, name, None)
            state[name] = t
        if not in_place:
            acc.load_state_dict(state)
        return
    # a sampler's or a summary's states only merge together: every rank gets every state, merged in rank order
    mine = _to_cpu(acc.state_dict()) if bound[rank] else None
    states: list[Any] = [None] * world
    dist.all_gather_object(states, mine, group=group)
    merged = False
    for r in range(world):
        if states[r] is None:
            continue
        if not merged:
            acc.load_state_dict(states[r])
            merged = True
            continue
        other = accumulator_from_spec(accumulator_spec(acc), f"rank {r}")
        other.bind(acc._require_bound())
        other.load_state_dict(states[r])
        acc.merge(other)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


__all__ = [
    "RankShare",
    "TorchrunEnv",
    "active_ranks",
    "barrier",
    "init_from_environment",
    "is_main_rank",
    "merge_across_ranks",
    "rank_checkpoint",
    "torchrun_env",
]
