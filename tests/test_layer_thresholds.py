"""A threshold per layer (issue 12 item 5): every firing decision uses the component's own layer's threshold.

Two layers harvested at different thresholds are checked against the brute-force
`Reference` given one threshold per component, for each accumulator that decides
firing (firing stats, co-firing, input/output tokens, reservoir, top examples,
histogram, quantile examples, window pool), then checkpoint/resume, merge,
config.json, the readers (scoring evidence, prompts) and the refusals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harvest_helpers import Reference, make_stream  # noqa: E402

from autointerp.accumulators import (
    ActivationHistogramAcc,
    CorrelationAcc,
    InputTokenAcc,
    OutputProbAcc,
    QuantileExampleAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TopActivationAcc,
)
from autointerp.accumulators.firing_stats import FiringStatsAcc
from autointerp.accumulators.histogram import LogBins
from autointerp.cli.arguments import threshold as threshold_arg
from autointerp.harvest import HarvestLoop, load_harvest
from autointerp.interpret import Interpreter
from autointerp.llm.offline import OfflineBackend
from autointerp.probe import LayerProbe, format_probe
from autointerp.prompts import marked_text
from autointerp.run_harvest import HarvestOptions, check_options
from autointerp.scoring.evidence import WindowPool
from autointerp.scoring.options import ScoringConfig
from autointerp.scoring.plan import EvidenceCache
from autointerp.thresholds import format_threshold, parse_threshold, resolve_thresholds

V = 13
WIDTHS = {"h.0.mlp": 5, "h.1.attn:out": 3}
# exact in float32, so the float32 decision and the float64 reference agree at every value
SPEC = {"h.0.mlp": 0.25, "h.1.attn:out": 0.625}
PER_COMP = np.array([0.25] * 5 + [0.625] * 3)


def accumulators():
    return [ReservoirAcc(k=3, context_tokens=2), TopActivationAcc(k=4, context_tokens=1), CorrelationAcc(),
            InputTokenAcc(), OutputProbAcc(), RandomWindowAcc(n_windows=6, window_len=5),
            ActivationHistogramAcc(bins_per_octave=2, n_octaves=4), QuantileExampleAcc(n_quantiles=3, k=2, context_tokens=1)]


def loop_of(batches, threshold=SPEC, seed=7):
    loop = HarvestLoop(accumulators(), threshold=threshold, seed=seed, vocab_size=V, progress=False)
    for b in batches:
        loop.update(b)
    return loop


def acc_of(loop, cls):
    return next(a for a in loop.accumulators if type(a) is cls)


@pytest.fixture(scope="module")
def stream():
    return make_stream(seed=3, n=5, V=V, widths=WIDTHS, density=0.6)


@pytest.fixture(scope="module")
def ref(stream):
    return Reference(stream, threshold=PER_COMP)


@pytest.fixture(scope="module")
def loop(stream):
    return loop_of(stream)


@pytest.fixture(scope="module")
def result(loop):
    return loop.finalize()


def test_the_thresholds_really_differ_in_what_fires(stream, ref):
    # a uniform threshold at either value would decide differently: the test can fail
    for t in (0.25, 0.625):
        assert not np.array_equal(Reference(stream, threshold=t).fires, ref.fires)


def test_counts_match_brute_force(loop, ref):
    assert acc_of(loop, FiringStatsAcc).count.tolist() == ref.firing_count().tolist()
    np.testing.assert_array_equal(acc_of(loop, CorrelationAcc).state_dict()["cofire"].numpy(), ref.cofire())
    np.testing.assert_array_equal(acc_of(loop, InputTokenAcc).joint.numpy(), ref.input_joint(V))
    np.testing.assert_allclose(acc_of(loop, OutputProbAcc).state_dict()["joint"].numpy(), ref.output_joint(),
                               rtol=1e-6, atol=1e-7)


def test_firing_stats_per_component(result, ref):
    for c, comp in enumerate(result):
        fired = ref.fires[:, c] == 1
        assert comp.firing_count == int(fired.sum())
        assert comp.mean_activation == pytest.approx(ref.acts[fired, c].mean(), rel=1e-6)


def test_reservoir_and_top_examples(result, ref):
    want = ref.keyed_sample(seed=7, k=3)
    firings = {(s, p, c): a for s, p, c, a in ref.firings}
    for c, comp in enumerate(result):
        assert [(e.sequence_index, e.position) for e in comp.examples] == want[c], c
        for e in comp.examples:
            ids, acts, offset = ref.window(e.sequence_index, e.position, c, 2)
            assert (e.token_ids, e.firing_offset) == (ids, offset)
            # the example's marks are its layer's decision, position by position
            start = e.position - e.firing_offset
            marked = [a > PER_COMP[c] for a in e.activations]
            assert marked == [(e.sequence_index, start + i, c) in firings for i in range(len(ids))]
        true = sorted((a for (_, _, cc), a in firings.items() if cc == c), reverse=True)[:4]
        assert [e.firing_activation for e in comp.top_examples] == pytest.approx(true)


def test_histogram_bins_start_at_each_layers_threshold(result, ref):
    for c, comp in enumerate(result):
        acts = [a for _, _, cc, a in ref.firings if cc == c]
        edges = LogBins(float(PER_COMP[c]), 2, 4).edges.tolist()
        counts = [0] * (len(edges) + 1)
        for a in acts:  # bin j holds (edges[j-1], edges[j]]
            counts[next((j for j, e in enumerate(edges) if a <= e), len(edges))] += 1
        first = next(j for j, n in enumerate(counts) if n)
        last = max(j for j, n in enumerate(counts) if n)
        h = comp.histogram
        assert h.counts == counts[first : last + 1], c
        assert h.edges[0] == (float(PER_COMP[c]) if first == 0 else edges[first - 1])


def test_quantile_examples_use_the_layers_threshold(result, ref):
    for c, comp in enumerate(result):
        qs = comp.quantile_examples
        assert sum(q.count for q in qs) == comp.firing_count
        assert qs[0].lower >= PER_COMP[c]
        for q in qs:
            for e in q.examples:
                assert e.firing_activation > PER_COMP[c]
                assert q.lower <= e.firing_activation <= (q.upper if q.upper is not None else np.inf)
                assert [a > PER_COMP[c] for a in e.activations].count(True) >= 1


def test_window_pool_records_and_reads_each_layers_threshold(result, ref):
    shared = result.shared["window_pool"]
    assert shared.meta["layer_thresholds"] == [["h.0.mlp", 0, 5, 0.25], ["h.1.attn:out", 5, 3, 0.625]]
    pool = WindowPool.from_shared(shared)
    assert len(pool) > 0
    for w, win in enumerate(pool.windows):
        tok, valid, acts = ref.windows[win["sequence_index"]]
        for c in range(ref.N):
            assert pool.threshold_of(c) == PER_COMP[c]
            ev = pool.window(w, c)
            assert ev.threshold == PER_COMP[c]
            want = [bool(valid[win["start"] + o] and acts[win["start"] + o, c] > PER_COMP[c])
                    for o in range(len(win["token_ids"]))]
            assert ev.fires == want, (w, c)


def test_config_records_every_layers_threshold_and_survives_save(result, tmp_path):
    cfg = result.config
    assert cfg.layer_thresholds == SPEC
    assert cfg.threshold == 0.25  # the lowest, where one number is read
    assert [cfg.threshold_for(l) for l in WIDTHS] == [0.25, 0.625]
    result.save(tmp_path / "h")
    again = load_harvest(tmp_path / "h")
    assert again.config.layer_thresholds == SPEC
    with pytest.raises(KeyError, match="no threshold"):
        again.config.threshold_for("h.9.mlp")


def test_default_entry_fills_the_layers_not_named(stream):
    cfg = loop_of(stream[:1], threshold={"h.1.attn:out": 0.625, "default": 0.25}).config()
    assert cfg.layer_thresholds == SPEC


def test_checkpoint_resume_equals_one_pass(stream, result, tmp_path):
    first = loop_of(stream[:2])
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = HarvestLoop(accumulators(), threshold=dict(SPEC), seed=7, vocab_size=V, progress=False)
    resumed.load_checkpoint(tmp_path / "c.pt")
    for b in stream[2:]:
        resumed.update(b)
    assert _same(resumed.finalize(), result)
    other = HarvestLoop(accumulators(), threshold=0.25, seed=7, vocab_size=V, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        other.load_checkpoint(tmp_path / "c.pt")


def test_merge_equals_one_pass_and_refuses_other_thresholds(stream, result):
    a, b = loop_of(stream[:3]), loop_of(stream[3:])
    assert _same(a.merge(b).finalize(), result)
    with pytest.raises(ValueError, match="different thresholds"):
        loop_of(stream[:3]).merge(loop_of(stream[3:], threshold={"h.0.mlp": 0.25, "h.1.attn:out": 0.5}))


def _same(x, y) -> bool:
    for cx, cy in zip(x, y):
        for f in ("firing_count", "examples", "top_examples", "histogram", "quantile_examples", "input_tokens",
                  "correlations"):
            assert getattr(cx, f) == getattr(cy, f), (cx.key, f)
    assert x.shared["window_pool"] == y.shared["window_pool"]
    return True


def test_scoring_evidence_and_prompts_use_the_components_layer(result):
    cache = EvidenceCache(result, ScoringConfig(), seed=0)
    for key, thr in (("h.0.mlp:1", 0.25), ("h.1.attn:out:2", 0.625)):
        ev = cache.full(result[key])
        assert ev.threshold == thr
        assert all(w.threshold == thr for w in ev.positives + ev.negatives + ev.randoms)
    from autointerp.evidence_sets import EvidenceSets

    sets = EvidenceSets(result, n_explain=4, n_top=2, n_validate=2)
    for key, thr in (("h.0.mlp:1", 0.25), ("h.1.attn:out:2", 0.625)):
        assert sets.validation(result[key]).threshold == thr
    it = Interpreter(OfflineBackend(), progress=False)
    parts = it.render(result["h.1.attn:out:2"], result)
    assert "h.0.mlp: 0.25;" in parts["system"] and "h.1.attn:out: 0.625." in parts["system"]
    assert "firing above 0.625" in parts["prompt"]
    # the shown examples are marked at 0.625 (an activation in (0.25, 0.625] is not a firing)
    comp = result["h.1.attn:out:2"]
    between = [e for e in comp.examples + comp.top_examples if any(0.25 < a <= 0.625 for a in e.activations)]
    assert between
    for e in between:
        if marked_text(e, 0.625) in parts["prompt"]:
            break
    else:
        raise AssertionError("no example is shown marked at its layer's threshold")
    assert not any(marked_text(e, 0.25) in parts["prompt"] for e in between)
    assert parts["system"] == it.render(result["h.0.mlp:1"], result)["system"]  # still one system prompt


def test_a_uniform_harvest_records_no_table(stream):
    cfg = loop_of(stream[:1], threshold=0.25).config()
    assert cfg.layer_thresholds is None and cfg.threshold_for("anything") == 0.25


# -- refusals ---------------------------------------------------------------------------


def test_a_layer_missing_from_the_mapping_is_refused_by_name(stream):
    loop = HarvestLoop([], threshold={"h.0.mlp": 0.25}, progress=False)
    with pytest.raises(ValueError, match=r"no value for layer\(s\) \['h.1.attn:out'\].*default=value"):
        loop.update(stream[0])


def test_a_layer_the_harvest_lacks_is_refused_by_name(stream):
    loop = HarvestLoop([], threshold={"h.0.mlp": 0.25, "h.1.attn:out": 0.5, "h.0.mpl": 1.0}, progress=False)
    with pytest.raises(ValueError, match=r"\['h.0.mpl'\] that the harvest does not have"):
        loop.update(stream[0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True, {}, {"a": float("nan")}, {"": 1.0},
                                 {"a": "x"}])
def test_bad_values_are_refused_before_any_batch(bad):
    with pytest.raises(ValueError, match="threshold must be a finite number or a mapping"):
        HarvestLoop([], threshold=bad)
    with pytest.raises(ValueError, match="--threshold must be"):
        check_options(HarvestOptions(target="demo", threshold=bad))


def test_command_line_values():
    assert parse_threshold(" 1e-3 ") == 0.001
    assert parse_threshold("blocks.0.mlp=0.5, default=0") == {"blocks.0.mlp": 0.5, "default": 0.0}
    assert parse_threshold("a=b=1") == {"a=b": 1.0}  # the value is after the last '='
    for text, words in (("x", "finite number or layer=value"), ("a=", "not a number"), ("=1", "not layer=value"),
                        ("a=1,a=2", "twice"), ("a=nan", "the value for layer 'a'"), ("inf", "finite")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            threshold_arg(text)


def test_probe_suggestion_reads_back_as_the_same_thresholds():
    def lp(name, s):
        return LayerProbe(name=name, width=4, n_tokens=10, quantiles={0.0: 0.0, 1.0: 1.0}, densities={0.0: 0.5},
                          suggested=s, target_density=0.01, zero_fraction=0.0, sample=torch.zeros(0))

    layers = [lp("h.0.mlp", 0.037), lp("h.1.mlp", 1.5e-7)]
    arg = format_probe(layers).rsplit("--threshold ", 1)[1]
    assert parse_threshold(arg) == {"h.0.mlp": 0.037, "h.1.mlp": 1.5e-7}
    assert resolve_thresholds(parse_threshold(arg), ["h.0.mlp", "h.1.mlp"]) == {"h.0.mlp": 0.037, "h.1.mlp": 1.5e-7}
    for spec in (0.1, 1 / 3, {"a": 1e-6, "default": 2.5}):
        assert parse_threshold(format_threshold(spec)) == spec


# -- the command line, end to end on the embedded model --------------------------------

SMALL = ["--n_batches", "1", "--batch_size", "2", "--context_length", "16", "--no_progress", "--device", "cpu",
         "--no_correlations", "--no_quantile_examples", "--no_output_logits"]


def test_cli_harvest_takes_one_threshold_per_layer(tmp_path, capsys):
    from autointerp.cli import main as cli_main
    from autointerp.paths import run_id_for

    layers = "blocks.0.mlp.act,blocks.3.mlp.act"
    assert cli_main(["harvest", "demo", "--out", str(tmp_path), "--layers", layers,
                     "--threshold", "blocks.3.mlp.act=2.5,default=0.5", *SMALL]) == 0
    result = load_harvest(tmp_path / run_id_for("demo") / "harvest")
    assert result.config.layer_thresholds == {"blocks.0.mlp.act": 0.5, "blocks.3.mlp.act": 2.5}
    for comp in result:
        thr = result.config.threshold_for(comp.layer)
        assert all(e.firing_activation > thr for e in comp.examples + comp.top_examples)
    with pytest.raises(SystemExit):
        cli_main(["harvest", "demo", "--out", str(tmp_path), "--layers", layers, "--overwrite",
                  "--threshold", "blocks.3.mlp.act=x", *SMALL])
    assert "argument --threshold: the value for layer 'blocks.3.mlp.act' is 'x'" in capsys.readouterr().err
    code = cli_main(["harvest", "demo", "--out", str(tmp_path), "--layers", layers, "--overwrite",
                     "--threshold", "blocks.3.mlp.act=2.5", *SMALL])
    assert code != 0
    assert "no value for layer(s) ['blocks.0.mlp.act']" in capsys.readouterr().err
