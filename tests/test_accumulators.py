"""Each built-in accumulator against a brute-force reference, split-then-merge against
one pass (hypothesis), and the sampler's uniformity (fixed seeds, chi-square)."""

from __future__ import annotations

import inspect

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

import autointerp
from autointerp import (
    CorrelationAcc,
    FiringStatsAcc,
    HarvestBatch,
    HarvestLoop,
    InputTokenAcc,
    OutputProbAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TensorAccumulator,
    TopActivationAcc,
)
from autointerp.accumulators.associations import rank_columns
from autointerp.accumulators.sampling import EMPTY_KEY, KeyedSampler, descending_activation_key, firing_hash
from autointerp.testing import check_accumulator
from harvest_helpers import Reference, make_stream

V = 13


def harvest(batches, accs, **kw) -> HarvestLoop:
    loop = HarvestLoop(accs, progress=False, seed=kw.pop("seed", 0), **kw)
    for b in batches:
        loop.update(b)
    return loop


def acc_of(loop: HarvestLoop, cls):
    return next(a for a in loop.accumulators if type(a) is cls)


# -- against brute force --------------------------------------------------------------


@pytest.fixture(scope="module")
def stream():
    return make_stream(seed=1, n=4, V=V)


@pytest.fixture(scope="module")
def reference(stream):
    return Reference(stream)


def test_firing_stats_match_reference(stream, reference):
    loop = harvest(stream, [])
    acc = acc_of(loop, FiringStatsAcc)
    assert acc.count.tolist() == reference.firing_count().tolist()
    assert int(acc.n_tokens) == reference.n_tokens
    result = loop.finalize()
    for c, comp in enumerate(result):
        fired = reference.fires[:, c] == 1
        assert comp.firing_count == int(fired.sum())
        assert comp.firing_rate == pytest.approx(fired.sum() / reference.n_tokens)
        if fired.any():
            assert comp.mean_activation == pytest.approx(reference.acts[fired, c].mean(), rel=1e-6)
            assert comp.max_activation == pytest.approx(reference.acts[fired, c].max(), rel=1e-6)
        else:
            assert (comp.mean_activation, comp.max_activation) == (0.0, 0.0)


def test_correlation_counts_match_reference(stream, reference):
    acc = acc_of(harvest(stream, [CorrelationAcc()]), CorrelationAcc)
    state = acc.state_dict()
    assert state["cofire"].dtype == torch.int64
    np.testing.assert_array_equal(state["cofire"].numpy(), reference.cofire())
    np.testing.assert_array_equal(state["count"].numpy(), reference.firing_count())
    assert int(state["n_tokens"]) == reference.n_tokens


def test_input_token_counts_match_reference(stream, reference):
    acc = acc_of(harvest(stream, [InputTokenAcc()]), InputTokenAcc)
    np.testing.assert_array_equal(acc.joint.numpy(), reference.input_joint(V))
    np.testing.assert_array_equal(acc.token_count.numpy(), reference.token_count(V))
    np.testing.assert_array_equal(acc.comp_count.numpy(), reference.firing_count())


