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


# -- merging the batches' sparse product ``F X`` -----------------------------------------
#
# The merged rows of the components that fired are ``F X``, for the firing
# indicator F (a list of firings) and a sparse ``X [P, M]`` (each position's token
# for input tokens, the firing indicator for co-firing, each position's top tokens
# for output mass). Adding the rows' old counters as ``S I`` makes them one
# product ``[F | S] @ [X ; I]``, computed row block by row block without expanding
# the pairs (co-firing at N = 16,384: about 1.5 s a batch against 7.7 s for
# sorting its 19M expanded pairs): by MKL into a dense ``[rows, M]`` scratch, or,
# for blocks far sparser than that, as COO tensors (`_merge_rows` says why not a
# sparse CSR result). The sums are read back in row order and the Misra–Gries prune then only needs
# each row's (k+1)-th largest weight, found by ``topk`` over the rows padded to a
# power-of-two length. The result is exactly `merge_pairs` of the same weights
# (tested), only faster.

#: merged rows are formed and pruned in blocks of about this many entries (and the dense scratch a block
#: is summed in holds this many float64 weights: 128 MiB)
MERGE_BLOCK_ENTRIES = 1 << 24


def csr_tensor(crow: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def csr_rows(rows: Tensor, cols: Tensor, vals: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """A float64 CSR ``[n_rows, n_cols]`` from (row, col, value) entries (distinct pairs, any order)."""
    order = torch.argsort(rows * n_cols + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=crow[1:])
    return csr_tensor(crow, cols[order].long(), vals[order].to(torch.float64), (n_rows, n_cols))


def merge_product(ids: Tensor, counts: Tensor, error: Tensor, comp: Tensor, pos: Tensor, X: Tensor,
                  *, exclude_self: bool = False, block_entries: int = MERGE_BLOCK_ENTRIES) -> None:
    """Merge ``rows[c] += sum over c's firings (c, p) of X[p]`` into the summary, in place.

    ``comp, pos``: the firings (distinct pairs); ``X``: a float64 CSR ``[P, M]``
    with sorted columns in each row. ``exclude_self``: drop column c from row c
    (co-firing of a component with itself). The same summary as `merge_pairs` of
    the expanded weights, up to the order of the counters inside a row (see
    `canonical`).
    """
    if not comp.numel():
        return
    dev = ids.device
    P, M = X.shape
    order = torch.argsort(comp * P + pos)
    comp, pos = comp[order], pos[order]
    touched, per = torch.unique_consecutive(comp, return_counts=True)
    f_start = torch.cumsum(per, 0) - per
    # each row's size bound (its firings' X rows plus its old counters), to cut the rows into blocks
    x_len = X.crow_indices().diff()
    bound = torch.zeros(touched.numel(), dtype=torch.int64, device=dev)
    bound.index_add_(0, torch.repeat_interleave(torch.arange(touched.numel(), device=dev), per), x_len[pos])
    bound += ids.shape[1]
    ends = torch.cumsum(bound, 0)
    # [X ; I]: the batch's rows, then one row per column for the old counters
    xc, ident = X.crow_indices(), torch.arange(M, device=dev)
    XI = csr_tensor(torch.cat([xc, xc[-1] + 1 + ident]), torch.cat([X.col_indices(), ident]),
                    torch.cat([X.values(), torch.ones(M, dtype=torch.float64, device=dev)]), (P + M, M))
    XI_coo: list[Tensor] = []  # [X ; I] as COO, made once, for the blocks that take the COO product
    # each block's merged rows land in a dense [rows, M] scratch of at most `block_entries` weights
    max_rows = max(1, block_entries // M)
    scratch = torch.zeros(min(touched.numel(), max_rows) * M, dtype=torch.float64, device=dev)
    a = 0
    while a < touched.numel():
        done = int(ends[a - 1]) if a else 0
        b = max(a + 1, int(torch.searchsorted(ends, done + block_entries, right=True)))
        b = min(b, touched.numel(), a + max_rows)
        f0 = int(f_start[a])
        f1 = int(f_start[b - 1] + per[b - 1])
        est = int(ends[b - 1]) - done  # the block's merged entries, at most
        _merge_rows(ids, counts, error, touched[a:b], per[a:b], pos[f0:f1], XI, XI_coo, P, exclude_self, scratch,
                    est)
        a = b


def stack_csr(parts: list[Tensor]) -> Tensor:
    """The float64 CSRs ``parts`` (same column count) stacked row-wise: ``[sum of rows, M]``."""
    if len(parts) == 1:
        return parts[0]
    crows, cols, vals, done = [parts[0].crow_indices()[:1]], [], [], 0
    for X in parts:
        c = X.crow_indices()
        crows.append(c[1:] + done)
        done += int(c[-1])
        cols.append(X.col_indices())
        vals.append(X.values())
    shape = (sum(X.shape[0] for X in parts), parts[0].shape[1])
    return csr_tensor(torch.cat(crows), torch.cat(cols), torch.cat(vals), shape)


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


def _merge_rows(ids: Tensor, counts: Tensor, error: Tensor, rows: Tensor, per: Tensor, pos: Tensor, XI: Tensor,
                XI_coo: list[Tensor], P: int, exclude_self: bool, scratch: Tensor, est: int) -> None:
    """The merged rows ``[F | S] @ [X ; I]`` of ``rows``, read back in row order and pruned.

    Where the rows are dense enough (``est``, their entries at most, above 1/16 of ``rows x M``) the
    product is summed into the dense scratch (left at zero again); sparser rows are multiplied as COO
    tensors, which costs the product's work, not ``rows x M``. Not a CSR result: on the CPU, through
    MKL, torch 2.13's CSR x CSR product with a sparse result keeps about the size of its output every
    call (pytorch/pytorch#109445 describes the same growth), which a harvest of thousands of merges
    cannot afford; into a dense result, and in COO, it does not.
    """
    dev, U, k, M = ids.device, rows.numel(), ids.shape[1], XI.shape[1]
    old_ids = ids[rows].long()
    old_ids = old_ids.masked_fill(old_ids < 0, M)  # empty counters sort last
    old_ids, o = old_ids.sort(dim=1)
    old_w = counts[rows].gather(1, o).to(torch.float64)
    present = old_ids < M
    n_old = present.sum(1)
    crow = torch.zeros(U + 1, dtype=torch.int64, device=dev)
    torch.cumsum(per + n_old, 0, out=crow[1:])
    col = torch.empty(int(crow[-1]), dtype=torch.int64, device=dev)
    val = torch.empty(col.numel(), dtype=torch.float64, device=dev)
    # row r: its firings' positions (columns < P, ascending), then its old counters (P + id, ascending)
    f_row = torch.repeat_interleave(torch.arange(U, device=dev), per)
    f_at = crow[:-1][f_row] + torch.arange(pos.numel(), device=dev) - (torch.cumsum(per, 0) - per)[f_row]
    col[f_at], val[f_at] = pos, 1.0
    s_row, s_slot = present.nonzero(as_tuple=True)
    s_at = crow[:-1][s_row] + per[s_row] + s_slot
    col[s_at], val[s_at] = P + old_ids[s_row, s_slot], old_w[s_row, s_slot]
    if est * 16 < U * M:
        A = _coo(torch.repeat_interleave(torch.arange(U, device=dev), crow.diff()), col, val, (U, P + M))
        if not XI_coo:
            xc = XI.crow_indices()
            XI_coo.append(_coo(torch.repeat_interleave(torch.arange(P + M, device=dev), xc.diff()), XI.col_indices(),
                               XI.values(), (P + M, M)))
        merged = torch.sparse.mm(A, XI_coo[0]).coalesce()
        (r, c), val = merged.indices(), merged.values()
        if exclude_self:  # a component's co-firing with itself is never counted
            val = val.masked_fill(c == rows[r], 0.0)
    else:
        table = scratch[: U * M].view(U, M)
        torch.addmm(table, csr_tensor(crow, col, val, (U, P + M)), XI, beta=0, out=table)
        if exclude_self:
            table[torch.arange(U, device=dev), rows] = 0.0
        r, c = table.nonzero(as_tuple=True)  # row by row, columns ascending
        val = table[r, c]
        table.zero_()
    m_crow = torch.zeros(U + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(r, minlength=U), 0, out=m_crow[1:])
    _prune_rows(ids, counts, error, rows, m_crow, c, val)


def _coo(rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> Tensor:
    """A coalesced COO tensor from entries already in (row, column) order without repeats."""
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape, is_coalesced=True, check_invariants=False)


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
    as_counts = (lambda w: w) if counts.is_floating_point() else (lambda w: w.round())
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
            c = col.take(at.gather(1, top_i))
            n = min(k, top_v.shape[1])
            s = top_v[:, k] if top_v.shape[1] > k else torch.zeros(rs.numel(), dtype=top_v.dtype, device=dev)
            w = top_v[:, :n] - s[:, None]
            keep = w > 0
            new_w[rs, :n] = as_counts(w.masked_fill(~keep, 0.0)).to(counts.dtype)
            new_ids[rs, :n] = c[:, :n].masked_fill(~keep, EMPTY).to(ids.dtype)
            cut[rs] = s
    ids[rows] = new_ids
    counts[rows] = new_w
    error[rows] += cut if error.is_floating_point() else cut.round().to(error.dtype)


def merge_working_bytes(n_rows: int, n_cols: int, pending_entries: int) -> int:
    """The most one `PendingProducts.merge_into` holds beside the summary: the buffer stacked into one
    product and its ``[X ; I]`` (twice the buffer), one block's operands and merged entries read back
    (about 40 bytes an entry for `MERGE_BLOCK_ENTRIES` entries), the dense scratch (float64) and a
    prune chunk (`_prune_rows`' ``chunk``, five 8-byte arrays)."""
    block = min(MERGE_BLOCK_ENTRIES, max(n_rows * n_cols, 1))
    scratch = 8 * min(n_rows * n_cols, max(MERGE_BLOCK_ENTRIES, n_cols))
    return 2 * PENDING_ENTRY_BYTES * pending_entries + 40 * block + scratch + 40 * min(1 << 22, block)


#: bytes a buffered entry takes: a firing's (component, position) or an X entry's (column, value), int64/float64
PENDING_ENTRY_BYTES = 16


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
        if comp.numel():
            self.parts.append((comp, pos, X))
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
        X = stack_csr([X for _, _, X in self.parts])
        merge_product(ids, counts, error, comp, pos, X, exclude_self=exclude_self)

