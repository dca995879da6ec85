"""Update, merge, checkpoint and finalize a HarvestLoop in any order: it always equals
one pass over the batches it has seen (a plain list is the model)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from autointerp import CorrelationAcc, FiringStatsAcc, HarvestLoop, InputTokenAcc, ReservoirAcc
from harvest_helpers import Reference, make_batch

V, K, SEED = 11, 2, 3


def new_loop() -> HarvestLoop:
    return HarvestLoop([CorrelationAcc(), InputTokenAcc(), ReservoirAcc(k=K, context_tokens=1)],
                       progress=False, seed=SEED, vocab_size=V)


class HarvestMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.loop = new_loop()
        self.seen = []  # the model: every batch the loop has absorbed
        self.next_row = 0

    def _batch(self, seed: int):
        b = make_batch(torch.Generator().manual_seed(seed), B=2, S=6, V=V, probs=False, first_row=self.next_row)
        self.next_row += 2
        return b

    @rule(seed=st.integers(0, 2**16))
    def update(self, seed):
        b = self._batch(seed)
        self.loop.update(b)
        self.seen.append(b)

    @rule(seeds=st.lists(st.integers(0, 2**16), max_size=2))
    def merge_a_worker(self, seeds):
        worker = new_loop()
        for s in seeds:
            b = self._batch(s)
            worker.update(b)
            self.seen.append(b)
        self.loop.merge(worker)

    @rule()
    def round_trip_state(self):
        fresh = new_loop()
        fresh.load_state_dict(self.loop.state_dict())
        self.loop = fresh

    @rule()
    def finalize(self):
        if self.seen:
            self.loop.finalize()

    @invariant()
    def equals_one_pass(self):
        if not self.seen:
            return
        ref = Reference(self.seen)
        fs, corr, inp, res = self.loop.accumulators
        assert isinstance(fs, FiringStatsAcc)
        np.testing.assert_array_equal(fs.count.numpy(), ref.firing_count())
        np.testing.assert_array_equal(corr.state_dict()["cofire"].numpy(), ref.cofire())
        np.testing.assert_array_equal(inp.joint.numpy(), ref.input_joint(V))
        want = ref.keyed_sample(SEED, K)
        state = res.state_dict()  # each row's slots in key order
        for c in range(ref.N):
            filled = int((state["position"][c] >= 0).sum())
            got = list(zip(state["sequence"][c, :filled].tolist(), state["position"][c, :filled].tolist()))
            assert got == want[c]
        assert self.loop.n_tokens == ref.n_tokens


TestHarvestMachine = HarvestMachine.TestCase
TestHarvestMachine.settings = settings(max_examples=settings.default.max_examples // 2 or 1,
                                       stateful_step_count=8, deadline=None)
