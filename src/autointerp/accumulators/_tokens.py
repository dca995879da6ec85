"""Turn ranked token columns into `TokenStats` objects (shared by input and output stats)."""

from __future__ import annotations

from autointerp.accumulators.associations import Entry, RankedColumns, rows_of
from autointerp.accumulators.base import HarvestContext
from autointerp.schemas import TokenStat, TokenStats


def token_stats_per_row(ranked: dict[str, RankedColumns], ctx: HarvestContext) -> list[TokenStats]:
    rows = {m: rows_of(r) for m, r in ranked.items()}
    n = len(next(iter(rows.values())))
    cache: dict[int, str | None] = {}

    def name(t: int) -> str | None:
        if t not in cache:
            cache[t] = ctx.token_str(t)
        return cache[t]

    def stats(entries: list[Entry]) -> list[TokenStat]:
        return [TokenStat(t, j, p, r, pmi, name(t), err, low) for t, j, p, r, pmi, low, err in entries]

    return [
        TokenStats(
            top_precision=stats(rows["precision"][i]),
            top_recall=stats(rows["recall"][i]),
            top_pmi=stats(rows["pmi"][i]),
        )
        for i in range(n)
    ]
