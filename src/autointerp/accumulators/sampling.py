"""Keyed bottom-k sampling of firings: the machinery behind `ReservoirAcc` and `TopActivationAcc`.

Every firing gets an int64 key; per component we keep the k firings with the
smallest keys, with the token window and activation window around each.

* With a key that is an independent uniform hash of the firing's identity
  (seed, sequence id, position, component), the kept set is a uniform sample
  without replacement over *all* firings of the stream, whatever the batches look
  like, and the same firing always gets the same key, so a resumed run, a split
  run or a merge of workers keeps exactly the same sample as one pass.
* With the key ``(-activation, hash)`` packed into one int64, the kept set is the
  k max-activating firings, ties broken uniformly at random.

Merging two samplers is "keep the k smallest keys of the union". Once a
component's buffer is full, a firing whose key is above the current k-th key is
rejected with one compare, before any window is gathered. Everything is
vectorized; there is no Python loop over firings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from autointerp.accumulators.base import HarvestContext, TensorAccumulator
from autointerp.batch import FiringBatch
from autointerp.schemas import ActivationExample

EMPTY_KEY = torch.iinfo(torch.int64).max
PAD_TOKEN = -1


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """The splitmix64 finalizer on int64 tensors (wrapping arithmetic), on any device."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def firing_hash(seed: int, sequence: Tensor, position: Tensor, component: Tensor) -> Tensor:
    """A 63-bit non-negative pseudo-random int64 per firing, a pure function of its identity."""
    h = splitmix64(torch.full_like(sequence, _signed(seed % (1 << 64))))
    h = splitmix64(h ^ sequence)
    h = splitmix64(h ^ position)
    h = splitmix64(h ^ component)
    return _shr(h, 1)


def descending_activation_key(act: Tensor, tiebreak: Tensor) -> Tensor:
    """int64 keys that sort by activation, largest first, then by ``tiebreak``.

    The float32 bit pattern of ``-act`` is mapped to an int32 that orders like
    the float, shifted into the high bits; the low 31 bits take the tie-break.
    """
    bits = (-act.float()).view(torch.int32).long()
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered << 31) | (tiebreak & 0x7FFFFFFF)


def round_significant(x: Tensor, digits: int = 7) -> Tensor:
    """float64 values rounded to ``digits`` significant digits.

    A float32 widened to float64 prints with 17 digits; rounding in float64 gives
    the double nearest a short decimal, so the saved JSON is about half the size
    and faster to write, at a relative error of at most 5e-7 (float32 itself keeps 6e-8).
    """
    x = x.double()
    mag = torch.floor(torch.log10(x.abs().clamp_min(1e-300)))
    exp = (digits - 1 - mag).clamp(-300, 300)
    up = torch.pow(10.0, exp.clamp_min(0))
    down = torch.pow(10.0, (-exp).clamp_min(0))
    # multiply/divide by exact powers of ten, never by a reciprocal
    rounded = torch.round(x * up / down) * down / up
    return torch.where(x == 0, x, rounded)


def widen_keeping_firing(x: Tensor, threshold: float | Tensor) -> Tensor:
    """Firing values (float32) as float64, exactly, except that none reads as silent: ``out > threshold``.

    The harvest decided each one fired (``acts > threshold``); a reader compares the
    float64 with the float64 threshold. For the loop's own comparisons a widened firing
    is always above it; a value at or below it (a firing decided in another precision)
    becomes the next double above the threshold. ``threshold`` may be a tensor
    broadcast against ``x``.

    >>> widen_keeping_firing(torch.tensor([0.5, 0.25]), 0.25).tolist()
    [0.5, 0.25000000000000006]
    """
    out = x.double()
    thr = torch.as_tensor(threshold, dtype=torch.float64, device=x.device).expand_as(out)
    silent = out <= thr
    if bool(silent.any()):
        out = torch.where(silent, torch.nextafter(thr, torch.tensor(float("inf"), dtype=torch.float64)), out)
    return out


