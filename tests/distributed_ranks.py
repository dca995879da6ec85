"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2``: the CLI harvest, then the Python API.

The CLI comes first, so that it joins the process group from torchrun's
environment itself; the API harvests then run under the group it initialized.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from autointerp.cli import main as cli_main
from distributed_case import DEMO_ARGS, harvest_loop, synthetic_stream


def main(out: Path) -> None:
    assert cli_main(["harvest", "demo", "--out", str(out), "--run_id", "torchrun", *DEMO_ARGS]) == 0
    assert dist.is_initialized() and dist.get_world_size() == 2
    rank = dist.get_rank()
    # every rank passes all the batches; the loop takes its share and merges at the end
    result = harvest_loop().run(synthetic_stream(), checkpoint=out / "ckpt.pt", checkpoint_every=2)
    result.save(out / f"api-rank{rank}")  # every rank holds the merged harvest
    # one batch for two ranks: rank 1 sees nothing and still takes part in the merge
    harvest_loop().run(synthetic_stream(), n_batches=1).save(out / f"one-batch-rank{rank}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
