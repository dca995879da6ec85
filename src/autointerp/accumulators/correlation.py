"""Which components fire together: exact firing counts, and co-firing counts that are
exact (dense) or kept in a per-component heavy-hitter summary of partners (bounded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._modes import DEFAULT_SUMMARY_K, TableModeStates
from autointerp.accumulators.associations import DEFAULT_MIN_SUPPORT, Entry, rank_columns, rank_summary, rows_of
from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators._sparse import StagedSum, StagedTableAcc
from autointerp.accumulators.heavy_hitters import EMPTY, csr_rows
from autointerp.batch import FiringBatch
from autointerp.schemas import ComponentCorrelations, CorrelatedComponent

# float32 holds integers exactly up to 2^24: a batch's co-firing product is split
# into position chunks no longer than that, and the float32 staging buffer is
# folded into the int64 table before any of its entries could pass it.
_EXACT_F32 = 1 << 24

class CorrelationAcc(TableModeStates, StagedTableAcc):
    """Firing counts ``[N]`` and co-firing counts ``[N, N]``, both int64.

    Each batch adds ``Fᵀ F`` for its firing indicator F, computed as a sparse
    (firings, CSR) times dense product in float32, summed in place into a float32
    buffer that is folded into the int64 table before any entry could pass 2^24
    (float32 counts integers exactly up to there; see `StagedSum`). A batch of
    more than 2^24 positions is split into position chunks for the same reason.
    Finalized per component: partners ranked by precision P(this | partner),
    recall P(partner | this) and PMI, plus the bottom-k by PMI among partners
    that co-fired at least once. Precision is ranked by its Wilson 95% lower
    bound, PMI with co-firing >= ``min_support`` first, bottom PMI by the Wilson
    upper bound (see docs/statistics.md).

    Bounded mode (``mode="bounded"``, or ``"auto"`` when the loop's `choose_mode`
    finds the ``[N, N]`` table does not fit): a Misra–Gries summary of
    ``summary_k`` (partner, count) counters per component; each batch's
    co-firing counts (summed with the summary's counters, then the
    Misra–Gries prune: `heavy_hitters.merge_product`) are merged into it, so every reported count is at most
    ``(sum of the component's co-firings) / (summary_k + 1)`` below the true one
    (``count_error``). Firing counts stay exact.
    """

    staged_table = "cofire"

    name = "correlations"
    prompt_section = "correlations.j2"

    _summary_dtype = torch.int64
    _exclude_self = True

    def __init__(self, top_k: int = 10, mode: str = "auto", summary_k: int = DEFAULT_SUMMARY_K,
                 min_support: float = DEFAULT_MIN_SUPPORT):
        self.top_k, self.min_support = top_k, min_support
        self._init_mode(mode, summary_k)

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, **self._mode_config(), "min_support": self.min_support}

    def dense_state_bytes(self, ctx: HarvestContext) -> int:
        N = ctx.n_components
        return 8 * N * N + 4 * N * N + 8 * N  # int64 table + float32 staging buffer + counts

    def bounded_state_bytes(self, ctx: HarvestContext) -> int:
        N = ctx.n_components
        # summary + its error + counts, and the buffer of batches waiting to be merged
        return N * self.summary_k * (4 + 8) + 8 * N + 8 * N + 8 + self.pending_bytes(ctx)

    def summary_width(self, ctx: HarvestContext) -> int:
        return ctx.n_components

    def _table_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        off = self.cofire.clone()
        off.fill_diagonal_(0)
        rows, cols = off.nonzero(as_tuple=True)
        return rows, cols, off[rows, cols]

    def _setup_mode(self, ctx: HarvestContext, mode: str) -> None:
        N = ctx.n_components
        if mode == "dense":
            self.add_state("cofire", torch.zeros(N, N, dtype=torch.int64))
        else:
            k = self.summary_k
            self.add_state("hh_ids", torch.full((N, k), EMPTY, dtype=torch.int32), reduce=None)
            self.add_state("hh_counts", torch.zeros(N, k, dtype=torch.int64), reduce=None)
            self.add_state("hh_error", torch.zeros(N, dtype=torch.int64), reduce=None)
        self.add_state("count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))
        self._staged = StagedSum((N, N if mode == "dense" else 0), ctx.device, _EXACT_F32)

    def update(self, batch: FiringBatch) -> None:
        self.count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid
        if not batch.n_firings:
            return
        if self.bounded:
            comp, pos = batch.firing_comp, batch.firing_pos
            X = csr_rows(pos, comp, torch.ones(comp.numel(), dtype=torch.float64, device=comp.device),
                         batch.n_positions, self.count.shape[0])
            self._stage_product(comp, pos, X)
            return
        P = batch.n_positions
        for start in range(0, P, _EXACT_F32):
            stop = min(P, start + _EXACT_F32)
            fires = batch.fires[start:stop]
            if start == 0 and stop == P:
                comp, pos = batch.firing_comp, batch.firing_pos
            else:
                keep = (batch.firing_pos >= start) & (batch.firing_pos < stop)
                comp, pos = batch.firing_comp[keep], batch.firing_pos[keep] - start
            self._staged.add(self.cofire, comp, pos, stop - start,
                             lambda a, b, fires=fires: fires[:, a:b].float().contiguous())

    def finalize(self) -> Mapping[int, Any]:
        try:
            return self.finalize_block(0, self._require_bound().n_components)
        finally:
            self.finalize_done()

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The partners of components ``lo <= i < hi``: those rows of the co-firing table ranked alone."""
        ctx = self._require_bound()
        self._flush()
        common = {"min_count": 1, "bottom_pmi": True, "min_support": self.min_support}
        if self.bounded:
            ids, counts, error = self._block_summary()
            ranked = rank_summary(ids[lo:hi], counts[lo:hi], error[lo:hi], self.count[lo:hi], self.count,
                                  float(self.n_tokens), self.top_k, **common)
        else:
            ranked = rank_columns(self.cofire[lo:hi], self.count[lo:hi], self.count, float(self.n_tokens), self.top_k,
                                  exclude_diagonal_from=lo, **common)
        # rank_columns' precision is joint / col_total = P(this | partner), recall = P(partner | this)
        rows = {m: rows_of(r) for m, r in ranked.items()}
        key = ctx.space.key

        def partners(entries: list[Entry]) -> list[CorrelatedComponent]:
            return [CorrelatedComponent(key(c), int(j), p, r, pmi, int(err), low)
                    for c, j, p, r, pmi, low, err in entries]

        return {
            lo + r: ComponentCorrelations(
                top_precision=partners(rows["precision"][r]),
                top_recall=partners(rows["recall"][r]),
                top_pmi=partners(rows["pmi"][r]),
                bottom_pmi=partners(rows["bottom_pmi"][r]),
            )
            for r in range(hi - lo)
        }

