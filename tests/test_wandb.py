"""wandb logging of a harvest, for real, in offline mode (``WANDB_MODE=offline``, nothing leaves the machine).

The SPD download path (``wandb.Api``) is tested in tests/test_adapters_spd.py with an
injected stand-in for ``wandb.Api`` that copies files from a local folder, because the
real service cannot be reached from here.
"""

from __future__ import annotations

import time

import pytest

from autointerp.run_harvest import HarvestOptions, run_harvest
from autointerp.wandb_log import harvest_summary

wandb = pytest.importorskip("wandb")


@pytest.mark.timeout(120)
def test_offline_run_logs_config_summary_and_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    opts = HarvestOptions(target="demo", out=str(tmp_path / "out"), n_batches=2, batch_size=2, context_length=32,
                          checkpoint_every=0, progress=False, device="cpu", wandb_project="autointerp-test",
                          layers=["blocks.2.mlp.act"])
    result = run_harvest(opts, log=None)
    summary = harvest_summary(result)
    assert summary["n_components"] == 512 and summary["n_tokens"] == 128
    assert summary["n_never_fired"] == sum(1 for c in result if c.firing_count == 0)
    runs = list((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_dir = runs[0]
    assert list(run_dir.glob("run-*.wandb")), "no offline run log written"
    # wandb's service may still be writing the log when finish() returns: give it a few seconds
    needles = (b"n_never_fired", b"firing_rate_log10_histogram", b"harvest-demo", b"components.jsonl",
               b"layer_descriptions")
    deadline = time.time() + 30
    while True:
        data = b"".join(p.read_bytes() for p in run_dir.glob("run-*.wandb"))
        if all(n in data for n in needles) or time.time() > deadline:
            break
        time.sleep(0.2)
    # the config, the summary and the artifact are in the run's log (protobuf records)
    for needle in (b"n_never_fired", b"firing_rate_log10_histogram", b"harvest-demo", b"components.jsonl",
                   b"layer_descriptions"):
        assert needle in data, needle
