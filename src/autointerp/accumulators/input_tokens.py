"""Which input tokens a component fires on: exact counts of (component, token) pairs,
or, in the bounded mode, a heavy-hitter summary of them with a stated error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._modes import DEFAULT_SUMMARY_K, TableModeStates
from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import DEFAULT_MIN_SUPPORT, rank_columns, rank_summary
from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.accumulators.heavy_hitters import EMPTY, csr_tensor
from autointerp.batch import FiringBatch


class InputTokenAcc(TableModeStates, TensorAccumulator):
    """Hard counts of the token at each firing position, and of every token overall.

    Dense mode: ``joint [N, V]`` int64 (exact). Bounded mode: a Misra–Gries
    summary of ``summary_k`` (token, count) counters per component
    (`autointerp.accumulators.heavy_hitters`), so every reported count is at most
    ``firings / (summary_k + 1)`` below the true one (``count_error`` says by how
    much at most). Both keep ``token_count [V]``, ``comp_count [N]`` exact.
    ``mode="auto"`` is dense unless the loop's `choose_mode` finds it does not fit.

    Finalized per component: `TokenStats` with the top ``top_k`` tokens by
    precision P(fires | token) (ranked by its Wilson 95% lower bound), recall
    P(token | fires) and PMI (pairs seen at least ``min_support`` times first);
    see docs/statistics.md.
    """

    name = "input_tokens"
    prompt_section = "input_tokens.j2"
    _summary_dtype = torch.int64

    def __init__(self, top_k: int = 10, min_count: int = 1, mode: str = "auto",
                 summary_k: int = DEFAULT_SUMMARY_K, min_support: float = DEFAULT_MIN_SUPPORT):
        self.top_k, self.min_count, self.min_support = top_k, min_count, min_support
        self._init_mode(mode, summary_k)

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_count": self.min_count, **self._mode_config(),
                "min_support": self.min_support}

    def dense_state_bytes(self, ctx: HarvestContext) -> int:
        V = ctx.vocab_size or 0
        return 8 * (ctx.n_components * V + V + ctx.n_components + 1)

    def bounded_state_bytes(self, ctx: HarvestContext) -> int:
        V, N = ctx.vocab_size or 0, ctx.n_components
        return N * self.summary_k * (4 + 8) + 8 * N + 8 * (V + N + 1) + self.pending_bytes(ctx)

    def summary_width(self, ctx: HarvestContext) -> int:
        return ctx.vocab_size or 0

    def _table_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols = self.joint.nonzero(as_tuple=True)
        return rows, cols, self.joint[rows, cols]

    def _setup_mode(self, ctx: HarvestContext, mode: str) -> None:
        V, N = ctx.require_vocab(type(self).__name__), ctx.n_components
        if mode == "dense":
            self.add_state("joint", torch.zeros(N, V, dtype=torch.int64))
        else:
            k = self.summary_k
            self.add_state("hh_ids", torch.full((N, k), EMPTY, dtype=torch.int32), reduce=None)
            self.add_state("hh_counts", torch.zeros(N, k, dtype=torch.int64), reduce=None)
            self.add_state("hh_error", torch.zeros(N, dtype=torch.int64), reduce=None)
        self.add_state("token_count", torch.zeros(V, dtype=torch.int64))
        self.add_state("comp_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))

    def update(self, batch: FiringBatch) -> None:
        V = self.token_count.shape[0]
        if self.bounded:
            if batch.n_firings:
                # X [P, V]: each position's token, once (masked positions never fire; their ids may be padding)
                P, dev = batch.n_positions, batch.tokens.device
                X = csr_tensor(torch.arange(P + 1, device=dev), batch.tokens.clamp(0, V - 1),
                               torch.ones(P, dtype=torch.float64, device=dev), (P, V))
                self._stage_product(batch.firing_comp, batch.firing_pos, X)
        else:
            tok = batch.tokens[batch.firing_pos]
            self.joint.view(-1).index_add_(0, batch.firing_comp * V + tok, torch.ones_like(tok))
        valid_tok = batch.tokens[batch.valid]
        self.token_count.index_add_(0, valid_tok, torch.ones_like(valid_tok))
        self.comp_count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid

    def finalize(self) -> Mapping[int, Any]:
        try:
            return self.finalize_block(0, self._require_bound().n_components)
        finally:
            self.finalize_done()

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The token lists of components ``lo <= i < hi``: those rows of the table ranked alone."""
        ctx = self._require_bound()
        common = {"min_count": max(self.min_count, 1), "min_support": self.min_support}
        if self.bounded:
            ids, counts, error = self._block_summary()
            ranked = rank_summary(ids[lo:hi], counts[lo:hi], error[lo:hi], self.comp_count[lo:hi], self.token_count,
                                  float(self.n_tokens), self.top_k, **common)
        else:
            ranked = rank_columns(self.joint[lo:hi], self.comp_count[lo:hi], self.token_count, float(self.n_tokens),
                                  self.top_k, **common)
        return dict(zip(range(lo, hi), token_stats_per_row(ranked, ctx)))
