"""Which components fire together: exact firing and co-firing counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators.associations import rank_columns, rows_of
from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.accumulators.output_probs import firing_matrix
from autointerp.batch import FiringBatch
from autointerp.schemas import ComponentCorrelations, CorrelatedComponent

# float32 holds integers exactly up to 2^24: a batch's co-firing product is split
# into position chunks no longer than that before it is added to the int64 table.
_EXACT_F32 = 1 << 24


class CorrelationAcc(TensorAccumulator):
    """Firing counts ``[N]`` and co-firing counts ``[N, N]``, both int64.

    Each batch adds ``Fᵀ F`` for its firing indicator F, computed as a sparse
    (firings) times dense product. Finalized per component: partners ranked by
    precision P(this | partner), recall P(partner | this) and PMI, plus the
    bottom-k by PMI among partners that co-fired at least once.
    """

    name = "correlations"
    prompt_section = "correlations.j2"

    def __init__(self, top_k: int = 10):
        self.top_k = top_k

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def state_bytes(self, ctx: HarvestContext) -> int:
        N = ctx.n_components
        return 8 * N * N + 4 * N * N + 8 * N  # table + one float32 product

    def setup(self, ctx: HarvestContext) -> None:
        N = ctx.n_components
        self.add_state("cofire", torch.zeros(N, N, dtype=torch.int64))
        self.add_state("count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))

    def update(self, batch: FiringBatch) -> None:
        self.count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid
        if not batch.n_firings:
            return
        P = batch.n_positions
        for start in range(0, P, _EXACT_F32):
            stop = min(P, start + _EXACT_F32)
            if start == 0 and stop == P:
                sub = batch
                dense = batch.fires.float()
            else:
                keep = (batch.firing_pos >= start) & (batch.firing_pos < stop)
                sub = _slice(batch, keep, start, stop)
                dense = batch.fires[start:stop].float()
            product = torch.sparse.mm(firing_matrix(sub), dense)
            self.cofire += product.round_().long()

    def finalize(self) -> Mapping[int, Any]:
        ctx = self._require_bound()
        ranked = rank_columns(
            self.cofire, self.count, self.count, float(self.n_tokens), self.top_k,
            min_count=1, exclude_diagonal_from=0, bottom_pmi=True,
        )
        # rank_columns' precision is joint / col_total = P(this | partner), recall = P(partner | this)
        rows = {m: rows_of(r) for m, r in ranked.items()}
        key = ctx.space.key

        def partners(entries: list[tuple[int, float, float, float, float]]) -> list[CorrelatedComponent]:
            return [CorrelatedComponent(key(c), int(j), p, r, pmi) for c, j, p, r, pmi in entries]

        return {
            i: ComponentCorrelations(
                top_precision=partners(rows["precision"][i]),
                top_recall=partners(rows["recall"][i]),
                top_pmi=partners(rows["pmi"][i]),
                bottom_pmi=partners(rows["bottom_pmi"][i]),
            )
            for i in range(ctx.n_components)
        }


def _slice(batch: FiringBatch, keep: torch.Tensor, start: int, stop: int) -> FiringBatch:
    """The firings of positions [start, stop), re-based to start at 0 (for chunked products)."""
    from attrs import evolve

    return evolve(
        batch,
        acts=batch.acts[start:stop],
        fires=batch.fires[start:stop],
        valid=batch.valid[start:stop],
        firing_pos=batch.firing_pos[keep] - start,
        firing_comp=batch.firing_comp[keep],
        firing_act=batch.firing_act[keep],
    )
