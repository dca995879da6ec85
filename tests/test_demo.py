"""``autointerp demo``: the embedded model through the whole pipeline (harvest, interpret, score, report).

How long it takes is measured by ``benchmarks/demo.py``, not asserted here.
"""

from __future__ import annotations

import pytest

from autointerp.adapters.demo import DemoModel, demo_dir
from autointerp.demo import demo_stages, harvest_stage, run_demo
from autointerp.harvest import load_harvest
from autointerp.interpret import load_interpretations
from autointerp.paths import RunPaths


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
    assert [name for name, _ in demo_stages()] == ["harvest", "interpret", "score", "report"]
    assert set(run.timings) == {"harvest", "interpret", "score", "report", "total"}
    root = tmp_path / "demo"
    paths = RunPaths(root)
    harvest = load_harvest(paths.harvest)
    assert len(harvest) == run.harvest.config.n_components == 2048
    assert harvest.n_fired() > 1000
    labels = load_interpretations(paths)
    assert len(labels) == harvest.n_fired()  # offline baseline labels every component that fired
    for scorer in ("detection", "fuzzing", "simulation", "intruder"):
        assert paths.score_file(scorer).stat().st_size > 0
    assert (paths.report / "index.html").is_file()
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert str(root / "harvest") in out and "top tokens" in out
    assert "offline token-lookup baseline" in out and "BASELINE" in out  # says plainly what judged
    assert str((root / "report" / "index.html").resolve()) in out


def test_stages_are_functions_run_in_order(tmp_path):
    seen = []
    lines = []
    run = run_demo(out=tmp_path, stages=[("one", lambda r: seen.append(("one", r.paths.run_id))),
                                         ["two", lambda r: seen.append(("two", r.harvest))]], log=lines.append)
    assert seen == [("one", "demo"), ("two", None)]
    assert set(run.timings) == {"one", "two", "total"} and "demo done" in lines[-1]
    assert demo_stages()[0] == ("harvest", harvest_stage)
    # a stage named by a string (the old form) is refused before any stage runs
    with pytest.raises(TypeError, match=r"stages\[1\] must be a \(name, function\) pair.*'autointerp.x:stage'"):
        run_demo(out=tmp_path, stages=[("one", seen.append), ("later", "autointerp.x:stage")], log=None)
    assert len(seen) == 2
