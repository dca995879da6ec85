"""Examples from each activation quantile of a component, as delphi and SAE dashboards show them.

Top examples show only the strongest firings and a uniform sample mostly the
weakest (activations are heavy-tailed); a label that is true at every strength
needs examples from the middle too. One pass cannot know the quantiles in
advance, so the sampler keeps, per component and per activation bin (the fixed
log-spaced bins of `autointerp.accumulators.histogram.LogBins`), the ``k``
firings with the smallest keys -- the keyed bottom-k sampler of
`autointerp.accumulators.sampling`, one row per (component, bin) -- and counts
the firings of each bin. At `finalize` the bins are grouped into
``n_quantiles`` count quantiles (a bin goes to the quantile its middle firing
falls in, so a bin never splits and a dominant bin makes fewer groups), and a
group's examples are the ``k`` smallest keys of its bins' samples. The bottom-k
of a union is the bottom-k of the parts' bottom-k's, so that is a uniform
sample without replacement of the group's firings, exact over the stream and
identical however it was batched, resumed or split across workers (keys are
``firing_hash(seed + 3, sequence, position, component)``).

State: per (component, bin) ``k`` keyed windows plus one count:
``N * n_bins * (k * (24 + 8 * (2 * context_tokens + 1)) + 8)`` bytes; with the
defaults (2 bins an octave, 20 octaves: 42 bins; k = 3, 10 tokens each side)
about 24 KB a component, three times the 40-example reservoir. It is in the
default set; ``--no_quantile_examples`` drops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from attrs import evolve
from torch import Tensor

from autointerp.accumulators.base import HarvestContext
from autointerp.accumulators.histogram import ComponentBins, _check_layout
from autointerp.accumulators.sampling import EMPTY_KEY, KeyedSampler, firing_hash
from autointerp.batch import ComponentSpace, FiringBatch
from autointerp.schemas import LayerSpec, QuantileExamples


class _RowActs:
    """``acts[flat, row]`` for sampler rows ``row = component * n_bins + bin``.

    The keyed sampler gathers each kept firing's activation window with
    ``batch.act_at(positions, rows)``; rows here are (component, bin) pairs, so the
    column is ``row // n_bins``. A view instead of a ``[P, N * n_bins]`` copy.
    """

    def __init__(self, batch: FiringBatch, n_bins: int):
        self.batch, self.n_bins = batch, n_bins

    def __getitem__(self, index: tuple[Tensor, Tensor]) -> Tensor:
        flat, rows = index
        return self.batch.act_at(flat, rows // self.n_bins)


def quantile_groups(counts: Tensor, n_quantiles: int) -> Tensor:
    """The quantile (0 .. n_quantiles-1) of each bin of each row of ``counts [N, n_bins]``.

    A bin belongs to the quantile its middle firing falls in:
    ``floor(n_quantiles * (firings below it + count / 2) / total)``, so groups are
    runs of whole bins, in order. Empty bins get the group of the firings below them.

    >>> quantile_groups(torch.tensor([[1, 1, 1, 1, 0, 4]]), 4).tolist()
    [[0, 0, 1, 1, 2, 3]]
    """
    c = counts.double()
    total = c.sum(1, keepdim=True).clamp_min(1)
    mid = c.cumsum(1) - c / 2
    return torch.floor(n_quantiles * mid / total).long().clamp(0, n_quantiles - 1)


class QuantileExampleAcc(KeyedSampler):
    """Per component, ``k`` uniformly sampled examples from each of ``n_quantiles`` activation quantiles.

    Finalizes to a list of `QuantileExamples`, weakest quantile first (empty for a
    component that never fired).
    """

    name = "quantile_examples"
    prompt_section = "quantile_examples.j2"

    def __init__(self, n_quantiles: int = 5, k: int = 3, context_tokens: int = 10, bins_per_octave: int = 2,
                 n_octaves: int = 20, min_value: float | None = None):
        super().__init__(k=k, context_tokens=context_tokens)
        if n_quantiles < 1:
            raise ValueError(f"n_quantiles must be at least 1, got {n_quantiles}")
        _check_layout(bins_per_octave, n_octaves, min_value)
        self.n_quantiles = n_quantiles
        self.bins_per_octave, self.n_octaves, self.min_value = bins_per_octave, n_octaves, min_value

    def config(self) -> dict[str, Any]:
        return {"n_quantiles": self.n_quantiles, **super().config(), "bins_per_octave": self.bins_per_octave,
                "n_octaves": self.n_octaves, "min_value": self.min_value}

    def layout(self, ctx: HarvestContext) -> ComponentBins:
        """The bins of each layer (they start at the layer's threshold)."""
        return ComponentBins(ctx, self.bins_per_octave, self.n_octaves, self.min_value)

    def _rows_ctx(self, ctx: HarvestContext, n_rows: int) -> HarvestContext:
        """The context of a sampler with ``n_rows`` rows (same device, seed, decoder; its rows'
        thresholds are set apart, in ``row_thresholds``)."""
        return evolve(ctx, space=ComponentSpace([LayerSpec("rows", n_rows)]), layer_thresholds=None)

    def state_bytes(self, ctx: HarvestContext) -> int:
        nb = self.layout(ctx).n_bins
        return super().state_bytes(self._rows_ctx(ctx, ctx.n_components * nb)) + ctx.n_components * nb * 8

    def setup(self, ctx: HarvestContext) -> None:
        bins = self._bins = self.layout(ctx)
        self._n_bins = bins.n_bins
        super().setup(self._rows_ctx(ctx, ctx.n_components * bins.n_bins))
        self.add_state("bin_count", torch.zeros((ctx.n_components, bins.n_bins), dtype=torch.int64))

    def to(self, device: torch.device | str) -> QuantileExampleAcc:
        if hasattr(self, "_bins"):
            self._bins.to(device)
        super().to(device)
        return self

    def keys(self, batch: FiringBatch, seq: Tensor, pos_in_seq: Tensor, comp: Tensor, act: Tensor) -> Tensor:
        ctx = self._require_bound()
        # ``comp`` is the sampler row; the key hashes the component, so it is the firing's own
        return firing_hash(ctx.seed + 3, seq, pos_in_seq, comp // self._n_bins)

    def update(self, batch: FiringBatch) -> None:
        if not batch.n_firings:
            return
        ctx = self._require_bound()
        nb = self._n_bins
        b = self._bins.bin_of(batch.firing_comp, batch.firing_act)
        row = batch.firing_comp * nb + b
        self.bin_count.view(-1).index_add_(0, row, torch.ones_like(row))
        super().update(evolve(batch, firing_comp=row, acts=_RowActs(batch, nb)))

    def merge_states(self, theirs: Mapping[str, Tensor]) -> None:
        super().merge_states(theirs)
        self.bin_count += theirs["bin_count"]

    def finalize(self) -> Mapping[int, Any]:
        return self.finalize_block(0, self._require_bound().n_components)

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The quantile examples of components ``lo <= i < hi``, from those components' rows alone."""
        ctx = self._require_bound()
        N, nb, k, q, W = hi - lo, self._n_bins, self.k, self.n_quantiles, self.window
        counts = self.bin_count[lo:hi].cpu()
        group = quantile_groups(counts, q)  # [N, nb]
        rows = slice(lo * nb, hi * nb)  # the sampler's rows of these components
        key = self.key[rows].cpu().reshape(N, nb * k)
        slot_group = group.repeat_interleave(k, dim=1)  # [N, nb * k]
        # per (component, quantile): the k smallest keys over the slots of its bins
        masked = torch.where(slot_group[:, None, :] == torch.arange(q)[None, :, None], key[:, None, :],
                             torch.full((), EMPTY_KEY, dtype=torch.int64))  # [N, q, nb * k]
        sel_key, sel = masked.topk(k, dim=2, largest=False, sorted=True)
        flat = (torch.arange(N)[:, None, None] * (nb * k) + sel).reshape(-1)
        # the chosen slots as a sampler of N * q rows, so its finalize builds the examples
        chosen = KeyedSampler(k=k, context_tokens=self.context_tokens)
        chosen.bind(self._rows_ctx(ctx, N * q))
        chosen.row_thresholds = ctx.component_thresholds(torch.float64, "cpu")[lo:hi].repeat_interleave(q)
        chosen.key = sel_key.reshape(N * q, k)
        chosen.sequence = self.sequence[rows].cpu().reshape(-1)[flat].view(N * q, k)
        chosen.position = self.position[rows].cpu().reshape(-1)[flat].view(N * q, k)
        chosen.tokens = self.tokens[rows].cpu().reshape(-1, W)[flat].view(N * q, k, W)
        chosen.acts = self.acts[rows].cpu().reshape(-1, W)[flat].view(N * q, k, W)
        examples = chosen.finalize()
        return self._groups(lo, hi, counts, group, examples)

    def _groups(self, first: int, end: int, counts: Tensor, group: Tensor,
                examples: Mapping[int, Any]) -> dict[int, list[QuantileExamples]]:
        """Components ``first <= i < end`` (rows of ``counts``/``group`` from 0; ``examples`` by row * q + quantile)."""
        q = self.n_quantiles
        layers = self._bins.layer_edges()
        rows, groups = counts.tolist(), group.tolist()
        out: dict[int, list[QuantileExamples]] = {}
        for r in range(end - first):
            i = first + r
            total = sum(rows[r])
            edges, thr = next((e, t) for lo, hi, e, t in layers if lo <= i < hi)
            spans: dict[int, list[int]] = {}  # quantile -> [first bin, last bin, firings]
            for j, c in enumerate(rows[r]):
                if c:
                    span = spans.setdefault(groups[r][j], [j, j, 0])
                    span[1], span[2] = j, span[2] + c
            found: list[QuantileExamples] = []
            below = 0
            for g, (a, b, n) in sorted(spans.items()):
                found.append(QuantileExamples(
                    lower_share=below / total, upper_share=(below + n) / total,
                    lower=edges[a - 1] if a > 0 else thr,
                    upper=edges[b] if b < len(edges) else None,
                    count=n, examples=examples[r * q + g],
                ))
                below += n
            out[i] = found
        return out
