"""Per-row heavy-hitter summaries as tensors: mergeable Misra–Gries, k counters a row.

The bounded modes of the token and co-firing tables keep, for every component
(row), at most ``k`` (column, count) counters instead of a dense row of ``M``
columns. The structure is Misra–Gries in its mergeable form (Misra & Gries 1982;
Agarwal, Cormode, Huang, Phillips, Wei, Yi, "Mergeable summaries", 2012), which
is the same summary as Space-Saving (Metwally, Agrawal, El Abbadi 2005) up to an
offset: to merge a summary with new weights, add the counts of equal columns,
find the (k+1)-th largest count ``s`` of the row, subtract ``s`` from every
counter and keep the positive ones (at most k). A batch's (row, column, weight)
triples are one exact summary, so a batch update *is* a merge, and so is
merging two workers: the bound below holds whatever the batching and the merge
tree.

The bound, per row: ``error[r]`` is the sum of the ``s`` subtracted from that row
so far, and for every column c

    count[r, c] <= true[r, c] <= count[r, c] + error[r]     (count 0 if c is absent)
    error[r] <= (n_r - sum_c count[r, c]) / (k + 1) <= n_r / (k + 1)

where ``n_r`` is the row's total weight. Weights may be integers (counts) or
float64 (probability mass): the argument never uses integrality. Rows with at
most k distinct columns are exact (``error == 0``).

Layout: ``ids [N, k]`` int32 (-1 where empty), ``counts [N, k]`` and
``error [N]`` (int64 or float64). Each row is kept sorted by count, descending,
ties by column id ascending, so the state is a pure function of the merged
weights and the merge order (deterministic; no randomness at all).

Every update is vectorised over the batch: ``torch.unique`` aggregates the
triples, two stable sorts order each row, and only the rows the batch touches
are read and written, so the cost grows with the batch's firings, not with N.
"""

from __future__ import annotations

import torch
from attrs import define
from torch import Tensor

EMPTY = -1


def merge_pairs(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, cols: Tensor, weights: Tensor,
                n_cols: int) -> None:
    """Merge the weights ``(rows[i], cols[i]) += weights[i]`` into the summary, in place.

    Pairs may repeat (they are summed first); weights <= 0 are ignored.
    """
    keep = weights > 0
    if not bool(keep.all()):
        rows, cols, weights = rows[keep], cols[keep], weights[keep]
    if not rows.numel():
        return
    N, k = ids.shape
    dev = ids.device
    # the touched rows and each one's local number, from a [N] table (no sort)
    hit = torch.zeros(N, dtype=torch.bool, device=dev)
    hit[rows] = True
    touched = hit.nonzero().squeeze(1)
    U = touched.numel()
    local_of = torch.empty(N, dtype=torch.int64, device=dev)
    local_of[touched] = torch.arange(U, device=dev)
    old_ids, old_counts = ids[touched].reshape(-1).long(), counts[touched].reshape(-1)
    old_rows = torch.arange(U, device=dev).repeat_interleave(k)
    present = old_ids >= 0
    r_all = torch.cat([local_of[rows], old_rows[present]])
    c_all = torch.cat([cols.long(), old_ids[present]])
    w_all = torch.cat([weights.to(counts.dtype), old_counts[present]])
    key, inverse = torch.unique(r_all * n_cols + c_all, return_inverse=True)
    w = torch.zeros(key.numel(), dtype=counts.dtype, device=dev).index_add_(0, inverse, w_all)
    r, c = key // n_cols, key % n_cols
    # key is sorted by (row, column); order each row by weight descending, ties by
    # column ascending: one sort of (row, -weight) for counts, two stable sorts for mass
    if not counts.is_floating_point() and U * (int(w.max()) + 1) < (1 << 62):
        span = int(w.max()) + 1
        order = torch.argsort(r * span + (span - 1 - w), stable=True)
    else:
        order = torch.argsort(-w, stable=True)
        order = order[torch.argsort(r[order], stable=True)]
    r, c, w = r[order], c[order], w[order]
    per_row = torch.bincount(r, minlength=U)
    rank = torch.arange(r.numel(), device=dev) - (torch.cumsum(per_row, 0) - per_row)[r]
    s = torch.zeros(U, dtype=counts.dtype, device=dev)
    at_k = rank == k
    s[r[at_k]] = w[at_k]
    w = w - s[r]
    # the first k of each row, less the (k+1)-th; counters that fall to zero leave the summary
    sel = ((rank < k) & (w > 0)).nonzero().squeeze(1)
    new_ids = torch.full((U, k), EMPTY, dtype=ids.dtype, device=dev)
    new_counts = torch.zeros(U, k, dtype=counts.dtype, device=dev)
    r, rank = r[sel], rank[sel]
    new_ids[r, rank] = c[sel].to(ids.dtype)
    new_counts[r, rank] = w[sel]
    ids[touched] = new_ids
    counts[touched] = new_counts
    error[touched] += s


