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
``error [N]`` (int64 or float64). The set of counters in a row is a pure
function of the merged weights and the merge order (deterministic; no
randomness at all). `merge_pairs` keeps each row sorted by count, descending,
ties by column id ascending; `merge_product` leaves the counters of a row in
any order, and `canonical` puts them back in that one (the accumulators hand
out their state in it).

Every update is vectorised over the batch and only the rows it touches are
read and written. What a merge costs beyond its new weights is the touched
rows' k old counters, so the accumulators buffer batches (`PendingProducts`)
and merge when the buffer holds about as many entries as the summary has
counters: then that cost, too, is paid per firing, not per component.
"""

from __future__ import annotations

import bisect

import torch
from attrs import define, field
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


# -- merging the batches' sparse product ``F X`` -----------------------------------------
#
# The merged rows of the components that fired are ``F X``, for the firing
# indicator F (a list of firings) and a sparse ``X [P, M]`` (each position's token
# for input tokens, the firing indicator for co-firing, each position's top tokens
# for output mass), plus each row's old counters. They are formed block by block
# of rows, without expanding the pairs into a list: X's rows are laid out padded
# (`PaddedRows`), a block's firings gather theirs in one indexing, and
#
# - a dense block (entries above about 1/140 of ``rows x (M + 20,000)``) is summed by ``scatter_add``
#   into a ``[rows, M]`` float64 scratch, and one ``topk`` per row gives the
#   Misra–Gries prune: its (k+1)-th weight and the counters above it;
# - a sparse block is summed as COO entries (a sort, the work of its entries) and
#   pruned by `_prune_rows`, a ``topk`` over the rows padded to a power-of-two length.
#
# The result is exactly `merge_pairs` of the same weights (tested), only faster:
# co-firing at N = 65,536 merges about 3x faster than torch's sparse product into a
# dense result did, and that product's sparse-result form leaks on the CPU
# (`_merge_dense_block`).

#: a block's gathered operand holds at most this many entries (16 bytes each), and a sparse block's
#: summed entries as many (about 64 bytes each, with the sort and the prune)
MERGE_BLOCK_ENTRIES = 1 << 22
#: which blocks are summed as COO entries, not densely: those with fewer entries than
#: ``rows x (M + DENSE_ROW_CELLS) / SPARSE_RATIO``. Measured on the CPU with `row_top` (input tokens at
#: N = 65,536, V = 8,192, one merge of all rows): 72 entries a row merged in 1.11 s as COO against 1.33 s
#: densely, 240 entries a row in 2.79 against 2.38 s: the two cost the same near 200 entries a row
SPARSE_RATIO = 140
DENSE_ROW_CELLS = 20_000
#: a dense block's rows fill a float64 ``[rows, M]`` scratch of at most this many weights (128 MiB)
DENSE_SCRATCH_WEIGHTS = 1 << 24


def csr_tensor(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def csr_rows(rows: Tensor, cols: Tensor, vals: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """A float64 CSR ``[n_rows, n_cols]`` from (row, col, value) entries (distinct pairs, any order)."""
    key = rows * n_cols + cols
    # a batch's firings come in (position, component) order already: sorted only when they do not
    if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
        order = torch.argsort(key)
        cols, vals = cols.index_select(0, order), vals.index_select(0, order)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=crow[1:])
    return csr_tensor(crow, cols.long(), vals.to(torch.float64), (n_rows, n_cols))


def merge_product(ids: Tensor, counts: Tensor, error: Tensor, comp: Tensor, pos: Tensor, X: Tensor | list[Tensor],
                  *, exclude_self: bool = False, block_entries: int = MERGE_BLOCK_ENTRIES) -> None:
    """Merge ``rows[c] += sum over c's firings (c, p) of X[p]`` into the summary, in place.

    ``comp, pos``: the firings (distinct pairs; int64 or int32); ``X``: a CSR ``[P, M]`` (float64 or
    float32 values, int64 or int32 indices) with sorted columns in each row, or a list of such CSRs
    stacked row-wise (``pos`` counts the rows of the stack). ``exclude_self``: drop column c from row c
    (co-firing of a component with itself). The same summary as `merge_pairs` of
    the expanded weights, up to the order of the counters inside a row (see
    `canonical`).
    """
    if not comp.numel():
        return
    parts = X if isinstance(X, list) else [X]
    dev, k = ids.device, ids.shape[1]
    P, M = sum(x.shape[0] for x in parts), parts[0].shape[1]
    # each row's firings (counted, not sorted out of the sorted list) and its firings' positions in order
    per = torch.bincount(comp, minlength=ids.shape[0])
    touched = per.nonzero().squeeze(1)
    per = per.index_select(0, touched)
    pos = pos.index_select(0, _component_order(comp, pos, P))
    del comp
    f_start = torch.cumsum(per, 0) - per
    Xp = PaddedRows.of(parts, _scratch_dtype(counts, [x.values() for x in parts], per))
    # the rows in order of their firing count, so that a block's rows pad to about the same number
    by = torch.argsort(per, stable=True)
    per_s = per[by].tolist()
    # each row's entries, at most: its firings' X row lengths, summed by a running sum
    run = torch.cumsum(Xp.lengths.index_select(0, pos), 0)
    bound = run.index_select(0, f_start + per - 1) - torch.cat([run.new_zeros(1), run]).index_select(0, f_start)
    ends = torch.cumsum(bound[by] + k, 0).tolist()
    width = scratch_width(M, k, dev)
    max_rows = max(1, DENSE_SCRATCH_WEIGHTS * block_entries // MERGE_BLOCK_ENTRIES // width)  # the scratch's rows
    scratch: list[Tensor] = []
    a, T = 0, touched.numel()
    while a < T:
        done = ends[a - 1] if a else 0
        b = min(T, a + max_rows, max(a + 1, bisect.bisect_right(ends, done + block_entries, lo=a)))
        # and the block's padded operand, rows x (its most firings x X's padded width + k), fits in it too
        lo = a + 1
        while lo < b:
            mid = (lo + b + 1) // 2
            if (mid - a) * (per_s[mid - 1] * Xp.width + k) <= block_entries:
                lo = mid
            else:
                b = mid - 1
        b = lo
        rows_i = by[a:b]
        slot = torch.arange(per_s[b - 1], device=dev)
        at = (f_start[rows_i][:, None] + slot).clamp_max(pos.numel() - 1)
        posmat = torch.where(slot < per[rows_i][:, None], pos.take(at), P)  # [rows, most firings]; P pads
        if (ends[b - 1] - done) * SPARSE_RATIO < (b - a) * (M + DENSE_ROW_CELLS):
            _merge_sparse_block(ids, counts, error, touched[rows_i], posmat, Xp, M, exclude_self)
        else:
            if not scratch:
                scratch.append(torch.zeros(min(T, max_rows) * width, dtype=Xp.vals.dtype, device=dev))
            _merge_dense_block(ids, counts, error, touched[rows_i], posmat, Xp, width, exclude_self, scratch[0])
        a = b


def _component_order(comp: Tensor, pos: Tensor, n_positions: int) -> Tensor:
    """The order of the firings ``(comp, pos)`` (distinct pairs) by component, then position. Firings in
    position order (a batch's own order, and the pending buffer's) need only a stable sort by component,
    which on 32-bit keys is about half the time of a sort of ``comp * P + pos`` (8.3M firings: 131
    against 264 ms)."""
    if comp.numel() > 1 and bool((pos[1:] >= pos[:-1]).all()):
        key = comp.to(torch.int32) if int(comp.max()) < (1 << 31) else comp
        return torch.argsort(key, stable=True)
    return torch.argsort(comp * n_positions + pos)


def _scratch_dtype(counts: Tensor, values: list[Tensor], per: Tensor) -> torch.dtype:
    """The narrowest dtype the dense scratch sums exactly in: int16, float32 or float64.

    For integer counts and integer X values, a column's sum of the new weights is at most the row's
    firings times X's largest value (a firing's X row names a column once): below 2^15 the new weights
    sum in int16, and the old counters join them outside the scratch (`_merge_dense_block`); else,
    with the old counters inside, float32 is exact while the largest old counter plus that stays below
    2^24. A narrower scratch moves less memory: at N = 65,536 a co-firing block's scatter took half
    the time in int16 that it took in float32, and float32 half of float64's. int16 is used on the CPU
    only, where it was measured (a GPU's scatter of 16-bit integers is a compare-and-swap loop).
    Probability mass (float counts) sums in float64."""
    values = [v for v in values if v.numel()]
    if counts.is_floating_point() or not values:
        return torch.float64
    if not all(bool((v == v.round()).all()) for v in values):
        return torch.float64
    new = float(per.max()) * max(float(v.abs().max()) for v in values)
    if new <= _EXACT_I16 and counts.device.type == "cpu":  # measured on the CPU (caches); elsewhere float32
        return torch.int16
    return torch.float32 if float(counts.abs().max()) + new < _EXACT_F32 else torch.float64


#: float32 holds every integer up to here exactly
_EXACT_F32 = float(1 << 24)
#: the largest int16
_EXACT_I16 = float((1 << 15) - 1)

#: torch's CPU ``topk`` keeps a heap (``partial_sort``) when ``64 k <= n`` and otherwise runs
#: ``nth_element``, which on a row of sums was ~1.4x slower: a dense block's scratch rows are widened to
#: ``64 (k + 1)`` columns (zeros, never kept) when that adds at most this fraction of cells
#: (output mass at V = 8,192, k + 1 = 129: 8,192 -> 8,256 columns, topk 83 -> 59 ms a 2,048-row block)
TOPK_HEAP_FACTOR = 64
TOPK_PAD_MAX = 0.05


def scratch_width(M: int, k: int, device: torch.device) -> int:
    """The columns of a dense block's scratch rows for ``M`` columns and ``k`` counters (see
    ``TOPK_HEAP_FACTOR``): ``M``, or a little more on the CPU where that picks torch's faster topk, and
    there a multiple of the largest ``TOP_CHUNKS`` (at most 3% more) so that `row_top` can read it in chunks."""
    heap = TOPK_HEAP_FACTOR * min(k + 1, M)
    width = M
    if device.type == "cpu" and M < heap <= M * (1 + TOPK_PAD_MAX):
        width = heap
    if device.type == "cpu" and width >= TOP_CHUNK_MIN_WIDTH:
        width = -(-width // TOP_CHUNKS[0]) * TOP_CHUNKS[0]
    return width


#: `row_top` reads a row in chunks of the largest of these sizes that leaves the ``k`` chunks it keeps
#: at most a quarter of the row (measured on the CPU: 256 co-firing rows of 65,536 int16 weights, one
#: ``topk`` 13.7 ms, in 129 chunks of 64 5.2 ms; see `_chunk_reads` for the rows kept whole)
TOP_CHUNKS = (64, 32, 16)
TOP_CHUNK_MIN_WIDTH = 2048


def row_top(table: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` largest weights of each row of ``table [U, M]`` (non-negative), descending, and their
    columns: what ``table.topk(n, dim=1)`` gives, except that the column of a weight equal to the n-th
    may be that of another column with a weight no greater (the Misra–Gries prune keeps only weights
    above the n-th, whose columns are exact).

    On the CPU, for wide rows, without a ``topk`` over the whole row: a vectorised max of each chunk of
    ``G`` columns, a ``topk`` of those maxima, and a ``topk`` over the ``n - 1`` chunks with the largest
    maxima only. Exact: with ``s`` the n-th largest chunk maximum, n chunks each hold a weight of at least
    ``s``, so the n-th largest weight ``t`` is at least ``s``; every weight above ``s`` lies in a chunk whose
    maximum is above ``s``, of which there are at most ``n - 1``, all read. If those hold n weights above
    ``s``, their top n is the row's; otherwise ``t == s``, and the read weights below ``s`` are raised to it
    (the multiset of the n largest is then exact, and their columns are never kept)."""
    U, M = table.shape
    G = next((g for g in TOP_CHUNKS if M % g == 0 and (n - 1) * g * 4 <= M), None)
    if G is None or table.device.type != "cpu" or not U or n < 2 or not table.is_contiguous():
        return table.topk(n, dim=1)
    reads = _chunk_reads(M, n, G)
    if reads is None:
        return table.topk(n, dim=1)
    return _top_by_chunks(table, n, G, reads)


