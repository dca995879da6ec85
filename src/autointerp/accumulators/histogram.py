"""An activation histogram per component: how strongly it fires, in exact integer counts.

The bins are fixed before the first batch, from the configuration and the
harvest's threshold alone (`LogBins`): log-spaced edges from ``lo`` upwards,
``bins_per_octave`` to each doubling, plus one open bin below ``lo`` and one
above the top edge. Because no bin edge depends on the data, two workers (or a
resumed run) bin every firing the same way and merging is adding the counts:
exactly one pass. (A range chosen from the first batch would differ between
workers and could not be merged exactly.)

Log spacing suits activations, which span orders of magnitude (SAE latents in
the tens, causal importances in (0, 1], GELU neurons near 0): with the defaults
(4 bins an octave, 20 octaves) each bin is 19% wide from ``lo`` to ``lo * 2**20``.
``lo`` is the threshold when it is positive, else ``min_value`` (default 1e-3);
firings at or below ``lo`` (tiny or, with a negative threshold, negative
activations) land in the first bin. With a threshold per layer, each layer's
bins start at its own threshold (`ComponentBins`); every layer has the same
number of bins.

State: ``counts [N, n_bins]`` int64 (sum) and the largest firing of each
component (max, the open top bin's upper edge): with the defaults
``N * (82 * 8 + 4)`` bytes, 660 bytes a component.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from attrs import frozen
from torch import Tensor

from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.batch import FiringBatch
from autointerp.schemas import ActivationHistogram

#: the lowest edge when the threshold is not positive (log bins cannot start at 0)
DEFAULT_MIN_VALUE = 1e-3


@frozen
class LogBins:
    """Log-spaced bin edges: ``edges[j] = lo * 2 ** (j / bins_per_octave)``, ``j = 0 .. bins_per_octave * n_octaves``.

    Bin 0 holds values ``<= edges[0]``, bin ``j`` values in ``(edges[j-1], edges[j]]``
    and the last bin values above ``edges[-1]``: ``n_bins = len(edges) + 1``.

    >>> b = LogBins(lo=0.5, bins_per_octave=1, n_octaves=2)
    >>> b.edges.tolist(), b.bin_of(torch.tensor([0.1, 0.5, 0.7, 1.0, 2.0, 3.0])).tolist()
    ([0.5, 1.0, 2.0], [0, 0, 1, 1, 2, 3])
    """

    lo: float
    bins_per_octave: int
    n_octaves: int

    @classmethod
    def for_threshold(cls, threshold: float, bins_per_octave: int, n_octaves: int, min_value: float | None = None) -> LogBins:
        """The layout a harvest at ``threshold`` uses: ``lo`` = ``min_value`` if given, else the
        threshold when positive, else `DEFAULT_MIN_VALUE`."""
        if min_value is None:
            min_value = threshold if threshold > 0 else DEFAULT_MIN_VALUE
        if not min_value > 0:
            raise ValueError(f"min_value must be > 0 (the lowest log-spaced edge), got {min_value}")
        return cls(float(min_value), bins_per_octave, n_octaves)

    @property
    def edges(self) -> Tensor:
        """float64 ``[bins_per_octave * n_octaves + 1]``; exact powers of two times ``lo`` at whole octaves."""
        j = torch.arange(self.bins_per_octave * self.n_octaves + 1, dtype=torch.float64)
        return self.lo * torch.pow(2.0, j / self.bins_per_octave)

    @property
    def n_bins(self) -> int:
        return self.bins_per_octave * self.n_octaves + 2

    def bin_of(self, act: Tensor, edges: Tensor | None = None) -> Tensor:
        """The bin of each value (int64). The float32 activation is widened to float64,
        so the comparison with the float64 edges is exact."""
        e = self.edges if edges is None else edges
        return torch.searchsorted(e.to(act.device), act.double(), right=False)


class ComponentBins:
    """The `LogBins` of each layer's components: one layout when every layer has the same ``lo``.

    Bins start at the layer's threshold (when positive), so with per-layer thresholds
    the edges differ by layer; the number of bins is the same for all.
    """

    def __init__(self, ctx: HarvestContext, bins_per_octave: int, n_octaves: int, min_value: float | None):
        self.spans: list[tuple[int, int, LogBins, float]] = []  # (first flat, end flat, layout, threshold)
        for layer in ctx.space.layers:
            start = ctx.space.layer_offset(layer.name)
            thr = ctx.threshold_for(layer.name)
            bins = LogBins.for_threshold(thr, bins_per_octave, n_octaves, min_value)
            self.spans.append((start, start + layer.width, bins, thr))
        self.single = len({b for _, _, b, _ in self.spans}) <= 1
        first = self.spans[0][2] if self.spans else LogBins.for_threshold(ctx.threshold, bins_per_octave, n_octaves,
                                                                          min_value)
        self.n_bins = first.n_bins
        self._first = first
        self._edges = [b.edges.to(ctx.device) for _, _, b, _ in self.spans] or [first.edges.to(ctx.device)]

    def to(self, device: torch.device | str) -> ComponentBins:
        self._edges = [e.to(device) for e in self._edges]
        return self

    def bin_of(self, comp: Tensor, act: Tensor) -> Tensor:
        """The bin of each firing ``act`` of component ``comp`` (flat indices), by its layer's edges."""
        if self.single:
            return self._first.bin_of(act, self._edges[0])
        out = torch.empty(act.shape, dtype=torch.int64, device=act.device)
        for (lo, hi, bins, _), edges in zip(self.spans, self._edges):
            m = (comp >= lo) & (comp < hi)
            if bool(m.any()):
                out[m] = bins.bin_of(act[m], edges)
        return out

    def _span(self, flat: int) -> tuple[int, int, LogBins, float]:
        for span in self.spans:
            if span[0] <= flat < span[1]:
                return span
        raise IndexError(f"flat index {flat} is in no layer")

    def edges_of(self, flat: int) -> list[float]:
        """The float64 edges of component ``flat``'s layer, as a list."""
        return self._span(flat)[2].edges.tolist()

    def threshold_of(self, flat: int) -> float:
        return self._span(flat)[3]

    def layer_edges(self) -> list[tuple[int, int, list[float], float]]:
        """``(first flat, end flat, edges, threshold)`` per layer, edges as lists (for a finalize loop)."""
        return [(lo, hi, b.edges.tolist(), thr) for lo, hi, b, thr in self.spans]


