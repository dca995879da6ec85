"""The logit lens of a component: the tokens its output direction promotes and suppresses, from weights alone.

A component that writes a fixed direction ``d`` into the residual stream (an MLP
neuron's row of the down/out projection, an SAE or transcoder latent's decoder
row, an SPD component's U vector) raises the logit of token ``v`` by
``W_U[v] · norm(d)`` wherever it fires. The top entries are what SAE dashboards
call the positive logits, the bottom ones the negative logits. It costs one
matrix product per layer and no data, so it is computed once after a harvest
and stored per component (`autointerp.schemas.LogitLens`).

The final norm is applied as TransformerLens folds it (``fold_ln`` with
``center_writing_weights``): a LayerNorm centres ``d`` (subtracts its mean) and
multiplies by the norm's weight; an RMSNorm multiplies by its weight only. The
norm's bias is left out (it adds the same logits whatever fires) and so is the
division by the residual's scale (a positive number that depends on the input,
not on the component: it rescales all logits alike and changes no ranking).
The unembedding's own bias is left out for the same reason. Logits are the raw
products ``W_U[v] · norm(d)``, so they scale with the direction's length.

>>> import torch
>>> W_U = torch.eye(3)                                  # 3 tokens, d = 3
>>> top = logit_lens_topk(torch.tensor([[2.0, -1.0, 0.5]]), W_U, k=1)
>>> top.promoted_ids.tolist(), top.suppressed_ids.tolist()
([[0]], [[1]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from attrs import define, field
from torch import Tensor

from autointerp.schemas import LogitLens, LogitToken

NormKind = Literal["layernorm", "rmsnorm", "none"]

#: floats of one ``[rows, V]`` logit block; bounds the memory of `logit_lens_topk` (256 MiB of float32)
DEFAULT_BLOCK_ELEMENTS = 1 << 26


@define(frozen=True)
class FinalNorm:
    """The architecture's last norm before the unembedding, as the lens applies it.

    ``kind`` is ``"layernorm"`` (centre, then scale by ``weight``), ``"rmsnorm"``
    (scale by ``weight``) or ``"none"``. ``weight`` is ``[d]`` or None (no learned scale).
    """

    kind: NormKind = "none"
    weight: Tensor | None = field(default=None, eq=False)
    name: str = ""

    def apply(self, directions: Tensor) -> Tensor:
        """``directions [N, d]`` -> the normed directions, float32."""
        x = directions.float()
        if self.kind == "layernorm":
            x = x - x.mean(dim=-1, keepdim=True)
        if self.kind != "none" and self.weight is not None:
            x = x * self.weight.detach().float().to(x.device)
        return x

    def describe(self) -> str:
        where = f" {self.name}" if self.name else ""
        if self.kind == "layernorm":
            return f"after the final LayerNorm{where} (centred, scaled by its weight, no bias)"
        if self.kind == "rmsnorm":
            return f"after the final RMSNorm{where} (scaled by its weight)"
        return "with no final norm"


@define(frozen=True)
class Unembedding:
    """Token directions ``weight [V, d]`` (an LM head, or tied input embeddings) and the norm before them."""

    weight: Tensor = field(eq=False)
    norm: FinalNorm = field(factory=FinalNorm)
    name: str = ""

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[1])

    def describe(self) -> str:
        return f"{self.name or 'the unembedding'}, {self.norm.describe()}"


@define(frozen=True)
class OutputDirections:
    """What one layer's components write: ``weight [C, d]`` (row c is component c's direction)."""

    weight: Tensor = field(eq=False)
    name: str = ""


@define(frozen=True)
class LensTopK:
    """The ``k`` most promoted and most suppressed tokens per direction (``[N, k]`` each, best first)."""

    promoted_ids: Tensor = field(eq=False)
    promoted_logits: Tensor = field(eq=False)
    suppressed_ids: Tensor = field(eq=False)
    suppressed_logits: Tensor = field(eq=False)


def logit_lens_topk(directions: Tensor, unembedding: Tensor, *, norm: FinalNorm | None = None, k: int = 10,
                    block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> LensTopK:
    """Top-``k`` promoted and suppressed tokens of ``norm(directions) @ unembedding.T``.

    ``directions`` is ``[N, d]``, ``unembedding`` ``[V, d]``. The ``[N, V]`` logit
    table is never held whole: rows are taken in blocks of at most
    ``block_elements`` floats, in float32 whatever the weights' dtype.
    """
    if directions.dim() != 2 or unembedding.dim() != 2:
        raise ValueError(f"directions and unembedding must be 2-D ([N, d] and [V, d]), got shapes "
                         f"{tuple(directions.shape)} and {tuple(unembedding.shape)}")
    if directions.shape[1] != unembedding.shape[1]:
        raise ValueError(
            f"directions have d={directions.shape[1]} but the unembedding has d={unembedding.shape[1]} "
            f"(shapes {tuple(directions.shape)} and {tuple(unembedding.shape)}): a component's direction must "
            "live in the residual stream the unembedding reads"
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    N, V = directions.shape[0], unembedding.shape[0]
    k = min(k, V)
    W = unembedding.detach().float()
    dirs = (norm or FinalNorm()).apply(directions.detach()).to(W.device)
    rows = max(1, block_elements // max(V, 1))
    out = [torch.empty(N, k, dtype=dt) for dt in (torch.long, torch.float32, torch.long, torch.float32)]
    for i in range(0, N, rows):
        logits = dirs[i : i + rows] @ W.T  # [rows, V]
        top = logits.topk(k, dim=1)
        bottom = logits.topk(k, dim=1, largest=False)
        out[0][i : i + rows], out[1][i : i + rows] = top.indices.cpu(), top.values.cpu()
        out[2][i : i + rows], out[3][i : i + rows] = bottom.indices.cpu(), bottom.values.cpu()
    return LensTopK(*out)


def lens_records(top: LensTopK, source: str = "", decode: Callable[[int], str] | None = None) -> list[LogitLens]:
    """One `LogitLens` per row of ``top``, with token strings where ``decode`` is given."""

    def tokens(ids: Tensor, vals: Tensor) -> list[LogitToken]:
        return [LogitToken(int(t), round(float(v), 6), decode(int(t)) if decode else None)
                for t, v in zip(ids.tolist(), vals.tolist())]

    return [LogitLens(promoted=tokens(top.promoted_ids[r], top.promoted_logits[r]),
                      suppressed=tokens(top.suppressed_ids[r], top.suppressed_logits[r]), source=source)
            for r in range(top.promoted_ids.shape[0])]


def component_logit_lens(directions: Mapping[str, OutputDirections], unembedding: Unembedding, *,
                         widths: Mapping[str, int], k: int = 10, decode: Callable[[int], str] | None = None,
                         block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[dict[str, LogitLens], dict[str, str]]:
    """``({component key: LogitLens}, {layer: why it has none})`` for the layers of ``widths``.

    A layer gets no lens, with the reason, when its adapter found no output
    direction, or the directions do not match the harvested width or the
    unembedding's ``d``.
    """
    lenses: dict[str, LogitLens] = {}
    skipped: dict[str, str] = {}
    for layer, width in widths.items():
        od = directions.get(layer)
        if od is None:
            skipped[layer] = "no output direction found for its components"
            continue
        C, d = od.weight.shape
        if C != width:
            skipped[layer] = f"{od.name or 'its directions'} has {C} rows but the layer has {width} components"
            continue
        if d != unembedding.d_model:
            skipped[layer] = (f"{od.name or 'its directions'} lives in a {d}-dimensional space, not the "
                              f"{unembedding.d_model}-dimensional residual stream the unembedding reads")
            continue
        top = logit_lens_topk(od.weight, unembedding.weight, norm=unembedding.norm, k=k, block_elements=block_elements)
        source = f"{od.name} · {unembedding.describe()}" if od.name else unembedding.describe()
        for i, lens in enumerate(lens_records(top, source, decode)):
            lenses[f"{layer}:{i}"] = lens
    return lenses, skipped


def harvest_fn_logit_lens(fn: object, widths: Mapping[str, int], *, k: int = 10,
                          decode: Callable[[int], str] | None = None) -> tuple[dict[str, LogitLens], str]:
    """The lens of every component of a harvest function that can say its weights, and a one-line notice.

    ``fn`` offers ``unembedding() -> Unembedding | None`` and ``output_directions()
    -> {layer: OutputDirections}`` (`autointerp.adapters.hooks.HookHarvestFn`,
    `autointerp.adapters.spd.SPDHarvestFn`); a function without them gets none.
    """
    get_u, get_d = getattr(fn, "unembedding", None), getattr(fn, "output_directions", None)
    if not callable(get_u) or not callable(get_d):
        return {}, f"no output logits: the harvest function {type(fn).__name__} does not expose its weights"
    with torch.no_grad():
        unembedding = get_u()
        if unembedding is None:
            return {}, "no output logits: the model has no unembedding or tied input embeddings that autointerp found"
        lenses, skipped = component_logit_lens(get_d(), unembedding, widths=widths, k=k, decode=decode)
    done = sorted({key.rsplit(":", 1)[0] for key in lenses})
    parts = [f"output logits (weight-based) for {len(lenses):,} components in {len(done)} layers "
             f"via {unembedding.describe()}"]
    parts += [f"none for {layer}: {why}" for layer, why in skipped.items()]
    return lenses, "; ".join(parts)
