"""The mergeable Misra–Gries summary and the bounded modes built on it, against brute
force on Zipf streams with planted heavy hitters (hypothesis for the invariants)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autointerp import CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc, OutputProbAcc
from autointerp.accumulators import heavy_hitters
from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators.heavy_hitters import HeavyHitters, PaddedRows, canonical, csr_rows, merge_product
from autointerp.batch import ComponentSpace, FiringBatch
from autointerp.schemas import LayerSpec


def zipf_pairs(seed: int, n_rows: int, n_cols: int, n: int, planted: int = 2):
    """(rows, cols): Zipf columns, plus ``planted`` heavy columns per row at a third of its weight."""
    g = torch.Generator().manual_seed(seed)
    w = 1.0 / torch.arange(1, n_cols + 1, dtype=torch.float64) ** 1.2
    rows = torch.randint(0, n_rows, (n,), generator=g)
    cols = torch.multinomial(w, n, replacement=True, generator=g)
    heavy = torch.rand(n, generator=g) < 0.33
    pick = torch.randint(0, planted, (n,), generator=g)
    cols = torch.where(heavy, (rows * 7 + pick * 13 + 5) % n_cols, cols)
    return rows, cols


def brute(rows, cols, n_rows, n_cols, weights=None):
    t = torch.zeros(n_rows, n_cols, dtype=torch.float64 if weights is not None and weights.is_floating_point() else torch.int64)
    t.index_put_((rows, cols), torch.ones_like(rows) if weights is None else weights, accumulate=True)
    return t


def check_bound(hh: HeavyHitters, true):
    est = hh.to_dense()
    err = hh.error[:, None]
    assert (est <= true).all(), "a counter over-counts"
    assert (true <= est + err).all(), "a true count exceeds count + error"
    n = true.sum(1)
    assert (hh.error * (hh.k + 1) <= n - hh.counts.sum(1)).all(), "error exceeds (n - sum) / (k + 1)"
    assert ((true > err) <= (est > 0)).all(), "a column above the error bound is missing"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8), n_batches=st.integers(1, 6), n_cols=st.integers(2, 60))
def test_summary_bounds_hold_against_brute_force(seed, k, n_batches, n_cols):
    rows, cols = zipf_pairs(seed, 5, n_cols, 80 * n_batches)
    hh = HeavyHitters.empty(5, k, n_cols)
    for r, c in zip(rows.chunk(n_batches), cols.chunk(n_batches)):
        hh.add(r, c, torch.ones_like(r))
    check_bound(hh, brute(rows, cols, 5, n_cols))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 8), cuts=st.lists(st.integers(1, 399), max_size=4))
def test_merge_of_splits_equals_one_pass_within_the_bound(seed, k, cuts):
    rows, cols = zipf_pairs(seed, 4, 40, 400)
    one = HeavyHitters.empty(4, k, 40)
    one.add(rows, cols, torch.ones_like(rows))
    bounds = sorted({0, 400, *cuts})
    parts = []
    for a, b in zip(bounds, bounds[1:]):
        part = HeavyHitters.empty(4, k, 40)
        part.add(rows[a:b], cols[a:b], torch.ones_like(rows[a:b]))
        parts.append(part)
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    true = brute(rows, cols, 4, 40)
    check_bound(merged, true)
    gap = (merged.to_dense() - one.to_dense()).abs()
    assert (gap <= torch.maximum(merged.error, one.error)[:, None]).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6))
def test_weighted_rows_keep_the_bound(seed, k):
    g = torch.Generator().manual_seed(seed)
    hh = HeavyHitters.empty(3, k, 20, dtype=torch.float64)
    true = torch.zeros(3, 20, dtype=torch.float64)
    for _ in range(4):
        rows = torch.tensor(sorted(torch.randperm(3, generator=g)[:2].tolist()))
        dense = torch.softmax(3 * torch.randn(2, 20, generator=g, dtype=torch.float64), -1) * 5
        hh.add_dense_rows(rows, dense)
        true[rows] += dense
    est, err = hh.to_dense(), hh.error[:, None]
    assert (est <= true + 1e-9).all() and (true <= est + err + 1e-9).all()
    assert (hh.error * (k + 1) <= true.sum(1) + 1e-9).all()


def test_rows_with_few_columns_are_exact_and_the_summary_is_deterministic():
    rows, cols = zipf_pairs(0, 3, 6, 500)
    a, b = HeavyHitters.empty(3, 6, 6), HeavyHitters.empty(3, 6, 6)
    a.add(rows, cols, torch.ones_like(rows))
    for r, c in zip(rows.chunk(7), cols.chunk(7)):
        b.add(r, c, torch.ones_like(r))
    true = brute(rows, cols, 3, 6)
    assert torch.equal(a.to_dense(), true) and torch.equal(b.to_dense(), true) and int(a.error.sum()) == 0
    c = HeavyHitters.empty(3, 2, 6)
    d = HeavyHitters.empty(3, 2, 6)
    for h in (c, d):
        h.add(rows, cols, torch.ones_like(rows))
    assert torch.equal(c.ids, d.ids) and torch.equal(c.counts, d.counts) and torch.equal(c.error, d.error)


# -- the bounded modes of the accumulators ----------------------------------------------


def zipf_stream(seed=0, n_batches=3, V=400, C=6, B=8, S=64):
    """Zipf tokens; component c fires on its planted tokens (c, c + 50, c + 100) and 5% elsewhere."""
    g = torch.Generator().manual_seed(seed)
    w = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.1
    out = []
    for i in range(n_batches):
        tok = torch.multinomial(w, B * S, replacement=True, generator=g).view(B, S)
        acts = []
        for c in range(C):
            planted = (tok == c + 10) | (tok == c + 60) | (tok == c + 110)
            acts.append((planted | (torch.rand(B, S, generator=g) < 0.05)).float())
        probs = torch.softmax(torch.randn(B, S, V, generator=g) * 2, -1)
        out.append(HarvestBatch(tokens=tok, activations={"l": torch.stack(acts, -1)}, output_probs=probs,
                                sequence_ids=torch.arange(i * B, (i + 1) * B)))
    return out


def run(batches, accs):
    loop = HarvestLoop(accs, progress=False)
    for b in batches:
        loop.update(b)
    return loop


def _ids(stats):
    return [getattr(s, "token_id", getattr(s, "key", None)) for s in stats]


def test_bounded_top_lists_equal_dense_where_separated_by_more_than_the_bound():
    batches = zipf_stream()
    dense = run(batches, [InputTokenAcc(mode="dense", top_k=3), CorrelationAcc(mode="dense", top_k=3)]).finalize()
    bounded = run(batches, [InputTokenAcc(mode="bounded", summary_k=16, top_k=3),
                            CorrelationAcc(mode="bounded", summary_k=16, top_k=3)]).finalize()
    checked = 0
    for d, b in zip(dense, bounded):
        for field in ("input_tokens", "correlations"):
            dl, bl = getattr(d, field).top_recall, getattr(b, field).top_recall
            err = bl[0].count_error if bl else 0
            counts = [s.count for s in dl]
            # separated: consecutive true counts differ by more than the bound
            if all(x - y > err for x, y in zip(counts, counts[1:])):
                assert _ids(bl) == _ids(dl), (d.key, field)
                checked += 1
            for s in bl:  # every reported count carries its bound, and the bound holds
                true = next((t.count for t in getattr(d, field).top_recall if _ids([t]) == _ids([s])), None)
                if true is not None:
                    assert s.count <= true <= s.count + s.count_error
    assert checked >= 4


def test_bounded_output_mass_carries_its_bound():
    batches = zipf_stream(n_batches=2)
    dense = run(batches, [OutputProbAcc(mode="dense", top_k=5)]).finalize()
    bounded = run(batches, [OutputProbAcc(mode="bounded", summary_k=8, top_k=5)]).finalize()
    for d, b in zip(dense, bounded):
        true = {s.token_id: s.count for s in d.output_tokens.top_recall}
        for s in b.output_tokens.top_recall:
            assert s.count_error <= d.firing_count / 9 + 1e-9
            if s.token_id in true:
                assert s.count - 1e-4 <= true[s.token_id] <= s.count + s.count_error + 1e-4
        assert all(s.count_error == 0 for s in d.output_tokens.top_recall)


def test_mode_selection_and_bytes():
    ctx = HarvestContext(ComponentSpace([LayerSpec("l", 40_000)]), 50_000, "cpu", 0, 0.0)
    acc = InputTokenAcc()
    assert acc.state_bytes(ctx) == acc.dense_state_bytes(ctx) > 16e9
    assert acc.choose_mode(ctx, 4 << 30) == "bounded"
    # the summary (40,000 x 128 counters of 12 bytes: 61 MB) and the buffer of batches waiting to be
    # merged (as many entries, 8 bytes each: 41 MB)
    assert acc.state_bytes(ctx) == acc.bounded_state_bytes(ctx) < 150e6
    assert acc.pending_bytes(ctx) == 40_000 * 128 * 8
    assert acc.config()["mode"] == "auto"  # the request is what rebuilds it; mode_used says what ran
    assert InputTokenAcc(mode="dense").choose_mode(ctx, 1) == "dense"
    assert CorrelationAcc().choose_mode(ctx, None) == "dense"
    corr = CorrelationAcc()
    corr.choose_mode(ctx, 1 << 30)
    assert corr.bounded_state_bytes(ctx) == corr.state_bytes(ctx) < 150e6


def test_auto_accumulators_in_both_modes_merge_and_load_into_a_summary():
    batches = zipf_stream(n_batches=2)
    ctx = HarvestContext(ComponentSpace([LayerSpec("l", 6)]), 400, "cpu", 0, 0.0)
    b = InputTokenAcc(summary_k=16)
    assert b.choose_mode(ctx, 1) == "bounded"  # what the loop does before binding
    b.bind(ctx)
    for i, batch in enumerate(batches[1:]):
        b.update(FiringBatch.from_batch(batch, ctx.space, 0.0, batch.sequence_ids, 400))
    (d,) = [a for a in run(batches[:1], [InputTokenAcc(summary_k=16)]).accumulators if isinstance(a, InputTokenAcc)]
    assert (b.mode_used, d.mode_used) == ("bounded", "dense")
    fresh = InputTokenAcc(summary_k=16)
    fresh.bind(d.ctx)
    fresh.load_state_dict(b.state_dict())  # the state says which mode it is
    assert fresh.mode_used == "bounded" and fresh.finalize() == b.finalize()
    d.merge(b)  # a dense table cannot take in a summary exactly: it becomes one
    assert d.mode_used == "bounded"
    truth = run(batches, [InputTokenAcc(mode="dense")]).finalize()
    for i, stats in d.finalize().items():
        true = {s.token_id: s.count for s in truth[i].input_tokens.top_recall}
        for s in stats.top_recall:
            if s.token_id in true:
                assert s.count <= true[s.token_id] <= s.count + s.count_error


# -- the batch product merge: the same summary as merging the expanded pairs ----------------


def _product_case(seed: int, N: int, P: int, M: int, weighted: bool, density: float = 0.4, long_row: int = 0):
    """Distinct firings (comp, pos) and a float64 CSR X [P, M] (0/1 firing-like or weighted, ``density``
    of its entries nonzero; row 0's first ``long_row`` entries all nonzero: with a low density, longer
    than twice the mean row, so its last entries take `PaddedRows`' overflow)."""
    g = torch.Generator().manual_seed(seed)
    fire = torch.rand(P, N, generator=g) < 0.3
    pos, comp = fire.nonzero(as_tuple=True)
    x = (torch.rand(P, M, generator=g) < density).double()
    x[0, :long_row] = 1.0
    if weighted:
        x *= torch.rand(P, M, generator=g, dtype=torch.float64)
    r, c = x.nonzero(as_tuple=True)
    return comp, pos, x, csr_rows(r, c, x[r, c], P, M)


def _merge_expanded(hh: HeavyHitters, comp, pos, x, exclude: bool, weighted: bool) -> None:
    """`merge_pairs` of the product's expanded weights: row comp[i] += x[pos[i]] (its own column dropped)."""
    M = x.shape[1]
    rows = comp.repeat_interleave(M)
    cols = torch.arange(M).repeat(comp.numel())
    w = x[pos].reshape(-1)
    if exclude:
        w = w.masked_fill(rows == cols, 0)
    hh.add(rows, cols, w if weighted else w.long())


def _same_summary(a: HeavyHitters, b: HeavyHitters, weighted: bool) -> None:
    ids, counts = canonical(a.ids, a.counts)
    assert torch.equal(ids, b.ids)
    if weighted:
        assert torch.allclose(counts, b.counts, atol=1e-12) and torch.allclose(a.error, b.error, atol=1e-12)
    else:
        assert torch.equal(counts, b.counts) and torch.equal(a.error, b.error)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), weighted=st.booleans(), exclude=st.booleans(),
       block=st.sampled_from([1, 7, 50, 1 << 24]), long_row=st.booleans(), path=st.sampled_from(["dense", "sparse"]),
       big=st.booleans(), wide=st.booleans(), int16=st.booleans(), chunked=st.booleans(), shuffled=st.booleans())
