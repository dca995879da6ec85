"""``autointerp probe``: per-layer activation quantiles, densities at candidate thresholds, a suggestion (issue 12 item 5)."""

from __future__ import annotations

import pytest
import torch

from autointerp.cli import main as cli_main
from autointerp.probe import LayerProbe, format_probe, probe_layers, suggest_threshold
from autointerp.run_harvest import HarvestOptions

SMALL = dict(batch_size=2, context_length=32, device="cpu")


def test_suggestion_puts_the_target_density_above_it():
    g = torch.Generator().manual_seed(0)
    gelu_like = torch.nn.functional.gelu(torch.randn(200_000, generator=g))
    t = suggest_threshold(gelu_like, 0.01)
    assert 0.009 <= float((gelu_like > t).float().mean()) <= 0.0105
    assert float((gelu_like > 0).float().mean()) > 0.45  # what threshold 0 would have made "fire"


def test_suggestion_is_zero_where_zero_already_fires_less_than_the_target():
    relu_like = torch.cat([torch.zeros(9950), torch.rand(50) + 0.1])  # ReLU / SAE: exact zeros when silent
    assert suggest_threshold(relu_like, 0.01) == 0.0


@pytest.mark.parametrize("bad", [0.0, 1.0, float("nan")])
def test_target_density_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="target_density"):
        suggest_threshold(torch.ones(3), bad)


def test_probe_of_the_demo_matches_a_direct_count():
    opts = HarvestOptions(target="demo", layers=["blocks.0.mlp.act", "blocks.3.mlp.act"], **SMALL)
    layers = probe_layers(opts, n_batches=2, target_density=0.02)
    assert [p.name for p in layers] == ["blocks.0.mlp.act", "blocks.3.mlp.act"]
    from autointerp.run_harvest import ModelBatches, prepare_harvest

    prep = prepare_harvest(HarvestOptions(target="demo", layers=opts.layers, n_batches=2, progress=False,
                                          output_probs="off", **SMALL))
    batches = list(ModelBatches(prep))
    for p in layers:
        acts = torch.cat([b.activations[p.name].reshape(-1, p.width) for b in batches]).float()
        assert p.n_tokens == acts.shape[0] == 2 * 2 * 32 and p.width == 512
        for t, d in p.densities.items():  # exact at every candidate
            assert d == pytest.approx(float((acts > t).float().mean()), abs=1e-12)
        assert p.quantiles[1.0] == pytest.approx(float(acts.max()))
        assert p.density_at(p.suggested) <= 0.02 * 1.05
        assert p.zero_fraction == pytest.approx(float((acts == 0).float().mean()))  # ReLU neurons


def test_format_prints_the_threshold_argument_for_harvest():
    def lp(name, t):
        return LayerProbe(name, 4, 10, {0.0: -1.0, 0.5: 0.0, 1.0: 3.0}, {0.0: 0.3, 1.0: 0.01}, t, 0.01, 0.0,
                          torch.zeros(0))

    text = format_probe([lp("a.act", 0.5), lp("b.act", 1.5)])
    assert "suggested: --threshold a.act=0.5,b.act=1.5" in text
    assert "activation quantiles  min -1  50% 0  max 3" in text
    assert format_probe([lp("a.act", 0.5), lp("b.act", 0.5)]).endswith("suggested: --threshold 0.5")


def test_cli_probe_prints_quantiles_densities_and_a_suggestion(capsys):
    assert cli_main(["probe", "demo", "--layers", "blocks.1.mlp.act", "--n_batches", "1", "--batch_size", "2",
                     "--context_length", "32", "--device", "cpu", "--target_density", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.mlp.act: 512 components x 64 tokens" in out
    assert "activation quantiles" in out and "density" in out and "target 5.0%" in out
    assert "suggested: --threshold " in out


@pytest.mark.parametrize("bad", ["0", "1.5", "nan", "inf", "x"])
def test_cli_probe_refuses_a_target_density_outside_zero_one(bad, capsys):
    with pytest.raises(SystemExit):
        cli_main(["probe", "demo", "--target_density", bad])
    assert "--target_density" in capsys.readouterr().err
