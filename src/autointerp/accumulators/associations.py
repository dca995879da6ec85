"""Pure functions shared by the token and correlation statistics.

Given a joint table ``joint[n, M]`` (how often row-thing and column-thing occur
together), the row totals, the column totals and the number of tokens, rank the
columns of every row by precision, recall and PMI. Kept apart from the
accumulators so they can be tested directly against a plain loop.

Definitions, for a component c (row) and a token or partner t (column):

* recall    = joint[c, t] / row_count[c]   = P(t | c fires)
* precision = joint[c, t] / col_total[t]   = P(c fires | t)
* pmi       = log(joint[c, t] * n_total / (row_count[c] * col_total[t]))

Only pairs that occurred (joint > 0, at least ``min_count``) are ranked.

How each list is ordered (small counts lie: a token seen once with one firing
has precision 1.0; see docs/statistics.md):

* **precision** by the Wilson score lower bound (95%) of joint / col_total out
  of col_total trials (``precision_lower``, reported beside the raw precision);
* **recall** by recall (the joint count: no small-sample problem within a row);
* **pmi** by PMI among pairs with ``joint >= min_support`` (default 3); pairs
  below the support follow after all supported ones, so a list is never empty
  just because a component fired rarely;
* **bottom_pmi** (co-firing) by the Wilson *upper* bound turned into PMI: the
  partners that co-fire less than chance with the most confidence.

`rank_columns` ranks dense tables, `rank_summary` the k counters of a
heavy-hitter summary (the bounded modes); both share one ranking core.
"""

from __future__ import annotations

import math

import torch
from attrs import define
from torch import Tensor

#: rows processed at once in finalize, to bound the temporaries to chunk * M
FINALIZE_CHUNK_ELEMENTS = 1 << 22
#: z of the two-sided 95% interval behind the Wilson bounds
WILSON_Z = 1.959963984540054
#: PMI ranks pairs with at least this joint count (or probability mass) first
DEFAULT_MIN_SUPPORT = 3.0
# PMI is within +-log(n_total) < 100: an offset this large puts every pair below
# the support after every pair above it, keeping the PMI order inside each tier
_TIER = 1e4


@define(eq=False)
class RankedColumns:
    """For each row, the top-k columns by one metric: indices and the numbers, on the CPU."""

    index: Tensor  # [n, k] int64, -1 where fewer than k columns qualify
    joint: Tensor  # [n, k] float64
    precision: Tensor
    recall: Tensor
    pmi: Tensor
    precision_lower: Tensor  # the Wilson 95% lower bound of precision
    error: Tensor  # the bound on how much joint under-states the true joint (0: exact)


def wilson_bounds(successes: Tensor, trials: Tensor, z: float = WILSON_Z) -> tuple[Tensor, Tensor]:
    """The Wilson score interval (lower, upper) of successes / trials; (0, 1) where trials is 0.

    Works for real-valued (expected) counts too, as used for probability mass.
    """
    n = trials.double()
    safe = n.clamp_min(1e-300)
    p = (successes.double() / safe).clamp(0.0, 1.0)
    z2 = z * z
    centre = p + z2 / (2 * safe)
    spread = z * torch.sqrt(p * (1 - p) / safe + z2 / (4 * safe * safe))
    denom = 1 + z2 / safe
    lower = ((centre - spread) / denom).clamp(0.0, 1.0)
    upper = ((centre + spread) / denom).clamp(0.0, 1.0)
    empty = n <= 0
    return lower.masked_fill(empty, 0.0), upper.masked_fill(empty, 1.0)


