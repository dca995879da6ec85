"""Which tokens the model predicts when a component fires: sums of output probability mass,
exact (dense) or in a weighted heavy-hitter summary with a stated error (bounded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._modes import DEFAULT_SUMMARY_K, TableModeStates
from autointerp.accumulators._sparse import StagedSum, StagedTableAcc
from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import DEFAULT_MIN_SUPPORT, rank_columns, rank_summary
from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators.heavy_hitters import EMPTY, csr_rows, scratch_width
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


#: the bounded mode takes the top tokens of a batch's fired positions about this many probabilities at a time
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
    ``summary_k`` (token, mass) counters per component. Each firing adds the
    ``position_k`` most probable tokens of its position (default: ``summary_k``;
    one ``topk`` per firing position of the batch, so a batch costs its
    positions x V plus its firings x ``position_k``, whatever N) and the
    ``(position_k + 1)``-th probability of that position -- the most any
    dropped token had there -- joins the component's error. So every reported
    mass is below the true one by at most ``count_error``, which is at most
    ``firings / (summary_k + 1)`` (the Misra–Gries prune: each firing adds a
    mass of at most 1) plus the sum of those cuts (at most
    ``firings / (position_k + 1)``; on a language model's next-token
    distribution about 1e-3 a firing). ``token_mass [V]`` and ``comp_count [N]``
    stay exact.
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
                 summary_k: int = DEFAULT_SUMMARY_K, min_support: float = DEFAULT_MIN_SUPPORT,
                 position_k: int | None = None):
        self.top_k, self.min_mass, self.min_support = top_k, min_mass, min_support
        self._init_mode(mode, summary_k)
        if position_k is None:
            position_k = summary_k
        if not isinstance(position_k, int) or isinstance(position_k, bool) or position_k < 1:
            raise ValueError(f"OutputProbAcc(position_k={position_k!r}): expected an int >= 1 (the most probable "
                             "tokens of each firing position the bounded mode adds; default summary_k)")
        self.position_k = position_k

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_mass": self.min_mass, **self._mode_config(),
                "min_support": self.min_support, "position_k": self.position_k}

    def bounded_state_bytes(self, ctx: HarvestContext) -> int:
        V, N = ctx.vocab_size or 0, ctx.n_components
        return N * self.summary_k * (4 + 8) + 8 * N + 8 * (V + N + 1) + self.pending_bytes(ctx)

    def summary_width(self, ctx: HarvestContext) -> int:
        return ctx.vocab_size or 0

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
        """Merge each firing's top ``position_k`` tokens of its position; the ``(position_k + 1)``-th
        probability of the position (what any dropped token had at most) joins the component's error."""
        V = probs.shape[1]
        m = min(self.position_k, V)
        comp, pos = batch.firing_comp, batch.firing_pos
        # the positions where something fired, once each: [U, V] -> their top m (+1 for the cut)
        where, local = torch.unique(pos, return_inverse=True)
        top_p = torch.empty(where.numel(), m, dtype=torch.float64, device=probs.device)
        top_t = torch.empty(where.numel(), m, dtype=torch.int64, device=probs.device)
        cut = torch.zeros(where.numel(), dtype=torch.float64, device=probs.device)
        step = max(1, BOUNDED_ROWS_ELEMENTS // max(V, 1))
        # rows a little narrower than 64 (m + 1) are padded to it with -inf (never among the top): torch's
        # CPU heap topk (see heavy_hitters.scratch_width); 512 rows of 8,192 took 20.8 ms, of 8,256 15.2
        width = scratch_width(V, m, probs.device)
        every = where.numel() == probs.shape[0]  # every position fired (the usual case): slices, no gathered copy
        for a in range(0, where.numel(), step):
            rows = (probs[a : a + step] if every else probs[where[a : a + step]]).float()
            if width > V:
                rows = torch.cat([rows, rows.new_full((rows.shape[0], width - V), float("-inf"))], 1)
            p, t = rows.topk(min(m + 1, V), dim=1)
            top_p[a : a + step], top_t[a : a + step] = p[:, :m].double(), t[:, :m]
            if V > m:
                cut[a : a + step] = p[:, m].double()
        self.hh_error.index_add_(0, comp, cut[local])
        # X [P, V]: each fired position's top m tokens and their probabilities
        X = csr_rows(where.repeat_interleave(m), top_t.reshape(-1), top_p.reshape(-1), batch.n_positions, V)
        self._stage_product(comp, pos, X)

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
