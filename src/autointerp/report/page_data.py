"""The report's pages as plain dicts: a run's `RunData` shaped for the viewer.

The middle step of read -> shape -> write: nothing here reads or writes a file.
`ReportPages` shapes one run's report a chunk of components at a time (a run of
50,000 components is never all in memory): per component the detail a
component page shows (`component_detail`), per layer the index rows
(`autointerp.report.layer_index`), and once at the end the manifest the page
starts from. The exporter reuses the run summary, the score means and the
token-style guess.
"""

from __future__ import annotations

import gc
import itertools
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from attrs import define, field

from autointerp.batch import ComponentSpace
from autointerp.report.extras import EXTRAS_RENDERERS, ExtrasRenderer
from autointerp.report.layer_index import IndexRow, LayerIndex
from autointerp.report.numbers import clean_json, f4, loads, num
from autointerp.report.run_data import RunData
from autointerp.report.score_sources import LABEL_SOURCES, headline as headline_result
from autointerp.report.tokens import (TOKEN_STYLES, TokenForms, decode_runs, detect_token_style, display_tokens,
                                      single_token_text, style_for)
from autointerp.paths import HARVEST_STORE
from autointerp.records import HARVEST_FIX, is_neighbour_pass
from autointerp.token_text import TOKENIZER_KINDS, vocab_token_text
from autointerp.schemas import ComponentData, ScoreResult
from autointerp.storage import CorruptRunFile, from_dict, schema_problem

#: components per lazily loaded data file
DEFAULT_CHUNK_SIZE = 64
MANIFEST_FORMAT = "autointerp.report/1"
_TOKEN_TABLES = ("top_precision", "top_recall", "top_pmi")
_CORR_TABLES = ("top_precision", "top_recall", "top_pmi", "bottom_pmi")


