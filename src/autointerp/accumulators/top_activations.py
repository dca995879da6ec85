"""Max-activating examples, on the same keyed machinery as the reservoir."""

from __future__ import annotations

from torch import Tensor

from autointerp.accumulators.sampling import KeyedSampler, descending_activation_key, firing_hash
from autointerp.batch import FiringBatch


class TopActivationAcc(KeyedSampler):
    """The k max-activating firings per component (ties broken uniformly at random)."""

    name = "top_examples"
    prompt_section = "top_examples.j2"

    def keys(self, batch: FiringBatch, seq: Tensor, pos_in_seq: Tensor, comp: Tensor, act: Tensor) -> Tensor:
        ctx = self._require_bound()
        return descending_activation_key(act, firing_hash(ctx.seed + 1, seq, pos_in_seq, comp))