def test_output_prob_mass_matches_reference(stream, reference):
    acc = acc_of(harvest(stream, [OutputProbAcc()]), OutputProbAcc)
    state = acc.state_dict()
    assert state["joint"].dtype == torch.float64
    np.testing.assert_allclose(state["joint"].numpy(), reference.output_joint(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state["token_mass"].numpy(), reference.probs.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(state["comp_count"].numpy(), reference.firing_count())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_summed_in_full_precision(dtype):
    batches = make_stream(2, 3, V=V)
    for b in batches:
        b.activations = {k: v.to(dtype) for k, v in b.activations.items()}
        b.output_probs = b.output_probs.to(dtype)
    ref = Reference(batches)  # from the same rounded values, summed in float64
    acc = acc_of(harvest(batches, [OutputProbAcc(), CorrelationAcc()]), OutputProbAcc)
    np.testing.assert_allclose(acc.token_mass.numpy(), ref.probs.sum(0), rtol=1e-6)
    np.testing.assert_allclose(acc.state_dict()["joint"].numpy(), ref.output_joint(), rtol=1e-6, atol=1e-7)


def test_reservoir_is_the_k_smallest_keys_with_true_windows(stream, reference):
    k, ctx = 3, 2
    result = harvest(stream, [ReservoirAcc(k=k, context_tokens=ctx)], seed=7).finalize()
    want = reference.keyed_sample(seed=7, k=k)
    for c, comp in enumerate(result):
        got = [(e.sequence_index, e.position) for e in comp.examples]
        assert got == want[c], f"component {c}"
        for e in comp.examples:
            ids, acts, offset = reference.window(e.sequence_index, e.position, c, ctx)
            assert (e.token_ids, e.firing_offset) == (ids, offset)
            assert e.activations == pytest.approx(acts)
            assert e.firing_activation > 0


def test_top_activations_are_the_true_top_k(stream, reference):
    k = 4
    result = harvest(stream, [TopActivationAcc(k=k, context_tokens=1)]).finalize()
    for c, comp in enumerate(result):
        true = sorted((a for _, _, cc, a in reference.firings if cc == c), reverse=True)[:k]
        got = [e.firing_activation for e in comp.top_examples]
        assert got == pytest.approx(true), f"component {c}"
        for e in comp.top_examples:
            assert (e.sequence_index, e.position, c) in {(s, p, cc) for s, p, cc, _ in reference.firings}


def test_top_activations_break_ties_by_a_random_key_not_by_position():
    # every firing of component 0 has the same activation: which k are kept depends on the seed
    B, S = 4, 16
    acts = torch.full((B, S, 1), 0.5)
    batch = HarvestBatch(torch.zeros(B, S, dtype=torch.int64), {"l": acts}, sequence_ids=torch.arange(B))
    kept = []
    for seed in range(3):
        r = harvest([batch], [TopActivationAcc(k=3, context_tokens=0)], seed=seed).finalize()
        kept.append({(e.sequence_index, e.position) for e in r[0].top_examples})
    assert len({frozenset(s) for s in kept}) > 1


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=2, max_size=30))
def test_descending_activation_key_orders_by_activation(values):
    act = torch.tensor(values, dtype=torch.float32)
    key = descending_activation_key(act, torch.arange(len(values)))
    order = torch.argsort(key).tolist()
    got = [act[i].item() for i in order]
    assert got == sorted(got, reverse=True)


def test_firing_hash_is_a_pure_function_of_the_firing():
    seq, pos, comp = torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3]), torch.tensor([4, 4, 7])
    a = firing_hash(3, seq, pos, comp)
    assert torch.equal(a, firing_hash(3, seq, pos, comp))
    assert torch.equal(a[1:], firing_hash(3, seq[1:], pos[1:], comp[1:]))
    assert not torch.equal(a, firing_hash(4, seq, pos, comp))
    assert bool((a >= 0).all()) and bool((a < EMPTY_KEY).all())


# -- rank_columns against a plain loop ------------------------------------------------


def _wilson(successes, trials, z=1.959963984540054):
    """The Wilson score interval, written out from its formula."""
    p = successes / trials
    centre, spread = p + z * z / (2 * trials), z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return (centre - spread) / (1 + z * z / trials), (centre + spread) / (1 + z * z / trials)