def _check_layout(bins_per_octave: int, n_octaves: int, min_value: float | None) -> None:
    if bins_per_octave < 1:
        raise ValueError(f"bins_per_octave must be at least 1, got {bins_per_octave}")
    if n_octaves < 1:
        raise ValueError(f"n_octaves must be at least 1, got {n_octaves}")
    if min_value is not None and not min_value > 0:
        raise ValueError(f"min_value must be > 0 or None (the threshold, or {DEFAULT_MIN_VALUE}), got {min_value}")


class ActivationHistogramAcc(TensorAccumulator):
    """Per component, the count of its firings in each log-spaced activation bin (see `LogBins`).

    Finalizes to an `ActivationHistogram` trimmed to the bins between the
    component's first and last non-empty one (None for a component that never fired).

    >>> from autointerp.testing.accumulators import check_accumulator  # doctest: +SKIP
    >>> check_accumulator(ActivationHistogramAcc, batches)           # doctest: +SKIP
    """

    name = "histogram"
    prompt_section = "histogram.j2"

    def __init__(self, bins_per_octave: int = 4, n_octaves: int = 20, min_value: float | None = None):
        _check_layout(bins_per_octave, n_octaves, min_value)
        self.bins_per_octave, self.n_octaves, self.min_value = bins_per_octave, n_octaves, min_value

    def config(self) -> dict[str, Any]:
        return {"bins_per_octave": self.bins_per_octave, "n_octaves": self.n_octaves, "min_value": self.min_value}

    def layout(self, ctx: HarvestContext) -> ComponentBins:
        """The bins of each layer (they start at the layer's threshold)."""
        return ComponentBins(ctx, self.bins_per_octave, self.n_octaves, self.min_value)

    def state_bytes(self, ctx: HarvestContext) -> int:
        return ctx.n_components * (self.layout(ctx).n_bins * 8 + 4)

    def setup(self, ctx: HarvestContext) -> None:
        self._bins = self.layout(ctx)
        N, nb = ctx.n_components, self._bins.n_bins
        self.add_state("counts", torch.zeros((N, nb), dtype=torch.int64))
        self.add_state("act_max", torch.full((N,), -torch.inf, dtype=torch.float32), reduce="max")

    def update(self, batch: FiringBatch) -> None:
        if not batch.n_firings:
            return
        ctx = self._require_bound()
        comp, act = batch.firing_comp, batch.firing_act
        nb = self.counts.shape[1]
        b = self._bins.bin_of(comp, act)
        self.counts.view(-1).index_add_(0, comp * nb + b, torch.ones_like(b))
        self.act_max.scatter_reduce_(0, comp, act.float(), reduce="amax")

    def to(self, device: torch.device | str) -> ActivationHistogramAcc:
        if hasattr(self, "_bins"):
            self._bins.to(device)
        super().to(device)
        return self

    def finalize(self) -> Mapping[int, Any]:
        return self.finalize_block(0, self._require_bound().n_components)

    def finalize_block(self, first: int, end: int) -> Mapping[int, Any]:
        """The histograms of components ``first <= i < end``, from those rows alone."""
        self._require_bound()
        counts = self.counts[first:end].cpu()
        layers = self._bins.layer_edges()
        hi_seen = self.act_max[first:end].cpu().double().tolist()
        nonzero = counts > 0
        any_ = nonzero.any(1).tolist()
        low = nonzero.int().argmax(1).tolist()
        last = (nonzero.shape[1] - 1 - nonzero.flip(1).int().argmax(1)).tolist()
        rows = counts.tolist()
        out: dict[int, Any] = {}
        for r in range(end - first):
            i = first + r
            if not any_[r]:
                out[i] = None
                continue
            a, b = low[r], last[r]
            edges, thr = next((e, t) for lo, hi, e, t in layers if lo <= i < hi)
            # bin j spans (edges[j-1], edges[j]]; bin 0 starts at the threshold (every firing is above
            # it) and the open top bin ends at the largest firing seen
            lower = [edges[j - 1] if j > 0 else thr for j in range(a, b + 1)]
            upper = edges[b] if b < len(edges) else hi_seen[r]
            out[i] = ActivationHistogram(edges=lower + [upper], counts=rows[r][a : b + 1])
        return out
