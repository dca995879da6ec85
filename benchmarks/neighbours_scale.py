"""Weight-space neighbours and the output scorer's distractors against N.

Three measurements, each N in its own process (so a peak is its own):

* ``topk``: `cosine_topk` (top 8 by cosine of output directions) over N random
  directions of dimension d: seconds and the peak RSS above what the process held
  before the call (the directions themselves included in "held"). ``--reference``
  also times the row-block algorithm it replaced (``block_elements // N`` whole rows
  of the table at a time, every entry computed) where N <= ``--reference_max``.
* ``table``: the stored neighbours at N (top 8): the size of ``weight_neighbours.rows``
  and the time to open a saved table and read one component's neighbours, against
  the single JSON document of format 1 (its size, its parse time and the memory it holds).
* ``output``: the output scorer's planning: `OutputCandidates` built from N components
  (10 promoted logit-lens tokens each, Zipf over V = 50,257), and the distractors of
  ``--scored`` components x 3 trials (3 distractors each, at most 20% shared tokens).

    python benchmarks/neighbours_scale.py                                  # everything, CPU
    python benchmarks/neighbours_scale.py --parts topk --sizes 10000 --dims 512 --reference
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status(field: str) -> int:
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


def rows_reference(x, k: int, block_elements: int):
    """The algorithm cosine_topk replaced: whole rows of the table, every entry computed."""
    import torch

    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    N = x.shape[0]
    rows = max(1, block_elements // N)
    idx, val = torch.empty(N, k, dtype=torch.long), torch.empty(N, k)
    for i in range(0, N, rows):
        block = x[i : i + rows] @ x.T
        r = torch.arange(block.shape[0])
        block[r, r + i] = -float("inf")
        top = block.topk(k, dim=1)
        idx[i : i + rows], val[i : i + rows] = top.indices, top.values
    return idx, val


def part_topk(n: int, d: int, a: argparse.Namespace) -> dict:
    import torch

    from autointerp.neighbours import cosine_topk

    device = torch.device(a.device)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0)).to(device)
    before = _reset_peak()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    idx, val = cosine_topk(x, 8)
    if device.type == "cuda":
        torch.cuda.synchronize()
    out = {"part": "topk", "N": n, "d": d, "device": str(device), "seconds": time.perf_counter() - t,
           "peak_above": _status("VmHWM") - before, "held_before": before}
    if device.type == "cuda":
        out["device_peak"] = torch.cuda.max_memory_allocated()
    if a.reference and n <= a.reference_max and device.type == "cpu":
        t = time.perf_counter()
        _, ref = rows_reference(x, 8, 1 << 26)
        out["reference_seconds"] = time.perf_counter() - t
        out["max_cosine_diff"] = float((ref - val).abs().max())
    return out


def part_table(n: int, a: argparse.Namespace) -> dict:
    import torch

    from autointerp.harvest import read_shared
    from autointerp.neighbours import WeightNeighbours

    k, layers = 8, [(f"model.layers.{i}.mlp.down_proj", n // 8) for i in range(8)]
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (n, k), generator=g, dtype=torch.int32)
    cos = torch.rand(n, k, generator=g).sort(dim=1, descending=True).values
    table = WeightNeighbours.build(layers, k, idx, cos, {})
    keys = [f"{name}:{i}" for name, w in layers for i in range(w)]
    rng = random.Random(0)
    out: dict = {"part": "table", "N": n, "k": k}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shared"
        folder.mkdir()
        t = time.perf_counter()
        table.write_shared(folder, "weight_neighbours")
        out["write_s"] = time.perf_counter() - t
        out["rows_bytes"] = (folder / "weight_neighbours.rows").stat().st_size
        out["json_bytes"] = (folder / "weight_neighbours.json").stat().st_size
        before = _reset_peak()
        t = time.perf_counter()
        opened = WeightNeighbours.of(read_shared(Path(tmp))["weight_neighbours"])
        got = opened.get(keys[n // 2])
        out["open_and_one_ms"] = 1000 * (time.perf_counter() - t)
        picks = [rng.choice(keys) for _ in range(1000)]
        t = time.perf_counter()
        for key in picks:
            opened.get(key)
        out["get_us"] = 1e6 * (time.perf_counter() - t) / len(picks)
        out["open_peak_above"] = _status("VmHWM") - before
        assert got == table.get(keys[n // 2])
        # format 1: one JSON document of every component's [[key, cosine], ...]
        v1 = {"format": "autointerp.weight_neighbours/1", "k": k, "skipped": {},
              "neighbours": {key: [[o, round(c, 6)] for o, c in table.get(key)] for key in keys}}
        p = Path(tmp) / "v1.json"
        p.write_text(json.dumps(v1, allow_nan=False), encoding="utf-8")
        del v1
        out["v1_bytes"] = p.stat().st_size
        before = _reset_peak()
        t = time.perf_counter()
        doc = json.loads(p.read_bytes().decode("utf-8"))
        out["v1_load_s"] = time.perf_counter() - t
        out["v1_held"] = _status("VmRSS") - before
        out["v1_peak_above"] = _status("VmHWM") - before
        del doc
    return out


def part_output(n: int, a: argparse.Namespace) -> dict:
    from autointerp.schemas import ComponentData, LogitLens, LogitToken
    from autointerp.scoring.output import OutputCandidates

    V = 50_257
    rng = random.Random(0)
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(V)))
    comps = []
    for i in range(n):
        ids = []
        for t in rng.choices(range(V), cum_weights=cum, k=30):
            if t not in ids:
                ids.append(t)
        lens = LogitLens(promoted=[LogitToken(t, 5.0 - j * 0.1, f"tok{t}") for j, t in enumerate(ids[:10])])
        comps.append(ComponentData(key=f"blocks.{i % 8}.sae:{i // 8}", layer=f"blocks.{i % 8}.sae", index=i // 8,
                                   output_logits=lens))
    before = _reset_peak()
    t = time.perf_counter()
    cands = OutputCandidates(comps, 10)
    build_s = time.perf_counter() - t
    built_peak = _status("VmHWM") - before
    scored = rng.sample(comps, min(a.scored, n))
    t = time.perf_counter()
    short = 0
    for c in scored:
        truth = cands.get(c.key)
        r = random.Random(c.key)
        for _ in range(3):
            short += len(cands.distractors(truth, 3, r, 0.2)) < 3
    per = (time.perf_counter() - t) / len(scored)
    return {"part": "output", "N": n, "build_s": build_s, "build_peak_above": built_peak,
            "distractors_ms_per_component": 1000 * per, "scored": len(scored), "short": short}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["topk", "table", "output"], choices=["topk", "table", "output"])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000], help="N for topk and table")
    p.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    p.add_argument("--output_sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--scored", type=int, default=1000, help="components whose distractors are drawn")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reference", action="store_true", help="also time the row-block algorithm cosine_topk replaced")
    p.add_argument("--reference_max", type=int, default=20_000)
    p.add_argument("--json_out", help="write every row here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        part, n, d = a.one.split(",")
        fn = {"topk": lambda: part_topk(int(n), int(d), a), "table": lambda: part_table(int(n), a),
              "output": lambda: part_output(int(n), a)}[part]
        print(json.dumps(fn()))
        return
    jobs = []
    if "topk" in a.parts:
        jobs += [("topk", n, d) for n in a.sizes for d in a.dims]
    if "table" in a.parts:
        jobs += [("table", n, 0) for n in a.sizes]
    if "output" in a.parts:
        jobs += [("output", n, 0) for n in a.output_sizes]
    rows = []
    flags = ["--device", a.device, "--scored", str(a.scored), "--reference_max", str(a.reference_max)]
    flags += ["--reference"] if a.reference else []
    for part, n, d in jobs:
        out = subprocess.run([sys.executable, __file__, "--one", f"{part},{n},{d}", *flags], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{part} N={n}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        mib = 2**20
        if part == "topk":
            ref = (f"  row blocks {r['reference_seconds']:.1f} s ({r['reference_seconds'] / r['seconds']:.2f}x, "
                   f"max |diff| {r['max_cosine_diff']:.1e})" if "reference_seconds" in r else "")
            dev = f"  device peak {r['device_peak'] / mib:.0f} MiB" if "device_peak" in r else ""
            print(f"topk   N={n:>7} d={d}  {r['seconds']:8.1f} s  peak {r['peak_above'] / mib:6.0f} MiB above the "
                  f"{r['held_before'] / mib:.0f} MiB held{dev}{ref}", flush=True)
        elif part == "table":
            print(f"table  N={n:>7} k=8  rows {r['rows_bytes'] / 1e6:.1f} MB (+{r['json_bytes']:,} B JSON), open + one "
                  f"{r['open_and_one_ms']:.1f} ms, get {r['get_us']:.0f} us, peak {r['open_peak_above'] / mib:.1f} MiB | "
                  f"format 1: {r['v1_bytes'] / 1e6:.1f} MB, parse {r['v1_load_s']:.2f} s, holds "
                  f"{r['v1_held'] / mib:.0f} MiB (peak {r['v1_peak_above'] / mib:.0f})", flush=True)
        else:
            print(f"output N={n:>7}  candidates {r['build_s']:.2f} s (peak {r['build_peak_above'] / mib:.0f} MiB)  "
                  f"distractors {r['distractors_ms_per_component']:.3f} ms/component (3 trials, {r['scored']} scored, "
                  f"{r['short']} short)", flush=True)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
