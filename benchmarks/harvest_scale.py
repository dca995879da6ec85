"""Dense vs bounded mode of the token and co-firing tables, against N, with a plot.

A synthetic SAE-like stream (Zipf tokens, ``--active`` latents firing per position,
each latent preferring 4 tokens drawn uniformly from the vocabulary) goes through
``HarvestLoop.update`` with ``InputTokenAcc``, ``OutputProbAcc`` and
``CorrelationAcc``. Batches are generated one at a time from a seeded generator
(the same stream for every mode), so the process never holds more than one batch.

Each N runs in its own processes:

* **bounded alone** (``mode="bounded"``): mean ms per batch after warm-up (the
  tables buffer batches and merge them now and then: the merge still waiting at
  the end is timed and included, so every merge is paid for),
  tokens per second, state bytes (``state_bytes``), finalize time and the
  process's peak RSS (``VmHWM``: everything, the batch and Python included);
* **dense against bounded**, where the dense tables fit under ``--dense_max``: both
  loops take the same batches alternately in one process (so outside load hits
  both alike and their ratio is fair), then the agreement of the top-recall lists
  (the heavy hitters the summary is built for): the share of components whose
  bounded list has the dense list's true counts rank by rank (ties in any order),
  whose first entry is a true first, and of entries whose stated bound holds.

    python benchmarks/harvest_scale.py                     # N=2048, V=4096 on the CPU
    python benchmarks/harvest_scale.py --components 4096 16384 65536 --vocab 50257 \\
        --plot docs/img/harvest_scale.png --json_out /tmp/harvest_scale.json
    python benchmarks/harvest_scale.py --device cuda --components 16384 --vocab 50257
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from autointerp import CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc, OutputProbAcc

FIELDS = ("input_tokens", "output_tokens", "correlations")


def make_batches(a: argparse.Namespace) -> Iterator[HarvestBatch]:
    """The stream, one batch at a time (deterministic for the seed whatever the mode)."""
    g = torch.Generator().manual_seed(0)
    w = 1.0 / torch.arange(1, a.vocab + 1, dtype=torch.float64) ** 1.1
    prefer = torch.randint(0, a.vocab, (a.components, 4), generator=g)
    for i in range(a.batches):
        tok = torch.multinomial(w, a.batch * a.seq, replacement=True, generator=g)
        P = tok.numel()
        acts = torch.zeros(P, a.components)
        # each position: `active` random latents, plus the latents that prefer its token
        rand = torch.randint(0, a.components, (P, a.active), generator=g)
        acts.scatter_(1, rand, torch.rand(P, a.active, generator=g) + 0.1)
        hit = (prefer[None, :, :] == tok[:, None, None]).any(-1)
        acts.masked_fill_(hit, 1.0)
        del hit
        logits = torch.randn(P, a.vocab, generator=g) * 3
        yield HarvestBatch(tokens=tok.view(a.batch, a.seq), activations={"sae": acts.view(a.batch, a.seq, -1)},
                           output_probs=torch.softmax(logits, -1).view(a.batch, a.seq, -1),
                           sequence_ids=torch.arange(i * a.batch, (i + 1) * a.batch))


def make_loop(a: argparse.Namespace, mode: str) -> HarvestLoop:
    accs = [InputTokenAcc(mode=mode, summary_k=a.summary_k), OutputProbAcc(mode=mode, summary_k=a.summary_k),
            CorrelationAcc(mode=mode, summary_k=a.summary_k)]
    return HarvestLoop(accs, progress=False, device=a.device, threshold=0.0)


def timed_update(a: argparse.Namespace, loop: HarvestLoop, batch: HarvestBatch) -> float:
    cuda = a.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    loop.update(batch)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000


def merge_pending(a: argparse.Namespace, loop: HarvestLoop) -> float:
    """Merge what the tables still buffer (ms): the bounded mode merges batches about every
    N x summary_k entries, the dense mode folds a float32 staging buffer."""
    cuda = a.device.startswith("cuda")
    t = time.perf_counter()
    for acc in loop.accumulators:
        if hasattr(acc, "merge_pending"):
            acc.merge_pending()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000


def mean_per_batch(times: list[float], last_merge: float, warmup: int) -> float:
    """Mean ms per batch after the warm-up, the merge still waiting at the end included (so every
    buffered merge is paid for: a median would miss them)."""
    kept = times[warmup:] or times
    return (sum(kept) + last_merge) / len(kept)


def peak_rss() -> int:
    """This process's peak resident set (bytes), from /proc (the kernel's high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def agreement(dense_loop: HarvestLoop, dense, bounded, field: str) -> dict[str, float]:
    """How far the bounded top-recall lists agree with the dense ones.

    ``same_counts``: share of components whose bounded list has, rank by rank, the
    same true counts as the dense list (ties in any order count as agreement);
    ``same_first``: share whose first entry is a true first (its true count equals
    the dense first's); ``bound_holds``: share of reported entries with
    count <= true <= count + count_error.
    """
    cls = {"input_tokens": InputTokenAcc, "output_tokens": OutputProbAcc, "correlations": CorrelationAcc}[field]
    acc = next(a for a in dense_loop.accumulators if isinstance(a, cls))
    table = (acc.cofire if field == "correlations" else acc.joint).double()
    space = dense_loop.space
    same = first = n = held = entries = 0
    for c, (d, b) in enumerate(zip(dense, bounded)):
        dl, bl = getattr(d, field).top_recall, getattr(b, field).top_recall
        if not dl:
            continue
        col = (lambda s: space.parse_key(s.key)) if field == "correlations" else (lambda s: s.token_id)
        true = [float(table[c, col(s)]) for s in bl]
        want = [float(s.count) for s in dl]
        tol = 1e-4 * max(want)
        n += 1
        same += len(true) == len(want) and all(abs(x - y) <= tol for x, y in zip(true, want))
        first += bool(true) and abs(true[0] - want[0]) <= tol
        for s, t in zip(bl, true):
            entries += 1
            held += s.count - tol <= t <= s.count + s.count_error + tol
    return {"same_counts": round(same / max(n, 1), 3), "same_first": round(first / max(n, 1), 3),
            "bound_holds": round(held / max(entries, 1), 3)}