def _chunk_reads(M: int, n: int, G: int) -> int | None:
    """How many chunks of ``G`` `row_top` reads for a row of ``M`` and the top ``n``: enough for torch's heap
    ``topk`` (``64 n`` cells) where that is at most half the row, else the ``n - 1`` best; None where the
    whole row is already one heap ``topk`` and the chunks would not be."""
    reads = max(n - 1, -(-TOPK_HEAP_FACTOR * n // G))
    if reads * G * 2 <= M:
        return reads
    return None if M >= TOPK_HEAP_FACTOR * n else n - 1


def _top_by_chunks(table: Tensor, n: int, G: int, reads: int) -> tuple[Tensor, Tensor]:
    """`row_top` read in chunks of ``G`` columns (``G`` divides the row): the ``reads >= n - 1`` chunks with
    the largest maxima. ``reads`` is more than ``n - 1`` where the row has room for ``64 n`` cells, for
    torch's heap ``topk`` (``TOPK_HEAP_FACTOR``): over 129 chunks of 64 int16 weights it took 1.8 ms a
    256-row block, its ``nth_element`` over 128 chunks 5.0 ms. (Output mass's rows of 8,256 are already
    one heap ``topk``, 54 ms a 2,048-row block, and stay whole: over 128 chunks of 16 they took 57.)"""
    U, M = table.shape
    k, nC = n - 1, M // G
    cm_w, cm_c = table.view(U, nC, G).amax(-1).topk(max(reads, n), dim=1)
    chunks = cm_c[:, :reads]
    at = (torch.arange(U, device=table.device)[:, None] * nC + chunks).reshape(-1)
    read = table.view(-1, G).index_select(0, at).view(U, reads * G)
    top_w, top_i = read.topk(n, dim=1)
    cols = chunks.gather(1, top_i // G) * G + top_i % G
    return torch.maximum(top_w, cm_w[:, k : k + 1]), cols


@define(eq=False)
class PaddedRows:
    """A CSR ``X [P, M]``'s rows as a padded ``[P + 1, width]`` table of (column, value), so that a block
    of firings gathers its X rows in one indexing. Padding is column 0 with value 0 (it adds nothing),
    and row ``P`` is all padding (for the firing slots of rows that fire less than the block's most).
    ``width`` is the longest row, but at most twice the mean: the entries of longer rows beyond it are
    kept as a CSR of their own (``over_*``), so a few long rows do not multiply the table."""

    cols: Tensor  # [P + 1, width] int64
    vals: Tensor  # [P + 1, width] in the scratch's dtype (`_scratch_dtype`: int16, float32 or float64)
    lengths: Tensor  # [P + 1] each row's entries
    over_len: Tensor  # [P + 1] each row's entries beyond width
    over_crow: Tensor
    over_col: Tensor
    over_val: Tensor
    #: the gathers' output, kept for the next block (see `gather`)
    _out: list[Tensor] = field(factory=list, repr=False)

    @classmethod
    def of(cls, X: Tensor | list[Tensor], dtype: torch.dtype = torch.float64) -> PaddedRows:
        """The padded rows of the CSR ``X``, or of a list of CSRs stacked row-wise (each laid out in its
        place, without a stacked copy: the pending buffer's batches)."""
        parts = X if isinstance(X, list) else [X]
        dev = parts[0].device
        lengths = torch.cat([x.crow_indices().diff().long() for x in parts])
        P, n = lengths.numel(), int(sum(x.values().numel() for x in parts))
        longest = int(lengths.max()) if P else 0
        width = max(1, min(longest, 2 * -(-n // max(P, 1))))
        zero = torch.zeros(1, dtype=torch.int64, device=dev)
        cols = torch.zeros(P + 1, width, dtype=torch.int64, device=dev)
        vals = torch.zeros(P + 1, width, dtype=dtype, device=dev)
        over_col: list[Tensor] = []
        over_val: list[Tensor] = []
        # each entry copied to its place, a batch at a time; where every row fits (the usual case), without
        # masks (a merge's 8.3M co-firing entries at N = 65,536: 555 -> 118 ms)
        first = 0
        for x in parts:
            crow, col, val = x.crow_indices().long(), x.col_indices().long(), x.values().to(dtype)
            lens = crow.diff()
            if longest <= width:
                dest = torch.repeat_interleave((torch.arange(x.shape[0], device=dev) + first) * width - crow[:-1], lens)
                dest += torch.arange(dest.numel(), device=dev)
            else:  # the entries past ``width`` of a long row go to the overflow
                slot = torch.arange(col.numel(), device=dev) - torch.repeat_interleave(crow[:-1], lens)
                main = slot < width
                dest = (torch.repeat_interleave(torch.arange(x.shape[0], device=dev) + first, lens) * width + slot)[main]
                over_col.append(col[~main])
                over_val.append(val[~main])
                col, val = col[main], val[main]
            cols.view(-1).index_copy_(0, dest, col)
            vals.view(-1).index_copy_(0, dest, val)
            first += x.shape[0]
        over_len = torch.cat([(lengths - width).clamp_min(0), zero])
        return cls(cols, vals, torch.cat([lengths, zero]), over_len, torch.cat([zero, torch.cumsum(over_len, 0)]),
                   torch.cat(over_col) if over_col else cols.new_zeros(0),
                   torch.cat(over_val) if over_val else vals.new_zeros(0))

    @property
    def width(self) -> int:
        return self.cols.shape[1]

    def gather(self, posmat: Tensor) -> tuple[Tensor, Tensor]:
        """The padded X rows of each row's firing positions ``posmat [U, F]``, as ``[U, F * width]``.

        Both land in buffers this object keeps and reuses (grown when a block needs more), so the
        result is valid until the next call. A fresh tensor of a block's size a call was mostly page
        faults: a 256-row co-firing block at N = 65,536 gathered in 11.0 ms, into a kept buffer 2.6 ms."""
        U, idx = posmat.shape[0], posmat.reshape(-1)
        n = idx.numel()
        if not self._out or self._out[0].shape[0] < n:
            self._out[:] = [torch.empty(n, self.width, dtype=t.dtype, device=t.device) for t in (self.cols, self.vals)]
        c = torch.index_select(self.cols, 0, idx, out=self._out[0][:n])
        v = torch.index_select(self.vals, 0, idx, out=self._out[1][:n])
        return c.view(U, -1), v.view(U, -1)

    def overflow(self, posmat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The entries beyond ``width`` of those positions, as (row of posmat, column, value)."""
        if not self.over_col.numel():
            empty = torch.zeros(0, dtype=torch.int64, device=posmat.device)
            return empty, empty, self.over_val[:0]
        n = self.over_len[posmat]
        u, f = n.nonzero(as_tuple=True)
        p, ln = posmat[u, f], n[u, f]
        rep = torch.repeat_interleave(torch.arange(ln.numel(), device=posmat.device), ln)
        idx = self.over_crow[p][rep] + torch.arange(rep.numel(), device=posmat.device) - (torch.cumsum(ln, 0) - ln)[rep]
        return u[rep], self.over_col[idx], self.over_val[idx]


def canonical(ids: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """The counters of each row in canonical order: count descending, ties by column ascending,
    empty counters last. `merge_product` leaves a row's counters in any order (the summary is
    the same set); the accumulators' ``state_dict`` hands this order out, so equal summaries
    are equal tensors."""
    big = 1 << 62
    c = ids.long().masked_fill(ids < 0, big)
    o = torch.argsort(c, dim=1)
    c, w = c.gather(1, o), counts.gather(1, o)
    o = torch.argsort(-w, dim=1, stable=True)
    c, w = c.gather(1, o), w.gather(1, o)
    return c.masked_fill(c == big, EMPTY).to(ids.dtype), w


def _old_counters(ids: Tensor, counts: Tensor, rows: Tensor, dtype: torch.dtype = torch.float64
                  ) -> tuple[Tensor, Tensor]:
    """The rows' counters as ``[U, k]`` (column, weight in ``dtype``); empty counters are column 0, weight 0."""
    old = ids[rows].long()
    empty = old < 0
    return old.masked_fill(empty, 0), counts[rows].to(dtype).masked_fill(empty, 0.0)


def _merge_dense_block(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, posmat: Tensor, Xp: PaddedRows,
                       M: int, exclude_self: bool, scratch: Tensor) -> None:
    """Merge ``rows`` (their firings' positions ``posmat``) by summing into a dense ``[U, M]`` scratch:
    the firings' X rows and the old counters are scattered in, and one ``topk`` per row finds the
    Misra–Gries prune's (k+1)-th weight and the counters above it. The scratch is left at zero.
    ``M`` is the scratch's row width: the columns, or a few more (`scratch_width`), always zero.

    Not a sparse product: on the CPU, through MKL, torch 2.13's CSR x CSR product with a sparse result
    keeps about the size of its output every call (pytorch/pytorch#109445 describes the same growth),
    which a harvest of thousands of merges cannot afford; and a product into a dense result cost
    about three times this scatter, which reads each entry once and needs no read-back."""
    dev, U, k = ids.device, rows.numel(), ids.shape[1]
    table = scratch[: U * M].view(U, M)
    table.scatter_add_(1, *Xp.gather(posmat))
    inside = table.dtype != torch.int16  # the old counters summed in the scratch, or kept beside it
    if inside:
        table.scatter_add_(1, *_old_counters(ids, counts, rows, table.dtype))
    r, c, v = Xp.overflow(posmat)
    if r.numel():
        table.view(-1).index_add_(0, r * M + c, v)
    if exclude_self:  # a component's co-firing with itself is never counted
        table[torch.arange(U, device=dev), rows] = 0
    if inside:
        top_w, top_c = row_top(table, min(k + 1, M))
    else:
        top_w, top_c = _top_with_old(ids, counts, rows, table, k)
    table.zero_()
    ids[rows], counts[rows], cut = _prune_top(top_w, top_c, k, ids.dtype, counts.dtype)
    error[rows] += _as_counts(cut, error.dtype)


def _top_with_old(ids: Tensor, counts: Tensor, rows: Tensor, table: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k + 1`` largest merged weights of each row (descending, float64) and their columns, for a
    scratch ``table [U, M]`` that holds only the new weights (int16): the old counters' columns are read
    out of it, summed with the old counts and zeroed there, so the scratch's ``topk`` ranks the other
    columns alone; the largest k + 1 overall are among those k + 1 and the k old columns. An empty old
    counter stands for one of its row's counted columns (or column 0 in a row with none, left as it
    was) with weight 0, which the prune never keeps (it keeps positive weights only)."""
    old = ids[rows].long()
    empty = old < 0
    none = empty.all(1)
    first = old.masked_fill(empty, 1 << 62).amin(1).masked_fill(none, 0)
    col = torch.where(empty, first[:, None], old)
    w_old = (table.gather(1, col).double() + counts[rows].double()).masked_fill(empty, 0.0)
    # zero the counted columns; a row without any writes its column 0 back as it is
    keep0 = torch.where(none, table[:, 0], torch.zeros((), dtype=table.dtype, device=table.device))
    table.scatter_(1, col, keep0[:, None].expand_as(col))
    n = min(k + 1, table.shape[1])
    new_w, new_c = row_top(table, n)
    cand_w = torch.cat([w_old, new_w.double()], 1)
    cand_c = torch.cat([col, new_c], 1)
    top_w, at = cand_w.topk(n, dim=1)
    return top_w, cand_c.gather(1, at)


def _prune_top(top_w: Tensor, top_c: Tensor, k: int, ids_dtype: torch.dtype,
               counts_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """The Misra–Gries prune of rows from their ``min(k + 1, M)`` largest weights (descending) and their
    columns: the first ``min(k, M)`` less the (k+1)-th weight ``cut`` (0 when there is none), those that
    fall to zero emptied. Returns ``[U, k]`` ids and counts (empty past ``M``) and ``cut``."""
    U, n, dev = top_w.shape[0], min(k, top_w.shape[1]), top_w.device
    cut = top_w[:, k] if top_w.shape[1] > k else torch.zeros(U, dtype=top_w.dtype, device=dev)
    w = top_w[:, :n] - cut[:, None]
    keep = w > 0
    new_ids = torch.full((U, k), EMPTY, dtype=ids_dtype, device=dev)
    new_w = torch.zeros(U, k, dtype=counts_dtype, device=dev)
    new_ids[:, :n] = top_c[:, :n].masked_fill(~keep, EMPTY).to(ids_dtype)
    new_w[:, :n] = _as_counts(w.masked_fill(~keep, 0.0), counts_dtype)
    return new_ids, new_w, cut


def _as_counts(w: Tensor, dtype: torch.dtype) -> Tensor:
    """float64 sums back in the summary's dtype (integer counts are exact in float64, rounded)."""
    return w.to(dtype) if dtype.is_floating_point else w.round().to(dtype)


def _merge_sparse_block(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, posmat: Tensor, Xp: PaddedRows,
                        M: int, exclude_self: bool) -> None:
    """Merge ``rows`` whose entries are far fewer than ``U x M``: their entries (firings' X rows, old
    counters) are summed as a COO tensor (a sort: the work of the entries, not of ``U x M``), then pruned."""
    dev, U = ids.device, rows.numel()
    (gc, gv), (oc, ow) = Xp.gather(posmat), _old_counters(ids, counts, rows, torch.float64)
    # the COO sum in float64 whatever the gathered dtype (int16 and float32 only hold integers here)
    c, v = torch.cat([gc, oc], 1), torch.cat([gv.double(), ow], 1)
    keep = v != 0  # padding and empty counters add nothing
    r = torch.arange(U, device=dev)[:, None].expand_as(c)[keep]
    c, v = c[keep], v[keep]
    del keep
    ro, co, vo = Xp.overflow(posmat)
    if ro.numel():
        r, c, v = torch.cat([r, ro]), torch.cat([c, co]), torch.cat([v, vo.double()])
    merged = torch.sparse_coo_tensor(torch.stack([r, c]), v, (U, M), check_invariants=False).coalesce()
    del r, c, v
    (r, c), v = merged.indices(), merged.values()
    if exclude_self:  # a component's co-firing with itself is never counted
        v = v.masked_fill(c == rows[r], 0.0)
    m_crow = torch.zeros(U + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(r, minlength=U), 0, out=m_crow[1:])
    _prune_rows(ids, counts, error, rows, m_crow, c, v)


def _prune_rows(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, crow: Tensor, col: Tensor, val: Tensor,
                chunk: int = 1 << 22) -> None:
    """Set ``rows`` of the summary to the Misra–Gries prune of their merged rows (a CSR ``[U, M]`` given as
    ``crow, col, val``). Counters come out in any order inside a row."""
    dev, U, k = ids.device, rows.numel(), ids.shape[1]
    if not val.numel():  # nothing left in these rows (a component that only co-fired with itself)
        ids[rows], counts[rows] = EMPTY, 0
        return
    last = val.numel() - 1
    lengths = crow.diff()
    new_ids = torch.full((U, k), EMPTY, dtype=ids.dtype, device=dev)
    new_w = torch.zeros(U, k, dtype=counts.dtype, device=dev)
    cut = torch.zeros(U, dtype=torch.float64, device=dev)
    # buckets of rows whose lengths share a power of two, each padded to its longest; one topk finds
    # every row's (k+1)-th largest weight, and only the top entries' columns are read
    order = torch.argsort(lengths)
    sizes = lengths[order]
    bucket = torch.ceil(torch.log2(sizes.clamp_min(1).double())).long()
    edges = torch.searchsorted(bucket, torch.arange(int(bucket[0]), int(bucket[-1]) + 2, device=dev)).tolist()
    for lo, hi in zip(edges, edges[1:]):
        if hi <= lo:
            continue
        L = max(int(sizes[hi - 1]), 1)
        span = torch.arange(L, device=dev)
        step = max(1, chunk // L)
        t = min(k + 1, L)
        for a in range(lo, hi, step):
            rs = order[a : min(hi, a + step)]
            at = crow[rs][:, None] + span[None, :]
            pad = span[None, :] >= lengths[rs][:, None]
            at.masked_fill_(pad, last)
            v = val.take(at).masked_fill_(pad, 0.0)
            top_v, top_i = v.topk(t, dim=1)
            new_ids[rs], new_w[rs], cut[rs] = _prune_top(top_v, col.take(at.gather(1, top_i)), k, ids.dtype,
                                                         counts.dtype)
    ids[rows] = new_ids
    counts[rows] = new_w
    error[rows] += _as_counts(cut, error.dtype)


def merge_working_bytes(n_rows: int, n_cols: int, pending_entries: int) -> int:
    """The most one `PendingProducts.merge_into` holds beside the summary and the buffer, for a buffer of
    ``pending_entries`` entries (firings, X entries and X rows), and one block: a dense block's operand and
    scratch, or a sparse block's summed entries and prune chunk.

    At most ``MERGE_ENTRY_BYTES`` an entry: a firing takes 28 bytes at the sort (its 32-bit id and position
    joined, the order and the sort's own copies), then 24 (its position in order, its X row's length and
    their running sum); an X entry, in `PaddedRows` (rows padded to at most twice the mean, 64-bit columns
    and values up to float64, and the overflow), up to 40. Measured at N = 65,536 (the whole merge, block
    included, over 6-16M entries): 21 bytes an entry for co-firing, 31 for output mass, 32 for input tokens."""
    block = min(MERGE_BLOCK_ENTRIES, max(n_rows * n_cols, 1))
    dense = 16 * block + 8 * min(n_rows * n_cols, max(DENSE_SCRATCH_WEIGHTS, int(n_cols * (1 + TOPK_PAD_MAX))))
    sparse = 64 * block + 40 * min(1 << 22, block)
    return MERGE_ENTRY_BYTES * pending_entries + max(dense, sparse)


#: the most a merge holds for each entry of the buffer it merges (see `merge_working_bytes`)
MERGE_ENTRY_BYTES = 40

#: bytes a buffered entry takes: a firing's (component, position) or an X entry's (column, value), int32/float32
PENDING_ENTRY_BYTES = 8


class PendingProducts:
    """Batches' firings and their X rows, waiting to be merged into a summary by one `merge_product`.

    A merge reads and rewrites every touched row's k counters, which at large N
    (each component firing once or twice a batch) costs more than the batch's
    own weights. Merging several batches at once is still an exact Misra–Gries
    merge of their summed weights, with the same bound; the accumulators merge
    when the buffer holds ``capacity`` entries (firings + X entries + X rows),
    about N x k, so the old counters are read once per about k firings of a
    component, and before anything reads the summary (see ``TableModeStates``).
    The buffer takes ``capacity * PENDING_ENTRY_BYTES`` bytes at most, counted
    in the accumulators' ``bounded_state_bytes``.
    """

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []
        self.entries = 0

    def __len__(self) -> int:
        return len(self.parts)

    def add(self, comp: Tensor, pos: Tensor, X: Tensor) -> None:
        """Keep a batch's firings and X (a CSR), compactly: 32-bit ids and positions, X's values in
        float32 (a model's probabilities, or counts of 1, exactly; float64 values are rounded to float32,
        as the dense mode's float32 staging does), so an entry takes `PENDING_ENTRY_BYTES`."""
        if comp.numel():
            values = X.values() if X.values().dtype == torch.float32 else X.values().float()
            X = csr_tensor(X.crow_indices().int(), X.col_indices().int(), values, tuple(X.shape))
            self.parts.append((comp.int(), pos.int(), X))
            self.entries += comp.numel() + X.values().numel() + X.shape[0] + 1

    def clear(self) -> None:
        self.parts.clear()
        self.entries = 0

    def merge_into(self, ids: Tensor, counts: Tensor, error: Tensor, *, exclude_self: bool = False) -> None:
        """Merge every buffered batch into the summary (the buffer is left as it is)."""
        if not self.parts:
            return
        offsets, done = [], 0
        for _, _, X in self.parts:
            offsets.append(done)
            done += X.shape[0]
        comp = torch.cat([c for c, _, _ in self.parts])
        pos = torch.cat([p + o for (_, p, _), o in zip(self.parts, offsets)])
        merge_product(ids, counts, error, comp, pos, [X for _, _, X in self.parts], exclude_self=exclude_self)

