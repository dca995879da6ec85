"""Which tokens the model predicts when a component fires: sums of output probability mass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._sparse import StagedSum, StagedTableAcc
from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import rank_columns
from autointerp.accumulators.base import HarvestContext
from autointerp.batch import FiringBatch


def _valid_column_sums(valid: torch.Tensor, probs: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """``probs[valid].sum(0)`` in float32, without a ``[B·S, V]`` copy.

    A matrix-vector product over the valid rows; half-precision probabilities are
    converted a column block at a time, since a bf16 product would also round
    its output to bf16 (three significant digits).
    """
    w = valid.to(torch.float32)
    if probs.dtype == torch.float32:
        return w @ probs
    return torch.cat([w @ probs[:, a : a + block].float() for a in range(0, probs.shape[1], block)])


class OutputProbAcc(StagedTableAcc):
    """Output probability mass at each firing position, summed per (component, token).

    Each batch's sums are one sparse-times-dense product in float32, collected in
    a float32 buffer that is folded into float64 totals before any component has
    more than ``flush_firings`` firings in it (so each float32 partial sum has at
    most that many terms); the float64 totals do not drift over 1e9 tokens.
    Finalized per component: `TokenStats` with precision = mass at firings /
    total mass of the token, recall = mean probability of the token when firing,
    and PMI.
    """

    staged_table = "joint"

    name = "output_tokens"
    needs_output_probs = True
    prompt_section = "output_tokens.j2"
    #: the float32 buffer is folded into the float64 table before it holds more
    #: than this many firings of one component (see `StagedSum`)
    flush_firings: int = 4096

    def __init__(self, top_k: int = 10, min_mass: float = 1e-6):
        self.top_k, self.min_mass = top_k, min_mass

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_mass": self.min_mass}

    def state_bytes(self, ctx: HarvestContext) -> int:
        V = ctx.vocab_size or 0
        N = ctx.n_components
        # float64 table, plus the float32 staging buffer of per-batch products
        return 8 * (N * V + V + N + 1) + 4 * N * V

    def setup(self, ctx: HarvestContext) -> None:
        V, N = ctx.require_vocab(type(self).__name__), ctx.n_components
        self.add_state("joint", torch.zeros(N, V, dtype=torch.float64))
        self.add_state("token_mass", torch.zeros(V, dtype=torch.float64))
        self.add_state("comp_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))
        self._staged = StagedSum((N, V), ctx.device, self.flush_firings)

    def update(self, batch: FiringBatch) -> None:
        if batch.output_probs is None:
            raise ValueError("OutputProbAcc needs output_probs [B, S, V] in every HarvestBatch, got None")
        probs = batch.output_probs
        if batch.n_firings:
            self._staged.add(self.joint, batch.firing_comp, batch.firing_pos, batch.n_positions,
                             lambda a, b: probs[:, a:b].float().contiguous())
        self.token_mass += _valid_column_sums(batch.valid, probs).double()
        self.comp_count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid

    def finalize(self) -> Mapping[int, Any]:
        ctx = self._require_bound()
        self._flush()
        ranked = rank_columns(
            self.joint, self.comp_count, self.token_mass, float(self.n_tokens), self.top_k,
            min_count=self.min_mass,
        )
        return dict(enumerate(token_stats_per_row(ranked, ctx)))
