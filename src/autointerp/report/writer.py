"""Write a run as a static HTML report that opens from disk, with no network.

Layout of ``<out_dir>/``::

    index.html                 the page; the run summary is embedded as inert JSON
    assets/report.js, .css     the viewer (vanilla JS, no CDN, no web fonts)
    assets/extras/<name>.js    renderers for custom accumulators' extras
    data/layer-<i>.js          one per layer: the index rows (key, label, rate, scores)
    data/c/<n>.js              chunk n: 64 consecutive components' examples, tokens, partners

Pages opened from ``file://`` cannot ``fetch`` JSON, so data files are scripts
that hand their JSON to a global callback; the page loads the layer files at
start and a component's chunk only when the component is opened, which keeps a
run of 50,000 components fast. Everything from the run (tokens, labels,
reasoning, layer names) is put into the page with ``textContent``; the JSON is
written with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped so no string can
close a script element.

>>> write_report(RunPaths.of("demo"))          # doctest: +SKIP
PosixPath('.data/autointerp/demo/report/index.html')
"""

from __future__ import annotations

import collections
import html
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from attrs import define

from autointerp.paths import RunPaths
from autointerp.report.run import LABEL_SOURCES, RunData, headline
from autointerp.report.tokens import TOKEN_STYLES, detect_token_style, display_tokens, single_token_text
from autointerp.schemas import ScoreResult
from autointerp.storage import replace_dir_atomically

#: components per lazily loaded data file
DEFAULT_CHUNK_SIZE = 64
HIST_BINS = 24
_TOKEN_TABLES = ("top_precision", "top_recall", "top_pmi")
_CORR_TABLES = ("top_precision", "top_recall", "top_pmi", "bottom_pmi")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


# -- extras renderers ------------------------------------------------------------------


@define
class ExtrasRenderer:
    """How a custom accumulator's output (``ComponentData.extras[name]``) is shown.

    ``js`` is the source of a script that calls
    ``AUTOINTERP.registerExtras(name, function (value, container, h) {...})``
    and builds DOM with ``h.el(tag, attrs, text)`` (text goes in as textContent).
    ``html`` renders the same value for notebooks; it must escape what it shows.
    Either may be None: the generic view (a bar chart for a list of numbers,
    indented JSON otherwise) is used in its place.
    """

    name: str
    js: str | None = None
    html: Callable[[Any], str] | None = None


EXTRAS_RENDERERS: dict[str, ExtrasRenderer] = {}


def register_extras_renderer(
    name: str,
    js: str | os.PathLike | None = None,
    html: Callable[[Any], str] | None = None,
    *,
    replace: bool = False,
) -> ExtrasRenderer:
    """Register how the report and notebooks show ``extras[name]``.

    ``js`` is JavaScript source, or a path to a ``.js`` file. Registering a name
    twice is refused unless ``replace=True``.

    >>> register_extras_renderer("activation_histogram", js='''
    ... AUTOINTERP.registerExtras("activation_histogram", function (value, box, h) {
    ...   box.appendChild(h.bars(value, {title: "activation histogram"}));
    ... });''')                                     # doctest: +SKIP
    """
    if name in EXTRAS_RENDERERS and not replace:
        raise ValueError(f"an extras renderer named {name!r} is already registered; pass replace=True to swap it")
    if js is not None and not isinstance(js, str):
        js = Path(js).read_text(encoding="utf-8")
    elif isinstance(js, str) and js.endswith(".js") and "\n" not in js and Path(js).is_file():
        js = Path(js).read_text(encoding="utf-8")
    r = ExtrasRenderer(name, js, html)
    EXTRAS_RENDERERS[name] = r
    return r


# -- JSON that is safe inside HTML and JS ----------------------------------------------

_JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JS_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def safe_json(obj: Any) -> str:
    """JSON that cannot end a ``<script>`` element or break a JS string literal.

    ``<``, ``>`` and ``&`` occur in JSON only inside strings, where ``\\u003c``
    means the same character, so the result parses to the same value.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # NaN or infinity (possible in an in-memory harvest): JSON has no such numbers
        text = json.dumps(_clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _JS_ESCAPE_RE.sub(lambda m: _JS_ESCAPES[m.group(0)], text)


def _num(x: Any, digits: int = 4) -> float | int | None:
    if x is None:
        return None
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0:
        return 0
    return float(f"{x:.{digits}g}")


def _f4(x: Any) -> Any:
    """4 significant digits, fast: the token and partner tables hold most numbers of a report.
    (0 and None pass through; a NaN from an in-memory harvest is caught by `safe_json`.)"""
    return float("%.4g" % x) if x else x


def _clean(value: Any) -> Any:
    """Make an extras value JSON-safe: non-finite floats become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _clean(tolist())
    return str(value)


# -- building the data -----------------------------------------------------------------


def _iter_token_strings(components: list[dict[str, Any]], limit: int = 200_000) -> Iterable[str]:
    n = 0
    for c in components:
        for field in ("top_examples", "examples"):
            for ex in c.get(field) or []:
                for t in ex.get("tokens") or []:
                    yield t
                    n += 1
                    if n >= limit:
                        return
        for field in ("input_tokens", "output_tokens"):
            stats = c.get(field) or {}
            for table in _TOKEN_TABLES:
                for s in stats.get(table) or []:
                    if s.get("token"):
                        yield s["token"]


def peek_token_style(stream: Iterator[dict[str, Any]], token_style: str = "auto") -> tuple[str, list[dict[str, Any]]]:
    """Guess the token style from the first components of a stream (until enough tokens are seen).

    Returns the style and the components read, which the caller processes before the rest.
    """
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


def _example(ex: Mapping[str, Any], style: str) -> dict[str, Any]:
    tokens = ex.get("tokens")
    ids = ex.get("token_ids") or []
    shown = display_tokens(list(tokens), style) if tokens else [f"⟨{i}⟩" for i in ids]
    return {
        "t": shown,
        # most activations in a window are exactly 0; this list is the bulk of the report
        "a": [float("%.3g" % a) if a else 0 for a in ex.get("activations") or []],
        "f": ex.get("firing_offset", 0),
        "s": ex.get("sequence_index"),
        "p": ex.get("position"),
    }


def _token_rows(stats: Mapping[str, Any] | None, style: str) -> dict[str, list[list[Any]]] | None:
    if not stats:
        return None
    out = {}
    for table in _TOKEN_TABLES:
        rows = []
        for s in stats.get(table) or []:
            tok = s.get("token")
            text = single_token_text(tok, style) if tok is not None else f"⟨{s.get('token_id')}⟩"
            rows.append([text, s.get("token_id"), _f4(s.get("count")), _f4(s.get("precision")), _f4(s.get("recall")), _f4(s.get("pmi"))])
        out[table] = rows
    return out


def _corr_rows(corr: Mapping[str, Any] | None) -> dict[str, list[list[Any]]] | None:
    if not corr:
        return None
    return {
        table: [[p.get("key"), p.get("count"), _f4(p.get("precision")), _f4(p.get("recall")), _f4(p.get("pmi"))] for p in corr.get(table) or []]
        for table in _CORR_TABLES
    }


def _score_cell(r: ScoreResult) -> dict[str, Any]:
    return {
        "score": None if r.skipped else _num(r.score),
        "skipped": r.skipped,
        "reason": r.reason,
        "label": r.label,
        "n": r.n_trials,
        "metrics": {k: _num(v) for k, v in (r.metrics or {}).items() if isinstance(v, (int, float))},
        "model": r.model,
    }


