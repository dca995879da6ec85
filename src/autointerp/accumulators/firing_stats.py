"""Firing count, firing rate, mean and max activation of every component.

The loop adds one of these to every harvest (unless you pass your own), because
every other piece of the pipeline needs the rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.batch import FiringBatch


class FiringStatsAcc(TensorAccumulator):
    """``firing_count`` (exact int64), ``firing_rate`` (per valid token), ``mean_activation``
    (over firings) and ``max_activation`` of every component."""

    name = "firing_stats"
    sets_fields = True

    def setup(self, ctx: HarvestContext) -> None:
        N = ctx.n_components
        self.add_state("count", torch.zeros(N, dtype=torch.int64))
        self.add_state("act_sum", torch.zeros(N, dtype=torch.float64))
        self.add_state("act_max", torch.full((N,), -torch.inf, dtype=torch.float32), reduce="max")
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))

    def state_bytes(self, ctx: HarvestContext) -> int:
        return ctx.n_components * (8 + 8 + 4)

    def update(self, batch: FiringBatch) -> None:
        self.count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.act_sum.index_add_(0, batch.firing_comp, batch.firing_act.double())
        self.act_max.scatter_reduce_(0, batch.firing_comp, batch.firing_act, reduce="amax")
        self.n_tokens += batch.n_valid

    def finalize(self) -> Mapping[int, Any]:
        count = self.count.cpu()
        n_tokens = int(self.n_tokens)
        mean = (self.act_sum.cpu() / count.clamp_min(1)).tolist()
        act_max = self.act_max.cpu().double()
        mx = torch.where(count > 0, act_max, torch.zeros_like(act_max)).tolist()
        counts = count.tolist()
        return {
            i: {
                "firing_count": c,
                "firing_rate": c / n_tokens if n_tokens else 0.0,
                "mean_activation": mean[i],
                "max_activation": mx[i],
            }
            for i, c in enumerate(counts)
        }
