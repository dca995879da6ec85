"""The harvest on a CUDA device equals the harvest on the CPU.

Skipped without a CUDA device (this project's development machines have none);
run by `benchmarks/gpu_check.sh` on a machine that has one. Counts and sampled
examples must be identical; probability mass and activation sums agree to float
rounding. bfloat16 inputs are compared with the CPU harvest of the same bfloat16
values, so only the accumulation differs.
"""

from __future__ import annotations

import pytest
import torch

from autointerp import (
    CorrelationAcc,
    HarvestBatch,
    HarvestLoop,
    InputTokenAcc,
    OutputProbAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TopActivationAcc,
)
from harvest_helpers import make_stream

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def accumulators():
    return [CorrelationAcc(), InputTokenAcc(), OutputProbAcc(), ReservoirAcc(k=4, context_tokens=2),
            TopActivationAcc(k=3, context_tokens=1), RandomWindowAcc(n_windows=8, window_len=4)]


def cast(batch: HarvestBatch, dtype: torch.dtype) -> HarvestBatch:
    """Activations in ``dtype``; probabilities stay float32 (adapters take the softmax in float32)."""
    return HarvestBatch(batch.tokens, {k: v.to(dtype) for k, v in batch.activations.items()},
                        batch.output_probs, batch.mask, batch.sequence_ids)


def harvest(stream: list[HarvestBatch], device: str):
    loop = HarvestLoop(accumulators(), device=device, progress=False, seed=3)
    for b in stream:
        loop.update(b.to(device))
    return loop, loop.finalize()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_cuda_harvest_equals_cpu_harvest(dtype):
    stream = [cast(b, dtype) for b in make_stream(11, 6, B=4, S=16, V=37, widths={"a": 9, "b": 5})]
    cpu_loop, cpu = harvest(stream, "cpu")
    gpu_loop, gpu = harvest(stream, "cuda")
    assert torch.equal(cpu_loop.accumulators[0].count.cpu(), gpu_loop.accumulators[0].count.cpu())  # FiringStatsAcc
    by_type = {type(a).__name__: (a, g) for a, g in zip(cpu_loop.accumulators, gpu_loop.accumulators)}
    c, g = by_type["CorrelationAcc"]
    assert torch.equal(c.state_dict()["cofire"].cpu(), g.state_dict()["cofire"].cpu())
    c, g = by_type["InputTokenAcc"]
    assert torch.equal(c.joint.cpu(), g.joint.cpu())
    c, g = by_type["OutputProbAcc"]
    torch.testing.assert_close(c.state_dict()["joint"].cpu(), g.state_dict()["joint"].cpu(), rtol=1e-5, atol=1e-6)
    for a, b in zip(cpu, gpu):
        assert a.firing_count == b.firing_count
        assert [(e.sequence_index, e.position) for e in a.examples] == [(e.sequence_index, e.position) for e in b.examples]
        assert [(e.sequence_index, e.position) for e in a.top_examples] == [(e.sequence_index, e.position) for e in b.top_examples]
        assert [e.token_ids for e in a.examples] == [e.token_ids for e in b.examples]
        assert a.mean_activation == pytest.approx(b.mean_activation, rel=1e-5)
    assert cpu.shared["window_pool"] == gpu.shared["window_pool"]


def test_cuda_state_moves_to_cpu_and_merges():
    stream = make_stream(5, 4, B=3, S=12, V=23)
    _, one = harvest(stream, "cpu")
    a = HarvestLoop(accumulators(), device="cuda", progress=False, seed=3)
    b = HarvestLoop(accumulators(), device="cuda", progress=False, seed=3)
    for i, batch in enumerate(stream):
        (a if i % 2 else b).update(batch.to("cuda"))
    merged = a.merge(b).finalize()
    for x, y in zip(one, merged):
        assert x.firing_count == y.firing_count
        assert [(e.sequence_index, e.position) for e in x.examples] == [(e.sequence_index, e.position) for e in y.examples]
