"""The numbers scorers report: binary classification metrics, correlation, and confidence intervals.

Pure functions on plain lists, so each is checked against a reference in tests.
Undefined values (precision with no predicted positives, correlation of a
constant) are 0.0, not NaN: a label that never predicts a firing has no
precision worth crediting, and our JSONL files refuse NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def binary_metrics(truth: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
    """Confusion counts, precision, recall, F1, accuracy and balanced accuracy.

    Balanced accuracy is the mean of the true-positive and true-negative rates, so
    a judge that answers at random (or always "yes") lands at 0.5 whatever the mix.
    When one class is absent it is the rate of the class that is present.

    >>> binary_metrics([True, True, False, False], [True, False, False, False])["balanced_accuracy"]
    0.75
    """
    if len(truth) != len(pred):
        raise ValueError(f"truth has {len(truth)} items but pred has {len(pred)}")
    tp = sum(1 for t, p in zip(truth, pred) if t and p)
    fp = sum(1 for t, p in zip(truth, pred) if not t and p)
    fn = sum(1 for t, p in zip(truth, pred) if t and not p)
    tn = sum(1 for t, p in zip(truth, pred) if not t and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    rates = [r for r, n in ((recall, tp + fn), (tnr, tn + fp)) if n]
    balanced = sum(rates) / len(rates) if rates else 0.0
    n = len(truth)
    return {
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "tn": float(tn),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "specificity": tnr,
        "accuracy": (tp + tn) / n if n else 0.0,
        "balanced_accuracy": balanced,
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either side is constant (undefined)."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} items but y has {len(y)}")
    n = len(x)
    if n < 2:
        return 0.0
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


# two-sided 95% Student-t quantiles for 1..30 degrees of freedom
_T95 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]  # fmt: skip


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    if df <= 30:
        return _T95[df - 1]
    # a smooth approach to 1.96 (error < 0.002 for df > 30)
    return 1.959964 + 2.4 / df


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval (Student t over components): ``(mean, lo, hi)``.

    With one value the interval is ``(mean, mean)`` collapsed to the value; with
    none, all three are NaN (the caller prints "n/a").
    """
    n = len(values)
    if n == 0:
        nan = float("nan")
        return nan, nan, nan
    m = sum(values) / n
    if n == 1:
        return m, m, m
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    half = t95(n - 1) * math.sqrt(var / n)
    return m, m - half, m + half
