"""Label every harvested component with an LLM: prompts in, `InterpretationResult`s out.

`Interpreter` renders each component's evidence with the Jinja2 templates in
``autointerp/prompts`` (the main template plus one section template per
accumulator output), sends it through a backend (`AnthropicBackend`,
`OpenAICompatBackend`, `OfflineBackend`) and lets the shared
`autointerp.llm.runner.JobRunner` do concurrency, retries, resume, failures and
cost. Results are appended, one JSON line each, to
``<run>/interpretations/results.jsonl`` (the default label set) or, with
``label_set="A"``, ``<run>/interpretations/sets/A/results.jsonl``;
`autointerp.records` reads them back (the last record of a component with a
non-empty label wins, and resume skips exactly those components).

>>> from autointerp import Interpreter, AnthropicBackend, load_harvest
>>> harvest = load_harvest(".data/autointerp/my-run/harvest")
>>> results = Interpreter(AnthropicBackend("claude-haiku-4-5-20251001"), max_concurrent=50).run(
...     harvest, out=".data/autointerp/my-run/interpretations")
>>> results[0]
InterpretationResult('h.0.mlp:12', 'the token " the" after a comma', high)

Every keyword of `Interpreter` and of its runs is an `InterpretOptions` field
(see `autointerp.interpret_options`). ``run`` works inside a running event loop
(a Jupyter cell); ``arun`` is the coroutine. Only the examples `split_examples`
marks for explanation are shown; the rest stay held out for the scorers.
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
from attrs import define, evolve

from autointerp.accumulators.firing_stats import EARLY_POSITIONS
from autointerp.evidence_sets import EvidenceSets
from autointerp.harvest import HarvestResult, load_harvest
from autointerp.heldout import shown_examples
from autointerp.interpret_options import (DEFAULT_EXCLUDED_SECTIONS, DEFAULT_TEMPLATE, INTERPRETATION_SCHEMA,
                                         InterpretOptions)
from autointerp.layer_roles import layer_role
from autointerp.llm.base import Backend, InvalidResponse, LLMRequest, LLMResponse
from autointerp.llm.factory import make_backend
from autointerp.llm.runner import Job, JobRunner, RunSummary, run_coroutine_sync
from autointerp.paths import COSTS_FILE, RESULTS_FILE, SUMMARY_FILE, RunPaths, label_set_folder
from autointerp.prompts import environment, load_template, render_blocks, sources_hash, template_source
from autointerp.thresholds import is_uniform
from autointerp.records import NEIGHBOURS_TAG, read_costs, read_interpretations, read_labels
from autointerp.schemas import ComponentData, CostEntry, EvidenceSplit, InterpretationResult, TokenUsage
from autointerp.storage import append_jsonl, atomic_write_text, completed_keys, to_dict

__all__ = [
    "DEFAULT_EXCLUDED_SECTIONS",
    "DEFAULT_TEMPLATE",
    "INTERPRETATION_SCHEMA",
    "InterpretOptions",
    "Interpreter",
    "describe_layer",
    "interpret_run",
    "load_interpretations",
]

log = logging.getLogger("autointerp.interpret")

#: built-in sections, in prompt order; extras (custom accumulators) follow, by name
BUILTIN_SECTIONS = ("top_examples", "examples", "quantile_examples", "histogram", "input_tokens",
                    "output_tokens", "output_logits", "correlations")
#: the template hash looks at the sections of this many components (the first, by position)
TEMPLATE_PEEK = 50
#: renders an output that has no template of its own
GENERIC_SECTION = "sections/_generic.j2"
#: included by the section templates, so part of the template hash
SECTION_HELPERS = ("sections/_example_list.j2", "sections/_token_table.j2")


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


def _has_value(v: Any) -> bool:
    return v is not None and v != [] and v != {}


def recorded_sections(harvest: HarvestResult) -> dict[str, str | None]:
    """``{output name: section template}`` as the harvest recorded them (``"prompt_section"``
    of each accumulator in its config: a file under ``prompts/sections/``, or None for none).

    Harvests saved before the key existed record nothing; their outputs fall back
    to ``sections/<name>.j2``.
    """
    out: dict[str, str | None] = {}
    for spec in harvest.config.accumulators:
        if "prompt_section" in spec and spec.get("name"):
            t = spec["prompt_section"]
            out[str(spec["name"])] = None if not t else (t if str(t).startswith("sections/") else f"sections/{t}")
    return out


def labelled_record_key(record: Mapping[str, Any]) -> str:
    """The component a results line settles, for the runners' resume scan: a line
    with an empty label settles nothing (the rule of `autointerp.records`)."""
    label = record.get("label")
    if not isinstance(label, str) or not label.strip():
        raise KeyError("label")  # the runners count only records they can name
    return str(record["component_key"])


#: the section of the second pass (`autointerp.neighbours`), and the mark its records carry
NEIGHBOURS = "neighbours"
# NEIGHBOURS_TAG (imported above) is named in autointerp.records, which tells the two passes apart when reading


def neighbours_job_key(key: str) -> str:
    return f"neighbours|{key}"


def neighbours_record_key(record: Mapping[str, Any]) -> str:
    """The second-pass job a results line settles: a labelled line whose ``template_name``
    carries `NEIGHBOURS_TAG` (first-pass lines settle no second-pass job)."""
    if not str(record.get("template_name", "")).endswith(NEIGHBOURS_TAG):
        raise KeyError("template_name")
    return neighbours_job_key(labelled_record_key(record))


@define
class _ParseAnswer:
    """Turns one answer into an `InterpretationResult` (and remembers the label, so
    prompts rendered later in the run show it next to co-firing partners).
    ``evidence``: what the prompt showed, recorded with the label for the scorers."""

    key: str
    template_name: str
    template_hash: str
    labels: dict[str, str]
    evidence: EvidenceSplit | None = None

    def __call__(self, resp: LLMResponse) -> InterpretationResult:
        d = resp.data
        label = str(d.get("label", "")).strip()
        if not label:
            raise InvalidResponse("the answer has an empty label", resp.raw_text, resp.usage)
        result = InterpretationResult(
            component_key=self.key,
            label=label,
            confidence=str(d.get("confidence", "")),
            reasoning=str(d.get("reasoning", "")),
            raw_response=resp.raw_text,
            model=resp.model,
            template_name=self.template_name,
            template_hash=self.template_hash,
            usage=resp.usage,
            created_at=_now(),
            elapsed_s=round(resp.elapsed_s, 3),
            evidence=self.evidence,
        )
        self.labels[self.key] = label
        return result


class Interpreter:
    """Labels components with an LLM. See the module docstring for an example.

    ``Interpreter(backend, options=None, **settings)``: ``settings`` are
    `InterpretOptions` fields (``max_concurrent=50``, ``prompt_template=...``,
    ``n_explain=...``), applied over ``options``. Without a backend: Claude when
    ``ANTHROPIC_API_KEY`` is set, else the offline token-lookup baseline. After a
    run, ``self.summary`` is the `RunSummary`, ``self.results_path`` the file and
    ``self.n_dead`` the number of components that never fired (not sent).
    """

    def __init__(self, backend: Backend | None = None, options: InterpretOptions | None = None, **settings: Any):
        self.options = InterpretOptions.from_kwargs(options, **settings)
        self.backend = backend if backend is not None else make_backend("auto", role="label")
        self.env = environment(self.options.templates_dir)
        template = self.options.prompt_template
        self.template = load_template(self.env, template)
        self.template_name = Path(template).name if Path(template).is_file() else str(template)
        self.summary: RunSummary | None = None
        self.results_path: Path | None = None
        self.n_dead = 0
        #: with refine / candidates: (stage name, RunSummary) of each stage of the last run
        self.refine_stages: list[tuple[str, RunSummary]] = []
        self._section_cache: dict[tuple[str, str | None, str | None], tuple[jinja2.Template, str]] = {}

    def __repr__(self) -> str:
        return (f"Interpreter({self.backend!r}, max_concurrent={self.options.max_concurrent}, "
                f"template={self.template_name!r})")

    # -- prompts ---------------------------------------------------------------------

    def _section(self, name: str, harvest: HarvestResult) -> tuple[jinja2.Template, str]:
        """The template for an accumulator output, and its source (for the hash).

        In order: ``section_templates[name]`` (an error if it is missing), the
        template the harvest recorded for that accumulator (`recorded_sections`),
        ``sections/<name>.j2``, the generic one.
        """
        given = self.options.section_templates.get(name)
        recorded = None if given is not None else recorded_sections(harvest).get(name)
        key = (name, given, recorded)
        hit = self._section_cache.get(key)
        if hit is None:
            hit = self._section_cache[key] = self._load_section(name, given, recorded)
        return hit

    def _load_section(self, name: str, given: str | None, recorded: str | None) -> tuple[jinja2.Template, str]:
        if given is not None:
            return self._compiled(given)  # asked for by name: missing is an error
        if recorded is not None:
            try:
                return self._compiled(recorded)
            except FileNotFoundError:
                # e.g. a custom accumulator's templates folder not passed on this machine
                log.warning("the harvest names %r as the section template of %r, but it is not on the "
                            "template search path (pass templates_dir=); falling back", recorded, name)
        try:
            return self._compiled(f"sections/{name}.j2")
        except FileNotFoundError:
            return self._compiled(GENERIC_SECTION)

    def _compiled(self, name_or_path: str) -> tuple[jinja2.Template, str]:
        return load_template(self.env, name_or_path), template_source(self.env, name_or_path)

    def section_names(self, harvest: HarvestResult, comp: ComponentData) -> list[str]:
        ran = {a.get("name") for a in harvest.config.accumulators}
        names = [n for n in BUILTIN_SECTIONS if n in ran or _has_value(getattr(comp, n))]
        names += sorted(k for k in comp.extras if k not in BUILTIN_SECTIONS)
        return [n for n in names if n not in self.options.exclude_sections]

    def harvested_sections(self, harvest: HarvestResult) -> list[str]:
        """The built-in sections whose accumulator ran in this harvest (and are not excluded)."""
        ran = {a.get("name") for a in harvest.config.accumulators}
        return [n for n in BUILTIN_SECTIONS if n in ran and n not in self.options.exclude_sections]

    def template_hash(self, harvest: HarvestResult) -> str:
        """Hash of the main template, every section template this harvest uses and the schema."""
        names: set[str] = set()
        for i in range(min(TEMPLATE_PEEK, len(harvest))):  # read by position: a lazy harvest parses only these
            names.update(self.section_names(harvest, harvest[i]))
        srcs = [template_source(self.env, self.options.prompt_template)]
        srcs += [self._section(n, harvest)[1] for n in sorted(names)]
        srcs += [template_source(self.env, n) for n in SECTION_HELPERS]
        srcs.append(json.dumps(INTERPRETATION_SCHEMA, sort_keys=True))
        return sources_hash(srcs)

    def _sections(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str],
                  neighbours: Any = None) -> list[dict[str, str]]:
        """Each shown accumulator output rendered by its section template (empty ones dropped).
        ``neighbours`` (the second pass: a `autointerp.neighbours.NeighbourContext`) replaces
        the co-firing section with the ``neighbours`` section, which lists the partners with
        their labels, and the weight-space neighbours."""
        opts = self.options
        explain, explain_top = shown_examples(comp, opts.n_explain, opts.n_top)  # split_examples' shown ones
        # a random example that is also among the strongest is shown once, with the strongest
        top_ids = {(e.sequence_index, e.position) for e in explain_top}
        shown_before = {(e.sequence_index, e.position) for e in explain + explain_top}
        values = {
            "examples": [e for e in explain if (e.sequence_index, e.position) not in top_ids],
            "top_examples": explain_top,
            # each window once: a quantile example already among the random or strongest is not repeated
            "quantile_examples": [
                evolve(q, examples=[e for e in q.examples if (e.sequence_index, e.position) not in shown_before])
                for q in comp.quantile_examples
            ],
            "histogram": comp.histogram,
            "input_tokens": comp.input_tokens,
            "output_tokens": comp.output_tokens,
            "output_logits": comp.output_logits,
            "correlations": comp.correlations,
        }
        sections = []
        names = self.section_names(harvest, comp)
        if neighbours is not None:
            names = [n for n in names if n != "correlations"] + ([NEIGHBOURS] if neighbours else [])
            values[NEIGHBOURS] = neighbours
        for name in names:
            tmpl, _ = self._section(name, harvest)
            text = tmpl.render(
                name=name,
                value=values[name] if name in values else comp.extras[name],
                component=comp,
                labels=labels,
                threshold=harvest.config.threshold_for(comp.layer),
                token_kind=harvest.config.tokenizer_kind,
                n_tokens=opts.n_tokens,
                n_partners=opts.n_partners,
            ).strip()
            if text:
                sections.append({"name": name, "text": text})
        return sections

    def variables_for(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None,
                      neighbours: Any = None) -> dict[str, Any]:
        """Everything the main template sees for one component (sections already rendered)."""
        cfg = harvest.config
        model = cfg.model or {}
        dataset = cfg.dataset or {}
        labels = labels or {}
        widths = {l.name: l.width for l in cfg.layers}
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
            # this component's threshold (its layer's); the system block lists every layer's when they differ
            "threshold": cfg.threshold_for(comp.layer),
            "layer_thresholds": None if is_uniform(cfg.layer_thresholds) else dict(cfg.layer_thresholds or {}),
            "token_kind": cfg.tokenizer_kind,
            "firing_count": comp.firing_count,
            "firing_rate": comp.firing_rate,
            "mean_activation": comp.mean_activation,
            "max_activation": comp.max_activation,
            "early_positions": EARLY_POSITIONS,
            "sections": self._sections(comp, harvest, labels, neighbours),
            "labels": labels,
            # the system block explains only the evidence this harvest has (the same for every component)
            "harvested": self.harvested_sections(harvest),
        }

    def render(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None,
               neighbours: Any = None) -> dict[str, str]:
        """``{"system": ..., "prompt": ...}`` for one component (``neighbours``: the second pass's context)."""
        return render_blocks(self.template, self.variables_for(comp, harvest, labels, neighbours))

    def request_for(self, comp: ComponentData, harvest: HarvestResult, labels: Mapping[str, str] | None = None,
                    neighbours: Any = None) -> LLMRequest:
        parts = self.render(comp, harvest, labels, neighbours)
        return LLMRequest(
            prompt=parts["prompt"],
            system=parts["system"],
            schema=INTERPRETATION_SCHEMA,
            schema_name="interpretation",
            max_tokens=self.options.max_tokens,
            metadata={"component": comp, "key": comp.key, "token_kind": harvest.config.tokenizer_kind},
        )

    # -- jobs ------------------------------------------------------------------------

    def _selected(self, harvest: HarvestResult, opts: InterpretOptions) -> list[str]:
        """The keys of the components this run is about, from the harvest's index (no evidence parsed)."""
        if opts.keys is None:
            rows = harvest.summaries()
        else:
            wanted = set(opts.keys)
            by_key = {r.key: r for r in harvest.summaries() if r.key in wanted}
            missing = [k for k in opts.keys if k not in by_key]
            if missing:
                harvest[missing[0]]  # raises the harvest's KeyError (the key, the keys' form, the layers)
            rows = [by_key[k] for k in opts.keys]
        if opts.skip_dead:
            live = [r for r in rows if r.firing_count > 0]
            self.n_dead = len(rows) - len(live)
            rows = live
        return [r.key for r in rows]

    def jobs(
        self,
        harvest: HarvestResult,
        *,
        options: InterpretOptions | None = None,
        done: set[str] | None = None,
        labels: dict[str, str] | None = None,
        **changes: Any,
    ) -> tuple[list[str], Iterator[Job]]:
        """The keys of the components to label (pending, at most ``limit``) and a lazy iterator of their jobs.

        ``options`` / ``changes``: this run's `InterpretOptions` (see `run`);
        ``done``: keys already labelled; ``labels``: known labels, filled in as
        answers arrive. Prompts are rendered as the runner pulls jobs, so labels
        that arrived earlier in the run already show up next to co-firing partners.
        """
        opts = self.options.for_run(options, **changes)
        done = done or set()
        labels = labels if labels is not None else {}
        pending = [k for k in self._selected(harvest, opts) if k not in done]
        if opts.limit is not None:
            pending = pending[: opts.limit]
        thash = self.template_hash(harvest)
        sets = self.evidence_sets(harvest, opts)

        def gen() -> Iterator[Job]:
            for key in pending:
                comp = harvest[key]  # read when the runner asks for its job: one component at a time
                shown = sets.record(comp)
                parse = _ParseAnswer(comp.key, self.template_name, thash, labels, shown)
                yield Job(comp.key, self.request_for(comp, harvest, labels), parse)

        return pending, gen()

    def evidence_sets(self, harvest: HarvestResult, options: InterpretOptions | None = None) -> EvidenceSets:
        """The explain / validate / test split of this harvest's components under ``options``."""
        opts = options or self.options
        return EvidenceSets(harvest, self.options.n_explain, self.options.n_top, opts.n_validate)

    # -- running ---------------------------------------------------------------------

    @staticmethod
    def _out_dir(out: RunPaths | str | os.PathLike | None, label_set: str | None = None) -> Path:
        """The interpretations folder of ``out`` for ``label_set`` (None: the set ``out`` names)."""
        if out is None:
            d = Path(tempfile.mkdtemp(prefix="autointerp-interpretations-"))
            log.warning("no out= given: writing interpretations to %s (pass out= to resume later)", d)
            return d if label_set is None else label_set_folder(d, label_set)
        if isinstance(out, RunPaths):
            if label_set is not None and not out.is_default_set and out.label_set != label_set:
                raise ValueError(
                    f"interpret option label_set is {label_set!r} but out names label set {out.label_set!r}; "
                    "give one of them (out.with_label_set(...) or label_set=...)"
                )
            return (out if label_set is None else out.with_label_set(label_set)).interpretations
        return Path(out) if label_set is None else label_set_folder(out, label_set)

    def _runner(self, opts: InterpretOptions, results_path: Path, record_key: Callable[[Mapping[str, Any]], str] = labelled_record_key,
                desc: str = "interpret") -> Any:
        """The live `JobRunner`, or the Message Batches runner for ``batch=True``."""
        costs = results_path.parent / COSTS_FILE  # every billed answer of the label set, whatever the pass
        if opts.batch:
            from autointerp.llm.batches import BatchRunner

            return BatchRunner(self.backend, results_path, poll_interval_s=opts.poll_interval_s,
                               max_cost_usd=opts.max_cost_usd, prices=opts.prices, progress=opts.progress,
                               record_key=record_key, desc=desc, cost_log=costs)
        return JobRunner(self.backend, results_path, desc=desc, record_key=record_key, cost_log=costs,
                         **opts.runner_options())

    async def arun(
        self,
        harvest: HarvestResult,
        out: RunPaths | str | os.PathLike | None = None,
        *,
        options: InterpretOptions | None = None,
        **changes: Any,
    ) -> list[InterpretationResult]:
        """Label the pending components of ``harvest`` into ``out`` (an interpretations
        folder or a `RunPaths`); return every result for the selected components.

        ``options`` (default: the Interpreter's) and ``changes`` (`InterpretOptions`
        fields: ``keys``, ``limit``, ``batch``, ``poll_interval_s``, ``max_cost_usd``
        ...) set this run; the prompt's options are the Interpreter's.
        """
        opts = self.options.for_run(options, **changes)
        folder = self._out_dir(out, opts.label_set)
        if opts.neighbours and opts.refines:
            raise ValueError("interpret options neighbours and refine are separate passes: run the neighbour pass, then refine")
        self.summary = None
        adopt_old_summary(folder)
        try:
            if opts.neighbours:
                return await self._neighbour_pass(harvest, folder, opts)
            if opts.refines:
                from autointerp.refine import Refiner

                return await Refiner(self, opts).run(harvest, folder)
            return await self._first_pass(harvest, folder, opts)
        finally:
            if self.summary is not None:
                write_summary(folder, self.summary)

    async def _first_pass(self, harvest: HarvestResult, folder: Path, opts: InterpretOptions) -> list[InterpretationResult]:
        """The labels of the pending components (the plain pass)."""
        results_path = self.results_path = folder / RESULTS_FILE
        labels = read_labels(results_path)
        done = set(labels)
        pending, jobs = self.jobs(harvest, options=opts, done=done, labels=labels)
        self.summary = await self._runner(opts, results_path).run(jobs, total=len(pending))
        wanted = self._selected(harvest, opts)
        already = len(done.intersection(wanted))
        self.summary.skipped += already
        self.summary.total += already
        found = read_interpretations(results_path, keys=wanted, order=harvest.keys())
        return list(found.values())

    async def _neighbour_pass(self, harvest: HarvestResult, folder: Path, opts: InterpretOptions) -> list[InterpretationResult]:
        """The second pass (``neighbours=True``): every selected component again, its prompt
        showing its neighbours' current labels; appended to the same results file, so its
        label wins (the last labelled line), and resumed by its own record key."""
        from autointerp.neighbours import neighbour_context, weight_table as weight_table_of

        results_path = self.results_path = folder / RESULTS_FILE
        labels = read_labels(results_path)
        if not labels:
            raise ValueError(
                f"interpret option neighbours is a second pass over a first pass's labels, but {results_path} "
                "holds none: run `autointerp interpret` (without --neighbours) first"
            )
        done = completed_keys(results_path, neighbours_record_key)
        selected = self._selected(harvest, opts)
        pending = [k for k in selected if neighbours_job_key(k) not in done]
        if opts.limit is not None:
            pending = pending[: opts.limit]
        weight_table = weight_table_of(harvest)
        if not weight_table and not any(harvest[k].correlations for k in pending[:100]):
            log.warning("the harvest has neither co-firing statistics (CorrelationAcc) nor weight-space neighbours: "
                        "the neighbour pass has no neighbours to show")
        thash = sources_hash([self.template_hash(harvest), self._section(NEIGHBOURS, harvest)[1]])
        sets = self.evidence_sets(harvest, opts)
        name = self.template_name + NEIGHBOURS_TAG

        def gen() -> Iterator[Job]:
            for key in pending:
                comp = harvest[key]  # one component at a time
                ctx = neighbour_context(comp, labels, n=opts.n_neighbours, weight_table=weight_table)
                parse = _ParseAnswer(comp.key, name, thash, labels, sets.record(comp))
                yield Job(neighbours_job_key(comp.key), self.request_for(comp, harvest, labels, ctx), parse)

        runner = self._runner(opts, results_path, neighbours_record_key, "interpret --neighbours")
        self.summary = await runner.run(gen(), total=len(pending))
        wanted = selected
        already = len(done.intersection(neighbours_job_key(k) for k in wanted))
        self.summary.skipped += already
        self.summary.total += already
        return list(read_interpretations(results_path, keys=wanted, order=harvest.keys()).values())

    def run(
        self,
        harvest: HarvestResult,
        out: RunPaths | str | os.PathLike | None = None,
        *,
        options: InterpretOptions | None = None,
        **changes: Any,
    ) -> list[InterpretationResult]:
        """`arun` from synchronous code; works inside a running event loop (Jupyter)."""
        return run_coroutine_sync(lambda: self.arun(harvest, out, options=options, **changes))

    def dry_run(
        self,
        harvest: HarvestResult,
        out_dir: RunPaths | str | os.PathLike,
        *,
        options: InterpretOptions | None = None,
        **changes: Any,
    ) -> list[Path]:
        """Write each selected component's rendered prompt to ``out_dir/<key>.txt``
        (a `RunPaths`: its label set's ``prompts`` folder); call nothing."""
        opts = self.options.for_run(options, **changes)
        if isinstance(out_dir, RunPaths):
            folder = (out_dir if opts.label_set is None else out_dir.with_label_set(opts.label_set)).prompts
        else:
            folder = Path(out_dir)
        keys = self._selected(harvest, opts)
        if opts.limit is not None:
            keys = keys[: opts.limit]
        written = []
        for key in keys:
            comp = harvest[key]
            req = self.request_for(comp, harvest)
            text = (
                f"### system (cached; {len(req.system)} characters)\n{req.system}\n"
                f"### prompt ({len(req.prompt)} characters)\n{req.prompt}\n"
                f"### schema\n{json.dumps(req.schema, indent=2)}\n"
            )
            path = folder / f"{_safe_name(comp.key)}.txt"
            atomic_write_text(path, text)
            written.append(path)
        return written


def label_set_summary(folder: str | os.PathLike, last_run: RunSummary | None = None) -> dict[str, Any]:
    """What ``<interpretations>/summary.json`` holds: the label set's cost so far, from its
    append-only cost log (every pass and every run, resumes and killed runs included),
    by stage, and ``last_run``, the `RunSummary` of the run that wrote it."""
    totals = read_costs(Path(folder) / COSTS_FILE)
    out = to_dict(totals)
    out["last_run"] = None if last_run is None else to_dict(last_run)
    return out


def write_summary(folder: str | os.PathLike, last_run: RunSummary | None) -> Path:
    """Write `label_set_summary` to ``<folder>/summary.json`` (atomically: complete or absent)."""
    path = Path(folder) / SUMMARY_FILE
    atomic_write_text(path, json.dumps(label_set_summary(folder, last_run), indent=1))
    return path


#: the stage of the cost-log line that carries a summary.json written before the cost log existed
BEFORE_COST_LOG = "before costs.jsonl"


def adopt_old_summary(folder: str | os.PathLike) -> None:
    """A label set labelled before the cost log (its summary.json is one run's `RunSummary`, no
    ``costs.jsonl``): that run's cost becomes the log's first line, so it is not lost at the next
    summary. Nothing else was recorded of earlier runs: their cost is unknown."""
    folder = Path(folder)
    summary, costs = folder / SUMMARY_FILE, folder / COSTS_FILE
    if costs.exists() or not summary.is_file():
        return
    try:
        old = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # rewritten from the log at the end of this run
    if not isinstance(old, dict) or "last_run" in old or not isinstance(old.get("usage"), dict):
        return
    try:
        usage = TokenUsage(**{k: int(v) for k, v in old["usage"].items()})
        cost = float(old.get("cost_usd", 0.0))
    except (TypeError, ValueError):
        return
    if usage != TokenUsage() or cost:
        append_jsonl(costs, CostEntry(stage=BEFORE_COST_LOG, key="", model=str(old.get("model", "")), usage=usage,
                                      cost_usd=cost, priced=bool(old.get("cost_known", True)), created_at=_now()))


def load_interpretations(
    path: str | os.PathLike | RunPaths,
    *,
    keys: Iterable[str] | None = None,
    order: Sequence[str] | None = None,
) -> list[InterpretationResult]:
    """`autointerp.records.read_interpretations` as a list (a results file, its folder or a
    `RunPaths`): the last record with a non-empty label per component, in ``order`` when given."""
    return list(read_interpretations(path, keys=keys, order=order).values())


def interpret_run(
    run: RunPaths | str | os.PathLike,
    backend: Backend | None = None,
    *,
    out: str | os.PathLike | None = None,
    announce: Callable[[str], None] | None = None,
    options: InterpretOptions | None = None,
    **settings: Any,
) -> list[InterpretationResult]:
    """Label a run's harvest into its interpretations folder.

    ``run`` is a `RunPaths` or a run id (under ``out``); ``options`` / ``settings``
    are the `Interpreter`'s (``label_set="A"`` labels into that set of the run). Without ``backend``: Claude when ``ANTHROPIC_API_KEY``
    is set, otherwise the offline token-lookup baseline, and ``announce``
    (default: print to stderr) says which.
    """
    paths = run if isinstance(run, RunPaths) else RunPaths.of(str(run), out)
    opts = InterpretOptions.from_kwargs(options, **settings)  # checked before the harvest is read
    harvest = load_harvest(paths.harvest)
    say = announce or (lambda msg: print(msg, file=sys.stderr))
    if backend is None:
        backend = make_backend("auto", role="label", announce=say)
        if not isinstance(backend, _offline_type()):
            say(f"labelling with Claude ({backend.model})")
    interp = Interpreter(backend, opts)
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
        fired = [r.key for r in harvest.summaries() if r.firing_count > 0]
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
