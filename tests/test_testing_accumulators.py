"""autointerp.testing.check_accumulator passes correct accumulators and catches broken ones."""

from __future__ import annotations

import pytest
import torch

from autointerp import TensorAccumulator
from autointerp.testing import ConformanceError, check_accumulator
from harvest_helpers import make_stream


class CountAcc(TensorAccumulator):
    """Firings per component: the smallest correct accumulator."""

    name = "count"

    def setup(self, ctx):
        self.add_state("n", torch.zeros(ctx.n_components, dtype=torch.int64))

    def update(self, batch):
        self.n.index_add_(0, batch.firing_comp, torch.ones_like(batch.firing_comp))

    def finalize(self):
        return dict(enumerate(self.n.tolist()))


class MergeOverwrites(CountAcc):
    def merge(self, other):
        self._check_mergeable(other)
        if other.bound:
            if not self.bound:
                self.bind(other.ctx)
            self.n = other.n.clone()
        return self


class FinalizeConsumes(CountAcc):
    def finalize(self):
        out = dict(enumerate(self.n.tolist()))
        self.n.zero_()
        return out


class ForgetsOnLoad(CountAcc):
    def load_state_dict(self, state):
        pass


class ReturnsTensors(CountAcc):
    def finalize(self):
        return dict(enumerate(self.n))


class KeysByName(CountAcc):
    def finalize(self):
        return {self.ctx.space.key(i): v for i, v in enumerate(self.n.tolist())}


class MaxAsSum(CountAcc):
    """A running maximum declared with the default reduction (sum): merge adds maxima."""

    def setup(self, ctx):
        self.add_state("n", torch.zeros(ctx.n_components))

    def update(self, batch):
        self.n.scatter_reduce_(0, batch.firing_comp, batch.firing_act, reduce="amax")


class MoveForgetsTheContext(CountAcc):
    """Moves its tensors but keeps the old context, so it allocates on the wrong device later."""

    def to(self, device):
        self.n = self.n.to(device)
        return self


class MoveChangesTheSharedContext(CountAcc):
    """Changes the device on the context it shares with the rest of its loop."""

    def to(self, device):
        self.n = self.n.to(device)
        object.__setattr__(self.ctx, "device", torch.device(device))  # defeats the frozen class, on purpose
        return self


class MoveLeavesATensorBehind(CountAcc):
    """Keeps a tensor outside add_state and forgets it in to()."""

    def setup(self, ctx):
        super().setup(ctx)
        self.total = torch.zeros((), dtype=torch.int64, device=ctx.device)

    def update(self, batch):
        super().update(batch)
        self.total += batch.n_firings

    def merge(self, other):
        total = other.total if other.bound else None
        super().merge(other)
        if total is not None:
            self.total += total.to(self.total.device)
        return self

    def state_dict(self):
        return {**super().state_dict(), "total": self.total}

    def load_state_dict(self, state):
        super().load_state_dict({k: v for k, v in state.items() if k != "total"})
        self.total = state["total"].to(self.ctx.device).clone()


@pytest.fixture(scope="module")
def batches():
    return make_stream(0, 4)


def test_a_correct_accumulator_passes(batches):
    check_accumulator(CountAcc, batches)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (MergeOverwrites, r"MergeOverwrites: merge of batches \[:1\] and \[1:\] differs from one pass \(state\): "
                          r"\['n'\]: \d+ elements differ"),
        (FinalizeConsumes, r"FinalizeConsumes: finalize\(\) changed the state \(it must be pure\)"),
        (ForgetsOnLoad, r"ForgetsOnLoad: load_state_dict\(state_dict\(\)\) differs \(state\)"),
        (ReturnsTensors, r"ReturnsTensors: finalize\(\)\[0\] cannot be saved as JSON"),
        (KeysByName, r"KeysByName: finalize\(\) returned key 'h.0.mlp:0'; keys must be flat component indices"),
        (MaxAsSum, r"MaxAsSum: merge of batches .* differs from one pass \(state\): \['n'\]: tensors differ"),
        (MoveForgetsTheContext, r"MoveForgetsTheContext: after to\('meta'\) ctx.device is cpu, expected meta; "
                                r"an override of to\(\) must call super\(\).to\(device\)"),
        (MoveChangesTheSharedContext, r"MoveChangesTheSharedContext: moving one accumulator to meta moved the context "
                                      r"of another bound to the same context \(its ctx.device is meta, expected cpu\)"),
        (MoveLeavesATensorBehind, r"MoveLeavesATensorBehind: state_dict\(\)\['total'\] is on cpu after to\('meta'\), "
                                  r"expected meta"),
    ],
)
def test_a_broken_accumulator_fails_with_the_reason(batches, cls, message):
    with pytest.raises(ConformanceError, match=message):
        check_accumulator(cls, batches)


def test_the_checker_needs_two_batches(batches):
    with pytest.raises(ValueError, match="needs at least 2 batches to split, got 1"):
        check_accumulator(CountAcc, batches[:1])


def test_the_checker_names_a_bad_batch(batches):
    bad = make_stream(1, 1, widths={"other": 2})[0]
    with pytest.raises(ValueError, match=r"batches\[1\] is not a valid HarvestBatch: activations have layers"):
        check_accumulator(CountAcc, [batches[0], bad])
