"""The SPD adapter, tested against a stand-in for spd's ``ComponentModel`` (tests/spd_standin.py).

What is real and what is a stand-in:

* The ``spd`` package (github.com/goodfire-ai/spd) is not installed in CI, so
  `spd_standin.StandInComponentModel` mirrors the interface, names, shapes and run-file
  layout that were checked against spd itself (docs/harvest.md, "SPD runs"; its module
  docstring lists them). tests/test_adapters_spd_real.py runs the same adapter on the
  real classes, and compares them with the stand-in, where spd is importable.
* The target model is a real ``transformers`` GPT-2 and tokenizer, saved to a folder that
  the run's ``pretrained_model_name`` / ``tokenizer_name`` name (no Hub download).
* The wandb download path uses `spd_standin.StandInApi` for ``wandb.Api``, whose files copy
  from a local run folder (the real service cannot be reached from here).
* Everything else — path parsing, picking the latest checkpoint, the cache, the adapter,
  the CLI, the harvest — is the real code.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.adapters import spd as spd_adapter
from autointerp.adapters.spd import SPD_INSTALL, download_spd_run, is_spd_target, load_spd_run, parse_wandb_path
from autointerp.adapters.targets import TargetRequest
from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest

pytest.importorskip("transformers")

from spd_standin import (  # noqa: E402
    EXPECTED_MODULES,
    StandInApi,
    StandInComponentModel,
    run_config,
    save_target_model,
    write_run_folder,
)

RUN_ID = "s-1a2b3c4d"  # spd's run ids: a type letter and 8 hex digits


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_target_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def run_folder(tmp_path, model_dir):
    return write_run_folder(tmp_path / "spd" / RUN_ID, run_config(model_dir))


@pytest.fixture
def spd_installed(monkeypatch):
    """The stand-in installed as ``spd.models.component_model``, for the CLI path."""
    for name in ("spd", "spd.models"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    cm = types.ModuleType("spd.models.component_model")
    cm.ComponentModel = StandInComponentModel
    monkeypatch.setitem(sys.modules, "spd.models.component_model", cm)


def test_wandb_path_spellings():
    for t in ("goodfire/spd/abc123", "wandb:goodfire/spd/abc123", "wandb:goodfire/spd/runs/abc123",
              "https://wandb.ai/goodfire/spd/runs/abc123", "https://wandb.ai/goodfire/spd/runs/abc123?nw=x"):
        assert parse_wandb_path(t) == "goodfire/spd/abc123", t
    assert parse_wandb_path(f"wandb:goodfire/spd/runs/{RUN_ID}") == f"goodfire/spd/{RUN_ID}"
    assert parse_wandb_path("demo") is None and parse_wandb_path("hf:gpt2") is None
    assert is_spd_target("wandb:goodfire/spd/abc123")


def test_local_folder_loads_the_latest_checkpoint_and_gives_causal_importances(run_folder):
    fn = load_spd_run(str(run_folder), component_model_cls=StandInComponentModel)
    assert fn.layers == list(EXPECTED_MODULES) and fn.module_to_c == EXPECTED_MODULES
    assert fn.default_context_length == 16 and fn.vocab_size == 50
    key = "_ci_fns.transformer-h-0-mlp-c_fc.layers.0.W"
    torch.testing.assert_close(fn.model.state_dict()[key], torch.load(run_folder / "model_20.pth", weights_only=True)[key])
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    batch = fn(tokens)
    batch.validate()
    out = fn.model(tokens, cache_type="input")
    ci = fn.model.calc_causal_importances(out.cache, "continuous").lower_leaky
    for p, C in EXPECTED_MODULES.items():
        torch.testing.assert_close(batch.activations[p], ci[p])
        assert batch.activations[p].shape == (3, 12, C)
    assert any((batch.activations[p] == 0).any() and (batch.activations[p] > 0).any() for p in EXPECTED_MODULES)
    torch.testing.assert_close(batch.output_probs, torch.softmax(out.output.float(), -1))


def test_description_names_each_module_its_c_and_what_the_activation_is(run_folder, model_dir):
    d = load_spd_run(str(run_folder), component_model_cls=StandInComponentModel).description
    assert d["class"] == f"SPD decomposition of {model_dir}" and d["n_layers"] == 2
    assert d["components_per_module"] == EXPECTED_MODULES and d["sigmoid_type"] == "leaky_hard"
    ld = d["layer_descriptions"]
    assert ld["transformer.h.1.mlp.c_proj"].startswith("SPD components (C=5) of the MLP down-projection in layer 1 of 2")
    ident = ld["transformer.h.0.mlp.c_proj.pre_identity"]
    assert ident.startswith("SPD components (C=3) of an identity map that SPD inserted on the input of the "
                            "MLP down-projection in layer 0 of 2")
    assert all("causal importance, in [0, 1], exactly 0 where the component is not needed" in v for v in ld.values())


def test_an_embedding_decomposition_reads_token_ids_and_has_output_directions(tmp_path, model_dir):
    """spd decomposes ``nn.Embedding`` with ``ci_fn_type: mlp``: the CI function reads ``V[token ids]``."""
    cfg = run_config(model_dir, module_info=[{"module_pattern": "transformer.wte", "C": 4},
                                             {"module_pattern": "transformer.h.0.mlp.c_fc", "C": 6}],
                     identity_module_info=None, ci_fn_type="mlp")
    fn = load_spd_run(str(write_run_folder(tmp_path / "emb", cfg)), component_model_cls=StandInComponentModel)
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    batch = fn(tokens)
    assert batch.activations["transformer.wte"].shape == (2, 8, 4)
    V = fn.model.components["transformer.wte"].V
    ci_fn = fn.model.ci_fns["transformer.wte"]
    torch.testing.assert_close(batch.activations["transformer.wte"], ci_fn(V[tokens]).clamp(0, 1))
    dirs = fn.output_directions()
    assert dirs["transformer.wte"].weight.shape == (4, 16)  # U: [C, d_model], into the residual stream
    assert "token embedding" in fn.description["layer_descriptions"]["transformer.wte"]


def test_layers_subset_and_unknown_layer(run_folder):
    fn = load_spd_run(str(run_folder), component_model_cls=StandInComponentModel,
                      layers=["transformer.h.1.mlp.c_proj"])
    assert list(fn(torch.zeros(1, 4, dtype=torch.long)).activations) == ["transformer.h.1.mlp.c_proj"]
    with pytest.raises(ValueError, match=r"this SPD run decomposes \['transformer.h.0.mlp.c_fc'"):
        load_spd_run(str(run_folder), component_model_cls=StandInComponentModel, layers=["h.0.mlp"])
    with pytest.raises(ValueError, match=r"sampling: expected one of \['continuous', 'binomial'\], got 'bernoulli'"):
        load_spd_run(str(run_folder), component_model_cls=StandInComponentModel, sampling="bernoulli")


def test_a_checkpoint_path_loads_that_step(run_folder):
    fn = load_spd_run(str(run_folder / "model_10.pth"), component_model_cls=StandInComponentModel)
    key = "_components.transformer-h-1-mlp-c_proj.U"
    torch.testing.assert_close(fn.model.state_dict()[key], torch.load(run_folder / "model_10.pth", weights_only=True)[key])


def test_wandb_download_with_a_stand_in_api(run_folder, tmp_path):
    api = StandInApi(run_folder)
    cache = tmp_path / "cache"
    folder = download_spd_run(f"https://wandb.ai/goodfire/spd/runs/{RUN_ID}", cache_dir=cache, api=api)
    assert api.calls == [f"goodfire/spd/{RUN_ID}"]
    assert api.downloads == ["final_config.yaml", "model_20.pth"]  # not metrics.jsonl, figures/ or model_10
    assert sorted(p.name for p in folder.iterdir()) == ["final_config.yaml", "model_20.pth"]
    again = download_spd_run(f"wandb:goodfire/spd/{RUN_ID}", cache_dir=cache, api=api)
    assert again == folder and len(api.calls) == 1  # cached: no second download
    fn = load_spd_run(f"goodfire/spd/{RUN_ID}", component_model_cls=StandInComponentModel,
                      api=StandInApi(run_folder), cache_dir=tmp_path / "cache2")
    assert fn.layers == list(EXPECTED_MODULES)


def test_a_download_killed_half_way_leaves_no_cache_folder(run_folder, tmp_path):
    api = StandInApi(run_folder)
    run = api.run

    def failing_run(path):
        r = run(path)
        files = r.files()
        for f in files:
            if f.name.startswith("model_"):
                f.download = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("connection reset"))
        r.files = lambda: files
        return r

    api.run = failing_run
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionError):
        download_spd_run(f"goodfire/spd/{RUN_ID}", cache_dir=cache, api=api)
    assert not cache.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".cache")]
    folder = download_spd_run(f"goodfire/spd/{RUN_ID}", cache_dir=cache, api=StandInApi(run_folder))
    assert sorted(p.name for p in folder.iterdir()) == ["final_config.yaml", "model_20.pth"]


def test_smooth_sigmoid_runs_say_the_default_threshold_means_little(tmp_path, model_dir, spd_installed):
    folder = write_run_folder(tmp_path / "normal", run_config(model_dir, sigmoid_type="normal"))
    target = spd_adapter.load_spd_target(TargetRequest(spec=str(folder)))
    assert target.default_threshold == 1e-6 and target.tokenizer is not None
    assert any("'normal'" in n and "autointerp probe" in n for n in target.notices)
    assert "never exactly 0" in target.description["layer_descriptions"]["transformer.h.0.mlp.c_fc"]
    quiet = spd_adapter.load_spd_target(TargetRequest(spec=str(write_run_folder(tmp_path / "lh", run_config(model_dir)))))
    assert quiet.notices == () and quiet.default_dataset == "local/tokens" and quiet.default_text_column == "input_ids"


def test_without_spd_the_error_says_how_to_install(monkeypatch, run_folder, capsys):
    monkeypatch.setitem(sys.modules, "spd", None)
    with pytest.raises(ImportError, match="pip install"):
        load_spd_run(str(run_folder))
    assert "git+https://github.com/goodfire-ai/spd" in SPD_INSTALL
    code = cli_main(["harvest", str(run_folder), "--out", str(run_folder.parent / "out")])
    assert code == 2
    assert "not on PyPI" in capsys.readouterr().err


def test_cli_harvest_of_a_local_spd_run(spd_installed, run_folder, tmp_path):
    """The whole CLI path; the tokenizer is the one ``tokenizer_name`` names."""
    np.save(tmp_path / "tokens.npy", (np.arange(16 * 8) * 7 % 50).astype(np.int64))
    out = tmp_path / "out"
    code = cli_main(["harvest", str(run_folder), "--dataset", str(tmp_path / "tokens.npy"), "--batch_size", "4",
                     "--out", str(out), "--run_id", "spd-test", "--no_progress", "--device", "cpu"])
    assert code == 0
    result = load_harvest(out / "spd-test" / "harvest")
    assert len(result) == sum(EXPECTED_MODULES.values()) and result.config.n_tokens == 128
    assert {l.name: l.width for l in result.config.layers} == EXPECTED_MODULES
    assert result.config.threshold == 1e-6
    assert result.config.model["class"].startswith("SPD decomposition of ")
    assert result.n_fired() > 0
    assert spd_adapter.parse_wandb_path(str(run_folder)) is None
    assert Path(run_folder / "model_20.pth").exists()  # the run folder is read, never changed
