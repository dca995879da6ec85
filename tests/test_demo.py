"""``autointerp demo``: the embedded model through the whole pipeline (harvest, interpret, score, report).

How long it takes is measured by ``benchmarks/demo.py``, not asserted here.
"""

from __future__ import annotations

import pytest

from autointerp.adapters.demo import DemoModel, demo_dir
from autointerp.demo import DEMO_STAGES, run_demo
from autointerp.harvest import load_harvest
from autointerp.interpret import load_interpretations


def test_demo_model_is_small_and_consistent():
    files = {p.name: p.stat().st_size for p in demo_dir().iterdir() if p.is_file()}
    assert {"model.pt", "config.json", "tokenizer.json", "demo_text.txt"} <= set(files)
    assert sum(files.values()) <= 10 * 1024 * 1024
    demo = DemoModel()
    assert demo.tokenizer.get_vocab_size() == demo.cfg.vocab_size
    assert demo.meta["validation_loss"] is not None
    ids = demo.encode("def main():\n    return None")
    assert "".join(demo.decode(i) for i in ids) == "def main():\n    return None"


@pytest.mark.timeout(300)
def test_full_demo_runs_every_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    run = run_demo(out=tmp_path, progress=False)
    assert [name for name, _ in DEMO_STAGES] == ["harvest", "interpret", "score", "report"]
    assert set(run.timings) == {"harvest", "interpret", "score", "report", "total"}
    root = tmp_path / "demo"
    harvest = load_harvest(root / "harvest")
    assert len(harvest) == run.harvest.config.n_components == 2048
    assert harvest.n_fired() > 1000
    labels = load_interpretations(root / "interpretations" / "results.jsonl")
    assert len(labels) == harvest.n_fired()  # offline baseline labels every component that fired
    for scorer in ("detection", "fuzzing", "simulation", "intruder"):
        assert (root / "scores" / f"{scorer}.jsonl").stat().st_size > 0
    assert (root / "report" / "index.html").is_file()
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert str(root / "harvest") in out and "top tokens" in out
    assert "offline token-lookup baseline" in out and "BASELINE" in out  # says plainly what judged
    assert str((root / "report" / "index.html").resolve()) in out


def test_stages_run_in_order_and_missing_ones_are_skipped(tmp_path):
    seen = []
    lines = []
    run_demo(out=tmp_path, stages=[("one", lambda r: seen.append(("one", r.paths.run_id))),
                                   ("later", "autointerp.no_such_module:stage"),
                                   ("two", lambda r: seen.append(("two", r.harvest)))], log=lines.append)
    assert seen == [("one", "demo"), ("two", None)]
    assert any("later: not available" in line for line in lines)
    assert DEMO_STAGES[0][0] == "harvest"
