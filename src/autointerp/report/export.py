"""Export a run's labels, scores and top examples for other apps.

Two layouts, both documented in ``docs/export.md``:

* ``jsonl`` — ``<run>/export/components.jsonl``, one self-contained record per
  component (format ``autointerp.export/1``), plus ``<run>/export/run.json``
  with the harvest settings and mean scores.
* ``neuronpedia`` — ``<run>/export/neuronpedia.json``, one feature object per
  component in the shape of Neuronpedia's feature JSON (``modelId``, ``layer``,
  ``index``, ``explanations``, ``activations``).

Both stream: one component is in memory at a time, whatever the size of the run.

>>> export_run(RunPaths.of("demo"), "jsonl")        # doctest: +SKIP
PosixPath('.data/autointerp/demo/export/components.jsonl')
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from attrs import define

from autointerp.paths import RunPaths
from autointerp.report.numbers import dumps
from autointerp.report.page_data import parse_component, parse_components, peek_token_style, run_summary, score_means
from autointerp.report.run_data import RunData
from autointerp.report.score_sources import COMPONENT_SOURCE, LABEL_SOURCES
from autointerp.report.tokens import TOKEN_STYLES, display_tokens
from autointerp.storage import atomic_write_with

EXPORT_FORMATS = ("jsonl", "neuronpedia")
JSONL_FORMAT = "autointerp.export/1"
NEURONPEDIA_FORMAT = "autointerp.neuronpedia/1"
#: components per task when records are made by worker processes
CHUNK_SIZE = 256
#: written beside a ``jsonl`` export: the harvest's settings and the mean scores
RUN_INFO_FILE = "run.json"


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _finite_list(values: list[Any]) -> list[Any]:
    """``values`` with non-finite floats as None (one C-level sum in the usual case: all finite)."""
    try:
        if math.isfinite(math.fsum(values)):
            return values
    except (TypeError, ValueError, OverflowError):  # None, inf - inf, or an overflow: look at each
        pass
    return [_finite(a) for a in values]


def _examples(c: Mapping[str, Any], n: int, style: str) -> list[dict[str, Any]]:
    """Top-activating examples first; a harvest without them gives its random examples, largest first."""
    exs = list(c.get("top_examples") or [])
    if not exs:
        exs = sorted(c.get("examples") or [], key=lambda e: -(e["activations"][e["firing_offset"]] or 0.0))
    out = []
    for e in exs[:n]:
        raw = e.get("tokens")
        shown = display_tokens(list(raw), style) if raw else None
        out.append(
            {
                "token_ids": e["token_ids"],
                "tokens": raw,
                "text_tokens": shown,
                "text": "".join(shown) if shown is not None else None,
                "activations": _finite_list(e["activations"]),
                "firing_offset": e["firing_offset"],
                "firing_activation": _finite(e["activations"][e["firing_offset"]]),
                "sequence_index": e.get("sequence_index"),
                "position": e.get("position"),
            }
        )
    return out


def _score_entry(by_src: Mapping[str, Any]) -> dict[str, Any]:
    """One scorer's verdicts on a component: a score per label source, trials and metrics of the headline one."""
    entry: dict[str, Any] = {}
    for src in (*LABEL_SOURCES, COMPONENT_SOURCE):
        r = by_src.get(src)
        if r is None:
            continue
        entry[src] = None if r.skipped else _finite(r.score)
        if src in ("label", COMPONENT_SOURCE):
            entry["n_trials"] = r.n_trials
            entry["metrics"] = {k: _finite(v) for k, v in (r.metrics or {}).items()}
            if r.skipped:
                entry["skipped_reason"] = r.reason
    return entry


def iter_records(data: RunData, *, top_examples: int = 10, token_style: str = "auto") -> Iterator[dict[str, Any]]:
    """The ``jsonl`` records of a run, one per component, in component-space order."""
    stream = data.iter_components()
    style, head = peek_token_style(stream, token_style, data.config.get("tokenizer_kind"))
    components: Iterator[Mapping[str, Any]] = itertools.chain(head, stream)
    if data.streams_from_disk:
        # the raw lines, parsed with the report's fast codec (checked as the report's workers check
        # them); the few components peeked at for the token style are parsed again
        source, check = str(data.components_path), not data.schema_checked
        components = (parse_component(line, check, source) for line in data.iter_component_lines())
    for c in components:
        yield _record(data, c, top_examples, style)