def state_of(loop: HarvestLoop) -> dict[str, int]:
    return {type(x).__name__: int(x.state_bytes(loop.ctx)) for x in loop.accumulators}


def dense_state_estimate(a: argparse.Namespace) -> int:
    """The dense tables' size without building them (float32 N x V twice, N x N once)."""
    n, v = a.components, a.vocab
    return 4 * (2 * n * v + n * n)


def child_bounded(a: argparse.Namespace) -> dict:
    loop = make_loop(a, "bounded")
    times = [timed_update(a, loop, b) for b in make_batches(a)]
    ms = mean_per_batch(times, merge_pending(a, loop), a.warmup)
    t = time.perf_counter()
    loop.finalize()
    fin = time.perf_counter() - t
    return {"N": a.components, "V": a.vocab, "mode": "bounded", "ms_per_batch": round(ms, 1),
            "tokens_per_s": round(a.batch * a.seq / (ms / 1000), 1), "finalize_s": round(fin, 2),
            "state_bytes": state_of(loop), "peak_rss": peak_rss()}


def child_pair(a: argparse.Namespace) -> dict:
    loops = {m: make_loop(a, m) for m in ("dense", "bounded")}
    times: dict[str, list[float]] = {m: [] for m in loops}
    for i, b in enumerate(make_batches(a)):
        order = ("dense", "bounded") if i % 2 == 0 else ("bounded", "dense")  # neither always goes first
        for m in order:
            times[m].append(timed_update(a, loops[m], b))
    out: dict = {"N": a.components, "V": a.vocab, "mode": "pair", "peak_rss_both": peak_rss()}
    results = {}
    for m, loop in loops.items():
        ms = mean_per_batch(times[m], merge_pending(a, loop), a.warmup)
        t = time.perf_counter()
        results[m] = loop.finalize()
        out[m] = {"ms_per_batch": round(ms, 1), "finalize_s": round(time.perf_counter() - t, 2),
                  "state_bytes": state_of(loop)}
    out["dense_over_bounded_ms"] = round(out["dense"]["ms_per_batch"] / out["bounded"]["ms_per_batch"], 3)
    out["agreement_top_recall"] = {f: agreement(loops["dense"], results["dense"], results["bounded"], f)
                                   for f in FIELDS}
    return out


