"""The harvests tests/test_distributed.py runs in one process and under torchrun."""

from __future__ import annotations

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
from autointerp.harvest import HarvestLoop
from harvest_helpers import make_stream

N_BATCHES = 7  # odd: rank 0 gets 4 batches, rank 1 three

DEMO_ARGS = ["--n_batches", "5", "--batch_size", "2", "--context_length", "32", "--checkpoint_every", "2",
             "--device", "cpu", "--threshold", "0.5", "--layers", "blocks.1.mlp.act,blocks.3.mlp.act",
             "--no_progress"]


def harvest_loop() -> HarvestLoop:
    accs = [ReservoirAcc(k=6, context_tokens=2), TopActivationAcc(k=4, context_tokens=2), CorrelationAcc(),
            InputTokenAcc(), OutputProbAcc(), RandomWindowAcc(), ActivationHistogramAcc(),
            QuantileExampleAcc(context_tokens=2)]
    return HarvestLoop(accs, threshold=0.2, seed=3, device="cpu", progress=False)


def synthetic_stream():
    return make_stream(11, N_BATCHES, B=4, S=12, V=17, widths={"h.0.mlp": 9, "h.1.attn": 6})
