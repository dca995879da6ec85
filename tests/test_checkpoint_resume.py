"""Kill a real ``autointerp harvest`` process with SIGKILL mid-run, resume it, and get the uninterrupted result.

"The same result" means byte-identical ``components.jsonl``: the same firing
counts, the same reservoir and top-activation examples, the same token
statistics. Only ``config.json``'s ``created_at`` differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
ARGS = ["--dataset", "demo", "--n_batches", "8", "--batch_size", "2", "--context_length", "32",
        "--checkpoint_every", "1", "--no_progress", "--device", "cpu", "--threshold", "0.5",
        "--layers", "blocks.2.mlp.act"]


def harvest_cmd(out: Path, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autointerp", "harvest", "_slow_demo:make", "--out", str(out), "--run_id", run_id,
            *ARGS, *extra]


def env(delay: float) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")])
    e["AUTOINTERP_TEST_DELAY"] = str(delay)
    e["OMP_NUM_THREADS"] = "1"
    return e


def checkpoint_batches(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["loop"]["n_batches"])
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


@pytest.mark.timeout(120)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    out = tmp_path / "out"
    ckpt = out / "killed" / "checkpoints" / "harvest-rank0-of-1.pt"
    proc = subprocess.Popen(harvest_cmd(out, "killed"), env=env(0.4), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # every checkpoint is a new file renamed into place: count them by (inode, mtime), without loading them
        deadline = time.time() + 90
        seen: set[tuple[int, int]] = set()
        while len(seen) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the harvest never wrote a checkpoint"
            try:
                st = os.stat(ckpt)
                seen.add((st.st_ino, st.st_mtime_ns))
            except FileNotFoundError:
                pass
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = checkpoint_batches(ckpt)
    assert 3 <= done < 8, f"killed after {done} of 8 batches"
    assert not (out / "killed" / "harvest").exists()

    # without --resume the run refuses to throw the checkpoint away
    again = subprocess.run(harvest_cmd(out, "killed"), env=env(0), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = subprocess.run(harvest_cmd(out, "killed", "--resume"), env=env(0), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {ckpt}: {done} batches already done" in resumed.stdout

    whole = subprocess.run(harvest_cmd(out, "whole"), env=env(0), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    a = (out / "killed" / "harvest" / "components.jsonl").read_text()
    b = (out / "whole" / "harvest" / "components.jsonl").read_text()
    assert a == b
    ca = json.loads((out / "killed" / "harvest" / "config.json").read_text())
    cb = json.loads((out / "whole" / "harvest" / "config.json").read_text())
    ca.pop("created_at"), cb.pop("created_at")
    assert ca == cb and ca["n_batches"] == 8
    # the examples are really there: a non-trivial comparison
    comps = [json.loads(line) for line in a.splitlines()]
    assert sum(len(c["examples"]) for c in comps) > 100
    assert sum(c["firing_count"] for c in comps) > 1000


@pytest.mark.timeout(120)
def test_a_second_harvest_of_a_running_run_is_refused(tmp_path, capsys):
    from autointerp.cli import main as cli_main

    out = tmp_path / "out"
    ckpt = out / "busy" / "checkpoints" / "harvest-rank0-of-1.pt"
    first = subprocess.Popen(harvest_cmd(out, "busy"), env=env(0.4), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while not ckpt.exists():  # the first harvest is past its start: it holds the run lock
            assert first.poll() is None, first.stderr.read().decode()
            assert time.time() < deadline, "the first harvest never wrote a checkpoint"
            time.sleep(0.02)
        second = harvest_cmd(out, "busy", "--resume")[3:]  # the same command, in this process
        assert cli_main(second) == 2
        err = capsys.readouterr().err
        assert "another process is writing the harvest of run busy" in err
        assert first.poll() is None  # the refused second harvest left the first alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # a killed holder releases the lock with its file descriptors: the run resumes
    resumed = subprocess.run(harvest_cmd(out, "busy", "--resume"), env=env(0), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
