"""Which components fire together: exact firing and co-firing counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators.associations import rank_columns, rows_of
from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators._sparse import StagedSum, StagedTableAcc
from autointerp.batch import FiringBatch
from autointerp.schemas import ComponentCorrelations, CorrelatedComponent

# float32 holds integers exactly up to 2^24: a batch's co-firing product is split
# into position chunks no longer than that, and the float32 staging buffer is
# folded into the int64 table before any of its entries could pass it.
_EXACT_F32 = 1 << 24


class CorrelationAcc(StagedTableAcc):
    """Firing counts ``[N]`` and co-firing counts ``[N, N]``, both int64.

    Each batch adds ``Fᵀ F`` for its firing indicator F, computed as a sparse
    (firings, CSR) times dense product in float32, summed in place into a float32
    buffer that is folded into the int64 table before any entry could pass 2^24
    (float32 counts integers exactly up to there; see `StagedSum`). A batch of
    more than 2^24 positions is split into position chunks for the same reason.
    Finalized per component: partners ranked by precision P(this | partner),
    recall P(partner | this) and PMI, plus the bottom-k by PMI among partners
    that co-fired at least once.
    """

    staged_table = "cofire"

    name = "correlations"
    prompt_section = "correlations.j2"

    def __init__(self, top_k: int = 10):
        self.top_k = top_k

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def state_bytes(self, ctx: HarvestContext) -> int:
        N = ctx.n_components
        return 8 * N * N + 4 * N * N + 8 * N  # int64 table + float32 staging buffer + counts

    def setup(self, ctx: HarvestContext) -> None:
        N = ctx.n_components
        self.add_state("cofire", torch.zeros(N, N, dtype=torch.int64))
        self.add_state("count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))
        self._staged = StagedSum((N, N), ctx.device, _EXACT_F32)

    def update(self, batch: FiringBatch) -> None:
        self.count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid
        if not batch.n_firings:
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
        ctx = self._require_bound()
        self._flush()
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

