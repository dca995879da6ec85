"""Label every harvested component with an LLM: prompts in, `InterpretationResult`s out.

`Interpreter` renders each component's evidence with the Jinja2 templates in
``autointerp/prompts`` (the main template plus one section template per
accumulator output), sends it through a backend (`AnthropicBackend`,
`OpenAICompatBackend`, `OfflineBackend`) and lets the shared
`autointerp.llm.runner.JobRunner` do concurrency, retries, resume, failures and
cost. Results are appended, one JSON line each, to
``<run>/interpretations/results.jsonl``.

>>> from autointerp import Interpreter, AnthropicBackend, load_harvest
>>> harvest = load_harvest(".data/autointerp/my-run/harvest")
>>> results = Interpreter(AnthropicBackend("claude-haiku-4-5-20251001"), max_concurrent=50).run(
...     harvest, out=".data/autointerp/my-run/interpretations")
>>> results[0]
InterpretationResult('h.0.mlp:12', 'the token " the" after a comma', high)

``run`` works inside a running event loop (a Jupyter cell); ``arun`` is the
coroutine. Only the examples `split_examples` marks for explanation are shown;
the rest stay held out for the scorers.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from autointerp.harvest import HarvestResult, load_harvest
from autointerp.heldout import DEFAULT_N_EXPLAIN, DEFAULT_N_TOP, split_examples
from autointerp.layer_roles import layer_role
from autointerp.llm.base import Backend, InvalidResponse, LLMRequest, LLMResponse
from autointerp.llm.factory import make_backend
from autointerp.llm.runner import Job, JobRunner, PriceTable, RunSummary, run_coroutine_sync
from autointerp.paths import RunPaths
from autointerp.prompts import environment, load_template, render_blocks, sources_hash, template_source
from autointerp.schemas import ComponentData, InterpretationResult
from autointerp.storage import atomic_write_text, read_jsonl, read_jsonl_as

log = logging.getLogger("autointerp.interpret")

DEFAULT_TEMPLATE = "interpret.j2"

#: the JSON schema every interpretation answer must match. ``reasoning`` comes
#: first so the model writes its argument before committing to a label.
INTERPRETATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "description": "One to three sentences on the evidence."},
        "label": {"type": "string", "description": "A short, specific label (at most about 8 words)."},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
    },
    "required": ["reasoning", "label", "confidence"],
    "additionalProperties": False,
}

#: built-in sections, in prompt order; extras (custom accumulators) follow, by name
BUILTIN_SECTIONS = ("top_examples", "examples", "input_tokens", "output_tokens", "correlations")
#: accumulator outputs that are for scoring, not for the explainer
DEFAULT_EXCLUDED_SECTIONS = ("window_pool", "firing_stats")



def describe_layer(layer: str, model: Mapping[str, Any] | None = None) -> str:
    """The layer in words: ``model["layer_descriptions"][layer]`` when the adapter gave one,
    otherwise a guess from the name: "h.3.mlp.c_fc" -> "MLP up-projection in layer 3 of 4 (h.3.mlp.c_fc)"."""
    model = model or {}
    desc = (model.get("layer_descriptions") or {}).get(layer)
    if desc:
        return str(desc)
    kind = layer_role(layer)
    m = re.search(r"(?:^|[._])(\d+)(?:[._]|$)", layer)
    n_layers = model.get("n_layers")
    where = ""
    if m:
        where = f"layer {m.group(1)}" + (f" of {n_layers}" if n_layers else "")
    if kind and where:
        return f"{kind} in {where} ({layer})"
    if kind or where:
        return f"{kind or where} ({layer})"
    return layer


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


class Interpreter:
    """Labels components with an LLM. See the module docstring for an example.

    Prompt: ``prompt_template`` (a name under ``autointerp/prompts`` or a path to a
    ``.j2`` file with ``{% block system %}`` and ``{% block prompt %}``);
    ``templates_dir`` (folders searched before the package, e.g. holding
    ``sections/<name>.j2`` for a custom accumulator); ``section_templates``
    (``{accumulator_name: template name or path}``); ``exclude_sections``
    (outputs never shown to the explainer). ``n_explain`` / ``n_top``: examples
    shown (the rest are held out for scoring); ``n_tokens`` / ``n_partners``:
    rows per token ranking and co-firing list.

    Running: ``max_concurrent``, ``request_timeout_s``, ``max_retries``,
    ``max_invalid_retries``, ``backoff_initial_s``, ``backoff_max_s``,
    ``max_cost_usd``, ``prices`` go to the `JobRunner`. ``skip_dead``: components
    that never fired are not sent (nothing to explain). After a run,
    ``self.summary`` is the `RunSummary` and ``self.results_path`` the file.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        max_concurrent: int = 50,
        prompt_template: str | os.PathLike = DEFAULT_TEMPLATE,
        templates_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        section_templates: Mapping[str, str | os.PathLike] | None = None,
        exclude_sections: Iterable[str] = DEFAULT_EXCLUDED_SECTIONS,
        n_explain: int = DEFAULT_N_EXPLAIN,
        n_top: int = DEFAULT_N_TOP,
        n_tokens: int = 8,
        n_partners: int = 8,
        max_tokens: int = 1024,
        request_timeout_s: float | None = 120.0,
        max_retries: int = 6,
        max_invalid_retries: int = 2,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_cost_usd: float | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        skip_dead: bool = True,
        progress: bool = True,
    ):
        self.backend = backend if backend is not None else make_backend("auto", role="label")
        self.max_concurrent = max_concurrent
        if templates_dir is None:
            search: list[str | os.PathLike] = []
        elif isinstance(templates_dir, (str, os.PathLike)):
            search = [templates_dir]
        else:
            search = list(templates_dir)
        self.env = environment(search)
        self.prompt_template = prompt_template
        self.template = load_template(self.env, prompt_template)
        self.template_name = Path(prompt_template).name if Path(prompt_template).is_file() else str(prompt_template)
        self.section_templates = dict(section_templates or {})
        self.exclude_sections = set(exclude_sections)
        self.n_explain, self.n_top = n_explain, n_top
        self.n_tokens, self.n_partners = n_tokens, n_partners
        self.max_tokens = max_tokens
        self.runner_options: dict[str, Any] = dict(
            max_concurrent=max_concurrent,
            request_timeout_s=request_timeout_s,
            max_retries=max_retries,
            max_invalid_retries=max_invalid_retries,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            max_cost_usd=max_cost_usd,
            prices=prices,
        )
        self.skip_dead = skip_dead
        self.progress = progress
        self.summary: RunSummary | None = None
        self.results_path: Path | None = None
        self.n_dead = 0
        self._section_cache: dict[str, tuple[jinja2.Template, str]] = {}

    def __repr__(self) -> str:
        return f"Interpreter({self.backend!r}, max_concurrent={self.max_concurrent}, template={self.template_name!r})"

    # -- prompts ---------------------------------------------------------------------

    def _section(self, name: str) -> tuple[jinja2.Template, str]:
        """The template for an accumulator output, and its source (for the hash)."""
        hit = self._section_cache.get(name)
        if hit is not None:
            return hit
        given = self.section_templates.get(name)
        candidates = [given] if given is not None else [f"sections/{name}.j2", "sections/_generic.j2"]
        for cand in candidates:
            try:
                tmpl = load_template(self.env, cand)
                src = template_source(self.env, cand)
                break
            except FileNotFoundError:
                if given is not None:
                    raise
        self._section_cache[name] = (tmpl, src)
        return tmpl, src

    def section_names(self, harvest: HarvestResult, comp: ComponentData) -> list[str]:
        ran = {a.get("name") for a in harvest.config.accumulators}
        names = [n for n in BUILTIN_SECTIONS if n in ran or _has_value(getattr(comp, n))]
        names += sorted(k for k in comp.extras if k not in BUILTIN_SECTIONS)
        return [n for n in names if n not in self.exclude_sections]

    def template_hash(self, harvest: HarvestResult) -> str:
        """Hash of the main template, every section template this harvest uses and the schema."""
        names: set[str] = set()
        for comp in harvest.components[:50]:
            names.update(self.section_names(harvest, comp))
        srcs = [template_source(self.env, self.prompt_template)]
        srcs += [self._section(n)[1] for n in sorted(names)]
        srcs += [template_source(self.env, n) for n in ("sections/_example_list.j2", "sections/_token_table.j2")]
        srcs.append(json.dumps(INTERPRETATION_SCHEMA, sort_keys=True))
        return sources_hash(srcs)

    def variables_for(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Everything the main template sees for one component (sections already rendered)."""
        cfg = harvest.config
        model = cfg.model or {}
        dataset = cfg.dataset or {}
        labels = labels or {}
        widths = {l.name: l.width for l in cfg.layers}
        split = split_examples(comp, self.n_explain, self.n_top)
        # a random example that is also among the strongest is shown once, with the strongest
        top_ids = {(e.sequence_index, e.position) for e in split.explain_top}
        values = {
            "examples": [e for e in split.explain if (e.sequence_index, e.position) not in top_ids],
            "top_examples": split.explain_top,
            "input_tokens": comp.input_tokens,
            "output_tokens": comp.output_tokens,
            "correlations": comp.correlations,
        }
        sections = []
        for name in self.section_names(harvest, comp):
            value = values[name] if name in values else comp.extras[name]
            tmpl, _ = self._section(name)
            text = tmpl.render(
                name=name,
                value=value,
                component=comp,
                labels=labels,
                threshold=cfg.threshold,
                n_tokens=self.n_tokens,
                n_partners=self.n_partners,
            ).strip()
            if text:
                sections.append({"name": name, "text": text})
        if len(cfg.layers) == 1:
            layer_summary = f"one layer, {describe_layer(cfg.layers[0].name, model)}, with {cfg.layers[0].width:,} components"
        else:
            layer_summary = f"{len(cfg.layers)} layers with {cfg.n_components:,} components in all"
        return {
            "component": comp,
            "component_key": comp.key,
            "layer": comp.layer,
            "layer_description": describe_layer(comp.layer, model),
            "layer_width": widths.get(comp.layer, 0),
            "layer_summary": layer_summary,
            "model_class": model.get("class") or model.get("name") or "",
            "n_layers": model.get("n_layers") or "",
            "dataset_name": dataset.get("name") or "",
            "dataset_description": dataset.get("description") or "",
            "n_tokens": cfg.n_tokens,
            "threshold": cfg.threshold,
            "firing_count": comp.firing_count,
            "firing_rate": comp.firing_rate,
            "mean_activation": comp.mean_activation,
            "max_activation": comp.max_activation,
            "sections": sections,
            "labels": labels,
        }

    def render(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None) -> dict[str, str]:
        """``{"system": ..., "prompt": ...}`` for one component."""
        return render_blocks(self.template, self.variables_for(comp, harvest, labels))

    def request_for(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None) -> LLMRequest:
        parts = self.render(comp, harvest, labels)
        return LLMRequest(
            prompt=parts["prompt"],
            system=parts["system"],
            schema=INTERPRETATION_SCHEMA,
            schema_name="interpretation",
            max_tokens=self.max_tokens,
            metadata={"component": comp, "key": comp.key},
        )

    # -- jobs ------------------------------------------------------------------------

    def _selected(self, harvest: HarvestResult, keys: Iterable[str] | None) -> list[ComponentData]:
        if keys is None:
            comps = list(harvest.components)
        else:
            comps = [harvest[k] for k in keys]
        if self.skip_dead:
            live = [c for c in comps if c.firing_count > 0]
            self.n_dead = len(comps) - len(live)
            comps = live
        return comps

    def jobs(
        self,
        harvest: HarvestResult,
        *,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
        done: set[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> tuple[list[ComponentData], Iterator[Job]]:
        """The components to label (pending, at most ``limit``) and a lazy iterator of their jobs.

        Prompts are rendered as the runner pulls jobs, so labels that arrived
        earlier in the run already show up next to co-firing partners.
        """
        done = done or set()
        labels = labels if labels is not None else {}
        pending = [c for c in self._selected(harvest, keys) if c.key not in done]
        if limit is not None:
            pending = pending[:limit]
        thash = self.template_hash(harvest)
        tname = self.template_name

        def make_parse(key: str) -> Callable[[LLMResponse], InterpretationResult]:
            def parse(resp: LLMResponse) -> InterpretationResult:
                d = resp.data
                label = str(d.get("label", "")).strip()
                if not label:
                    raise InvalidResponse("the answer has an empty label", resp.raw_text, resp.usage)
                result = InterpretationResult(
                    component_key=key,
                    label=label,
                    confidence=str(d.get("confidence", "")),
                    reasoning=str(d.get("reasoning", "")),
                    raw_response=resp.raw_text,
                    model=resp.model,
                    template_name=tname,
                    template_hash=thash,
                    usage=resp.usage,
                    created_at=_now(),
                    elapsed_s=round(resp.elapsed_s, 3),
                )
                labels[key] = label
                return result

            return parse

        def gen() -> Iterator[Job]:
            for comp in pending:
                yield Job(comp.key, self.request_for(comp, harvest, labels), make_parse(comp.key))

        return pending, gen()

    # -- running ---------------------------------------------------------------------

    @staticmethod
    def _out_dir(out: RunPaths | str | os.PathLike | None) -> Path:
        if out is None:
            d = Path(tempfile.mkdtemp(prefix="autointerp-interpretations-"))
            log.warning("no out= given: writing interpretations to %s (pass out= to resume later)", d)
            return d
        if isinstance(out, RunPaths):
            return out.interpretations
        return Path(out)

    async def arun(
        self,
        harvest: HarvestResult,
        out: RunPaths | str | os.PathLike | None = None,
        *,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
        batch: bool = False,
        poll_interval_s: float = 30.0,
    ) -> list[InterpretationResult]:
        """Label the pending components of ``harvest`` into ``out`` (an interpretations
        folder or a `RunPaths`); return every result for the selected components."""
        out_dir = self._out_dir(out)
        results_path = out_dir / "results.jsonl"
        self.results_path = results_path
        labels = load_labels(results_path)
        done = set(labels)
        pending, jobs = self.jobs(harvest, keys=keys, limit=limit, done=done, labels=labels)
        if batch:
            from autointerp.llm.batches import BatchRunner

            runner = BatchRunner(
                self.backend,
                results_path,
                poll_interval_s=poll_interval_s,
                max_cost_usd=self.runner_options["max_cost_usd"],
                prices=self.runner_options["prices"],
                progress=self.progress,
            )
            self.summary = await runner.run(jobs, total=len(pending))
        else:
            runner = JobRunner(self.backend, results_path, progress=self.progress, desc="interpret", **self.runner_options)
            self.summary = await runner.run(jobs, total=len(pending))
        wanted = {c.key for c in self._selected(harvest, keys)}
        self.summary.skipped += len(done & wanted)
        self.summary.total += len(done & wanted)
        return load_interpretations(results_path, keys=wanted, order=[c.key for c in harvest.components])

    def run(
        self,
        harvest: HarvestResult,
        out: RunPaths | str | os.PathLike | None = None,
        *,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
        batch: bool = False,
        poll_interval_s: float = 30.0,
    ) -> list[InterpretationResult]:
        """`arun` from synchronous code; works inside a running event loop (Jupyter)."""
        return run_coroutine_sync(
            lambda: self.arun(harvest, out, keys=keys, limit=limit, batch=batch, poll_interval_s=poll_interval_s)
        )

    def dry_run(
        self,
        harvest: HarvestResult,
        out_dir: str | os.PathLike,
        *,
        keys: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Path]:
        """Write each component's rendered prompt to ``out_dir/<key>.txt``; call nothing."""
        out_dir = Path(out_dir)
        written = []
        comps = self._selected(harvest, keys)
        if limit is not None:
            comps = comps[:limit]
        for comp in comps:
            req = self.request_for(comp, harvest)
            text = (
                f"### system (cached; {len(req.system)} characters)\n{req.system}\n"
                f"### prompt ({len(req.prompt)} characters)\n{req.prompt}\n"
                f"### schema\n{json.dumps(req.schema, indent=2)}\n"
            )
            path = out_dir / f"{_safe_name(comp.key)}.txt"
            atomic_write_text(path, text)
            written.append(path)
        return written


def _has_value(v: Any) -> bool:
    return v is not None and v != [] and v != {}


def load_labels(results_path: str | os.PathLike) -> dict[str, str]:
    """``{component_key: label}`` from a results file (first result per key wins)."""
    labels: dict[str, str] = {}
    for rec in read_jsonl(results_path):
        key, label = rec.get("component_key"), rec.get("label")
        if isinstance(key, str) and isinstance(label, str) and key not in labels:
            labels[key] = label
    return labels


def load_interpretations(
    path: str | os.PathLike | RunPaths,
    *,
    keys: Iterable[str] | None = None,
    order: Sequence[str] | None = None,
) -> list[InterpretationResult]:
    """Read ``interpretations/results.jsonl`` (a file, its folder or a `RunPaths`): one
    result per component (the first written wins), in ``order`` when given."""
    if isinstance(path, RunPaths):
        path = path.interpretations / "results.jsonl"
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    wanted = set(keys) if keys is not None else None
    by_key: dict[str, InterpretationResult] = {}
    for r in read_jsonl_as(path, InterpretationResult):
        if (wanted is None or r.component_key in wanted) and r.component_key not in by_key:
            by_key[r.component_key] = r
    if order is not None:
        rank = {k: i for i, k in enumerate(order)}
        return sorted(by_key.values(), key=lambda r: rank.get(r.component_key, len(rank)))
    return list(by_key.values())


def interpret_run(
    run: RunPaths | str | os.PathLike,
    backend: Backend | None = None,
    *,
    out: str | os.PathLike | None = None,
    announce: Callable[[str], None] | None = None,
    **interpreter_options: Any,
) -> list[InterpretationResult]:
    """Label a run's harvest into its interpretations folder (what ``autointerp demo`` calls).

    ``run`` is a `RunPaths` or a run id (under ``out``). Without ``backend``:
    Claude when ``ANTHROPIC_API_KEY`` is set, otherwise the offline token-lookup
    baseline, and ``announce`` (default: print to stderr) says which.
    """
    paths = run if isinstance(run, RunPaths) else RunPaths.of(str(run), out)
    harvest = load_harvest(paths.harvest)
    say = announce or (lambda msg: print(msg, file=sys.stderr))
    if backend is None:
        backend = make_backend("auto", role="label", announce=say)
        if not isinstance(backend, _offline_type()):
            say(f"labelling with Claude ({backend.model})")
    interp = Interpreter(backend, **interpreter_options)
    results = interp.run(harvest, paths)
    if interp.summary is not None:
        say(str(interp.summary))
    return results


def _offline_type() -> type:
    from autointerp.llm.offline import OfflineBackend

    return OfflineBackend


#: with Claude, the demo labels this many randomly chosen components (a few cents), not all 2,048
DEMO_CLAUDE_LIMIT = 24


def demo_stage(run: Any) -> None:
    """The ``interpret`` stage of ``autointerp demo``: Claude when ``ANTHROPIC_API_KEY`` is set
    (on a random sample of `DEMO_CLAUDE_LIMIT` components, to keep the demo cheap), otherwise
    the offline token-lookup baseline on every component; prints a few labels."""
    import random

    harvest = run.harvest if run.harvest is not None else load_harvest(run.paths.harvest)
    backend = make_backend("auto", role="label", announce=run.log)
    keys = None
    if not isinstance(backend, _offline_type()):
        fired = [c.key for c in harvest if c.firing_count > 0]
        keys = sorted(random.Random(run.seed).sample(fired, min(DEMO_CLAUDE_LIMIT, len(fired))))
        run.log(f"interpret: labelling {len(keys)} random components with Claude ({backend.model})")
    interp = Interpreter(backend, progress=run.progress)
    results = interp.run(harvest, run.paths, keys=keys)
    run.results["interpretations"] = results
    if interp.summary is not None:
        run.log(str(interp.summary))
    shown = [r for r in results if r.label][:5]
    for r in shown:
        run.log(f"  {r.component_key:<22} {r.label}")
    run.log(f"labels: {interp.results_path}")
