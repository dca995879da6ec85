"""Harvest SPD runs: the components' causal importances (CI) are the activations.

A target is a wandb run path ``entity/project/run_id`` (also ``wandb:entity/project/run_id``
or ``https://wandb.ai/entity/project/runs/run_id``) or a local run folder as spd's
training writes it (``$SPD_OUT_DIR/spd/<run_id>/``): ``final_config.yaml`` (the
``spd.configs.Config``) and ``model_<step>.pth`` checkpoints (the latest step is used),
beside ``metrics.jsonl`` and ``figures/``, which are not read. A checkpoint file path
also works. wandb runs are downloaded once into a cache folder.

The model is loaded with the ``spd`` package (github.com/goodfire-ai/spd, not on PyPI),
an optional dependency: ``ComponentModel.from_pretrained(<checkpoint path>)``, which
reads ``final_config.yaml`` beside the checkpoint, loads the target model with
``pretrained_model_class.from_pretrained(pretrained_model_name)``, inserts the identity
modules of ``identity_module_info`` (paths ``<module>.pre_identity``), expands the
``module_info`` patterns to module paths, each with its own C (``module_to_c``), and
loads the state dict. One forward pass per batch, as in spd's own harvest::

    out = model(tokens, cache_type="input")      # OutputWithCache(output=logits, cache={path: input})
    ci = model.calc_causal_importances(pre_weight_acts=out.cache, sampling="continuous", detach_inputs=True)
    activations = ci.lower_leaky                  # {module path: [B, S, C of that module]}

Checked against spd itself (commit and findings in docs/harvest.md, "SPD runs");
tests/test_adapters_spd.py runs against a stand-in with the same interface and files,
and tests/test_adapters_spd_real.py against the real package where it is importable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from autointerp.adapters.hooks import describe_layer, n_layers_of, softmax_float32
from autointerp.adapters.targets import Target, TargetRequest
from autointerp.batch import HarvestBatch

WANDB_PREFIX = "wandb:"
#: as spd's own harvest (HarvestConfig.ci_threshold): a component fires wherever its CI is not ~0
SPD_THRESHOLD = 1e-6
SPD_INSTALL = (
    "SPD runs need the `spd` package, which is not on PyPI (and needs Python 3.13). Install it from GitHub:\n"
    "  pip install 'spd @ git+https://github.com/goodfire-ai/spd.git'\n"
    "(or clone it and `pip install -e .` in the clone)"
)
#: the suffix of the identity modules spd inserts before a module (``identity_module_info``)
IDENTITY_SUFFIX = ".pre_identity"
#: what ``ci.lower_leaky`` is for each of spd's ``sigmoid_type`` values (the lower-leaky function
#: of ``leaky_hard`` is spd's ``lower_leaky_hard``, a clamp to [0, 1] in the forward pass)
CI_RANGE = {
    "leaky_hard": "in [0, 1], exactly 0 where the component is not needed",
    "hard": "in [0, 1], exactly 0 where the component is not needed",
    "lower_leaky_hard": "in [0, 1], exactly 0 where the component is not needed",
    "upper_leaky_hard": "0 where the component is not needed and up to a little above 1",
    "normal": "in (0, 1) (a logistic sigmoid: never exactly 0)",
    "swish_hard": "about [0, 1] (a smooth hard sigmoid: never exactly 0)",
}
#: sigmoid types whose CI is never exactly 0, so the default threshold says little
SMOOTH_SIGMOIDS = ("normal", "swish_hard")
#: spd's ``SamplingType``; "binomial" adds uniform noise before the lower-leaky sigmoid
SAMPLINGS = ("continuous", "binomial")
_WANDB_PATH = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+$")
_CHECKPOINT = re.compile(r"^model(?:_(\d+))?\.pth?$")


def parse_wandb_path(target: str) -> str | None:
    """``entity/project/run_id`` from the accepted spellings, or None if ``target`` is not one."""
    t = target.strip()
    t = t.removeprefix(WANDB_PREFIX)
    m = re.match(r"^https?://[^/]+/([^/]+)/([^/]+)/runs/([^/?#]+)", t)
    if m:
        return "/".join(m.groups())
    t = t.replace("/runs/", "/")
    return t if _WANDB_PATH.match(t) else None


def is_spd_target(target: str) -> bool:
    p = Path(target)
    if p.is_dir():
        return (p / "final_config.yaml").exists() or any(_CHECKPOINT.match(f.name) for f in p.iterdir())
    if p.is_file() and p.suffix in (".pth", ".pt"):
        return True
    return target.startswith(WANDB_PREFIX) or parse_wandb_path(target) is not None


def find_run_files(folder: str | Path) -> tuple[Path, Path]:
    """``(latest model_<step>.pth, final_config.yaml)`` in a run folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SPD run folder {folder} does not exist")
    cfg = folder / "final_config.yaml"
    ckpts = [(int(m.group(1) or -1), f) for f in folder.iterdir() if (m := _CHECKPOINT.match(f.name))]
    if not cfg.exists() or not ckpts:
        raise FileNotFoundError(
            f"{folder} is not an SPD run folder: expected final_config.yaml and model_<step>.pth, "
            f"found {sorted(f.name for f in folder.iterdir())}"
        )
    return max(ckpts)[1], cfg


