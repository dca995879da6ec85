"""The whole harvest against N: update, streaming finalize + save, lazy load, state, peak RSS.

A synthetic SAE-like stream: Zipf tokens (V = 8,192), 4 layers, about 48 active
latents per position per layer, 512 tokens a batch, the six default accumulators
(``--mode``, default "auto": dense where it fits ``--budget``). Each N runs in its own process (so peak RSS is its
own) for ``--batches`` batches, made as they are needed; the update figure is the mean per batch of the whole
run, the last buffered merge of the bounded tables included; ratios are against the smallest N. The finalize + save peak is
the process's peak RSS during ``loop.save(block_size=...)`` above its RSS just before
(the kernel's high-water mark, reset before the save).

    python benchmarks/harvest_n_scale.py                         # N = 2k, 4k, 8k, 16k
    python benchmarks/harvest_n_scale.py --sizes 65536 --budget 4GiB
    python benchmarks/harvest_n_scale.py --sizes 4096 16384 65536 --mode bounded --budget 4GiB --batches 48 \
        --per_acc --json_out /tmp/n_scale.json --plot docs/img/harvest_n_scale.png
    python benchmarks/harvest_n_scale.py --from_json /tmp/n_scale.json --plot docs/img/harvest_n_scale.png
    python benchmarks/harvest_n_scale.py --sizes 4096 65536 --mode bounded --budget 4GiB --batches 96 --steady 48

``--sparse`` hands each layer over as `SparseActivations` (a TopK SAE's indices and values: 48 distinct
latents a position, one in each of 48 equal strata of the layer) instead of a dense tensor.

``--steady B0`` also runs each N for ``B0`` batches (update only, every merge included) and reports the
marginal cost of the batches after ``B0``, ``(T(batches) - T(B0)) / (batches - B0)``: the per-batch cost once
the samplers' slots are full, which a long harvest pays; the mean over a short run also carries the
fill (a component's first k firings are all written) and, at large N, a buffered merge's fixed cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def one(n: int, a: argparse.Namespace) -> dict:
    import torch

    from autointerp import (CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc, OutputProbAcc,
                            RandomWindowAcc, ReservoirAcc, SparseActivations, TopActivationAcc, load_harvest)

    g = torch.Generator().manual_seed(0)
    V, L, S, B = a.vocab, 4, 128, 4
    width = n // L
    w = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.1

    def batch(i: int) -> HarvestBatch:  # made as it is needed (65k latents: 0.13 GB a batch), not timed
        tok = torch.multinomial(w, B * S, replacement=True, generator=g)
        acts = {}
        for layer in range(L):
            if a.sparse:  # a TopK SAE's output: `active` distinct latents a position, one in each stratum
                stride = width // a.active
                idx = torch.arange(a.active) * stride + torch.randint(0, stride, (B * S, a.active), generator=g)
                acts[f"blocks.{layer}.sae"] = SparseActivations(
                    idx.view(B, S, a.active), (torch.rand(B * S, a.active, generator=g) + 0.1).view(B, S, a.active), width)
                continue
            x = torch.zeros(B * S, width)
            x.scatter_(1, torch.randint(0, width, (B * S, a.active), generator=g),
                       torch.rand(B * S, a.active, generator=g) + 0.1)
            acts[f"blocks.{layer}.sae"] = x.view(B, S, width)
        probs = torch.softmax(torch.randn(B * S, V, generator=g) * 3, -1).view(B, S, V)
        return HarvestBatch(tokens=tok.view(B, S), activations=acts, output_probs=probs,
                            sequence_ids=torch.arange(i * B, (i + 1) * B))

    accs = [CorrelationAcc(mode=a.mode), InputTokenAcc(mode=a.mode), OutputProbAcc(mode=a.mode),
            ReservoirAcc(k=20, context_tokens=10),
            TopActivationAcc(k=10, context_tokens=10), RandomWindowAcc()]
    from autointerp.harvest import device_sync

    device = torch.device(a.device)
    loop = HarvestLoop(accs, threshold=0.0, progress=False, vocab_size=V, memory_budget=a.budget, device=device)
    per_acc = {type(acc).__name__: 0.0 for acc in accs}
    if a.per_acc:  # each accumulator's own update, timed inside the loop's
        for acc in accs:
            acc.update = _timed(acc.update, per_acc, type(acc).__name__, device)
    total = 0.0
    for i in range(a.batches):
        b = batch(i).to(device)  # made on the CPU, moved before the timer (not timed)
        device_sync(device)
        t = time.perf_counter()
        loop.update(b)
        device_sync(device)
        total += time.perf_counter() - t
    # the tables buffer batches (bounded: merged about every N x summary_k entries; dense: a float32
    # staging buffer): what still waits is merged here, so the mean per batch includes every merge
    t = time.perf_counter()
    for acc in accs[:3]:
        t1 = time.perf_counter()
        acc.merge_pending()
        device_sync(device)
        per_acc[type(acc).__name__] += time.perf_counter() - t1
    total += time.perf_counter() - t
    device_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    per_acc_ms = {name: round(1000 * x / a.batches, 1) for name, x in per_acc.items()}
    if a.no_save:
        return {"N": n, "update_ms": 1000 * total / a.batches, "per_acc_ms": per_acc_ms, "device_peak": device_peak}
    state = sum(x for _, x in loop.memory_table(loop.ctx))
    with tempfile.TemporaryDirectory() as d:
        before = _reset_peak()
        t = time.perf_counter()
        loop.save(f"{d}/h", block_size=a.block_size)
        save_s = time.perf_counter() - t
        save_peak = _status("VmHWM") - before
        t = time.perf_counter()
        h = load_harvest(f"{d}/h")
        h[n // 2]
        load_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"N": n, "update_ms": 1000 * total / a.batches, "finalize_save_s": save_s, "load_one_ms": 1000 * load_s,
            "state_bytes": state, "peak_rss": rss, "save_peak": save_peak, "modes": loop.memory_plan["modes"], "per_acc_ms": per_acc_ms, "device_peak": device_peak}


def _timed(fn, into: dict, name: str, device):
    from autointerp.harvest import device_sync

    def timed(*args, **kwargs):
        device_sync(device)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            device_sync(device)
            into[name] += time.perf_counter() - t
    return timed


def _status(field: str) -> int:
    """A VmRSS/VmHWM figure of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS and return that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--active", type=int, default=48)
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--budget", default=None, help="memory_budget, e.g. 4GiB (default: 90%% of free memory)")
    p.add_argument("--mode", default="auto", choices=("auto", "dense", "bounded"),
                   help="mode of the three token and co-firing tables (auto: dense where it fits the budget)")
    p.add_argument("--block_size", type=int, default=1024, help="components finalized and written at a time")
    p.add_argument("--device", default="cpu", help="where the harvest runs (cuda: timed with a sync)")
    p.add_argument("--per_acc", action="store_true", help="also time each accumulator's update (ms a batch)")
    p.add_argument("--sparse", action="store_true",
                   help="hand the layers over as SparseActivations (a TopK SAE's indices and values), not dense")
    p.add_argument("--no_save", action="store_true", help="the update only: no finalize, save or load")
    p.add_argument("--json_out", help="write the rows as JSON here")
    p.add_argument("--from_json", help="plot rows written by --json_out instead of running")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib: the `bench` extra)")
    p.add_argument("--steady", type=int, metavar="B0",
                   help="also report the marginal update cost of the batches after B0 (a second run of B0 batches)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a)))
        return
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        plot(saved["rows"], a.plot, saved["note"])
        return
    if a.steady is not None and not 0 < a.steady < a.batches:
        p.error(f"--steady {a.steady}: expected 0 < B0 < --batches ({a.batches})")
    rows = []

    def child(n: int, batches: int, no_save: bool) -> dict | None:
        cmd = [sys.executable, __file__, "--one", str(n), "--vocab", str(a.vocab), "--active", str(a.active),
               "--batches", str(batches), "--block_size", str(a.block_size), "--mode", a.mode] + (["--budget", a.budget] if a.budget else []) \
            + (["--per_acc"] if a.per_acc else []) + (["--no_save"] if no_save else []) + ["--device", a.device] \
            + (["--sparse"] if a.sparse else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"N={n} ({batches} batches): failed\n{out.stderr[-2000:]}")
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])

    for n in a.sizes:
        got = child(n, a.batches, a.no_save)
        if got is None:
            continue
        if a.steady is not None:
            first = child(n, a.steady, True)
            if first is None:
                continue
            got["steady_ms"] = (got["update_ms"] * a.batches - first["update_ms"] * a.steady) / (a.batches - a.steady)
            got["steady_from"] = a.steady
            if a.per_acc:
                got["steady_per_acc_ms"] = {
                    name: round((ms * a.batches - first["per_acc_ms"][name] * a.steady) / (a.batches - a.steady), 1)
                    for name, ms in got["per_acc_ms"].items()}
        rows.append(got)
        r, r0 = rows[-1], rows[0]
        if a.steady is not None:
            print(f"N={n:>6}  steady update (batches {a.steady + 1}-{a.batches}) {r['steady_ms']:8.1f} ms "
                  f"({r['steady_ms'] / r0['steady_ms']:.2f}x)", flush=True)
        if a.per_acc:
            print(f"N={n:>6}  update per accumulator (ms a batch): {r['per_acc_ms']}", flush=True)
            if a.steady is not None:
                print(f"N={n:>6}  steady update per accumulator (ms a batch): {r['steady_per_acc_ms']}", flush=True)
        if r.get("device_peak") is not None:
            print(f"N={n:>6}  device peak {r['device_peak'] / 2**30:.2f} GiB ({a.device})", flush=True)
        if a.no_save:
            print(f"N={n:>6}  update {r['update_ms']:8.1f} ms ({r['update_ms'] / r0['update_ms']:.2f}x)", flush=True)
            continue
        print(f"N={n:>6}  update {r['update_ms']:8.1f} ms ({r['update_ms'] / r0['update_ms']:.2f}x)  "
              f"finalize+save {r['finalize_save_s']:7.2f} s ({r['finalize_save_s'] / r0['finalize_save_s']:.2f}x)  "
              f"({1000 * r['finalize_save_s'] / r['N']:.2f} ms/component, peak {r['save_peak'] / 2**20:.1f} MiB above "
              f"its start)  open+one {r['load_one_ms']:6.1f} ms  state {r['state_bytes'] / 2**20:8.1f} MiB  "
              f"peak RSS {r['peak_rss'] / 2**20:8.1f} MiB  modes {r['modes']}", flush=True)
    note = (f"six accumulators, mode {a.mode}, V={a.vocab}, {a.active} active a position a layer"
            f"{' (SparseActivations)' if a.sparse else ''}, "
            f"{a.batches} batches of 512 tokens, budget {a.budget}, {a.device}")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"note": note, "rows": rows}, f, indent=1)
    if a.plot and rows:
        plot(rows, a.plot, note)


