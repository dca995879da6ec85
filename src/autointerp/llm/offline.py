"""The token-lookup baseline: a label from a component's top tokens, with no network and no key.

This is the classic baseline that an LLM label has to beat: "fires on 'the',
'a'; predicts ' cat', ' dog'". It reads the harvested statistics directly —
input tokens ranked by the Wilson 95% lower bound of precision P(fires | token),
output tokens by PMI among tokens with enough support — so a token seen once
never leads the label (docs/statistics.md); harvests made before the lists
were ranked that way are re-ranked here from their counts. It falls back to the firing tokens of the activation examples when a harvest
kept no token statistics.

`OfflineBackend` wraps it in the `Backend` seam so the interpreter, the runner,
resume and the report work the same with it as with Claude: the interpreter
puts the `ComponentData` in ``request.metadata["component"]``. Scorers call
`token_lookup_label` directly for their ``label_source="token_lookup"`` control.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from autointerp.llm.base import InvalidResponse, LLMRequest, LLMResponse
from autointerp.schemas import ComponentData, TokenStat, TokenUsage
from autointerp.token_text import check_kind, token_alone

OFFLINE_MODEL = "offline-token-lookup"


#: the PMI list's minimum support (as `autointerp.accumulators.associations.DEFAULT_MIN_SUPPORT`)
MIN_SUPPORT = 3.0
_Z = 1.959963984540054


def _show(stat: TokenStat, kind: str | None = None) -> str:
    return repr(token_alone(stat.token, kind)) if stat.token is not None else f"#{stat.token_id}"


def precision_lower(stat: TokenStat) -> float:
    """The Wilson 95% lower bound of the stat's precision: stored, or recomputed from count / precision."""
    if stat.precision_lower is not None:
        return stat.precision_lower
    if stat.precision <= 0 or stat.count <= 0:
        return 0.0
    n = stat.count / stat.precision  # the token's total count (or mass)
    p = min(1.0, stat.precision)
    centre = p + _Z * _Z / (2 * n)
    spread = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + _Z * _Z / n))


def by_precision_lower(stats: list[TokenStat]) -> list[TokenStat]:
    """``stats`` best first by the lower bound of precision (a stable sort: ties keep their order)."""
    return sorted(stats, key=precision_lower, reverse=True)


def by_supported_pmi(stats: list[TokenStat], min_support: float = MIN_SUPPORT) -> list[TokenStat]:
    """``stats`` best first by PMI, those with ``count >= min_support`` before the rest."""
    return sorted(stats, key=lambda s: (s.count >= min_support, s.pmi), reverse=True)


def top_input_tokens(comp: ComponentData, n: int = 3, kind: str | None = None) -> list[str]:
    """The ``n`` input tokens with the highest precision lower bound (or, lacking stats, the commonest firing tokens),
    each as it reads by the harvest's tokenizer ``kind`` (`autointerp.token_text.token_alone`)."""
    if comp.input_tokens is not None:
        ranked = by_precision_lower(comp.input_tokens.top_precision) or comp.input_tokens.top_recall
        if ranked:
            return [_show(s, kind) for s in ranked[:n]]
    counts: Counter[str] = Counter()
    for ex in list(comp.top_examples) + list(comp.examples):
        tok = ex.tokens[ex.firing_offset] if ex.tokens else None
        counts[repr(token_alone(tok, kind)) if tok is not None else f"#{ex.firing_token_id}"] += 1
    return [t for t, _ in counts.most_common(n)]


def top_output_tokens(comp: ComponentData, n: int = 3, kind: str | None = None) -> list[str]:
    """The ``n`` output tokens with the highest PMI (or recall) while the component fires (read as ``kind`` says)."""
    if comp.output_tokens is None:
        return []
    ranked = by_supported_pmi(comp.output_tokens.top_pmi) or comp.output_tokens.top_recall
    return [_show(s, kind) for s in ranked[:n]]


def token_lookup_label(comp: ComponentData, n: int = 3, kind: str | None = None) -> str:
    """The baseline label of one component; ``kind`` is the harvest's ``tokenizer_kind``, by
    which each token is shown as it reads (WordPiece ``'##ing'`` as ``'ing'``, a word start as
    ``' the'``; None: as recorded).

    >>> token_lookup_label(comp)
    "fires on 'the', ' a', ' an'; predicts ' cat', ' dog'"
    """
    if comp.firing_count == 0:
        return "never fires"
    check_kind(kind)
    inputs = top_input_tokens(comp, n, kind)
    outputs = top_output_tokens(comp, n, kind)
    parts = []
    if inputs:
        parts.append("fires on " + ", ".join(inputs))
    if outputs:
        parts.append("predicts " + ", ".join(outputs))
    return "; ".join(parts) if parts else "fires, but no token evidence was harvested"


class OfflineBackend:
    """A `Backend` that labels from token statistics: no network, no key, no cost.

    It answers requests built by the `Interpreter` (which attach the component
    and the harvest's ``token_kind``); any other request is an `InvalidResponse`.
    """

    model = OFFLINE_MODEL

    def __init__(self, n_tokens: int = 3):
        self.n_tokens = n_tokens

    def __repr__(self) -> str:
        return "OfflineBackend()"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        comp = request.metadata.get("component")
        if not isinstance(comp, ComponentData):
            raise InvalidResponse("the offline token-lookup backend needs request.metadata['component'] (a ComponentData)")
        label = token_lookup_label(comp, self.n_tokens, request.metadata.get("token_kind"))
        data: dict[str, Any] = {
            "label": label,
            "confidence": "low",
            "reasoning": "token-lookup baseline: the component's top input tokens by precision (Wilson lower bound) and output tokens by PMI (min support); no LLM was called",
        }
        return LLMResponse(data=data, usage=TokenUsage(), raw_text=json.dumps(data), model=self.model)


#: the name the brief uses for the same thing
TokenLookupBackend = OfflineBackend