def round_keeping_firing(x: Tensor, fires: Tensor, threshold: float | Tensor, digits: int = 7) -> Tensor:
    """`round_significant`, except that no value crosses ``threshold``: ``out > threshold == fires``.

    ``fires`` is the harvest's own decision, made on the float32 value before any
    rounding (``acts > threshold`` in float32, masked positions never fire). Every
    reader decides firing by comparing the stored float64 with the float64
    threshold, so a value the nearest rounding puts on the wrong side (a firing
    just above the threshold rounded down onto it) is rounded toward its own side
    instead (up for a firing, down otherwise), at most one unit in the last digit
    away. Where even that is on the wrong side -- only at the threshold's own
    float32, whose widening can exceed a float64 threshold such as 0.1 -- the value
    becomes the threshold itself (not firing) or the next double above it (firing).
    ``threshold`` may be a tensor broadcast against ``x`` (each value's own, e.g. its layer's).

    >>> t = torch.tensor([1.0000001192092896, 1.0])
    >>> round_keeping_firing(t, t > 1.0, 1.0).tolist()
    [1.000001, 1.0]
    """
    x = x.double()
    out = round_significant(x, digits)
    wrong = (out > threshold) != fires
    if bool(wrong.any()):
        mag = torch.floor(torch.log10(x.abs().clamp_min(1e-300)))
        exp = (digits - 1 - mag).clamp(-300, 300)
        up = torch.pow(10.0, exp.clamp_min(0))
        down = torch.pow(10.0, (-exp).clamp_min(0))
        scaled = x * up / down
        directed = torch.where(fires, torch.ceil(scaled), torch.floor(scaled)) * down / up
        out = torch.where(wrong, directed, out)
        wrong = (out > threshold) != fires
        thr = torch.as_tensor(threshold, dtype=torch.float64, device=x.device)
        if isinstance(threshold, Tensor):
            thr = thr.expand_as(x)
        above = torch.nextafter(thr, torch.tensor(float("inf"), dtype=torch.float64))
        out = torch.where(wrong & fires, above, torch.where(wrong, thr, out))
    return out