def test_merge_product_equals_merging_the_expanded_pairs(seed, k, weighted, exclude, block, long_row, path, big, wide,
                                                         int16, chunked, shuffled):
    """`merge_product` (the firings' X rows and old counters summed into a dense scratch and pruned by
    topk, or summed as COO entries and pruned, in row blocks of any size, long X rows partly through the
    overflow) leaves exactly the summary
    that `merge_pairs` leaves for the same weights, batch after batch (the same counters; `canonical`
    puts them in `merge_pairs`' order). ``big``: counters start beyond 2^24, where a float32 scratch
    would round (odd counts), so integer merges must sum in float64 there. ``wide``: the dense scratch's
    rows are widened past the M columns with zeros (`scratch_width`, for torch's heap topk), which no
    counter may come from. ``int16``: integer counts sum in an int16 scratch with the old counters beside
    it (`_top_with_old`); without it, in float32 (or float64 past 2^24) with them inside. ``chunked``
    (with ``wide``): `row_top` finds the top weights of the scratch rows chunk by chunk. ``shuffled``: the
    firings come in any order, not the batch's position order (`_component_order`'s other sort)."""
    N, P = 7, 12
    M = N if exclude else 9
    dtype = torch.float64 if weighted else torch.int64
    a, b = HeavyHitters.empty(N, k, M, dtype), HeavyHitters.empty(N, k, M, dtype)
    if big:
        rows = torch.arange(N).repeat_interleave(2)
        cols = torch.stack([(torch.arange(N) + 1) % M, (torch.arange(N) + 2) % M], 1).reshape(-1)
        start = torch.full((2 * N,), (1 << 24) + 1, dtype=dtype) + torch.arange(2 * N, dtype=dtype) * 2
        a.add(rows, cols, start), b.add(rows, cols, start)
    for step in range(3):
        comp, pos, x, X = _product_case(seed + step, N, P, M, weighted, density=0.1 if long_row else 0.4,
                                        long_row=M if long_row else 0)
        assert PaddedRows.of(X).over_col.numel() > 0 or not long_row
        if shuffled:
            perm = torch.randperm(comp.numel(), generator=torch.Generator().manual_seed(seed))
            comp, pos = comp[perm], pos[perm]
        # every block down one path: the dense scratch, or the COO sum (SPARSE_RATIO 0: every block is sparse)
        with mock.patch.object(heavy_hitters, "SPARSE_RATIO", 10**9 if path == "dense" else 0), \
                mock.patch.object(heavy_hitters, "DENSE_ROW_CELLS", 0), \
                mock.patch.object(heavy_hitters, "TOPK_PAD_MAX", 10**6 if wide else 0), \
                mock.patch.object(heavy_hitters, "_EXACT_I16", heavy_hitters._EXACT_I16 if int16 else -1.0), \
                mock.patch.object(heavy_hitters, "TOP_CHUNKS", (2,) if chunked else ()), \
                mock.patch.object(heavy_hitters, "_chunk_reads", lambda M, n, G: n - 1), \
                mock.patch.object(heavy_hitters, "_top_by_chunks", wraps=heavy_hitters._top_by_chunks) as by_chunks, \
                mock.patch.object(heavy_hitters, "_top_with_old", wraps=heavy_hitters._top_with_old) as beside, \
                mock.patch.object(heavy_hitters, f"_merge_{path}_block", wraps=getattr(heavy_hitters, f"_merge_{path}_block")) as spy:
            assert (heavy_hitters.scratch_width(M, k, torch.device("cpu")) > M) == wide
            merge_product(a.ids, a.counts, a.error, comp, pos, X, exclude_self=exclude, block_entries=block)
        assert spy.called
        assert beside.called == (path == "dense" and int16 and not weighted)
        assert by_chunks.called == (path == "dense" and chunked and wide)
        _merge_expanded(b, comp, pos, x, exclude, weighted)
        _same_summary(a, b, weighted)


