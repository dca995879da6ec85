"""Log a harvest to Weights & Biases: its config, a summary, and the harvest folder as an artifact.

Optional (``autointerp harvest ... --wandb_project P``). The summary holds the
numbers a researcher checks first: tokens seen, components, how many never fired,
and a histogram of log10 firing rates of the components that did fire. Works
offline (``WANDB_MODE=offline``): the run is written under ``wandb/`` for a later
``wandb sync``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autointerp.harvest import HarvestResult
from autointerp.paths import RunPaths
from autointerp.storage import to_dict


def harvest_summary(result: HarvestResult) -> dict[str, Any]:
    """Plain numbers for a run summary (no wandb needed)."""
    rates = [c.firing_rate for c in result]
    fired = [r for r in rates if r > 0]
    return {
        "n_tokens": result.config.n_tokens,
        "n_batches": result.config.n_batches,
        "n_components": len(result),
        "n_never_fired": len(rates) - len(fired),
        "frac_never_fired": (len(rates) - len(fired)) / max(len(rates), 1),
        "median_firing_rate": sorted(fired)[len(fired) // 2] if fired else 0.0,
        "mean_firing_rate": sum(rates) / max(len(rates), 1),
    }


def log_harvest(result: HarvestResult, paths: RunPaths, *, project: str, entity: str | None = None,
                options: Any = None, upload: bool = True) -> Any:
    """Start a wandb run, log config + summary + firing-rate histogram, upload the harvest folder.

    Returns the finished run's id.
    """
    import wandb

    config = {"harvest": to_dict(result.config)}
    if options is not None:
        try:
            from attrs import asdict

            config["options"] = asdict(options, filter=lambda a, v: a.name != "extra_accumulators")
        except Exception:  # noqa: BLE001 - options are a nicety
            pass
    run = wandb.init(project=project, entity=entity, name=paths.run_id, job_type="harvest", config=config)
    try:
        summary = harvest_summary(result)
        fired = [math.log10(c.firing_rate) for c in result if c.firing_rate > 0]
        log: dict[str, Any] = dict(summary)
        if fired:
            log["firing_rate_log10_histogram"] = wandb.Histogram(fired, num_bins=min(64, max(4, len(fired) // 4)))
        run.log(log)
        for k, v in summary.items():
            run.summary[k] = v
        if upload:
            art = wandb.Artifact(name=f"harvest-{paths.run_id}", type="harvest",
                                 description=f"autointerp harvest of {result.config.model.get('target', '')}",
                                 metadata=summary)
            art.add_dir(str(Path(paths.harvest)))
            run.log_artifact(art)
        run_id = run.id
    finally:
        run.finish()
    return run_id
