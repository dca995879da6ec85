"""Dense vs bounded mode of the token and co-firing tables, at one size that fits both.

A synthetic SAE-like stream (Zipf tokens, ``--active`` latents firing per position,
each latent preferring a few tokens) goes through ``HarvestLoop.update`` twice, once
with ``InputTokenAcc``, ``OutputProbAcc`` and ``CorrelationAcc`` in ``mode="dense"``
and once in ``mode="bounded"``. Reported: median ms per batch after warm-up, state
bytes (``state_bytes``), and the agreement of the top-k lists (recall: the heavy
hitters the summary is built for): the share of components whose bounded list has the
dense list's true counts rank by rank (ties in any order), whose first entry is a true
first, and of entries whose stated bound holds.

    python benchmarks/harvest_scale.py                     # N=2048, V=4096 on the CPU
    python benchmarks/harvest_scale.py --device cuda --components 16384 --vocab 50257
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from autointerp import CorrelationAcc, HarvestBatch, HarvestLoop, InputTokenAcc, OutputProbAcc


def make_batches(a: argparse.Namespace) -> list[HarvestBatch]:
    g = torch.Generator().manual_seed(0)
    w = 1.0 / torch.arange(1, a.vocab + 1, dtype=torch.float64) ** 1.1
    prefer = torch.randint(0, a.vocab, (a.components, 4), generator=g)
    out = []
    for i in range(a.batches):
        tok = torch.multinomial(w, a.batch * a.seq, replacement=True, generator=g)
        P = tok.numel()
        acts = torch.zeros(P, a.components)
        # each position: `active` random latents, plus the latents that prefer its token
        rand = torch.randint(0, a.components, (P, a.active), generator=g)
        acts.scatter_(1, rand, torch.rand(P, a.active, generator=g) + 0.1)
        hit = (prefer[None, :, :] == tok[:, None, None]).any(-1)
        acts = torch.where(hit, torch.ones_like(acts), acts)
        logits = torch.randn(P, a.vocab, generator=g) * 3
        out.append(HarvestBatch(tokens=tok.view(a.batch, a.seq), activations={"sae": acts.view(a.batch, a.seq, -1)},
                                output_probs=torch.softmax(logits, -1).view(a.batch, a.seq, -1),
                                sequence_ids=torch.arange(i * a.batch, (i + 1) * a.batch)))
    return out


def run(a: argparse.Namespace, batches: list[HarvestBatch], mode: str) -> tuple[HarvestLoop, list[float]]:
    accs = [InputTokenAcc(mode=mode, summary_k=a.summary_k), OutputProbAcc(mode=mode, summary_k=a.summary_k),
            CorrelationAcc(mode=mode, summary_k=a.summary_k)]
    loop = HarvestLoop(accs, progress=False, device=a.device, threshold=0.0)
    times = []
    for b in batches:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loop.update(b)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    return loop, times[a.warmup:]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--active", type=int, default=32, help="random latents firing per position")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--summary_k", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    batches = make_batches(a)
    out: dict = {"N": a.components, "V": a.vocab, "positions_per_batch": a.batch * a.seq, "summary_k": a.summary_k}
    results, loops = {}, {}
    for mode in ("dense", "bounded"):
        loop, times = run(a, batches, mode)
        loops[mode] = loop
        out[mode] = {
            "ms_per_batch": round(statistics.median(times), 1),
            "state_bytes": {type(x).__name__: int(x.state_bytes(loop.ctx)) for x in loop.accumulators},
        }
        results[mode] = loop.finalize()
    out["agreement_top_recall"] = {
        field: agreement(loops["dense"], results["dense"], results["bounded"], field)
        for field in ("input_tokens", "output_tokens", "correlations")
    }
    print(json.dumps(out, indent=None if a.json else 2))


if __name__ == "__main__":
    main()