def merge_dense_rows(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, dense: Tensor) -> None:
    """Merge exact dense rows ``dense [U, M]`` (for the unique ``rows [U]``) into the summary.

    Only each row's top k+1 columns and the columns already counted can survive
    the merge: any other column has at most the row's (k+1)-th weight, which the
    merge subtracts anyway. So they alone are merged, as pairs; the bound is the same.
    """
    if not rows.numel():
        return
    k, M = ids.shape[1], dense.shape[1]
    top_w, top_c = dense.topk(min(k + 1, M), dim=1)
    old = ids[rows].long()
    old_w = dense.gather(1, old.clamp_min(0)).masked_fill(old < 0, 0)
    n_top = top_c.shape[1]
    r = torch.cat([rows.repeat_interleave(n_top), rows.repeat_interleave(k)])
    c = torch.cat([top_c.reshape(-1), old.clamp_min(0).reshape(-1)])
    w = torch.cat([top_w.reshape(-1), old_w.reshape(-1)])
    # a column both in the top and already counted appears twice: count it once
    dup = torch.zeros_like(old, dtype=torch.bool)
    if n_top:
        dup = (old[:, :, None] == top_c[:, None, :]).any(-1)
    w[r.numel() - old.numel():] = old_w.reshape(-1).masked_fill(dup.reshape(-1), 0)
    merge_pairs(ids, counts, error, r, c, w.to(counts.dtype), M)


def pairs_of(ids: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The summary's counters as (rows, cols, weights) triples."""
    k = ids.shape[1]
    rows = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(k)
    flat = ids.reshape(-1)
    present = flat >= 0
    return rows[present], flat[present].long(), counts.reshape(-1)[present]


def merge_summaries(ids: Tensor, counts: Tensor, error: Tensor, other_ids: Tensor, other_counts: Tensor,
                    other_error: Tensor, n_cols: int) -> None:
    """Fold another summary of the same shape into this one, in place (error bounds add, plus the prune)."""
    merge_pairs(ids, counts, error, *pairs_of(other_ids, other_counts), n_cols)
    error += other_error.to(error.dtype)


@define(eq=False)
class HeavyHitters:
    """A per-row Misra–Gries summary: the tensors and the three operations.

    >>> hh = HeavyHitters.empty(n_rows=2, k=2, n_cols=5)
    >>> hh.add(torch.tensor([0, 0, 0, 1]), torch.tensor([3, 3, 4, 1]), torch.tensor([1, 1, 1, 1]))
    >>> hh.ids[0].tolist(), hh.counts[0].tolist(), int(hh.error[0])
    ([3, 4], [2, 1], 0)
    """

    ids: Tensor
    counts: Tensor
    error: Tensor
    n_cols: int

    @classmethod
    def empty(cls, n_rows: int, k: int, n_cols: int, dtype: torch.dtype = torch.int64,
              device: torch.device | str = "cpu") -> HeavyHitters:
        if k < 1:
            raise ValueError(f"a heavy-hitter summary needs k >= 1 counters a row, got k={k}")
        return cls(torch.full((n_rows, k), EMPTY, dtype=torch.int32, device=device),
                   torch.zeros(n_rows, k, dtype=dtype, device=device),
                   torch.zeros(n_rows, dtype=dtype, device=device), n_cols)

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def add(self, rows: Tensor, cols: Tensor, weights: Tensor) -> None:
        merge_pairs(self.ids, self.counts, self.error, rows, cols, weights, self.n_cols)

    def add_dense_rows(self, rows: Tensor, dense: Tensor) -> None:
        merge_dense_rows(self.ids, self.counts, self.error, rows, dense)

    def merge(self, other: HeavyHitters) -> HeavyHitters:
        if other.ids.shape != self.ids.shape or other.n_cols != self.n_cols:
            raise ValueError(f"cannot merge a summary of shape {tuple(other.ids.shape)} over {other.n_cols} columns "
                             f"into one of shape {tuple(self.ids.shape)} over {self.n_cols}")
        merge_summaries(self.ids, self.counts, self.error, other.ids, other.counts, other.error, self.n_cols)
        return self

    def to_dense(self) -> Tensor:
        """The estimates as a dense ``[N, n_cols]`` table (absent columns 0): for tests and small N."""
        out = torch.zeros(self.ids.shape[0], self.n_cols, dtype=self.counts.dtype, device=self.ids.device)
        rows, cols, w = pairs_of(self.ids, self.counts)
        out[rows, cols] = w
        return out