def _rank_chunk(j: Tensor, cols: Tensor, ct: Tensor, rc: Tensor, err: Tensor, n_total: float, k_eff: int,
                ok: Tensor, wanted: list[str], min_support: float) -> dict[str, RankedColumns]:
    """Rank the entries ``j [n, m]`` (columns ``cols``, column totals ``ct``, both [n, m]) of rows with totals ``rc [n]``."""
    rc2 = rc.double()[:, None]
    precision = j / ct.clamp_min(1e-300)
    recall = j / rc2.clamp_min(1e-300)
    pmi = torch.log(j * n_total / (rc2 * ct).clamp_min(1e-300)).nan_to_num(nan=-math.inf)
    lower, upper = wilson_bounds(j, ct)
    keys = {
        "precision": lower,
        "recall": recall,
        "pmi": torch.where(j >= min_support, pmi, pmi - _TIER),
    }
    if "bottom_pmi" in wanted:
        keys["bottom_pmi"] = -torch.log(upper * n_total / rc2.clamp_min(1e-300)).nan_to_num(nan=math.inf)
    out = {}
    for m in wanted:
        score = torch.where(ok, keys[m], torch.full_like(pmi, -math.inf))
        # equal scores keep the entries' order: the lower column first (callers hand the entries
        # in column order), the same in the dense and the bounded mode
        top, at = _stable_topk(score, k_eff)
        valid = top > -math.inf
        safe = at.clamp_min(0)
        idx = torch.where(valid, cols.gather(1, safe), torch.full_like(at, -1))
        out[m] = RankedColumns(
            index=idx.cpu(),
            joint=j.gather(1, safe).cpu(),
            precision=precision.gather(1, safe).cpu(),
            recall=recall.gather(1, safe).cpu(),
            pmi=pmi.gather(1, safe).cpu(),
            precision_lower=lower.gather(1, safe).cpu(),
            error=err.expand_as(j).gather(1, safe).cpu(),
        )
    return out