def plot(rows: list[dict], path: str, note: str) -> None:
    """Left: each accumulator's update (ms a batch, stacked; the loop's own work on top). Right:
    finalize + save per component and peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = [r["N"] for r in rows]
    labels = [f"{n:,}" for n in ns]
    bottom = [0.0] * len(rows)
    names = list(rows[0].get("per_acc_ms") or {})
    for name in names:
        h = [r["per_acc_ms"][name] for r in rows]
        ax1.bar(labels, h, bottom=bottom, label=name)
        bottom = [b + x for b, x in zip(bottom, h)]
    loop = [r["update_ms"] - b for r, b in zip(rows, bottom)]
    ax1.bar(labels, loop, bottom=bottom, label="loop (validate, find firings)" if names else "update", color="0.6")
    ax1.axhline(1.5 * rows[0]["update_ms"], color="grey", lw=0.8, ls=":")
    ax1.text(0, 1.5 * rows[0]["update_ms"] * 1.02, f"1.5x the {labels[0]} update", fontsize=7, color="grey")
    ax1.set_xlabel("components N")
    ax1.set_ylabel("ms a batch")
    ax1.set_title("update, mean over the run")
    ax1.legend(fontsize=7)
    if all("finalize_save_s" in r for r in rows):
        ax2.plot(ns, [1000 * r["finalize_save_s"] / r["N"] for r in rows], "o-", label="finalize + save (ms a component)")
        ax2.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax3 = ax2.twinx()
        ax3.plot(ns, [r["peak_rss"] / 2**30 for r in rows], "s--", color="C1", label="peak RSS (GiB)")
        ax3.set_ylabel("GiB")
        ax3.set_ylim(bottom=0)
        ax3.legend(fontsize=7, loc="upper right")
        ax2.set_xscale("log", base=2)
        ax2.set_ylim(bottom=0)
        ax2.set_xlabel("components N")
        ax2.set_ylabel("ms a component")
        ax2.set_title("finalize + save, memory")
        ax2.legend(fontsize=7, loc="upper left")
    fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