def test_output_mass_of_truncated_positions_carries_the_cut_in_its_bound():
    """``position_k`` below the number of tokens with mass: each firing's dropped tokens had at most the
    position's (position_k + 1)-th probability, which is added to the error, so the bound holds
    against the dense table; with position_k >= V the bounded mode loses nothing to truncation."""
    batches = zipf_stream(n_batches=2, V=60)
    dense = run(batches, [OutputProbAcc(mode="dense", top_k=5)]).finalize()
    for m in (2, 60):
        bounded = run(batches, [OutputProbAcc(mode="bounded", summary_k=8, top_k=5, position_k=m)]).finalize()
        checked = 0
        for d, b in zip(dense, bounded):
            true = {s.token_id: s.count for s in d.output_tokens.top_recall}
            for s in b.output_tokens.top_recall:
                assert s.count_error <= d.firing_count / 9 + d.firing_count / (m + 1) + 1e-9
                if s.token_id in true:
                    assert s.count - 1e-6 <= true[s.token_id] <= s.count + s.count_error + 1e-6
                    checked += 1
        assert checked >= 5
    with_all = run(batches, [OutputProbAcc(mode="bounded", summary_k=8, top_k=5, position_k=60)])
    (acc,) = [a for a in with_all.accumulators if isinstance(a, OutputProbAcc)]
    # the only error left is the Misra–Gries prune's, at most firings / (k + 1)
    assert (acc.hh_error * 9 <= acc.comp_count.double() + 1e-9).all()


