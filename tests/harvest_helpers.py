"""Random harvest batches and brute-force references for the harvest tests.

The references are plain Python/numpy loops over positions, written for
obviousness, not speed: they are what the vectorized accumulators must equal.
"""

from __future__ import annotations

import numpy as np
import torch

from autointerp import HarvestBatch
from autointerp.accumulators.sampling import firing_hash


def make_batch(
    gen: torch.Generator,
    *,
    B: int = 3,
    S: int = 9,
    widths: dict[str, int] | None = None,
    V: int = 13,
    density: float = 0.3,
    mask: bool = True,
    probs: bool = True,
    first_row: int | None = None,
) -> HarvestBatch:
    """A batch with sparse non-negative activations, some masked positions and softmax probabilities."""
    widths = widths or {"h.0.mlp": 5, "h.1.attn:out": 3}
    acts = {}
    for name, C in widths.items():
        a = torch.rand(B, S, C, generator=gen)
        acts[name] = torch.where(torch.rand(B, S, C, generator=gen) < density, a, torch.zeros(()))
    m = torch.rand(B, S, generator=gen) < 0.8 if mask else None
    p = torch.softmax(3 * torch.randn(B, S, V, generator=gen), -1) if probs else None
    sid = torch.arange(first_row, first_row + B) if first_row is not None else None
    return HarvestBatch(torch.randint(0, V, (B, S), generator=gen), acts, p, m, sid)


def make_stream(seed: int, n: int, **kw) -> list[HarvestBatch]:
    """``n`` batches with global sequence ids (so any split of them samples the same firings)."""
    gen = torch.Generator().manual_seed(seed)
    B = kw.pop("B", 3)
    return [make_batch(gen, B=B, first_row=i * B, **kw) for i in range(n)]


class Reference:
    """Every statistic of a stream, by brute force over its positions."""

    def __init__(self, batches: list[HarvestBatch], threshold: float = 0.0):
        self.firings: list[tuple[int, int, int, float]] = []  # (sequence, position, component, act)
        toks, probs, fires, acts = [], [], [], []
        self.windows: dict[tuple[int, int], tuple[list[int], list[bool]]] = {}
        row = 0
        for b in batches:
            a = torch.cat([t for t in b.activations.values()], dim=-1).double().numpy()
            Bn, S, N = a.shape
            valid = b.mask.numpy() if b.mask is not None else np.ones((Bn, S), bool)
            sid = b.sequence_ids.tolist() if b.sequence_ids is not None else list(range(row, row + Bn))
            tok = b.tokens.numpy()
            for i in range(Bn):
                self.windows[sid[i]] = (tok[i].tolist(), valid[i].tolist(), a[i])
                for s in range(S):
                    if not valid[i, s]:
                        continue
                    f = a[i, s] > threshold
                    toks.append(int(tok[i, s]))
                    fires.append(f)
                    acts.append(a[i, s])
                    if b.output_probs is not None:
                        probs.append(b.output_probs[i, s].double().numpy())
                    for c in np.nonzero(f)[0]:
                        self.firings.append((sid[i], s, int(c), float(a[i, s, c])))
            row += Bn
        self.N = N
        self.fires = np.array(fires, dtype=np.int64).reshape(-1, N)
        self.acts = np.array(acts).reshape(-1, N)
        self.tokens = np.array(toks, dtype=np.int64)
        self.probs = np.array(probs) if probs else None
        self.n_tokens = len(toks)

    def firing_count(self) -> np.ndarray:
        return self.fires.sum(0)

    def cofire(self) -> np.ndarray:
        out = np.zeros((self.N, self.N), np.int64)
        for row in self.fires:
            on = np.nonzero(row)[0]
            for i in on:
                for j in on:
                    out[i, j] += 1
        return out

    def input_joint(self, V: int) -> np.ndarray:
        out = np.zeros((self.N, V), np.int64)
        for row, t in zip(self.fires, self.tokens):
            for c in np.nonzero(row)[0]:
                out[c, t] += 1
        return out

    def token_count(self, V: int) -> np.ndarray:
        return np.bincount(self.tokens, minlength=V)

    def output_joint(self) -> np.ndarray:
        out = np.zeros((self.N, self.probs.shape[1]))
        for row, p in zip(self.fires, self.probs):
            for c in np.nonzero(row)[0]:
                out[c] += p
        return out

    def keyed_sample(self, seed: int, k: int) -> dict[int, list[tuple[int, int]]]:
        """Per component, the (sequence, position) of its k firings with the smallest hash keys."""
        out: dict[int, list[tuple[int, int]]] = {c: [] for c in range(self.N)}
        if not self.firings:
            return out
        seq, pos, comp, _ = (torch.tensor(x) for x in zip(*self.firings))
        key = firing_hash(seed, seq, pos, comp).tolist()
        by_comp: dict[int, list[tuple[int, int, int]]] = {}
        for (s, p, c, _), kk in zip(self.firings, key):
            by_comp.setdefault(c, []).append((kk, s, p))
        for c, items in by_comp.items():
            out[c] = [(s, p) for _, s, p in sorted(items)[:k]]
        return out

    def window(self, seq: int, pos: int, comp: int, context: int) -> tuple[list[int], list[float], int]:
        """The example a sampler should return for one firing: window cut at sequence edges and at masked positions next to them."""
        tok, valid, acts = self.windows[seq]
        S = len(tok)
        idx = [p for p in range(pos - context, pos + context + 1)]
        keep = [0 <= p < S and valid[p] for p in idx]
        lo = 0
        while lo < context and not keep[lo]:
            lo += 1
        hi = len(idx)
        while hi > context + 1 and not keep[hi - 1]:
            hi -= 1
        ids = [tok[p] if keep[i] else -1 for i, p in enumerate(idx)][lo:hi]
        act = [float(np.float32(acts[p, comp])) if keep[i] else 0.0 for i, p in enumerate(idx)][lo:hi]
        return ids, act, context - lo
