"""Harvest accumulators vs the original dense algorithm, on the same batches.

The four built-in accumulators (CorrelationAcc, InputTokenAcc, OutputProbAcc,
ReservoirAcc, plus the FiringStatsAcc every loop has) are timed through
``HarvestLoop.update`` -- validation and the firing derivations included -- against
a re-implementation of the original pipeline's dense algorithm:

* co-firing, input-token and output-probability statistics as float matrices
  multiplied per batch: ``Fᵀ F``, ``Fᵀ onehot(tokens)``, ``Fᵀ probs`` with the
  dense firing indicator ``F [B·S, N]`` and a float one-hot ``[B·S, V]``;
* activation examples fed to per-component reservoirs (Algorithm R) one firing at
  a time in a Python loop, after capping the batch's firings at 10,000.

Both run in this process on the same batches, alternating batch by batch so that
load from other processes hits both alike; the figure is the median time per
batch after warm-up. Peak memory is measured for each side in a child process
that builds the same batches, resets the peak-RSS counter (``/proc/self/clear_refs``)
and reports ``VmHWM`` minus the RSS before the run (on CUDA:
``torch.cuda.max_memory_allocated`` above the batches).

    python benchmarks/harvest_accumulators.py                  # the issue's setting
    python benchmarks/harvest_accumulators.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import time

import torch

from autointerp import CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc, OutputProbAcc, ReservoirAcc
from autointerp.batch import FiringBatch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_batches(args: argparse.Namespace) -> list[HarvestBatch]:
    """``args.distinct`` distinct tensor sets, cycled to ``args.batches`` batches with distinct sequence ids."""
    g = torch.Generator().manual_seed(0)
    dev, dt = torch.device(args.device), DTYPES[args.dtype]
    B, S, N, V = args.batch, args.seq, args.components, args.vocab
    sets = []
    for _ in range(min(args.distinct, args.batches)):
        acts = torch.rand(B, S, N, generator=g)
        acts = torch.where(torch.rand(B, S, N, generator=g) < args.density, acts + 1e-3, torch.zeros(()))
        tokens = torch.randint(0, V, (B, S), generator=g)
        probs = torch.softmax(2 * torch.randn(B, S, V, generator=g), -1)
        sets.append((tokens.to(dev), acts.to(dev, dt), probs.to(dev, dt)))
    out = []
    for i in range(args.batches):
        tokens, acts, probs = sets[i % len(sets)]
        out.append(HarvestBatch(tokens, {"h.0.mlp": acts}, probs, sequence_ids=torch.arange(i * B, (i + 1) * B, device=dev)))
    return out


def new_loop(args: argparse.Namespace) -> HarvestLoop:
    return HarvestLoop(
        [CorrelationAcc(), InputTokenAcc(), OutputProbAcc(), ReservoirAcc(k=args.k, context_tokens=args.context)],
        threshold=0.0, seed=0, progress=False, device=args.device,
    )


class DenseOriginal:
    """The original pipeline's algorithm: dense float products per batch, a Python reservoir loop."""

    def __init__(self, N: int, V: int, k: int, context: int, cap: int, device: torch.device):
        self.N, self.V, self.k, self.context, self.cap = N, V, k, context, cap
        self.count = torch.zeros(N, device=device)
        self.cofire = torch.zeros(N, N, device=device)
        self.token_joint = torch.zeros(N, V, device=device)
        self.token_count = torch.zeros(V, device=device)
        self.prob_joint = torch.zeros(N, V, device=device)
        self.prob_total = torch.zeros(V, device=device)
        self.n_seen = [0] * N
        self.reservoirs: list[list[tuple[list[int], list[float]]]] = [[] for _ in range(N)]
        self.rng = random.Random(0)
        self.n_tokens = 0

    def update(self, batch: HarvestBatch, threshold: float = 0.0) -> None:
        B, S = batch.tokens.shape
        P = B * S
        acts = torch.cat([a.reshape(P, -1) for a in batch.activations.values()], 1).float()
        fires = (acts > threshold).float()  # [P, N]
        tokens = batch.tokens.reshape(P)
        onehot = torch.zeros(P, self.V, device=acts.device)
        onehot[torch.arange(P, device=acts.device), tokens] = 1.0  # [P, V]
        probs = batch.output_probs.reshape(P, -1).float()
        self.count += fires.sum(0)
        self.cofire += fires.T @ fires
        self.token_joint += fires.T @ onehot
        self.token_count += onehot.sum(0)
        self.prob_joint += fires.T @ probs
        self.prob_total += probs.sum(0)
        self.n_tokens += P
        # examples: at most `cap` firings of the batch, then one at a time into the reservoirs
        pos, comp = fires.nonzero(as_tuple=True)
        if pos.shape[0] > self.cap:
            keep = torch.randperm(pos.shape[0], device=pos.device)[: self.cap]
            pos, comp = pos[keep], comp[keep]
        tok_cpu = batch.tokens.cpu()
        acts_cpu = acts.reshape(B, S, -1).cpu()
        c = self.context
        for p, n in zip(pos.tolist(), comp.tolist()):
            self.n_seen[n] += 1
            res = self.reservoirs[n]
            if len(res) < self.k:
                slot = len(res)
                res.append(None)  # type: ignore[arg-type]
            else:
                slot = self.rng.randrange(self.n_seen[n])
                if slot >= self.k:
                    continue
            b, s = divmod(p, S)
            lo, hi = max(0, s - c), min(S, s + c + 1)
            res[slot] = (tok_cpu[b, lo:hi].tolist(), acts_cpu[b, lo:hi, n].tolist())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_both(args: argparse.Namespace) -> dict:
    batches = make_batches(args)
    loop = new_loop(args)
    dense = DenseOriginal(args.components, args.vocab, args.k, args.context, args.cap, torch.device(args.device))
    ours_t, dense_t = [], []
    for i, b in enumerate(batches):
        sync(args.device)
        t0 = time.perf_counter()
        loop.update(b)
        sync(args.device)
        t1 = time.perf_counter()
        dense.update(b)
        sync(args.device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            ours_t.append(t1 - t0)
            dense_t.append(t2 - t1)
    # where our time goes: the same stream again, step by step
    parts: dict[str, list[float]] = {}
    probe = new_loop(args)
    probe.update(batches[0])
    for b in batches[1:]:
        sync(args.device)
        t = time.perf_counter()
        b.validate(probe.vocab_size)
        sync(args.device)
        parts.setdefault("validate", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        fb = FiringBatch.from_batch(b, probe.space, 0.0, b.sequence_ids, probe.vocab_size)
        sync(args.device)
        parts.setdefault("firing derivations", []).append(time.perf_counter() - t)
        for a in probe.accumulators:
            t = time.perf_counter()
            a.update(fb)
            sync(args.device)
            parts.setdefault(type(a).__name__, []).append(time.perf_counter() - t)
    n_firings = int(sum(int((b.activations["h.0.mlp"] > 0).sum()) for b in batches) / len(batches))
    return {
        "ours_s": statistics.median(ours_t),
        "dense_s": statistics.median(dense_t),
        "ours_min_s": min(ours_t),
        "dense_min_s": min(dense_t),
        "parts_s": {k: statistics.median(v) for k, v in parts.items()},
        "firings_per_batch": n_firings,
        "timed_batches": len(ours_t),
    }


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_memory(args: argparse.Namespace, side: str) -> int:
    """Bytes of peak memory above the batches for one side (run in a child process on CPU)."""
    batches = make_batches(args)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS") * 1024
    if side == "ours":
        loop = new_loop(args)
        for b in batches:
            loop.update(b)
    else:
        dense = DenseOriginal(args.components, args.vocab, args.k, args.context, args.cap, torch.device(args.device))
        for b in batches:
            dense.update(b)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _rss_kib("VmHWM") * 1024 - base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, default=2048, help="N")
    p.add_argument("--vocab", type=int, default=4096, help="V")
    p.add_argument("--batch", type=int, default=32, help="B")
    p.add_argument("--seq", type=int, default=128, help="S")
    p.add_argument("--density", type=float, default=0.01, help="fraction of (position, component) pairs that fire")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--distinct", type=int, default=4, help="distinct tensor sets, cycled (saves generation time)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--context", type=int, default=10)
    p.add_argument("--cap", type=int, default=10_000, help="the original's per-batch cap on firings")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--memory-side", choices=["ours", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_side:
        print(peak_memory(args, args.memory_side))
        return

    res = time_both(args)
    if not args.no_memory:
        argv = [a for a in sys.argv[1:] if a != "--json"]
        for side in ("ours", "dense"):
            out = subprocess.run([sys.executable, __file__, *argv, "--memory-side", side],
                                 check=True, capture_output=True, text=True).stdout
            res[f"{side}_peak_bytes"] = int(out.strip().splitlines()[-1])
    res["ratio"] = res["dense_s"] / res["ours_s"]
    res["setting"] = {k: getattr(args, k) for k in ("components", "vocab", "batch", "seq", "density", "k", "context",
                                                    "cap", "device", "dtype", "batches", "warmup")}
    res["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    s = res["setting"]
    print(f"N={s['components']} V={s['vocab']} B={s['batch']} S={s['seq']} density={s['density']} "
          f"({res['firings_per_batch']} firings/batch) k={s['k']} W={2 * s['context'] + 1} "
          f"device={s['device']} dtype={s['dtype']} threads={res['threads']}")
    print(f"  median time per batch over {res['timed_batches']} batches (min in brackets)")
    print(f"    autointerp accumulators     {res['ours_s'] * 1e3:8.1f} ms  ({res['ours_min_s'] * 1e3:.1f})")
    print(f"    original dense algorithm    {res['dense_s'] * 1e3:8.1f} ms  ({res['dense_min_s'] * 1e3:.1f})")
    print(f"    ratio                       {res['ratio']:8.1f}x")
    print("  where our time goes (median ms per batch)")
    for k, v in res["parts_s"].items():
        print(f"    {k:<27} {v * 1e3:8.1f}")
    if not args.no_memory:
        print("  peak memory above the batches")
        print(f"    autointerp accumulators     {res['ours_peak_bytes'] / 2**20:8.1f} MiB")
        print(f"    original dense algorithm    {res['dense_peak_bytes'] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