def spd_cache_dir() -> Path:
    return Path(os.environ.get("AUTOINTERP_CACHE", Path.home() / ".cache" / "autointerp")) / "spd"


def download_spd_run(wandb_path: str, cache_dir: str | Path | None = None, api: Any = None) -> Path:
    """Download a wandb run's ``final_config.yaml`` and latest ``model_<step>.pth``; returns the folder.

    ``api`` defaults to ``wandb.Api()``; tests inject a stand-in. A run already in the
    cache is not fetched again. The two files are downloaded into a temporary folder
    that is swapped in whole, so a download killed half way leaves no cache folder
    that looks complete (spd's own cache, ``$SPD_OUT_DIR/runs/<project>-<run_id>``,
    is not used: its layout is spd's to change).
    """
    from autointerp.storage import recover_dir, replace_dir_atomically

    path = parse_wandb_path(wandb_path)
    if path is None:
        raise ValueError(f"{wandb_path!r} is not a wandb run path (entity/project/run_id)")
    dest = Path(cache_dir) if cache_dir is not None else spd_cache_dir() / path.replace("/", "-")
    recover_dir(dest)
    try:
        return Path(find_run_files(dest)[0]).parent
    except FileNotFoundError:
        pass
    if api is None:
        import wandb

        api = wandb.Api()
    run = api.run(path)
    files = {f.name: f for f in run.files()}
    ckpts = [(int(m.group(1) or -1), n) for n in files if (m := _CHECKPOINT.match(n))]
    if "final_config.yaml" not in files or not ckpts:
        raise FileNotFoundError(
            f"wandb run {path} has no final_config.yaml and model_<step>.pth files (it has {sorted(files)[:20]}); "
            "is it an SPD run?"
        )

    def fill(tmp: Path) -> None:
        for name in ("final_config.yaml", max(ckpts)[1]):
            handle = files[name].download(root=str(tmp), replace=True)  # wandb returns the file, opened
            if callable(getattr(handle, "close", None)):
                handle.close()

    replace_dir_atomically(dest, fill)
    return dest


def _require_spd() -> Any:
    try:
        from spd.models.component_model import ComponentModel
    except ImportError as e:
        raise ImportError(SPD_INSTALL) from e
    return ComponentModel