def test_position_k_must_be_a_positive_int():
    import pytest

    with pytest.raises(ValueError, match=r"position_k=0.*int >= 1"):
        OutputProbAcc(position_k=0)
    assert OutputProbAcc(summary_k=16).config()["position_k"] == 16


# -- batches buffered and merged at once (PendingProducts) ------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 5), n_batches=st.integers(1, 5), exclude=st.booleans())
def test_buffered_batches_merged_at_once_keep_the_bound(seed, k, n_batches, exclude):
    """Several batches' firings and X rows merged by one `merge_product` are one Misra–Gries merge of their
    summed weights: the bound holds against brute force, and with k at least the columns it is exact."""
    from autointerp.accumulators.heavy_hitters import PendingProducts

    N, P = 6, 10
    M = N if exclude else 8
    true = torch.zeros(N, M, dtype=torch.int64)
    pending = PendingProducts()
    for step in range(n_batches):
        comp, pos, x, X = _product_case(seed + step, N, P, M, weighted=False)
        pending.add(comp, pos, X)
        true.index_put_((comp.repeat_interleave(M), torch.arange(M).repeat(comp.numel())), x[pos].reshape(-1).long(),
                        accumulate=True)
    if exclude:
        true.fill_diagonal_(0)
    for kk in (k, M):
        hh = HeavyHitters.empty(N, kk, M)
        pending.merge_into(hh.ids, hh.counts, hh.error, exclude_self=exclude)
        check_bound(hh, true)
        if kk == M:
            assert torch.equal(hh.to_dense(), true) and int(hh.error.sum()) == 0


