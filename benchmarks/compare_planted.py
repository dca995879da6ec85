"""`autointerp compare` on planted truth, and what the paired bootstrap costs (issue 13 item 6).

Part 1: for each seed, the planted-rule model (`autointerp.testing.synthetic`) is
harvested into a run with two label sets, ``true`` (every planted rule) and
``shuffled`` (each component given another component's rule), labelled by the
scripted labeller and scored by the planted-truth judge, both behind the local
fault server through the real anthropic SDK; then `compare_label_sets(run,
"true", "shuffled")`. Prints, per scorer and seed, n, both means, the mean
difference with its 95% CI and wins/ties/losses.

Part 2: wall time of `bootstrap_mean_ci` (10,000 resamples) at n = 1,000,
10,000 and 50,000 components.

    python benchmarks/compare_planted.py [--seeds 0,1,2] [--scorers detection,fuzzing,simulation]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def planted_run(root: Path, seed: int):
    from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
    from autointerp.accumulators.window_pool import RandomWindowAcc
    from autointerp.harvest import HarvestLoop
    from autointerp.paths import RunPaths
    from autointerp.testing.synthetic import SyntheticModel

    model = SyntheticModel.default(seed=seed)
    loop = HarvestLoop(
        [ReservoirAcc(k=30, context_tokens=10), TopActivationAcc(k=10, context_tokens=10), InputTokenAcc(),
         RandomWindowAcc(n_windows=256, window_len=32)],
        vocab_size=model.vocab_size, decode=model.decode, seed=seed, progress=False,
    )
    harvest = loop.run(model.batches(8, 32, 64))
    paths = RunPaths.of(f"planted-{seed}", root)
    harvest.save(paths.harvest)
    return model, paths


def label_and_score(model, paths, scorers: list[str]) -> None:
    from autointerp.harvest import load_harvest
    from autointerp.interpret import Interpreter
    from autointerp.llm.anthropic import AnthropicBackend
    from autointerp.scoring import score_run
    from autointerp.testing.llm_server import LLMServer
    from autointerp.testing.synthetic import rule_judge_responder, scripted_labeller

    true = model.labels()
    keys = list(true)
    shuffled = {k: true[keys[(i + 1) % len(keys)]] for i, k in enumerate(keys)}
    harvest = load_harvest(paths.harvest)
    for name, labels in (("true", true), ("shuffled", shuffled)):
        with LLMServer(scripted_labeller(labels), api_key="k") as server:
            backend = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="k")
            Interpreter(backend, progress=False).run(harvest, paths, label_set=name)
    with LLMServer(rule_judge_responder(rules=model.rules), api_key="k") as server:
        judge = AnthropicBackend("claude-haiku-4-5-20251001", base_url=server.url, api_key="k")
        for name in ("true", "shuffled"):
            score_run(paths, label_set=name, backend=judge, scorers=scorers, baselines=False, max_concurrent=16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scorers", default="detection,fuzzing,simulation")
    args = ap.parse_args()
    from autointerp.compare import DEFAULT_RESAMPLES, bootstrap_mean_ci, compare_label_sets

    scorers = args.scorers.split(",")
    print(f"planted truth: true-rule set vs shuffled set, paired bootstrap ({DEFAULT_RESAMPLES:,} resamples, seed 0)")
    print("| seed | scorer | n | true | shuffled | true - shuffled [95% CI] | wins/ties/losses | CI excludes 0 |")
    print("|---:|---|---:|---:|---:|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            model, paths = planted_run(Path(tmp), seed)
            t0 = time.perf_counter()
            label_and_score(model, paths, scorers)
            result = compare_label_sets(paths, "true", "shuffled")
            for c in result.scorers:
                print(f"| {seed} | {c.scorer} | {c.n} | {c.mean_a:.3f} | {c.mean_b:.3f} | {c.mean_diff:+.3f} "
                      f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.wins}/{c.ties}/{c.losses} | {'yes' if c.excludes_zero else 'no'} |")
            print(f"(seed {seed}: labelled, scored and compared in {time.perf_counter() - t0:.1f} s)", flush=True)

    print(f"\nbootstrap_mean_ci cost ({DEFAULT_RESAMPLES:,} resamples, {os.cpu_count()} CPUs):")
    print("| components | seconds |")
    print("|---:|---:|")
    rng = np.random.default_rng(0)
    for n in (1_000, 10_000, 50_000):
        x = rng.uniform(-1, 1, size=n)
        t0 = time.perf_counter()
        bootstrap_mean_ci(x)
        print(f"| {n:,} | {time.perf_counter() - t0:.2f} |", flush=True)


if __name__ == "__main__":
    main()
