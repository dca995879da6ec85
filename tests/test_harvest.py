"""HarvestLoop end to end: run, save, load, resume, exact counts at scale, the memory
refusal, and a custom accumulator that reaches ComponentData without touching the loop."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch

import autointerp.accumulators.correlation as correlation_module
import autointerp.harvest as harvest_module
from autointerp import (
    Accumulator,
    CorrelationAcc,
    HarvestBatch,
    HarvestLoop,
    InputTokenAcc,
    OutputProbAcc,
    ReservoirAcc,
    TensorAccumulator,
    TopActivationAcc,
    load_harvest,
)
import autointerp.accumulators._sparse as sparse_module
from autointerp.accumulators._sparse import StagedSum
from autointerp.testing import check_accumulator
from autointerp.testing.accumulators import _difference
from harvest_helpers import Reference, make_stream

V = 13


def all_accs():
    return [CorrelationAcc(), InputTokenAcc(), OutputProbAcc(), ReservoirAcc(k=3, context_tokens=2),
            TopActivationAcc(k=2, context_tokens=1)]


def new_loop(accs=None, **kw) -> HarvestLoop:
    return HarvestLoop(all_accs() if accs is None else accs, progress=False, seed=kw.pop("seed", 5), **kw)


def assert_same_components(a, b, rtol=1e-6):
    """Equal component by component; floats within rtol (float32 sums depend on where a stream was cut)."""
    assert [c.key for c in a] == [c.key for c in b]
    for x, y in zip(a, b):
        problem = _difference(x, y, rtol, 1e-6)
        assert problem is None, f"{x.key}: {problem}"


# -- run, save, load ------------------------------------------------------------------


def test_run_save_load_round_trip(tmp_path):
    batches = make_stream(0, 3, V=V)
    result = new_loop(decode=lambda t: f"<{t}>").run(batches)
    assert len(result) == 8 and result.keys()[:2] == ["h.0.mlp:0", "h.0.mlp:1"]
    comp = result["h.1.attn:out:2"]
    assert comp is result[7] and "h.1.attn:out:2" in result
    assert comp.examples and comp.examples[0].tokens[comp.examples[0].firing_offset].startswith("<")
    result.save(tmp_path / "harvest")
    again = load_harvest(tmp_path / "harvest")
    assert again.components == result.components
    assert again.config == result.config
    assert again.config.n_tokens == sum(int(b.mask.sum()) for b in batches)
    assert [a["type"] for a in again.config.accumulators][:2] == ["FiringStatsAcc", "CorrelationAcc"]
    with pytest.raises(KeyError, match=r"no component 'nope'; keys look like 'h.0.mlp:0'"):
        result["nope"]


def test_load_refuses_a_folder_that_is_not_a_harvest(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a harvest folder: expected config.json and components.jsonl"):
        load_harvest(tmp_path)


def test_load_checks_every_line_against_config_json(tmp_path):
    """A harvest folder is written whole, so a line count, key or order that differs from config.json is damage."""
    from autointerp.records import CorruptRunFile

    new_loop().run(make_stream(0, 2, V=V)).save(tmp_path / "h")
    comps = tmp_path / "h" / "components.jsonl"
    lines = comps.read_bytes().splitlines(keepends=True)
    comps.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    with pytest.raises(CorruptRunFile, match=r"components.jsonl, line 2: the record of 'h.0.mlp:2'; expected 'h.0.mlp:1'"):
        load_harvest(tmp_path / "h")
    comps.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(CorruptRunFile, match=r"line 8: the file ends after 7 of the 8 components config.json describes"):
        load_harvest(tmp_path / "h")
    comps.write_bytes(b"".join(lines))
    (tmp_path / "h" / "shared").mkdir(exist_ok=True)
    (tmp_path / "h" / "shared" / "x.json").write_text("{")
    # load_harvest is lazy (the store): a shared file is read, and refused, when its key is first asked for
    shared = load_harvest(tmp_path / "h").shared
    assert "x" in shared
    with pytest.raises(CorruptRunFile, match=r"x.json, line 1: not JSON"):
        shared["x"]


def test_components_that_never_fired_are_present(tmp_path):
    batches = make_stream(1, 2, V=V)
    for b in batches:
        b.activations["h.0.mlp"][..., 3] = 0.0  # component 3 never fires
    result = new_loop().run(batches)
    dead = result["h.0.mlp:3"]
    assert (dead.firing_count, dead.firing_rate, dead.mean_activation, dead.max_activation) == (0, 0.0, 0.0, 0.0)
    assert dead.examples == [] and dead.top_examples == []
    assert dead.input_tokens.top_pmi == [] and dead.correlations.top_pmi == []
    assert result.n_fired() == len(result) - 1
    result.save(tmp_path / "h")
    assert load_harvest(tmp_path / "h")["h.0.mlp:3"] == dead


def test_an_empty_stream_is_an_error():
    with pytest.raises(ValueError, match="the harvest saw no batches"):
        new_loop().run([])


def test_accumulator_names_must_be_distinct():
    with pytest.raises(ValueError, match=r"two accumulators write the same output name \['examples'\]"):
        HarvestLoop([ReservoirAcc(), ReservoirAcc(k=3)])


# -- state, checkpoints, resume, merge --------------------------------------------------


def test_state_dict_round_trip_and_checkpoint(tmp_path):
    batches = make_stream(2, 4, V=V)
    one = new_loop().run(batches)
    a = new_loop()
    for b in batches[:2]:
        a.update(b)
    a.save_checkpoint(tmp_path / "state.pt")
    b = new_loop()
    b.load_checkpoint(tmp_path / "state.pt")
    c = new_loop()
    c.load_state_dict(a.state_dict())
    for loop in (a, b, c):
        for batch in batches[2:]:
            loop.update(batch)
        assert_same_components(loop.finalize(), one)
        assert loop.n_batches == 4


def test_resume_after_a_crash_equals_one_pass(tmp_path):
    batches = make_stream(3, 5, V=V)
    one = new_loop().run(batches)
    ckpt = tmp_path / "harvest_state.pt"

    def crashing():
        for i, b in enumerate(batches):
            if i == 3:
                raise RuntimeError("killed")
            yield b

    with pytest.raises(RuntimeError, match="killed"):
        new_loop().run(crashing(), checkpoint=ckpt, checkpoint_every=2)
    resumed = new_loop()
    result = resumed.run(batches, checkpoint=ckpt, checkpoint_every=2, resume=True)
    assert resumed.n_batches == 5
    assert_same_components(result, one)
    # without resume the same call would count the first batches twice
    assert new_loop().run(batches, checkpoint=tmp_path / "other.pt", checkpoint_every=2).config.n_batches == 5


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    loop = new_loop()
    loop.update(make_stream(0, 1, V=V)[0])
    loop.save_checkpoint(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="the saved harvest state has accumulators"):
        new_loop([CorrelationAcc(top_k=3)]).load_checkpoint(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="the saved harvest state used threshold=0.0, seed=5"):
        new_loop(seed=6).load_checkpoint(tmp_path / "s.pt")


def test_merging_loops_of_different_spaces_is_refused():
    a, b = new_loop(), new_loop()
    a.update(make_stream(0, 1, V=V)[0])
    b.update(make_stream(0, 1, V=V, widths={"x": 2})[0])
    with pytest.raises(ValueError, match="cannot merge harvests of different component spaces"):
        a.merge(b)
    with pytest.raises(ValueError, match="cannot merge loops with accumulators"):
        a.merge(new_loop([CorrelationAcc()]))


# -- exact at scale --------------------------------------------------------------------

BIG = 1 << 24  # float32 stops counting exactly here


def _one_batch_loop(accs):
    batch = make_stream(4, 1, V=V)[0]
    loop = new_loop(accs)
    loop.update(batch)
    return loop, batch


def test_counts_stay_exact_past_2_pow_24():
    loop, batch = _one_batch_loop([CorrelationAcc(), InputTokenAcc()])
    fs, corr, inp = loop.accumulators
    ref = Reference([batch])
    # pretend 2^24 - 1 firings were already counted, then count one more batch
    state = loop.state_dict()
    for acc in state["accumulators"]:
        for name, t in acc["state"].items():
            if t.dtype == torch.int64 and t.dim() > 0:
                t.zero_().add_(BIG - 1)
    fresh = new_loop([CorrelationAcc(), InputTokenAcc()])
    fresh.load_state_dict(state)
    fresh.update(batch)
    _, corr, inp = fresh.accumulators
    fs = fresh.accumulators[0]
    assert fs.count.tolist() == (BIG - 1 + ref.firing_count()).tolist()
    assert torch.equal(corr.state_dict()["cofire"], torch.from_numpy(BIG - 1 + ref.cofire()))
    assert torch.equal(inp.joint, torch.from_numpy(BIG - 1 + ref.input_joint(V)))
    result = fresh.finalize()
    assert result[0].firing_count == BIG - 1 + int(ref.firing_count()[0])
    assert isinstance(result[0].firing_count, int)


def test_staged_float32_counts_are_folded_before_they_round():
    table = torch.zeros(1, 1, dtype=torch.int64)
    staged = StagedSum((1, 1), torch.device("cpu"), limit=BIG)
    staged.blocks[0][0, 0], staged.bound = BIG - 1, BIG - 1
    assert float(torch.tensor(BIG - 1 + 2, dtype=torch.float32)) == BIG  # what float32 alone would give
    staged.add(table, torch.tensor([0, 0]), torch.tensor([0, 1]), 2, lambda a, b: torch.ones(2, 1)[:, a:b])
    staged.flush_into(table)
    assert int(table) == BIG + 1


def test_chunked_blocked_and_staged_products_are_exact(monkeypatch):
    """Tiny chunk, flush and block limits exercise the >2^24-positions path and the
    column blocks on small data."""
    monkeypatch.setattr(correlation_module, "_EXACT_F32", 4)
    monkeypatch.setattr(sparse_module, "MIN_BLOCK_COLUMNS", 3)
    monkeypatch.setattr(sparse_module, "CPU_BLOCK_BYTES", 4 * 8 * 3)  # 3 columns of 8 rows
    monkeypatch.setattr(OutputProbAcc, "flush_firings", 2)
    batches = make_stream(5, 3, V=V, S=11)
    loop = new_loop([CorrelationAcc(), OutputProbAcc()])
    for b in batches:
        loop.update(b)
    corr, out = loop.accumulators[1:]
    assert corr._staged.limit == 4 and len(corr._staged.columns) == 3
    assert out._staged.columns == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 13)]
    ref = Reference(batches)
    np.testing.assert_array_equal(corr.state_dict()["cofire"].numpy(), ref.cofire())
    np.testing.assert_allclose(out.state_dict()["joint"].numpy(), ref.output_joint(), rtol=1e-6, atol=1e-7)


def test_probability_mass_does_not_drift_on_a_large_total():
    loop, batch = _one_batch_loop([OutputProbAcc()])
    ref = Reference([batch])
    state = loop.state_dict()
    out = state["accumulators"][1]["state"]
    out["joint"].fill_(1e9)  # ~1e9 tokens' worth of mass already summed
    out["token_mass"].fill_(1e9)
    fresh = new_loop([OutputProbAcc()])
    fresh.load_state_dict(state)
    fresh.update(batch)
    acc = fresh.accumulators[1]
    got = acc.state_dict()["joint"].numpy() - 1e9  # in float32, 1e9 + 0.3 == 1e9
    np.testing.assert_allclose(got, ref.output_joint(), atol=1e-6)
    np.testing.assert_allclose(acc.token_mass.numpy() - 1e9, ref.probs.sum(0), atol=1e-6)


# -- memory ----------------------------------------------------------------------------


def test_state_bytes_match_the_allocated_state():
    loop, _ = _one_batch_loop(all_accs())
    for acc in loop.accumulators:
        tensors = [t for t in acc.state_dict().values() if isinstance(t, torch.Tensor)]
        allocated = sum(t.numel() * t.element_size() for t in tensors)
        if hasattr(acc, "_staged"):
            allocated += acc._staged.nbytes
        assert acc.state_bytes(loop.ctx) == pytest.approx(allocated, abs=64), type(acc).__name__


def test_a_table_that_does_not_fit_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(harvest_module, "available_memory_bytes", lambda device: 10_000)
    accs = [CorrelationAcc(), ReservoirAcc()]
    loop = new_loop(accs)
    with pytest.raises(MemoryError, match=r"(?s)the harvest state needs .* on cpu but only 9.8 KiB is free "
                                          r"\(N=8 components, V=13\).*CorrelationAcc.*docs/memory.md"):
        loop.update(make_stream(0, 1, V=V)[0])
    assert not any(a.bound for a in loop.accumulators)
    assert loop.space is None


def test_a_huge_cofiring_table_is_refused_for_real():
    # 300k components: an int64 N x N table alone would be 720 GB
    batch = HarvestBatch(torch.zeros(1, 1, dtype=torch.int64), {"wide": torch.zeros(1, 1, 300_000)})
    with pytest.raises(MemoryError, match="CorrelationAcc"):
        new_loop([CorrelationAcc(mode="dense")]).update(batch)
    # mode="auto" (the default) switches to the bounded summary instead (tests/test_memory_budget.py)
    loop = new_loop([CorrelationAcc()])
    loop.check_memory(harvest_module.HarvestContext(harvest_module.ComponentSpace.from_activations(batch.activations), None,
                                                    torch.device("cpu"), 0, 0.0, None))
    assert loop.memory_plan["modes"] == {"correlations": "bounded"}


# -- a custom accumulator ------------------------------------------------------------


class ActivationHistogramAcc(TensorAccumulator):
    """How often each component's firing activation falls in each of ``bins`` equal bins of [0, max_value)."""

    name = "activation_histogram"

    def __init__(self, bins: int = 4, max_value: float = 1.0):
        self.bins, self.max_value = bins, max_value

    def config(self):
        return {"bins": self.bins, "max_value": self.max_value}

    def state_bytes(self, ctx):
        return 8 * ctx.n_components * self.bins

    def setup(self, ctx):
        self.add_state("hist", torch.zeros(ctx.n_components, self.bins, dtype=torch.int64))

    def update(self, batch):
        b = (batch.firing_act / self.max_value * self.bins).long().clamp(0, self.bins - 1)
        self.hist.view(-1).index_add_(0, batch.firing_comp * self.bins + b, torch.ones_like(b))

    def finalize(self) -> Mapping[int, list[int]]:
        return dict(enumerate(self.hist.cpu().tolist()))