def test_the_bounded_tables_buffer_batches_and_state_dict_leaves_the_buffer_alone():
    """Batches wait in the buffer until it holds about N x summary_k entries, then merge; state_dict and
    finalize merge a copy (the buffer and the summary stay as they were), so the buffered and the merged
    accumulator report the same."""
    batches = zipf_stream(n_batches=4)
    accs = [InputTokenAcc(mode="bounded", summary_k=4), OutputProbAcc(mode="bounded", summary_k=4),
            CorrelationAcc(mode="bounded", summary_k=4)]
    loop = run(batches, accs)
    for acc in loop.accumulators[1:]:
        pending = acc._pending_buffer()
        assert len(pending) == 4 and pending.entries < acc._pending_capacity(6)  # 6 x 4 < 65,536: all buffered
        before = acc.hh_counts.clone()
        state, out = acc.state_dict(), acc.finalize()
        assert len(pending) == 4 and torch.equal(acc.hh_counts, before)
        acc._fold()
        assert len(pending) == 0
        after = acc.state_dict()
        assert all(torch.equal(state[n], after[n]) for n in state) and acc.finalize() == out
    small = CorrelationAcc(mode="bounded", summary_k=4)
    small._pending_capacity = lambda n: 1  # merge every batch
    loop = run(batches, [small])
    assert len(small._pending_buffer()) == 0 and int(small.hh_error.sum()) > 0


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_repeated_merges_do_not_grow_the_process():
    """A harvest merges thousands of times: memory after many merges stays where it was after the first
    few. (torch 2.13's CPU CSR x CSR product with a sparse result kept about its output's size every
    call, ~12 MB a call here, 300 MB over this test; the merge now sums into a dense scratch.)"""
    g = torch.Generator().manual_seed(0)
    N, M, P, k = 2048, 2048, 256, 8
    hh = HeavyHitters.empty(N, k, M, torch.float64)

    def merge_once():
        comp = torch.randint(0, N, (P * 16,), generator=g)
        pos = torch.arange(P).repeat_interleave(16)
        key = torch.unique(comp * P + pos)
        x = torch.rand(P, M, generator=g, dtype=torch.float64) * (torch.rand(P, M, generator=g) < 0.3)
        r, c = x.nonzero(as_tuple=True)
        merge_product(hh.ids, hh.counts, hh.error, key // P, key % P, csr_rows(r, c, x[r, c], P, M))

    for _ in range(5):
        merge_once()
    before = _rss_bytes()
    for _ in range(25):
        merge_once()
    assert _rss_bytes() - before < 100 * 2**20


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), weighted=st.booleans(), exclude=st.booleans(),
       long_row=st.booleans())
