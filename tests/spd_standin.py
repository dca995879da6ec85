"""A stand-in for spd's ``ComponentModel`` and its run folders, for tests that run without spd.

The ``spd`` package (github.com/goodfire-ai/spd) is not on PyPI and not installed in CI.
This module is written here (no spd code) to the interface and file formats that were
read and checked against spd itself (the commit is in docs/harvest.md, "SPD runs";
tests/test_adapters_spd_real.py compares this stand-in with the real classes where spd
is importable):

* the run folder spd's training writes, ``$SPD_OUT_DIR/spd/<run_id>/``: ``final_config.yaml``
  (the fields of ``spd.configs.Config`` the loader reads: ``module_info`` patterns each
  with its own ``C``, ``identity_module_info``, ``ci_fn_type``, ``ci_fn_hidden_dims``,
  ``sigmoid_type``, ``sampling``, ``pretrained_model_class`` / ``pretrained_model_name`` /
  ``pretrained_model_output_attr``, ``tokenizer_name``, ``task_config``), one
  ``model_<step>.pth`` per saved step (the whole ComponentModel state dict, target model
  included), ``metrics.jsonl`` and ``figures/``;
* ``from_pretrained(checkpoint_path)``: the config beside the checkpoint, the target model
  from ``pretrained_model_class.from_pretrained(pretrained_model_name)``, identity modules
  inserted as ``<module>.pre_identity``, patterns expanded with fnmatch in the order of
  ``module_info`` (then the identity ones), the state dict loaded;
* the attributes the adapter reads: ``target_model``, ``target_module_paths``,
  ``module_to_c``, ``components`` (a plain dict of modules with ``V: [d_in, C]`` and
  ``U: [C, d_out]``; an embedding's input is token ids, ``V: [vocab, C]``), ``ci_fns``,
  and the state-dict names ``_components.<path with - for .>.{V,U,bias}``,
  ``_ci_fns.<path>.layers.{0,2}.{W,b}``, ``target_model.*``;
* ``__call__(tokens, cache_type="input") -> OutputWithCache(output, cache)`` with the
  input of every decomposed module in ``cache`` (forward hooks), the output taken from
  ``pretrained_model_output_attr`` (``"logits"``);
* ``calc_causal_importances(pre_weight_acts, sampling, detach_inputs=False)`` returning a
  dataclass ``CIOutputs(lower_leaky, upper_leaky, pre_sigmoid)``: a ``vector_mlp`` CI
  function reads the module's input, an ``mlp`` one the component activations
  (``x @ V``, or ``V[ids]`` for an embedding); ``"binomial"`` sampling scales by 1.05 and
  subtracts uniform noise before the lower-leaky sigmoid; ``leaky_hard``'s lower-leaky
  function is a clamp to [0, 1].

What is simplified: only the ``vector_mlp`` and ``mlp`` CI functions with one hidden
layer, the ``leaky_hard``, ``hard`` and ``normal`` sigmoids, and GPT-2 ``Conv1D``,
``nn.Linear`` and ``nn.Embedding`` modules.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import math
import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from torch import nn

IDENTITY = "pre_identity"


class OutputWithCache(NamedTuple):
    output: torch.Tensor
    cache: dict[str, torch.Tensor]


@dataclass
class CIOutputs:
    lower_leaky: dict[str, torch.Tensor]
    upper_leaky: dict[str, torch.Tensor]
    pre_sigmoid: dict[str, torch.Tensor]


class Identity(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.d = d

    def forward(self, x):
        return x


def _dims(module: nn.Module) -> tuple[int, int, bool]:
    """(d_in, d_out, is_embedding) of a module SPD can decompose."""
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim, True
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    if isinstance(module, Identity):
        return module.d, module.d, False
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear: weight [d_in, d_out]
        return module.weight.shape[0], module.weight.shape[1], False
    raise ValueError(f"module {type(module).__name__} cannot be decomposed")


class Components(nn.Module):
    def __init__(self, C: int, d_in: int, d_out: int, bias: torch.Tensor | None, embedding: bool):
        super().__init__()
        self.C, self.embedding = C, embedding
        self.V = nn.Parameter(torch.randn(d_in, C) / math.sqrt(d_in))
        self.U = nn.Parameter(torch.randn(C, d_out) / math.sqrt(C))
        if not embedding:
            self.register_buffer("bias", bias)

    def get_component_acts(self, x: torch.Tensor) -> torch.Tensor:
        return self.V[x] if self.embedding else x.to(self.V.dtype) @ self.V


class Layer(nn.Module):
    """C parallel affine maps: ``[..., C, d_in] -> [..., C, d_out]``."""

    def __init__(self, C: int, d_in: int, d_out: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(C, d_in, d_out) / math.sqrt(d_in))
        self.b = nn.Parameter(torch.zeros(C, d_out))

    def forward(self, x):
        return torch.einsum("...ci,cio->...co", x, self.W) + self.b


class CiFn(nn.Module):
    """``vector_mlp``: each component's own MLP on the module's input; ``mlp``: on its component activation."""

    def __init__(self, C: int, d_in: int, hidden: int, kind: str):
        super().__init__()
        self.kind = kind
        self.layers = nn.Sequential(Layer(C, d_in if kind == "vector_mlp" else 1, hidden), nn.GELU(), Layer(C, hidden, 1))

    def forward(self, x):
        x = x.unsqueeze(-2) if self.kind == "vector_mlp" else x.unsqueeze(-1)
        return self.layers(x)[..., 0]


SIGMOIDS = {"leaky_hard": lambda x: x.clamp(0, 1), "hard": lambda x: x.clamp(0, 1), "normal": torch.sigmoid}


class StandInComponentModel(nn.Module):
    """The interface of ``spd.models.component_model.ComponentModel`` that the adapter uses (see the module docstring)."""

    def __init__(self, target_model: nn.Module, module_to_c: dict[str, int], ci_fn_type: str, hidden: int,
                 sigmoid_type: str, output_attr: str | None):
        super().__init__()
        self.target_model = target_model
        self.module_to_c = dict(module_to_c)
        self.target_module_paths = list(module_to_c)
        self.output_attr = output_attr
        self.sigmoid = SIGMOIDS[sigmoid_type]
        self.components: dict[str, Components] = {}
        self.ci_fns: dict[str, CiFn] = {}
        for path, C in module_to_c.items():
            module = target_model.get_submodule(path)
            d_in, d_out, emb = _dims(module)
            bias = getattr(module, "bias", None)
            self.components[path] = Components(C, d_in, d_out, None if bias is None else bias.data, emb)
            self.ci_fns[path] = CiFn(C, d_in, hidden, ci_fn_type)
        self._components = nn.ModuleDict({k.replace(".", "-"): self.components[k] for k in sorted(self.components)})
        self._ci_fns = nn.ModuleDict({k.replace(".", "-"): self.ci_fns[k] for k in sorted(self.ci_fns)})

    def forward(self, *args, cache_type: str = "none", **kwargs):
        cache: dict[str, torch.Tensor] = {}

        def hook(module, a, kw, out, path):
            cache[path] = a[0]

        handles = [self.target_model.get_submodule(p).register_forward_hook(
            lambda m, a, kw, o, _p=p: hook(m, a, kw, o, _p), with_kwargs=True) for p in self.target_module_paths]
        try:
            raw = self.target_model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        out = getattr(raw, self.output_attr) if self.output_attr else raw
        return OutputWithCache(out, cache) if cache_type == "input" else out

    def calc_causal_importances(self, pre_weight_acts, sampling, detach_inputs=False) -> CIOutputs:
        lower, upper, pre = {}, {}, {}
        for path, x in pre_weight_acts.items():
            fn = self.ci_fns[path]
            inp = x if fn.kind == "vector_mlp" else self.components[path].get_component_acts(x)
            if detach_inputs:
                inp = inp.detach()
            y = fn(inp)
            y_low = 1.05 * y - 0.05 * torch.rand_like(y) if sampling == "binomial" else y
            lower[path], upper[path], pre[path] = self.sigmoid(y_low), self.sigmoid(y), y
        return CIOutputs(lower, upper, pre)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StandInComponentModel:
        mod, _, name = config["pretrained_model_class"].rpartition(".")
        target = getattr(importlib.import_module(mod), name).from_pretrained(config["pretrained_model_name"])
        target.eval().requires_grad_(False)
        patterns = [(i["module_pattern"], i["C"]) for i in config["module_info"]]
        for info in config.get("identity_module_info") or []:
            for path, module in list(target.named_modules()):
                if fnmatch.fnmatch(path, info["module_pattern"]):
                    module.pre_identity = Identity(_dims(module)[0])
                    module.register_forward_pre_hook(lambda m, a: (m.pre_identity(a[0]),))
            patterns.append((f"{info['module_pattern']}.{IDENTITY}", info["C"]))
        module_to_c: dict[str, int] = {}
        for pattern, C in patterns:
            for path, _ in target.named_modules():
                if fnmatch.fnmatch(path, pattern):
                    module_to_c[path] = C
        return cls(target, module_to_c, config["ci_fn_type"], config["ci_fn_hidden_dims"][0],
                   config["sigmoid_type"], config.get("pretrained_model_output_attr"))

    @classmethod
    def from_pretrained(cls, path: str) -> StandInComponentModel:
        config = yaml.safe_load((Path(path).parent / "final_config.yaml").read_text())
        model = cls.from_config(config)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model


# --- run folders ---------------------------------------------------------------

VOCAB = 50


def save_target_model(folder: Path) -> Path:
    """A tiny GPT-2 and a word-level tokenizer saved with ``save_pretrained`` (what
    ``pretrained_model_name`` / ``tokenizer_name`` name; a Hub name works the same way)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", eos_token="w0").save_pretrained(folder)
    return folder