def _component_detail(c: Mapping[str, Any], run: RunData, style: str, max_examples: int | None) -> dict[str, Any]:
    key = c["key"]
    interp = run.interpretations.get(key)
    scores = {
        scorer: {src: _score_cell(r) for src, r in by_src.items()} for scorer, by_src in run.component_scores(key).items()
    }
    ex = (c.get("examples") or [])[:max_examples]
    top = (c.get("top_examples") or [])[:max_examples]
    return {
        "key": key,
        "layer": c.get("layer"),
        "index": c.get("index"),
        "firing_count": c.get("firing_count", 0),
        "firing_rate": _num(c.get("firing_rate", 0.0), 6),
        "mean_activation": _num(c.get("mean_activation", 0.0)),
        "max_activation": _num(c.get("max_activation", 0.0)),
        "interp": None
        if interp is None
        else {
            "label": interp.label,
            "confidence": interp.confidence,
            "reasoning": interp.reasoning,
            "model": interp.model,
            "template": interp.template_name,
            "created_at": interp.created_at,
        },
        "scores": scores,
        "examples": [_example(e, style) for e in ex],
        "top_examples": [_example(e, style) for e in top],
        "input_tokens": _token_rows(c.get("input_tokens"), style),
        "output_tokens": _token_rows(c.get("output_tokens"), style),
        "correlations": _corr_rows(c.get("correlations")),
        "extras": _clean(c.get("extras") or {}),
    }


def _percentiles(rates: list[float]) -> list[float]:
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


def _histogram(rates: list[float]) -> dict[str, Any]:
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


def _score_means(run: RunData) -> dict[str, dict[str, dict[str, float | int | None]]]:
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for scorer, by_key in run.scores.items():
        sums: dict[str, list[float]] = {}
        for by_src in by_key.values():
            for src, r in by_src.items():
                if not r.skipped and r.score is not None and math.isfinite(r.score):
                    sums.setdefault(src, []).append(r.score)
        out[scorer] = {src: {"mean": _num(sum(v) / len(v)), "n": len(v)} for src, v in sums.items()}
    return out


def _asset(name: str) -> str:
    return resources.files("autointerp.report").joinpath(name).read_text(encoding="utf-8")


def _run_summary(run: RunData) -> dict[str, Any]:
    cfg = run.config
    return {
        "n_tokens": cfg.get("n_tokens"),
        "n_batches": cfg.get("n_batches"),
        "threshold": cfg.get("threshold"),
        "vocab_size": cfg.get("vocab_size"),
        "created_at": cfg.get("created_at"),
        "autointerp_version": cfg.get("autointerp_version"),
        "model": _clean(cfg.get("model") or {}),
        "dataset": _clean(cfg.get("dataset") or {}),
        "accumulators": [a.get("type") for a in cfg.get("accumulators") or [] if isinstance(a, Mapping)],
    }


class _LayerOut:
    """One layer's index rows while the report is being written."""

    def __init__(self, li: int, name: str, scorers: list[str]):
        self.li, self.name, self.scorers = li, name, scorers
        self.rows: dict[str, Any] = {
            "keys": [], "index": [], "label": [], "conf": [], "rate": [], "count": [], "ch": [], "off": [],
            "scores": {s: [] for s in scorers},
        }
        self.rates: list[float] = []

    def add_row(self, row: tuple[Any, ...], chunk: int, offset: int, data: RunData) -> Any:
        key, _, index, rate, count = row
        interp = data.interpretations.get(key)
        r = self.rows
        r["keys"].append(key)
        r["index"].append(index)
        r["label"].append(interp.label if interp else None)
        r["conf"].append(interp.confidence if interp else None)
        r["rate"].append(_num(rate, 6))
        r["count"].append(count)
        r["ch"].append(chunk)
        r["off"].append(offset)
        self.rates.append(rate)
        for s in self.scorers:
            res = headline(data.scores[s].get(key, {}))
            r["scores"][s].append(None if res is None or res.skipped else _num(res.score))
        return interp

    def finish(self, data_dir: Path) -> dict[str, Any]:
        self.rows["pct"] = _percentiles(self.rates)
        text = f"AUTOINTERP_LAYER({self.li},{safe_json(self.rows)});\n"
        (data_dir / f"layer-{self.li}.js").write_text(text, encoding="utf-8")
        return {"name": self.name, "n": len(self.rates), "hist": _histogram(self.rates)}


@define
class _RenderContext:
    """What rendering a chunk needs (sent once to each worker process)."""

    data: RunData  # labels and scores; components are streamed separately
    style: str
    max_examples: int | None
    chunk_dir: Path