def run_child(a: argparse.Namespace, n: int, what: str) -> dict | None:
    cmd = [sys.executable, __file__, "--child", what, "--components", str(n)]
    for k in ("vocab", "batch", "seq", "active", "batches", "warmup", "summary_k", "device"):
        cmd += [f"--{k}", str(getattr(a, k))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"N={n} {what}: failed (exit {out.returncode})\n{out.stderr[-2000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: str, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    b = [r for r in rows if r.get("bounded")]
    ns = [r["N"] for r in b]
    ax1.plot(ns, [r["bounded"]["ms_per_batch"] for r in b], "o-", label="bounded update (ms/batch)")
    d = [r for r in rows if r.get("pair")]
    if d:
        ax1.plot([r["N"] for r in d], [r["pair"]["dense"]["ms_per_batch"] for r in d], "s--",
                 label="dense update (ms/batch, same process as bounded)")
        ax1.plot([r["N"] for r in d], [r["pair"]["bounded"]["ms_per_batch"] for r in d], "x:",
                 label="bounded update beside dense")
    ax1.plot(ns, [1000 * r["bounded"]["finalize_s"] for r in b], "^-", label="bounded finalize (ms)")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("components N")
    ax1.set_ylabel("ms")
    ax1.set_title("time")
    ax1.legend(fontsize=7)
    gib = 2 ** 30
    ax2.plot(ns, [r["bounded"]["peak_rss"] / gib for r in b], "o-", label="bounded: peak RSS of the process")
    ax2.plot(ns, [sum(r["bounded"]["state_bytes"].values()) / gib for r in b], "^-", label="bounded: table state")
    ax2.plot(ns, [r["dense_state_estimate"] / gib for r in rows], "s--", label="dense: table state (computed)")
    ax2.axhline(4, color="grey", lw=0.8, ls=":")
    ax2.text(ns[0] if ns else 1, 4.3, "4 GiB", fontsize=7, color="grey")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("components N")
    ax2.set_ylabel("GiB")
    ax2.set_title("memory")
    ax2.legend(fontsize=7)
    fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, nargs="+", default=[2048])
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--active", type=int, default=32, help="random latents firing per position")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--summary_k", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dense_max", default="9GiB", help="run dense beside bounded only when its tables fit in this")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib: the `bench` extra)")
    p.add_argument("--note", default="", help="a line for the plot's title (machine, load)")
    p.add_argument("--json_out", help="write every row as JSON here")
    p.add_argument("--json", action="store_true", help="one JSON line per N instead of indented JSON")
    p.add_argument("--child", choices=("bounded", "pair"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        a.components = a.components[0]
        print(json.dumps(child_bounded(a) if a.child == "bounded" else child_pair(a)))
        return
    from autointerp.harvest import parse_bytes

    dense_max = parse_bytes(a.dense_max)
    rows = []
    for n in a.components:
        a1 = argparse.Namespace(**{**vars(a), "components": n})
        row: dict = {"N": n, "V": a.vocab, "positions_per_batch": a.batch * a.seq, "summary_k": a.summary_k,
                     "active": a.active, "dense_state_estimate": dense_state_estimate(a1)}
        row["bounded"] = run_child(a, n, "bounded")
        if row["dense_state_estimate"] <= dense_max:
            row["pair"] = run_child(a, n, "pair")
        else:
            row["pair"] = None
            row["dense_skipped"] = f"dense tables {row['dense_state_estimate'] / 2**30:.1f} GiB > --dense_max {a.dense_max}"
        rows.append(row)
        print(json.dumps(row, indent=None if a.json else 2), flush=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    if a.plot:
        plot(rows, a.plot, a.note or f"V={a.vocab}, {a.batch * a.seq} positions a batch, {a.active} random active "
                                    f"latents a position, k={a.summary_k}, {a.device}")


if __name__ == "__main__":
    main()
