"""The first code block of docs/custom_accumulators.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_accumulators.md"


def test_the_histogram_example_runs(capsys):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    result = namespace["result"]
    hist = result["h.0.mlp:3"].extras["activation_histogram"]
    assert len(hist) == 4 and sum(hist) == result["h.0.mlp:3"].firing_count > 0
    assert capsys.readouterr().out.strip() == str(hist)
