"""Every script in examples/ runs to the end (in a temporary folder, without an API key)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ALL_EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
#: run by their own test below, which also checks what they wrote
OWN_TEST = {"hf_encoder_end_to_end.py"}
EXAMPLES = [p for p in ALL_EXAMPLES if p.name not in OWN_TEST]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runpy.run_path(str(script), run_name="__main__")
    assert "HarvestResult(" in capsys.readouterr().out


def test_there_are_examples():
    assert {p.name for p in ALL_EXAMPLES} >= {"quickstart.py", "sae_on_hf_model.py", "hf_encoder_end_to_end.py"}


def test_hf_encoder_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """A BERT built from a config and a WordPiece tokenizer trained in the script (no download):
    probe -> per-layer thresholds -> harvest (base model, no LM head) -> offline labels -> scores -> report."""
    import json

    from autointerp.harvest import load_harvest
    from autointerp.interpret import Interpreter
    from autointerp.llm.offline import OfflineBackend
    from autointerp.paths import RunPaths

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("AUTOINTERP_EXAMPLE_OUT", str(tmp_path / "out"))
    runpy.run_path(str(ALL_EXAMPLES[0].parent / "hf_encoder_end_to_end.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "HarvestResult(" in out and "suggested: --threshold" in out
    assert "no trained causal LM head" in out  # loaded as the encoder it is
    paths = RunPaths.of("tiny-bert", tmp_path / "out")
    harvest = load_harvest(paths.harvest)
    cfg = harvest.config
    assert cfg.tokenizer_kind == "wordpiece" and cfg.model["class"] == "BertModel"
    assert set(cfg.layer_thresholds) == {l.name for l in cfg.layers} and min(cfg.layer_thresholds.values()) > 0
    labels = [json.loads(l) for l in paths.interpretation_results.read_text().splitlines()]
    assert len(labels) == 12 and all(r["label"] for r in labels)
    scored = [json.loads(l) for l in (paths.scores / "detection.jsonl").read_text().splitlines()]
    assert any(r["score"] is not None for r in scored)
    assert (paths.report / "index.html").is_file()
    # the labeller's examples read as text: WordPiece pieces joined, words spaced
    comp = harvest[labels[0]["component_key"]]
    prompt = Interpreter(OfflineBackend(), progress=False).render(comp, harvest)["prompt"]
    examples = [l for l in prompt.splitlines() if "<<" in l]
    assert examples and not any("##" in l for l in examples)
    assert any(" " in l.split(". ", 1)[-1] for l in examples)