def read_run_config(config_path: str | Path) -> dict[str, Any]:
    import yaml

    with open(config_path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


class SPDHarvestFn:
    """A `HarvestFn` over a loaded SPD ``ComponentModel``: activations are causal importances.

    ``sampling`` defaults to ``"continuous"``: spd's ``"binomial"`` adds uniform noise
    to the lower-leaky CI, which would make a harvest irreproducible (and a resumed
    run differ from an uninterrupted one).
    """

    def __init__(self, component_model: Any, *, config: dict[str, Any] | None = None,
                 layers: Sequence[str] | None = None, sampling: str = "continuous",
                 output_probs: bool = True, prob_chunk_rows: int = 4096, name: str = ""):
        self.model = component_model
        self.config = dict(config or {})
        paths = list(component_model.target_module_paths)
        if layers:
            unknown = [l for l in layers if l not in paths]
            if unknown:
                raise ValueError(f"unknown layers {unknown}; this SPD run decomposes {paths}")
            paths = [p for p in paths if p in layers]
        self.layers = paths
        self.sampling = sampling
        self.output_probs = output_probs
        self.prob_chunk_rows = prob_chunk_rows
        task = self.config.get("task_config") or {}
        target_model = getattr(component_model, "target_model", None)
        self.vocab_size = _cfg_int(target_model, ("vocab_size", "d_vocab"))
        self.context_length = _cfg_int(target_model, ("n_positions", "max_position_embeddings", "n_ctx"))
        self.default_context_length = task.get("max_seq_len")
        #: C of each decomposed module: spd's ``module_to_c`` (each ``module_info`` pattern has its own C)
        self.module_to_c = components_per_module(component_model, self.config)
        self.sigmoid_type = self.config.get("sigmoid_type")
        n = n_layers_of(target_model) if target_model is not None else None
        ci_range = CI_RANGE.get(self.sigmoid_type or "leaky_hard", "")
        base = (self.config.get("pretrained_model_name") or self.config.get("pretrained_model_path")
                or self.config.get("pretrained_model_class") or type(target_model).__name__)
        self.description = {
            "class": f"SPD decomposition of {base}",
            "n_layers": n,
            "run": name,
            "summary": "SPD (stochastic parameter decomposition) components; the activation is each "
                       f"component's causal importance{', ' + ci_range if ci_range else ''}",
            "components_per_module": {p: self.module_to_c.get(p) for p in self.layers},
            "sigmoid_type": self.sigmoid_type,
            "ci_fn_type": self.config.get("ci_fn_type"),
            "sampling": self.sampling,
            "layer_descriptions": {
                p: _layer_description(target_model, p, n, self.module_to_c.get(p), ci_range) for p in self.layers
            },
        }
        self._widths: dict[str, int] | None = None

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @torch.no_grad()
    def __call__(self, tokens: Tensor) -> HarvestBatch:
        out = self.model(tokens, cache_type="input")
        logits, cache = out[0], out[1]
        cache = {k: v for k, v in cache.items() if k in self.layers}
        ci = self.model.calc_causal_importances(pre_weight_acts=cache, sampling=self.sampling, detach_inputs=True)
        lower = ci.lower_leaky
        acts = {l: lower[l] for l in self.layers}
        widths = {l: int(a.shape[-1]) for l, a in acts.items()}
        if self._widths is None:
            self._widths = widths
        elif widths != self._widths:
            raise ValueError(f"layer widths changed between batches: {self._widths} -> {widths}")
        probs = softmax_float32(logits, self.prob_chunk_rows) if self.output_probs else None
        return HarvestBatch(tokens=tokens, activations=acts, output_probs=probs)

    def unembedding(self) -> Any:  # -> autointerp.logit_lens.Unembedding | None
        """The target model's token directions and final norm, for the logit lens."""
        from autointerp.adapters.output_directions import find_unembedding

        target = getattr(self.model, "target_model", None)
        return find_unembedding(target) if isinstance(target, torch.nn.Module) else None

    def output_directions(self) -> dict[str, Any]:  # -> {layer: OutputDirections}
        """Each component's U vector (``components[path].U``: ``[C, d_out]``) where the
        decomposed module writes the residual stream (e.g. ``mlp.c_proj``, ``down_proj``);
        a component of ``c_fc`` or ``q_proj`` writes a hidden space and has none here."""
        from autointerp.logit_lens import OutputDirections

        comps = getattr(self.model, "components", None)
        out: dict[str, Any] = {}
        if not isinstance(comps, (Mapping, torch.nn.ModuleDict)):
            return out
        for layer in self.layers:
            U = getattr(comps[layer], "U", None) if layer in comps else None
            if isinstance(U, Tensor) and U.dim() == 2:
                out[layer] = OutputDirections(U.detach(), f"U vectors of the SPD components of {layer}")
        return out

    def __repr__(self) -> str:
        return f"SPDHarvestFn({self.description['class']}, layers={self.layers})"


def components_per_module(component_model: Any, config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``{module path: C}``: the model's ``module_to_c`` where it has one (spd's ComponentModel
    does), otherwise the width of each module's ``components[path].U`` (``[C, d_out]``)."""
    m2c = getattr(component_model, "module_to_c", None)
    if isinstance(m2c, Mapping):
        return {str(k): int(v) for k, v in m2c.items()}
    comps = getattr(component_model, "components", None)
    out: dict[str, int] = {}
    if isinstance(comps, (Mapping, torch.nn.ModuleDict)):
        for k in comps:
            U = getattr(comps[k], "U", None)
            if isinstance(U, Tensor) and U.dim() == 2:
                out[str(k)] = int(U.shape[0])
    return out


def _layer_description(target_model: Any, path: str, n_layers: int | None, C: int | None, ci_range: str) -> str:
    """The prompt's words for one decomposed module. An identity module spd inserted
    (``<module>.pre_identity``) is described as what it is: a decomposition of that module's input."""
    head = f"SPD components (C={C})" if C else "SPD components"
    tail = f"; the activation is a component's causal importance, {ci_range}" if ci_range else ""
    if path.endswith(IDENTITY_SUFFIX):
        parent = path[: -len(IDENTITY_SUFFIX)]
        where = describe_layer(parent, n_layers, "", _submodule(target_model, parent))
        return (f"{head} of an identity map that SPD inserted on the input of the {where}: "
                f"they decompose the vectors that enter {parent} ({path}){tail}")
    return f"{head} of the " + describe_layer(path, n_layers, "", _submodule(target_model, path)) + tail


def _submodule(model: Any, path: str) -> Any:
    try:
        return model.get_submodule(path)
    except Exception:  # noqa: BLE001 - only used for a description
        return None


def _cfg_int(model: Any, names: Sequence[str]) -> int | None:
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int):
            return v
    return None


