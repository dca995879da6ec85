"""Write a run as a static HTML report that opens from disk, with no network.

``write_report(run)`` is read -> shape -> write: `RunData.from_run` reads the
run, `ReportPages` (in `page_data`) shapes it into plain dicts a chunk at a
time, `write_pages` writes the files. Layout of ``<out_dir>/``::

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
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from attrs import define

from autointerp.paths import RunPaths
from autointerp.report.layer_index import IndexRow, LayerRows
from autointerp.report.numbers import dumps
from autointerp.report.page_data import ChunkShaper, ReportOptions, ReportPages
from autointerp.report.run_data import RunData, read_lines
from autointerp.storage import replace_dir_atomically

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def write_report(
    run: RunPaths | str | os.PathLike, out_dir: str | os.PathLike | None = None, *, label_set: str | None = None,
    compare: Sequence[str] | None = None, **options: Any,
) -> Path:
    """Write the static report of a run folder and return the path of its ``index.html``.

    ``run`` is a `RunPaths` or a run folder (holding ``harvest/``); ``label_set``
    picks which of its label sets (None: the set a `RunPaths` names, else the
    default set). ``out_dir`` defaults to that set's report folder (``report/``,
    or ``reports/<name>/`` for a named set); it is replaced as a whole, so a
    reader never sees a half written report. ``options`` are those of
    `ReportOptions`: ``title``, ``token_style``, ``extras_renderers``,
    ``chunk_size``, ``max_examples``, ``workers``. For a run held in memory
    (a `HarvestResult` and its results), use `write_report_from_data`.

    ``compare``: the other label sets this set is compared with, each on a
    comparison page (`autointerp.compare`); None: every other label set of the run
    that has scores, when this one has scores too; ``[]``: none.
    """
    if not isinstance(run, (RunPaths, str, os.PathLike)):
        raise TypeError(
            f"write_report expects a run (RunPaths or a run folder), got {type(run).__name__}; for results in memory "
            "use write_report_from_data(RunData.from_objects(harvest, interpretations, scores), out_dir)"
        )
    paths = RunPaths.at(run, label_set=label_set)
    data = RunData.from_run(paths)
    if "comparisons" not in options:
        options["comparisons"] = label_set_comparisons(paths, compare, has_scores=bool(data.scores))
    return write_report_from_data(data, paths.report if out_dir is None else out_dir, **options)


def label_set_comparisons(paths: RunPaths, others: Sequence[str] | None, *, has_scores: bool) -> list[Any]:
    """This set compared with each of ``others`` (None: every other scored set of the run)."""
    from autointerp.compare import compare_label_sets
    from autointerp.paths import check_label_set
    from autointerp.records import read_scores

    if others is None:
        if not has_scores:
            return []
        others = [s for s in paths.label_sets() if s != paths.label_set and read_scores(paths.with_label_set(s))]
    elif isinstance(others, str):
        raise ValueError(f"compare must be a list of label set names, got {others!r}")
    names = [check_label_set(n, "compare") for n in others]
    return [compare_label_sets(paths, paths.label_set, n) for n in names]


def write_report_from_data(data: RunData, out_dir: str | os.PathLike, **options: Any) -> Path:
    """Write the report of a run already read (`RunData`) into ``out_dir``; options as `write_report`."""
    return write_pages(ReportPages(data, ReportOptions(**options)), Path(out_dir))


def write_pages(pages: ReportPages, out_dir: Path) -> Path:
    """Write a shaped report into ``out_dir`` (replaced atomically) and return its ``index.html``."""

    def fill(tmp: Path) -> None:
        extra_files = _write_assets(tmp / "assets", pages.extras_scripts)
        (tmp / "data").mkdir()
        n_chunks = _write_chunks(pages, tmp / "data" / "c")
        layer_meta = [_write_layer(tmp / "data", layer) for layer in pages.index.layers()]
        _write_index_page(tmp / "index.html", pages.title, pages.manifest(layer_meta, n_chunks), extra_files)

    replace_dir_atomically(out_dir, fill)
    return out_dir / "index.html"


# -- JSON that is safe inside HTML and JS ----------------------------------------------

_JS_ESCAPES = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
               ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def safe_json_bytes(obj: Any) -> bytes:
    """UTF-8 JSON that cannot end a ``<script>`` element or break a JS string literal.

    ``<``, ``>``, ``&``, U+2028 and U+2029 occur in JSON only inside strings, where
    ``\\u003c`` means the same character, so the result parses to the same value. The
    escapes are byte replacements over the encoded text (UTF-8 never encodes U+2028's
    three bytes as part of another character), skipped where the character is absent.
    """
    data = dumps(obj)
    for raw, escaped in _JS_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def safe_json(obj: Any) -> str:
    """`safe_json_bytes` as text."""
    return safe_json_bytes(obj).decode("utf-8")


# -- the files -------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("autointerp.report").joinpath(name).read_text(encoding="utf-8")


def _write_assets(assets: Path, extras_scripts: dict[str, str]) -> list[str]:
    """The viewer and the extras renderers; returns the renderers' file names, in load order."""
    (assets / "extras").mkdir(parents=True)
    (assets / "report.js").write_text(_asset("report.js"), encoding="utf-8")
    (assets / "report.css").write_text(_asset("report.css"), encoding="utf-8")
    files = {f"{_SAFE_NAME.sub('_', n)}.js": js for n, js in sorted(extras_scripts.items())}
    for fname, js in files.items():
        (assets / "extras" / fname).write_text(js, encoding="utf-8")
    return list(files)


