"""RandomWindowAcc: a brute-force reference, split/merge == one pass, state round trip, uniformity."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from autointerp.accumulators.sampling import firing_hash
from autointerp.accumulators.window_pool import RandomWindowAcc, firing_columns
from autointerp.batch import HarvestBatch
from autointerp.harvest import HarvestLoop
from autointerp.scoring.evidence import WindowPool


def make_data(seed: int, n_rows: int = 12, S: int = 20, N: int = 4, V: int = 9, p_fire: float = 0.2, masked: bool = True,
              padding: str = "right"):
    """Random rows; ``padding``: "right" (ragged ends), "left" (ragged starts), "holes" (both, and masked runs inside)."""
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, V, (n_rows, S), generator=g)
    act = torch.rand(n_rows, S, N, generator=g)
    act = torch.where(act < p_fire, act + 0.5, torch.zeros(()))
    mask = torch.ones(n_rows, S, dtype=torch.bool)
    if masked:
        lengths = torch.randint(1, S + 1, (n_rows,), generator=g)
        ar = torch.arange(S)[None, :]
        if padding == "right":
            mask = ar < lengths[:, None]
        elif padding == "left":
            mask = ar >= S - lengths[:, None]
        elif padding == "holes":
            lead = torch.randint(0, S // 2, (n_rows,), generator=g)
            mask = (ar >= lead[:, None]) & (ar < lead[:, None] + lengths[:, None])
            mask &= torch.rand(n_rows, S, generator=g) > 0.15
        else:
            raise ValueError(f"padding must be 'right', 'left' or 'holes', got {padding!r}")
    return tok, act, mask


def batches_of(tok, act, mask, sizes):
    out, i = [], 0
    for b in sizes:
        sl = slice(i, i + b)
        out.append(HarvestBatch(tok[sl], {"l": act[sl]}, mask=mask[sl], sequence_ids=torch.arange(i, i + b)))
        i += b
    return out


def run_loop(batches, n_windows, L, seed=0):
    loop = HarvestLoop([RandomWindowAcc(n_windows, L)], seed=seed, vocab_size=9, progress=False)
    for b in batches:
        loop.update(b)
    return loop


def all_tiles(mask, L):
    """The documented tiles: each run of valid positions cut into pieces of L from its first position."""
    tiles = []
    for r in range(mask.shape[0]):
        s, S = 0, mask.shape[1]
        while s < S:
            if not mask[r, s]:
                s += 1
                continue
            end = s
            while end < S and mask[r, end]:
                end += 1
            tiles += [(r, a, min(L, end - a)) for a in range(s, end, L)]
            s = end
    return tiles


def reference(tok, act, mask, n_windows, L, seed=0):
    """Every tile of every row, keyed by the documented hash; the n smallest, with their firings."""
    tiles = []
    for r, start, length in all_tiles(mask, L):
        key = int(firing_hash(seed + 2, torch.tensor([r]), torch.tensor([start]), torch.tensor([-1]))[0])
        tiles.append((key, r, start, length))
    tiles.sort()
    kept = tiles[:n_windows]
    windows = [{"sequence_index": r, "start": s, "token_ids": tok[r, s : s + n].tolist()} for _, r, s, n in kept]
    firings = []
    for w, (_, r, s, n) in enumerate(kept):
        for o in range(n):
            for c in range(act.shape[-1]):
                if act[r, s + o, c] > 0:
                    firings.append((w, o, c, float(act[r, s + o, c])))
    return windows, firings


def firings_of(shared):
    f = {name: col.tolist() for name, col in firing_columns(shared).items()}
    return list(zip(f["window"], f["offset"], f["component"], f["activation"]))


@pytest.mark.parametrize("padding", ["right", "left", "holes"])
@pytest.mark.parametrize("n_windows,L", [(5, 4), (30, 7), (1000, 6), (3, 20), (4, 50)])
def test_matches_brute_force_reference(n_windows, L, padding):
    tok, act, mask = make_data(1, padding=padding)
    loop = run_loop(batches_of(tok, act, mask, [5, 3, 4]), n_windows, L)
    shared = loop.finalize().shared["window_pool"]
    windows, firings = reference(tok, act, mask, n_windows, L)
    assert shared.meta["windows"] == windows
    got = firings_of(shared)
    assert [g[:3] for g in got] == [f[:3] for f in firings]
    assert [g[3] for g in got] == [f[3] for f in firings]  # the float32 values, widened exactly
    json.dumps(shared.meta, allow_nan=False)  # saved as shared/window_pool.json (+ .rows)


@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    n_windows=st.integers(1, 12),
    L=st.integers(1, 9),
    seed=st.integers(0, 2**31),
    split=st.integers(0, 5),
    padding=st.sampled_from(["right", "left", "holes"]),
)
def test_split_merge_equals_one_pass(sizes, n_windows, L, seed, split, padding):
    n_rows = sum(sizes)
    tok, act, mask = make_data(seed % 1000, n_rows=n_rows, S=15, padding=padding)
    batches = batches_of(tok, act, mask, sizes)
    one = run_loop(batches, n_windows, L, seed=seed % 7).finalize().shared["window_pool"]
    k = min(split, len(batches))
    a = run_loop(batches[:k], n_windows, L, seed=seed % 7)
    b = run_loop(batches[k:], n_windows, L, seed=seed % 7)
    merged = b.merge(a).finalize().shared["window_pool"] if k else b.finalize().shared["window_pool"]
    assert merged.meta["windows"] == one.meta["windows"]
    assert firings_of(merged) == firings_of(one)


def test_merging_the_same_stream_twice_keeps_each_window_once():
    tok, act, mask = make_data(3)
    a = run_loop(batches_of(tok, act, mask, [12]), 8, 5)
    b = run_loop(batches_of(tok, act, mask, [12]), 8, 5)
    once = a.finalize().shared["window_pool"]
    twice = a.merge(b).finalize().shared["window_pool"]
    assert twice.meta["windows"] == once.meta["windows"]
    assert firings_of(twice) == firings_of(once)


def test_state_round_trip_resumes_exactly():
    tok, act, mask = make_data(4)
    batches = batches_of(tok, act, mask, [4, 4, 4])
    full = run_loop(batches, 6, 5).finalize().shared["window_pool"]
    first = run_loop(batches[:2], 6, 5)
    state = first.state_dict()
    resumed = HarvestLoop([RandomWindowAcc(6, 5)], seed=0, vocab_size=9, progress=False)
    resumed.load_state_dict(state)
    resumed.update(batches[2])
    assert resumed.finalize().shared["window_pool"] == full


@pytest.mark.parametrize("slack", [-(1 << 30), 0])
def test_lazily_compacted_firings_equal_the_eager_ones(monkeypatch, slack):
    """An evicted window's firings stay stored until a compaction (the default slack never compacts at
    this size, so they are all still there at the end); compacting after every batch (slack < 0) or as
    the firings double (0) gives the same state, tensor for tensor, and the same pool."""
    from autointerp.accumulators import window_pool

    tok, act, mask = make_data(6, n_rows=40, p_fire=0.5)
    batches = batches_of(tok, act, mask, [2] * 20)
    lazy = run_loop(batches, 4, 3)
    (acc,) = [a for a in lazy.accumulators if isinstance(a, RandomWindowAcc)]
    assert acc._n_stored > int(torch.isin(torch.cat([acc.f_key, *[f[0] for f in acc._new_firings]]), acc.key).sum())
    monkeypatch.setattr(window_pool, "COMPACT_SLACK", slack)
    eager = run_loop(batches, 4, 3)
    (a,), (b,) = ([s["state"] for s in loop.state_dict()["accumulators"] if s["type"] == "RandomWindowAcc"]
                  for loop in (lazy, eager))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert lazy.finalize().shared["window_pool"] == eager.finalize().shared["window_pool"]
    assert acc._n_stored == acc.f_key.numel() == int(torch.isin(acc.f_key, acc.key).sum())


def test_reader_gives_dense_activations_and_firing_offsets():
    tok, act, mask = make_data(5)
    shared = run_loop(batches_of(tok, act, mask, [12]), 10, 6).finalize().shared["window_pool"]
    pool = WindowPool.from_shared(shared)
    assert len(pool) == 10
    for w, info in enumerate(shared.meta["windows"]):
        r, s = info["sequence_index"], info["start"]
        for c in range(act.shape[-1]):
            dense = pool.activations(w, c)
            want = act[r, s : s + len(info["token_ids"]), c].tolist()
            assert dense == pytest.approx(want)
            assert pool.firing_offsets(w, c) == [i for i, a in enumerate(want) if a > 0]


def _pool_answers(pool: WindowPool, n_comp: int) -> list:
    return [(w, c, pool.firing_offsets(w, c), pool.activations(w, c)) for w in range(len(pool)) for c in range(n_comp)]


def test_saved_pool_is_json_and_binary_rows_and_reads_back_the_same(tmp_path):
    """Saved as ``window_pool.json`` (the windows) and ``window_pool.rows``, 20 packed bytes a firing;
    `load_harvest` opens the table without reading it, and the pool read from the folder answers as the
    one in memory, window by window and component by component."""
    from autointerp.harvest import load_harvest
    from autointerp.harvest_store import SharedRows

    tok, act, mask = make_data(6)
    result = run_loop(batches_of(tok, act, mask, [6, 6]), 10, 6).finalize()
    shared = result.shared["window_pool"]
    n = len(firings_of(shared))
    assert isinstance(shared, SharedRows) and n > 20 and shared.meta["format"] == "autointerp.window_pool/2"
    result.save(tmp_path / "h")
    assert (tmp_path / "h" / "shared" / "window_pool.rows").stat().st_size == 20 * n
    meta = json.loads((tmp_path / "h" / "shared" / "window_pool.json").read_text())
    assert meta["windows"] == shared.meta["windows"] and "firings" not in meta
    loaded = load_harvest(tmp_path / "h").shared["window_pool"]
    assert isinstance(loaded, SharedRows) and loaded == shared
    assert _pool_answers(WindowPool.from_shared(loaded), 4) == _pool_answers(WindowPool.from_shared(shared), 4)


def test_a_format_1_pool_of_an_older_harvest_is_still_read():
    """A harvest saved before the binary rows holds the firings as four JSON lists (format 1):
    `WindowPool` reads it and answers as it does for the same pool in format 2."""
    tok, act, mask = make_data(7)
    shared = run_loop(batches_of(tok, act, mask, [12]), 8, 5).finalize().shared["window_pool"]
    cols = firing_columns(shared)
    v1 = {**shared.meta, "format": "autointerp.window_pool/1",
          "firings": {name: col.tolist() for name, col in cols.items()}}
    v1 = json.loads(json.dumps(v1))  # as read from an old shared/window_pool.json
    assert {k: v.tolist() for k, v in firing_columns(v1).items()} == {k: v.tolist() for k, v in cols.items()}
    assert _pool_answers(WindowPool.from_shared(v1), 4) == _pool_answers(WindowPool.from_shared(shared), 4)
    with pytest.raises(ValueError, match="not a window pool .*'autointerp.window_pool/9'"):
        WindowPool.from_shared({**v1, "format": "autointerp.window_pool/9"})
    with pytest.raises(ValueError, match=r"not a window pool \(a list\)"):
        WindowPool.from_shared([1, 2])


def test_bad_arguments_and_memory_estimate():
    with pytest.raises(ValueError, match="n_windows"):
        RandomWindowAcc(n_windows=0)
    with pytest.raises(ValueError, match="window_len"):
        RandomWindowAcc(window_len=0)
    loop = run_loop([], 4, 4)
    with pytest.raises(ValueError, match="no batches"):
        loop.finalize()
    acc = RandomWindowAcc(1024, 32)
    assert acc.state_bytes(None) == 1024 * (24 + 128)  # type: ignore[arg-type]


def test_merge_refuses_another_config():
    a, b = RandomWindowAcc(4, 4), RandomWindowAcc(5, 4)
    with pytest.raises(ValueError, match="config"):
        a.merge(b)


def test_selection_is_uniform_over_tiles():
    """Each tile is kept with probability n/T: chi-square over many seeds (fixed, not in @given)."""
    from scipy.stats import chisquare

    tok, act, mask = make_data(6, n_rows=10, S=16, masked=False)
    L, n = 4, 5  # 40 tiles, keep 5
    batches = batches_of(tok, act, mask, [10])
    counts: dict[tuple[int, int], int] = {}
    R = 400
    for seed in range(R):
        shared = run_loop(batches, n, L, seed=seed).finalize().shared["window_pool"]
        for w in shared.meta["windows"]:
            k = (w["sequence_index"], w["start"])
            counts[k] = counts.get(k, 0) + 1
    T = 10 * 4
    observed = [counts.get((r, s), 0) for r in range(10) for s in range(0, 16, L)]
    assert sum(observed) == R * n
    assert chisquare(observed, [R * n / T] * T).pvalue > 0.001


@pytest.mark.parametrize("padding", ["left", "holes"])
def test_tiles_cover_every_valid_position_exactly_once(padding):
    """Left padding and masked runs inside a row: every valid position is in one tile, no masked one is."""
    tok, act, mask = make_data(8, n_rows=16, S=23, padding=padding)
    L = 5
    shared = run_loop(batches_of(tok, act, mask, [3, 6, 7]), 10_000, L).finalize().shared["window_pool"]
    covered: dict[tuple[int, int], int] = {}
    for w in shared.meta["windows"]:
        assert 1 <= len(w["token_ids"]) <= L
        for o in range(len(w["token_ids"])):
            where = (w["sequence_index"], w["start"] + o)
            covered[where] = covered.get(where, 0) + 1
            assert w["token_ids"][o] == tok[where].item()
    valid = {(r, s) for r, s in mask.nonzero().tolist()}
    assert set(covered) == valid
    assert set(covered.values()) == {1}
    # so every firing of the data is in the (complete) pool
    want = {(r, s, c) for r, s, c in (act > 0).nonzero().tolist() if mask[r, s]}
    got = {(shared.meta["windows"][w]["sequence_index"], shared.meta["windows"][w]["start"] + o, c)
           for w, o, c, _ in firings_of(shared)}
    assert got == want


def test_selection_is_uniform_over_tiles_of_padded_rows():
    """With left padding and holes, each tile is still kept with probability n/T (fixed seeds, chi-square)."""
    from scipy.stats import chisquare

    tok, act, mask = make_data(9, n_rows=10, S=16, padding="holes")
    L, n = 4, 5
    tiles = all_tiles(mask, L)
    batches = batches_of(tok, act, mask, [4, 6])
    counts: dict[tuple[int, int], int] = {}
    R = 400
    for seed in range(R):
        for w in run_loop(batches, n, L, seed=seed).finalize().shared["window_pool"].meta["windows"]:
            k = (w["sequence_index"], w["start"])
            counts[k] = counts.get(k, 0) + 1
    assert set(counts) <= {(r, s) for r, s, _ in tiles}
    observed = [counts.get((r, s), 0) for r, s, _ in tiles]
    assert sum(observed) == R * n
    assert chisquare(observed, [R * n / len(tiles)] * len(tiles)).pvalue > 0.001


def test_passes_the_accumulator_conformance_check():
    from autointerp.testing import check_accumulator

    tok, act, mask = make_data(7)
    check_accumulator(lambda: RandomWindowAcc(6, 5), batches_of(tok, act, mask, [4, 4, 4]), vocab_size=9)
