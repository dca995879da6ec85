"""A pool of random context windows, with every component's firings inside them.

Scorers need two things the per-component reservoirs cannot give: windows where a
component *verifiably does not fire* (negatives for detection) and true
activations of a component on *random* text (for the simulator). Both come from
one pool of windows chosen uniformly from the data, in the same harvest pass, with
the firings of every component inside each window stored sparsely.

Windows are tiles: each run of valid (unmasked) positions of a sequence is cut into
consecutive non-overlapping tiles of ``window_len`` tokens from its first position
(the last tile of a run may be shorter), so every valid position is in exactly one
tile, whatever padding on the left or masked holes a row has, and no tile holds a
masked position. Every tile gets a key that is a hash of (seed, sequence id,
start position) — the same keyed machinery as `ReservoirAcc` — and the pool keeps
the ``n_windows`` tiles with the smallest keys. So the pool is a uniform sample of
tiles without replacement, identical however the stream is batched, resumed or
split across workers, and merging two pools is "keep the smallest keys of the
union". Windows come out in key order, itself a uniformly random order.

Memory (on the loop's device)::

    fixed:  n_windows * (3 * 8 + 4 * window_len)  bytes   (keys, ids, starts, tokens)
    sparse: F * 20 bytes, F = firings inside the kept windows
            ~= n_windows * window_len * L0, where L0 is the mean number of
            components firing per token

With the defaults (1024 windows of 32 tokens) and L0 = 50 that is 0.2 MB fixed
plus 33 MB of firings, and up to about twice that between compactions (the firings
of evicted windows are dropped lazily: see ``_compact``). A dense layer (neurons with
threshold 0, L0 ~ N/2) makes F large: raise the threshold or shrink ``n_windows``.

Output (`finalize_shared`): a `SharedRows` table, saved as ``shared/window_pool.json``
(format, window length, thresholds, seed, the windows and their token strings) and
``shared/window_pool.rows``, one packed little-endian row of 20 bytes a firing
(`FIRING_DTYPE`: window, offset, component as int32, the activation as float64),
sorted by (window, offset, component). The activation is the harvest's float32 value
widened exactly, never on the wrong side of the threshold (`widen_keeping_firing`).
Format 1 held the firings as four JSON lists (``firings``) of rounded values: 25 bytes
a firing to write and, read back, four Python lists of millions of objects; it is
still read (`firing_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from autointerp.accumulators.base import Accumulator, HarvestContext, TensorAccumulator
from autointerp.accumulators.sampling import EMPTY_KEY, PAD_TOKEN, firing_hash, widen_keeping_firing
from autointerp.batch import FiringBatch
from autointerp.harvest_store import SharedRows

#: the seed offset of the tile keys: independent of the reservoir (0) and top-k (1) keys
_SEED_OFFSET = 2
#: tile keys hash the start position with this "component" (no component owns a tile)
_TILE_COMPONENT = -1
SHARED_FORMAT = "autointerp.window_pool/2"
#: the format written before the firings moved to binary rows: four JSON lists under ``firings``
SHARED_FORMAT_V1 = "autointerp.window_pool/1"
#: one stored firing (packed, little-endian, 20 bytes); the rows are sorted by (window, offset, component)
FIRING_DTYPE = np.dtype([("window", "<i4"), ("offset", "<i4"), ("component", "<i4"), ("activation", "<f8")])
#: the stored firings are compacted once they exceed twice the last compaction's by this many
COMPACT_SLACK = 1 << 16


class RandomWindowAcc(TensorAccumulator):
    """``n_windows`` uniformly random windows of ``window_len`` tokens, with all firings in them.

    >>> loop = HarvestLoop([ReservoirAcc(k=30), RandomWindowAcc(n_windows=1024, window_len=32)])
    >>> result = loop.run(batches)
    >>> pool = WindowPool.from_shared(result.shared["window_pool"])   # autointerp.scoring
    >>> pool.activations(window=0, component=12)                       # dense, window_len floats

    The output is whole-harvest (`finalize_shared`), saved as ``shared/window_pool.json``:
    ``windows`` (sequence_index, start, token_ids) in key order and the firings as
    columns ``window``, ``offset``, ``component`` (flat index), ``activation``.
    """

    name = "window_pool"

    def __init__(self, n_windows: int = 1024, window_len: int = 32):
        if n_windows < 1:
            raise ValueError(f"n_windows must be at least 1, got {n_windows}")
        if window_len < 1:
            raise ValueError(f"window_len must be at least 1, got {window_len}")
        self.n_windows, self.window_len = int(n_windows), int(window_len)

    def config(self) -> dict[str, Any]:
        return {"n_windows": self.n_windows, "window_len": self.window_len}

    def state_bytes(self, ctx: HarvestContext) -> int:
        # the sparse firings are data-dependent; the module docstring gives their estimate
        return self.n_windows * (3 * 8 + 4 * self.window_len)

    def setup(self, ctx: HarvestContext) -> None:
        n, L, dev = self.n_windows, self.window_len, ctx.device
        # reduce=None: windows and their firings merge together, by key (merge_states)
        self.add_state("key", torch.full((n,), EMPTY_KEY, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("sequence", torch.full((n,), -1, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("start", torch.full((n,), -1, dtype=torch.int64, device=dev), reduce=None)
        self.add_state("tokens", torch.full((n, L), PAD_TOKEN, dtype=torch.int32, device=dev), reduce=None)
        # firings inside kept windows, each tagged with its window's key (keys are the
        # windows' identities; slots move as the kept set changes); their number grows with the data
        for name, dtype in (("f_key", torch.int64), ("f_offset", torch.int32), ("f_comp", torch.int64),
                            ("f_act", torch.float32)):
            self.add_state(name, torch.empty(0, dtype=dtype, device=dev), reduce=None, fixed_shape=False)
        self._new_firings: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self._n_stored = self._n_compacted = 0
        self._compacted = True  # no stored firing belongs to a window no longer kept

    # -- the firings, compacted lazily ---------------------------------------------------
    #
    # Once the pool is full, a batch changes a few windows of n_windows, but the pool holds
    # every firing in them (millions). So an entering window's firings are appended to a list,
    # an evicted window's stay where they are (dead: their key is no longer kept), and the
    # firings are compacted, keeping those of kept windows in the order stored, when they
    # have doubled since the last compaction: amortised O(1) a stored firing, where rebuilding
    # them every batch cost O(pool) (350 ms a batch at 192 firings a position). A window that
    # leaves the pool never comes back (its key is above the n smallest seen), so the result is
    # the eager one, tensor for tensor; everything that reads the firings compacts first.

    def _compact(self) -> None:
        if self._compacted:
            return
        parts = [(self.f_key, self.f_offset, self.f_comp, self.f_act), *self._new_firings]
        fk, fo, fc, fa = (torch.cat(col) for col in zip(*parts))
        live = torch.isin(fk, self.key)
        self.f_key, self.f_offset, self.f_comp, self.f_act = fk[live], fo[live], fc[live], fa[live]
        self._new_firings = []
        self._n_stored = self._n_compacted = self.f_key.numel()
        self._compacted = True

    def state_dict(self) -> dict[str, Any]:
        self._compact()
        return super().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._new_firings = []
        self._n_stored = self._n_compacted = self.f_key.numel()
        self._compacted = False  # a saved state may hold firings of windows it does not keep

    def merge(self, other: Accumulator) -> TensorAccumulator:
        if isinstance(other, RandomWindowAcc) and other.bound:
            other._compact()
        return super().merge(other)

    def to(self, device: torch.device | str) -> TensorAccumulator:
        if self.bound:
            self._compact()
        return super().to(device)

    # -- selection ---------------------------------------------------------------------

    def _select(
        self,
        key: Tensor,
        seq: Tensor,
        start: Tensor,
        tok: Tensor,
        firings: tuple[Tensor, Tensor, Tensor, Tensor],
    ) -> None:
        """Keep the n smallest distinct keys of (kept ∪ given), and the firings of kept windows.

        A window present on both sides (the same tile seen twice) is kept once, with
        the firings of the side already kept.
        """
        n = self.n_windows
        all_key = torch.cat([self.key, key])
        all_seq = torch.cat([self.sequence, seq])
        all_start = torch.cat([self.start, start])
        all_tok = torch.cat([self.tokens, tok.to(self.tokens.dtype)])
        order = torch.argsort(all_key, stable=True)
        sorted_key = all_key[order]
        first = torch.ones_like(sorted_key, dtype=torch.bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        first |= sorted_key == EMPTY_KEY  # empty slots are all distinct placeholders
        order = order[first][:n]
        new_key = all_key[order]
        fk, fo, fc, fa = firings
        # a window already kept keeps its own firings (a duplicate tile adds none); an evicted
        # window's firings are dropped at the next compaction
        theirs = torch.isin(fk, new_key) & ~torch.isin(fk, self.key)
        if bool(theirs.any()):
            self._new_firings.append((fk[theirs], fo[theirs].to(torch.int32), fc[theirs], fa[theirs].float()))
            self._n_stored += self._new_firings[-1][0].numel()
        self.key, self.sequence, self.start = new_key, all_seq[order], all_start[order]
        self.tokens = all_tok[order]
        self._compacted = False
        if self._n_stored > 2 * self._n_compacted + COMPACT_SLACK:
            self._compact()

    def update(self, batch: FiringBatch) -> None:
        ctx = self._require_bound()
        B, S, L = batch.batch.tokens.shape[0], batch.seq_len, self.window_len
        dev = batch.device
        valid = batch.valid.view(B, S)
        tokens = batch.tokens.view(B, S)
        ar = torch.arange(S, device=dev)
        # tiles: each run of valid positions cut into pieces of L from its first position,
        # so every valid position is in exactly one tile and no tile holds a masked one
        run_first = valid.clone()
        run_first[:, 1:] &= ~valid[:, :-1]
        run_start = torch.cummax(torch.where(run_first, ar, torch.zeros_like(ar)).expand(B, S), dim=1).values
        tile_start = run_start + (ar - run_start) // L * L  # [B, S], meaningful where valid
        is_start = valid & (tile_start == ar)
        length = torch.zeros((B, S), dtype=torch.int64, device=dev)
        length.scatter_add_(1, tile_start, valid.long())  # valid positions per tile, at its start
        seq = batch.sequence_ids[:, None].expand(B, S)
        tile_key = torch.full((B, S), EMPTY_KEY, dtype=torch.int64, device=dev)
        b_all, s_all = is_start.nonzero(as_tuple=True)
        tile_key[b_all, s_all] = firing_hash(
            ctx.seed + _SEED_OFFSET, seq[b_all, s_all], s_all, torch.full_like(s_all, _TILE_COMPONENT)
        )
        cand = is_start & (tile_key < self.key.max())
        if not bool(cand.any()):
            return
        b_idx, s_idx = cand.nonzero(as_tuple=True)
        offs = torch.arange(L, device=dev)
        inside = offs[None, :] < length[b_idx, s_idx][:, None]
        at = (s_idx[:, None] + offs[None, :]).clamp_max(S - 1)
        win_tok = torch.where(inside, tokens[b_idx[:, None], at], torch.full_like(at, PAD_TOKEN))
        # firings inside candidate tiles (before selection: the cheap part is the mask);
        # firings are at valid positions, so each lies in the tile its position starts
        pos, comp, act = batch.firing_pos, batch.firing_comp, batch.firing_act
        fb, fs = pos // S, pos % S
        ft = tile_start[fb, fs]
        f_in = cand[fb, ft]
        fb, ft, fs, comp, act = fb[f_in], ft[f_in], fs[f_in], comp[f_in], act[f_in]
        self._select(
            tile_key[b_idx, s_idx],
            seq[b_idx, s_idx],
            s_idx,
            win_tok,
            (tile_key[fb, ft], fs - ft, comp, act),
        )

    def merge_states(self, theirs: Mapping[str, Tensor]) -> None:
        filled = theirs["key"] != EMPTY_KEY
        self._select(
            theirs["key"][filled],
            theirs["sequence"][filled],
            theirs["start"][filled],
            theirs["tokens"][filled],
            (theirs["f_key"], theirs["f_offset"], theirs["f_comp"], theirs["f_act"]),
        )

    # -- output ------------------------------------------------------------------------

    def finalize(self) -> Mapping[int, Any]:
        return {}

    def finalize_shared(self) -> SharedRows | None:
        if not self.bound:
            return None
        ctx = self._require_bound()
        self._compact()
        filled = (self.key != EMPTY_KEY).cpu()
        n = int(filled.sum())
        key = self.key.cpu()[:n]  # kept keys are sorted ascending, empties last
        tok = self.tokens.cpu()[:n]
        lengths = (tok != PAD_TOKEN).sum(1).tolist()
        tok_rows = tok.tolist()
        windows = [
            {"sequence_index": s, "start": p, "token_ids": tok_rows[i][: lengths[i]]}
            for i, (s, p) in enumerate(zip(self.sequence.cpu()[:n].tolist(), self.start.cpu()[:n].tolist()))
        ]
        slot = torch.searchsorted(key, self.f_key.cpu())
        f_off, f_comp, f_act = self.f_offset.cpu().long(), self.f_comp.cpu(), self.f_act.cpu()
        # sort firings by (window, offset, component) with one composite key
        N, L = max(ctx.n_components, 1), self.window_len
        order = torch.argsort((slot * L + f_off) * N + f_comp)
        f_comp = f_comp[order]
        table = np.empty(order.numel(), dtype=FIRING_DTYPE)
        table["window"] = slot[order].numpy()
        table["offset"] = f_off[order].numpy()
        table["component"] = f_comp.numpy()
        # the float32 value widened exactly, never read as silent (`widen_keeping_firing`)
        table["activation"] = widen_keeping_firing(
            f_act[order], ctx.threshold if ctx.uniform_threshold else
            ctx.component_thresholds(torch.float64, "cpu")[f_comp.long()]).numpy()
        token_strings: dict[str, str] = {}
        if ctx.decode is not None:
            for t in sorted({t for row in windows for t in row["token_ids"]}):
                token_strings[str(t)] = ctx.token_str(t) or ""
        meta = {
            "format": SHARED_FORMAT,
            "window_len": L,
            "threshold": ctx.threshold,
            **({} if ctx.uniform_threshold else {"layer_thresholds": [
                [layer.name, ctx.space.layer_offset(layer.name), layer.width, ctx.threshold_for(layer.name)]
                for layer in ctx.space.layers]}),
            "seed": ctx.seed,
            "windows": windows,
            "token_strings": token_strings,
        }
        return SharedRows.build(meta, table.tobytes(), len(table), FIRING_DTYPE.itemsize)


def pool_meta(shared: SharedRows | Mapping[str, Any]) -> Mapping[str, Any]:
    """A window pool's metadata (format, window_len, threshold, windows, ...), in either format."""
    meta = shared.meta if isinstance(shared, SharedRows) else shared
    if not isinstance(meta, Mapping) or meta.get("format") not in (SHARED_FORMAT, SHARED_FORMAT_V1):
        found = f"format {meta.get('format')!r}" if isinstance(meta, Mapping) else f"a {type(shared).__name__}"
        raise ValueError(f"not a window pool ({found}); expected the output of RandomWindowAcc "
                         f"({SHARED_FORMAT!r}, or {SHARED_FORMAT_V1!r} from an older harvest)")
    return meta


def firing_columns(shared: SharedRows | Mapping[str, Any]) -> dict[str, Tensor]:
    """A window pool's firings as four tensors in stored order: ``window``, ``offset``, ``component``
    (int64) and ``activation`` (float64, the stored doubles exactly), from either format."""
    meta = pool_meta(shared)
    if isinstance(shared, SharedRows):
        if shared.row_bytes != FIRING_DTYPE.itemsize:
            raise ValueError(f"window pool rows of {shared.row_bytes} bytes; format {SHARED_FORMAT!r} "
                             f"has {FIRING_DTYPE.itemsize}-byte rows (window, offset, component, activation)")
        table = np.frombuffer(shared.data(), dtype=FIRING_DTYPE)
        return {name: torch.from_numpy(table[name].astype(np.float64 if name == "activation" else np.int64))
                for name in FIRING_DTYPE.names}
    f = meta["firings"]
    return {name: torch.as_tensor(f[name], dtype=torch.float64 if name == "activation" else torch.int64)
            for name in FIRING_DTYPE.names}
