"""The SPD adapter, tested against a stand-in for spd's ``ComponentModel``.

What is real and what is a stand-in:

* The ``spd`` package (github.com/goodfire-ai/spd) is not installed here, so
  `StandInComponentModel` below mirrors the part of
  ``spd.models.component_model.ComponentModel`` the adapter uses:
  ``from_pretrained(checkpoint_path)`` (config in ``final_config.yaml`` beside the
  checkpoint), ``target_model``, ``target_module_paths``,
  ``__call__(tokens, cache_type="input") -> OutputWithCache(output, cache)`` with the
  *inputs* of the decomposed modules in ``cache``, and
  ``calc_causal_importances(pre_weight_acts, sampling, detach_inputs).lower_leaky``.
  Its causal-importance function is a linear map and a hard sigmoid, not spd's MLP.
* The wandb download path uses an injected stand-in for ``wandb.Api`` whose
  ``run(path).files()`` returns files that ``download(root=...)`` by copying from a
  local folder (the real service cannot be reached from here).
* Everything else — path parsing, picking the latest checkpoint, the adapter, the
  CLI, the harvest — is the real code.
"""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from autointerp.adapters import spd as spd_adapter
from autointerp.adapters.spd import SPD_INSTALL, download_spd_run, is_spd_target, load_spd_run, parse_wandb_path
from autointerp.cli import main as cli_main
from autointerp.harvest import load_harvest

transformers = pytest.importorskip("transformers")

PATHS = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
C = 6


class OutputWithCache(NamedTuple):
    output: torch.Tensor
    cache: dict[str, torch.Tensor]


class CIOutputs(NamedTuple):
    lower_leaky: dict[str, torch.Tensor]
    upper_leaky: dict[str, torch.Tensor]
    pre_sigmoid: dict[str, torch.Tensor]


def target_model() -> nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


class StandInComponentModel(nn.Module):
    """The interface of spd's ComponentModel that the adapter uses (see the module docstring)."""

    def __init__(self, target: nn.Module, target_module_paths: list[str], C: int):
        super().__init__()
        self.target_model = target
        self.target_module_paths = list(target_module_paths)
        self.C = C
        self._ci_fns = nn.ModuleDict({p.replace(".", "-"): nn.Linear(16, C) for p in target_module_paths})

    def forward(self, tokens, cache_type="none"):
        cache: dict[str, torch.Tensor] = {}
        handles = [self.target_model.get_submodule(p).register_forward_pre_hook(
            lambda m, a, _p=p: cache.__setitem__(_p, a[0])) for p in self.target_module_paths]
        try:
            out = self.target_model(tokens).logits
        finally:
            for h in handles:
                h.remove()
        return OutputWithCache(out, cache) if cache_type == "input" else out

    def calc_causal_importances(self, pre_weight_acts, sampling, detach_inputs=False):
        assert sampling in ("continuous", "binomial")
        pre = {k: self._ci_fns[k.replace(".", "-")](v.detach() if detach_inputs else v) for k, v in pre_weight_acts.items()}
        lower = {k: v.clamp(0, 1) for k, v in pre.items()}  # a hard sigmoid
        return CIOutputs(lower, lower, pre)

    @classmethod
    def from_pretrained(cls, path: str) -> StandInComponentModel:
        config = yaml.safe_load((Path(path).parent / "final_config.yaml").read_text())
        torch.manual_seed(0)
        model = cls(target_model(), config["standin_module_paths"], config["C"])
        model.load_state_dict(torch.load(path, weights_only=True))
        return model


def make_run_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"C": C, "pretrained_model_name": "stand-in-gpt2", "sampling": "continuous",
              "standin_module_paths": PATHS, "task_config": {"task_name": "lm", "max_seq_len": 16}}
    (folder / "final_config.yaml").write_text(yaml.safe_dump(config))
    for step, seed in ((100, 1), (2000, 2)):
        torch.manual_seed(0)
        m = StandInComponentModel(target_model(), PATHS, C)
        torch.manual_seed(seed)
        for lin in m._ci_fns.values():
            nn.init.normal_(lin.weight, std=2.0)
        torch.save(m.state_dict(), folder / f"model_{step}.pth")
    return folder


@pytest.fixture
def run_folder(tmp_path):
    return make_run_folder(tmp_path / "spd_run")


def test_wandb_path_spellings():
    for t in ("goodfire/spd/abc123", "wandb:goodfire/spd/abc123", "wandb:goodfire/spd/runs/abc123",
              "https://wandb.ai/goodfire/spd/runs/abc123", "https://wandb.ai/goodfire/spd/runs/abc123?nw=x"):
        assert parse_wandb_path(t) == "goodfire/spd/abc123", t
    assert parse_wandb_path("demo") is None and parse_wandb_path("hf:gpt2") is None
    assert is_spd_target("wandb:goodfire/spd/abc123")