@define
class ReportOptions:
    """How a report is written; the keyword arguments of `write_report`.

    ``token_style`` is ``"auto"``, ``"gpt2"``, ``"sentencepiece"`` or ``"plain"``
    (see `autointerp.report.tokens`); ``extras_renderers`` maps an extras name
    to JS source (or an `ExtrasRenderer`) for this report only, on top of
    `register_extras_renderer`; ``workers`` > 1 renders chunks in that many processes.
    ``comparisons``: `autointerp.compare.LabelSetComparison`s (or their ``to_dict()``)
    of this label set with others, each shown on a page of its own.
    """

    title: str | None = None
    token_style: str = "auto"
    extras_renderers: Mapping[str, str | ExtrasRenderer] | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_examples: int | None = None
    workers: int = 1
    comparisons: Sequence[Any] = ()

    def __attrs_post_init__(self) -> None:
        if self.token_style not in TOKEN_STYLES:
            raise ValueError(f"token_style must be one of {TOKEN_STYLES}, got {self.token_style!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


# -- token style -----------------------------------------------------------------------


def _iter_token_strings(components: list[dict[str, Any]], limit: int = 200_000) -> Iterable[str]:
    n = 0
    for c in components:
        for fname in ("top_examples", "examples"):
            for ex in c.get(fname) or []:
                for t in ex.get("tokens") or []:
                    yield t
                    n += 1
                    if n >= limit:
                        return
        for fname in ("input_tokens", "output_tokens"):
            stats = c.get(fname) or {}
            for table in _TOKEN_TABLES:
                for s in stats.get(table) or []:
                    if s.get("token"):
                        yield s["token"]


def peek_token_style(stream: Iterator[dict[str, Any]], token_style: str = "auto",
                     tokenizer_kind: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Guess the token style from the first components of a stream (until enough tokens are seen).

    A harvest that recorded its ``tokenizer_kind`` needs no guess. Returns the style
    and the components read, which the caller processes before the rest.
    """
    token_style = style_for(token_style, tokenizer_kind)
    if token_style != "auto":
        return token_style, []
    head: list[dict[str, Any]] = []
    n_tokens = 0
    for c in stream:
        head.append(c)
        for ex in (c.get("examples") or [])[:2]:
            n_tokens += len(ex.get("tokens") or [])
        if n_tokens >= 20_000 or len(head) >= 4096:
            break
    return detect_token_style(_iter_token_strings(head)), head


# -- one component's page --------------------------------------------------------------


class ChunkTokens:
    """The tokens of one chunk: every window keeps its raw tokens, and the chunk carries one table
    row per distinct token (`TokenForms`), so shaping a chunk does no Python per occurrence of a
    token: ``[raw, in_window, first, alone]``, each form None where it equals its fallback
    (in_window: the raw token; first: in_window; alone: the raw token), and for a token whose text
    depends on its neighbours (`needs_whole_window`) a fifth entry, its bytes in hex; tokens whose
    forms are all their fallbacks are left out.

    The viewer (`report.js`, ``expandChunk``) and `expand_chunk` here turn a chunk back into one
    display string per token; both are checked against `display_tokens`.
    """

    def __init__(self, forms: TokenForms, rows_cache: dict[Any, list[Any] | None] | None = None):
        self.forms = forms
        # each token's table row (None: nothing to say), made once per process (`ChunkShaper` keeps it)
        self._cache: dict[Any, list[Any] | None] = {} if rows_cache is None else rows_cache
        self._lists: list[list[Any]] = []
        self._rows: list[list[Any]] = []

    def windows(self, token_lists: list[list[Any]]) -> None:
        self._lists.extend(token_lists)

    def rows(self, rows: list[Mapping[str, Any]], fields: tuple[str, ...]) -> list[Any]:
        """Table rows as ``[token, token_id, *fields]`` lists (their tokens go into the token table)."""
        getter = _ROW_GETTERS.get(fields) or operator.itemgetter("token", "token_id", *fields)
        try:
            out = list(map(getter, rows))
        except (KeyError, TypeError):  # a record without some field: read each as the schema's default
            out = [tuple(r.get(k) for k in ("token", "token_id", *fields)) for r in rows]
        self._rows.append(out)
        return out

    def table(self) -> list[list[Any]]:
        """The chunk's token table (sorted by token, so a chunk's bytes do not depend on set order)."""
        seen: set[Any] = set().union(*self._lists)
        seen.update(map(_FIRST, itertools.chain.from_iterable(self._rows)))
        cache = self._cache
        new = seen.difference(cache)
        if new:
            forms = self.forms
            forms.learn(new)
            whole = forms.whole
            for t in new:
                cache[t] = self._row(t, forms, whole)
        rows = list(filter(None, map(cache.__getitem__, seen)))
        rows.sort(key=_FIRST)
        return rows

    @staticmethod
    def _row(t: Any, forms: TokenForms, whole: set[Any]) -> list[Any] | None:
        if not isinstance(t, str):
            return None
        if t in whole:
            alone = forms.alone(t)
            return [t, None, None, None if alone == t else alone, forms.run_bytes(t).hex()]
        mid, first, alone = forms.forms(t)
        if mid != t or first != mid or alone != t:
            return [t, None if mid == t else mid, None if first == mid else first, None if alone == t else alone]
        return None


_FIRST = operator.itemgetter(0)
_ROW_GETTERS = {f: operator.itemgetter("token", "token_id", *f) for f in (("count", "precision", "recall", "pmi"), ("logit",))}


_EXAMPLE = operator.itemgetter("tokens", "activations", "firing_offset", "sequence_index", "position")
_EXAMPLE_FIELDS = ("tokens", "activations", "firing_offset", "sequence_index", "position")
_EXAMPLE_DEFAULTS = (None, [], 0, None, None)


def examples_view(exs: list[Mapping[str, Any]], tokens: ChunkTokens) -> dict[str, list[Any]]:
    """A list of examples as a chunk holds it, by column: raw tokens ``t`` (their text from the
    chunk's token table), activations ``a`` as recorded, firing offsets ``f``, sequences ``s`` and
    positions ``p``; ``i``, the token ids, where some example recorded no token strings. Columns
    are made by C-level maps, so an example costs no Python of its own."""
    try:
        rows = list(map(_EXAMPLE, exs))
    except (KeyError, TypeError):  # a record without some field: read each as the schema's default
        rows = [tuple(e.get(k, d) for k, d in zip(_EXAMPLE_FIELDS, _EXAMPLE_DEFAULTS)) for e in exs]
    cols = list(map(list, zip(*rows))) if rows else [[], [], [], [], []]
    view = dict(zip(("t", "a", "f", "s", "p"), cols))
    toks = view["t"]
    if not all(toks):
        view["i"] = [e.get("token_ids") or [] for e in exs]
        toks = [t for t in toks if t]
    tokens.windows(toks)
    return view


_STATS = ("count", "precision", "recall", "pmi")


def _token_rows(stats: Mapping[str, Any] | None, tokens: ChunkTokens) -> dict[str, list[Any]] | None:
    """Token-table rows ``[token, token_id, count, precision, recall, pmi]`` as recorded."""
    if not stats:
        return None
    return {table: tokens.rows(stats.get(table) or [], _STATS) for table in _TOKEN_TABLES}


def _logit_rows(lens: Mapping[str, Any] | None, tokens: ChunkTokens) -> dict[str, Any] | None:
    """A `LogitLens` as ``{"source", "promoted": [[token, token_id, logit]], "suppressed": [...]}``, as recorded."""
    if not lens:
        return None
    return {"source": lens.get("source") or "",
            **{table: tokens.rows(lens.get(table) or [], ("logit",)) for table in ("promoted", "suppressed")}}


def _quantile_views(groups: list[Mapping[str, Any]] | None, tokens: ChunkTokens, max_examples: int | None) -> list[dict[str, Any]]:
    return [{"lower_share": num(q.get("lower_share", 0.0)), "upper_share": num(q.get("upper_share", 0.0)),
             "lower": num(q.get("lower")), "upper": None if q.get("upper") is None else num(q.get("upper")),
             "count": q.get("count", 0), "examples": examples_view((q.get("examples") or [])[:max_examples], tokens)}
            for q in groups or []]


_PARTNER = operator.itemgetter("key", "count", "precision", "recall", "pmi")


def _corr_rows(corr: Mapping[str, Any] | None) -> dict[str, list[Any]] | None:
    """Partner rows ``[key, count, precision, recall, pmi]`` as recorded."""
    if not corr:
        return None
    out = {}
    for table in _CORR_TABLES:
        rows = corr.get(table) or []
        try:
            out[table] = list(map(_PARTNER, rows))
        except (KeyError, TypeError):
            out[table] = [[p.get(k) for k in ("key", "count", "precision", "recall", "pmi")] for p in rows]
    return out


def _score_cell(r: ScoreResult) -> dict[str, Any]:
    return {
        "score": None if r.skipped else num(r.score),
        "skipped": r.skipped,
        "reason": r.reason,
        "label": r.label,
        "n": r.n_trials,
        "metrics": {k: num(v) for k, v in (r.metrics or {}).items() if isinstance(v, (int, float))},
        "model": r.model,
    }


def _interp_view(interp: Any) -> dict[str, Any] | None:
    if interp is None:
        return None
    return {
        "label": interp.label,
        "confidence": interp.confidence,
        "reasoning": interp.reasoning,
        "model": interp.model,
        "template": interp.template_name,
        "created_at": interp.created_at,
        # the label of the neighbour pass (interpret --neighbours): "first_pass" says what the first said
        "neighbour_pass": is_neighbour_pass(interp),
    }


def vocab_token_view(token: str | None, token_id: Any, style: str) -> str:
    """One vocabulary token on its own (an output candidate list) as the text it adds: by the
    harvest's tokenizer kind (`autointerp.token_text.vocab_token_text`), else by the token style."""
    if token is None:
        return f"⟨{token_id}⟩"
    if style in TOKENIZER_KINDS:
        return vocab_token_text(token, style)
    return single_token_text(token, style)


def output_trials_view(result: ScoreResult | None, style: str) -> list[dict[str, Any]] | None:
    """The output scorer's trials of a label (`autointerp.scoring.output`): per trial the candidate
    lists as text (``{"key", "t"}``), the component's own (``truth``) and the judge's pick (``answer``);
    None when there are none to show (skipped, or scored before the trials were recorded)."""
    if result is None or result.skipped:
        return None
    details = result.details or {}
    trials, windows = details.get("trials"), details.get("windows")
    if not isinstance(trials, list) or not isinstance(windows, list) or len(trials) != len(windows):
        return None
    out = []
    for t, lists in zip(trials, windows):
        shown = []
        for ref in lists:
            ids = list(ref.get("token_ids") or [])
            toks = ref.get("tokens")
            toks = list(toks) if isinstance(toks, list) and len(toks) == len(ids) else [None] * len(ids)
            shown.append({"key": ref.get("component_key"), "t": [vocab_token_view(tok, i, style) for tok, i in zip(toks, ids)]})
        out.append({"truth": t.get("truth"), "answer": t.get("answer"), "lists": shown})
    return out


def _window_view(w: Mapping[str, Any], style: str) -> dict[str, Any]:
    """A validation window a revision prompt showed: display tokens, activations, marked offsets, where."""
    tokens = list(w.get("tokens") or [])
    return {"t": display_tokens(tokens, style) if tokens else [], "a": [num(a) for a in w.get("activations") or []],
            "m": list(w.get("marked") or []), "s": w.get("sequence_index"), "p": w.get("start")}


def _mistake_counts(rnd: Any) -> tuple[int, int]:
    wrong = rnd.wrong or []
    return sum(bool(e.get("miss")) for e in wrong), sum(bool(e.get("false_positive")) for e in wrong)


def refinement_view(history: Any, interp: Any, first_pass: Any, style: str,
                    max_examples: int | None = None) -> dict[str, Any] | None:
    """A component's refinement (`autointerp.records.RefinementHistory`) as the page shows it.

    Per round: its label, validation scores and mistakes, whether it was kept, and for a
    revision what it was shown (the round it revised, the totals of that label's misses and
    false positives, and the windows: ``shown.misses`` / ``shown.false_positives``, null
    where the record predates them). ``finished``: the label set holds the refined label.
    """
    if history is None or not history.rounds:
        return None
    result = next((r for r in (interp, first_pass) if r is not None and r.refinement is not None), None)
    ref = result.refinement if result is not None else None
    kept = ref.chosen_round if ref is not None else None
    by_round = {r.round: r for r in history.rounds}
    rounds = []
    for r in history.rounds:
        misses, fps = _mistake_counts(r)
        view: dict[str, Any] = {
            "round": r.round, "kind": r.kind, "label": r.label, "confidence": r.confidence, "reasoning": r.reasoning,
            "score": num(r.score), "scores": {k: num(v) for k, v in (r.scores or {}).items()},
            "n_windows": r.n_windows, "misses": misses, "false_positives": fps, "reason": r.reason,
            "revised_from": r.revised_from, "kept": r.round == kept, "cost_usd": num(r.cost_usd, 6), "shown": None,
        }  # fmt: skip
        shown = history.shown.get(r.round)
        if isinstance(shown, Mapping):
            view["shown"] = {
                "revised_from": shown.get("revised_from", r.revised_from),
                "n_misses": shown.get("n_misses"), "n_false_positives": shown.get("n_false_positives"),
                "misses": [_window_view(w, style) for w in (shown.get("misses") or [])[:max_examples]],
                "false_positives": [_window_view(w, style) for w in (shown.get("false_positives") or [])[:max_examples]],
            }  # fmt: skip
        elif r.kind == "revision" and r.revised_from in by_round:
            m, f = _mistake_counts(by_round[r.revised_from])  # the totals are known; the windows were not recorded
            view["shown"] = {"revised_from": r.revised_from, "n_misses": m, "n_false_positives": f,
                             "misses": None, "false_positives": None}
        rounds.append(view)
    return {
        "rounds": rounds, "kept": kept, "finished": ref is not None, "stopped": ref.stopped if ref is not None else "",
        "first_score": num(ref.first_validation_score) if ref is not None else None,
        "kept_score": num(ref.validation_score) if ref is not None else None,
        "cost_usd": num(ref.cost_usd, 6) if ref is not None else None,
    }  # fmt: skip


def component_detail(c: Mapping[str, Any], run: RunData, tokens: ChunkTokens, max_examples: int | None) -> dict[str, Any]:
    """Everything one component page shows, as plain JSON-ready values (the evidence mostly as
    recorded: the viewer rounds and renders it, see `expand_chunk`); its tokens go into ``tokens``."""
    key = c["key"]
    style = tokens.forms.style
    scores = {
        scorer: {src: _score_cell(r) for src, r in by_src.items()} for scorer, by_src in run.component_scores(key).items()
    }
    interp, first = run.interpretations.get(key), run.first_pass.get(key)
    ex = (c.get("examples") or [])[:max_examples]
    top = (c.get("top_examples") or [])[:max_examples]
    return {
        "key": key,
        "layer": c.get("layer"),
        "index": c.get("index"),
        "firing_count": c.get("firing_count", 0),
        "firing_rate": num(c.get("firing_rate", 0.0), 6),
        "mean_activation": num(c.get("mean_activation", 0.0)),
        "max_activation": num(c.get("max_activation", 0.0)),
        "early_firing_share": num(c.get("early_firing_share", 0.0)),
        "fires_early": bool(c.get("fires_early", False)),
        "interp": _interp_view(interp),
        "first_pass": _interp_view(first),
        "refinement": refinement_view(run.refinement.get(key), interp, first, style, max_examples),
        "scores": scores,
        "output_trials": output_trials_view(headline_result(run.scores.get("output", {}).get(key) or {}), style),
        "examples": examples_view(ex, tokens),
        "top_examples": examples_view(top, tokens),
        # non-finite numbers (an in-memory harvest) become null where the chunk is encoded (`safe_json`)
        "histogram": c.get("histogram") or None,
        "quantile_examples": _quantile_views(c.get("quantile_examples"), tokens, max_examples),
        "input_tokens": _token_rows(c.get("input_tokens"), tokens),
        "output_tokens": _token_rows(c.get("output_tokens"), tokens),
        "output_logits": _logit_rows(c.get("output_logits"), tokens),
        "correlations": _corr_rows(c.get("correlations")),
        "extras": c.get("extras") or {},
    }


# -- a chunk as the viewer reads it ----------------------------------------------------


def _r3(a: Any) -> Any:
    return a if a is None else float("%.3g" % a) if a else 0


def _alone(tok: Any, token_id: Any, forms: Mapping[str, list[Any]]) -> str:
    if tok is None:
        return f"⟨{token_id}⟩"
    row = forms.get(tok)
    return row[3] if row is not None and row[3] is not None else tok


def _window_texts(ex: Mapping[str, Any], forms: Mapping[str, list[Any]], drops_first_space: bool) -> list[str]:
    if ex.get("t") is None:
        return [f"⟨{i}⟩" for i in ex.get("i") or []]
    texts: list[str | None] = []
    run_bytes: list[bytes | None] = []
    for i, t in enumerate(ex["t"]):
        row = forms.get(t) if isinstance(t, str) else [t, "", None, None]
        if row is not None and len(row) > 4:
            texts.append(None)
            run_bytes.append(bytes.fromhex(row[4]))
            continue
        mid = row[1] if row is not None and row[1] is not None else t
        texts.append(row[2] if i == 0 and row is not None and row[2] is not None else mid)
        run_bytes.append(None)
    return decode_runs(texts, run_bytes, drops_first_space)


def expand_chunk(chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The page details of a chunk as the viewer draws them (``expandChunk`` in `report.js` does
    the same): per example ``t`` one display string per token and ``a`` rounded to 3 significant
    digits; token-table rows ``[text, token_id, count, precision, recall, pmi]``, partner rows
    ``[key, count, precision, recall, pmi]`` and logit rows ``[text, token_id, logit]``, numbers
    to 4 digits (`f4`). The tests read chunks through it; the browser test checks the viewer agrees."""
    forms = {row[0]: row for row in chunk["tt"]}
    drops = bool(chunk.get("sp"))

    def examples(cols: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
        ids = cols.get("i")
        return [{"t": _window_texts({"t": t or None, "i": ids[k] if ids else []}, forms, drops),
                 "a": [_r3(a) for a in cols["a"][k] or []], "f": cols["f"][k], "s": cols["s"][k], "p": cols["p"][k]}
                for k, t in enumerate(cols["t"])]

    out = []
    for d in chunk["c"]:
        d = dict(d)
        for name in ("examples", "top_examples"):
            d[name] = examples(d[name])
        d["quantile_examples"] = [{**q, "examples": examples(q["examples"])} for q in d.get("quantile_examples") or []]
        for name in ("input_tokens", "output_tokens"):
            if d.get(name):
                d[name] = {t: [[_alone(r[0], r[1], forms), r[1], *map(f4, r[2:])] for r in rows] for t, rows in d[name].items()}
        if d.get("output_logits"):
            lens = d["output_logits"]
            d["output_logits"] = {"source": lens.get("source") or "",
                                  **{t: [[_alone(r[0], r[1], forms), r[1], f4(r[2])] for r in lens.get(t) or []]
                                     for t in ("promoted", "suppressed")}}
        if d.get("correlations"):
            d["correlations"] = {t: [[p[0], p[1], *map(f4, p[2:])] for p in rows] for t, rows in d["correlations"].items()}
        out.append(d)
    return out


def index_row(c: Mapping[str, Any]) -> IndexRow:
    """What the index keeps of a component (the rest waits in its chunk)."""
    layer = c.get("layer") or ComponentSpace.split_key(str(c["key"]))[0]
    return (c["key"], layer, c.get("index"), float(c.get("firing_rate") or 0.0), c.get("firing_count", 0))


@define
class ChunkShaper:
    """Shapes a chunk of components; small enough to send to each worker process.

    Raw JSON lines (what a worker gets) are parsed here, and with ``check_schema``
    each is structured as a `ComponentData` first, in the worker: a line that is not
    JSON or breaks the schema is a `CorruptRunFile` naming ``source`` and the component.
    """

    data: RunData  # labels and scores; components reach it separately
    style: str
    max_examples: int | None
    check_schema: bool = False
    source: str = "components.jsonl"
    _forms: TokenForms | None = field(default=None, init=False, eq=False)
    _token_rows: dict[Any, list[Any] | None] = field(factory=dict, init=False, eq=False)

    def shape(self, items: list[Any], keys: list[str] | None = None) -> tuple[dict[str, Any], list[IndexRow]]:
        """Component dicts (or their raw JSON lines) -> (their chunk, their index rows).

        ``keys``: the components the lines must be (the harvest's index says where each is).

        The chunk is ``{"tt": token table, "c": page details}``, with ``"sp": true`` when a window's
        first text drops its leading space (`ChunkTokens`, `expand_chunk`).
        """
        if self._forms is None:  # each process learns the tokens it meets once
            self._forms = TokenForms(self.style)
            self._token_rows = {}
        tokens = ChunkTokens(self._forms, self._token_rows)
        # a chunk's objects hold no cycles: the cyclic collector would only walk them again and again
        collecting = gc.isenabled()
        gc.disable()
        try:
            comps = parse_components(items, keys, self.check_schema, self.source)
            details = [component_detail(c, self.data, tokens, self.max_examples) for c in comps]
            rows = [index_row(c) for c in comps]
        finally:
            if collecting:
                gc.enable()
        chunk = {"tt": tokens.table(), "c": details}
        if self._forms.drops_first_space:
            chunk["sp"] = True
        return chunk, rows


def parse_components(items: list[Any], keys: list[str] | None, check_schema: bool, source: str) -> list[dict[str, Any]]:
    """`parse_component` of each item; with ``keys`` (where the harvest's index says the lines are),
    each must be that component's record."""
    comps = [parse_component(item, check_schema, source) for item in items]
    if keys is not None and [c.get("key") for c in comps] != keys:
        key = next(k for c, k in zip(comps, keys) if c.get("key") != k)
        raise CorruptRunFile(source, None, f"another line where the harvest's index puts {key!r}",
                             "the record the index points to (the file was changed in place without "
                             "changing its size or time)", f"delete {HARVEST_STORE} beside it and run again")
    return comps


def parse_component(item: Any, check_schema: bool = False, source: str = "components.jsonl") -> dict[str, Any]:
    """A component dict from a dict or a raw line; lines are checked (JSON, and the schema if asked)."""
    if not isinstance(item, (bytes, str)):
        return item
    expected = "one ComponentData JSON object per line"
    try:
        rec = loads(item)
    except (ValueError, UnicodeDecodeError) as e:
        # the parent passed only lines that start with the expected key: this one is damaged further on
        raise CorruptRunFile(source, None, f"a line that is not JSON ({e})", expected, HARVEST_FIX) from None
    if not isinstance(rec, dict):
        raise CorruptRunFile(source, None, "a JSON value that is not an object", expected, HARVEST_FIX)
    if check_schema:
        try:
            from_dict(rec, ComponentData)
        except CorruptRunFile:
            raise
        except Exception as e:  # noqa: BLE001 - cattrs' errors, reported as the records reader does
            raise CorruptRunFile(source, None, f"the record of {rec.get('key')!r} breaks the schema "
                                               f"({schema_problem(e)})", expected, HARVEST_FIX) from None
    return rec


# -- the run as a whole ----------------------------------------------------------------


def score_means(run: RunData) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """``{scorer: {label source: {"mean", "n"}}}`` over the scored (not skipped) lines."""
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for scorer, by_key in run.scores.items():
        sums: dict[str, list[float]] = {}
        for by_src in by_key.values():
            for src, r in by_src.items():
                if not r.skipped and r.score is not None and math.isfinite(r.score):
                    sums.setdefault(src, []).append(r.score)
        out[scorer] = {src: {"mean": num(sum(v) / len(v)), "n": len(v)} for src, v in sums.items()}
    return out


def run_summary(run: RunData) -> dict[str, Any]:
    """The harvest's settings a reader of the report or an export wants to see."""
    cfg = run.config
    return {
        "n_tokens": cfg.get("n_tokens"),
        "n_batches": cfg.get("n_batches"),
        "threshold": cfg.get("threshold"),
        # {layer: threshold} when the layers fire above different ones (else null: `threshold` for all)
        "layer_thresholds": (clean_json(lt) if isinstance(lt := cfg.get("layer_thresholds"), Mapping)
                             and len(set(lt.values())) > 1 else None),
        "vocab_size": cfg.get("vocab_size"),
        "created_at": cfg.get("created_at"),
        "autointerp_version": cfg.get("autointerp_version"),
        "model": clean_json(cfg.get("model") or {}),
        "dataset": clean_json(cfg.get("dataset") or {}),
        "accumulators": [a.get("type") for a in cfg.get("accumulators") or [] if isinstance(a, Mapping)],
    }


class ReportPages:
    """One run's report, shaped lazily: components stream through `shaper`, rows into `index`.

    The components are read once, when the writer iterates `components()`;
    `manifest` is complete only after that.
    """

    def __init__(self, data: RunData, options: ReportOptions):
        self.data, self.options = data, options
        self._stream = data.iter_components()
        self.token_style, self._head = peek_token_style(self._stream, options.token_style,
                                                        data.config.get("tokenizer_kind"))
        self.title = options.title or (f"autointerp — {data.name}" if data.name else "autointerp report")
        self.extras_scripts = EXTRAS_RENDERERS.scripts(options.extras_renderers)
        self.shaper = ChunkShaper(data.without_components(), self.token_style, options.max_examples,
                                  check_schema=not data.schema_checked, source=str(data.components_path or ""))
        self.index = LayerIndex(data)

    def components(self) -> Iterator[dict[str, Any]]:
        """Every component once, the ones peeked at for the token style first."""
        return itertools.chain(self._head, self._stream)

    def manifest(self, layer_meta: list[dict[str, Any]], n_chunks: int) -> dict[str, Any]:
        """What the page reads first: the run, its layers, its scorers and how the data is cut."""
        return {
            "format": MANIFEST_FORMAT,
            "title": self.title,
            "run": self.data.name,
            "n_components": sum(m["n"] for m in layer_meta),
            "n_labeled": self.index.n_labeled,
            "n_failures": self.data.n_failures,
            "scorers": self.data.scorers,
            "label_sources": list(LABEL_SOURCES),
            "score_means": score_means(self.data),
            "layers": layer_meta,
            "chunk_size": self.options.chunk_size,
            "n_chunks": n_chunks,
            "token_style": self.token_style,
            "summary": run_summary(self.data),
            "extras_renderers": sorted(self.extras_scripts),
            "label_set": self.data.label_set,
            "comparisons": [clean_json(c if isinstance(c, Mapping) else c.to_dict()) for c in self.options.comparisons],
        }