def test_a_custom_accumulator_reaches_component_data(tmp_path):
    batches = make_stream(6, 3, V=V)
    result = new_loop([ActivationHistogramAcc(bins=4)]).run(batches)
    ref = Reference(batches)
    for c, comp in enumerate(result):
        acts = [a for _, _, cc, a in ref.firings if cc == c]
        want = np.bincount(np.minimum((np.array(acts, np.float32) * 4).astype(int), 3), minlength=4).tolist()
        assert comp.extras["activation_histogram"] == want
        assert sum(want) == comp.firing_count
    result.save(tmp_path / "h")
    assert load_harvest(tmp_path / "h")[3].extras == result[3].extras
    assert result.config.accumulators[1] == {"type": "ActivationHistogramAcc", "name": "activation_histogram",
                                             "prompt_section": None, "bins": 4, "max_value": 1.0}
    check_accumulator(ActivationHistogramAcc, batches)


# -- streaming finalize and save (issue 11 item 3) ------------------------------------


def test_streaming_save_writes_what_finalize_then_save_writes(tmp_path):
    stream = make_stream(0, 4, V=V)
    loop = new_loop(all_accs())
    for b in stream:
        loop.update(b)
    whole = loop.finalize()
    whole.save(tmp_path / "whole")
    lazy = loop.save(tmp_path / "streamed", block_size=3)
    assert lazy.lazy
    assert (tmp_path / "whole" / "components.jsonl").read_bytes() == \
        (tmp_path / "streamed" / "components.jsonl").read_bytes()
    assert lazy.shared == whole.shared
    assert [c.key for c in lazy] == whole.keys()
    seen = []
    loop.save(tmp_path / "t", block_size=5, transform=lambda c: seen.append(c.key))
    assert seen == whole.keys()


