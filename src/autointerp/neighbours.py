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

`cosine_topk` finds the weight-space neighbours in bounded tiles: the ``[N, N]``
cosine table is computed a ``B x B`` tile at a time (``2 B^2 = block_elements``),
only on and above the diagonal (the table is symmetric), each tile cut to its
rows' and columns' top ``k`` and merged into running top-k lists, so memory is
``O(block_elements + N k)``, never ``N x N`` (10^5 components: 40 GB dense; here
256 MiB a tile). `autointerp
harvest` stores them after the pass as a `WeightNeighbours` table (``harvest/shared/
weight_neighbours.json`` and ``.rows``, read a row at a time; `attach_weight_neighbours`,
the same moment as the logit lens; a job array's worker 0 writes them for ``autointerp merge``).

`neighbour_context` gathers both lists for one component with the partners'
current labels; the interpreter's second pass (``interpret --neighbours``)
renders it with ``prompts/sections/neighbours.j2``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attrs import define, field
from torch import Tensor

from autointerp.batch import ComponentSpace
from autointerp.harvest_store import SharedRows
from autointerp.logit_lens import DEFAULT_BLOCK_ELEMENTS, OutputDirections
from autointerp.schemas import ComponentData

#: ``HarvestResult.shared`` key (and ``harvest/shared/<key>.json``) of the weight-space neighbours
WEIGHT_NEIGHBOURS = "weight_neighbours"
#: format 2: `WeightNeighbours` rows beside a small JSON; format 1 (one JSON document) is still read
WEIGHT_NEIGHBOURS_FORMAT = "autointerp.weight_neighbours/2"
WEIGHT_NEIGHBOURS_FORMAT_V1 = "autointerp.weight_neighbours/1"
DEFAULT_K = 8


def cosine_topk(directions: Tensor, k: int = DEFAULT_K, *, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """``(indices [N, k'], cosines [N, k'])``: each row's ``k' = min(k, N - 1)`` most similar
    other rows by cosine, best first; a zero row has cosine 0 with everything.

    The ``[N, N]`` table is never held: it is computed in square tiles of ``B x B``
    (``B = isqrt(block_elements / 2)``, at most N: a tile and its transposed copy fit in
    ``block_elements``), in float32 whatever the input's dtype.
    The table is symmetric, so only the tiles on and above the diagonal are computed
    (half the matmul work, which is nearly all of the time): tile ``(I, J)`` gives
    rows ``I`` their candidates among columns ``J`` and, transposed, rows ``J`` theirs
    among ``I``; each row keeps a running top ``k'``, merged with each tile's own top
    ``k'``. Memory: a tile and its top-k, plus ``N k'`` running entries.
    """
    if directions.dim() != 2:
        raise ValueError(f"directions must be 2-D [N, d], got shape {tuple(directions.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if block_elements < 1:
        raise ValueError(f"block_elements must be at least 1, got {block_elements}")
    N = directions.shape[0]
    k = min(k, N - 1)
    if k < 1:
        return torch.empty(N, 0, dtype=torch.long), torch.empty(N, 0)
    x = directions.detach().float()
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    B = max(1, min(N, math.isqrt(max(1, block_elements // 2))))  # a tile and its transposed copy
    val = torch.full((N, k), -float("inf"), device=x.device)
    idx = torch.full((N, k), -1, dtype=torch.long, device=x.device)

    def merge(lo: int, hi: int, tile: Tensor, col0: int) -> None:
        # rows lo:hi take the tile's top candidates (columns col0 + j) into their running top k
        top = tile.topk(min(k, tile.shape[1]), dim=1)
        v = torch.cat([val[lo:hi], top.values], dim=1)
        i = torch.cat([idx[lo:hi], top.indices + col0], dim=1)
        best = v.topk(k, dim=1)
        val[lo:hi], idx[lo:hi] = best.values, i.gather(1, best.indices)

    for a in range(0, N, B):
        a_hi = min(a + B, N)
        for b in range(a, N, B):
            b_hi = min(b + B, N)
            tile = x[a:a_hi] @ x[b:b_hi].T  # [rows of a, rows of b]
            if a == b:
                tile.fill_diagonal_(-float("inf"))  # never its own neighbour
            merge(a, a_hi, tile, b)
            if a != b:
                # top-k along the columns of a transposed view is ~10x slower than a copy's rows
                merge(b, b_hi, tile.T.contiguous(), a)
    return idx.cpu(), val.cpu()


class WeightNeighbours:
    """The weight-space neighbours of every component of a harvest: for each component
    position (the component space's order, `HarvestConfig.layers`), up to ``k`` other
    positions and their cosines, best first.

    Stored as `autointerp.harvest_store.SharedRows` in ``harvest/shared/``:
    ``weight_neighbours.json`` (format, ``k``, the layers and their widths, the layers
    skipped and why) and ``weight_neighbours.rows``, one row of ``8 k`` bytes per
    component (``k`` little-endian int32 positions, -1 where there are fewer than ``k``
    neighbours, then ``k`` float32 cosines). At 10^5 components and ``k = 8`` that is
    6.4 MB, and `get` reads one row (the JSON of format 1 was 43 MB, 1.4 s to parse and
    170 MiB held; `docs/benchmarks.md`).
    """

    def __init__(self, rows: SharedRows):
        meta = rows.meta
        if meta.get("format") != WEIGHT_NEIGHBOURS_FORMAT:
            raise ValueError(f"weight neighbours of format {meta.get('format')!r}; this version reads {WEIGHT_NEIGHBOURS_FORMAT!r}")
        self.rows = rows
        self.k: int = int(meta["k"])
        self.skipped: dict[str, str] = dict(meta.get("skipped") or {})
        self.layers: list[tuple[str, int]] = [(str(name), int(w)) for name, w in meta["layers"]]
        self.n_with_neighbours: int = int(meta.get("n_with_neighbours", 0))
        self._dtype = _row_dtype(self.k)
        self._offsets: dict[str, int] = {}
        self._widths = dict(self.layers)
        start = 0
        for name, width in self.layers:
            self._offsets[name] = start
            start += width
        self._ends = list(itertools.accumulate(w for _, w in self.layers))

    @classmethod
    def build(cls, layers: Sequence[tuple[str, int]], k: int, idx: Tensor, cos: Tensor,
              skipped: Mapping[str, str]) -> WeightNeighbours:
        """From ``idx`` [N, k] (global positions, -1 for none) and ``cos`` [N, k]."""
        n = sum(w for _, w in layers)
        if tuple(idx.shape) != (n, k) or tuple(cos.shape) != (n, k):
            raise ValueError(f"idx and cos must be [{n}, {k}], got {tuple(idx.shape)} and {tuple(cos.shape)}")
        table = np.empty(n, dtype=_row_dtype(k))
        table["idx"] = idx.to(torch.int32).numpy()
        table["cos"] = cos.to(torch.float32).numpy()
        meta = {"format": WEIGHT_NEIGHBOURS_FORMAT, "k": k, "layers": [[name, w] for name, w in layers],
                "skipped": dict(skipped), "n_with_neighbours": int((idx[:, 0] >= 0).sum()) if k else 0}
        return cls(SharedRows.build(meta, table.tobytes(), n, table.dtype.itemsize))

    @classmethod
    def of(cls, value: Any, layers: Sequence[tuple[str, int]] | None = None) -> WeightNeighbours | None:
        """What ``harvest.shared["weight_neighbours"]`` holds, as a table: a `WeightNeighbours`, the
        `SharedRows` of a saved harvest, or the single JSON document of format 1 (``layers``:
        the harvest's, to give its keys positions); None for nothing."""
        if value is None or isinstance(value, WeightNeighbours):
            return value
        if isinstance(value, SharedRows):
            return cls(value)
        if isinstance(value, Mapping) and value.get("format") == WEIGHT_NEIGHBOURS_FORMAT_V1:
            if layers is None:
                raise ValueError("weight neighbours of format 1 need the harvest's layers to be read")
            return cls._from_v1(value, layers)
        raise ValueError(f"weight neighbours: expected a {WEIGHT_NEIGHBOURS_FORMAT!r} table, got {type(value).__name__}"
                         + (f" of format {value.get('format')!r}" if isinstance(value, Mapping) else ""))

    @classmethod
    def _from_v1(cls, value: Mapping[str, Any], layers: Sequence[tuple[str, int]]) -> WeightNeighbours:
        k = int(value["k"])
        offsets, start = {}, 0
        for name, width in layers:
            offsets[name] = start
            start += width
        idx = torch.full((start, k), -1, dtype=torch.int32)
        cos = torch.zeros(start, k)
        for key, items in (value.get("neighbours") or {}).items():
            layer, i = ComponentSpace.split_key(key)
            for j, (other, c) in enumerate(items[:k]):
                ol, oi = ComponentSpace.split_key(other)
                idx[offsets[layer] + i, j] = offsets[ol] + oi
                cos[offsets[layer] + i, j] = float(c)
        return cls.build(list(layers), k, idx, cos, value.get("skipped") or {})

    def position(self, key: str) -> int | None:
        try:
            layer, i = ComponentSpace.split_key(key)
        except KeyError:
            return None
        start = self._offsets.get(layer)
        if start is None or not 0 <= i < self._widths[layer]:
            return None
        return start + i

    def key_at(self, pos: int) -> str:
        li = bisect.bisect_right(self._ends, pos)
        name, _ = self.layers[li]
        return ComponentSpace.make_key(name, pos - self._offsets[name])

    def get(self, key: str) -> list[tuple[str, float]]:
        """``key``'s neighbours, best first: ``[(other key, cosine), ...]`` (empty for an unknown key)."""
        pos = self.position(key)
        if pos is None:
            return []
        row = np.frombuffer(self.rows.row(pos), dtype=self._dtype)[0]
        return [(self.key_at(int(j)), float(c)) for j, c in zip(row["idx"], row["cos"]) if j >= 0]

    def __len__(self) -> int:
        """How many components have at least one neighbour."""
        return self.n_with_neighbours

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightNeighbours) and self.rows == other.rows

    def write_shared(self, folder: Path, name: str) -> None:
        self.rows.write_shared(folder, name)

    def __repr__(self) -> str:
        return f"WeightNeighbours(top {self.k} for {self.n_with_neighbours:,} of {self.rows.n:,} components)"


def _row_dtype(k: int) -> np.dtype:
    return np.dtype([("idx", "<i4", (k,)), ("cos", "<f4", (k,))])


def weight_neighbours(
    directions: Mapping[str, OutputDirections], widths: Mapping[str, int], *, k: int = DEFAULT_K,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> WeightNeighbours:
    """The weight-space neighbours of every component of the layers of ``widths`` (in
    component-space order) whose directions match their width.

    Layers are pooled by the dimension they write into (layers of one residual
    stream are neighbours of each other); a layer alone in its space still gets
    neighbours among its own components. Components of a skipped layer (named in
    ``skipped`` with the reason) have none.
    """
    layers = [(name, int(w)) for name, w in widths.items()]
    offsets, start = {}, 0
    for name, width in layers:
        offsets[name] = start
        start += width
    spaces: dict[int, list[tuple[str, Tensor]]] = {}
    skipped: dict[str, str] = {}
    for layer, width in layers:
        od = directions.get(layer)
        if od is None:
            skipped[layer] = "no output direction found for its components"
        elif od.weight.shape[0] != width:
            skipped[layer] = f"{od.name or 'its directions'} has {od.weight.shape[0]} rows but the layer has {width} components"
        else:
            spaces.setdefault(int(od.weight.shape[1]), []).append((layer, od.weight))
    idx = torch.full((start, k), -1, dtype=torch.int32)
    cos = torch.zeros(start, k)
    for members in spaces.values():
        # the pooled rows' global positions, in the order they are concatenated
        where = torch.cat([torch.arange(w.shape[0]) + offsets[layer] for layer, w in members])
        i, c = cosine_topk(torch.cat([w.detach().float().cpu() for _, w in members]), k, block_elements=block_elements)
        idx[where, : i.shape[1]] = where[i].to(torch.int32)
        cos[where, : c.shape[1]] = c
    return WeightNeighbours.build(layers, k, idx, cos, skipped)


def attach_weight_neighbours(result: Any, fn: object, *, k: int = DEFAULT_K, log: Callable[[str], None] = print) -> int:
    """Store the weight-space neighbours of a harvest's components in ``result.shared`` (saved
    as ``harvest/shared/weight_neighbours.{json,rows}``) when ``fn`` exposes its output directions
    (``output_directions()``, as for the logit lens); returns how many components got some."""
    data = weight_neighbours_of(fn, {layer.name: layer.width for layer in result.config.layers}, k=k, log=log)
    if data is None:
        return 0
    result.shared[WEIGHT_NEIGHBOURS] = data
    return len(data)


def weight_neighbours_of(fn: object, widths: Mapping[str, int], *, k: int = DEFAULT_K,
                         log: Callable[[str], None] = print) -> WeightNeighbours | None:
    """What `attach_weight_neighbours` stores, or None where ``fn`` gives no output directions
    or no layer got neighbours (for a streaming save, which takes it as a shared output)."""
    get_d = getattr(fn, "output_directions", None)
    if not callable(get_d):
        return None
    with torch.no_grad():
        data = weight_neighbours(get_d(), widths, k=k)
    if not len(data):
        return None
    log(f"autointerp: weight-space neighbours (cosine of output directions, top {k}) for {len(data):,} components")
    return data


def weight_table(harvest: Any) -> WeightNeighbours | None:
    """The weight-space neighbours a harvest stores (``harvest.shared["weight_neighbours"]``), or None."""
    value = harvest.shared.get(WEIGHT_NEIGHBOURS)
    return WeightNeighbours.of(value, [(layer.name, layer.width) for layer in harvest.config.layers])


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
    comp: ComponentData, labels: Mapping[str, str], *, n: int = 5, weight_table: WeightNeighbours | None = None
) -> NeighbourContext:
    """``comp``'s ``n`` strongest co-firing partners (PMI order, then precision) and ``n``
    nearest weight-space neighbours (``weight_table``: `weight_table(harvest)`),
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
    if weight_table is not None:
        for other, cos in weight_table.get(comp.key)[:n]:
            weight.append(Neighbour(other, labels.get(other, ""), {"cosine": cos}))
    return NeighbourContext(cof, weight)
