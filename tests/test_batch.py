"""HarvestBatch.validate and the loop refuse bad input with a message that names the
tensor, what was expected and what arrived; ComponentSpace numbering; the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp import (
    ComponentSpace,
    CorrelationAcc,
    HarvestBatch,
    HarvestLoop,
    InputTokenAcc,
    LayerSpec,
    OutputProbAcc,
    ReservoirAcc,
)
from harvest_helpers import make_batch

B, S, V = 2, 5, 7


def good(**over) -> HarvestBatch:
    g = torch.Generator().manual_seed(0)
    fields = dict(
        tokens=torch.randint(0, V, (B, S), generator=g),
        activations={"h.0": torch.rand(B, S, 4, generator=g), "h.1": torch.rand(B, S, 2, generator=g)},
        output_probs=torch.softmax(torch.randn(B, S, V, generator=g), -1),
        mask=torch.ones(B, S, dtype=torch.bool),
        sequence_ids=torch.arange(B),
    )
    fields.update(over)
    return HarvestBatch(**fields)


def test_a_good_batch_passes():
    good().validate()
    good().validate(vocab_size=V)
    good(output_probs=None, mask=None, sequence_ids=None).validate(vocab_size=V)


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"tokens": [[1, 2]]}, r"tokens must be a torch.Tensor of shape \[B, S\], got list"),
        ({"tokens": torch.zeros(B * S, dtype=torch.int64)}, r"tokens has shape \(10,\), expected 2 dimensions"),
        ({"tokens": torch.zeros(B, S)}, r"tokens has dtype torch.float32, expected torch.int64"),
        ({"activations": {}}, r"activations must be a non-empty dict .* got dict of length 0"),
        ({"activations": [torch.rand(B, S, 3)]}, r"activations must be a non-empty dict .* got list"),
        ({"activations": {"h.0": np.zeros((B, S, 3))}}, r"activations\['h.0'\] must be a torch.Tensor or a SparseActivations, got ndarray"),
        ({"activations": {"h.0": torch.rand(B, S)}}, r"activations\['h.0'\] has shape \(2, 5\), expected 3 dimensions"),
        ({"activations": {"h.0": torch.rand(B, S + 1, 3)}},
         r"activations\['h.0'\] has shape \(2, 6, 3\), expected \(2, 5, C\) to match tokens \(2, 5\)"),
        ({"activations": {"h.0": torch.ones(B, S, 3, dtype=torch.int64)}},
         r"activations\['h.0'\] has dtype torch.int64, expected a floating dtype"),
        ({"mask": torch.ones(B, S)}, r"mask must be a bool tensor of shape \(2, 5\), got \(2, 5\) torch.float32"),
        ({"mask": torch.ones(B, S + 1, dtype=torch.bool)}, r"mask must be a bool tensor of shape \(2, 5\), got \(2, 6\)"),
        ({"sequence_ids": torch.arange(B + 1)}, r"sequence_ids must be an int64 tensor of shape \(2,\), got \(3,\)"),
        ({"output_probs": torch.rand(B, S)}, r"output_probs has shape \(2, 5\), expected \(2, 5, V\)"),
        ({"output_probs": torch.ones(B, S, V, dtype=torch.int64)}, r"output_probs has dtype torch.int64"),
        ({"output_probs": torch.randn(B, S, V)}, r"output_probs rows must sum to 1 .* Apply softmax"),
        ({"tokens": torch.full((B, S), V)}, r"tokens contain ids in \[7, 7\], expected ids in \[0, 7\)"),
        ({"tokens": torch.full((B, S), -1)}, r"tokens contain ids in \[-1, -1\], expected ids in \[0, 7\)"),
    ],
    ids=lambda x: "" if isinstance(x, dict) else None,
)
def test_bad_input_is_named(over, match):
    with pytest.raises(ValueError, match=match):
        good(**over).validate()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activations_are_refused(bad):
    act = torch.rand(B, S, 4)
    act[1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"activations\['h.0'\] contains 1 NaN or Inf values"):
        good(activations={"h.0": act}).validate()


def test_huge_but_finite_activations_pass():
    # their float32 sum overflows to inf: the fast check must fall back to the exact one
    act = torch.full((B, S, 4), 3e38)
    good(activations={"h.0": act}).validate()


def test_probabilities_are_checked():
    p = torch.softmax(torch.randn(B, S, V), -1)
    p[0, 1] *= 1.5
    with pytest.raises(ValueError, match=r"the worst row sums to 1.5 "):
        good(output_probs=p).validate()
    neg = torch.zeros(B, S, V)
    neg[..., 0], neg[..., 1] = 1.5, -0.5
    with pytest.raises(ValueError, match="output_probs contains negative values"):
        good(output_probs=neg).validate()
    nan = torch.softmax(torch.randn(B, S, V), -1)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="output_probs contains NaN or Inf"):
        good(output_probs=nan).validate()
    with pytest.raises(ValueError, match="output_probs has vocabulary size 7, expected 9"):
        good().validate(vocab_size=9)


def test_masked_rows_of_output_probs_are_not_checked():
    p = torch.softmax(torch.randn(B, S, V), -1)
    p[1, 4] = 0.0  # padding rows often hold zeros
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 4] = False
    good(output_probs=p, mask=mask).validate()
    with pytest.raises(ValueError, match="the worst row sums to 0"):
        good(output_probs=p).validate()


def test_token_range_needs_a_vocabulary():
    bad = good(output_probs=None, tokens=torch.full((B, S), 100))
    bad.validate()  # nothing to check against
    with pytest.raises(ValueError, match=r"expected ids in \[0, 7\) for vocabulary size 7"):
        bad.validate(vocab_size=V)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_on_different_devices_are_refused():
    with pytest.raises(ValueError, match=r"activations\['h.0'\] is on cuda:0 but tokens are on cpu"):
        good(activations={"h.0": torch.rand(B, S, 4, device="cuda")}).validate()
    with pytest.raises(ValueError, match="output_probs is on cuda:0 but tokens are on cpu"):
        good(output_probs=good().output_probs.cuda()).validate()


# -- the loop ------------------------------------------------------------------------


def loop(*accs, **kw) -> HarvestLoop:
    return HarvestLoop(list(accs), progress=False, **kw)


def test_the_loop_validates_every_batch():
    lp = loop()
    lp.update(good())
    act = torch.rand(B, S, 4)
    act[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        lp.update(good(activations={"h.0": act, "h.1": torch.rand(B, S, 2)}))
    with pytest.raises(TypeError, match="expected a HarvestBatch, got dict"):
        lp.update({"tokens": good().tokens})


def test_layer_widths_and_names_must_not_change():
    lp = loop()
    lp.update(good())
    with pytest.raises(ValueError, match=r"activations have layers \[\('h.0', 4\), \('h.1', 3\)\], expected "
                                         r"\[\('h.0', 4\), \('h.1', 2\)\] as in the first batch"):
        lp.update(good(activations={"h.0": torch.rand(B, S, 4), "h.1": torch.rand(B, S, 3)}))
    with pytest.raises(ValueError, match="same layers, in the same order"):
        lp.update(good(activations={"h.1": torch.rand(B, S, 2), "h.0": torch.rand(B, S, 4)}))
    assert lp.n_batches == 1


def test_vocabulary_must_not_change():
    lp = loop(OutputProbAcc())
    lp.update(good())
    with pytest.raises(ValueError, match="output_probs has vocabulary size 9, expected 7"):
        lp.update(good(output_probs=torch.softmax(torch.randn(B, S, 9), -1), tokens=torch.zeros(B, S, dtype=torch.int64)))


def test_an_accumulator_that_needs_probs_refuses_a_stream_without_them():
    with pytest.raises(ValueError, match="OutputProbAcc needs output_probs"):
        loop(OutputProbAcc()).update(good(output_probs=None))
    with pytest.raises(ValueError, match=r"InputTokenAcc needs the vocabulary size: pass HarvestLoop\(vocab_size=...\)"):
        loop(InputTokenAcc()).update(good(output_probs=None))


def test_mask_excludes_positions_from_every_statistic():
    """A masked tail behaves exactly like a batch cut before it, even where it fires hardest."""
    g = torch.Generator().manual_seed(4)
    S_full, S_cut = 9, 6
    full = make_batch(g, B=3, S=S_full, V=V, mask=False, first_row=0)
    for a in full.activations.values():
        a[:, S_cut:] = 100.0  # would dominate every statistic if it counted
    full.mask = torch.zeros(3, S_full, dtype=torch.bool)
    full.mask[:, :S_cut] = True
    cut = HarvestBatch(full.tokens[:, :S_cut], {k: v[:, :S_cut] for k, v in full.activations.items()},
                       full.output_probs[:, :S_cut], None, full.sequence_ids)

    def accs():
        return [CorrelationAcc(), InputTokenAcc(), OutputProbAcc(), ReservoirAcc(k=4, context_tokens=2)]

    a = loop(*accs()).run([full])
    b = loop(*accs()).run([cut])
    assert a.config.n_tokens == b.config.n_tokens == 3 * S_cut
    for ca, cb in zip(a, b):
        assert ca.firing_count == cb.firing_count
        assert ca.max_activation == cb.max_activation < 100
        assert ca.firing_rate == pytest.approx(cb.firing_rate)
        assert ca.examples == cb.examples
        assert ca.input_tokens == cb.input_tokens
        assert ca.correlations == cb.correlations
        for x, y in zip(ca.output_tokens.top_pmi, cb.output_tokens.top_pmi):
            assert (x.token_id, x.count) == pytest.approx((y.token_id, y.count))


# -- ComponentSpace -------------------------------------------------------------------


def test_component_space_numbers_layers_in_order():
    space = ComponentSpace([LayerSpec("h.0.mlp", 3), LayerSpec("blocks.1:resid", 2)])
    assert space.n_components == len(space) == 5
    assert list(space.keys()) == ["h.0.mlp:0", "h.0.mlp:1", "h.0.mlp:2", "blocks.1:resid:0", "blocks.1:resid:1"]
    for flat, key in enumerate(space.keys()):
        assert space.key(flat) == key
        assert space.parse_key(key) == flat
        layer, idx = space.locate(flat)
        assert space.flat_index(layer, idx) == flat
    assert space.layer_offset("blocks.1:resid") == 3


def test_component_space_errors():
    space = ComponentSpace([LayerSpec("a", 2)])
    with pytest.raises(KeyError, match=r"unknown layer 'b'; the layers are \['a'\]"):
        space.flat_index("b", 0)
    with pytest.raises(IndexError, match="component index 2 out of range for layer 'a' with 2 components"):
        space.flat_index("a", 2)
    with pytest.raises(IndexError, match="flat index 5 out of range for 2 components"):
        space.key(5)
    with pytest.raises(KeyError, match="is not of the form 'layer:index'"):
        space.parse_key("a")
    with pytest.raises(ValueError, match="layer names must be unique"):
        ComponentSpace([LayerSpec("a", 1), LayerSpec("a", 2)])


def test_the_firing_batch_reads_layers_without_concatenating_them():
    """The firings are found layer by layer and gathered by `act_at` from the layers' own tensors;
    they equal the plain [P, N] computation: nonzero of (acts > threshold) & valid, and acts[pos, comp]."""
    from autointerp.batch import ComponentSpace, FiringBatch

    g = torch.Generator().manual_seed(3)
    widths = {"a": 5, "b": 1, "c": 7}
    B, S = 3, 6
    acts = {n: torch.randn(B, S, w, generator=g) for n, w in widths.items()}
    mask = torch.rand(B, S, generator=g) > 0.3
    hb = HarvestBatch(torch.randint(0, 9, (B, S), generator=g), acts, mask=mask)
    space = ComponentSpace.from_activations(acts)
    thr = torch.rand(13, generator=g) - 0.5
    for threshold in (0.1, thr):
        fb = FiringBatch.from_batch(hb, space, threshold, torch.arange(B), None)
        dense = torch.cat([a.reshape(B * S, -1) for a in acts.values()], 1)
        want = (dense > (threshold if isinstance(threshold, float) else thr[None, :])) & mask.reshape(-1, 1)
        pos, comp = want.nonzero(as_tuple=True)
        assert torch.equal(fb.firing_pos, pos) and torch.equal(fb.firing_comp, comp)
        assert torch.equal(fb.firing_act, dense[pos, comp])
        assert fb.n_positions == B * S and fb._acts is None and fb._fires is None  # nothing dense made yet
        # a window per row ([n, W] positions, [n, 1] components) and element-wise pairs
        p = torch.randint(0, B * S, (40, 5), generator=g)
        c = torch.randint(0, 13, (40, 1), generator=g)
        assert torch.equal(fb.act_at(p, c), dense[p, c])
        c2 = torch.randint(0, 13, (40, 5), generator=g)
        assert torch.equal(fb.act_at(p, c2), dense[p, c2])
        assert torch.equal(fb.fires, want) and torch.equal(fb.acts, dense)


@pytest.mark.parametrize("width", [128, 160, 100, 4096])
@pytest.mark.parametrize("per_column", [False, True])
def test_layer_firings_equal_the_element_wise_compare(width, per_column):
    """`layer_firings` reads sparse layers chunk by chunk (a chunk's max decides whether it is compared);
    whatever the path (chunked, dense fallback, a width no chunk divides), it lists exactly
    ``((a > threshold) & valid).nonzero()`` and the values there, in (position, column) order, and a NaN
    beside a firing in one chunk hides neither (validation may be off: `HarvestLoop(validate=False)`)."""
    from autointerp.batch import layer_firings

    g = torch.Generator().manual_seed(width)
    P = 64
    for density in (0.002, 0.05, 0.9):
        a = torch.where(torch.rand(P, width, generator=g) < density, torch.rand(P, width, generator=g),
                        -torch.rand(P, width, generator=g) * 0.1)
        a[3, 5] = float("nan")
        a[3, 6] = 0.9  # fires, in the NaN's chunk
        valid = torch.rand(P, generator=g) > 0.2
        valid[3] = True
        thr = (torch.rand(width, generator=g) * 0.5) if per_column else 0.25
        for v in (None, valid):
            p, c, x = layer_firings(a, thr, v)
            want = a > (thr[None, :] if per_column else thr)
            if v is not None:
                want &= v[:, None]
            wp, wc = want.nonzero(as_tuple=True)
            assert torch.equal(p, wp) and torch.equal(c, wc) and torch.equal(x, a[wp, wc])
            if not per_column or 0.9 > float(thr[6]):
                assert bool(((p == 3) & (c == 6)).any())


def test_merge_layer_firings_orders_like_one_sort():
    """Layers' lists merged by counts equal the concatenation sorted by (position, component)."""
    from autointerp.batch import merge_layer_firings

    g = torch.Generator().manual_seed(1)
    P, found, lo = 50, [], 0
    for width in (7, 1, 30, 12):
        fires = torch.rand(P, width, generator=g) < 0.3
        p, c = fires.nonzero(as_tuple=True)
        found.append((p, c + lo, torch.rand(p.numel(), generator=g)))
        lo += width
    pos, comp, act = merge_layer_firings(found, P)
    cat = [torch.cat(x) for x in zip(*found)]
    order = torch.argsort(cat[0] * lo + cat[1])
    assert torch.equal(pos, cat[0][order]) and torch.equal(comp, cat[1][order]) and torch.equal(act, cat[2][order])


def test_windows_equal_the_plain_gather():
    """`FiringBatch.windows` (sliding views, one gather a layer) equals the plain ``[n, W]`` gather: tokens
    and activations of the positions around each firing, pad (-1) and 0 outside its sequence or at a
    masked position; firings near the batch's first and last positions, a batch whose activations are
    given whole (`acts`) and the same activations as `SparseActivations` included."""
    from attrs import evolve

    from autointerp.batch import ComponentSpace, FiringBatch

    g = torch.Generator().manual_seed(5)
    B, S, ctx = 3, 9, 3
    acts = {"a": torch.randn(B, S, 64, generator=g), "b": torch.randn(B, S, 5, generator=g)}
    mask = torch.rand(B, S, generator=g) > 0.2
    hb = HarvestBatch(torch.randint(0, 50, (B, S), generator=g), acts, mask=mask)
    fb = FiringBatch.from_batch(hb, ComponentSpace.from_activations(acts), 0.5, torch.arange(B), None)
    dense = torch.cat([a.reshape(B * S, -1) for a in acts.values()], 1)
    pos, comp = fb.firing_pos, fb.firing_comp
    assert bool((pos < ctx).any()) and bool((pos >= B * S - ctx).any())  # both batch edges are exercised
    s = pos % S
    off = torch.arange(-ctx, ctx + 1)
    sp = s[:, None] + off
    inside = (sp >= 0) & (sp < S)
    flat = (pos // S)[:, None] * S + sp.clamp(0, S - 1)
    inside &= mask.reshape(-1)[flat]
    want_tok = hb.tokens.reshape(-1)[flat].masked_fill(~inside, -1).int()
    want_act = dense[flat, comp[:, None]].masked_fill(~inside, 0.0)
    # the same activations as SparseActivations (every latent listed, in reverse order)
    from autointerp import SparseActivations

    sparse = {n: SparseActivations(torch.arange(a.shape[-1]).flip(0).expand(B, S, -1), a.flip(-1), a.shape[-1])
              for n, a in acts.items()}
    hs = HarvestBatch(hb.tokens, sparse, mask=mask)
    fs = FiringBatch.from_batch(hs, ComponentSpace.from_activations(acts), 0.5, torch.arange(B), None)
    assert torch.equal(fs.firing_pos, pos) and torch.equal(fs.firing_comp, comp)
    assert torch.equal(fs.firing_act, fb.firing_act) and torch.equal(fs.acts, dense)
    for batch in (fb, evolve(fb, acts=dense), fs):
        tok, act = batch.windows(pos, comp, ctx)
        assert tok.dtype == torch.int32 and act.dtype == torch.float32
        assert torch.equal(tok, want_tok) and torch.equal(act, want_act)
        assert torch.equal(batch.act_at(flat, comp[:, None]), dense[flat, comp[:, None]])


def _topk_layers(g, B, S, widths, K):
    """Dense layers with K nonzero latents a position (some below the threshold, some exactly 0) and the same
    layers as `SparseActivations` (indices in any order within a position)."""
    from autointerp import SparseActivations

    dense, sparse = {}, {}
    for name, C in widths.items():
        idx = torch.stack([torch.randperm(C, generator=g)[:K] for _ in range(B * S)]).view(B, S, K)
        val = torch.rand(B, S, K, generator=g) - 0.2
        val[..., -1] = 0.0  # a padded slot
        dense[name] = torch.zeros(B, S, C).scatter_(2, idx, val)
        sparse[name] = SparseActivations(idx, val, C)
    return dense, sparse


def test_sparse_activations_harvest_exactly_as_their_dense_tensors():
    """A harvest of `SparseActivations` layers (a TopK SAE's indices and values) equals the harvest of the
    same activations as dense tensors, state by state, for every default accumulator: firings, counts,
    co-firing, token tables, samples and their activation windows (windows read other positions' entries,
    and 0 where a latent is absent), with a mask, per-layer thresholds and a dense layer beside."""
    from autointerp import (CorrelationAcc, HarvestLoop, InputTokenAcc, OutputProbAcc, RandomWindowAcc,
                            ReservoirAcc, TopActivationAcc)

    g = torch.Generator().manual_seed(2)
    B, S, V = 3, 16, 50
    states = []
    batches = []
    for i in range(3):
        dense, sparse = _topk_layers(g, B, S, {"a": 64, "b": 40}, 6)
        dense["c"] = sparse["c"] = torch.rand(B, S, 7, generator=g)
        tok = torch.randint(0, V, (B, S), generator=g)
        mask = torch.rand(B, S, generator=g) > 0.1
        probs = torch.softmax(torch.randn(B, S, V, generator=g), -1)
        ids = torch.arange(i * B, (i + 1) * B)
        batches.append([HarvestBatch(tok, acts, probs, mask, ids) for acts in (dense, sparse)])
    for which in (0, 1):
        accs = [CorrelationAcc(), InputTokenAcc(), OutputProbAcc(), ReservoirAcc(k=4, context_tokens=3),
                TopActivationAcc(k=3, context_tokens=3), RandomWindowAcc(n_windows=8, window_len=6)]
        loop = HarvestLoop(accs, threshold={"a": 0.1, "b": 0.3, "c": 0.5}, progress=False)
        for pair in batches:
            loop.update(pair[which])
        states.append([a.state_dict() for a in loop.accumulators])
    for mine, theirs in zip(*states):
        assert mine.keys() == theirs.keys()
        for name in mine:
            a, b = mine[name], theirs[name]
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b), name
            else:
                assert a == b, name


def test_sparse_activations_are_checked_at_the_door():
    from autointerp import SparseActivations

    tok = torch.zeros(2, 3, dtype=torch.long)
    good_idx, good_val = torch.tensor([[[0, 1]] * 3] * 2), torch.ones(2, 3, 2)
    cases = [
        (SparseActivations(good_idx, torch.ones(2, 3, 3), 4), r"indices \(2, 3, 2\) and values \(2, 3, 3\)"),
        (SparseActivations(good_idx.float(), good_val, 4), "expected int64 latent ids"),
        (SparseActivations(good_idx, good_val, 1), r"indices in \[0, 1\], expected ids in \[0, 1\)"),
        (SparseActivations(torch.zeros(2, 3, 2, dtype=torch.long), good_val, 4), "names the same latent twice"),
        (SparseActivations(good_idx, good_val * float("nan"), 4), "NaN or Inf"),
        (SparseActivations(good_idx, good_val, 0), "width must be a positive int"),
    ]
    for acts, msg in cases:
        with pytest.raises(ValueError, match=msg):
            HarvestBatch(tok, {"l": acts}).validate()


def test_the_sparse_activations_example_in_the_docs_runs(capsys):
    """docs/harvest_core.md's SparseActivations example runs as written and counts every listed latent above
    the threshold once (B x S x K firings)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "harvest_core.md").read_text(encoding="utf-8")
    code = re.findall(r"### Sparse activations.*?```python\n(.*?)```", doc, re.S)[0]
    exec(compile(code, "harvest_core.md", "exec"), {})
    fired, firings = map(int, capsys.readouterr().out.split())
    assert firings == 2 * 16 * 4 and 0 < fired <= firings
