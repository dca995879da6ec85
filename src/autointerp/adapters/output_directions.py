"""Where a torch model keeps its output weights: the unembedding, the final norm, each hooked layer's out-rows.

The logit lens (`autointerp.logit_lens`) needs, for each harvested layer, the
direction each component writes into the residual stream, and for the model its
unembedding and final norm. This module finds them by module structure, so it
serves Hugging Face models of any family, TransformerLens models and plain
modules alike:

* **Unembedding**: TransformerLens ``W_U``; else ``get_output_embeddings()`` (the
  LM head); else ``get_input_embeddings()`` (tied input embeddings: encoders such
  as BERT with no next-token head). An MLM head's transform (dense, activation,
  LayerNorm) is not applied: the lens reads the decoder's (tied) weights directly.
* **Final norm**: a known name (``transformer.ln_f``, ``model.norm``, ...), else the
  last LayerNorm/RMSNorm after the last numbered block that is not inside the
  head. Post-LN encoders (BERT) have none beyond the last block's own, and get
  none: their lens is ``W_E · d`` as in Dar et al. (2022), "Analyzing
  Transformers in Embedding Space".
* **A neuron's direction**: the down/out projection that reads the layer's
  components: the hooked module itself when its input is captured, else the one
  linear map (``nn.Linear``, GPT-2's ``Conv1D``, a TransformerLens ``W_out``) in the
  nearest enclosing module whose input width is the layer's width and whose output
  is the residual stream (``mlp.c_proj``, ``mlp.down_proj``, ``output.dense``,
  ``mlp.fc_out``). ``nn.Linear`` keeps ``[out, in]`` and ``Conv1D`` ``[in, out]``; both
  become ``[C, d]`` rows here. For gated MLPs (Llama) hooked at ``act_fn`` the
  neuron's write is ``act · up · down[:, c]``, so its direction is known up to the
  sign of ``up``.
* **SAE / transcoder latents**: the decoder of the object whose ``encode`` the
  harvest calls (``W_dec [C, d]`` as in SAELens, or a ``decoder`` linear map).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from autointerp.logit_lens import FinalNorm, OutputDirections, Unembedding

#: final norms by path, for models whose module order does not give them away
FINAL_NORM_NAMES = ("transformer.ln_f", "model.norm", "model.final_layernorm", "gpt_neox.final_layer_norm",
                    "model.decoder.final_layer_norm", "transformer.norm_f", "model.language_model.norm",
                    "ln_final", "ln_f", "norm", "final_layer_norm")
#: leaf names of down/out projections, to break a tie between two maps of the same shape
DOWN_NAMES = ("c_proj", "down_proj", "fc2", "fc_out", "dense_4h_to_h", "w2", "wo", "out_proj", "dense")


def linear_rows(module: Any) -> Tensor | None:
    """A linear map's weight as ``[in, out]`` (row i: what input i writes), or None if it is not one."""
    w = getattr(module, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        return None
    if isinstance(module, nn.Linear):
        return w.T
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2 layout
        return w
    return None


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or "LayerNorm" in name or "RMSNorm" in name


def final_norm_of(module: nn.Module | None, name: str = "") -> FinalNorm:
    """The lens's view of a norm module: LayerNorm centres and scales, RMSNorm scales."""
    if module is None:
        return FinalNorm("none", None, "")
    cls = type(module).__name__
    w = getattr(module, "weight", None)
    w = w.detach() if isinstance(w, Tensor) else None
    if "RMS" in cls or cls == "T5LayerNorm":  # T5's "LayerNorm" does not centre
        if w is not None and cls.startswith("Gemma"):  # Gemma scales by (1 + weight)
            w = w + 1
        return FinalNorm("rmsnorm", w, name)
    return FinalNorm("layernorm", w, name)


def _numbered(path: str) -> bool:
    return any(part.isdigit() for part in path.split("."))


def find_final_norm(model: nn.Module, head_path: str = "") -> tuple[str, nn.Module] | None:
    """``(path, module)`` of the norm right before the unembedding, or None (see the module docstring)."""
    modules = dict(model.named_modules())
    for name in FINAL_NORM_NAMES:
        m = modules.get(name)
        if m is not None and _is_norm(m):
            return name, m
    head_owner = head_path.rsplit(".", 1)[0] if "." in head_path else ""
    last_block = max((i for i, p in enumerate(modules) if _numbered(p)), default=-1)
    found = None
    for i, (path, m) in enumerate(modules.items()):
        if i > last_block and _is_norm(m) and not _numbered(path) and not (head_owner and path.startswith(head_owner + ".")):
            found = (path, m)
    return found


def _path_of(model: nn.Module, target: nn.Module) -> str:
    return next((p for p, m in model.named_modules() if m is target), "")


def find_unembedding(model: nn.Module) -> Unembedding | None:
    """The model's token directions ``[V, d]`` and final norm (see the module docstring), or None."""
    W_U = getattr(model, "W_U", None)
    if isinstance(W_U, Tensor) and W_U.dim() == 2:  # TransformerLens keeps [d, V]
        ln = getattr(model, "ln_final", None)
        return Unembedding(W_U.detach().T, final_norm_of(ln if isinstance(ln, nn.Module) else None, "ln_final"), "W_U")
    for getter, what in (("get_output_embeddings", "the LM head"), ("get_input_embeddings", "the tied input embeddings")):
        f = getattr(model, getter, None)
        try:
            head = f() if callable(f) else None
        except (NotImplementedError, AttributeError):
            head = None
        w = getattr(head, "weight", None)
        if isinstance(w, Tensor) and w.dim() == 2:
            path = _path_of(model, head)
            norm = find_final_norm(model, path if getter == "get_output_embeddings" else "")
            return Unembedding(w.detach(), final_norm_of(norm[1] if norm else None, norm[0] if norm else ""),
                               f"{what} ({path})" if path else what)
    return None


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def down_projection(model: nn.Module, path: str, module: nn.Module, width: int, d_model: int,
                    capture: str = "output") -> OutputDirections | None:
    """The ``[width, d_model]`` out-rows of the map that reads the components of the layer at ``path``."""
    if width == d_model:
        return None  # a residual-stream layer: its "components" are coordinates, not neurons
    if capture == "input":
        rows = linear_rows(module)
        if rows is not None and tuple(rows.shape) == (width, d_model):
            return OutputDirections(rows.detach(), f"rows of {path}")
    modules = dict(model.named_modules())
    for owner in _ancestors(path):
        if owner not in modules:
            continue
        found: list[tuple[str, Tensor]] = []
        for sub, m in modules[owner].named_modules(prefix=owner):
            rows = linear_rows(m)
            if rows is not None and tuple(rows.shape) == (width, d_model):
                found.append((sub, rows))
        w_out = getattr(modules[owner], "W_out", None)  # TransformerLens MLP: [d_mlp, d_model]
        if isinstance(w_out, Tensor) and tuple(w_out.shape) == (width, d_model):
            found.append((f"{owner}.W_out", w_out))
        if len(found) > 1:
            found = [f for f in found if f[0].rsplit(".", 1)[-1] in DOWN_NAMES] or found
        if len(found) == 1:
            return OutputDirections(found[0][1].detach(), f"out-rows of {found[0][0]}")
        if found or not _numbered(owner):
            return None  # ambiguous, or climbed out of the block: guessing would mislabel
    return None


def decoder_of(encode: Any, d_model: int) -> Tensor | None:
    """``[C, d]`` decoder rows of the SAE/transcoder whose bound ``encode`` the harvest calls."""
    owner = getattr(encode, "__self__", None)
    if owner is None:
        return None
    W_dec = getattr(owner, "W_dec", None)
    if isinstance(W_dec, Tensor) and W_dec.dim() == 2 and W_dec.shape[1] == d_model:
        return W_dec.detach()
    rows = linear_rows(getattr(owner, "decoder", None))
    if rows is not None and rows.shape[1] == d_model:
        return rows.detach()
    return None


def hooked_output_directions(model: nn.Module, modules: Mapping[str, nn.Module], widths: Mapping[str, int],
                             d_model: int, capture: Mapping[str, str],
                             encoders: Mapping[str, Any]) -> dict[str, OutputDirections]:
    """Per hooked layer, its components' output directions where the weights say them."""
    out: dict[str, OutputDirections] = {}
    for layer, module in modules.items():
        width = widths.get(layer)
        if width is None:
            continue
        enc = encoders.get(layer)
        if enc is not None:
            dec = decoder_of(enc, d_model)
            if dec is not None and dec.shape[0] == width:
                out[layer] = OutputDirections(dec, f"decoder rows of {type(enc.__self__).__name__}")
            continue
        od = down_projection(model, layer, module, width, d_model, capture.get(layer, "output"))
        if od is not None:
            out[layer] = od
    return out