def _brute_rank(joint, row_count, col_total, n, k, min_count, metric, exclude_diag=False, min_support=3):
    """Per row, the top-k (value, column) by the ranking rule of docs/statistics.md, as a plain loop."""
    out = []
    for r in range(joint.shape[0]):
        entries = []
        for c in range(joint.shape[1]):
            j = joint[r, c]
            if j < min_count or (exclude_diag and r == c):
                continue
            prec, rec = j / col_total[c], j / row_count[r]
            pmi = math.log(j * n / (row_count[r] * col_total[c]))
            lower, upper = _wilson(j, col_total[c])
            key = {"precision": (lower,), "recall": (rec,), "pmi": (j >= min_support, pmi),
                   "bottom_pmi": (-math.log(upper * n / row_count[r]),)}[metric]
            value = {"precision": prec, "recall": rec, "pmi": pmi, "bottom_pmi": -pmi}[metric]
            entries.append((key, value))
        out.append([v for _, v in sorted(entries, key=lambda e: e[0], reverse=True)[:k]])
    return out


@pytest.mark.parametrize("metric", ["precision", "recall", "pmi", "bottom_pmi"])
def test_rank_columns_matches_a_plain_loop(metric):
    g = torch.Generator().manual_seed(0)
    joint = torch.randint(0, 4, (7, 9), generator=g)
    row_count = joint.sum(1) + 2
    col_total = joint.sum(0) + 3
    n = float(col_total.sum())
    ranked = rank_columns(joint, row_count, col_total, n, 4, min_count=1, bottom_pmi=True)[metric]
    want = _brute_rank(joint.numpy(), row_count.numpy(), col_total.numpy(), n, 4, 1, metric)
    for r, w in enumerate(want):
        idx = ranked.index[r]
        got_idx = idx[idx >= 0]
        assert len(got_idx) == len(w)
        field = "pmi" if metric == "bottom_pmi" else metric
        got = getattr(ranked, field)[r][: len(w)].tolist()
        if metric == "bottom_pmi":
            got = [-x for x in got]
        assert got == pytest.approx(w)
        # the reported numbers belong to the reported column
        for i, c in enumerate(got_idx.tolist()):
            assert ranked.joint[r, i] == joint[r, c]


def test_rank_columns_never_ranks_a_component_with_itself():
    cof = torch.tensor([[5, 2, 0], [2, 4, 1], [0, 1, 3]])
    count = cof.diagonal().clone()
    ranked = rank_columns(cof, count, count, 10.0, 3, min_count=1, exclude_diagonal_from=0)
    for m in ("precision", "recall", "pmi"):
        for r in range(3):
            assert r not in ranked[m].index[r].tolist()
    assert ranked["pmi"].index[0].tolist() == [1, -1, -1]


def test_correlation_output_definitions(stream, reference):
    result = harvest(stream, [CorrelationAcc(top_k=50)]).finalize()
    space = result.space
    cof, count, n = reference.cofire(), reference.firing_count(), reference.n_tokens
    for c, comp in enumerate(result):
        for p in comp.correlations.top_pmi:
            j = space.parse_key(p.key)
            assert j != c and p.count == cof[c, j] >= 1
            assert p.precision == pytest.approx(cof[c, j] / count[j])  # P(this | partner)
            assert p.recall == pytest.approx(cof[c, j] / count[c])  # P(partner | this)
            assert p.pmi == pytest.approx(math.log(cof[c, j] * n / (count[c] * count[j])))
        assert len(comp.correlations.top_pmi) == int((cof[c] > 0).sum() - (cof[c, c] > 0))


# -- split then merge equals one pass ---------------------------------------------------

STATE_ACCS = [
    lambda: FiringStatsAcc(),
    lambda: CorrelationAcc(),
    lambda: InputTokenAcc(),
    lambda: OutputProbAcc(),
    lambda: ReservoirAcc(k=3, context_tokens=2),
    lambda: TopActivationAcc(k=3, context_tokens=1),
]