#: decomposed modules as in spd's GPT-2 configs: both MLP up-projections (C=6), one down-projection
#: (C=5) and an identity before the other down-projection (C=3)
MODULE_INFO = [{"module_pattern": "transformer.h.*.mlp.c_fc", "C": 6},
               {"module_pattern": "transformer.h.1.mlp.c_proj", "C": 5}]
IDENTITY_INFO = [{"module_pattern": "transformer.h.0.mlp.c_proj", "C": 3}]
#: module paths in spd's order (module_info patterns in order, identity modules last) and their C
EXPECTED_MODULES = {"transformer.h.0.mlp.c_fc": 6, "transformer.h.1.mlp.c_fc": 6,
                    "transformer.h.1.mlp.c_proj": 5, "transformer.h.0.mlp.c_proj.pre_identity": 3}


def run_config(model_dir: Path, *, module_info=None, identity_module_info="default", ci_fn_type="vector_mlp",
               sigmoid_type="leaky_hard") -> dict[str, Any]:
    """The fields of spd's ``final_config.yaml`` (``Config.model_dump(mode="json")``) for a tiny LM run."""
    return {
        "wandb_project": None, "wandb_run_name": None, "wandb_run_name_prefix": "", "seed": 0,
        "autocast_bf16": False, "n_mask_samples": 1, "ci_fn_type": ci_fn_type, "ci_fn_hidden_dims": [4],
        "sampling": "continuous", "sigmoid_type": sigmoid_type,
        "module_info": module_info if module_info is not None else MODULE_INFO,
        "identity_module_info": IDENTITY_INFO if identity_module_info == "default" else identity_module_info,
        "use_delta_component": True,
        "loss_metric_configs": [{"coeff": 1.0, "classname": "StochasticReconLoss"}],
        "output_loss_type": "kl",
        "lr_schedule": {"start_val": 0.01, "warmup_pct": 0.0, "final_val_frac": 1.0, "fn_type": "constant"},
        "steps": 20, "batch_size": 4, "train_log_freq": 10, "eval_freq": 10, "eval_batch_size": 4,
        "slow_eval_freq": 10, "n_eval_steps": 1, "save_freq": 10, "eval_metric_configs": [],
        "ci_alive_threshold": 0.0,
        "pretrained_model_class": "transformers.GPT2LMHeadModel", "pretrained_model_path": None,
        "pretrained_model_name": str(model_dir), "pretrained_model_output_attr": "logits",
        "tokenizer_name": str(model_dir),
        "task_config": {"task_name": "lm", "max_seq_len": 16, "buffer_size": 1000, "dataset_name": "local/tokens",
                        "column_name": "input_ids", "train_data_split": "train", "eval_data_split": "test",
                        "shuffle_each_epoch": True, "is_tokenized": True, "streaming": False},
    }


