"""The report's index: one table of rows per layer, with percentiles and a rate histogram.

The index is what the page loads at start (``data/layer-<i>.js``): per
component its key, label, firing rate, chunk and headline score of each scorer;
the evidence waits in the chunks. Rows arrive a chunk at a time while the
writer streams the run.
"""

from __future__ import annotations

import math
from typing import Any

from autointerp.report.numbers import num
from autointerp.report.run_data import RunData
from autointerp.report.score_sources import headline, score_value

HIST_BINS = 24

#: one index row per component: (key, layer, index, firing rate, firing count)
IndexRow = tuple[str, str, Any, float, int]



def percentiles(rates: list[float]) -> list[float]:
    """Mid-rank percentile of each rate within its layer (0-100)."""
    n = len(rates)
    order = sorted(range(n), key=lambda i: rates[i])
    pct = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and rates[order[j + 1]] == rates[order[i]]:
            j += 1
        mid = (i + j) / 2 + 0.5
        for k in range(i, j + 1):
            pct[order[k]] = round(100.0 * mid / n, 1)
        i = j + 1
    return pct


def histogram(rates: list[float]) -> dict[str, Any]:
    """Histogram of log10(firing rate) over the components that fired."""
    fired = [math.log10(r) for r in rates if r > 0]
    dead = len(rates) - len(fired)
    if not fired:
        return {"lo": 0, "hi": 0, "counts": [], "dead": dead}
    lo, hi = min(fired), max(fired)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * HIST_BINS
    for v in fired:
        b = min(HIST_BINS - 1, int((v - lo) / (hi - lo) * HIST_BINS))
        counts[b] += 1
    return {"lo": round(lo, 4), "hi": round(hi, 4), "counts": counts, "dead": dead}


class LayerRows:
    """One layer's index rows (key, label, rate, scores...), columns as lists."""

    def __init__(self, li: int, name: str, scorers: list[str]):
        self.li, self.name, self.scorers = li, name, scorers
        self.columns: dict[str, Any] = {
            "keys": [], "index": [], "label": [], "conf": [], "rate": [], "count": [], "ch": [], "off": [],
            "scores": {s: [] for s in scorers},
        }
        self.rates: list[float] = []

    def add(self, row: IndexRow, chunk: int, offset: int, data: RunData) -> bool:
        """Add a component; True when it has a label."""
        key, _, index, rate, count = row
        interp = data.interpretations.get(key)
        col = self.columns
        col["keys"].append(key)
        col["index"].append(index)
        col["label"].append(interp.label if interp else None)
        col["conf"].append(interp.confidence if interp else None)
        col["rate"].append(num(rate, 6))
        col["count"].append(count)
        col["ch"].append(chunk)
        col["off"].append(offset)
        self.rates.append(rate)
        for s in self.scorers:
            col["scores"][s].append(num(score_value(headline(data.scores[s].get(key, {})))))
        return interp is not None

    def finished(self) -> dict[str, Any]:
        """The columns with each component's percentile in the layer (call once, at the end)."""
        return {**self.columns, "pct": percentiles(self.rates)}

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self.rates), "hist": histogram(self.rates)}


class LayerIndex:
    """The index rows of every layer, in the harvest's layer order (others as they come)."""

    def __init__(self, data: RunData):
        self.data = data
        self._layers: dict[str, LayerRows] = {}
        for spec in data.config.get("layers") or []:
            self._layer(spec["name"])
        self.n_labeled = 0

    def _layer(self, name: str) -> LayerRows:
        if name not in self._layers:
            self._layers[name] = LayerRows(len(self._layers), name, self.data.scorers)
        return self._layers[name]

    def add(self, chunk: int, rows: list[IndexRow]) -> None:
        for offset, row in enumerate(rows):
            self.n_labeled += self._layer(row[1]).add(row, chunk, offset, self.data)

    def layers(self) -> list[LayerRows]:
        return list(self._layers.values())
