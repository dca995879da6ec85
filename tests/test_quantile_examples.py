"""QuantileExampleAcc (brute-force reference, split/merge == one pass, conformance, uniformity within a
bin) and the position evidence: each example's place in its sequence and the "fires early" flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from harvest_helpers import Reference
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from autointerp.accumulators.firing_stats import EARLY_POSITIONS, FiringStatsAcc
from autointerp.accumulators.histogram import DEFAULT_MIN_VALUE
from autointerp.accumulators.quantile_examples import QuantileExampleAcc, quantile_groups
from autointerp.accumulators.sampling import firing_hash
from autointerp.accumulators.base import HarvestContext
from autointerp.batch import ComponentSpace, FiringBatch, HarvestBatch
from autointerp.harvest import HarvestLoop, load_harvest
from autointerp.testing import check_accumulator

KW = {"n_quantiles": 4, "k": 2, "context_tokens": 2, "bins_per_octave": 2, "n_octaves": 14}


def stream(seed, n=4, B=3, S=10, N=3, p=0.5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        a = torch.exp(2 * torch.randn(B, S, N, generator=g))
        a = torch.where(torch.rand(B, S, N, generator=g) < p, a, torch.zeros(()))
        out.append(HarvestBatch(torch.randint(0, 13, (B, S), generator=g), {"l": a},
                                mask=torch.rand(B, S, generator=g) < 0.9, sequence_ids=torch.arange(i * B, i * B + B)))
    return out


def run(batches, threshold=0.0, seed=0, **kw):
    loop = HarvestLoop([QuantileExampleAcc(**{**KW, **kw})], threshold=threshold, seed=seed, vocab_size=13,
                       progress=False)
    for b in batches:
        loop.update(b)
    return loop


def reference(batches, threshold=0.0, seed=0, n_quantiles=4, k=2, bins_per_octave=2, n_octaves=14, **_):
    """Per component: [(count, lower_share, upper_share, {(seq, pos) of the k smallest keys})] by brute force."""
    ref = Reference(batches, threshold)
    lo = threshold if threshold > 0 else DEFAULT_MIN_VALUE
    edges = lo * 2.0 ** (np.arange(bins_per_octave * n_octaves + 1) / bins_per_octave)
    nb = len(edges) + 1
    by_bin: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for s, p, c, a in ref.firings:
        j = next((i for i, e in enumerate(edges) if a <= e), len(edges))
        key = int(firing_hash(seed + 3, torch.tensor([s]), torch.tensor([p]), torch.tensor([c]))[0])
        by_bin.setdefault((c, j), []).append((key, s, p))
    out = {}
    for c in range(ref.N):
        counts = [len(by_bin.get((c, j), [])) for j in range(nb)]
        total = sum(counts)
        groups: dict[int, list[int]] = {}
        below = 0
        for j, n in enumerate(counts):
            g = min(n_quantiles - 1, int(np.floor(n_quantiles * (below + n / 2) / max(total, 1))))
            below += n
            if n:
                groups.setdefault(g, []).append(j)
        rows, below = [], 0
        for g in sorted(groups):
            items = sorted(x for j in groups[g] for x in by_bin[(c, j)])
            n = sum(counts[j] for j in groups[g])
            rows.append((n, below / total, (below + n) / total, [(s, p) for _, s, p in items[:k]]))
            below += n
        out[c] = rows
    return out


def as_rows(result):
    return {i: [(q.count, q.lower_share, q.upper_share, [(e.sequence_index, e.position) for e in q.examples])
                for q in c.quantile_examples] for i, c in enumerate(result.components)}


@pytest.mark.parametrize("threshold", [0.0, 0.2])
def test_quantile_examples_equal_brute_force(threshold):
    batches = stream(1)
    got, want = as_rows(run(batches, threshold).finalize()), reference(batches, threshold)
    assert got == want
    assert any(len(rows) == KW["n_quantiles"] for rows in got.values())


def test_examples_come_from_their_quantile_and_windows_are_the_sampler_windows():
    batches = stream(2, S=14)
    ref = Reference(batches)
    res = run(batches).finalize()
    for i, comp in enumerate(res.components):
        prev_upper = None
        for q in comp.quantile_examples:
            assert q.count >= len(q.examples) >= min(q.count, KW["k"])
            if prev_upper is not None:
                assert q.lower == prev_upper  # contiguous, in order
            prev_upper = q.upper
            for e in q.examples:
                assert q.lower < e.firing_activation and (q.upper is None or e.firing_activation <= q.upper)
                tok, _, off = ref.window(e.sequence_index, e.position, i, KW["context_tokens"])
                assert (e.token_ids, e.firing_offset) == (tok, off)
        if comp.quantile_examples:
            assert sum(q.count for q in comp.quantile_examples) == comp.firing_count
            assert comp.quantile_examples[-1].upper_share == 1.0


def test_quantile_groups_rule():
    assert quantile_groups(torch.tensor([[1, 1, 1, 1, 0, 4]]), 4).tolist() == [[0, 0, 1, 1, 2, 3]]
    # one bin with most firings: fewer groups, never a split bin
    assert quantile_groups(torch.tensor([[1, 10, 1]]), 5).tolist() == [[0, 2, 4]]
    assert quantile_groups(torch.tensor([[0, 0]]), 3).tolist() == [[0, 0]]


@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       threshold=st.sampled_from([0.0, 0.5]))
def test_split_then_merge_equals_one_pass(seed, cuts, threshold):
    batches = stream(seed, n=6)
    whole = run(batches, threshold, seed=seed)
    bounds = sorted(set(cuts))
    parts = [batches[a:b] for a, b in zip([0] + bounds, bounds + [len(batches)]) if batches[a:b]]
    merged = run(parts[0], threshold, seed=seed)
    for p in parts[1:]:
        merged.merge(run(p, threshold, seed=seed))
    assert as_rows(merged.finalize()) == as_rows(whole.finalize())


def test_conformance():
    check_accumulator(lambda: QuantileExampleAcc(**KW), stream(3))
    check_accumulator(QuantileExampleAcc, stream(4), threshold=0.3)


def test_saved_and_loaded(tmp_path):
    res = run(stream(5)).finalize()
    res.save(tmp_path / "h")
    back = load_harvest(tmp_path / "h")
    assert [c.quantile_examples for c in back.components] == [c.quantile_examples for c in res.components]


def test_state_bytes_is_what_it_allocates():
    acc = run(stream(5)).accumulators[-1]
    assert isinstance(acc, QuantileExampleAcc)
    assert acc.state_bytes(acc.ctx) == sum(t.numel() * t.element_size() for t in acc.state_dict().values())


def test_uniform_within_a_bin():
    """Every firing of one bin is kept with probability k/M: chi-square over many seeds (not in @given)."""
    S, M, k = 24, 20, 2
    acts = torch.zeros(1, S, 1)
    acts[0, :M, 0] = 1.5  # one bin, M firings
    hb = HarvestBatch(torch.zeros(1, S, dtype=torch.int64), {"l": acts}, sequence_ids=torch.tensor([0]))
    space = ComponentSpace.from_activations(hb.activations)
    fb = FiringBatch.from_batch(hb, space, 0.0, hb.sequence_ids, 1)
    hits = np.zeros(M)
    for seed in range(1000):
        acc = QuantileExampleAcc(n_quantiles=1, k=k, context_tokens=0)
        acc.bind(HarvestContext(space, 1, "cpu", seed, 0.0))
        acc.update(fb)
        (q,) = acc.finalize()[0]
        assert q.count == M and len(q.examples) == k
        for e in q.examples:
            hits[e.position] += 1
    assert chisquare(hits).pvalue > 0.001


# -- positions ----------------------------------------------------------------------


def test_examples_record_where_they_came_from():
    """Each example names its sequence and its position in it, and its window is cut from there."""
    batches = stream(6, S=12)
    res = run(batches).finalize()
    by_seq = {int(s): (b.tokens[r].tolist(), b.mask[r].tolist()) for b in batches for r, s in enumerate(b.sequence_ids)}
    for comp in res.components:
        for q in comp.quantile_examples:
            for e in q.examples:
                tok, mask = by_seq[e.sequence_index]
                assert mask[e.position] and e.firing_token_id == tok[e.position]


def early_batch(S=32, early_comp_start=True, left_pad=0):
    """Component 0 fires at the first real tokens of each row (and once later); component 1 everywhere."""
    B = 4
    acts = torch.zeros(B, S, 2)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[:, :left_pad] = False
    for r in range(B):
        acts[r, left_pad : left_pad + EARLY_POSITIONS, 0] = 1.0
        acts[r, S - 1, 0] = 1.0
    acts[:, :, 1] = 1.0
    return HarvestBatch(torch.zeros(B, S, dtype=torch.int64), {"l": acts}, mask=mask, sequence_ids=torch.arange(B))


@pytest.mark.parametrize("left_pad", [0, 5])
def test_fires_early_flag(left_pad):
    loop = HarvestLoop([FiringStatsAcc()], vocab_size=1, progress=False)
    loop.update(early_batch(left_pad=left_pad))
    early, everywhere = loop.finalize().components
    assert early.early_firing_share == pytest.approx(EARLY_POSITIONS / (EARLY_POSITIONS + 1))
    assert early.fires_early
    assert everywhere.early_firing_share == pytest.approx(EARLY_POSITIONS / (32 - left_pad))
    assert not everywhere.fires_early


def test_no_flag_where_the_rows_are_too_short_to_mean_anything():
    """With rows of 6 tokens two thirds of every component's firings are early: nothing is flagged."""
    loop = HarvestLoop([FiringStatsAcc()], vocab_size=1, progress=False)
    loop.update(early_batch(S=6))
    assert not any(c.fires_early for c in loop.finalize().components)