_WORKER_CONTEXT: _RenderContext | None = None


def _init_worker(ctx: _RenderContext) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx


def _render_chunk(n: int, items: list[Any], ctx: _RenderContext | None = None) -> list[tuple[Any, ...]]:
    """Write ``data/c/<n>.js`` for a batch of components (dicts or raw JSON lines);
    return one index row (key, layer, index, rate, count) per component written."""
    ctx = ctx or _WORKER_CONTEXT
    assert ctx is not None
    comps = []
    for item in items:
        if isinstance(item, (bytes, str)):
            try:
                item = json.loads(item)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a torn line, as read_jsonl skips it
        comps.append(item)
    details = [_component_detail(c, ctx.data, ctx.style, ctx.max_examples) for c in comps]
    (ctx.chunk_dir / f"{n}.js").write_text(f"AUTOINTERP_CHUNK({n},{safe_json(details)});\n", encoding="utf-8")
    return [
        (
            c["key"],
            c.get("layer") or str(c["key"]).rsplit(":", 1)[0],
            c.get("index"),
            float(c.get("firing_rate") or 0.0),
            c.get("firing_count", 0),
        )
        for c in comps
    ]


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield batch


def _raw_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield line


def write_report(
    run: RunData | RunPaths | str | os.PathLike | Any,
    out_dir: str | os.PathLike | None = None,
    *,
    interpretations: Any = None,
    scores: Any = None,
    title: str | None = None,
    token_style: str = "auto",
    extras_renderers: Mapping[str, str | ExtrasRenderer] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_examples: int | None = None,
    workers: int = 1,
) -> Path:
    """Write the static report and return the path of its ``index.html``.

    ``run`` is a `RunPaths`, a run folder (holding ``harvest/``), a `RunData`,
    or a `HarvestResult` together with ``interpretations`` (InterpretationResult
    list) and ``scores`` (ScoreResult list). ``out_dir`` defaults to the run's
    ``report/`` folder; it is replaced as a whole, so a reader never sees a half
    written report. ``token_style`` is ``"auto"``, ``"gpt2"``,
    ``"sentencepiece"`` or ``"plain"`` (see `autointerp.report.tokens`).
    ``extras_renderers`` maps an extras name to JS source (or an
    `ExtrasRenderer`) for this report only, on top of `register_extras_renderer`.
    ``workers`` > 1 renders chunks in that many processes (a run read from disk).
    """
    if token_style not in TOKEN_STYLES:
        raise ValueError(f"token_style must be one of {TOKEN_STYLES}, got {token_style!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    paths: RunPaths | None = None
    if isinstance(run, RunData):
        data = run
    elif isinstance(run, (RunPaths, str, os.PathLike)):
        paths = run if isinstance(run, RunPaths) else RunPaths(Path(run))
        data = RunData.from_run(paths)
    elif hasattr(run, "components") and hasattr(run, "config"):
        data = RunData.from_objects(run, interpretations, scores)
    else:
        raise TypeError(f"write_report expects RunPaths, a run folder, RunData or HarvestResult, got {type(run).__name__}")
    if out_dir is None:
        if paths is None:
            raise ValueError("pass out_dir: this run was not read from a run folder, so there is no default report folder")
        out_dir = paths.report
    out_dir = Path(out_dir)

    stream = data.iter_components()
    style, head = peek_token_style(stream, token_style)
    renderers: dict[str, str] = {n: r.js for n, r in EXTRAS_RENDERERS.items() if r.js}
    for ext_name, r in (extras_renderers or {}).items():
        js = r.js if isinstance(r, ExtrasRenderer) else r
        if js:
            renderers[ext_name] = js
    extra_files = {f"{_SAFE_NAME.sub('_', n)}.js": js for n, js in sorted(renderers.items())}
    scorers = data.scorers
    name = data.name or (paths.run_id if paths else "")
    title = title or (f"autointerp — {name}" if name else "autointerp report")

    def fill(tmp: Path) -> None:
        (tmp / "assets" / "extras").mkdir(parents=True)
        (tmp / "data").mkdir()
        (tmp / "assets" / "report.js").write_text(_asset("report.js"), encoding="utf-8")
        (tmp / "assets" / "report.css").write_text(_asset("report.css"), encoding="utf-8")
        for fname, js in extra_files.items():
            (tmp / "assets" / "extras" / fname).write_text(js, encoding="utf-8")

        # One pass over the components: index rows stay in memory (small), the
        # evidence is written a chunk at a time, by worker processes if asked.
        chunk_dir = tmp / "data" / "c"
        chunk_dir.mkdir()
        layers: dict[str, _LayerOut] = {}
        for spec in data.config.get("layers") or []:
            layers[spec["name"]] = _LayerOut(len(layers), spec["name"], scorers)
        n_labeled = 0
        n_chunks = 0

        def take(n: int, rows: list[tuple[Any, ...]]) -> None:
            nonlocal n_labeled
            for off, row in enumerate(rows):
                lo = layers.get(row[1])
                if lo is None:
                    lo = layers[row[1]] = _LayerOut(len(layers), row[1], scorers)
                n_labeled += lo.add_row(row, n, off, data) is not None

        light = RunData(data.config, [], data.interpretations, data.scores, data.n_failures, data.name)
        ctx = _RenderContext(light, style, max_examples, chunk_dir)
        if workers > 1 and data._components is None and data.components_path is not None:
            # workers parse the raw lines themselves (parsing is half the work); the few
            # components peeked at for the token style are parsed again
            items: Iterator[Any] = _raw_lines(data.components_path)
        else:
            items = itertools.chain(head, stream)
        if workers <= 1:
            for n, batch in enumerate(_batches(items, chunk_size)):
                take(n, _render_chunk(n, batch, ctx))
                n_chunks = n + 1
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(ctx,)) as pool:
                pending: collections.deque = collections.deque()
                for n, batch in enumerate(_batches(items, chunk_size)):
                    pending.append((n, pool.submit(_render_chunk, n, batch)))
                    n_chunks = n + 1
                    while len(pending) > 2 * workers:  # bounded: the run is never all in memory
                        m, fut = pending.popleft()
                        take(m, fut.result())
                while pending:
                    m, fut = pending.popleft()
                    take(m, fut.result())
        layer_meta = [lo.finish(tmp / "data") for lo in layers.values()]

        manifest = {
            "format": "autointerp.report/1",
            "title": title,
            "run": name,
            "n_components": sum(m["n"] for m in layer_meta),
            "n_labeled": n_labeled,
            "n_failures": data.n_failures,
            "scorers": scorers,
            "label_sources": list(LABEL_SOURCES),
            "score_means": _score_means(data),
            "layers": layer_meta,
            "chunk_size": chunk_size,
            "n_chunks": n_chunks,
            "token_style": style,
            "summary": _run_summary(data),
            "extras_renderers": sorted(renderers),
        }
        page = (
            _asset("index.html")
            .replace("{{TITLE}}", html.escape(title))
            .replace(
                "{{EXTRA_SCRIPTS}}",
                "\n".join(f'<script src="assets/extras/{html.escape(f, quote=True)}"></script>' for f in extra_files),
            )
            .replace("{{MANIFEST}}", safe_json(manifest))  # last: the run's strings are never template text
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")

    replace_dir_atomically(out_dir, fill)
    return out_dir / "index.html"


def copy_assets(dest: str | os.PathLike) -> None:
    """Copy the viewer's JS and CSS into ``dest`` (for embedding the viewer elsewhere)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("report.js", "report.css"):
        with resources.as_file(resources.files("autointerp.report").joinpath(name)) as src:
            shutil.copyfile(src, dest / name)


def demo_stage(run: Any) -> None:
    """The demo's last stage (``("report", "autointerp.report:demo_stage")`` in `DEMO_STAGES`):
    write the report of ``run.paths`` and print where it is."""
    index = write_report(run.paths)
    run.results["report"] = index
    run.log(f"report: open {index.resolve()} in a browser (it loads nothing from the network)")
