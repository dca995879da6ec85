"""Two label sets of one run side by side: which labels score better, by how much, and where.

``compare_label_sets(run, "A", "B")`` reads both sets' scores (through
`autointerp.records`, the one reader) and, per scorer, over the components
*both* sets labelled and scored (a skip in either set leaves the component out):

* the paired difference ``score_A - score_B`` of each component, its mean and a
  95% confidence interval by the **paired bootstrap**: the components are
  resampled with replacement `DEFAULT_RESAMPLES` (10,000) times, the same draw
  for both sets, and the interval is the 2.5th and 97.5th percentile of the
  resampled mean differences (`bootstrap_mean_ci`; fixed ``seed``, so the same
  scores give the same interval);
* wins / ties / losses: components where A scores higher, the same (within
  `TIE_TOLERANCE`), lower;
* the components where the two sets disagree most (largest ``|difference|``),
  with both labels.

Scorers that judge the component rather than a label (``intruder``, label source
``"none"``) are the same for every label set and are left out with a reason.

>>> cmp = compare_label_sets("demo", "default", "sonnet")      # doctest: +SKIP
>>> print(cmp.table())                                          # doctest: +SKIP
>>> cmp["detection"].mean_diff, cmp["detection"].ci             # doctest: +SKIP
(0.21, (0.15, 0.27))

This module sits beside `records` (it reads only through it and knows no
scorer), so the report and the command line use it without importing the scorers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, field

from autointerp.paths import RunPaths, check_label_set
from autointerp.records import Scores, read_scores

if TYPE_CHECKING:  # numpy loads when a comparison runs: `autointerp --help` reads this module's defaults
    import numpy as np

__all__ = [
    "DEFAULT_RESAMPLES", "Disagreement", "LabelSetComparison", "ScorerComparison", "bootstrap_mean_ci",
    "compare_label_sets", "compare_scores",
]

#: bootstrap resamples of the components (docs/scoring.md; cost in docs/benchmarks.md)
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
#: components shown per scorer where the sets disagree most
DEFAULT_TOP = 10
#: two scores closer than this are a tie
TIE_TOLERANCE = 1e-9
#: resampled means computed per block, so memory stays at about this many indices whatever the run's size
_BLOCK_ELEMENTS = 4_000_000


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (paired differences).

    ``n_resamples`` samples of ``len(values)`` indices drawn with replacement
    (numpy's ``default_rng(seed)``), the mean of each, and the ``(1 - level) / 2``
    and ``(1 + level) / 2`` quantiles of those means. One value: ``(v, v)``; none:
    ``(nan, nan)``.
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be a flat list of numbers, got an array of shape {x.shape}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a whole number >= 1, got {n_resamples!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be a number between 0 and 1 (0.95 for a 95% interval), got {level!r}")
    n = len(x)
    if n == 0:
        return (math.nan, math.nan)
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite numbers (a score of NaN or infinity cannot be compared)")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for lo in range(0, n_resamples, block):
        hi = min(n_resamples, lo + block)
        idx = rng.integers(0, n, size=(hi - lo, n), dtype=np.int32 if n < 2**31 else np.int64)
        means[lo:hi] = x[idx].mean(axis=1)
    a = (1 - level) / 2
    q = np.quantile(means, [a, 1 - a])
    return (float(q[0]), float(q[1]))


@define
class Disagreement:
    """One component where the two sets' scores differ: both labels and both scores."""

    key: str
    label_a: str
    label_b: str
    score_a: float
    score_b: float

    @property
    def diff(self) -> float:
        return self.score_a - self.score_b


