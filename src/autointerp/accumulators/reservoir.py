"""Uniform random activation examples: an exact, mergeable, vectorized reservoir."""

from __future__ import annotations

from torch import Tensor

from autointerp.accumulators.sampling import KeyedSampler, firing_hash
from autointerp.batch import FiringBatch


class ReservoirAcc(KeyedSampler):
    """A uniform random sample of k firings per component, exact over the whole stream.

    Keys are a hash of (seed, sequence id, position, component), so the sample is
    reproducible from the seed and identical however the stream is batched,
    resumed or split across workers. Examples come out in key order, which is
    itself a uniformly random order: the first m are a uniform sample of size m,
    so a prefix can be shown to the explainer and the rest held out.
    """

    name = "examples"
    prompt_section = "examples.j2"

    def keys(self, batch: FiringBatch, seq: Tensor, pos_in_seq: Tensor, comp: Tensor, act: Tensor) -> Tensor:
        ctx = self._require_bound()
        return firing_hash(ctx.seed, seq, pos_in_seq, comp)