def write_run_folder(folder: Path, config: dict[str, Any], steps=(10, 20)) -> Path:
    """A run folder in spd's layout: final_config.yaml, model_<step>.pth for each step (each with
    other CI weights, so a test sees which one was loaded), metrics.jsonl, figures/."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "final_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    model = StandInComponentModel.from_config(config)
    for i, step in enumerate(steps):
        torch.manual_seed(100 + step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("_ci_fns.", "_components.")):
                    p.normal_(0, 0.5 * (i + 1))
        torch.save(model.state_dict(), folder / f"model_{step}.pth")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": steps[-1], "train/loss/total": 0.1}) + "\n")
    (folder / "figures").mkdir(exist_ok=True)
    return folder


# --- wandb ---------------------------------------------------------------------


class StandInFile:
    """The part of ``wandb.apis.public.File`` used: ``name`` and ``download(root, replace, exist_ok, api)``
    (the signature of wandb 0.23 and 0.31), which returns the downloaded file opened."""

    def __init__(self, src: Path, name: str):
        self.name, self.src = name, src

    def download(self, root=".", replace=False, exist_ok=False, api=None):
        dest = Path(root) / self.name
        if dest.exists() and not replace and not exist_ok:
            raise ValueError(f"File already exists, pass replace=True to overwrite: {dest}")
        if replace or not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.src, dest)
        return open(dest)  # as wandb: the downloaded file, opened for reading


class StandInApi:
    """Stands in for ``wandb.Api`` (the service cannot be reached from tests): ``run(path).files()``
    lists a local run folder's files recursively, named as wandb names them (``figures/x.png``)."""

    def __init__(self, folder: Path):
        self.folder, self.calls, self.downloads = folder, [], []

    def run(self, path):
        self.calls.append(path)
        files = [StandInFile(p, p.relative_to(self.folder).as_posix())
                 for p in sorted(self.folder.rglob("*")) if p.is_file()]
        api = self

        class Tracked(StandInFile):
            def download(self, *a, **kw):
                api.downloads.append(self.name)
                return super().download(*a, **kw)

        tracked = [Tracked(f.src, f.name) for f in files]
        return types.SimpleNamespace(id=path.split("/")[-1], files=lambda: tracked,
                                     file=lambda name: next(f for f in tracked if f.name == name))
