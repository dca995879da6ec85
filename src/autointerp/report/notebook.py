"""Rich notebook views (`_repr_html_`) of components, labels, harvests and runs.

Plain HTML with a small scoped ``<style>``; no scripts and nothing from the
network, so the views survive notebook sanitizers and offline viewers. Every
string from the data goes through `html.escape` (`tokens.escape_html`, which also
shows bidirectional controls as visible escapes). Tokens are shown the same way
as in the static report: byte-level tokens joined into UTF-8, whitespace made
visible, shaded by activation, the firing token outlined, the activation on hover.

The functions take the objects duck-typed (attrs objects or their dicts) and
import nothing that imports `autointerp.schemas`, so the schemas' own
`_repr_html_` can call them without an import circle.

>>> from autointerp import load_harvest             # doctest: +SKIP
>>> result = load_harvest(".data/autointerp/demo/harvest")
>>> result["h.0.mlp:3"]                             # in a notebook: the rich view
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from autointerp.report.extras import EXTRAS_RENDERERS
from autointerp.report.score_sources import LABEL_SOURCES, headline, score_value
from autointerp.report.tokens import detect_token_style, display_tokens, single_token_text
from autointerp.report.tokens import escape_html as escape  # bidi controls shown, not obeyed
from autointerp.token_text import TOKENIZER_KINDS, vocab_token_text

_STYLE = """<style>
.ai-view{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d232b;max-width:1100px}
.ai-view h4{margin:10px 0 4px;font-size:13px;color:#69717d;text-transform:uppercase;letter-spacing:.03em}
.ai-view .ai-key{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:700}
.ai-view .ai-label{font-size:16px;font-weight:600;margin:4px 0}
.ai-view .ai-muted{color:#69717d}
.ai-view .ai-reason{background:#f5f6f8;border-left:3px solid #dfe3e8;padding:4px 10px;white-space:pre-wrap}
.ai-view table{border-collapse:collapse;margin:2px 12px 6px 0;font-size:12px}
.ai-view th,.ai-view td{border-bottom:1px solid #e3e6ea;padding:1px 8px;text-align:left}
.ai-view td.ai-num{text-align:right;font-variant-numeric:tabular-nums}
.ai-view .ai-ex{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.9;white-space:pre-wrap;overflow-wrap:anywhere;border-bottom:1px dotted #e3e6ea}
.ai-view .ai-tok{border-radius:2px}
.ai-view .ai-fire{outline:2px solid #7a2e00;font-weight:700}
.ai-view .ai-marked{outline:2px dashed #7a2e00;font-weight:700}
.ai-view details summary{cursor:pointer;color:#1f5fb4}
.ai-view .ai-ws{opacity:.45}
.ai-view .ai-flex{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
</style>"""

_WS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍", "\u00a0": "⍽"}


def _visible(text: str) -> str:
    """Escaped text with whitespace shown as symbols."""
    out = []
    for ch in text:
        sym = _WS.get(ch)
        out.append(f'<span class="ai-ws">{sym}</span>' if sym else escape(ch))
    return "".join(out)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        if isinstance(x, float) and not math.isfinite(x):
            return "–"
        if x == 0:
            return "0"
        if isinstance(x, int) and not isinstance(x, bool):
            return f"{x:,}"
        return f"{x:.{digits}g}"
    return escape(str(x))


def _shade(act: float, scale: float) -> str:
    if not act or not scale or not math.isfinite(act):
        return ""
    x = max(-1.0, min(1.0, act / scale))
    alpha = 0.12 + 0.78 * abs(x)
    color = f"rgba(255,140,0,{alpha:.3f})" if x > 0 else f"rgba(40,120,255,{alpha:.3f})"
    return f' style="background-color:{color}"'


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def example_html(example: Any, scale: float | None = None, style: str = "auto") -> str:
    """One activation example as a line of shaded tokens (ActivationExample or its dict)."""
    tokens = _get(example, "tokens")
    ids = _get(example, "token_ids") or []
    acts = list(_get(example, "activations") or [])
    fire = _get(example, "firing_offset", -1)
    shown = display_tokens(list(tokens), style) if tokens else [f"⟨{i}⟩" for i in ids]
    if scale is None:
        scale = max((abs(a) for a in acts if a is not None and math.isfinite(a)), default=0.0)
    parts = []
    for i, text in enumerate(shown):
        a = acts[i] if i < len(acts) else 0.0
        cls = "ai-tok ai-fire" if i == fire else "ai-tok"
        title = f"activation {_fmt(a, 4)}" + (" (firing token)" if i == fire else "")
        body = _visible(text) if text else "&#8203;"
        parts.append(f'<span class="{cls}"{_shade(a, scale)} title="{escape(title)}">{body}</span>')
    where = f"seq {_get(example, 'sequence_index')}, pos {_get(example, 'position')}"
    return f'<div class="ai-ex" title="{escape(where)}">{"".join(parts)}</div>'


def _examples_block(title: str, examples: Sequence[Any], scale: float, style: str, limit: int) -> str:
    if not examples:
        return ""
    rows = "".join(example_html(e, scale, style) for e in examples[:limit])
    more = f'<div class="ai-muted">… {len(examples) - limit} more</div>' if len(examples) > limit else ""
    return f"<h4>{escape(title)} ({len(examples)})</h4>{rows}{more}"


def _histogram_block(hist: Any, width: int = 240, height: int = 48) -> str:
    """An `ActivationHistogram` as SVG bars, one a bin, each bin's range and count on hover."""
    counts = list(_get(hist, "counts") or []) if hist is not None else []
    if not counts or not max(counts):
        return ""
    edges, top, bw = list(_get(hist, "edges")), max(counts), width / len(counts)
    rects = []
    for i, n in enumerate(counts):
        h = n / top * (height - 2)
        tip = f"{_fmt(edges[i])} to {_fmt(edges[i + 1])}: {n:,} firings"
        rects.append(f'<rect x="{i * bw + 0.5:.1f}" y="{height - h:.1f}" width="{max(1.0, bw - 1):.1f}" height="{h:.1f}" '
                     f'fill="#4a7bd0"><title>{escape(tip)}</title></rect>')
    return (f'<h4>Activation histogram ({sum(counts):,} firings, log-spaced bins from {_fmt(edges[0])} to {_fmt(edges[-1])})</h4>'
            f'<svg width="{width}" height="{height}" role="img">{"".join(rects)}</svg>')


def _quantiles_block(groups: Sequence[Any], scale: float, style: str, limit: int) -> str:
    """`QuantileExamples`, weakest first: each quantile's range, count and its examples."""
    parts = []
    for q in groups or []:
        upper = _get(q, "upper")
        where = f"{_fmt(_get(q, 'lower'))} to {_fmt(upper)}" if upper is not None else f"above {_fmt(_get(q, 'lower'))}"
        title = (f"Quantile {round(100 * _get(q, 'lower_share'))}-{round(100 * _get(q, 'upper_share'))}%: "
                 f"activation {where}, {_get(q, 'count', 0):,} firings")
        parts.append(_examples_block(title, list(_get(q, "examples") or []), scale, style, limit))
    return "".join(parts)


def _position_flag(comp: Any) -> str:
    if not _get(comp, "fires_early"):
        return ""
    share = 100 * float(_get(comp, "early_firing_share") or 0.0)
    return (f'<div class="ai-flag" style="color:#a15c00">fires mostly at the first positions of its sequences: {share:.0f}% of its '
            "firings (it may respond to position more than to the tokens)</div>")


def _token_table(title: str, rows: Sequence[Any], style: str, limit: int = 8) -> str:
    body = []
    for s in rows[:limit]:
        tok = _get(s, "token")
        text = single_token_text(tok, style) if tok is not None else f"⟨{_get(s, 'token_id')}⟩"
        body.append(
            f"<tr><td><code>{_visible(text)}</code></td><td class=ai-num>{_fmt(_get(s, 'precision'))}</td>"
            f"<td class=ai-num>{_fmt(_get(s, 'recall'))}</td><td class=ai-num>{_fmt(_get(s, 'pmi'))}</td></tr>"
        )
    if not body:
        body.append('<tr><td colspan=4 class="ai-muted">none</td></tr>')
    return (
        f"<table><caption>{escape(title)}</caption><tr><th>token</th><th>precision</th><th>recall</th><th>PMI</th></tr>"
        f"{''.join(body)}</table>"
    )


def _token_stats_block(title: str, stats: Any, style: str) -> str:
    if not stats:
        return ""
    tables = "".join(
        _token_table(name, _get(stats, field) or [], style)
        for field, name in (("top_precision", "by precision"), ("top_recall", "by recall"), ("top_pmi", "by PMI"))
    )
    return f'<h4>{escape(title)}</h4><div class="ai-flex">{tables}</div>'


def _logit_lens_block(lens: Any, style: str, limit: int = 8) -> str:
    """The weight-based output logits (promoted, suppressed), shown beside the data-based output tokens."""
    if not lens:
        return ""
    tables = []
    for field, name in (("promoted", "promoted"), ("suppressed", "suppressed")):
        body = []
        for t in (_get(lens, field) or [])[:limit]:
            tok = _get(t, "token")
            text = single_token_text(tok, style) if tok is not None else f"⟨{_get(t, 'token_id')}⟩"
            body.append(f"<tr><td><code>{_visible(text)}</code></td><td class=ai-num>{_fmt(_get(t, 'logit'))}</td></tr>")
        if not body:
            body.append('<tr><td colspan=2 class="ai-muted">none</td></tr>')
        tables.append(f"<table><caption>{escape(name)}</caption><tr><th>token</th><th>logit</th></tr>{''.join(body)}</table>")
    source = _get(lens, "source") or ""
    note = f'<div class="ai-muted">from the weights: {escape(str(source))}</div>' if source else ""
    return f'<h4>Output logits (weights)</h4>{note}<div class="ai-flex">{"".join(tables)}</div>'


def _partners_block(corr: Any, labels: Mapping[str, str] | None, limit: int = 6) -> str:
    if not corr:
        return ""
    tables = []
    for field, name in (("top_pmi", "by PMI"), ("top_precision", "by precision"), ("top_recall", "by recall")):
        rows = []
        for p in (_get(corr, field) or [])[:limit]:
            key = _get(p, "key")
            lab = (labels or {}).get(key)
            lab_html = escape(lab) if lab else '<span class="ai-muted">–</span>'
            rows.append(
                f"<tr><td class=ai-key>{escape(str(key))}</td><td>{lab_html}</td><td class=ai-num>{_fmt(_get(p, 'precision'))}</td>"
                f"<td class=ai-num>{_fmt(_get(p, 'recall'))}</td><td class=ai-num>{_fmt(_get(p, 'pmi'))}</td></tr>"
            )
        if not rows:
            rows.append('<tr><td colspan=5 class="ai-muted">none</td></tr>')
        tables.append(
            f"<table><caption>{escape(name)}</caption><tr><th>component</th><th>label</th><th>prec</th><th>rec</th><th>PMI</th></tr>"
            f"{''.join(rows)}</table>"
        )
    return f'<h4>Co-firing components</h4><div class="ai-flex">{"".join(tables)}</div>'


def _extras_block(extras: Mapping[str, Any]) -> str:
    if not extras:
        return ""
    parts = []
    for name in sorted(extras):
        value = extras[name]
        r = EXTRAS_RENDERERS.get(name)
        if r is not None and r.html is not None:
            try:
                body = r.html(value)
            except Exception as e:  # noqa: BLE001 - a broken renderer must not hide the component
                body = f'<span class="ai-muted">renderer failed: {escape(repr(e))}</span>' + _generic_extras(value)
        else:
            body = _generic_extras(value)
        parts.append(f"<h4>{escape(name)}</h4>{body}")
    return "".join(parts)


def _generic_extras(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 2000:
        text = text[:2000] + " …"
    return f"<pre style='white-space:pre-wrap;margin:0'>{escape(text)}</pre>"


def _scores_block(scores: Mapping[str, Mapping[str, Any]] | None) -> str:
    if not scores:
        return ""
    rows = []
    for scorer in sorted(scores):
        cells = []
        for src in LABEL_SOURCES:
            # a component-level scorer (intruder) is shown in the label's column
            r = headline(scores[scorer]) if src == "label" else scores[scorer].get(src)
            if r is None:
                cells.append("<td class=ai-num>–</td>")
            elif _get(r, "skipped"):
                cells.append(f'<td class="ai-num ai-muted" title="{escape(str(_get(r, "reason", "")))}">skipped</td>')
            else:
                cells.append(f"<td class=ai-num>{_fmt(_get(r, 'score'))}</td>")
        rows.append(f"<tr><td>{escape(scorer)}</td>{''.join(cells)}</tr>")
    return (
        "<h4>Scores</h4><table><tr><th>scorer</th><th>this label</th><th>random label</th><th>token lookup</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _interp_block(interp: Any) -> str:
    if interp is None:
        return ""
    meta = f"confidence: {escape(str(_get(interp, 'confidence', '')))}"
    model = _get(interp, "model")
    if model:
        meta += f" · labeled by {escape(str(model))}"
    reasoning = _get(interp, "reasoning") or ""
    reason_html = f'<div class="ai-reason">{escape(reasoning)}</div>' if reasoning else ""
    return f'<div class="ai-label">{escape(str(_get(interp, "label", "")))}</div><div class="ai-muted">{meta}</div>{reason_html}'


def _passes_block(interp: Any, first_pass: Any) -> str:
    """The neighbour pass's label against the first pass's (``interpret --neighbours``): ``first_pass``
    is given only where the label came from the neighbour pass (`autointerp.records.read_first_pass`)."""
    if interp is None or first_pass is None:
        return ""
    text = ("Second pass, with its neighbours' labels (interpret --neighbours). The first pass said: "
            f'<q class="ai-first">{escape(str(_get(first_pass, "label", "")))}</q>')
    if _get(first_pass, "confidence"):
        text += f' <span class="ai-muted">(confidence: {escape(str(_get(first_pass, "confidence")))})</span>'
    return f'<div class="ai-passes">{text}</div>'


def _plural(n: Any, one: str, many: str) -> str:
    return f"{_fmt(n)} {one if n == 1 else many}"


def _counts(rnd: Any) -> tuple[int, int]:
    wrong = _get(rnd, "wrong") or []
    return sum(bool(_get(e, "miss")) for e in wrong), sum(bool(_get(e, "false_positive")) for e in wrong)


def _shown_window_html(w: Any, style: str, what: str) -> str:
    """A window a revision prompt showed: shaded tokens, the marked ones outlined (dashed)."""
    tokens = list(_get(w, "tokens") or [])
    acts = list(_get(w, "activations") or [])
    marked = set(_get(w, "marked") or [])
    scale = max((abs(a) for a in acts if a is not None and math.isfinite(a)), default=0.0)
    parts = []
    for i, text in enumerate(display_tokens(tokens, style) if tokens else []):
        a = acts[i] if i < len(acts) else 0.0
        cls = "ai-tok ai-marked" if i in marked else "ai-tok"
        title = f"activation {_fmt(a, 4)}" + (f" ({what})" if i in marked else "")
        parts.append(f'<span class="{cls}"{_shade(a, scale)} title="{escape(title)}">{_visible(text) if text else "&#8203;"}</span>')
    return f'<div class="ai-ex">{"".join(parts)}</div>'


def _refinement_block(history: Any, interp: Any, first_pass: Any, style: str, limit: int = 8) -> str:
    """A component's refinement rounds (`autointerp.records.RefinementHistory`): label, validation
    score, mistakes, the kept one, and per revision what it was shown (windows in a ``<details>``)."""
    rounds = list(_get(history, "rounds") or []) if history is not None else []
    if not rounds:
        return ""
    ref = next((_get(r, "refinement") for r in (interp, first_pass) if r is not None and _get(r, "refinement") is not None), None)
    kept = _get(ref, "chosen_round") if ref is not None else None
    by_round = {_get(r, "round"): r for r in rounds}
    shown_all = _get(history, "shown") or {}
    names = sorted({n for r in rounds for n in (_get(r, "scores") or {})})
    head = "".join(f"<th>{escape(h)}</th>" for h in ["round", "", "label", "validation", *names, "its mistakes", "it was shown"])
    rows, details = [], []
    for r in rounds:
        rnd, kind = _get(r, "round"), str(_get(r, "kind", ""))
        m, f = _counts(r)
        score = _get(r, "score")
        shown = shown_all.get(rnd)
        revised = _get(r, "revised_from")
        if isinstance(shown, Mapping):
            tot_m, tot_f, revised = shown.get("n_misses"), shown.get("n_false_positives"), shown.get("revised_from", revised)
        elif kind == "revision" and revised in by_round:
            tot_m, tot_f = _counts(by_round[revised])
        else:
            tot_m = tot_f = None
        shown_cell = (f"round {_fmt(revised)}'s {_plural(tot_m, 'miss', 'misses')}, {_plural(tot_f, 'false positive', 'false positives')}"
                      if tot_m is not None else "–")
        cells = [f"<td class=ai-num>{_fmt(rnd)}</td>", f"<td>{escape(kind)}{' · kept' if rnd == kept else ''}</td>",
                 f'<td title="{escape(str(_get(r, "reasoning", "")))}">{escape(str(_get(r, "label", "")))}</td>',
                 f"<td class=ai-num>{'not scored' if score is None else _fmt(score)}</td>",
                 *(f"<td class=ai-num>{_fmt((_get(r, 'scores') or {}).get(n))}</td>" for n in names),
                 f"<td>{'–' if score is None else _plural(m, 'miss', 'misses') + ', ' + _plural(f, 'false positive', 'false positives')}</td>",
                 f"<td>{shown_cell}</td>"]  # fmt: skip
        style_attr = ' style="background:#eef7f0;font-weight:600"' if rnd == kept else ""
        rows.append(f'<tr class="ai-round" data-round="{escape(str(rnd))}"{style_attr}>{"".join(cells)}</tr>')
        if isinstance(shown, Mapping) and (shown.get("misses") or shown.get("false_positives")):
            body = []
            for name, title, what in (("misses", "Misses (missed firings outlined)", "missed firing"),
                                      ("false_positives", "False positives (wrongly predicted tokens outlined)", "wrongly predicted")):
                ws = list(shown.get(name) or [])[:limit]
                if ws:
                    body.append(f"<div class=ai-muted>{escape(title)} ({len(ws)})</div>" + "".join(_shown_window_html(w, style, what) for w in ws))
            details.append(f'<details class="ai-shown" data-round="{escape(str(rnd))}"><summary>round {_fmt(rnd)} was shown round '
                           f"{_fmt(revised)}'s mistakes</summary>{''.join(body)}</details>")
    if ref is not None:
        note = (f"kept round {_fmt(kept)} ({_fmt(_get(ref, 'validation_score'))}; the first label "
                f"{_fmt(_get(ref, 'first_validation_score'))}) · stopped: {escape(str(_get(ref, 'stopped', '')))}")
    else:
        note = "not finished: no refined label yet"
    return (f"<h4>Refinement on the validation set</h4><div class=ai-muted>{note}</div>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>{''.join(details)}")


def _output_trials_block(scores: Mapping[str, Mapping[str, Any]] | None, style: str) -> str:
    """The output scorer's candidate lists (its label's trials), each token as the text it adds."""
    r = headline((scores or {}).get("output") or {})
    if r is None or _get(r, "skipped"):
        return ""
    details = _get(r, "details") or {}
    trials, windows = details.get("trials"), details.get("windows")
    if not isinstance(trials, list) or not isinstance(windows, list) or len(trials) != len(windows):
        return ""
    kind = style if style in TOKENIZER_KINDS else None
    out = []
    for ti, (t, lists) in enumerate(zip(trials, windows)):
        items = []
        for li, ref in enumerate(lists):
            ids = list(_get(ref, "token_ids") or [])
            toks = _get(ref, "tokens")
            toks = list(toks) if isinstance(toks, list) and len(toks) == len(ids) else [None] * len(ids)
            texts = [f"⟨{i}⟩" if tok is None else vocab_token_text(tok, kind) if kind else single_token_text(tok, style)
                     for tok, i in zip(toks, ids)]
            note = ("this component's" if li == t.get("truth") else f"from {_get(ref, 'component_key')}") + (
                " · the judge's pick" if li == t.get("answer") else "")
            chips = " ".join(f"<code>{_visible(x)}</code>" for x in texts)
            items.append(f'<li class="ai-cand">{chips} <span class="ai-muted">← {escape(note)}</span></li>')
        out.append(f"<div>trial {ti + 1}</div><ol>{''.join(items)}</ol>")
    return "<h4>Output scorer: the candidate lists</h4>" + "".join(out)


def _component_style(comp: Any) -> str:
    def tokens():
        for field in ("top_examples", "examples"):
            for ex in _get(comp, field) or []:
                yield from _get(ex, "tokens") or []
        for field in ("input_tokens", "output_tokens"):
            stats = _get(comp, field)
            for table in ("top_precision", "top_recall", "top_pmi"):
                for s in (_get(stats, table) or []) if stats else []:
                    t = _get(s, "token")
                    if t:
                        yield t

    return detect_token_style(tokens())


def component_html(
    comp: Any,
    interpretation: Any = None,
    scores: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    max_examples: int = 8,
    token_kind: str | None = None,
    refinement: Any = None,
    first_pass: Any = None,
) -> str:
    """A `ComponentData` (with its label and scores, when known) as one HTML block.

    ``token_kind`` is the harvest's ``tokenizer_kind``: examples then read as the text
    by that tokenizer's rules; without it the token style is guessed. ``refinement``: the
    component's `autointerp.records.RefinementHistory` (``interpret --refine``);
    ``first_pass``: the first pass's result where the label came from the neighbour pass.
    """
    style = token_kind or _component_style(comp)
    examples = list(_get(comp, "examples") or [])
    top = list(_get(comp, "top_examples") or [])
    scale = abs(float(_get(comp, "max_activation") or 0.0))
    for ex in top + examples:
        for a in _get(ex, "activations") or []:
            if a is not None and math.isfinite(a):
                scale = max(scale, abs(a))
    count = _get(comp, "firing_count", 0)
    rate = _get(comp, "firing_rate", 0.0)
    head = (
        f'<div><span class="ai-key">{escape(str(_get(comp, "key")))}</span> '
        f'<span class="ai-muted">fires {_fmt(count)} times · rate {_fmt(rate)} · mean act {_fmt(_get(comp, "mean_activation"))}'
        f" · max {_fmt(_get(comp, 'max_activation'))}</span></div>"
    )
    if not count:
        head += '<div class="ai-muted">never fired in this harvest</div>'
    body = [
        _STYLE,
        '<div class="ai-view">',
        head,
        _position_flag(comp),
        _interp_block(interpretation),
        _passes_block(interpretation, first_pass),
        _scores_block(scores),
        _refinement_block(refinement, interpretation, first_pass, style, max_examples),
        _output_trials_block(scores, style),
        _examples_block("Top-activating examples", top, scale, style, max_examples),
        _examples_block("Random examples", examples, scale, style, max_examples),
        _histogram_block(_get(comp, "histogram")),
        _quantiles_block(_get(comp, "quantile_examples") or [], scale, style, max_examples),
        _token_stats_block("Input tokens", _get(comp, "input_tokens"), style),
        _token_stats_block("Output tokens", _get(comp, "output_tokens"), style),
        _logit_lens_block(_get(comp, "output_logits"), style),
        _partners_block(_get(comp, "correlations"), labels),
        _extras_block(_get(comp, "extras") or {}),
        "</div>",
    ]
    return "".join(body)


def interpretation_html(result: Any) -> str:
    """An `InterpretationResult` alone: key, label, confidence, reasoning."""
    key = escape(str(_get(result, "component_key", "")))
    return f'{_STYLE}<div class="ai-view"><span class="ai-key">{key}</span>{_interp_block(result)}</div>'


def labeled_component_html(lc: Any) -> str:
    """A `LabeledComponent`: the component view with its label and scores on top."""
    return component_html(lc.component, lc.interpretation, lc.scores, token_kind=getattr(lc, "token_kind", None),
                          refinement=getattr(lc, "refinement", None), first_pass=getattr(lc, "first_pass", None))


def _layer_rows(layers: Sequence[tuple[str, list[float]]]) -> str:
    rows = []
    for name, rates in layers:
        fired = sorted(r for r in rates if r > 0)
        median = fired[len(fired) // 2] if fired else None
        rows.append(
            f"<tr><td class=ai-key>{escape(name)}</td><td class=ai-num>{len(rates):,}</td><td class=ai-num>{len(fired):,}</td>"
            f"<td class=ai-num>{len(rates) - len(fired):,}</td><td class=ai-num>{_fmt(median)}</td></tr>"
        )
    return (
        "<table><tr><th>layer</th><th>components</th><th>fired</th><th>dead</th><th>median rate (fired)</th></tr>"
        f"{''.join(rows)}</table>"
    )


def harvest_html(result: Any, *, max_rows: int = 20) -> str:
    """A `HarvestResult` as a compact table: per-layer counts, then the most frequent components."""
    cfg = result.config
    by_layer: dict[str, list[float]] = {layer.name: [] for layer in cfg.layers}
    # index rows only (a lazy harvest parses no evidence for them); the shown components are read one by one
    for r in result.summaries():
        by_layer.setdefault(r.layer, []).append(r.firing_rate)
    style = getattr(cfg, "tokenizer_kind", None) or detect_token_style(
        t for i in range(min(200, len(result))) for ex in result[i].examples[:3] for t in (ex.tokens or []))
    top = [result[r.key] for r in result.summaries(order="firing_rate", limit=max_rows)]
    rows = []
    for c in top:
        first = c.input_tokens.top_recall[0] if c.input_tokens and c.input_tokens.top_recall else None
        tok = ""
        if first is not None:
            tok = single_token_text(first.token, style) if first.token is not None else f"⟨{first.token_id}⟩"
        rows.append(
            f"<tr><td class=ai-key>{escape(c.key)}</td><td class=ai-num>{_fmt(c.firing_count)}</td><td class=ai-num>{_fmt(c.firing_rate)}</td>"
            f"<td class=ai-num>{_fmt(c.max_activation)}</td><td><code>{_visible(tok)}</code></td></tr>"
        )
    head = (
        f'<div><b>HarvestResult</b> <span class="ai-muted">{len(result):,} components in {len(cfg.layers)} layers · '
        f"{cfg.n_tokens:,} tokens · threshold {_thresholds(cfg)}</span></div>"
    )
    comp_table = (
        f"<h4>Most frequent components (top {len(top)})</h4><table><tr><th>component</th><th>firings</th><th>rate</th>"
        f"<th>max act</th><th>top input token</th></tr>{''.join(rows)}</table>"
        '<div class="ai-muted">result[key] shows one component; autointerp.write_report writes the full browsable report.</div>'
    )
    return f'{_STYLE}<div class="ai-view">{head}{_layer_rows(list(by_layer.items()))}{comp_table}</div>'


def _mean_scores_table(data: Any) -> str:
    """Each scorer's mean score for the labels and for both baselines."""
    means = []
    for s in data.scorers:
        cells = []
        for src in LABEL_SOURCES:
            vals = [
                r.score
                for by_src in data.scores[s].values()
                for k, r in by_src.items()
                if k == src and not r.skipped and r.score is not None and math.isfinite(r.score)
            ]
            cells.append(f"<td class=ai-num>{_fmt(sum(vals) / len(vals)) if vals else '–'}</td>")
        means.append(f"<tr><td>{escape(s)}</td>{''.join(cells)}</tr>")
    if not means:
        return ""
    return (
        "<h4>Mean scores</h4><table><tr><th>scorer</th><th>labels</th><th>random labels</th><th>token lookup</th></tr>"
        f"{''.join(means)}</table>"
    )


def _component_rows(data: Any, max_rows: int) -> tuple[list[str], int]:
    """The first ``max_rows`` components as table rows, and how many components there are."""
    rows = []
    summaries = data.summaries()  # index rows: nothing parsed for the components not shown
    n = len(summaries)
    for c in summaries[:max_rows]:
        key = c.key
        interp = data.interpretations.get(key)
        label = escape(interp.label) if interp else '<span class="ai-muted">–</span>'
        conf = escape(interp.confidence) if interp else ""
        sc = "".join(f"<td class=ai-num>{_fmt(_score_of(data, s, key))}</td>" for s in data.scorers)
        rows.append(
            f"<tr><td class=ai-key>{escape(key)}</td><td>{label}</td><td>{conf}</td>"
            f"<td class=ai-num>{_fmt(c.firing_rate)}</td>{sc}</tr>"
        )
    return rows, n


def run_html(data: Any, *, max_rows: int = 30) -> str:
    """A run (`RunData`): summary, mean scores against baselines, and the first components with labels."""
    by_layer: dict[str, list[float]] = {}
    for r in data.summaries():
        by_layer.setdefault(r.layer, []).append(r.firing_rate)
    rows, n = _component_rows(data, max_rows)
    more = n - max_rows
    head = (
        f'<div><b>{escape(data.name or "run")}</b> <span class="ai-muted">{n:,} components · '
        f"{len(data.interpretations):,} labeled" + (f" · {data.n_failures:,} failed" if data.n_failures else "") + "</span></div>"
    )
    comp_table = (
        "<h4>Components</h4><table><tr><th>component</th><th>label</th><th>confidence</th><th>rate</th>"
        + "".join(f"<th>{escape(s)}</th>" for s in data.scorers)
        + f"</tr>{''.join(rows)}</table>"
        + (f'<div class="ai-muted">… {more:,} more: run[key] shows one, run.write_report() writes them all.</div>' if more > 0 else "")
    )
    return f'{_STYLE}<div class="ai-view">{head}{_layer_rows(list(by_layer.items()))}{_mean_scores_table(data)}{comp_table}</div>'


def _score_of(data: Any, scorer: str, key: str) -> float | None:
    return score_value(headline(data.scores.get(scorer, {}).get(key, {})))


def _thresholds(cfg: Any) -> str:
    """The harvest's threshold, or each layer's when they differ (escaped)."""
    per = getattr(cfg, "layer_thresholds", None)
    if per and len(set(per.values())) > 1:
        return "; ".join(f"{escape(layer)} {_fmt(v)}" for layer, v in per.items())
    return _fmt(cfg.threshold)