@given(
    seed=st.integers(0, 2**31 - 1),
    n_batches=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 5), max_size=3),
    threshold=st.sampled_from([0.0, 0.5]),
)
def test_split_then_merge_equals_one_pass(seed, n_batches, cuts, threshold):
    batches = make_stream(seed, n_batches, V=V)
    bounds = sorted({0, n_batches, *(min(c, n_batches) for c in cuts)})
    parts = [batches[a:b] for a, b in zip(bounds, bounds[1:])]
    whole = harvest(batches, [f() for f in STATE_ACCS], threshold=threshold, seed=seed)
    merged = harvest(parts[0], [f() for f in STATE_ACCS], threshold=threshold, seed=seed)
    for part in parts[1:]:
        merged.merge(harvest(part, [f() for f in STATE_ACCS], threshold=threshold, seed=seed))
    for a, b in zip(whole.accumulators, merged.accumulators):
        sa, sb = a.state_dict(), b.state_dict()
        for name in sa:
            if sa[name].is_floating_point():
                torch.testing.assert_close(sb[name], sa[name], rtol=1e-6, atol=1e-7)
            else:  # counts, keys and the reservoir's membership: exact
                assert torch.equal(sb[name], sa[name]), f"{type(a).__name__}.{name}"
    assert (merged.n_batches, merged.n_tokens) == (whole.n_batches, whole.n_tokens)


@given(seed=st.integers(0, 2**31 - 1), sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_reservoir_membership_does_not_depend_on_batch_size(seed, sizes):
    """The same rows, cut into batches of different sizes, keep the same sample."""
    rows = make_stream(seed, 1, B=sum(sizes), V=V)[0]
    batches, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        batches.append(HarvestBatch(rows.tokens[sl], {k: v[sl] for k, v in rows.activations.items()},
                                    rows.output_probs[sl], rows.mask[sl], rows.sequence_ids[sl]))
        start += n
    one = acc_of(harvest([rows], [ReservoirAcc(k=2, context_tokens=1)], seed=seed), ReservoirAcc)
    many = acc_of(harvest(batches, [ReservoirAcc(k=2, context_tokens=1)], seed=seed), ReservoirAcc)
    # the state as handed out: each row's slots in key order (updates fill slots in any order)
    a, b = one.state_dict(), many.state_dict()
    for f in ("key", "sequence", "position", "tokens", "acts"):
        assert torch.equal(a[f], b[f]), f


@pytest.mark.parametrize(
    "factory",
    [FiringStatsAcc, CorrelationAcc, InputTokenAcc, OutputProbAcc,
     lambda: ReservoirAcc(k=3, context_tokens=2), lambda: TopActivationAcc(k=2, context_tokens=1)],
    ids=["firing_stats", "correlation", "input_tokens", "output_probs", "reservoir", "top_activations"],
)
def test_builtins_pass_the_conformance_check(factory):
    check_accumulator(factory, make_stream(3, 4, V=V))


# -- each accumulator has its own context ---------------------------------------------


def test_moving_one_accumulator_leaves_the_others_device_alone():
    accs = [CorrelationAcc(), InputTokenAcc(), ReservoirAcc(k=2), RandomWindowAcc(n_windows=4, window_len=4)]
    loop = harvest(make_stream(2, 2, V=V), accs)
    moved, *others = loop.accumulators
    moved.to("meta")  # any device other than the loop's; meta allocates nothing
    assert moved.ctx.device == torch.device("meta")
    assert all(t.device.type == "meta" for t in moved.state_dict().values())
    assert loop.ctx.device == torch.device("cpu")
    for a in others:
        assert a.ctx.device == torch.device("cpu"), type(a).__name__
        assert all(t.device.type == "cpu" for t in a.state_dict().values()), type(a).__name__


# -- the TensorAccumulator seams the samplers use ---------------------------------------


class _JointlyMerged(TensorAccumulator):
    name = "jointly_merged"

    def setup(self, ctx):
        self.add_state("seen", torch.zeros(0, dtype=torch.int64), reduce=None, fixed_shape=False)

    def update(self, batch):
        self.seen = torch.cat([self.seen, batch.firing_pos])

    def finalize(self):
        return {}


def test_a_state_without_a_reduction_needs_merge_states():
    a, b = harvest(make_stream(0, 1), [_JointlyMerged()]), harvest(make_stream(1, 1), [_JointlyMerged()])
    with pytest.raises(NotImplementedError, match=r"_JointlyMerged.seen was declared with reduce=None: override merge_states"):
        a.accumulators[1].merge(b.accumulators[1])


def test_a_growing_state_loads_whatever_its_length():
    a, b = (harvest(make_stream(s, n), [_JointlyMerged()]).accumulators[1] for s, n in ((0, 1), (1, 3)))
    assert a.seen.shape != b.seen.shape
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.seen, b.seen)


