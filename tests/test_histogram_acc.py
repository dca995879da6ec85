"""ActivationHistogramAcc: a brute-force reference, split/merge == one pass, conformance, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from harvest_helpers import Reference, make_stream
from hypothesis import given
from hypothesis import strategies as st

from autointerp.accumulators.histogram import DEFAULT_MIN_VALUE, ActivationHistogramAcc, LogBins
from autointerp.batch import HarvestBatch
from autointerp.harvest import HarvestLoop, load_harvest
from autointerp.testing import check_accumulator


def run(batches, threshold=0.0, **kw):
    loop = HarvestLoop([ActivationHistogramAcc(**kw)], threshold=threshold, vocab_size=13, progress=False)
    for b in batches:
        loop.update(b)
    return loop


def reference_histograms(batches, threshold=0.0, bins_per_octave=4, n_octaves=20, min_value=None):
    """Per component: every firing binned by numpy against the documented edges, trimmed."""
    ref = Reference(batches, threshold)
    lo = min_value if min_value is not None else (threshold if threshold > 0 else DEFAULT_MIN_VALUE)
    edges = lo * 2.0 ** (np.arange(bins_per_octave * n_octaves + 1) / bins_per_octave)
    counts = np.zeros((ref.N, len(edges) + 1), np.int64)
    top = np.full(ref.N, -np.inf)
    for _, _, c, a in ref.firings:
        # bin j: edges[j-1] < a <= edges[j]; written as a scan, not searchsorted
        j = next((i for i, e in enumerate(edges) if a <= e), len(edges))
        counts[c, j] += 1
        top[c] = max(top[c], a)
    out = {}
    for c in range(ref.N):
        nz = np.nonzero(counts[c])[0]
        if not len(nz):
            out[c] = None
            continue
        a, b = nz[0], nz[-1]
        lower = [edges[j - 1] if j > 0 else threshold for j in range(a, b + 1)]
        upper = edges[b] if b < len(edges) else top[c]
        out[c] = (lower + [upper], counts[c, a : b + 1].tolist())
    return out


def as_tuples(result):
    return {i: None if c.histogram is None else (c.histogram.edges, c.histogram.counts)
            for i, c in enumerate(result.components)}


def heavy_stream(seed, n=4, B=3, S=9, N=4):
    """Activations over many orders of magnitude, some above the top edge and below the lowest."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        a = torch.exp(4 * torch.randn(B, S, N, generator=g))
        a = torch.where(torch.rand(B, S, N, generator=g) < 0.4, a, torch.zeros(()))
        out.append(HarvestBatch(torch.randint(0, 13, (B, S), generator=g), {"l": a},
                                mask=torch.rand(B, S, generator=g) < 0.9, sequence_ids=torch.arange(i * B, i * B + B)))
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.05, -0.5])
def test_histogram_equals_brute_force(threshold):
    batches = heavy_stream(1)
    got = as_tuples(run(batches, threshold=threshold).finalize())
    want = reference_histograms(batches, threshold)
    assert got.keys() == want.keys()
    for c in want:
        if want[c] is None:
            assert got[c] is None
            continue
        assert got[c][1] == want[c][1]
        np.testing.assert_allclose(got[c][0], want[c][0], rtol=1e-12)


def test_counts_sum_to_the_firing_count_and_are_integers():
    batches = make_stream(3, 5)
    loop = HarvestLoop([ActivationHistogramAcc()], vocab_size=13, progress=False)
    for b in batches:
        loop.update(b)
    res = loop.finalize()
    for c in res.components:
        h = c.histogram
        assert (h.total if h else 0) == c.firing_count
        if h:
            assert all(isinstance(x, int) for x in h.counts)
            assert len(h.edges) == len(h.counts) + 1 and h.edges == sorted(h.edges)
            assert h.edges[0] < c.max_activation <= h.edges[-1]


def test_edges_at_whole_octaves_are_exact_and_first_bin_starts_at_the_threshold():
    b = LogBins.for_threshold(0.25, bins_per_octave=3, n_octaves=4)
    assert b.edges[::3].tolist() == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert b.n_bins == 3 * 4 + 2
    # a value exactly on an edge belongs to the bin below it: (edges[j-1], edges[j]]
    assert b.bin_of(torch.tensor([0.25, 0.2500001, 0.5, 4.0, 4.0001])).tolist() == [0, 1, 3, 12, 13]
    assert LogBins.for_threshold(0.0, 4, 20).lo == DEFAULT_MIN_VALUE
    assert LogBins.for_threshold(0.0, 4, 20, min_value=0.1).lo == 0.1


def test_bad_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="bins_per_octave must be at least 1, got 0"):
        ActivationHistogramAcc(bins_per_octave=0)
    with pytest.raises(ValueError, match="min_value must be > 0"):
        ActivationHistogramAcc(min_value=0.0)


@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       threshold=st.sampled_from([0.0, 0.3]))
def test_split_then_merge_equals_one_pass(seed, cuts, threshold):
    batches = heavy_stream(seed, n=6)
    whole = run(batches, threshold)
    bounds = sorted(set(cuts))
    parts = [batches[a:b] for a, b in zip([0] + bounds, bounds + [len(batches)]) if batches[a:b]]
    merged = run(parts[0], threshold)
    for p in parts[1:]:
        merged.merge(run(p, threshold))
    assert as_tuples(merged.finalize()) == as_tuples(whole.finalize())


def test_conformance():
    check_accumulator(ActivationHistogramAcc, heavy_stream(7))
    check_accumulator(lambda: ActivationHistogramAcc(bins_per_octave=1, n_octaves=3, min_value=0.5), heavy_stream(8),
                      threshold=0.1)


def test_saved_and_loaded(tmp_path):
    res = run(heavy_stream(2)).finalize()
    res.save(tmp_path / "h")
    back = load_harvest(tmp_path / "h")
    assert as_tuples(back) == as_tuples(res)


def test_state_bytes_is_what_it_allocates():
    loop = run(heavy_stream(2))
    acc = loop.accumulators[-1]
    assert isinstance(acc, ActivationHistogramAcc)
    have = sum(t.numel() * t.element_size() for t in acc.state_dict().values())
    assert acc.state_bytes(acc.ctx) == have
