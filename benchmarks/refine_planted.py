"""Refinement on planted truth: incomplete first labels, refined labels and the true rules, scored on the test set.

`SyntheticModel.partial` (six components that fire on any of two tokens, two on one
token) is harvested; `refining_labeller_responder` behind the local LLM server
(through the real Anthropic SDK) labels it: its first label names only the most
frequent firing token, its revisions add the tokens marked in the misses it is
shown. The same server judges by the rule each label states. Printed: mean test
detection (balanced accuracy) and simulation (F1) of the incomplete components
for the first labels, the refined labels and the true rules; the shuffled-label
control; requests, tokens and simulated cost per refinement stage.

    python benchmarks/refine_planted.py [--seeds 2,3,4] [--refine 2] [--batches 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autointerp.accumulators import InputTokenAcc, ReservoirAcc, TopActivationAcc
from autointerp.accumulators.window_pool import RandomWindowAcc
from autointerp.harvest import HarvestLoop
from autointerp.interpret import Interpreter
from autointerp.llm.anthropic import AnthropicBackend
from autointerp.refine import stage_table
from autointerp.scoring import score
from autointerp.testing.llm_server import LLMServer
from autointerp.testing.synthetic import AnyTokenRule, SyntheticModel, refining_labeller_responder

MODEL = "claude-haiku-4-5-20251001"


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def headline(report, scorer, keys, source="label"):
    return mean(r.score for r in report.results if r.scorer == scorer and r.label_source == source
                and r.component_key in keys and not r.skipped)


def one_seed(seed: int, refine: int, n_batches: int) -> dict:
    model = SyntheticModel.partial(seed=seed)
    loop = HarvestLoop([ReservoirAcc(k=40, context_tokens=10), TopActivationAcc(k=10, context_tokens=10), InputTokenAcc(),
                        RandomWindowAcc(n_windows=256, window_len=32)],
                       vocab_size=model.vocab_size, decode=model.decode, seed=seed, progress=False)
    harvest = loop.run(model.batches(n_batches, 32, 64))
    partial = [k for k, r in zip(model.keys(), model.rules) if isinstance(r, AnyTokenRule)]
    out: dict = {"seed": seed}
    with LLMServer(refining_labeller_responder(rules=model.rules)) as server, tempfile.TemporaryDirectory() as tmp:
        backend = AnthropicBackend(MODEL, base_url=server.url, api_key="bench")
        first = Interpreter(backend, progress=False).run(harvest, Path(tmp) / "first")
        n0 = len(server.requests)
        t0 = time.perf_counter()
        interp = Interpreter(backend, progress=False, refine=refine)
        refined = interp.run(harvest, Path(tmp) / "refined")
        out["refine_s"] = time.perf_counter() - t0
        out["refine_requests"] = len(server.requests) - n0
        out["refine_cost"] = interp.summary.cost_usd
        out["stages"] = stage_table(interp.refine_stages)
        out["rounds"] = mean(r.refinement.rounds for r in refined)
        for name, labels in (("first", first), ("refined", refined), ("true", model.labels())):
            rep = score(harvest, labels, backend=backend, scorers=["detection", "simulation"], baselines=name == "refined",
                        max_concurrent=16)
            for sc in ("detection", "simulation"):
                out[f"{name}_{sc}"] = headline(rep, sc, partial)
                if name == "refined":
                    out[f"shuffled_{sc}"] = headline(rep, sc, model.keys(), "shuffled")
                    out[f"control_{sc}"] = headline(rep, sc, [k for k in model.keys() if k not in partial])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="2,3,4")
    p.add_argument("--refine", type=int, default=2)
    p.add_argument("--batches", type=int, default=8)
    args = p.parse_args()
    rows = [one_seed(int(s), args.refine, args.batches) for s in args.seeds.split(",")]
    print(f"refine={args.refine}, {args.batches} batches of 32x64 tokens per seed; means over the 6 incomplete components")
    print("seed  scorer      first  refined  true   shuffled  one-token controls")
    for r in rows:
        for sc in ("detection", "simulation"):
            print(f"{r['seed']:<5} {sc:<11} {r[f'first_{sc}']:.3f}  {r[f'refined_{sc}']:.3f}    {r[f'true_{sc}']:.3f}  "
                  f"{r[f'shuffled_{sc}']:.3f}     {r[f'control_{sc}']:.3f}")
    for r in rows:
        print(f"seed {r['seed']}: refinement {r['refine_requests']} requests, {r['refine_s']:.1f} s, mean rounds "
              f"{r['rounds']:.2f}, simulated cost ${r['refine_cost']:.4f}\n{r['stages']}")


if __name__ == "__main__":
    main()