def test_add_state_names_the_reductions():
    with pytest.raises(ValueError, match=r"reduce must be one of \['max', 'min', 'sum'\] or None, got 'mean'"):
        _JointlyMerged().add_state("x", torch.zeros(1), reduce="mean")


@pytest.mark.parametrize(("cls", "size"), [(ReservoirAcc, "k"), (TopActivationAcc, "k"), (RandomWindowAcc, "n_windows")])
def test_the_samplers_inherit_the_state_plumbing(cls, size):
    for method in ("merge", "load_state_dict", "to"):
        if cls is RandomWindowAcc:  # it compacts its lazily appended firings, then hands on to the base class
            assert getattr(cls, method) is not getattr(TensorAccumulator, method)
            assert f"super().{method}(" in inspect.getsource(getattr(cls, method)), method
            continue
        assert getattr(cls, method) is getattr(TensorAccumulator, method), method
    small, big = (harvest(make_stream(0, 2, V=V), [cls(**{size: n})]).accumulators[1] for n in (2, 3))
    if issubclass(cls, KeyedSampler):  # its state_dict hands out the same states, each row's slots in key order
        plain = TensorAccumulator.state_dict(big)
        assert plain.keys() == big.state_dict().keys()
        assert torch.equal(plain["key"].sort(dim=1).values, big.state_dict()["key"])
    with pytest.raises(ValueError, match=rf"{cls.__name__}.key has shape .* in the saved state, expected .*another config"):
        small.load_state_dict(big.state_dict())


# -- what the interpreter and the loop read from the class ------------------------------

BUILTINS = [FiringStatsAcc, CorrelationAcc, InputTokenAcc, OutputProbAcc, ReservoirAcc, TopActivationAcc,
            RandomWindowAcc]


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.__name__)
def test_a_builtin_prompt_section_names_a_template_that_exists(cls):
    sections = Path(autointerp.__file__).parent / "prompts" / "sections"
    if cls.prompt_section is not None:
        assert (sections / cls.prompt_section).is_file(), f"{cls.__name__}.prompt_section = {cls.prompt_section!r}"


def test_the_harvest_config_records_each_prompt_section():
    accs = [cls() for cls in BUILTINS if cls is not FiringStatsAcc]
    config = harvest(make_stream(0, 1, V=V), accs).config()
    assert {a["type"]: a["prompt_section"] for a in config.accumulators} == {
        cls.__name__: cls.prompt_section for cls in BUILTINS
    }


class _SetsTwoFields(TensorAccumulator):
    """Writes two ComponentData fields at once, as FiringStatsAcc does."""

    name = "two_fields"
    sets_fields = True

    def setup(self, ctx):
        self.add_state("n", torch.zeros(ctx.n_components, dtype=torch.int64))

    def update(self, batch):
        self.n.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))

    def finalize(self):
        return {i: {"mean_activation": -1.0, "max_activation": float(n)} for i, n in enumerate(self.n.tolist())}


def test_sets_fields_is_declared_and_the_loop_sets_each_field():
    assert TensorAccumulator.sets_fields is False and FiringStatsAcc.sets_fields is True
    result = harvest(make_stream(0, 2), [_SetsTwoFields()]).finalize()
    for comp in result:
        assert (comp.mean_activation, comp.max_activation) == (-1.0, float(comp.firing_count))
        assert "two_fields" not in comp.extras