# -- what the explainer is shown, and what is then held out ---------------------------


def full_harvest():
    """Component 0 fires at the start of every row, component 1 on token 3 anywhere, component 2 never."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(3):
        tok = torch.randint(0, 8, (4, 40), generator=g)
        a = torch.zeros(4, 40, 3)
        a[:, :EARLY_POSITIONS, 0] = 0.5 + torch.rand(4, EARLY_POSITIONS, generator=g) * 4
        a[..., 1] = (tok == 3).float() * torch.exp(torch.randn(4, 40, generator=g))
        batches.append(HarvestBatch(tok, {"h.0.mlp": a}, sequence_ids=torch.arange(4 * i, 4 * i + 4)))
    from autointerp.accumulators import ActivationHistogramAcc, ReservoirAcc, TopActivationAcc

    loop = HarvestLoop([ReservoirAcc(k=20, context_tokens=3), TopActivationAcc(k=4, context_tokens=3),
                        ActivationHistogramAcc(), QuantileExampleAcc(context_tokens=3)],
                       vocab_size=8, decode=lambda t: f" w{t}", progress=False)
    return loop.run(batches)


def test_prompt_shows_histogram_quantiles_and_the_position_flag():
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend

    h = full_harvest()
    it = Interpreter(OfflineBackend(), progress=False)
    early, anywhere, dead = (it.render(c, h)["prompt"] for c in h.components)
    assert "## How strongly it fires (" in anywhere and "## Examples at each activation strength" in anywhere
    assert "### Quantile 0-" in anywhere and "<< w3>>" in anywhere.split("## Examples at each activation strength")[1]
    assert "Position: 100.0% of its firings are at the first 4 tokens" in early
    assert "Position:" not in anywhere
    assert "How strongly" not in dead and "activation strength" not in dead


def test_shown_quantile_examples_are_recorded_and_never_held_out():
    """A window shown as a quantile example must not come back as a held-out example to score on."""
    from autointerp.heldout import evidence_split, missing_spans, quantile_examples_of, split_examples, split_shown

    h = full_harvest()
    comp = h.components[1]
    shown_q = quantile_examples_of(comp)
    assert shown_q
    split = split_examples(comp, n_explain=2, n_top=1)
    spans = {(e.sequence_index, e.position) for e in shown_q}
    # before: held-out examples were filtered against the random and top windows only
    assert not spans & {(e.sequence_index, e.position) for e in split.holdout + split.holdout_top}
    record = evidence_split(comp, 2, 1)
    assert missing_spans(comp, record.spans()) == []
    again = split_shown(comp, record.spans())
    assert {(e.sequence_index, e.position) for e in again.holdout} == {(e.sequence_index, e.position) for e in split.holdout}
    assert len(again.explain_quantiles) == len(shown_q)


# -- the report -----------------------------------------------------------------------


def test_report_and_notebook_show_histogram_quantiles_and_flag(tmp_path):
    import json
    import re

    from autointerp.paths import RunPaths
    from autointerp.report.page_data import expand_chunk
    from autointerp.report.notebook import component_html
    from autointerp.report.writer import write_report

    h = full_harvest()
    early, anywhere, dead = h.components
    html = component_html(anywhere)
    assert "Activation histogram (" in html and "<rect" in html and "Quantile 0-" in html
    assert "fires mostly at the first positions" in component_html(early)
    assert "fires mostly" not in html and "Activation histogram" not in component_html(dead)

    run = RunPaths.of("r", tmp_path)
    h.save(run.harvest)
    index = write_report(run)
    details = {}
    for p in sorted((index.parent / "data" / "c").glob("*.js")):
        m = re.fullmatch(r"AUTOINTERP_CHUNK\((.*?),(.*)\);\n", p.read_text(encoding="utf-8"), flags=re.S)
        details.update({c["key"]: c for c in expand_chunk(json.loads(m.group(2)))})
    d = details[anywhere.key]
    assert d["histogram"]["counts"] == anywhere.histogram.counts
    assert [q["count"] for q in d["quantile_examples"]] == [q.count for q in anywhere.quantile_examples]
    assert d["quantile_examples"][0]["examples"][0]["p"] == anywhere.quantile_examples[0].examples[0].position
    assert details[early.key]["fires_early"] and not d["fires_early"]
    assert details[dead.key]["histogram"] is None and details[dead.key]["quantile_examples"] == []
    js = (index.parent / "assets" / "report.js").read_text(encoding="utf-8")
    assert "histogramSection" in js and "d.fires_early" in js
