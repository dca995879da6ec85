"""Which tokens the model predicts when a component fires: sums of output probability mass,
exact (dense) or in a weighted heavy-hitter summary with a stated error (bounded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._modes import DEFAULT_SUMMARY_K, TableModeStates
from autointerp.accumulators._sparse import StagedSum, StagedTableAcc, firing_csr
from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import DEFAULT_MIN_SUPPORT, rank_columns, rank_summary
from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators.heavy_hitters import EMPTY
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


#: the bounded mode computes a batch's exact rows for this many float32 elements of components at a time
BOUNDED_ROWS_ELEMENTS = 1 << 24


class OutputProbAcc(TableModeStates, StagedTableAcc):
    """Output probability mass at each firing position, summed per (component, token).

    Each batch's sums are one sparse-times-dense product in float32, collected in
    a float32 buffer that is folded into float64 totals before any component has
    more than ``flush_firings`` firings in it (so each float32 partial sum has at
    most that many terms); the float64 totals do not drift over 1e9 tokens.
    Finalized per component: `TokenStats` with precision = mass at firings /
    total mass of the token, recall = mean probability of the token when firing,
    and PMI (precision ranked by its Wilson 95% lower bound with the token's
    total mass as the trials, PMI with mass >= ``min_support`` first).

    Bounded mode (``mode="bounded"``, or ``"auto"`` when the loop's `choose_mode`
    finds the dense table does not fit): a weighted Misra–Gries summary of
    ``summary_k`` (token, mass) counters per component. Each batch's exact rows
    of the components that fired (computed ``BOUNDED_ROWS_ELEMENTS`` at a time)
    are pruned to their top ``summary_k`` (the Misra–Gries prune) and merged into it, so every reported mass is at most
    ``firings / (summary_k + 1)`` below the true one (``count_error``: each
    firing adds a mass of 1 to its component's row). ``token_mass [V]`` and
    ``comp_count [N]`` stay exact.
    """

    staged_table = "joint"

    name = "output_tokens"
    needs_output_probs = True
    prompt_section = "output_tokens.j2"
    #: the float32 buffer is folded into the float64 table before it holds more
    #: than this many firings of one component (see `StagedSum`)
    flush_firings: int = 4096

    _summary_dtype = torch.float64

    def __init__(self, top_k: int = 10, min_mass: float = 1e-6, mode: str = "auto",
                 summary_k: int = DEFAULT_SUMMARY_K, min_support: float = DEFAULT_MIN_SUPPORT):
        self.top_k, self.min_mass, self.min_support = top_k, min_mass, min_support
        self._init_mode(mode, summary_k)

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_mass": self.min_mass, **self._mode_config(),
                "min_support": self.min_support}

    def bounded_state_bytes(self, ctx: HarvestContext) -> int:
        V, N = ctx.vocab_size or 0, ctx.n_components
        return N * self.summary_k * (4 + 8) + 8 * N + 8 * (V + N + 1)

    def _summary_columns(self) -> int:
        return self.token_mass.shape[0]

    def _table_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols = self.joint.nonzero(as_tuple=True)
        return rows, cols, self.joint[rows, cols]

    def dense_state_bytes(self, ctx: HarvestContext) -> int:
        V = ctx.vocab_size or 0
        N = ctx.n_components
        # float64 table, plus the float32 staging buffer of per-batch products
        return 8 * (N * V + V + N + 1) + 4 * N * V

    def _setup_mode(self, ctx: HarvestContext, mode: str) -> None:
        V, N = ctx.require_vocab(type(self).__name__), ctx.n_components
        if mode == "dense":
            self.add_state("joint", torch.zeros(N, V, dtype=torch.float64))
        else:
            k = self.summary_k
            self.add_state("hh_ids", torch.full((N, k), EMPTY, dtype=torch.int32), reduce=None)
            self.add_state("hh_counts", torch.zeros(N, k, dtype=torch.float64), reduce=None)
            self.add_state("hh_error", torch.zeros(N, dtype=torch.float64), reduce=None)
        self.add_state("token_mass", torch.zeros(V, dtype=torch.float64))
        self.add_state("comp_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))
        # the bounded mode has no table to stage into: a buffer of zero columns is a no-op
        self._staged = StagedSum((N, V if mode == "dense" else 0), ctx.device, self.flush_firings)

    def update(self, batch: FiringBatch) -> None:
        if batch.output_probs is None:
            raise ValueError("OutputProbAcc needs output_probs [B, S, V] in every HarvestBatch, got None")
        probs = batch.output_probs
        if batch.n_firings and self.bounded:
            self._update_summary(batch, probs)
        elif batch.n_firings:
            self._staged.add(self.joint, batch.firing_comp, batch.firing_pos, batch.n_positions,
                             lambda a, b: probs[:, a:b].float().contiguous())
        self.token_mass += _valid_column_sums(batch.valid, probs).double()
        self.comp_count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid

    def _update_summary(self, batch: FiringBatch, probs: torch.Tensor) -> None:
        """Merge the batch's exact rows ``Fᵀ X`` of the components that fired, a block of components at a time."""
        V = probs.shape[1]
        dense_probs = probs if probs.dtype == torch.float32 else probs.float()
        order = torch.argsort(batch.firing_comp, stable=True)
        comp, pos = batch.firing_comp[order], batch.firing_pos[order]
        touched, per = torch.unique_consecutive(comp, return_counts=True)
        ends = torch.cumsum(per, 0).tolist()
        step = max(1, BOUNDED_ROWS_ELEMENTS // max(V, 1))
        start_f = 0
        for a in range(0, touched.numel(), step):
            rows = touched[a : a + step]
            stop_f = ends[a + rows.numel() - 1]
            local = torch.searchsorted(rows, comp[start_f:stop_f])
            F = firing_csr(local, pos[start_f:stop_f], rows.numel(), batch.n_positions)
            block = torch.zeros(rows.numel(), V, dtype=torch.float32, device=probs.device).addmm_(F, dense_probs)
            self._stage_rows(rows, block)
            start_f = stop_f

    def _stage_rows(self, rows: torch.Tensor, block: torch.Tensor) -> None:
        """A batch's exact rows, pruned to k counters (Misra–Gries: subtract the (k+1)-th mass, which joins
        the rows' error), wait to be merged into the summary."""
        k, V = self.summary_k, block.shape[1]
        top, cols = block.double().topk(min(k + 1, V), dim=1)
        cut = top[:, k] if V > k else torch.zeros(rows.numel(), dtype=torch.float64, device=block.device)
        w = top[:, :k] - cut[:, None]
        self.hh_error.index_add_(0, rows, cut)
        keep = w > 0
        self._stage(rows[:, None].expand_as(w)[keep], cols[:, :k][keep], w[keep])

    def finalize(self) -> Mapping[int, Any]:
        try:
            return self.finalize_block(0, self._require_bound().n_components)
        finally:
            self.finalize_done()

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The token lists of components ``lo <= i < hi``: those rows of the table ranked alone."""
        ctx = self._require_bound()
        self._flush()
        common = {"min_count": self.min_mass, "min_support": self.min_support}
        if self.bounded:
            ids, counts, error = self._block_summary()
            ranked = rank_summary(ids[lo:hi], counts[lo:hi], error[lo:hi], self.comp_count[lo:hi], self.token_mass,
                                  float(self.n_tokens), self.top_k, **common)
        else:
            ranked = rank_columns(self.joint[lo:hi], self.comp_count[lo:hi], self.token_mass, float(self.n_tokens),
                                  self.top_k, **common)
        return dict(zip(range(lo, hi), token_stats_per_row(ranked, ctx)))