# -- uniformity (fixed seeds, outside @given) -------------------------------------------


def _inclusion_counts(batches: list[HarvestBatch], k: int, seeds: range) -> np.ndarray:
    """How often each firing of the shared pattern is sampled, over every component and seed.

    Every component fires at the same positions; each component has its own keys,
    so each component is an independent trial of the sampler.
    """
    counts = None
    for seed in seeds:
        r = harvest(batches, [ReservoirAcc(k=k, context_tokens=0)], seed=seed).finalize()
        firings = sorted({(int(s), int(p)) for b in batches
                          for s, row in zip(b.sequence_ids.tolist(), b.activations["l"][..., 0].gt(0).tolist())
                          for p, on in enumerate(row) if on})
        index = {f: i for i, f in enumerate(firings)}
        if counts is None:
            counts = np.zeros(len(firings), np.int64)
        for comp in r:
            assert len(comp.examples) == k
            for e in comp.examples:
                counts[index[(e.sequence_index, e.position)]] += 1
    return counts


def _pattern_batch(first_row: int, rows: int, S: int, fire_at: list[tuple[int, int]], N: int) -> HarvestBatch:
    acts = torch.zeros(rows, S, N)
    for r, s in fire_at:
        acts[r, s, :] = 1.0
    return HarvestBatch(torch.zeros(rows, S, dtype=torch.int64), {"l": acts},
                        sequence_ids=torch.arange(first_row, first_row + rows))