class KeyedSampler(TensorAccumulator):
    """Per component, the k firings with the smallest keys, with their windows.

    Subclasses define ``keys(batch, pos, comp, act)``.
    """

    #: each row's threshold (float64 ``[rows]``) when rows are not the context's components
    row_thresholds: Tensor | None = None

    def __init__(self, k: int = 20, context_tokens: int = 10):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if context_tokens < 0:
            raise ValueError(f"context_tokens must be >= 0, got {context_tokens}")
        self.k, self.context_tokens = k, context_tokens

    @property
    def window(self) -> int:
        return 2 * self.context_tokens + 1

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "context_tokens": self.context_tokens}

    def state_bytes(self, ctx: HarvestContext) -> int:
        N, k, W = ctx.n_components, self.k, self.window
        return N * k * (8 + 8 + 8 + W * (4 + 4))

    def setup(self, ctx: HarvestContext) -> None:
        N, k, W, dev = ctx.n_components, self.k, self.window, ctx.device
        # reduce=None: the five merge together, as "the k smallest keys of the union" (merge_states)
        self.add_state("key", torch.full((N, k), EMPTY_KEY, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("sequence", torch.full((N, k), -1, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("position", torch.full((N, k), -1, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("tokens", torch.full((N, k, W), PAD_TOKEN, dtype=torch.int32, device=dev), reduce=None)
        self.add_state("acts", torch.zeros((N, k, W), dtype=torch.float32, device=dev), reduce=None)

    def keys(self, batch: FiringBatch, seq: Tensor, pos_in_seq: Tensor, comp: Tensor, act: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, batch: FiringBatch) -> None:
        if not batch.n_firings:
            return
        S = batch.seq_len
        pos, comp, act = batch.firing_pos, batch.firing_comp, batch.firing_act
        seq = batch.sequence_ids[pos // S]
        key = self.keys(batch, seq, pos % S, comp, act)
        # each row's largest kept key (EMPTY while it has room) and its slot: a firing above it never enters
        largest, largest_slot = self._largest()
        cand = key < largest[comp]
        if not bool(cand.any()):
            return
        pos, comp, key = pos[cand], comp[cand], key[cand]
        # the candidates by (component, key)
        order = torch.argsort(key, stable=True)
        order = order[torch.argsort(comp[order], stable=True)]
        pos, comp, key = pos[order], comp[order], key[order]
        uniq, group, counts = torch.unique_consecutive(comp, return_inverse=True, return_counts=True)
        rank = torch.arange(comp.shape[0], device=comp.device) - (torch.cumsum(counts, 0) - counts)[group]
        # A row's r-th smallest candidate enters iff its key is below the row's (r+1)-th largest kept key, and
        # takes that key's slot: candidates ascending meet kept keys descending, so those entering are a
        # prefix and the k smallest of (kept and candidates) stay. The work of the candidates, not of
        # touched rows x k: at 65,536 components a batch touches most rows, with a firing or two each.
        enter = rank == 0  # below the largest, by `cand`
        slot = largest_slot[comp]
        multi = counts > 1
        if bool(multi.any()):
            rows_m = uniq[multi]
            t = min(self.k, int(counts.max()))
            kept, kept_slot = self.key[rows_m].topk(t, dim=1)  # descending (ties: distinct slots)
            local = torch.cumsum(multi, 0) - 1
            m = (multi[group] & (rank < t)).nonzero().squeeze(1)
            lm, rm = local[group[m]], rank[m]
            enter[m] = key[m] < kept[lm, rm]
            slot[m] = kept_slot[lm, rm]
        e = enter.nonzero().squeeze(1)
        self._write(comp[e], slot[e], batch, pos[e], comp[e], key[e])
        # the rows written get their largest key again; the others' stands
        rows = torch.unique(comp[e])
        largest[rows], largest_slot[rows] = self.key[rows].max(dim=1)
        self._largest_of = (self.key, self.key._version)

    def _largest(self) -> tuple[Tensor, Tensor]:
        """Each row's largest kept key and its slot. Kept from batch to batch (the update refreshes the rows
        it wrote), so a batch pays for its candidates, not for a pass over ``N x k`` keys (the reservoir alone
        over 48 batches at 65,536 components: 59 -> 46 ms a batch); computed afresh whenever the keys changed otherwise (a merge, a load, a move:
        a new tensor, or torch's version counter of this one moved)."""
        cached = getattr(self, "_largest_of", None)
        if cached is None or cached[0] is not self.key or cached[1] != self.key._version:
            self._largest_kept = self.key.max(dim=1)
            self._largest_of = (self.key, self.key._version)
        return self._largest_kept

    def _write(self, rows: Tensor, slot: Tensor, batch: FiringBatch, pos: Tensor, comp: Tensor, key: Tensor) -> None:
        """Put the firings at ``pos`` (of components ``comp``, keys ``key``) into slots ``(rows, slot)``."""
        S, k = batch.seq_len, self.k
        at = rows * k + slot  # written through flat views: index_copy_ beats a two-index assignment
        tokens, acts = batch.windows(pos, comp, self.context_tokens, PAD_TOKEN)
        self.key.view(-1).index_copy_(0, at, key)
        self.sequence.view(-1).index_copy_(0, at, batch.sequence_ids[pos // S])
        self.position.view(-1).index_copy_(0, at, pos % S)
        self.tokens.view(-1, self.window).index_copy_(0, at, tokens)
        self.acts.view(-1, self.window).index_copy_(0, at, acts)

    def _in_key_order(self, lo: int, hi: int, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Rows ``lo <= i < hi`` of the five states with each row's slots in key order (empty slots last):
        the update fills slots in any order."""
        key, o = self.key[lo:hi].sort(dim=1, stable=True)
        ow = o[:, :, None].expand(-1, -1, self.window)
        out = {"key": key, "sequence": self.sequence[lo:hi].gather(1, o), "position": self.position[lo:hi].gather(1, o),
               "tokens": self.tokens[lo:hi].gather(1, ow), "acts": self.acts[lo:hi].gather(1, ow)}
        return out if device is None else {n: t.to(device) for n, t in out.items()}

    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict())
        state.update(self._in_key_order(0, self.key.shape[0]))
        return state

    def _merge_rows(self, rows: Tensor, key: Tensor, seq: Tensor, pos: Tensor, tok: Tensor, act: Tensor) -> None:
        """Keep, for each of ``rows``, the k smallest keys of (kept ∪ given)."""
        k, W = self.k, self.window
        all_key = torch.cat([self.key[rows], key], dim=1)
        new_key, sel = all_key.topk(k, dim=1, largest=False, sorted=True)
        self.key[rows] = new_key
        self.sequence[rows] = torch.cat([self.sequence[rows], seq], 1).gather(1, sel)
        self.position[rows] = torch.cat([self.position[rows], pos], 1).gather(1, sel)
        sel_w = sel[:, :, None].expand(-1, -1, W)
        self.tokens[rows] = torch.cat([self.tokens[rows], tok], 1).gather(1, sel_w)
        self.acts[rows] = torch.cat([self.acts[rows], act], 1).gather(1, sel_w)

    def merge_states(self, theirs: Mapping[str, Tensor]) -> None:
        rows = torch.arange(self.key.shape[0], device=self.key.device)
        self._merge_rows(rows, theirs["key"], theirs["sequence"], theirs["position"], theirs["tokens"], theirs["acts"])

    def finalize(self) -> Mapping[int, Any]:
        return self.finalize_block(0, self._require_bound().n_components)

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The examples of rows ``lo <= i < hi``, built from those rows of the state alone."""
        ctx = self._require_bound()
        rows = self._in_key_order(lo, hi, "cpu")
        key, tokens = rows["key"], rows["tokens"]
        filled = key != EMPTY_KEY
        n_filled = filled.sum(1).tolist()
        c, W = self.context_tokens, self.window
        # windows cut short at a sequence edge are padded; trim the padding at both ends
        pad = (tokens == PAD_TOKEN).int()
        lead = pad[..., :c].cumprod(-1).sum(-1).tolist()
        trail = pad[..., c + 1 :].flip(-1).cumprod(-1).sum(-1).tolist()
        seq, pos = rows["sequence"].tolist(), rows["position"].tolist()
        acts = rows["acts"]
        # the harvest's decision, redone on the unrounded float32 exactly as FiringBatch makes it
        # (each row's own threshold: its component's layer's)
        thr64 = self.row_thresholds if self.row_thresholds is not None else \
            ctx.component_thresholds(torch.float64, "cpu")
        thr64 = thr64[lo:hi].cpu().double()[:, None, None]
        fires = (acts > thr64.float()) & (tokens != PAD_TOKEN)
        tok, act = tokens.tolist(), round_keeping_firing(acts, fires, thr64).tolist()
        names: dict[int, str] | None = None
        if ctx.decode is not None:  # decode each distinct token once
            names = {t: ctx.token_str(t) or "" for t in torch.unique(tokens[filled]).tolist()}
            names[PAD_TOKEN] = ""
        out: dict[int, list[ActivationExample]] = {}
        for i in range(hi - lo):
            examples = []
            for j in range(n_filled[i]):
                a, b = lead[i][j], W - trail[i][j]
                ids = tok[i][j][a:b]
                examples.append(
                    ActivationExample(
                        token_ids=ids,
                        activations=act[i][j][a:b],
                        firing_offset=c - a,
                        sequence_index=seq[i][j],
                        position=pos[i][j],
                        tokens=[names[x] for x in ids] if names is not None else None,
                    )
                )
            out[lo + i] = examples
        return out
