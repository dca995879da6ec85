"""Rankings that small counts cannot top (issue 12 item 4): precision by its Wilson lower
bound, PMI with a minimum support, in the dense and the bounded mode, and the offline
token-lookup labeller that reads them."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autointerp import CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc
from autointerp.accumulators.associations import wilson_bounds
from autointerp.llm.offline import precision_lower, token_lookup_label
from autointerp.schemas import ComponentData, TokenStat, TokenStats
from autointerp.testing.synthetic import SyntheticModel, TokenRule

PLANTED = 7


def planted_stream(seed: int = 0, n_batches: int = 4, V: int = 3000):
    """Zipf tokens over a large vocabulary (hundreds seen once); component 0 fires on
    the planted token 80% of the time and anywhere else 3% of the time; component 1
    fires on the planted token's firings of component 0 only (a partner it always implies)."""
    g = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.1
    out = []
    for i in range(n_batches):
        tok = torch.multinomial(weights, 16 * 64, replacement=True, generator=g).view(16, 64)
        u = torch.rand(16, 64, generator=g)
        fires = torch.where(tok == PLANTED, u < 0.8, u < 0.03)
        acts = torch.stack([fires.float(), (fires & (tok == PLANTED)).float()], -1)
        out.append(HarvestBatch(tokens=tok, activations={"l": acts}, sequence_ids=torch.arange(i * 16, i * 16 + 16)))
    return out, V


def harvest(batches, accs, V):
    loop = HarvestLoop(accs, progress=False, vocab_size=V)
    for b in batches:
        loop.update(b)
    return loop.finalize()


@pytest.mark.parametrize("mode", ["dense", "bounded"])
def test_the_planted_token_tops_precision_not_a_token_seen_once(mode):
    batches, V = planted_stream()
    comp = harvest(batches, [InputTokenAcc(mode=mode, summary_k=64)], V)["l:0"]
    top = comp.input_tokens.top_precision
    # the stream has tokens the component fired on at their only occurrence (precision 1.0) ...
    once = [t for t in top if t.count == 1 and t.precision == 1.0]
    assert top[0].token_id == PLANTED, [(t.token_id, t.count, t.precision) for t in top[:3]]
    assert all(t.precision_lower is not None for t in top)
    assert [t.precision_lower for t in top] == sorted((t.precision_lower for t in top), reverse=True)
    assert top[0].precision < 1.0 or not once  # the raw precision is still what it is
    pmi = comp.input_tokens.top_pmi
    assert pmi[0].count >= 3 and pmi[0].token_id == PLANTED


def test_a_token_seen_once_with_one_firing_does_not_lead_any_list():
    batches, V = planted_stream(seed=3)
    stats = harvest(batches, [InputTokenAcc()], V)["l:0"].input_tokens
    for ranking in (stats.top_precision, stats.top_pmi, stats.top_recall):
        assert ranking[0].count > 1


def test_rare_cofiring_partners_do_not_lead_precision():
    """Component 2 fires once, together with 0: raw precision P(0 | 2) = 1.0 would put it first."""
    batches, V = planted_stream(seed=1)
    b = batches[0]
    extra = torch.zeros_like(b.activations["l"][..., :1])
    where = (b.activations["l"][..., 0] > 0).nonzero()[0]
    extra[where[0], where[1], 0] = 1.0
    batches[0] = HarvestBatch(b.tokens, {"l": torch.cat([b.activations["l"], extra], -1)}, sequence_ids=b.sequence_ids)
    for later in range(1, len(batches)):
        c = batches[later]
        batches[later] = HarvestBatch(c.tokens, {"l": torch.cat([c.activations["l"], torch.zeros_like(extra)], -1)},
                                      sequence_ids=c.sequence_ids)
    corr = harvest(batches, [CorrelationAcc()], V)["l:0"].correlations
    assert corr.top_precision[0].key == "l:1"
    assert {p.key for p in corr.top_precision} >= {"l:2"}  # still reported, with its raw numbers
    p2 = next(p for p in corr.top_precision if p.key == "l:2")
    assert (p2.count, p2.precision) == (1, 1.0)


def test_wilson_bounds_match_the_formula():
    z = 1.959963984540054
    for s, n in [(1, 1), (3, 3), (30, 100), (0, 5), (2.5, 7.25)]:
        p = s / n
        c, w = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_bounds(torch.tensor([float(s)]), torch.tensor([float(n)]))
        assert lo.item() == pytest.approx((c - w) / (1 + z * z / n))
        assert hi.item() == pytest.approx((c + w) / (1 + z * z / n))
    lo, hi = wilson_bounds(torch.tensor([0.0]), torch.tensor([0.0]))
    assert (lo.item(), hi.item()) == (0.0, 1.0)


def _old_harvest_component() -> ComponentData:
    """A component of a harvest written before the ranking: raw precision order, no lower bound."""
    stats = [TokenStat(901, 1, 1.0, 0.01, 3.0, " zyx"), TokenStat(902, 1, 1.0, 0.01, 3.0, " qqq"),
             TokenStat(7, 80, 0.8, 0.8, 2.5, " cat")]
    return ComponentData("l:0", "l", 0, firing_count=100,
                         input_tokens=TokenStats(top_precision=stats, top_recall=stats[::-1], top_pmi=stats))


def test_the_token_lookup_label_names_the_supported_token_first():
    label = token_lookup_label(_old_harvest_component(), n=1)
    assert label == "fires on ' cat'"
    assert precision_lower(_old_harvest_component().input_tokens.top_precision[2]) > 0.7


def test_the_token_lookup_label_of_a_planted_stream_names_the_rule_token():
    model = SyntheticModel.default(seed=0, subthreshold=0.6)
    model = SyntheticModel(vocab=model.vocab + [f" rare{i}" for i in range(400)], rules=[TokenRule(" cat")],
                           subthreshold=0.6)
    loop = HarvestLoop([InputTokenAcc()], threshold=0.5, progress=False, vocab_size=model.vocab_size,
                       decode=model.decode)
    for b in model.batches(3, batch_size=8, seq_len=64, seed=2):
        loop.update(b)
    comp = loop.finalize()["synth:0"]
    assert token_lookup_label(comp, n=1) == "fires on ' cat'"


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_stable_topk_is_the_stable_sort_head_with_ties_and_empty_entries(n, w, k, seed):
    """`_stable_topk` (topk, then only the boundary candidates sorted) equals a whole stable descending
    sort's first k, positions included, on rows full of ties and -inf (entries that cannot be ranked)."""
    import math

    from autointerp.accumulators.associations import _stable_topk

    k = min(k, w)
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 3, (n, w), generator=g).double()
    score[torch.rand(n, w, generator=g) < 0.3] = -math.inf
    want_v, want_i = score.sort(dim=1, descending=True, stable=True)
    got_v, got_i = _stable_topk(score, k)
    assert torch.equal(got_v, want_v[:, :k])
    finite = want_v[:, :k] > -math.inf  # an -inf entry is never reported: its position does not matter
    assert torch.equal(got_i[finite], want_i[:, :k][finite])
