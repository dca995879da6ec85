"""A harvest under torch.distributed (torchrun, 2 CPU processes, gloo) equals one process over the same batches.

One torchrun launch (tests/distributed_ranks.py) runs both the CLI harvest of the
demo model and the Python API on a synthetic stream, since starting processes is
most of the cost on a small machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from autointerp.cli import main as cli_main
from autointerp.distributed import RankShare, rank_checkpoint, torchrun_env
from autointerp.harvest import HarvestResult, load_harvest
from autointerp.harvest_checkpoint import read_checkpoint
from autointerp.storage import to_dict
from distributed_case import DEMO_ARGS, harvest_loop, synthetic_stream

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with the gloo backend")


def _same(single: HarvestResult, merged: HarvestResult) -> int:
    """Assert ``merged`` equals ``single`` (counts exactly, samples identically); return the examples compared."""
    assert merged.config.n_tokens == single.config.n_tokens
    assert merged.config.n_batches == single.config.n_batches
    assert merged.config.model == single.config.model and merged.keys() == single.keys()
    n = 0
    for a, b in zip(single, merged, strict=True):
        da, db = to_dict(a), to_dict(b)
        assert da.pop("mean_activation") == pytest.approx(db.pop("mean_activation"), rel=1e-9)
        oa, ob = da.pop("output_tokens"), db.pop("output_tokens")
        assert (oa is None) == (ob is None)
        if oa is not None:  # probability mass is a float sum: the merged one differs in the last bits
            ca, cb = ([s["count"] for s in o["top_recall"]] for o in (oa, ob))
            assert ca == pytest.approx(cb, rel=1e-5)
            ids_a, ids_b = ({s["token_id"] for s in o["top_recall"]} for o in (oa, ob))
            assert len(ids_a & ids_b) >= len(ids_a) - 1  # robust to a reordering of near-ties
        assert da == db, a.key  # firing counts, histograms, input tokens, co-firing, every sampled example
        n += len(a.examples) + len(a.top_examples)
    assert single.shared == merged.shared  # the random window pool
    return n


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path):
    assert cli_main(["harvest", "demo", "--out", str(tmp_path), "--run_id", "single", *DEMO_ARGS]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).with_name("distributed_ranks.py")), str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("harvested ") == 1  # rank 0 speaks and saves; rank 1 stays quiet

    # the CLI: the demo model's harvest, merged in memory, saved by rank 0
    run = tmp_path / "torchrun"
    assert _same(load_harvest(tmp_path / "single" / "harvest"), load_harvest(run / "harvest")) > 100
    assert not (run / "workers").exists()  # no worker files
    assert not list(run.glob("checkpoints/*.pt"))  # each rank's checkpoint removed once the harvest was saved

    # the Python API under the process group: every rank ends with the one-process result
    single = harvest_loop().run(synthetic_stream())
    assert _same(single, load_harvest(tmp_path / "api-rank0")) > 100
    _same(single, load_harvest(tmp_path / "api-rank1"))
    _same(harvest_loop().run(synthetic_stream(), n_batches=1), load_harvest(tmp_path / "one-batch-rank0"))
    assert rank_checkpoint(tmp_path / "ckpt.pt", 1, 2).name == "ckpt.rank1-of-2.pt"
    # each rank checkpointed only its own share (batches 0, 2, 4, 6 and 1, 3, 5): the work was split
    shares = [read_checkpoint(tmp_path / f"ckpt.rank{r}-of-2.pt")["loop"]["n_batches"] for r in range(2)]
    assert shares == [4, 3]
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


def test_torchrun_refuses_job_array_options(monkeypatch):
    from autointerp.run_harvest import HarvestOptions, torchrun_options

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun every process takes its rank from the environment"):
        torchrun_options(HarvestOptions(target="demo", rank=1, world_size=4))
