"""How long `autointerp demo` takes, stage by stage (target: the harvest in under 60 s on 2 CPU cores).

    python benchmarks/demo.py [--repeats 2]

Runs the whole demo (harvest, interpret, score, report) into a temporary folder
without an API key, so the offline baselines are used, and prints the seconds
per stage for each repeat and the best.
"""

from __future__ import annotations

import argparse
import os
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)
    from autointerp.demo import run_demo

    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            run = run_demo(out=tmp, progress=False, log=lambda s: None)
        runs.append(run.timings)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()))
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    print("best:  " + ", ".join(f"{k} {v:.1f}s" for k, v in best.items()))
    print(f"harvest stage {best['harvest']:.1f}s of the 60 s budget ({best['harvest'] / 60:.0%}); "
          f"whole pipeline {best['total']:.1f}s")


if __name__ == "__main__":
    main()
