"""Which input tokens a component fires on: exact counts of (component, token) pairs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autointerp.accumulators._tokens import token_stats_per_row
from autointerp.accumulators.associations import rank_columns
from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.batch import FiringBatch


class InputTokenAcc(TensorAccumulator):
    """Hard counts of the token at each firing position, and of every token overall.

    State: ``joint [N, V]`` int64, ``token_count [V]``, ``comp_count [N]``.
    Finalized per component: `TokenStats` with the top ``top_k`` tokens by
    precision P(fires | token), recall P(token | fires) and PMI.
    """

    name = "input_tokens"
    prompt_section = "input_tokens.j2"

    def __init__(self, top_k: int = 10, min_count: int = 1):
        self.top_k, self.min_count = top_k, min_count

    def config(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "min_count": self.min_count}

    def state_bytes(self, ctx: HarvestContext) -> int:
        V = ctx.vocab_size or 0
        return 8 * (ctx.n_components * V + V + ctx.n_components + 1)

    def setup(self, ctx: HarvestContext) -> None:
        V, N = ctx.require_vocab(type(self).__name__), ctx.n_components
        self.add_state("joint", torch.zeros(N, V, dtype=torch.int64))
        self.add_state("token_count", torch.zeros(V, dtype=torch.int64))
        self.add_state("comp_count", torch.zeros(N, dtype=torch.int64))
        self.add_state("n_tokens", torch.zeros((), dtype=torch.int64))

    def update(self, batch: FiringBatch) -> None:
        V = self.token_count.shape[0]
        tok = batch.tokens[batch.firing_pos]
        ones = torch.ones_like(tok)
        self.joint.view(-1).index_add_(0, batch.firing_comp * V + tok, ones)
        valid_tok = batch.tokens[batch.valid]
        self.token_count.index_add_(0, valid_tok, torch.ones_like(valid_tok))
        self.comp_count.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))
        self.n_tokens += batch.n_valid

    def finalize(self) -> Mapping[int, Any]:
        ctx = self._require_bound()
        ranked = rank_columns(
            self.joint, self.comp_count, self.token_count, float(self.n_tokens), self.top_k,
            min_count=max(self.min_count, 1),
        )
        return dict(enumerate(token_stats_per_row(ranked, ctx)))
