"""The README's notebook examples run as written (so the first code a user copies works)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## In a notebook"):]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    scope: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), scope)
    result = scope["result"]
    assert len(result) == 2048 and result.n_fired() > 0
    assert (tmp_path / ".data/autointerp/my_run/harvest/components.jsonl").is_file()
    assert scope["again"].components == result.components
    assert "blocks.1.mlp.act:149" in capsys.readouterr().out
    assert len(scope["labels"]) == result.n_fired()
    assert scope["report"].results  # scored, with the token-match baseline judge
    assert (tmp_path / ".data/autointerp/my_run/report/index.html").is_file()