def load_spd_run(target: str, *, device: str | torch.device = "cpu", layers: Sequence[str] | None = None,
                 component_model_cls: Any = None, api: Any = None, cache_dir: str | Path | None = None,
                 sampling: str = "continuous") -> SPDHarvestFn:
    """Load an SPD run (wandb path or local folder) as a `SPDHarvestFn`.

    ``component_model_cls`` defaults to ``spd.models.component_model.ComponentModel``
    (tests pass a stand-in); the ``spd`` import is checked first, so a missing
    package fails before anything is downloaded.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {list(SAMPLINGS)}, got {sampling!r}")
    cls = component_model_cls or _require_spd()
    p = Path(target)
    if p.is_file():
        ckpt, cfg = p, p.parent / "final_config.yaml"
    elif p.is_dir():
        ckpt, cfg = find_run_files(p)
    else:
        ckpt, cfg = find_run_files(download_spd_run(target, cache_dir=cache_dir, api=api))
    config = read_run_config(cfg) if cfg.exists() else {}
    model = cls.from_pretrained(str(ckpt.resolve()))
    model.to(device)
    model.eval()
    return SPDHarvestFn(model, config=config, layers=layers, sampling=sampling, name=target)


def load_spd_target(request: TargetRequest) -> Target:
    """The ``spd`` target kind: an SPD run as a `Target` (tokenizer, dataset and text column from the run's config)."""
    from autointerp.data import Tokenizer

    fn = load_spd_run(request.spec, device=request.device, layers=request.layers)
    if request.dtype is not None:
        fn.model.to(request.dtype)
    cfg = fn.config
    task = cfg.get("task_config") or {}
    tok_name = (request.tokenizer or cfg.get("tokenizer_name") or task.get("tokenizer_name")
                or cfg.get("pretrained_model_name"))
    tok = None
    if tok_name:
        try:
            tok = Tokenizer.from_pretrained(tok_name)
        except (OSError, ValueError) as e:
            # pre-tokenized data needs no tokenizer; text data will say so when it needs one
            print(f"autointerp: could not load the tokenizer {tok_name!r} ({type(e).__name__}); "
                  "tokens will be shown as ids. Pass --tokenizer to choose one.")
    notices: list[str] = []
    if fn.sigmoid_type in SMOOTH_SIGMOIDS:
        notices.append(f"this SPD run's sigmoid_type is {fn.sigmoid_type!r}: causal importances are never exactly 0, "
                       f"so the default threshold {SPD_THRESHOLD:g} counts almost every token as a firing; "
                       "unless --threshold was given, choose one with `autointerp probe`")
    dataset = task.get("dataset_name")
    return Target(fn, tokenizer=tok, default_dataset=dataset, default_context_length=fn.default_context_length,
                  default_threshold=SPD_THRESHOLD, default_text_column=task.get("column_name") if dataset else None,
                  notices=tuple(notices))
