"""A component's neighbours, for the second interpretation pass: co-firing partners and weight-space neighbours.

Two kinds of neighbour, each with its statistics:

* **co-firing partners**, from the correlation accumulator's outputs
  (`ComponentData.correlations`): the partners ranked by PMI (the one ranking
  rule, `docs/statistics.md`), then by precision, with their co-firing count,
  precision, recall and PMI;
* **weight-space neighbours**, where the model's weights are available: the
  components whose output directions point the same way (cosine similarity of
  the directions the logit lens uses, `autointerp.logit_lens.OutputDirections`),
  across every layer that writes into the same residual stream.

`cosine_topk` finds the weight-space neighbours in bounded blocks: rows of the
``[N, N]`` cosine table are computed ``block_elements // N`` at a time and cut
to their top ``k`` at once, so memory is ``O(block_elements + N k)``, never
``N x N`` (10^5 components: 40 GB dense; here 256 MiB a block). `autointerp
harvest` stores them after the pass in ``harvest/shared/weight_neighbours.json``
(`attach_weight_neighbours`, the same moment as the logit lens).

`neighbour_context` gathers both lists for one component with the partners'
current labels; the interpreter's second pass (``interpret --neighbours``)
renders it with ``prompts/sections/neighbours.j2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from attrs import define, field
from torch import Tensor

from autointerp.logit_lens import DEFAULT_BLOCK_ELEMENTS, OutputDirections
from autointerp.schemas import ComponentData

#: ``HarvestResult.shared`` key (and ``harvest/shared/<key>.json``) of the weight-space neighbours
WEIGHT_NEIGHBOURS = "weight_neighbours"
WEIGHT_NEIGHBOURS_FORMAT = "autointerp.weight_neighbours/1"
DEFAULT_K = 8


def cosine_topk(directions: Tensor, k: int = DEFAULT_K, *, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """``(indices [N, k'], cosines [N, k'])``: each row's ``k' = min(k, N - 1)`` most similar
    other rows by cosine, best first; a zero row has cosine 0 with everything.

    The ``[N, N]`` table is never held: ``max(1, block_elements // N)`` rows at a time,
    in float32 whatever the input's dtype.
    """
    if directions.dim() != 2:
        raise ValueError(f"directions must be 2-D [N, d], got shape {tuple(directions.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    N = directions.shape[0]
    k = min(k, N - 1)
    if k < 1:
        return torch.empty(N, 0, dtype=torch.long), torch.empty(N, 0)
    x = directions.detach().float()
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    rows = max(1, block_elements // max(N, 1))
    idx = torch.empty(N, k, dtype=torch.long)
    val = torch.empty(N, k)
    for i in range(0, N, rows):
        block = x[i : i + rows] @ x.T  # [rows, N]
        r = torch.arange(block.shape[0], device=block.device)
        block[r, r + i] = -float("inf")  # never its own neighbour
        top = block.topk(k, dim=1)
        idx[i : i + rows], val[i : i + rows] = top.indices.cpu(), top.values.cpu()
    return idx, val


def weight_neighbours(
    directions: Mapping[str, OutputDirections], widths: Mapping[str, int], *, k: int = DEFAULT_K,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> dict[str, Any]:
    """The weight-space neighbours of every component of the layers of ``widths`` whose
    directions match their width, as the JSON `attach_weight_neighbours` stores:
    ``{"format", "k", "neighbours": {key: [[other key, cosine], ...]}, "skipped": {layer: why}}``.

    Layers are pooled by the dimension they write into (layers of one residual
    stream are neighbours of each other); a layer alone in its space still gets
    neighbours among its own components.
    """
    spaces: dict[int, list[tuple[str, Tensor]]] = {}
    skipped: dict[str, str] = {}
    for layer, width in widths.items():
        od = directions.get(layer)
        if od is None:
            skipped[layer] = "no output direction found for its components"
        elif od.weight.shape[0] != width:
            skipped[layer] = f"{od.name or 'its directions'} has {od.weight.shape[0]} rows but the layer has {width} components"
        else:
            spaces.setdefault(int(od.weight.shape[1]), []).append((layer, od.weight))
    out: dict[str, list[list[Any]]] = {}
    for members in spaces.values():
        keys = [f"{layer}:{i}" for layer, w in members for i in range(w.shape[0])]
        idx, val = cosine_topk(torch.cat([w.detach().float().cpu() for _, w in members]), k, block_elements=block_elements)
        for r, key in enumerate(keys):
            out[key] = [[keys[j], round(float(c), 6)] for j, c in zip(idx[r].tolist(), val[r].tolist())]
    return {"format": WEIGHT_NEIGHBOURS_FORMAT, "k": k, "neighbours": out, "skipped": skipped}


def attach_weight_neighbours(result: Any, fn: object, *, k: int = DEFAULT_K, log: Callable[[str], None] = print) -> int:
    """Store the weight-space neighbours of a harvest's components in ``result.shared`` (saved
    as ``harvest/shared/weight_neighbours.json``) when ``fn`` exposes its output directions
    (``output_directions()``, as for the logit lens); returns how many components got some."""
    data = weight_neighbours_of(fn, {layer.name: layer.width for layer in result.config.layers}, k=k, log=log)
    if data is None:
        return 0
    result.shared[WEIGHT_NEIGHBOURS] = data
    return len(data["neighbours"])


def weight_neighbours_of(fn: object, widths: Mapping[str, int], *, k: int = DEFAULT_K,
                         log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """What `attach_weight_neighbours` stores, or None where ``fn`` gives no output directions
    or no layer got neighbours (for a streaming save, which takes it as a shared output)."""
    get_d = getattr(fn, "output_directions", None)
    if not callable(get_d):
        return None
    with torch.no_grad():
        data = weight_neighbours(get_d(), widths, k=k)
    if not data["neighbours"]:
        return None
    log(f"autointerp: weight-space neighbours (cosine of output directions, top {k}) for {len(data['neighbours']):,} components")
    return data


@define
class Neighbour:
    """One neighbour of a component: its key, current label ("" if none yet) and statistics."""

    key: str
    label: str
    stats: dict[str, float] = field(factory=dict)


@define
class NeighbourContext:
    """What the second pass shows about a component's neighbours (`neighbour_context`)."""

    cofiring: list[Neighbour] = field(factory=list)
    weight: list[Neighbour] = field(factory=list)

    def __bool__(self) -> bool:
        return bool(self.cofiring or self.weight)


def neighbour_context(
    comp: ComponentData, labels: Mapping[str, str], *, n: int = 5, weight_table: Mapping[str, Any] | None = None
) -> NeighbourContext:
    """``comp``'s ``n`` strongest co-firing partners (PMI order, then precision) and ``n``
    nearest weight-space neighbours (``weight_table``: ``harvest.shared["weight_neighbours"]``),
    each with its current label from ``labels``."""
    cof: list[Neighbour] = []
    if comp.correlations is not None:
        seen: set[str] = set()
        for p in [*comp.correlations.top_pmi, *comp.correlations.top_precision]:
            if len(cof) >= n:
                break
            if p.key in seen or p.key == comp.key:
                continue
            seen.add(p.key)
            stats = {"count": float(p.count), "precision": p.precision, "recall": p.recall, "pmi": p.pmi}
            cof.append(Neighbour(p.key, labels.get(p.key, ""), stats))
    weight: list[Neighbour] = []
    if weight_table:
        for other, cos in (weight_table.get("neighbours") or {}).get(comp.key, [])[:n]:
            weight.append(Neighbour(str(other), labels.get(str(other), ""), {"cosine": float(cos)}))
    return NeighbourContext(cof, weight)
