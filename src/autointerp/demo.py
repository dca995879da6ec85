"""``autointerp demo``: the whole pipeline on the embedded model, with no network, GPU or key.

The demo is a list of stages run in order over one `DemoRun` (the shared state):
harvest, interpretation (Claude with ``ANTHROPIC_API_KEY``, else the offline
token-lookup baseline), scoring (Claude, else the token-match baseline judge) and
the report. A stage is a function ``stage(run: DemoRun) -> None`` that reads
what earlier stages left on ``run`` and leaves its own results there.

`demo_stages()` lists them; to run others, pass ``stages=[(name, function), ...]``
to `run_demo` (e.g. ``demo_stages()[:2]`` stops after the labels)::

    from autointerp.demo import run_demo
    run = run_demo(out="/tmp/demo")          # everything under /tmp/demo/demo/
    run.harvest["blocks.0.mlp.act:7"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from autointerp.paths import RunPaths

DEMO_RUN_ID = "demo"

Stage = Callable[["DemoRun"], None]


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


def harvest_stage(run: DemoRun) -> None:
    """Harvest the demo model's MLP neurons over its bundled held-out text into ``<out>/demo/harvest``."""
    from autointerp.run_harvest import HarvestOptions, HarvestSummary, run_harvest, summarize

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
    summary = HarvestSummary()  # gathered as the components are written: the harvest is not read back
    result = run_harvest(opts, log=run.log, summary=summary)
    run.harvest = result
    run.log(f"harvest: {run.paths.harvest_config} and {run.paths.harvest_components.name}")
    text = summary.text() if summary.seen else summarize(result)
    if text:
        run.log("a few neurons and the tokens they fire on most reliably (top precision):\n" + text)


def demo_stages() -> list[tuple[str, Stage]]:
    """The demo's stages, in order.

    Imported when called, not with this module: ``autointerp --help`` imports this
    module, and the interpret, score and report halves add about 0.3-0.4 s of
    imports (templates, SDK clients) that only a demo run needs.
    """
    from autointerp.interpret import demo_stage as interpret_stage
    from autointerp.report import demo_stage as report_stage
    from autointerp.scoring import demo_stage as score_stage

    return [("harvest", harvest_stage), ("interpret", interpret_stage), ("score", score_stage), ("report", report_stage)]


def _checked(stages: Sequence[tuple[str, Stage]]) -> list[tuple[str, Stage]]:
    """The stages as a list, every one a ``(name, function)`` pair (checked before any runs)."""
    out = []
    for i, entry in enumerate(stages):
        ok = isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) and callable(entry[1])
        if not ok:
            raise TypeError(
                f"stages[{i}] must be a (name, function) pair with function(run: DemoRun) -> None, got {entry!r}"
            )
        out.append((entry[0], entry[1]))
    return out


def run_demo(
    out: str | Path | None = None,
    *,
    n_batches: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    stages: Sequence[tuple[str, Stage]] | None = None,
    log: Callable[[str], None] | None = print,
) -> DemoRun:
    """Run the demo's stages (default: `demo_stages()`) in order; returns the `DemoRun` with every stage's results."""
    run = DemoRun(RunPaths.of(DEMO_RUN_ID, out), n_batches=n_batches, batch_size=batch_size, seed=seed,
                  device=device, progress=progress, log=log or (lambda s: None))
    todo = _checked(stages) if stages is not None else demo_stages()
    t_all = time.perf_counter()
    for name, fn in todo:
        t0 = time.perf_counter()
        fn(run)
        run.timings[name] = time.perf_counter() - t0
    run.timings["total"] = time.perf_counter() - t_all
    run.log(f"demo done in {run.timings['total']:.1f}s; results in {run.paths.root}")
    return run
