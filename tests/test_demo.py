"""``autointerp demo``: the embedded model, harvested over its bundled text, in under 60 seconds."""

from __future__ import annotations

import time

import pytest

from autointerp.adapters.demo import DemoModel, demo_dir
from autointerp.demo import DEMO_STAGES, run_demo
from autointerp.harvest import load_harvest


def test_demo_model_is_small_and_consistent():
    files = {p.name: p.stat().st_size for p in demo_dir().iterdir() if p.is_file()}
    assert {"model.pt", "config.json", "tokenizer.json", "demo_text.txt"} <= set(files)
    assert sum(files.values()) <= 10 * 1024 * 1024
    demo = DemoModel()
    assert demo.tokenizer.get_vocab_size() == demo.cfg.vocab_size
    assert demo.meta["validation_loss"] is not None
    ids = demo.encode("def main():\n    return None")
    assert "".join(demo.decode(i) for i in ids) == "def main():\n    return None"


@pytest.mark.timeout(120)
def test_full_demo_under_60_seconds(tmp_path, capsys):
    t0 = time.perf_counter()
    run = run_demo(out=tmp_path, progress=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60, f"the demo took {elapsed:.1f}s"
    harvest = load_harvest(tmp_path / "demo" / "harvest")
    assert len(harvest) == run.harvest.config.n_components == 2048
    assert harvest.n_fired() > 1000
    out = capsys.readouterr().out
    assert str(tmp_path / "demo" / "harvest") in out and "top tokens" in out
    assert run.timings["harvest"] < 60


def test_stages_run_in_order_and_missing_ones_are_skipped(tmp_path):
    seen = []
    lines = []
    run_demo(out=tmp_path, stages=[("one", lambda r: seen.append(("one", r.paths.run_id))),
                                   ("later", "autointerp.no_such_module:stage"),
                                   ("two", lambda r: seen.append(("two", r.harvest)))], log=lines.append)
    assert seen == [("one", "demo"), ("two", None)]
    assert any("later: not available" in line for line in lines)
    assert DEMO_STAGES[0][0] == "harvest"
