"""``autointerp demo``: the whole pipeline on the embedded model, with no network, GPU or key.

The demo is a list of stages run in order over one `DemoRun` (the shared state):
harvest, interpretation (Claude with ``ANTHROPIC_API_KEY``, else the offline
token-lookup baseline), scoring (Claude, else the token-match baseline judge) and
the report. A stage is a function ``stage(run: DemoRun) -> None`` that reads
what earlier stages left on ``run`` and leaves its own results there.

To add a stage, append ``(name, "package.module:function")`` to `DEMO_STAGES`
(a stage whose module is not importable is skipped with a note), or pass
``stages=[...]`` to `run_demo`::

    from autointerp.demo import run_demo
    run = run_demo(out="/tmp/demo")          # everything under /tmp/demo/demo/
    run.harvest["blocks.0.mlp.act:7"]
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from autointerp.paths import RunPaths

DEMO_RUN_ID = "demo"

Stage = Callable[["DemoRun"], None]

#: the demo's stages, in order (an entry whose module cannot be imported is skipped with a note)
DEMO_STAGES: list[tuple[str, str]] = [
    ("harvest", "autointerp.demo:_harvest_stage"),
    ("interpret", "autointerp.interpret:demo_stage"),
    ("score", "autointerp.scoring:demo_stage"),
    ("report", "autointerp.report:demo_stage"),
]


@define
class DemoRun:
    """What the demo's stages share: where to write, the settings, and each stage's results."""

    paths: RunPaths
    n_batches: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    log: Callable[[str], None] = print
    harvest: Any = None  # HarvestResult after the harvest stage
    results: dict[str, Any] = field(factory=dict)  # anything a later stage wants to leave
    timings: dict[str, float] = field(factory=dict)  # seconds per stage


def _harvest_stage(run: DemoRun) -> None:
    """Harvest the demo model's MLP neurons over its bundled held-out text into ``<out>/demo/harvest``."""
    from autointerp.run_harvest import HarvestOptions, run_harvest, summarize

    opts = HarvestOptions(
        target="demo",
        out=str(run.paths.root.parent),
        run_id=run.paths.run_id,
        n_batches=run.n_batches,
        batch_size=run.batch_size,
        seed=run.seed,
        device=run.device,
        checkpoint_every=0,
        overwrite=True,
        progress=run.progress,
    )
    result = run_harvest(opts, log=run.log)
    run.harvest = result
    run.log(f"harvest: {run.paths.harvest}/config.json and components.jsonl")
    text = summarize(result)
    if text:
        run.log("a few neurons and the tokens they fire on most reliably (top precision):\n" + text)


def resolve_stage(spec: str | Stage) -> Stage | None:
    """``"module:function"`` -> the function, or None if the module is not installed (yet)."""
    if callable(spec):
        return spec
    mod, _, fn = spec.partition(":")
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name and (mod == e.name or mod.startswith(e.name + ".")):
            return None
        raise
    return getattr(module, fn, None)


def run_demo(
    out: str | Path | None = None,
    *,
    n_batches: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    stages: Sequence[tuple[str, str | Stage]] | None = None,
    log: Callable[[str], None] | None = print,
) -> DemoRun:
    """Run the demo's stages in order; returns the `DemoRun` with every stage's results."""
    run = DemoRun(RunPaths.of(DEMO_RUN_ID, out), n_batches=n_batches, batch_size=batch_size, seed=seed,
                  device=device, progress=progress, log=log or (lambda s: None))
    t_all = time.perf_counter()
    for name, spec in stages if stages is not None else DEMO_STAGES:
        fn = resolve_stage(spec)
        if fn is None:
            run.log(f"({name}: not available in this installation, skipped)")
            continue
        t0 = time.perf_counter()
        fn(run)
        run.timings[name] = time.perf_counter() - t0
    run.timings["total"] = time.perf_counter() - t_all
    run.log(f"demo done in {run.timings['total']:.1f}s; results in {run.paths.root}")
    return run