def _write_layer(data_dir: Path, layer: LayerRows) -> dict[str, Any]:
    text = f"AUTOINTERP_LAYER({layer.li},{safe_json(layer.finished())});\n"
    (data_dir / f"layer-{layer.li}.js").write_text(text, encoding="utf-8")
    return layer.meta()


def _write_index_page(index: Path, title: str, manifest: dict[str, Any], extra_files: list[str]) -> None:
    scripts = "\n".join(f'<script src="assets/extras/{html.escape(f, quote=True)}"></script>' for f in extra_files)
    page = (
        _asset("index.html")
        .replace("{{TITLE}}", html.escape(title))
        .replace("{{EXTRA_SCRIPTS}}", scripts)
        .replace("{{MANIFEST}}", safe_json(manifest))  # last: the run's strings are never template text
    )
    index.write_text(page, encoding="utf-8")


# -- the evidence, a chunk at a time ---------------------------------------------------


@define
class _ChunkJob:
    """Shape a chunk and write ``<chunk_dir>/<n>.js`` (sent once to each worker process)."""

    shaper: ChunkShaper
    chunk_dir: Path

    def run(self, n: int, items: list[Any] | _Lines) -> list[IndexRow]:
        keys = None
        if isinstance(items, _Lines):  # read here, in the worker: the parent never holds the evidence
            keys = [k for k, _, _ in items.spans]
            items = read_lines(items.path, items.spans)
        chunk, rows = self.shaper.shape(items, keys)
        (self.chunk_dir / f"{n}.js").write_bytes(b"AUTOINTERP_CHUNK(%d," % n + safe_json_bytes(chunk) + b");\n")
        return rows


def _write_chunks(pages: ReportPages, chunk_dir: Path) -> int:
    """One pass over the components: the evidence is written a chunk at a time (by worker
    processes if asked), the index rows go to ``pages.index``. Returns the number of chunks."""
    chunk_dir.mkdir()
    job = _ChunkJob(pages.shaper, chunk_dir)
    workers = pages.options.workers
    size = pages.options.chunk_size
    spans = pages.data.line_spans() if pages.data.streams_from_disk else None
    batches: Iterable[tuple[int, Any]]
    if spans is not None:
        # each chunk's lines are read and parsed by the process that shapes it (the fast codec:
        # parsing is a third of a report's work), found through the harvest's index; the few
        # components peeked at for the token style are parsed again
        path = pages.data.components_path
        batches = ((n, _Lines(path, spans[i : i + size])) for n, i in enumerate(range(0, len(spans), size)))
    else:
        batches = enumerate(_batches(pages.components(), size))
    done = _run_in_pool(job, batches, workers) if workers > 1 else ((n, job.run(n, b)) for n, b in batches)
    n_chunks = 0
    for n, rows in done:
        pages.index.add(n, rows)
        n_chunks = n + 1
    return n_chunks


@define
class _Lines:
    """A chunk's components as where their lines are: ``(key, offset, length)`` each."""

    path: Path
    spans: list[tuple[str, int, int]]


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while True:
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield batch


_WORKER_JOB: _ChunkJob | None = None


def _init_worker(job: _ChunkJob) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _run_in_worker(n: int, items: list[Any]) -> list[IndexRow]:
    assert _WORKER_JOB is not None
    return _WORKER_JOB.run(n, items)


def _run_in_pool(job: _ChunkJob, batches: Iterable[tuple[int, list[Any]]], workers: int) -> Iterator[tuple[int, list[IndexRow]]]:
    """``(n, rows)`` in chunk order, at most ``2 * workers`` chunks in flight (the run is never all in memory)."""
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(job,)) as pool:
        pending: collections.deque = collections.deque()
        for n, batch in batches:
            pending.append((n, pool.submit(_run_in_worker, n, batch)))
            while len(pending) > 2 * workers:
                m, fut = pending.popleft()
                yield m, fut.result()
        while pending:
            m, fut = pending.popleft()
            yield m, fut.result()


# -- for embedding and for the demo ----------------------------------------------------


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
