"""Harvest any torch module through forward hooks: tokens ``[B, S]`` in, `HarvestBatch` out.

A `HarvestFn` is the only model-specific code in a harvest. `HookHarvestFn`
covers most models without writing one:

* Hugging Face transformers models: layers are dotted module paths
  (``transformer.h.0.mlp.act``, ``model.layers.3.mlp.down_proj``).
* TransformerLens ``HookedTransformer``: layers are hook names
  (``blocks.0.mlp.hook_post``); a hook point is a module whose path is its name,
  so the same code serves both.
* SAEs and transcoders: ``encode`` turns the captured tensor into latents
  (e.g. an SAELens ``sae.encode``), one callable for all layers or a dict per layer.

``capture="output"`` (default) takes the module's output, ``capture="input"``
its first positional input. Output probabilities come from the model's logits,
softmaxed in float32 in row chunks so a large vocabulary in bf16 never needs a
second full float32 copy of the logits.

>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
>>> fn = HookHarvestFn(model, ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"])
>>> batch = fn(torch.randint(0, 100, (2, 16)))      # HarvestBatch
>>> batch.activations["transformer.h.0.mlp.act"].shape
torch.Size([2, 16, 128])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from autointerp.batch import HarvestBatch
from autointerp.layer_roles import layer_role
from autointerp.logit_lens import OutputDirections, Unembedding

Capture = Literal["input", "output"]
Encode = Callable[[Tensor], Tensor]


@runtime_checkable
class HarvestFn(Protocol):
    """Tokens ``[B, S]`` (int64, on any device) -> `HarvestBatch`.

    Optional attributes the harvest runner reads when present: ``vocab_size``,
    ``context_length`` (the longest sequence the model accepts), ``description``
    (recorded as ``config.json``'s ``model``), ``device`` and ``layers``.
    """

    def __call__(self, tokens: Tensor) -> HarvestBatch: ...


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: a tensor, ``.logits`` (HF), or the first element of a tuple."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        f"cannot find logits in the model's output of type {type(output).__name__}; "
        "pass forward=lambda model, tokens: <logits [B, S, V]> to HookHarvestFn"
    )


def softmax_float32(logits: Tensor, chunk_rows: int = 4096) -> Tensor:
    """``softmax(logits.float(), -1)`` computed ``chunk_rows`` rows at a time; returns float32 ``[..., V]``."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])
    out = torch.empty(flat.shape, dtype=torch.float32, device=logits.device)
    for i in range(0, flat.shape[0], chunk_rows):
        out[i : i + chunk_rows] = torch.softmax(flat[i : i + chunk_rows].float(), dim=-1)
    return out.view(shape)


def layer_index_of(path: str) -> int | None:
    """The block number in a module path: ``transformer.h.3.mlp`` -> 3 (the first integer part)."""
    for part in path.split("."):
        if part.isdigit():
            return int(part)
    return None


def describe_layer(path: str, n_layers: int | None, what: str = "", module: nn.Module | None = None) -> str:
    """Words for the prompt: ``"MLP up-projection in layer 3 of 4 (transformer.h.3.mlp.c_fc, Conv1D output)"``."""
    role = layer_role(path, type(module).__name__ if module is not None else None) or "module"
    i = layer_index_of(path)
    where = f" in layer {i} of {n_layers}" if i is not None and n_layers else (f" in layer {i}" if i is not None else "")
    detail = ", ".join(x for x in (path, type(module).__name__ if module is not None else "", what) if x)
    return f"{role}{where} ({detail})"


def n_layers_of(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    for attr in ("num_hidden_layers", "n_layer", "n_layers", "num_layers"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int):
            return v
    return None


def vocab_size_of(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    for attr in ("vocab_size", "d_vocab"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int):
            return v
    return None


def context_length_of(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "context_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int):
            return v
    return None


def resolve_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Look up dotted module paths (or TransformerLens hook names); an unknown name lists the known ones."""
    modules = dict(model.named_modules())
    hook_dict = getattr(model, "hook_dict", None)
    if isinstance(hook_dict, Mapping):  # TransformerLens: hook names
        modules.update(hook_dict)
    out: dict[str, nn.Module] = {}
    for name in names:
        if name in modules and name != "":
            out[name] = modules[name]
            continue
        known = sorted(hook_dict) if isinstance(hook_dict, Mapping) else [n for n in modules if n]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        shown = known if len(known) <= 60 else known[:60]
        more = "" if len(known) <= 60 else f"\n  ... and {len(known) - 60} more"
        kind = "hook names" if isinstance(hook_dict, Mapping) else "module paths"
        raise ValueError(
            f"unknown layer {name!r} in {type(model).__name__}."
            + (f" Did you mean {', '.join(close)}?" if close else "")
            + f"\nThe available {kind} are:\n  "
            + "\n  ".join(shown)
            + more
        )
    return out


class HookHarvestFn:
    """A `HarvestFn` for any ``nn.Module``: forward hooks capture each layer, logits give output probabilities.

    Args:
        model: the module; called as ``model(tokens)`` unless ``forward`` is given.
        layers: dotted module paths or TransformerLens hook names; the harvest's layer names.
        capture: ``"output"`` (the module's output) or ``"input"`` (its first positional input).
        encode: a callable, or ``{layer: callable}``, applied to the captured tensor
            (SAE/transcoder ``encode``); it must return ``[B, S, C]`` (extra trailing
            dimensions, e.g. heads, are flattened into C).
        forward: ``(model, tokens) -> logits`` when ``model(tokens)`` does not give logits.
        output_probs: False to skip the softmax (then no `OutputProbAcc`).
        vocab_size, context_length: override what is read from the model's config.
        description: recorded as the harvest's ``model`` description; built from the
            model's class and the layer paths when not given.
        prob_chunk_rows: rows per float32 softmax chunk.
        unembedding: the model's token directions and final norm for the logit lens
            (`autointerp.logit_lens.Unembedding`); found from the model when not given.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        capture: Capture | Mapping[str, Capture] = "output",
        encode: Encode | Mapping[str, Encode] | None = None,
        forward: Callable[[nn.Module, Tensor], Any] | None = None,
        output_probs: bool = True,
        vocab_size: int | None = None,
        context_length: int | None = None,
        description: Mapping[str, Any] | None = None,
        prob_chunk_rows: int = 4096,
        unembedding: Unembedding | None = None,
    ):
        if isinstance(layers, str):
            layers = [x for x in layers.split(",") if x]
        if not layers:
            raise ValueError("layers is empty: name at least one module path (e.g. transformer.h.0.mlp.act)")
        self.model = model
        self.layers = list(layers)
        self.modules = resolve_modules(model, self.layers)
        self.capture = {l: (capture[l] if isinstance(capture, Mapping) else capture) for l in self.layers}
        for l, c in self.capture.items():
            if c not in ("input", "output"):
                raise ValueError(f"capture for {l!r} must be 'input' or 'output', got {c!r}")
        if encode is not None and isinstance(encode, Mapping):
            unknown = sorted(set(encode) - set(self.layers))
            if unknown:
                raise ValueError(f"encode names layers {unknown} that are not in layers {self.layers}")
        self.encode = encode
        self.forward = forward
        self.output_probs = output_probs
        self.vocab_size = vocab_size if vocab_size is not None else vocab_size_of(model)
        self.context_length = context_length if context_length is not None else context_length_of(model)
        self.prob_chunk_rows = prob_chunk_rows
        self._unembedding = unembedding
        self._widths: dict[str, int] | None = None
        if description is None:
            n = n_layers_of(model)
            description = {
                "class": type(model).__name__,
                "n_layers": n,
                "layer_descriptions": {
                    l: describe_layer(l, n, f"{self.capture[l]}" + (", encoded" if self._encoder(l) else ""), m)
                    for l, m in self.modules.items()
                },
            }
        self.description = dict(description)

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def unembedding(self) -> Unembedding | None:
        """The token directions ``[V, d]`` and final norm the logit lens reads (None if the model has none)."""
        if self._unembedding is None:
            from autointerp.adapters.output_directions import find_unembedding

            self._unembedding = find_unembedding(self.model)
        return self._unembedding

    def output_directions(self) -> dict[str, OutputDirections]:
        """``{layer: [C, d] directions}`` for the hooked layers whose components write a fixed
        direction (MLP neurons, SAE decoder rows); needs the widths, so call it after a batch."""
        from autointerp.adapters.output_directions import hooked_output_directions

        unembedding = self.unembedding()
        if unembedding is None or self._widths is None:
            return {}
        encoders = {l: e for l in self.layers if (e := self._encoder(l)) is not None}
        return hooked_output_directions(self.model, self.modules, self._widths, unembedding.d_model,
                                        self.capture, encoders)

    def _encoder(self, layer: str) -> Encode | None:
        if self.encode is None:
            return None
        if isinstance(self.encode, Mapping):
            return self.encode.get(layer)
        return self.encode

    def _to_acts(self, layer: str, x: Any, B: int, S: int) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if not isinstance(x, Tensor):
            raise TypeError(f"layer {layer!r} {self.capture[layer]} is a {type(x).__name__}, not a tensor")
        enc = self._encoder(layer)
        if enc is not None:
            x = enc(x)
        if x.dim() < 3 or tuple(x.shape[:2]) != (B, S):
            raise ValueError(
                f"layer {layer!r} gave a tensor of shape {tuple(x.shape)}, expected ({B}, {S}, C): "
                f"capture a module whose {self.capture[layer]} is [batch, seq, features]"
            )
        return x.reshape(B, S, -1)

    @torch.no_grad()
    def __call__(self, tokens: Tensor) -> HarvestBatch:
        B, S = tokens.shape
        if self.context_length is not None and S > self.context_length:
            raise ValueError(f"sequences of {S} tokens are longer than the model's context length {self.context_length}")
        captured: dict[str, Any] = {}
        handles = []
        for layer, module in self.modules.items():
            if self.capture[layer] == "output":
                handles.append(module.register_forward_hook(lambda m, a, o, _l=layer: captured.__setitem__(_l, o)))
            else:
                handles.append(module.register_forward_pre_hook(lambda m, a, _l=layer: captured.__setitem__(_l, a[0] if a else None)))
        try:
            out = self.forward(self.model, tokens) if self.forward is not None else self.model(tokens)
        finally:
            for h in handles:
                h.remove()
        missing = [l for l in self.layers if l not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} never ran in the forward pass; are they used by the model's forward?")
        acts = {l: self._to_acts(l, captured[l], B, S) for l in self.layers}
        widths = {l: int(a.shape[-1]) for l, a in acts.items()}
        if self._widths is None:
            self._widths = widths
        elif widths != self._widths:
            changed = {l: (self._widths[l], w) for l, w in widths.items() if self._widths[l] != w}
            raise ValueError(
                f"layer widths changed between batches: {', '.join(f'{l}: {a} -> {b}' for l, (a, b) in changed.items())}; "
                "every batch must give the same number of components per layer"
            )
        probs = softmax_float32(logits_of(out), self.prob_chunk_rows) if self.output_probs else None
        if probs is not None and self.vocab_size is not None and probs.shape[-1] != self.vocab_size:
            # some models pad the unembedding beyond the tokenizer; trust the logits
            self.vocab_size = int(probs.shape[-1])
        return HarvestBatch(tokens=tokens, activations=acts, output_probs=probs)

    def __repr__(self) -> str:
        return f"HookHarvestFn({type(self.model).__name__}, layers={self.layers})"
