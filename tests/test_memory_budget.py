"""HarvestLoop(memory_budget=...): tables that do not fit switch to their bounded mode before allocating."""

from __future__ import annotations

import logging

import pytest

from autointerp import CorrelationAcc, HarvestLoop, InputTokenAcc, OutputProbAcc, ReservoirAcc
from autointerp.harvest import parse_bytes
from harvest_helpers import make_stream

V = 500
WIDTHS = {"a": 300, "b": 300}  # N = 600: N x N = 360k cells, N x V = 300k cells


def batches(n=2):
    return make_stream(0, n, V=V, widths=WIDTHS)


def plan_for(accs, budget):
    loop = HarvestLoop(accs, memory_budget=budget, progress=False, vocab_size=V)
    b = batches()
    loop.update(b[0])
    return loop


def dense_bytes(acc_cls, ctx):
    return acc_cls(mode="dense").state_bytes(ctx)


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("1.5GB") == 1_500_000_000
    assert parse_bytes(1024) == 1024
    for bad in ("4 GiBs", "", "-1GiB", 0, True):
        with pytest.raises((ValueError, TypeError), match="memory_budget"):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="memory_budget must be bytes or a string like '4GiB'"):
        HarvestLoop([], memory_budget="lots")


def test_an_ample_budget_keeps_every_table_dense():
    loop = plan_for([CorrelationAcc(), InputTokenAcc(), OutputProbAcc()], "1GiB")
    assert loop.memory_plan["modes"] == {"correlations": "dense", "input_tokens": "dense", "output_tokens": "dense"}
    assert all(a.mode_used == "dense" for a in loop.accumulators if hasattr(a, "mode_used"))


def test_the_largest_table_switches_first_and_the_rest_stay_dense(caplog, monkeypatch):
    # at N = 600 a bounded merge's working memory (tens of MB, counted by the next test) is more than
    # any dense table here; this test is about the order of the switch, so it leaves the merge out
    from autointerp.accumulators._modes import TableModeStates

    monkeypatch.setattr(TableModeStates, "merge_bytes", lambda self, ctx: 0)
    probe = plan_for([CorrelationAcc(), InputTokenAcc(), OutputProbAcc()], "1GiB")
    table = dict(probe.memory_table(probe.ctx))
    plan = probe.memory_plan
    # room for everything except the co-firing table (the largest), which must go bounded
    corr = CorrelationAcc(mode="bounded")
    corr.choose_mode(probe.ctx, 0)
    budget = plan["batch"] + plan["finalize"] + sum(table.values()) - table["CorrelationAcc"] \
        + corr.state_bytes(probe.ctx) + 1024
    with caplog.at_level(logging.INFO, logger="autointerp.harvest"):
        loop = plan_for([CorrelationAcc(), InputTokenAcc(), OutputProbAcc()], budget)
    assert loop.memory_plan["modes"] == {"correlations": "bounded", "input_tokens": "dense", "output_tokens": "dense"}
    assert "correlations=bounded" in caplog.text
    loop.update(batches()[1])
    cfg = {a["name"]: a for a in loop.config().accumulators}
    assert cfg["correlations"]["mode_used"] == "bounded" and cfg["input_tokens"]["mode_used"] == "dense"
    result = loop.finalize()
    assert len(result) == 600


def test_a_budget_below_even_the_bounded_modes_is_refused_before_allocating():
    loop = HarvestLoop([CorrelationAcc(), InputTokenAcc(), ReservoirAcc()], memory_budget="64KiB", progress=False,
                       vocab_size=V)
    with pytest.raises(MemoryError, match=r"(?s)the harvest state needs .* but the memory budget is 64.0 KiB.*"
                                          r"Table modes, bounded where that helps: .*docs/memory.md.*"
                                          r"give the bounded tables a smaller summary_k"):
        loop.update(batches()[0])
    assert loop.space is None and not any(a.bound for a in loop.accumulators)


def test_an_explicit_mode_is_kept_whatever_the_budget():
    loop = plan_for([CorrelationAcc(mode="dense"), InputTokenAcc(mode="bounded")], "1GiB")
    assert loop.memory_plan["modes"] == {"correlations": "dense", "input_tokens": "bounded"}