def test_local_folder_loads_the_latest_checkpoint_and_gives_causal_importances(run_folder):
    fn = load_spd_run(str(run_folder), component_model_cls=StandInComponentModel)
    assert fn.layers == PATHS and fn.default_context_length == 16 and fn.vocab_size == 50
    expected = torch.load(run_folder / "model_2000.pth", weights_only=True)
    torch.testing.assert_close(fn.model.state_dict()["_ci_fns.transformer-h-0-mlp-c_fc.weight"],
                               expected["_ci_fns.transformer-h-0-mlp-c_fc.weight"])
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    batch = fn(tokens)
    batch.validate()
    out = fn.model(tokens, cache_type="input")
    ci = fn.model.calc_causal_importances(out.cache, "continuous").lower_leaky
    for p in PATHS:
        torch.testing.assert_close(batch.activations[p], ci[p])
        assert batch.activations[p].shape == (3, 12, C)
    torch.testing.assert_close(batch.output_probs, torch.softmax(out.output.float(), -1))
    d = fn.description
    assert d["class"] == "SPD decomposition of stand-in-gpt2" and d["n_layers"] == 2
    assert d["layer_descriptions"][PATHS[1]].startswith("SPD components of the MLP up-projection in layer 1 of 2")


def test_unknown_layer_lists_the_decomposed_modules(run_folder):
    with pytest.raises(ValueError, match=r"this SPD run decomposes \['transformer.h.0.mlp.c_fc'"):
        load_spd_run(str(run_folder), component_model_cls=StandInComponentModel, layers=["h.0.mlp"])


class StandInFile:
    def __init__(self, src: Path):
        self.name, self.src = src.name, src

    def download(self, root=".", replace=False, exist_ok=False):
        shutil.copy(self.src, Path(root) / self.name)
        return self


class StandInApi:
    """Stands in for ``wandb.Api``: ``run(path).files()`` lists a local folder's files."""

    def __init__(self, folder: Path):
        self.folder, self.calls = folder, []

    def run(self, path):
        self.calls.append(path)
        files = [StandInFile(p) for p in sorted(self.folder.iterdir())]
        return types.SimpleNamespace(id=path.split("/")[-1], files=lambda: files)


def test_wandb_download_with_a_stand_in_api(run_folder, tmp_path):
    api = StandInApi(run_folder)
    cache = tmp_path / "cache"
    folder = download_spd_run("https://wandb.ai/goodfire/spd/runs/abc123", cache_dir=cache, api=api)
    assert api.calls == ["goodfire/spd/abc123"]
    assert sorted(p.name for p in folder.iterdir()) == ["final_config.yaml", "model_2000.pth"]  # latest only
    again = download_spd_run("wandb:goodfire/spd/abc123", cache_dir=cache, api=api)
    assert again == folder and len(api.calls) == 1  # cached: no second download
    fn = load_spd_run("goodfire/spd/abc123", component_model_cls=StandInComponentModel, api=StandInApi(run_folder),
                      cache_dir=tmp_path / "cache2")
    assert fn.layers == PATHS


def test_without_spd_the_error_says_how_to_install(monkeypatch, run_folder, capsys):
    monkeypatch.setitem(sys.modules, "spd", None)
    with pytest.raises(ImportError, match="pip install"):
        load_spd_run(str(run_folder))
    assert "git+https://github.com/goodfire-ai/spd" in SPD_INSTALL
    code = cli_main(["harvest", str(run_folder), "--out", str(run_folder.parent / "out")])
    assert code == 2
    assert "not on PyPI" in capsys.readouterr().err


def test_cli_harvest_of_a_local_spd_run(monkeypatch, run_folder, tmp_path):
    """The whole CLI path, with the stand-in installed as ``spd.models.component_model``."""
    from autointerp.data import Tokenizer

    def no_hub(name):  # the stand-in's model name is not on the Hub (and the Hub is not reachable)
        raise OSError(f"{name} is not a local folder")

    monkeypatch.setattr(Tokenizer, "from_pretrained", staticmethod(no_hub))
    for name in ("spd", "spd.models"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    cm = types.ModuleType("spd.models.component_model")
    cm.ComponentModel = StandInComponentModel
    monkeypatch.setitem(sys.modules, "spd.models.component_model", cm)
    np.save(tmp_path / "tokens.npy", (np.arange(16 * 8) * 7 % 50).astype(np.int64))
    out = tmp_path / "out"
    code = cli_main(["harvest", str(run_folder), "--dataset", str(tmp_path / "tokens.npy"), "--batch_size", "4",
                     "--out", str(out), "--run_id", "spd-test", "--no_progress", "--device", "cpu"])
    assert code == 0
    result = load_harvest(out / "spd-test" / "harvest")
    assert len(result) == 2 * C and result.config.n_tokens == 128
    assert result.config.threshold == 1e-6
    assert result.config.model["class"] == "SPD decomposition of stand-in-gpt2"
    assert result.n_fired() > 0
    assert spd_adapter.parse_wandb_path(str(run_folder)) is None
