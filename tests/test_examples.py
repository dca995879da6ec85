"""Every script in examples/ runs to the end (in a temporary folder, without an API key)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runpy.run_path(str(script), run_name="__main__")
    assert "HarvestResult(" in capsys.readouterr().out


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"quickstart.py", "sae_on_hf_model.py"}