def test_sparse_rows_merge_through_a_coo_sum_to_the_same_summary(seed, k, weighted, exclude, long_row):
    """Rows far sparser than their M columns are summed as COO entries, not in the dense scratch
    (checked: that path is taken), with the same summary as `merge_pairs`."""
    N, P = (600, 12) if exclude else (40, 12)
    M = N if exclude else 600
    dtype = torch.float64 if weighted else torch.int64
    a, b = HeavyHitters.empty(N, k, M, dtype), HeavyHitters.empty(N, k, M, dtype)
    for step in range(3):
        comp, pos, x, X = _product_case(seed + step, N, P, M, weighted, density=0.005, long_row=20 if long_row else 0)
        assert PaddedRows.of(X).over_col.numel() > 0 or not long_row
        # a lower ratio than the default's, so that these small rows are sparse enough for the COO sum
        with mock.patch.object(heavy_hitters, "_merge_sparse_block", wraps=heavy_hitters._merge_sparse_block) as spy, \
                mock.patch.object(heavy_hitters, "SPARSE_RATIO", 8), \
                mock.patch.object(heavy_hitters, "DENSE_ROW_CELLS", 0):
            merge_product(a.ids, a.counts, a.error, comp, pos, X, exclude_self=exclude)
        assert spy.called
        _merge_expanded(b, comp, pos, x, exclude, weighted)
        _same_summary(a, b, weighted)


def test_scratch_rows_widen_only_on_the_cpu_and_only_a_little():
    """`scratch_width`: 8,192 columns with 128 counters widen to 8,256 (64 x 129: torch's heap topk) on the
    CPU; never on another device, never by more than TOPK_PAD_MAX, never past 64 (k + 1); from
    TOP_CHUNK_MIN_WIDTH on, a multiple of 64 (`row_top`'s chunks)."""
    from autointerp.accumulators.heavy_hitters import TOP_CHUNK_MIN_WIDTH, TOPK_PAD_MAX, scratch_width

    cpu = torch.device("cpu")
    assert scratch_width(8192, 128, cpu) == 8256
    assert scratch_width(8192, 128, torch.device("meta")) == 8192
    assert scratch_width(4096, 128, cpu) == 4096  # 8,256 would double the cells
    assert scratch_width(65536, 128, cpu) == 65536  # already 64 (k + 1) or more
    for M in range(1, 3000, 7):
        for k in (1, 3, 20, 40):
            w = scratch_width(M, k, cpu)
            assert M <= w <= M * (1 + TOPK_PAD_MAX)
            if w < TOP_CHUNK_MIN_WIDTH:
                assert w == M or w == 64 * (k + 1)
            else:
                assert w % 64 == 0 and w < max(M, 64 * (k + 1)) + 64
    assert scratch_width(40_001, 128, cpu) == 40_064 and scratch_width(40_001, 128, torch.device("meta")) == 40_001


def test_integer_merges_use_a_narrow_scratch_only_while_it_is_exact():
    """The dense scratch is int16 where a column's new weights (a row's firings times X's largest value)
    stay within int16, the old counters then kept beside it; else float32 while the old counters plus
    the new weights stay below 2^24; else float64 (and always for probability mass or fractional X)."""
    from autointerp.accumulators.heavy_hitters import _scratch_dtype

    X = csr_rows(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1.0, 1.0]), 2, 3).values()
    small, per = torch.tensor([[5, 0]]), torch.tensor([3, 1])
    assert _scratch_dtype(small, [X], per) == torch.int16
    assert _scratch_dtype(torch.tensor([[1 << 40, 0]]), [X], per) == torch.int16  # old counters stay outside
    many = torch.tensor([1 << 15, 1])  # a row with 32,768 firings: past int16
    assert _scratch_dtype(small, [X], torch.tensor([(1 << 15) - 1, 1])) == torch.int16
    assert _scratch_dtype(small, [X], many) == torch.float32
    assert _scratch_dtype(torch.tensor([[(1 << 24) - (1 << 15), 0]]), [X], many) == torch.float64  # 2^24 reached
    assert _scratch_dtype(small.double(), [X], per) == torch.float64  # probability mass
    Xw = csr_rows(torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]), 2, 3).values()
    assert _scratch_dtype(small, [Xw], per) == torch.float64  # a fractional weight
    assert _scratch_dtype(small, [X, Xw], per) == torch.float64  # in any of the buffered batches
    assert _scratch_dtype(small, [X[:0], X], per) == torch.int16  # an empty batch adds nothing