def test_reservoir_is_uniform_over_an_even_stream():
    N, k = 300, 4
    g = np.random.default_rng(0)
    batches = []
    for i in range(4):
        pos = g.choice(2 * 16, size=5, replace=False)
        batches.append(_pattern_batch(2 * i, 2, 16, [(int(p) // 16, int(p) % 16) for p in pos], N))
    counts = _inclusion_counts(batches, k, range(3))
    assert counts.sum() == 3 * N * k
    assert chisquare(counts).pvalue > 0.001


def test_reservoir_is_uniform_over_a_bursty_stream():
    """Most firings arrive in one batch; a per-batch cap would starve that batch."""
    N, k = 300, 4
    sparse = [(0, 3)]
    burst = [(r, s) for r in range(2) for s in range(16)]  # 32 of the 35 firings
    batches = [_pattern_batch(0, 2, 16, sparse, N), _pattern_batch(2, 2, 16, burst, N),
               _pattern_batch(4, 2, 16, [(1, 5)], N), _pattern_batch(6, 2, 16, [(0, 0)], N)]
    counts = _inclusion_counts(batches, k, range(3))
    assert len(counts) == 35
    assert chisquare(counts).pvalue > 0.001


def test_reservoir_key_order_is_a_uniform_order():
    """The first example shown is equally likely to be any of a component's firings."""
    N, k = 400, 3
    batch = _pattern_batch(0, 1, 12, [(0, s) for s in range(12)], N)
    first = np.zeros(12, np.int64)
    for seed in range(2):
        for comp in harvest([batch], [ReservoirAcc(k=k, context_tokens=0)], seed=seed).finalize():
            first[comp.examples[0].position] += 1
    assert chisquare(first).pvalue > 0.001


# -- stored values keep the harvest's firing decision (issue 10 item 4) ----------------


def _near_threshold_stream(threshold: float, seed: int = 0, rows: int = 6, S: int = 12, N: int = 5) -> list[HarvestBatch]:
    """Activations a few float32 steps either side of the threshold, where rounding bites.

    The harvest compares in float32 (``acts > threshold``), so the values that
    matter are float32 neighbours of ``float32(threshold)``: just above (a firing
    that a 6-7 digit rounding used to turn into the threshold itself, i.e. silent),
    the threshold's own float32 (not a firing, though its float64 widening may
    exceed a float64 threshold such as 0.1), and just below.
    """
    g = torch.Generator().manual_seed(seed)
    t32 = torch.tensor(threshold, dtype=torch.float32)
    ladder = [t32]
    up = down = t32
    for _ in range(3):
        up = torch.nextafter(up, torch.tensor(float("inf")))
        down = torch.nextafter(down, torch.tensor(float("-inf")))
        ladder += [up, down]
    values = torch.stack(ladder)
    acts = values[torch.randint(0, len(values), (rows, S, N), generator=g)]
    tokens = torch.randint(0, V, (rows, S), generator=g)
    mask = torch.ones(rows, S, dtype=torch.bool)
    mask[0, 5] = False  # a hole inside windows
    return [HarvestBatch(tokens[i : i + 2], {"l": acts[i : i + 2]}, mask=mask[i : i + 2],
                         sequence_ids=torch.arange(i, i + 2)) for i in range(0, rows, 2)]


def _harvest_decisions(batches: list[HarvestBatch], threshold: float) -> dict[tuple[int, int, int], bool]:
    """(sequence, position, component) -> fired, decided exactly as the loop does (float32, mask)."""
    out = {}
    for b in batches:
        fires = (b.activations["l"].float() > threshold) & b.mask[..., None]
        for r, sid in enumerate(b.sequence_ids.tolist()):
            for s in range(fires.shape[1]):
                if b.mask[r, s]:
                    for c in range(fires.shape[2]):
                        out[(sid, s, c)] = bool(fires[r, s, c])
    return out


@pytest.mark.parametrize("threshold", [1.0, 0.1, 0.5, 1 / 3, 2.5e-3, 123.456, 0.0, -0.7])
def test_stored_activations_keep_every_firing_decision(threshold, tmp_path):
    from autointerp.harvest import load_harvest
    from autointerp.prompts import marked_text
    from autointerp.scoring.evidence import WindowPool

    batches = _near_threshold_stream(threshold)
    want = _harvest_decisions(batches, threshold)
    assert sum(want.values()) > 50 and not all(want.values())
    accs = [FiringStatsAcc(), ReservoirAcc(k=100, context_tokens=3), TopActivationAcc(k=100, context_tokens=3),
            RandomWindowAcc(n_windows=1000, window_len=4)]
    result = harvest(batches, accs, threshold=threshold, vocab_size=V).finalize()
    result.save(tmp_path / "h")
    loaded = load_harvest(tmp_path / "h")  # through JSON, as every downstream user reads it
    checked = 0
    for c, comp in enumerate(loaded.components):
        assert comp.firing_count == sum(f for (_, _, cc), f in want.items() if cc == c)
        assert len(comp.examples) == comp.firing_count  # k is large: every firing is stored
        for ex in comp.examples + comp.top_examples:
            marks = marked_text(ex, threshold)
            for i, (tid, a) in enumerate(zip(ex.token_ids, ex.activations)):
                fired = want.get((ex.sequence_index, ex.position - ex.firing_offset + i, c), False)
                assert (a > threshold) == fired, (c, ex.sequence_index, ex.position, i, a)
                checked += 1
            assert marks.count("<<") == sum(a > threshold for a in ex.activations)
    pool = WindowPool.from_shared(loaded.shared["window_pool"])
    for w, info in enumerate(pool.windows):
        for c in range(loaded.config.n_components):
            ew = pool.window(w, c)
            got = [want.get((info["sequence_index"], info["start"] + o, c), False) for o in range(len(ew))]
            assert ew.fires == got, (w, c)
            assert pool.firing_offsets(w, c) == [o for o, f in enumerate(got) if f]
            checked += len(ew)
    assert checked > 1000


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=40),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([6, 7]),
)
def test_rounding_never_crosses_the_threshold(values, threshold, digits):
    from autointerp.accumulators.sampling import round_keeping_firing, round_significant

    # the threshold's float32 neighbours are where rounding bites; mix them in
    t32 = torch.tensor(threshold, dtype=torch.float32)
    near = [torch.nextafter(t32, torch.tensor(d)).item() for d in (float("inf"), float("-inf"))]
    x = torch.tensor(values + near + [t32.item()], dtype=torch.float32)
    fires = x > threshold
    out = round_keeping_firing(x, fires, threshold, digits)
    assert ((out > threshold) == fires).all()
    # off the nearest rounding only where it crossed, and then by at most one unit in the
    # last digit, or onto the threshold when the float32 value sits on it
    x64 = x.double()
    nearest = round_significant(x, digits)
    moved = out != nearest
    assert ((nearest[moved] > threshold) != fires[moved]).all()
    unit = 10.0 ** (1 - digits) * x64.abs()
    onto = (x64 - threshold).abs() * (1 + 1e-12) + abs(threshold) * 1e-15 + 1e-300
    assert ((out - x64).abs()[moved] <= torch.maximum(unit, onto)[moved]).all()
    assert ((out - x64).abs()[~moved] <= unit[~moved] / 2 * (1 + 1e-9)).all()


# -- bounded modes (issue 11 item 2): the protocol holds; the bounds are in test_heavy_hitters.py


@pytest.mark.parametrize("cls", [InputTokenAcc, OutputProbAcc, CorrelationAcc])
def test_bounded_modes_pass_the_conformance_check(cls):
    # with summary_k >= the columns no counter is ever pruned, so merge equals one pass exactly;
    # with fewer counters merge equals one pass within the stated bound (test_heavy_hitters.py)
    check_accumulator(lambda: cls(mode="bounded", summary_k=16), make_stream(3, 4, V=V))


@pytest.mark.parametrize("cls", [InputTokenAcc, OutputProbAcc, CorrelationAcc])
def test_dense_and_bounded_agree_when_nothing_is_pruned(cls, stream):
    def out(mode):
        return harvest(stream, [cls(mode=mode, summary_k=16, top_k=50)]).finalize()

    for d, b in zip(out("dense"), out("bounded")):
        field = cls.name
        for ranking in ("top_recall", "top_precision", "top_pmi"):
            key = (lambda s: s.token_id) if field != "correlations" else (lambda s: s.key)
            got = sorted((key(s), round(s.count, 4)) for s in getattr(getattr(b, field), ranking))
            want = sorted((key(s), round(s.count, 4)) for s in getattr(getattr(d, field), ranking))
            assert got == want
            assert all(s.count_error == 0 for s in getattr(getattr(b, field), ranking))


def test_a_sampler_keeps_each_rows_largest_key_across_batches_merges_and_loads():
    """The keyed samplers keep each row's largest kept key between batches (refreshed for the rows a batch
    wrote) instead of a pass over N x k keys a batch; a merge or a load, which change the keys otherwise,
    make it afresh. After each, it names a slot that holds the row's largest key, and the sample equals
    one pass's."""
    batches = make_stream(4, 6, V=V)
    for cls in (ReservoirAcc, TopActivationAcc):
        loop = harvest(batches[:3], [cls(k=3, context_tokens=1)])
        acc = acc_of(loop, cls)

        def check():
            value, slot = acc._largest()
            want = acc.key.max(dim=1).values
            assert torch.equal(value, want) and torch.equal(acc.key.gather(1, slot[:, None]).squeeze(1), want)

        check()
        other = acc_of(harvest(batches[3:], [cls(k=3, context_tokens=1)]), cls)
        acc.merge(other)  # the keys change under the kept ones
        check()
        state = acc.state_dict()
        fresh = acc_of(harvest(batches[:1], [cls(k=3, context_tokens=1)]), cls)
        fresh._largest()  # kept for the old keys, then loaded over
        fresh.load_state_dict(state)
        assert torch.equal(fresh._largest()[0], fresh.key.max(dim=1).values)
        one = acc_of(harvest(batches, [cls(k=3, context_tokens=1)]), cls)
        assert torch.equal(acc.state_dict()["key"], one.state_dict()["key"])