def _stable_topk(score: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Each row's ``k`` largest scores and their positions, highest first, ties in position order
    (what a stable descending sort's first ``k`` are), without sorting whole rows: `topk` finds
    the k-th score, and only the entries at or above it (the ties at the boundary included) are sorted."""
    n, w = score.shape
    if w <= 4 * k or n == 0:
        top, at = score.sort(dim=1, descending=True, stable=True)
        return top[:, :k], at[:, :k]
    kth = score.topk(k, dim=1).values[:, -1:]
    cand = (score >= kth) & (score > -math.inf)
    slots, vals = _compact(score, cand, k, -math.inf)
    top, order = vals.sort(dim=1, descending=True, stable=True)
    return top[:, :k], slots.gather(1, order[:, :k]).clamp_min(0)


_FIELDS = ("index", "joint", "precision", "recall", "pmi", "precision_lower", "error")


def _concat(out: dict[str, list[RankedColumns]], k_eff: int) -> dict[str, RankedColumns]:
    return {
        m: RankedColumns(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))
        if parts
        else RankedColumns(*(torch.zeros(0, k_eff) for _ in _FIELDS))
        for m, parts in out.items()
    }


def rank_columns(
    joint: Tensor,
    row_count: Tensor,
    col_total: Tensor,
    n_total: float,
    k: int,
    *,
    min_count: float = 1e-12,
    exclude_diagonal_from: int | None = None,
    bottom_pmi: bool = False,
    min_support: float = DEFAULT_MIN_SUPPORT,
) -> dict[str, RankedColumns]:
    """Top-k columns per row for each metric (and optionally bottom-k by PMI) of a dense table.

    ``exclude_diagonal_from``: when rows are a slice of a square table starting at
    this row number, the row's own column (itself) is never ranked.
    """
    n, M = joint.shape
    k_eff = min(k, M)
    wanted = ["precision", "recall", "pmi"] + (["bottom_pmi"] if bottom_pmi else [])
    out: dict[str, list[RankedColumns]] = {m: [] for m in wanted}
    chunk = max(1, FINALIZE_CHUNK_ELEMENTS // max(M, 1))
    zero = torch.zeros((), dtype=torch.float64, device=joint.device)
    ct_all = col_total.double()
    for start in range(0, n, chunk):
        block = joint[start : start + chunk]
        ok = block >= min_count
        if exclude_diagonal_from is not None:
            rows = torch.arange(block.shape[0], device=block.device)
            diag = rows + start + exclude_diagonal_from
            in_range = diag < M
            ok[rows[in_range], diag[in_range]] = False
        # only the pairs that occurred are ranked: gather them, in column order, into rows as wide as
        # the fullest row of the chunk (the table is mostly zeros; every metric is per pair)
        cols, j = _compact(block, ok, k_eff, 0)
        j = j.double()
        valid = cols >= 0
        ct = ct_all[cols.clamp_min(0)]
        for m, r in _rank_chunk(j, cols, ct, row_count[start : start + chunk], zero, n_total, k_eff, valid,
                                wanted, min_support).items():
            out[m].append(r)
    return _concat(out, k_eff)


def _compact(values: Tensor, ok: Tensor, width: int, fill: float) -> tuple[Tensor, Tensor]:
    """The ``ok`` entries of each row of ``values [n, M]``: their columns ``[n, w]`` (-1 past a row's
    last) and values (``fill`` there), in column order; ``w`` is the most any row has, at least ``width``."""
    n = values.shape[0]
    per_row = ok.sum(1)
    w = max(int(per_row.max()) if n else 0, width)
    r, c = ok.nonzero(as_tuple=True)  # row-major: each row's columns ascending
    slot = torch.arange(r.shape[0], device=values.device) - (per_row.cumsum(0) - per_row)[r]
    cols = torch.full((n, w), -1, dtype=torch.int64, device=values.device)
    cols[r, slot] = c
    out = torch.full((n, w), fill, dtype=values.dtype, device=values.device)
    out[r, slot] = values[r, c]
    return cols, out


def rank_summary(
    ids: Tensor,
    counts: Tensor,
    error: Tensor,
    row_count: Tensor,
    col_total: Tensor,
    n_total: float,
    k: int,
    *,
    min_count: float = 1e-12,
    bottom_pmi: bool = False,
    min_support: float = DEFAULT_MIN_SUPPORT,
) -> dict[str, RankedColumns]:
    """`rank_columns` over a heavy-hitter summary: ``ids [n, s]`` (-1 empty), ``counts [n, s]``, ``error [n]``.

    Each reported joint is the summary's count (a lower bound of the true joint)
    and ``error`` its row's bound: the true joint is in [joint, joint + error].
    """
    n, s = ids.shape
    k_eff = min(k, s)
    wanted = ["precision", "recall", "pmi"] + (["bottom_pmi"] if bottom_pmi else [])
    out: dict[str, list[RankedColumns]] = {m: [] for m in wanted}
    chunk = max(1, FINALIZE_CHUNK_ELEMENTS // max(s, 1))
    ct_all = col_total.double()
    for start in range(0, n, chunk):
        # each row's counters in column order (empty ones first), so ties rank as in `rank_columns`
        cols, order = ids[start : start + chunk].long().sort(dim=1, stable=True)
        j = counts[start : start + chunk].double().gather(1, order)
        ok = (cols >= 0) & (j >= min_count)
        ct = ct_all[cols.clamp_min(0)]
        err = error[start : start + chunk].double()[:, None]
        for m, r in _rank_chunk(j, cols, ct, row_count[start : start + chunk], err, n_total, k_eff, ok,
                                wanted, min_support).items():
            out[m].append(r)
    return _concat(out, k_eff)


Entry = tuple[int, float, float, float, float, float, float]


def rows_of(ranked: RankedColumns) -> list[list[Entry]]:
    """Per row, its (column, joint, precision, recall, pmi, precision_lower, error) entries, best first,
    padding dropped."""
    idx = ranked.index.tolist()
    joint, prec, rec, pmi, low, err = (
        t.tolist() for t in (ranked.joint, ranked.precision, ranked.recall, ranked.pmi, ranked.precision_lower,
                             ranked.error)
    )
    return [
        [(c, joint[r][i], prec[r][i], rec[r][i], pmi[r][i], low[r][i], err[r][i]) for i, c in enumerate(row) if c >= 0]
        for r, row in enumerate(idx)
    ]
