"""How long `autointerp demo` takes, stage by stage (target: the harvest in under 60 s on 2 CPU cores).

    python benchmarks/demo.py [--repeats 3] [--profile DIR]

Runs the whole demo (harvest, interpret, score, report) into a temporary folder
without an API key, so the offline baselines are used, and prints per stage the
wall-clock seconds and the CPU seconds (`time.process_time` of this process,
every torch thread, plus its finished child processes: the report's workers) for each repeat, then the median of each. On a shared
machine CPU seconds move far less than wall-clock seconds with the load, so
compare those; the load average (``os.getloadavg``) is printed before and after.
``--profile DIR`` writes a cProfile of each stage of the first repeat
(``DIR/<stage>.prof``; profiling inflates Python-heavy stages about 2x).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, help="write DIR/<stage>.prof for the first repeat")
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads do not spin (CPU seconds stay honest)
    from autointerp.demo import demo_stages, run_demo

    print(_load())
    walls, cpus = [], []
    for i in range(args.repeats):
        cpu: dict[str, float] = {}
        stages = []
        for name, fn in demo_stages():
            def timed(run, fn=fn, name=name, profile=args.profile is not None and i == 0):
                prof = cProfile.Profile() if profile else None
                c0 = time.process_time() + _children()
                if prof is not None:
                    prof.enable()
                fn(run)
                if prof is not None:
                    prof.disable()
                    args.profile.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(str(args.profile / f"{name}.prof"))
                cpu[name] = time.process_time() + _children() - c0
            stages.append((name, timed))
        with tempfile.TemporaryDirectory() as tmp:
            run = run_demo(out=tmp, progress=False, log=lambda s: None, stages=stages)
        cpu["total"] = sum(cpu.values())
        walls.append(run.timings)
        cpus.append(cpu)
        print(f"run {i + 1}: " + ", ".join(f"{k} {run.timings[k]:.1f}s wall / {cpu[k]:.1f}s CPU" for k in cpu))
    med_wall = {k: statistics.median(r[k] for r in walls) for k in cpus[0]}
    med_cpu = {k: statistics.median(r[k] for r in cpus) for k in cpus[0]}
    print(f"median of {args.repeats}: " + ", ".join(f"{k} {med_wall[k]:.1f}s wall / {med_cpu[k]:.1f}s CPU" for k in med_cpu))
    print(f"harvest stage {med_wall['harvest']:.1f}s of the 60 s budget ({med_wall['harvest'] / 60:.0%}); "
          f"whole pipeline {med_wall['total']:.1f}s")
    print(_load())


if __name__ == "__main__":
    main()