def _record(data: RunData, c: Mapping[str, Any], top_examples: int, style: str) -> dict[str, Any]:
    """The ``jsonl`` record of one component."""
    key = c["key"]
    interp = data.interpretations.get(key)
    scores = {scorer: _score_entry(by_src) for scorer, by_src in data.component_scores(key).items()}
    return {
        "format": JSONL_FORMAT,
        "run": data.name,
        "key": key,
        "layer": c.get("layer"),
        "index": c.get("index"),
        "firing_count": c.get("firing_count", 0),
        "firing_rate": _finite(c.get("firing_rate", 0.0)),
        "mean_activation": _finite(c.get("mean_activation", 0.0)),
        "max_activation": _finite(c.get("max_activation", 0.0)),
        "label": interp.label if interp else None,
        "confidence": interp.confidence if interp else None,
        "reasoning": interp.reasoning if interp else None,
        "explainer_model": interp.model if interp else None,
        "scores": scores,
        "top_examples": _examples(c, top_examples, style),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "layer"


def _model_id(data: RunData, model_id: str | None) -> str:
    model = data.config.get("model") or {}
    return model_id or str(model.get("name") or model.get("id") or data.name or "model")


def iter_neuronpedia_features(
    data: RunData, *, top_examples: int = 10, model_id: str | None = None, token_style: str = "auto"
) -> Iterator[dict[str, Any]]:
    """The Neuronpedia-shaped feature object of each component, in component-space order."""
    model_id = _model_id(data, model_id)
    for rec in iter_records(data, top_examples=top_examples, token_style=token_style):
        yield _feature(rec, model_id)


def _feature(rec: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """The Neuronpedia feature object of one ``jsonl`` record."""
    explanations = []
    if rec["label"] is not None:
        explanations.append(
            {
                "description": rec["label"],
                "explanationModelName": rec["explainer_model"] or "",
                "typeName": "autointerp",
                "confidence": rec["confidence"],
                "scores": [
                    {"explanationScoreTypeName": scorer, "value": s.get("label")}
                    for scorer, s in sorted(rec["scores"].items())
                    if s.get("label") is not None
                ],
            }
        )
    activations = []
    for ex in rec["top_examples"]:
        values = ex["activations"]
        if None in values:
            values = [a if a is not None else 0.0 for a in values]
        tokens = ex["text_tokens"] if ex["text_tokens"] is not None else [str(t) for t in ex["token_ids"]]
        activations.append(
            {
                "tokens": tokens,
                "values": values,
                "maxValue": max(values) if values else 0.0,
                "maxValueTokenIndex": ex["firing_offset"],
            }
        )
    return {
        "modelId": model_id,
        "layer": _slug(rec["layer"] or ""),
        "index": str(rec["index"]),
        "autointerpKey": rec["key"],
        "frac_nonzero": rec["firing_rate"],
        "maxActApprox": rec["max_activation"],
        "explanations": explanations,
        "activations": activations,
    }


def neuronpedia_document(
    data: RunData, *, top_examples: int = 10, model_id: str | None = None, token_style: str = "auto"
) -> dict[str, Any]:
    """One JSON document with a Neuronpedia-shaped feature object per component, in memory (for a
    notebook; `export_run` streams the same document to its file, a feature at a time)."""
    features = list(iter_neuronpedia_features(data, top_examples=top_examples, model_id=model_id, token_style=token_style))
    return {"format": NEURONPEDIA_FORMAT, "run": data.name, "modelId": _model_id(data, model_id), "features": features}


def export_run(
    run: RunPaths | str | os.PathLike | RunData,
    format: str = "jsonl",
    output: str | os.PathLike | None = None,
    *,
    top_examples: int = 10,
    model_id: str | None = None,
    token_style: str = "auto",
    label_set: str | None = None,
    workers: int = 1,
) -> Path:
    """Write the export and return its path (written atomically: complete or absent).

    ``workers`` > 1 makes the records of a run on disk in that many processes (the same bytes).

    ``run`` is a `RunPaths`, a run folder or a `RunData` already read (then
    ``output`` is needed). ``label_set`` picks which of the run's label sets (None:
    the set a `RunPaths` names, else the default set). ``output`` defaults to
    ``<run>/export/components.jsonl`` (``jsonl``) or ``<run>/export/neuronpedia.json``
    (``neuronpedia``); for a named set, in ``export/sets/<name>/``.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    if token_style not in TOKEN_STYLES:
        raise ValueError(f"token_style must be one of {TOKEN_STYLES}, got {token_style!r}")
    if top_examples < 0:
        raise ValueError(f"top_examples must be >= 0, got {top_examples}")
    if isinstance(run, RunData):
        if output is None:
            raise ValueError("pass output: this run was not read from a run folder, so it has no export folder")
        data = run
    else:
        paths = RunPaths.at(run, label_set=label_set)
        data = RunData.from_run(paths)
        if output is None:
            output = paths.export_jsonl if format == "jsonl" else paths.export_neuronpedia
    output = Path(output)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if format == "jsonl":
        _write_jsonl(data, output, top_examples=top_examples, token_style=token_style, workers=workers)
    else:
        _write_neuronpedia(data, output, top_examples=top_examples, model_id=model_id, token_style=token_style,
                           workers=workers)
    return output


def _write_json(path: Path, doc: Any, indent: int | None) -> None:
    text = json.dumps(doc, ensure_ascii=False, indent=indent, allow_nan=False)
    atomic_write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@define
class _ExportJob:
    """A chunk of components -> its export bytes (sent once to each worker process)."""

    data: RunData  # labels and scores; the lines are read by the worker
    style: str
    format: str
    top_examples: int
    model_id: str
    check_schema: bool
    source: str

    def run(self, n: int, items: Any) -> tuple[bytes, int, int]:
        from autointerp.report.run_data import read_lines

        keys = [k for k, _, _ in items.spans]
        comps = parse_components(read_lines(items.path, items.spans), keys, self.check_schema, self.source)
        recs = [_record(self.data, c, self.top_examples, self.style) for c in comps]
        return _encode(recs, self.format, self.model_id), len(recs), sum(r["label"] is not None for r in recs)


def _encode(recs: list[dict[str, Any]], fmt: str, model_id: str) -> bytes:
    if fmt == "jsonl":
        return b"".join(dumps(r) + b"\n" for r in recs)
    return b",".join(dumps(_feature(r, model_id)) for r in recs)


def _blocks(data: RunData, fmt: str, top_examples: int, model_id: str, token_style: str,
            workers: int) -> Iterator[tuple[bytes, int, int]]:
    """The export a chunk of components at a time, in order: ``(bytes, n components, n labeled)``.
    With ``workers`` > 1 (and a run on disk), chunks are made by that many processes, each reading
    its own lines through the harvest's index, at most ``2 * workers`` chunks in flight."""
    spans = data.line_spans() if workers > 1 and data.streams_from_disk else None
    if spans is None:
        for rec in iter_records(data, top_examples=top_examples, token_style=token_style):
            yield _encode([rec], fmt, model_id), 1, rec["label"] is not None
        return
    from autointerp.report.writer import _Lines, _run_in_pool

    style, _ = peek_token_style(data.iter_components(), token_style, data.config.get("tokenizer_kind"))
    job = _ExportJob(data.without_components(), style, fmt, top_examples, model_id, not data.schema_checked,
                     str(data.components_path))
    size = CHUNK_SIZE
    batches = ((n, _Lines(data.components_path, spans[i : i + size])) for n, i in enumerate(range(0, len(spans), size)))
    for _, block in _run_in_pool(job, batches, workers):
        yield block


def _write_neuronpedia(data: RunData, output: Path, *, top_examples: int, model_id: str | None, token_style: str,
                       workers: int = 1) -> None:
    """The document of `neuronpedia_document`, written a chunk of features at a time (memory does not
    grow with the run)."""
    mid = _model_id(data, model_id)
    head = dumps({"format": NEURONPEDIA_FORMAT, "run": data.name, "modelId": mid, "features": []})
    assert head.endswith(b"[]}")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(head[:-2])
            first = True
            for block, n, _ in _blocks(data, "neuronpedia", top_examples, mid, token_style, workers):
                if n:
                    f.write(block if first else b"," + block)
                    first = False
            f.write(b"]}")

    atomic_write_with(output, write)


def _write_jsonl(data: RunData, output: Path, *, top_examples: int, token_style: str, workers: int = 1) -> None:
    """``output`` (one record per component) and, beside it, ``run.json`` (the harvest and mean scores)."""
    n_written = n_labeled = 0

    def write(tmp: Path) -> None:
        nonlocal n_written, n_labeled
        with open(tmp, "wb") as f:
            for block, n, labeled in _blocks(data, "jsonl", top_examples, "", token_style, workers):
                f.write(block)
                n_written += n
                n_labeled += labeled

    atomic_write_with(output, write)
    run_info = {
        "format": JSONL_FORMAT,
        "run": data.name,
        "n_components": n_written,
        "n_labeled": n_labeled,
        "layers": data.config.get("layers") or [],
        "score_means": score_means(data),
        "harvest": run_summary(data),
    }
    _write_json(output.with_name(RUN_INFO_FILE), run_info, indent=2)