@pytest.mark.parametrize(("M", "n", "chunks", "reads"), [(4096, 9, heavy_hitters.TOP_CHUNKS, 9), (1024, 33, (8,), 32)])
@pytest.mark.parametrize("dtype", [torch.int16, torch.float32, torch.float64])
def test_row_top_gives_topk_s_weights_and_the_columns_the_prune_keeps(dtype, M, n, chunks, reads):
    """`row_top` (chunk maxima, then a topk over the best chunks) gives exactly ``topk``'s n largest weights,
    and the exact column of every weight above the n-th (the only ones a prune keeps), on rows full of ties
    (small counts), rows with fewer than n weights (zeros), one dominant chunk, and continuous weights;
    reading 64 n cells for torch's heap topk where the row has room (M = 4,096), else the k best chunks."""
    g = torch.Generator().manual_seed(0)
    U = 40
    rows = [
        torch.randint(0, 3, (U, M), generator=g),  # ties everywhere
        torch.where(torch.rand(U, M, generator=g) < 0.004, torch.randint(1, 5, (U, M), generator=g), 0),
        torch.zeros(U, M, dtype=torch.long),
    ]
    dominant = torch.randint(0, 2, (U, M), generator=g)
    dominant[:, 64:128] = torch.randint(5, 9, (U, 64), generator=g)  # every large weight in one or a few chunks
    rows.append(dominant)
    if dtype.is_floating_point:
        rows.append(torch.rand(U, M, generator=g, dtype=torch.float64) ** 8 * 100)
    for table in rows:
        table = table.to(dtype).contiguous()
        with mock.patch.object(heavy_hitters, "_top_by_chunks", wraps=heavy_hitters._top_by_chunks) as by_chunks, \
                mock.patch.object(heavy_hitters, "TOP_CHUNKS", chunks):
            w, c = heavy_hitters.row_top(table, n)
        assert by_chunks.called and by_chunks.call_args.args[3] == reads  # the chunks read
        want_w, _ = table.topk(n, dim=1)
        assert torch.equal(w, want_w)
        above = w > w[:, n - 1 :]
        assert torch.equal(table.gather(1, c)[above], w[above])
        for r in range(U):  # the columns above the n-th are exactly the row's weights above it
            assert set(c[r][above[r]].tolist()) == set((table[r] > w[r, n - 1]).nonzero().squeeze(1).tolist())


def test_row_top_reads_chunks_only_where_they_beat_one_topk():
    """Co-firing rows of 65,536 read 129 chunks of 64 (64 x 129 cells: torch's heap topk); output mass's
    rows of 8,256 are already one heap topk and stay whole; rows too narrow for a heap read the k best."""
    from autointerp.accumulators.heavy_hitters import _chunk_reads

    assert _chunk_reads(65536, 129, 64) == 129
    assert _chunk_reads(8256, 129, 16) is None
    assert _chunk_reads(1024, 33, 8) == 32


def test_output_mass_positions_padded_for_the_heap_topk_give_the_same_summary():
    """A position's probabilities padded with -inf to 64 (position_k + 1) columns (torch's heap topk) pick the
    same top tokens: the summary equals the unpadded one's, and no padded column enters it."""
    from autointerp.accumulators import output_probs

    V, k = 570, 8  # 64 x 9 = 576 columns: 6 of padding
    assert heavy_hitters.scratch_width(V, k, torch.device("cpu")) == 576
    batches = zipf_stream(n_batches=2, V=V)
    a, b = OutputProbAcc(mode="bounded", summary_k=k), OutputProbAcc(mode="bounded", summary_k=k)
    run(batches, [a])
    with mock.patch.object(output_probs, "scratch_width", lambda M, k, device: M):
        run(batches, [b])
    padded, plain = a.state_dict(), b.state_dict()
    for name in ("hh_ids", "hh_counts", "hh_error"):
        assert torch.equal(padded[name], plain[name]), name
    assert int(padded["hh_ids"].max()) < V


def test_output_mass_when_every_position_fires_equals_the_dense_table():
    """Where every position of a batch fires (the usual case at scale) the positions' probabilities are read
    as slices, not gathered; with room for every token (summary_k >= V) the bounded mass is the dense one."""
    g = torch.Generator().manual_seed(4)
    B, S, V, C = 4, 16, 40, 5
    batches = []
    for i in range(2):
        acts = torch.rand(B, S, C, generator=g) * (torch.rand(B, S, C, generator=g) < 0.5)
        acts[..., 0] = 1.0  # component 0 fires everywhere: every position has a firing
        batches.append(HarvestBatch(torch.randint(0, V, (B, S), generator=g), {"l": acts},
                                    torch.softmax(torch.randn(B, S, V, generator=g), -1),
                                    sequence_ids=torch.arange(i * B, (i + 1) * B)))
    dense, bounded = OutputProbAcc(mode="dense"), OutputProbAcc(mode="bounded", summary_k=64)
    run(batches, [dense])
    run(batches, [bounded])
    ids, counts = bounded.state_dict()["hh_ids"], bounded.state_dict()["hh_counts"]
    table = torch.zeros(C, V, dtype=torch.float64)
    r, j = (ids >= 0).nonzero(as_tuple=True)
    table[r, ids[r, j].long()] = counts[r, j]
    assert torch.allclose(table, dense.state_dict()["joint"], atol=1e-6)
    assert float(bounded.state_dict()["hh_error"].abs().max()) == 0.0