class BlockwiseAcc(Accumulator):
    """Builds big outputs (1,000 floats a component) only for the block asked for."""

    name = "big"

    def update(self, batch):
        pass

    def merge(self, other):
        return self

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def finalize(self):
        raise AssertionError("a streaming save asks for blocks, never the whole output")

    def finalize_block(self, lo, hi):
        return {i: [float(i)] * 1000 for i in range(lo, hi)}


def _peak_of_streaming_save(tmp_path, width):
    import tracemalloc

    batch = HarvestBatch(torch.zeros(1, 2, dtype=torch.int64), {"wide": torch.rand(1, 2, width)})
    loop = HarvestLoop([BlockwiseAcc()], progress=False)
    loop.update(batch)
    tracemalloc.start()
    loop.save(tmp_path / f"h{width}", block_size=64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_streaming_save_peaks_at_a_block_whatever_n(tmp_path):
    small, big = _peak_of_streaming_save(tmp_path, 500), _peak_of_streaming_save(tmp_path, 4000)
    # 8x the components and the output (all of it at once: 4000 lists of 1000 = 32 MB); what grows with N is
    # the index rows and bookkeeping of the writer, well under a kilobyte a component
    assert big - small < 500 * 3500, f"peak {small} B at N=500, {big} B at N=4000"
    assert big < 32_000_000 / 8


def test_an_accumulator_with_only_finalize_still_streams(tmp_path):
    stream = make_stream(0, 2, V=V)
    loop = new_loop([ActivationHistogramAcc()])
    for b in stream:
        loop.update(b)
    expected = loop.finalize()
    got = loop.save(tmp_path / "h", block_size=2)
    assert [c.extras["activation_histogram"] for c in got] == [c.extras["activation_histogram"] for c in expected]
    assert not hasattr(loop.accumulators[-1], "_finalized_all")  # released after the last block


def _blockwise_cases():
    from autointerp.accumulators import ActivationHistogramAcc as LogHistogramAcc
    from autointerp.accumulators import QuantileExampleAcc

    return {
        "reservoir": lambda: ReservoirAcc(k=3, context_tokens=2),
        "top_activations": lambda: TopActivationAcc(k=2, context_tokens=1),
        "input_tokens_dense": lambda: InputTokenAcc(top_k=4, mode="dense"),
        "input_tokens_bounded": lambda: InputTokenAcc(top_k=4, mode="bounded", summary_k=3),
        "output_probs_dense": lambda: OutputProbAcc(top_k=4, mode="dense"),
        "output_probs_bounded": lambda: OutputProbAcc(top_k=4, mode="bounded", summary_k=3),
        "correlation_dense": lambda: CorrelationAcc(top_k=4, mode="dense"),
        "correlation_bounded": lambda: CorrelationAcc(top_k=4, mode="bounded", summary_k=3),
        "histogram": lambda: LogHistogramAcc(bins_per_octave=2, n_octaves=6),
        "quantile_examples": lambda: QuantileExampleAcc(n_quantiles=3, k=2, context_tokens=2),
    }


@pytest.mark.parametrize("case", sorted(_blockwise_cases()))
def test_each_accumulator_finalizes_blockwise_to_the_same_bytes(tmp_path, case, monkeypatch):
    """Every built-in accumulator builds a block of outputs from that block's rows (its own
    `finalize_block`, never the whole `finalize`), and the streamed components.jsonl is byte for
    byte the one finalize().save writes; two layers at different thresholds, block sizes that cut
    a layer and one that is not a divisor of N."""
    make = _blockwise_cases()[case]
    stream = make_stream(3, 3, V=V, widths={"a": 5, "b": 6})
    loop = HarvestLoop([make()], progress=False, seed=7, threshold={"a": 0.0, "b": 0.2})
    for b in stream:
        loop.update(b)
    loop.finalize().save(tmp_path / "whole")
    want = (tmp_path / "whole" / "components.jsonl").read_bytes()
    acc = loop.accumulators[-1]
    assert type(acc).finalize_block is not Accumulator.finalize_block
    monkeypatch.setattr(type(acc), "finalize", lambda self: pytest.fail("the streaming save ran finalize()"))
    for block in (1, 4, 11):
        loop.save(tmp_path / f"b{block}", block_size=block)
        assert (tmp_path / f"b{block}" / "components.jsonl").read_bytes() == want, f"block_size={block}"
    assert not any(k.startswith("_finalize") for k in vars(acc))  # released after the last block
