"""Which tokens the model predicts when a component fires: sums of output probability mass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import rank_columns
from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.accumulators.input_tokens import require_vocab
from autointerp.batch import FiringBatch


def firing_matrix(batch: FiringBatch) -> torch.Tensor:
    """Sparse ``[N, P]`` float32 matrix with a 1 at every (component, position) firing.

    Firings come sorted by (position, component), so the ``[P, N]`` layout is
    already coalesced; its transpose is the ``[N, P]`` matrix we want.
    """
    idx = torch.stack([batch.firing_pos, batch.firing_comp])
    vals = torch.ones(batch.n_firings, dtype=torch.float32, device=batch.device)
    pn = torch.sparse_coo_tensor(
        idx, vals, (batch.n_positions, batch.space.n_components), is_coalesced=True, check_invariants=False
    )
    return pn.t()


class OutputProbAcc(TensorAccumulator):
    """Output probability mass at each firing position, summed per (component, token).

    Each batch's sums are one sparse-times-dense product in float32 (exact enough
    for one batch) folded into float64 totals, which do not drift over 1e9 tokens.
    Finalized per component: `TokenStats` with precision = mass at firings /
    total mass of the token, recall = mean probability of the token when firing,
    and PMI.
    """

    name = "output_tokens"
    needs_output_probs = True
    prompt_section = "output_tokens.j2"

    def __init__(self, top_k: int = 10, min_mass: float = 1e-6):
        self.top_k, self.min_mass = top_k, min_mass

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_mass": self.min_mass}

    def state_bytes(self, ctx: HarvestContext) -> int:
        V = ctx.vocab_size or 0
        N = ctx.n_components
        # float64 table, plus the float32 per-batch product
        return 8 * (N * V + V + N + 1) + 4 * N * V

    def setup(self, ctx: HarvestContext) -> None:
        V, N = require_vocab(self, ctx), ctx.n_components
        self.add_state("joint", torch.zeros(N, V, dtype=torch.float64))
        self.add_state("token_mass", torch.zeros(V, dtype=torch.float64))
        self.add_state("comp_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))

    def update(self, batch: FiringBatch) -> None:
        if batch.output_probs is None:
            raise ValueError("OutputProbAcc needs output_probs [B, S, V] in every HarvestBatch, got None")
        probs = batch.output_probs.float()
        if batch.n_firings:
            self.joint += torch.sparse.mm(firing_matrix(batch), probs).double()
        self.token_mass += probs[batch.valid].sum(0, dtype=torch.float64)
        self.comp_count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid

    def finalize(self) -> Mapping[int, Any]:
        ctx = self._require_bound()
        ranked = rank_columns(
            self.joint, self.comp_count, self.token_mass, float(self.n_tokens), self.top_k,
            min_count=self.min_mass,
        )
        return dict(enumerate(token_stats_per_row(ranked, ctx)))
