"""A harvest under torch.distributed (2 CPU processes, gloo) equals one process over the same batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autointerp.accumulators import (
    ActivationHistogramAcc,
    CorrelationAcc,
    InputTokenAcc,
    OutputProbAcc,
    QuantileExampleAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TopActivationAcc,
)
from autointerp.distributed import RankShare, rank_checkpoint, torchrun_env
from autointerp.harvest import HarvestLoop, HarvestResult, load_harvest
from autointerp.storage import to_dict
from harvest_helpers import make_stream

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with the gloo backend")

N_BATCHES = 7  # odd: rank 0 gets 4 batches, rank 1 three


def _accumulators():
    return [ReservoirAcc(k=6, context_tokens=2), TopActivationAcc(k=4, context_tokens=2), CorrelationAcc(),
            InputTokenAcc(), OutputProbAcc(), RandomWindowAcc(), ActivationHistogramAcc(),
            QuantileExampleAcc(context_tokens=2)]


def _loop() -> HarvestLoop:
    return HarvestLoop(_accumulators(), threshold=0.2, seed=3, device="cpu", progress=False)


def _stream():
    return make_stream(11, N_BATCHES, B=4, S=12, V=17, widths={"h.0.mlp": 9, "h.1.attn": 6})


def _rank_main(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out_dir = Path(out)
        # every rank passes all the batches; the loop takes its share and merges at the end
        result = _loop().run(_stream(), checkpoint=out_dir / "ckpt.pt", checkpoint_every=2)
        result.save(out_dir / f"rank{rank}")  # every rank holds the merged harvest
        # one batch for two ranks: rank 1 sees nothing and still takes part in the merge
        _loop().run(_stream(), n_batches=1).save(out_dir / f"one-batch-rank{rank}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _same(single: HarvestResult, merged: HarvestResult) -> int:
    """Assert ``merged`` equals ``single`` (counts exactly, samples identically); return the examples compared."""
    assert merged.config.n_tokens == single.config.n_tokens
    assert merged.config.n_batches == single.config.n_batches
    assert merged.keys() == single.keys()
    n = 0
    for a, b in zip(single, merged):
        da, db = to_dict(a), to_dict(b)
        assert da.pop("mean_activation") == pytest.approx(db.pop("mean_activation"), rel=1e-9)
        oa, ob = da.pop("output_tokens"), db.pop("output_tokens")
        assert (oa is None) == (ob is None)
        if oa is not None:  # probability mass is a float sum: the merged one differs in the last bits
            assert [s["count"] for s in oa["top_recall"]] == pytest.approx([s["count"] for s in ob["top_recall"]],
                                                                          rel=1e-5)
        assert da == db, a.key  # firing counts, histograms, input tokens, co-firing, every sampled example
        n += len(a.examples) + len(a.top_examples)
    assert single.shared == merged.shared  # the random window pool
    return n


def test_two_gloo_ranks_equal_one_process(tmp_path):
    single = _loop().run(_stream())
    single_one = _loop().run(_stream(), n_batches=1)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = load_harvest(tmp_path / "rank0"), load_harvest(tmp_path / "rank1")
    assert _same(single, r0) > 100
    _same(single, r1)
    _same(single_one, load_harvest(tmp_path / "one-batch-rank0"))
    # each rank checkpointed its own state to its own file
    assert rank_checkpoint(tmp_path / "ckpt.pt", 0, 2).name == "ckpt.rank0-of-2.pt"
    assert (tmp_path / "ckpt.rank0-of-2.pt").exists() and (tmp_path / "ckpt.rank1-of-2.pt").exists()
    assert not (tmp_path / "ckpt.pt").exists()


def test_rank_share_is_the_job_array_split():
    batches = list(range(10))
    assert list(RankShare(batches, 1, 3)) == [1, 4, 7]
    assert list(RankShare(batches, 0, 3, n_batches=7)) == [0, 3, 6] and len(RankShare(batches, 0, 3, 7)) == 3
    assert list(RankShare(batches, 2, 3).starting_at(1)) == [5, 8]
    assert [len(RankShare(batches, r, 4)) for r in range(4)] == [3, 3, 2, 2]


def test_torchrun_env_is_read_and_checked():
    assert torchrun_env({}) is None
    env = torchrun_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank) == (1, 2, 1)
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        torchrun_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE is 'two'"):
        torchrun_env({"RANK": "0", "WORLD_SIZE": "two"})