@define
class ScorerComparison:
    """One scorer's paired comparison of set A with set B (``diff = A - B``)."""

    scorer: str
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    disagreements: list[Disagreement] = field(factory=list)
    #: how many components each set scored for this scorer (the paired ones are those in both)
    n_a: int = 0
    n_b: int = 0

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of zero: the difference is not chance at this level."""
        return self.n > 0 and (self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict(self) -> str:
        if self.n == 0:
            return "no component scored in both sets"
        if not self.excludes_zero:
            return "no clear difference (the interval contains 0)"
        return "A ahead" if self.mean_diff > 0 else "B ahead"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer, "n": self.n, "n_a": self.n_a, "n_b": self.n_b,
            "mean_a": _num(self.mean_a), "mean_b": _num(self.mean_b), "mean_diff": _num(self.mean_diff),
            "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high), "excludes_zero": self.excludes_zero,
            "wins": self.wins, "ties": self.ties, "losses": self.losses,
            "disagreements": [
                {"key": d.key, "label_a": d.label_a, "label_b": d.label_b, "score_a": d.score_a, "score_b": d.score_b,
                 "diff": d.diff} for d in self.disagreements
            ],
        }  # fmt: skip


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x


@define
class LabelSetComparison:
    """What `compare_label_sets` found: one `ScorerComparison` per scorer compared, and why others were not.

    ``comparison["detection"]`` is that scorer's; ``table()`` the text the command
    line prints; in a notebook it shows itself as a table.
    """

    run: str
    set_a: str
    set_b: str
    scorers: list[ScorerComparison]
    skipped: dict[str, str] = field(factory=dict)
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL

    def __getitem__(self, scorer: str) -> ScorerComparison:
        for s in self.scorers:
            if s.scorer == scorer:
                return s
        raise KeyError(f"no comparison for scorer {scorer!r}; compared: {[s.scorer for s in self.scorers]}"
                       + (f", left out: {self.skipped}" if self.skipped else ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "set_a": self.set_a, "set_b": self.set_b, "n_resamples": self.n_resamples,
            "seed": self.seed, "level": self.level, "scorers": [s.to_dict() for s in self.scorers],
            "skipped": dict(self.skipped),
        }  # fmt: skip

    def table(self, top: int | None = 5, text: Any = None) -> str:
        """The comparison as plain text; ``top`` disagreements per scorer (None: all kept);
        ``text`` makes labels printable (the command line passes `autointerp.terminal.terminal_text`)."""
        show = text or (lambda s, n=60: s if len(s) <= n else s[: n - 1] + "…")
        pct = f"{round(100 * self.level)}%"
        lines = [
            f"label set A = {self.set_a!r} vs B = {self.set_b!r} (run {self.run}): paired difference A - B over the components "
            f"both sets scored; {pct} CI by paired bootstrap ({self.n_resamples:,} resamples, seed {self.seed})",
        ]
        head = ("scorer", "n", "A", "B", f"A - B [{pct} CI]", "wins/ties/losses", "verdict")
        rows = [head]
        for s in self.scorers:
            rows.append((s.scorer, str(s.n), _f(s.mean_a), _f(s.mean_b),
                         f"{_f(s.mean_diff, sign=True)} [{_f(s.ci_low, sign=True)}, {_f(s.ci_high, sign=True)}]",
                         f"{s.wins}/{s.ties}/{s.losses}", s.verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for j, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        for name, why in self.skipped.items():
            lines.append(f"{name}: not compared ({why})")
        for s in self.scorers:
            shown = s.disagreements if top is None else s.disagreements[:top]
            if not shown:
                continue
            lines.append(f"\n{s.scorer}: where the sets disagree most (A - B)")
            for d in shown:
                lines.append(f"  {show(d.key, 60)}  {_f(d.diff, sign=True)}  A {_f(d.score_a)} {show(d.label_a, 60)!r}  "
                             f"B {_f(d.score_b)} {show(d.label_b, 60)!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        from autointerp.report.tokens import escape_html

        e = escape_html
        pct = f"{round(100 * self.level)}%"
        rows = "".join(
            f"<tr><td>{e(s.scorer)}</td><td>{s.n}</td><td>{_f(s.mean_a)}</td><td>{_f(s.mean_b)}</td>"
            f"<td>{_f(s.mean_diff, sign=True)} [{_f(s.ci_low, sign=True)}, {_f(s.ci_high, sign=True)}]</td>"
            f"<td>{s.wins}/{s.ties}/{s.losses}</td><td>{e(s.verdict)}</td></tr>"
            for s in self.scorers
        )
        dis = "".join(
            f"<tr><td>{e(s.scorer)}</td><td>{e(d.key)}</td><td>{_f(d.diff, sign=True)}</td>"
            f"<td>{_f(d.score_a)} {e(d.label_a)}</td><td>{_f(d.score_b)} {e(d.label_b)}</td></tr>"
            for s in self.scorers for d in s.disagreements[:5]
        )
        return (
            f"<div><p>A = <b>{e(self.set_a)}</b> vs B = <b>{e(self.set_b)}</b>: paired difference A - B, {pct} CI by "
            f"paired bootstrap ({self.n_resamples:,} resamples, seed {self.seed})</p>"
            "<table><tr><th>scorer</th><th>n</th><th>A</th><th>B</th><th>A - B [CI]</th><th>wins/ties/losses</th>"
            f"<th>verdict</th></tr>{rows}</table>"
            + (f"<p>Where they disagree most</p><table><tr><th>scorer</th><th>component</th><th>A - B</th><th>A</th>"
               f"<th>B</th></tr>{dis}</table>" if dis else "")
            + "</div>"
        )


def _f(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _label_scores(scores: Scores, scorer: str) -> dict[str, float]:
    """``{component: score}`` of the label itself (label source ``"label"``), skips left out."""
    out = {}
    for key, by_src in scores.get(scorer, {}).items():
        r = by_src.get("label")
        if r is not None and not r.skipped and r.score is not None and math.isfinite(r.score):
            out[key] = float(r.score)
    return out


def _judges_labels(scores: Scores, scorer: str) -> bool:
    return any("label" in by_src for by_src in scores.get(scorer, {}).values())


def compare_scores(
    scores_a: Scores, scores_b: Scores, *, scorers: Sequence[str] | None = None, set_a: str = "A", set_b: str = "B", run: str = "",
    n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL, top: int = DEFAULT_TOP,
) -> LabelSetComparison:
    """`compare_label_sets` on scores already read (``{scorer: {key: {label source: ScoreResult}}}``).
    The labels shown are those the score lines record (what was scored)."""
    import numpy as np

    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be a whole number >= 0 (components shown per scorer), got {top!r}")
    both = [s for s in sorted(scores_a) if s in scores_b]
    if scorers is None:
        names = both
    else:
        if isinstance(scorers, str):
            raise ValueError(f"scorers must be a list of scorer names, got {scorers!r}")
        names = list(dict.fromkeys(scorers))
        missing = {s: [n for n, sc in ((set_a, scores_a), (set_b, scores_b)) if s not in sc] for s in names}
        missing = {s: m for s, m in missing.items() if m}
        if missing:
            s, m = next(iter(missing.items()))
            raise ValueError(
                f"scorers: {s!r} has no scores in label set {' or '.join(map(repr, m))}; scored in both: {both or 'none'} "
                f"(run `autointerp score ... --label_set NAME --scorers {s}` first)"
            )
    out: list[ScorerComparison] = []
    skipped: dict[str, str] = {}
    if scorers is None:
        for name in sorted(set(scores_a) ^ set(scores_b)):
            skipped[name] = f"scored only in label set {(set_a if name in scores_a else set_b)!r}"
    for name in names:
        if not (_judges_labels(scores_a, name) or _judges_labels(scores_b, name)):
            skipped[name] = "it judges the component, not its label, so it is the same for every label set"
            continue
        a, b = _label_scores(scores_a, name), _label_scores(scores_b, name)
        keys = [k for k in a if k in b]
        d = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
        lo, hi = bootstrap_mean_ci(d, n_resamples, seed, level) if len(keys) else (math.nan, math.nan)
        order = sorted(range(len(keys)), key=lambda i: (-abs(d[i]), keys[i]))
        dis = [
            Disagreement(keys[i], scores_a[name][keys[i]]["label"].label, scores_b[name][keys[i]]["label"].label,
                         a[keys[i]], b[keys[i]])
            for i in order[:top] if abs(d[i]) > TIE_TOLERANCE
        ]  # fmt: skip
        out.append(ScorerComparison(
            scorer=name, n=len(keys),
            mean_a=float(np.mean([a[k] for k in keys])) if keys else math.nan,
            mean_b=float(np.mean([b[k] for k in keys])) if keys else math.nan,
            mean_diff=float(d.mean()) if keys else math.nan, ci_low=lo, ci_high=hi,
            wins=int(np.sum(d > TIE_TOLERANCE)), ties=int(np.sum(np.abs(d) <= TIE_TOLERANCE)), losses=int(np.sum(d < -TIE_TOLERANCE)),
            disagreements=dis, n_a=len(a), n_b=len(b),
        ))  # fmt: skip
    return LabelSetComparison(run, set_a, set_b, out, skipped, n_resamples, seed, level)


def compare_label_sets(
    run: RunPaths | str | os.PathLike, set_a: str, set_b: str, *, scorers: Sequence[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL, top: int = DEFAULT_TOP,
    out: str | os.PathLike | None = None,
) -> LabelSetComparison:
    """Compare label set ``set_a`` of a run with ``set_b`` (see the module docstring).

    ``run``: a `RunPaths`, a run folder, or a run id under ``out``. ``scorers``:
    which to compare (default: every scorer both sets were scored with).
    ``n_resamples`` / ``seed`` / ``level``: the bootstrap's; ``top``: disagreements
    kept per scorer. Both sets must exist and be scored: anything else is a
    ValueError naming the set and what to run.
    """
    a_name, b_name = check_label_set(set_a, "set_a"), check_label_set(set_b, "set_b")
    if a_name == b_name:
        raise ValueError(f"set_a and set_b must be two different label sets, got {a_name!r} twice")
    paths = _run_paths(run, out)
    if not paths.harvest_config.exists():
        raise FileNotFoundError(f"no run at {paths.root} (expected {paths.harvest_config}); check the run id and --out")
    have = paths.label_sets()
    read: dict[str, Scores] = {}
    for option, name in (("set_a", a_name), ("set_b", b_name)):
        p = paths.with_label_set(name)
        if name not in have:
            raise ValueError(f"{option}: the run has no label set {name!r} (no {p.interpretation_results}); "
                             f"it has {have or 'none'}")
        scores = read_scores(p)
        if not scores:
            flag = "" if p.is_default_set else f" --label_set {name}"
            raise ValueError(f"{option}: label set {name!r} has no scores in {p.scores}; run `autointerp score "
                             f"{paths.run_id}{flag}` first")
        read[name] = scores
    return compare_scores(read[a_name], read[b_name], scorers=scorers, set_a=a_name, set_b=b_name,
                          run=paths.run_id, n_resamples=n_resamples, seed=seed, level=level, top=top)


def _run_paths(run: RunPaths | str | os.PathLike, out: str | os.PathLike | None) -> RunPaths:
    if isinstance(run, RunPaths):
        return run.with_label_set(None)
    if out is None and RunPaths.at(run).harvest.is_dir():
        return RunPaths.at(run)
    return RunPaths.of(str(run), out)