def test_the_budget_counts_the_first_batchs_temporaries():
    probe = plan_for([ReservoirAcc()], "1GiB")
    plan = probe.memory_plan
    assert plan["batch"] > 0
    # the state alone fits, the state and the per-batch temporaries do not
    with pytest.raises(MemoryError, match="per-batch"):
        plan_for([ReservoirAcc()], plan["state"] + plan["finalize"] + plan["batch"] // 2)


def test_the_budget_counts_the_bounded_merge_working_memory(monkeypatch):
    """A bounded table merges its pending batches now and then; the plan counts that merge's working
    memory (the largest table's: they merge one at a time), and a budget that fits the state but not
    the merge is refused."""
    import autointerp.accumulators._modes as modes

    monkeypatch.setattr(modes, "MAX_BUFFER_SCALE", 1)  # the buffers as they are, not scaled into the room
    probe = plan_for([CorrelationAcc(mode="bounded"), InputTokenAcc(mode="bounded")], "1GiB")
    plan = probe.memory_plan
    corr, inp = (a for a in probe.accumulators if hasattr(a, "merge_bytes"))
    assert plan["merge"] == max(corr.merge_bytes(probe.ctx), inp.merge_bytes(probe.ctx)) > 0
    assert CorrelationAcc(mode="dense").merge_bytes(probe.ctx) == 0
    with pytest.raises(MemoryError, match="per-batch \\+ finalize \\+ merge"):
        plan_for([CorrelationAcc(mode="bounded"), InputTokenAcc(mode="bounded")],
                 plan["state"] + plan["batch"] + plan["finalize"] + plan["merge"] // 2)


def test_bounded_buffers_grow_into_the_budgets_room_widest_first(caplog):
    """Where the plan leaves room, the bounded tables' buffers of pending batches are doubled (a merge's
    pass over rows x width is then paid half as often), the widest table first, up to
    MAX_BUFFER_SCALE, while the whole plan stays within _BUFFER_ROOM of the budget; the scales are in
    ``memory_plan["buffers"]`` and the log, and each table merges when its scaled buffer is full."""
    from autointerp.accumulators._modes import MAX_BUFFER_SCALE
    from autointerp.harvest import _BUFFER_ROOM

    accs = lambda: [CorrelationAcc(mode="bounded", summary_k=64), InputTokenAcc(mode="bounded", summary_k=64),  # noqa: E731
                    ReservoirAcc()]
    with caplog.at_level(logging.INFO, logger="autointerp.harvest"):
        roomy = plan_for(accs(), "1GiB")
    assert roomy.memory_plan["buffers"] == {"correlations": MAX_BUFFER_SCALE, "input_tokens": MAX_BUFFER_SCALE}
    assert f"correlations=bounded (buffer x{MAX_BUFFER_SCALE})" in caplog.text
    corr = next(a for a in roomy.accumulators if a.name == "correlations")
    assert corr._pending_capacity(600) == 600 * 64 * MAX_BUFFER_SCALE

    # a budget with room for exactly one doubling: co-firing (N = 600 columns) is wider than input tokens (V = 500)
    def plan_total(scales):
        loop = plan_for(accs(), "1GiB")
        by_name = {a.name: a for a in loop.accumulators}
        by_name["correlations"].buffer_scale, by_name["input_tokens"].buffer_scale = scales
        p = loop.memory_plan
        return sum(b for _, b in loop.memory_table(loop.ctx)) + p["batch"] + p["finalize"] + loop.merge_bytes(loop.ctx)

    one, two = plan_total((1, 1)), plan_total((2, 1))
    assert two > one
    budget = int(two / _BUFFER_ROOM) + 1
    assert plan_total((2, 2)) > _BUFFER_ROOM * budget  # the second doubling does not fit
    tight = plan_for(accs(), budget)
    assert tight.memory_plan["buffers"] == {"correlations": 2, "input_tokens": 1}
    # where even the first doubling does not fit, every buffer stays as it is
    assert plan_for(accs(), int(one / _BUFFER_ROOM) + 1).memory_plan["buffers"] == {"correlations": 1, "input_tokens": 1}