def test_firings_are_ordered_by_component_then_position_in_any_input_order():
    """`_component_order`: a stable sort by component alone for firings in position order (a batch's own
    order), a sort of the pair's key otherwise; both give the one (component, position) order."""
    g = torch.Generator().manual_seed(3)
    P, N = 40, 300
    pos, comp = (torch.rand(P, N, generator=g) < 0.2).nonzero(as_tuple=True)
    want = torch.argsort(comp * P + pos)
    assert torch.equal(heavy_hitters._component_order(comp, pos, P), want)
    perm = torch.randperm(comp.numel(), generator=g)
    got = heavy_hitters._component_order(comp[perm], pos[perm], P)
    assert torch.equal(perm[got], want)


def test_the_buffer_keeps_batches_in_the_bytes_it_plans_and_merges_them_unchanged():
    """`PendingProducts` keeps a batch in 32-bit ids and positions and float32 values: what it holds is at
    most `PENDING_ENTRY_BYTES` an entry (the plan's figure), and merging it leaves the summary a merge of
    the batch as given leaves (probabilities and counts are float32-exact)."""
    g = torch.Generator().manual_seed(5)
    N, P, M, k = 30, 50, 40, 4
    pending = heavy_hitters.PendingProducts()
    direct = HeavyHitters.empty(N, k, M, torch.float64)
    for step in range(3):
        fire = torch.rand(P, N, generator=g) < 0.2
        pos, comp = fire.nonzero(as_tuple=True)
        x = torch.rand(P, M, generator=g).float().double() * (torch.rand(P, M, generator=g) < 0.3)
        r, c = x.nonzero(as_tuple=True)
        X = csr_rows(r, c, x[r, c], P, M)
        pending.add(comp, pos, X)
        merge_product(direct.ids, direct.counts, direct.error, comp, pos, X)
    held = sum(t.numel() * t.element_size() for cp, pp, X in pending.parts
               for t in (cp, pp, X.crow_indices(), X.col_indices(), X.values()))
    assert held <= heavy_hitters.PENDING_ENTRY_BYTES * pending.entries
    buffered = HeavyHitters.empty(N, k, M, torch.float64)
    pending.merge_into(buffered.ids, buffered.counts, buffered.error)
    # one merge of the three batches is not three merges (the prunes differ), so compare with brute force
    # through the bound, and check the buffer's own merge against a merge of the stacked product
    stacked = HeavyHitters.empty(N, k, M, torch.float64)
    comp = torch.cat([cp.long() for cp, _, _ in pending.parts])
    pos = torch.cat([pp.long() + i * P for i, (_, pp, _) in enumerate(pending.parts)])
    dense = torch.cat([X.to_dense().double() for _, _, X in pending.parts])
    r, c = dense.nonzero(as_tuple=True)
    merge_product(stacked.ids, stacked.counts, stacked.error, comp, pos, csr_rows(r, c, dense[r, c], 3 * P, M))
    _same_summary(buffered, stacked, True)


@pytest.mark.parametrize("long_row", [0, 40])
def test_padded_rows_of_buffered_batches_equal_those_of_their_stacked_product(long_row):
    """`PaddedRows.of` a list of CSRs (the buffer's batches, laid out in place) is `PaddedRows.of` their
    stacked product, with long rows' entries past the width in the overflow (``long_row``) or without."""
    g = torch.Generator().manual_seed(11)
    parts, dense = [], []
    for step in range(3):
        x = (torch.rand(20, 40, generator=g) < 0.15).double() * torch.rand(20, 40, generator=g, dtype=torch.float64)
        x[step, :long_row] = 0.5
        r, c = x.nonzero(as_tuple=True)
        parts.append(csr_rows(r, c, x[r, c], 20, 40))
        dense.append(x)
    x = torch.cat(dense)
    r, c = x.nonzero(as_tuple=True)
    one, split = PaddedRows.of(csr_rows(r, c, x[r, c], 60, 40)), PaddedRows.of(parts)
    assert (one.over_col.numel() > 0) == bool(long_row)
    for name in ("cols", "vals", "lengths", "over_len", "over_crow", "over_col", "over_val"):
        assert torch.equal(getattr(one, name), getattr(split, name)), name


def test_csr_rows_from_entries_in_order_or_not():
    """`csr_rows` makes the same CSR (columns sorted in each row) from entries in (row, column) order, which
    it takes as they are, and from the same entries in any order."""
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(30, 20, generator=g) < 0.3).double() * torch.rand(30, 20, generator=g, dtype=torch.float64)
    r, c = x.nonzero(as_tuple=True)
    perm = torch.randperm(r.numel(), generator=g)
    a, b = csr_rows(r, c, x[r, c], 30, 20), csr_rows(r[perm], c[perm], x[r[perm], c[perm]], 30, 20)
    for X in (a, b):
        assert torch.equal(X.to_dense(), x)
    assert torch.equal(a.crow_indices(), b.crow_indices()) and torch.equal(a.col_indices(), b.col_indices())
