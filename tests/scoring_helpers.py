"""A small synthetic harvest with planted rules, shared by the scoring tests."""

from __future__ import annotations

import functools

from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
from autointerp.accumulators.window_pool import RandomWindowAcc
from autointerp.harvest import HarvestLoop, HarvestResult
from autointerp.testing.synthetic import SyntheticModel


@functools.lru_cache(maxsize=4)
def synthetic_harvest(
    seed: int = 0, n_batches: int = 8, k: int = 30, cluster_prob: float = 0.0, subthreshold: float = 0.0, threshold: float = 0.0
) -> tuple[SyntheticModel, HarvestResult]:
    """The default planted model harvested (cached: treat the result as read-only).

    ``cluster_prob`` / ``subthreshold``: `SyntheticModel`'s; ``threshold``: the harvest's.
    """
    model = SyntheticModel.default(seed=seed, cluster_prob=cluster_prob, subthreshold=subthreshold)
    loop = HarvestLoop(
        [
            ReservoirAcc(k=k, context_tokens=10),
            TopActivationAcc(k=10, context_tokens=10),
            InputTokenAcc(),
            RandomWindowAcc(n_windows=256, window_len=32),
        ],
        vocab_size=model.vocab_size,
        decode=model.decode,
        seed=seed,
        threshold=threshold,
        progress=False,
    )
    return model, loop.run(model.batches(n_batches, 32, 64))


@functools.lru_cache(maxsize=4)
def synthetic_output_harvest(seed: int = 0, source: str = "weights", n_batches: int = 8) -> tuple[SyntheticModel, HarvestResult]:
    """The default planted model harvested with its output side planted (cached: read-only).

    ``source="weights"``: the logit lens from the model's planted weights, attached
    after the pass as `autointerp harvest` does; ``"probs"``: no weights, the planted
    next-token probabilities through `OutputProbAcc` instead.
    """
    from autointerp.accumulators import OutputProbAcc
    from autointerp.run_harvest import attach_output_logits

    if source not in ("weights", "probs"):
        raise ValueError(f"source must be 'weights' or 'probs', got {source!r}")
    model = SyntheticModel.default(seed=seed)
    accs = [
        ReservoirAcc(k=30, context_tokens=10),
        TopActivationAcc(k=10, context_tokens=10),
        InputTokenAcc(),
        RandomWindowAcc(n_windows=256, window_len=32),
    ]
    if source == "probs":
        accs.append(OutputProbAcc())
    loop = HarvestLoop(accs, vocab_size=model.vocab_size, decode=model.decode, seed=seed, progress=False)
    result = loop.run(model.batches(n_batches, 32, 64, output_probs=source == "probs"))
    if source == "weights":
        attach_output_logits(result, model, k=10, decode=model.decode, log=lambda _msg: None)
    return model, result
