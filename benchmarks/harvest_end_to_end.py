"""Tokens per second of a full harvest of the demo model, and where the time goes.

    python benchmarks/harvest_end_to_end.py [--n_batches 6] [--batch_size 32] [--device cpu]

Reports the whole run (data + forward + accumulators), the share of time in the
model's forward pass (including the float32 softmax) versus the accumulators
(`HarvestLoop.update`: validation, firing derivations and every accumulator), and
then each accumulator's share of the update time over the whole run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from autointerp.run_harvest import HarvestOptions, HarvestTimings, ModelBatches, prepare_harvest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_batches", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threshold", type=float, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as out:
        opts = HarvestOptions(target="demo", out=out, n_batches=args.n_batches, batch_size=args.batch_size,
                              device=args.device, threshold=args.threshold, checkpoint_every=0, progress=False)
        t0 = time.perf_counter()
        prep = prepare_harvest(opts)
        t_setup = time.perf_counter() - t0
        timings = HarvestTimings()
        acc_time: dict[str, float] = {}
        for acc in prep.loop.accumulators:  # time every accumulator's update where it runs
            def timed(batch, _update=acc.update, _name=type(acc).__name__):
                t = time.perf_counter()
                _update(batch)
                acc_time[_name] = acc_time.get(_name, 0.0) + time.perf_counter() - t
            acc.update = timed
        prep.loop.consume(ModelBatches(prep, timings), n_batches=prep.rank_batches, timings=timings)
        t1 = time.perf_counter()
        result = prep.loop.finalize()
        t_final = time.perf_counter() - t1
        loop_time = timings.total
        print(f"device {args.device}, torch threads {torch.get_num_threads()}, "
              f"{len(result)} components, vocab {result.config.vocab_size}, threshold {prep.threshold}")
        print(f"setup (load model, tokenize data): {t_setup:.2f}s")
        print(f"harvest loop: {timings.batches} batches, {timings.tokens:,} tokens in {loop_time:.2f}s "
              f"= {timings.tokens / loop_time:,.0f} tokens/s")
        for name in ("data", "forward", "accumulate"):
            v = getattr(timings, name)
            print(f"  {name:<11} {v:7.2f}s  {v / loop_time:6.1%}")
        print(f"finalize (to CPU, ComponentData): {t_final:.2f}s")

        print("accumulator updates over the whole run (inside 'accumulate'):")
        for name, v in sorted(acc_time.items(), key=lambda x: -x[1]):
            print(f"  {name:<20} {v:7.2f}s  {v / loop_time:6.1%}")
        print(f"  (validation + firing derivations: {timings.accumulate - sum(acc_time.values()):.2f}s)")

if __name__ == "__main__":
    main()
