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
"""

from __future__ import annotations

import math

import torch
from attrs import define
from torch import Tensor

#: rows processed at once in finalize, to bound the temporaries to chunk * M
FINALIZE_CHUNK_ELEMENTS = 1 << 24


@define(eq=False)
class RankedColumns:
    """For each row, the top-k columns by one metric: indices and the four numbers, on the CPU."""

    index: Tensor  # [n, k] int64, -1 where fewer than k columns qualify
    joint: Tensor  # [n, k] float64
    precision: Tensor
    recall: Tensor
    pmi: Tensor


def _metrics(joint: Tensor, row_count: Tensor, col_total: Tensor, n_total: float) -> tuple[Tensor, Tensor, Tensor]:
    joint = joint.double()
    rc = row_count.double()[:, None]
    ct = col_total.double()[None, :]
    precision = joint / ct.clamp_min(1e-300)
    recall = joint / rc.clamp_min(1e-300)
    pmi = torch.log(joint * n_total / (rc * ct).clamp_min(1e-300)).nan_to_num(nan=-math.inf)
    return precision, recall, pmi


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
) -> dict[str, RankedColumns]:
    """Top-k columns per row for each metric (and optionally bottom-k by PMI).

    ``exclude_diagonal_from``: when rows are a slice of a square table starting at
    this row number, the row's own column (itself) is never ranked.
    """
    n, M = joint.shape
    k_eff = min(k, M)
    wanted = ["precision", "recall", "pmi"] + (["bottom_pmi"] if bottom_pmi else [])
    out: dict[str, list[RankedColumns]] = {m: [] for m in wanted}
    chunk = max(1, FINALIZE_CHUNK_ELEMENTS // max(M, 1))
    for start in range(0, n, chunk):
        j = joint[start : start + chunk].double()
        rows = torch.arange(start, start + j.shape[0], device=j.device)
        precision, recall, pmi = _metrics(j, row_count[start : start + chunk], col_total, n_total)
        ok = j >= min_count
        if exclude_diagonal_from is not None:
            diag = rows + exclude_diagonal_from
            in_range = diag < M
            ok[torch.arange(j.shape[0], device=j.device)[in_range], diag[in_range]] = False
        values = {"precision": precision, "recall": recall, "pmi": pmi}
        for m in wanted:
            if m == "bottom_pmi":
                score = torch.where(ok, -pmi, torch.full_like(pmi, -math.inf))
            else:
                score = torch.where(ok, values[m], torch.full_like(pmi, -math.inf))
            top, idx = score.topk(k_eff, dim=1)
            valid = top > -math.inf
            idx = torch.where(valid, idx, torch.full_like(idx, -1))
            safe = idx.clamp_min(0)
            out[m].append(
                RankedColumns(
                    index=idx.cpu(),
                    joint=j.gather(1, safe).cpu(),
                    precision=precision.gather(1, safe).cpu(),
                    recall=recall.gather(1, safe).cpu(),
                    pmi=pmi.gather(1, safe).cpu(),
                )
            )
    return {
        m: RankedColumns(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("index", "joint", "precision", "recall", "pmi"))
        )
        if parts
        else RankedColumns(*(torch.zeros(0, k_eff) for _ in range(5)))
        for m, parts in out.items()
    }


def rows_of(ranked: RankedColumns) -> list[list[tuple[int, float, float, float, float]]]:
    """Per row, its (column, joint, precision, recall, pmi) entries, best first, padding dropped."""
    idx = ranked.index.tolist()
    joint, prec, rec, pmi = (t.tolist() for t in (ranked.joint, ranked.precision, ranked.recall, ranked.pmi))
    return [
        [(c, joint[r][i], prec[r][i], rec[r][i], pmi[r][i]) for i, c in enumerate(row) if c >= 0]
        for r, row in enumerate(idx)
    ]
