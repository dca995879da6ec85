"""`autointerp interpret` as a real subprocess: SIGKILL and resume, secrets, locks, dry runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_fixtures import make_run  # noqa: E402

from autointerp.storage import RunLock
from autointerp.testing.llm_server import LLMServer

SECRET = "sk-ant-TESTSECRET-9f8e7d6c5b4a"


def cli(args, env_extra=None, **kw):
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "autointerp", "interpret", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def finish(p, timeout=90):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def strict_lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    paths = make_run(tmp_path, n_layers=2, width=16)
    live = 2 * 15
    results = paths.interpretation_results
    rng = random.Random(1234)
    with LLMServer(api_key=SECRET, latency_s=0.1, fault_rates={"429": 0.05, "500": 0.05, "malformed_json": 0.05},
                   retry_after_s=0.01, seed=3) as server:
        args = ["test-run", "--out", str(tmp_path), "--base_url", server.url, "--max_concurrent", "3",
                "--no_progress", "--backoff", "0.01", "--timeout", "5"]
        kills, mid_run = 0, 0

        def n_lines() -> int:
            return len(strict_lines(results)) if results.exists() else 0

        for i in range(4):
            before = n_lines()
            p = cli(args, {"ANTHROPIC_API_KEY": SECRET})
            if i == 0:
                time.sleep(rng.uniform(0.2, 1.0))  # early: during start-up
            else:  # wait for this run to make progress, then kill at a random moment
                deadline = time.monotonic() + 30
                while n_lines() == before and p.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.3))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.communicate(timeout=30)
            n = n_lines()  # every line is valid JSON after every kill
            mid_run += int(before < n < live and p.returncode == -signal.SIGKILL)
        rc, out, err = finish(cli(args, {"ANTHROPIC_API_KEY": SECRET}))
        assert rc == 0, err
    assert kills >= 2 and mid_run >= 1
    recs = strict_lines(results)
    keys = [r["component_key"] for r in recs]
    assert len(keys) == len(set(keys)) == live  # every live component labeled exactly once


def test_secrets_never_written(tmp_path):
    paths = make_run(tmp_path)
    # a hostile server that echoes the credentials it received in every error message
    echo = lambda req: f"you sent {req.headers.get('x-api-key') or req.headers.get('authorization')}"  # noqa: E731
    with LLMServer(api_key=SECRET, error_detail=echo, retry_after_s=0.01) as server:
        server.push_faults("400", "500", "400")
        base = ["test-run", "--out", str(tmp_path), "--base_url", server.url, "--max_concurrent", "1", "--no_progress",
                "--backoff", "0.01", "--max_retries", "0"]
        rc1, out1, err1 = finish(cli(base, {"ANTHROPIC_API_KEY": SECRET}))
        # a wrong key: the 401 message echoes it back too
        rc2, out2, err2 = finish(cli(base, {"ANTHROPIC_API_KEY": "sk-ant-TESTSECRET-wrong-key-0000"}))
    assert rc1 == 0 and rc2 == 3
    assert "authentication failed" in err2
    failures = (paths.interpretation_failures).read_text()
    assert "you sent" in failures  # the echo reached our files ...
    texts = [out1, err1, out2, err2]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            texts.append(f.read_bytes().decode("utf-8", "replace"))
    for t in texts:
        assert "TESTSECRET" not in t  # ... but never the key


def test_missing_key_stops_before_anything(tmp_path):
    rc, out, err = finish(cli(["no-such-run", "--out", str(tmp_path)]))
    assert rc == 3 and "ANTHROPIC_API_KEY is not set" in err
    assert not (tmp_path / "no-such-run").exists()


def test_lock_refuses_a_second_writer(tmp_path):
    paths = make_run(tmp_path)
    with RunLock(paths.interpretations, "the test"):
        rc, out, err = finish(cli(["test-run", "--out", str(tmp_path), "--backend", "offline", "--no_progress"]))
    assert rc == 2 and "another process is writing" in err


def test_dry_run_and_offline_cli(tmp_path):
    paths = make_run(tmp_path)
    rc, out, err = finish(cli(["test-run", "--out", str(tmp_path), "--dry_run", "--limit", "3"]))
    assert rc == 0 and "wrote 3 prompts" in out
    assert len(list(paths.prompts.glob("*.txt"))) == 3
    assert not (paths.interpretation_results).exists()
    rc, out, err = finish(cli(["test-run", "--out", str(tmp_path), "--backend", "offline", "--no_progress"]))
    assert rc == 0 and "done: 10" in err and "fires on" in out
    summary = json.loads((paths.interpretation_summary).read_text())
    assert summary["last_run"]["completed"] == 10


def test_a_bad_option_is_a_clear_error_before_anything(tmp_path):
    paths = make_run(tmp_path)
    rc, out, err = finish(cli(["test-run", "--out", str(tmp_path), "--backend", "offline", "--max_concurrent", "0"]))
    assert rc == 2 and "interpret option max_concurrent must be a whole number >= 1, got 0" in err
    assert not paths.interpretations.exists()
