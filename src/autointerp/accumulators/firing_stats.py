"""Firing count, firing rate, mean and max activation of every component.

The loop adds one of these to every harvest (unless you pass your own), because
every other piece of the pipeline needs the rates.

It also counts the firings at the first `EARLY_POSITIONS` real tokens of their
row (masked padding does not count, so left padding does not hide them):
components that fire mostly there (attention-sink and beginning-of-text
features) say little about the text, and the report and the prompt flag them
(`fires_early`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.batch import FiringBatch

#: "the first positions": the first this many real (unmasked) tokens of a row
EARLY_POSITIONS = 4
#: flagged when more than this share of its firings is at the first positions ...
EARLY_SHARE_FLAG = 0.5
#: ... while those positions are at most this share of all tokens (with rows of 8 tokens
#: half of every uniform component's firings would be early: no flag means anything there)
EARLY_TOKEN_SHARE_MAX = 0.25
#: ... and it fired at least this often (two firings at position 0 are not a pattern)
EARLY_MIN_FIRINGS = 5


def fires_early(early_share: float, firing_count: int, early_token_share: float) -> bool:
    """The flag's rule: see `EARLY_SHARE_FLAG`, `EARLY_TOKEN_SHARE_MAX`, `EARLY_MIN_FIRINGS`."""
    return (early_share > EARLY_SHARE_FLAG and early_token_share <= EARLY_TOKEN_SHARE_MAX
            and firing_count >= EARLY_MIN_FIRINGS)


class FiringStatsAcc(TensorAccumulator):
    """``firing_count`` (exact int64), ``firing_rate`` (per valid token), ``mean_activation``
    (over firings) and ``max_activation`` of every component, and ``early_firing_share``
    (share of its firings at the first `EARLY_POSITIONS` real tokens of a row) with
    the flag ``fires_early`` (rule: `fires_early`)."""

    name = "firing_stats"
    sets_fields = True

    def setup(self, ctx: HarvestContext) -> None:
        N = ctx.n_components
        self.add_state("count", torch.zeros(N, dtype=torch.int64))
        self.add_state("act_sum", torch.zeros(N, dtype=torch.float64))
        self.add_state("act_max", torch.full((N,), -torch.inf, dtype=torch.float32), reduce="max")
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))
        self.add_state("early_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_early_tokens", torch.zeros((), dtype=torch.int64))

    def state_bytes(self, ctx: HarvestContext) -> int:
        return ctx.n_components * (8 + 8 + 4 + 8)

    def update(self, batch: FiringBatch) -> None:
        self.count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.act_sum.index_add_(0, batch.firing_comp, batch.firing_act.double())
        self.act_max.scatter_reduce_(0, batch.firing_comp, batch.firing_act, reduce="amax")
        self.n_tokens += batch.n_valid
        # rank of each position among the real tokens of its row
        S = batch.seq_len
        valid = batch.valid.view(-1, S)
        early = ((valid.cumsum(1) <= EARLY_POSITIONS) & valid).view(-1)
        self.n_early_tokens += early.sum()
        at_start = early[batch.firing_pos].long()
        self.early_count.index_add_(0, batch.firing_comp, at_start)

    def finalize(self) -> Mapping[int, Any]:
        return self.finalize_block(0, self.count.shape[0])

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        # only the block's rows become Python objects: a streaming finalize stays bounded by a block
        count = self.count[lo:hi].cpu()
        n_tokens = int(self.n_tokens)
        mean = (self.act_sum[lo:hi].cpu() / count.clamp_min(1)).tolist()
        act_max = self.act_max[lo:hi].cpu().double()
        mx = torch.where(count > 0, act_max, torch.zeros_like(act_max)).tolist()
        counts = count.tolist()
        early = self.early_count[lo:hi].cpu().tolist()
        early_tokens = int(self.n_early_tokens) / n_tokens if n_tokens else 0.0
        share = [e / c if c else 0.0 for e, c in zip(early, counts)]
        return {
            lo + j: {
                "firing_count": c,
                "firing_rate": c / n_tokens if n_tokens else 0.0,
                "mean_activation": mean[j],
                "max_activation": mx[j],
                "early_firing_share": share[j],
                "fires_early": fires_early(share[j], c, early_tokens),
            }
            for j, c in enumerate(counts)
        }
