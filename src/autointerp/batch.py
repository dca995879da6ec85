"""What enters the harvest loop, checked at the door, and what every accumulator sees.

`HarvestBatch` is built from plain tensors by a model adapter (a `HarvestFn`).
`ComponentSpace` numbers the components of all layers with one flat index.
`FiringBatch` is a batch plus the derivations every accumulator needs, computed
once per batch by the loop: the flattened activations, the sparse list of
firings (and, on first use, the dense activations and firing mask).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from attrs import define, field
from torch import Tensor

from autointerp.schemas import LayerSpec

PROB_SUM_TOLERANCE = 1e-2


@define(eq=False)
class SparseActivations:
    """One layer's activations as each position's active latents, the form a TopK SAE's encoder gives:
    ``indices [B, S, K]`` (int64 latent ids in ``[0, width)``, distinct within a position) and ``values
    [B, S, K]`` (floating; a slot at or below the threshold does not fire, so 0 pads a position with fewer).

    Put it where a dense ``[B, S, C]`` tensor would go in `HarvestBatch.activations`; the loop then pays for
    the K entries a position, not for C columns: no dense tensor is made unless an accumulator asks for
    ``batch.acts``. Windows read the activations of their other positions from these entries (a latent
    absent at a position reads 0).

    >>> acts = SparseActivations(torch.tensor([[[3, 0]]]), torch.tensor([[[0.5, 2.0]]]), width=4)
    >>> acts.shape, acts.to_dense().tolist()
    ((1, 1, 4), [[[2.0, 0.0, 0.0, 0.5]]])
    """

    indices: Tensor
    values: Tensor
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*tuple(self.indices.shape[:2]), int(self.width))  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseActivations:
        return SparseActivations(self.indices.to(device, non_blocking=non_blocking),
                                 self.values.to(device, non_blocking=non_blocking), self.width)

    def to_dense(self) -> Tensor:
        """The ``[B, S, width]`` float32 tensor these entries stand for."""
        B, S, _ = self.indices.shape
        out = torch.zeros(B, S, self.width, dtype=torch.float32, device=self.device)
        return out.scatter_(2, self.indices.long(), self.values.float())

    @property
    def nbytes(self) -> int:
        return self.indices.numel() * self.indices.element_size() + self.values.numel() * self.values.element_size()

    def check(self, where: str, B: int, S: int, device: torch.device) -> None:
        """Raise ``ValueError`` naming ``where``, what was expected and what arrived."""
        idx, val = self.indices, self.values
        if not isinstance(idx, Tensor) or not isinstance(val, Tensor):
            raise ValueError(f"{where}: indices and values must be torch.Tensors, got "
                             f"{type(idx).__name__} and {type(val).__name__}")
        if idx.dim() != 3 or tuple(idx.shape) != tuple(val.shape) or tuple(idx.shape[:2]) != (B, S):
            raise ValueError(f"{where}: indices {tuple(idx.shape)} and values {tuple(val.shape)} must both be "
                             f"({B}, {S}, K) to match tokens")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{where}: indices have dtype {idx.dtype}, expected int64 latent ids")
        if not val.is_floating_point():
            raise ValueError(f"{where}: values have dtype {val.dtype}, expected a floating dtype")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise ValueError(f"{where}: width must be a positive int (the layer's latents), got {self.width!r}")
        if idx.device != device or val.device != device:
            raise ValueError(f"{where} is on {idx.device}/{val.device} but tokens are on {device}")
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.width:
                raise ValueError(f"{where}: indices in [{lo}, {hi}], expected ids in [0, {self.width})")
            if idx.shape[2] > 1 and bool((idx.sort(dim=2).values.diff(dim=2) == 0).any()):
                raise ValueError(f"{where}: a position names the same latent twice; indices must be distinct "
                                 "within a position")
            if not _all_finite(val):
                raise ValueError(f"{where}: values contain {int((~torch.isfinite(val)).sum())} NaN or Inf values; "
                                 "activations must be finite")


class _SparseLayer:
    """A `SparseActivations` layer flattened to ``[P, C]``: its entries sorted by ``p * C + c`` (so its firings
    come out in (position, column) order), read at any ``[pos, col]`` by a search (absent entries read 0)."""

    def __init__(self, acts: SparseActivations):
        B, S, K = acts.indices.shape
        self.P, self.C = B * S, acts.width
        cols, order = acts.indices.reshape(self.P, K).long().sort(dim=1)
        self.cols = cols
        self.vals = acts.values.reshape(self.P, K).float().gather(1, order)
        self.keys = (torch.arange(self.P, device=cols.device)[:, None] * self.C + cols).reshape(-1)
        self.shape = (self.P, self.C)
        self._by_col: tuple[Tensor, Tensor] | None = None  # the entries by (column, position), made on first use

    def __getitem__(self, index: tuple[Tensor, Tensor]) -> Tensor:
        pos, col = torch.broadcast_tensors(*index)
        want = pos.long() * self.C + col.long()
        flat = self.vals.reshape(-1)
        if not flat.numel():
            return torch.zeros(want.shape, dtype=torch.float32, device=want.device)
        at = torch.searchsorted(self.keys, want.reshape(-1)).clamp_max(flat.numel() - 1).view(want.shape)
        return torch.where(self.keys[at] == want, flat[at], torch.zeros((), device=flat.device))

    def dense(self) -> Tensor:
        out = torch.zeros(self.P, self.C, dtype=torch.float32, device=self.cols.device)
        return out.scatter_(1, self.cols, self.vals)

    def window_values(self, pos: Tensor, col: Tensor, context: int) -> Tensor:
        """``[n, 2 context + 1]``: the activations of latent ``col[i]`` at positions ``pos[i] - context ..
        pos[i] + context`` (0 where it has no entry, or past the batch's ends). The entries sorted by
        (column, position) once, each row's are found by two searches: the work of the rows and of the
        entries they meet, not of ``n x W`` lookups."""
        if self._by_col is None:
            keys = (self.cols * self.P + torch.arange(self.P, device=self.cols.device)[:, None]).reshape(-1)
            keys, order = keys.sort()
            self._by_col = keys, self.vals.reshape(-1)[order]
        keys, vals = self._by_col
        n, W, dev = pos.numel(), 2 * context + 1, pos.device
        pos, base = pos.long(), col.long() * self.P
        lo = torch.searchsorted(keys, base + (pos - context).clamp_min(0))
        hi = torch.searchsorted(keys, base + (pos + context).clamp_max(self.P - 1) + 1)
        found = hi - lo
        row = torch.repeat_interleave(torch.arange(n, device=dev), found)
        at = lo[row] + torch.arange(row.numel(), device=dev) - (torch.cumsum(found, 0) - found)[row]
        out = torch.zeros(n, W, dtype=torch.float32, device=dev)
        out[row, keys[at] - base[row] - pos[row] + context] = vals[at]
        return out


@define(eq=False)
class HarvestBatch:
    """One batch of model evidence.

    tokens: ``[B, S]`` int64 token ids.
    activations: ``{layer: [B, S, C_layer]}`` floating activations (CI values, SAE
        latents, neurons); layers may have different widths ``C_layer``. A layer may instead be
        a `SparseActivations` (a TopK SAE's ``indices, values [B, S, K]``), which the loop reads
        without a dense tensor.
    output_probs: ``[B, S, V]`` the model's next-token probabilities (optional
        unless an accumulator needs them).
    mask: ``[B, S]`` bool, True where the position is real data; False positions
        (padding) are excluded from every statistic.
    sequence_ids: ``[B]`` int64, the global index of each row in the dataset. It
        names where an example came from and seeds its sampling key, so giving it
        makes the sample independent of how the data was split into batches or
        workers. Without it, the loop numbers rows in the order it sees them.
    """

    tokens: Tensor
    activations: Mapping[str, Tensor]
    output_probs: Tensor | None = None
    mask: Tensor | None = None
    sequence_ids: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> HarvestBatch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return HarvestBatch(
            tokens=self.tokens.to(device, non_blocking=True),
            activations={k: v.to(device, non_blocking=True) for k, v in self.activations.items()},
            output_probs=mv(self.output_probs),
            mask=mv(self.mask),
            sequence_ids=mv(self.sequence_ids),
        )

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise ``ValueError`` naming the tensor, what was expected and what arrived."""
        tok = self.tokens
        if not isinstance(tok, Tensor):
            raise ValueError(f"tokens must be a torch.Tensor of shape [B, S], got {type(tok).__name__}")
        if tok.dim() != 2:
            raise ValueError(f"tokens has shape {tuple(tok.shape)}, expected 2 dimensions [B, S]")
        if tok.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens has dtype {tok.dtype}, expected torch.int64 token ids")
        B, S = tok.shape
        device = tok.device
        if not isinstance(self.activations, Mapping) or len(self.activations) == 0:
            raise ValueError(
                "activations must be a non-empty dict {layer_name: [B, S, C] tensor}, "
                f"got {type(self.activations).__name__} of length {len(self.activations) if isinstance(self.activations, Mapping) else 'n/a'}"
            )
        for name, act in self.activations.items():
            where = f"activations[{name!r}]"
            if isinstance(act, SparseActivations):
                act.check(where, B, S, device)
                continue
            if not isinstance(act, Tensor):
                raise ValueError(f"{where} must be a torch.Tensor or a SparseActivations, got {type(act).__name__}")
            if act.dim() != 3:
                raise ValueError(f"{where} has shape {tuple(act.shape)}, expected 3 dimensions [B, S, C]")
            if tuple(act.shape[:2]) != (B, S):
                raise ValueError(
                    f"{where} has shape {tuple(act.shape)}, expected ({B}, {S}, C) to match tokens {tuple(tok.shape)}"
                )
            if not act.is_floating_point():
                raise ValueError(f"{where} has dtype {act.dtype}, expected a floating dtype")
            if act.device != device:
                raise ValueError(f"{where} is on {act.device} but tokens are on {device}; put every tensor on one device")
            if act.numel() and not _all_finite(act):
                n_bad = int((~torch.isfinite(act)).sum())
                raise ValueError(f"{where} contains {n_bad} NaN or Inf values; activations must be finite")
        if self.mask is not None:
            m = self.mask
            if not isinstance(m, Tensor) or m.dtype != torch.bool or tuple(m.shape) != (B, S):
                got = f"{tuple(m.shape)} {m.dtype}" if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"mask must be a bool tensor of shape ({B}, {S}), got {got}")
            if m.device != device:
                raise ValueError(f"mask is on {m.device} but tokens are on {device}")
        if self.sequence_ids is not None:
            sid = self.sequence_ids
            if not isinstance(sid, Tensor) or sid.dtype not in (torch.int64, torch.int32) or tuple(sid.shape) != (B,):
                got = f"{tuple(sid.shape)} {sid.dtype}" if isinstance(sid, Tensor) else type(sid).__name__
                raise ValueError(f"sequence_ids must be an int64 tensor of shape ({B},), got {got}")
            if sid.device != device:
                raise ValueError(f"sequence_ids is on {sid.device} but tokens are on {device}")
        V = vocab_size
        if self.output_probs is not None:
            p = self.output_probs
            if not isinstance(p, Tensor) or p.dim() != 3 or tuple(p.shape[:2]) != (B, S):
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"output_probs has shape {got}, expected ({B}, {S}, V) to match tokens")
            if not p.is_floating_point():
                raise ValueError(f"output_probs has dtype {p.dtype}, expected a floating dtype")
            if p.device != device:
                raise ValueError(f"output_probs is on {p.device} but tokens are on {device}")
            if V is not None and p.shape[-1] != V:
                raise ValueError(f"output_probs has vocabulary size {p.shape[-1]}, expected {V}")
            V = p.shape[-1]
            # one pass for the row sums (no float copy of [B, S, V]), one for the minimum
            sums = p.sum(-1, dtype=torch.float32)
            sums = sums[self.mask] if self.mask is not None else sums.reshape(-1)
            if sums.numel():
                if not bool(torch.isfinite(sums).all()):
                    raise ValueError("output_probs contains NaN or Inf values")
                dev = (sums - 1).abs()
                worst = int(dev.argmax())
                if float(dev[worst]) > PROB_SUM_TOLERANCE:
                    raise ValueError(
                        f"output_probs rows must sum to 1 (they are probabilities, not logits); "
                        f"the worst row sums to {float(sums[worst]):.4g} (tolerance {PROB_SUM_TOLERANCE}). "
                        "Apply softmax to the logits first"
                    )
                if float(p.min()) < 0:
                    raise ValueError("output_probs contains negative values; expected probabilities in [0, 1]")
        if V is not None and tok.numel():
            lo, hi = int(tok.min()), int(tok.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"tokens contain ids in [{lo}, {hi}], expected ids in [0, {V}) for vocabulary size {V}")


def _all_finite(x: Tensor) -> bool:
    """True iff every element is finite, usually in one cheap reduction.

    A sum is finite only if no element is NaN or Inf, so a finite sum settles it.
    A non-finite sum can also come from overflow of large finite values; only then
    is the exact (and 5x slower) element-wise check run.
    """
    if bool(torch.isfinite(x.sum(dtype=torch.float32))):
        return True
    return bool(torch.isfinite(x).all())


@define
class ComponentSpace:
    """Maps (layer, index) to one flat index and to the key ``"layer:index"``, in layer order."""

    layers: list[LayerSpec]
    _offsets: list[int] = field(init=False, repr=False, eq=False)
    _by_name: dict[str, int] = field(init=False, repr=False, eq=False)
    _total: int = field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._offsets = []
        total = 0
        for layer in self.layers:
            self._offsets.append(total)
            total += layer.width
        self._total = total
        self._by_name = {layer.name: i for i, layer in enumerate(self.layers)}
        if len(self._by_name) != len(self.layers):
            raise ValueError(f"layer names must be unique, got {[l.name for l in self.layers]}")

    @classmethod
    def from_activations(cls, activations: Mapping[str, Tensor]) -> ComponentSpace:
        return cls([LayerSpec(name, int(t.shape[-1])) for name, t in activations.items()])

    @property
    def n_components(self) -> int:
        return self._total

    def __len__(self) -> int:
        return self.n_components

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer_offset(self, layer: str) -> int:
        return self._offsets[self._layer_idx(layer)]

    def _layer_idx(self, layer: str) -> int:
        try:
            return self._by_name[layer]
        except KeyError:
            raise KeyError(f"unknown layer {layer!r}; the layers are {self.layer_names}") from None

    def flat_index(self, layer: str, index: int) -> int:
        li = self._layer_idx(layer)
        width = self.layers[li].width
        if not 0 <= index < width:
            raise IndexError(f"component index {index} out of range for layer {layer!r} with {width} components")
        return self._offsets[li] + index

    def locate(self, flat: int) -> tuple[str, int]:
        """Flat index -> (layer, index within layer)."""
        if not 0 <= flat < self._total:
            raise IndexError(f"flat index {flat} out of range for {self._total} components")
        li = bisect.bisect_right(self._offsets, flat) - 1
        return self.layers[li].name, flat - self._offsets[li]

    @staticmethod
    def make_key(layer: str, index: int) -> str:
        """The one spelling of a component key: ``"layer:index"``."""
        return f"{layer}:{index}"

    @staticmethod
    def split_key(key: str) -> tuple[str, int]:
        """``"layer:index"`` -> ``(layer, index)``. Layer names may themselves contain ':'."""
        layer, sep, idx = key.rpartition(":")
        if not sep or not idx.isdigit():
            raise KeyError(f"component key {key!r} is not of the form 'layer:index'")
        return layer, int(idx)

    def key(self, flat: int) -> str:
        return self.make_key(*self.locate(flat))

    def parse_key(self, key: str) -> int:
        """``"layer:index"`` -> flat index."""
        return self.flat_index(*self.split_key(key))

    def keys(self) -> Iterator[str]:
        for layer in self.layers:
            for i in range(layer.width):
                yield self.make_key(layer.name, i)

    def check_batch(self, activations: Mapping[str, Tensor]) -> None:
        got = [(name, int(t.shape[-1])) for name, t in activations.items()]
        want = [(l.name, l.width) for l in self.layers]
        if got != want:
            raise ValueError(
                f"activations have layers {got}, expected {want} as in the first batch; "
                "every batch must have the same layers, in the same order, with the same widths"
            )


@define(eq=False)
class FiringBatch:
    """A validated batch plus the derivations computed once for every accumulator.

    Positions are flattened: ``p = b * S + s``, ``P = B * S``.

    layer_acts: each layer's ``[P, C_layer]`` float32 activations (views of the batch's
        tensors where they are float32 already), in layer order; ``layer_starts`` (from
        ``space``) their first flat component index.
    acts: ``[P, N]`` float32 activations of all components (layers concatenated), made
        on first use: at 65,536 components the copy costs more than finding the firings,
        so the loop never makes it itself. `act_at` reads ``acts[pos, comp]`` without it.
    fires: ``[P, N]`` bool, activation > its component's threshold at a valid (unmasked)
        position; also made on first use, from the firing list.
    valid: ``[P]`` bool, positions that count (the mask, flattened).
    firing_pos / firing_comp / firing_act: the sparse list of firings, ``[F]`` each,
        sorted by position then component.
    tokens: ``[P]`` int64; output_probs: ``[P, V]`` or None.
    sequence_ids: ``[B]`` int64 global row ids; seq_len: S.
    n_valid: number of valid positions in the batch (a Python int).
    thresholds: ``[N]`` float32, each component's threshold when layers have different
        ones (``fires`` is ``acts > thresholds``); None when one threshold applies to all.
    """

    batch: HarvestBatch
    space: ComponentSpace
    valid: Tensor
    firing_pos: Tensor
    firing_comp: Tensor
    firing_act: Tensor
    tokens: Tensor
    output_probs: Tensor | None
    sequence_ids: Tensor
    seq_len: int
    n_valid: int
    vocab_size: int | None
    thresholds: Tensor | None = None
    layer_acts: tuple[Tensor, ...] = ()
    #: ``acts`` once made, or whatever a caller put there (an object indexed as ``acts[pos, comp]``)
    _acts: Any = field(default=None, alias="acts")
    _fires: Tensor | None = field(default=None, alias="fires")

    @property
    def layer_starts(self) -> tuple[int, ...]:
        """Each layer's first flat component index, in layer order (from ``space``)."""
        return tuple(self.space.layer_offset(name) for name in self.space.layer_names)

    @property
    def acts(self) -> Any:
        if self._acts is None:
            la = [a.dense() if isinstance(a, _SparseLayer) else a for a in self.layer_acts]
            self._acts = la[0] if len(la) == 1 else torch.cat(la, dim=1)
        return self._acts

    @property
    def fires(self) -> Tensor:
        if self._fires is None:
            fires = torch.zeros(self.n_positions, self.space.n_components, dtype=torch.bool, device=self.device)
            fires[self.firing_pos, self.firing_comp] = True
            self._fires = fires
        return self._fires

    def act_at(self, pos: Tensor, comp: Tensor) -> Tensor:
        """``acts[pos, comp]`` (the index tensors broadcast), read from the layers' own tensors.

        The samplers gather each kept firing's activation window this way (``comp`` of shape
        ``[n, 1]`` against positions ``[n, W]``): rows are sorted out by layer, not elements.
        """
        if self._acts is not None:
            return self._acts[pos, comp]
        if len(self.layer_acts) == 1:
            return self.layer_acts[0][pos, comp]
        pos, comp = torch.broadcast_tensors(pos, comp)
        shape = pos.shape
        if not (comp.dim() == 2 and comp.stride(1) == 0):  # one component a row: a row's layer is its first's
            pos, comp = pos.reshape(-1, 1), comp.reshape(-1, 1)
        out = torch.empty(pos.shape, dtype=torch.float32, device=pos.device)
        layer = self._layer_of(comp[:, 0])
        for i, (a, lo) in enumerate(zip(self.layer_acts, self.layer_starts)):
            rows = (layer == i).nonzero().squeeze(1)
            if rows.numel():
                out[rows] = a[pos[rows], comp[rows] - lo]
        return out.view(shape)

    def _layer_of(self, comp: Tensor) -> Tensor:
        """The layer (its place in ``layer_acts``) of each flat component index in ``comp [n]``."""
        bounds = torch.tensor(self.layer_starts[1:], dtype=comp.dtype, device=comp.device)
        return torch.bucketize(comp.contiguous(), bounds, right=True)

    def windows(self, pos: Tensor, comp: Tensor, context: int, pad_token: int = -1) -> tuple[Tensor, Tensor]:
        """The token and activation windows of the firings ``(pos, comp)`` (``[n]`` each): ``[n, 2 context + 1]``
        int32 tokens and float32 activations, centred on the firing; a slot outside the firing's sequence
        or at a masked position holds ``pad_token`` and activation 0.

        Read without ``[n, W]`` index arithmetic (its int64 temporaries cost more than the reads): the
        tokens from a padded copy of the batch's, and each layer's activations from a sliding view of
        its own ``[P, C]`` tensor (``unfold``), one gather a layer; a `SparseActivations` layer's from its
        entries near each firing (`_SparseLayer.window_values`). Firings of a dense layer within ``context``
        of the batch's first or last position, and batches whose activations are not the layers' own
        (`acts` given), are read by `act_at`."""
        S, P, W, dev = self.seq_len, self.n_positions, 2 * context + 1, pos.device
        pos = pos.long()
        tok = torch.full((P + 2 * context,), pad_token, dtype=torch.int32, device=dev)
        tok[context : context + P] = self.tokens.to(torch.int32).masked_fill(~self.valid, pad_token)
        tokens = tok.unfold(0, W, 1)[pos]  # slot j: position pos - context + j
        s = (pos % S)[:, None]
        slot = torch.arange(W, device=dev)[None, :]
        tokens.masked_fill_((slot < context - s) | (slot > context + S - 1 - s), pad_token)  # another sequence
        outside = tokens == pad_token
        acts = torch.zeros(pos.numel(), W, dtype=torch.float32, device=dev)
        if self._acts is None:
            start = pos - context
            late = (start < 0) | (start > P - W)  # near the batch's ends (every row when P < W): `act_at`
            layer = self._layer_of(comp)
            for i, (a, lo) in enumerate(zip(self.layer_acts, self.layer_starts)):
                in_layer = layer == i
                if isinstance(a, _SparseLayer):  # the latent's own entries nearby, found by two searches a row
                    rows = in_layer.nonzero().squeeze(1)
                    if rows.numel():
                        acts[rows] = a.window_values(pos[rows], comp[rows] - lo, context)
                    late &= ~in_layer
                    continue
                rows = (in_layer & ~late).nonzero().squeeze(1)
                if rows.numel():
                    acts[rows] = a.unfold(0, W, 1)[start[rows], comp[rows] - lo]
            edge = late.nonzero().squeeze(1)
        else:
            edge = torch.arange(pos.numel(), device=dev)
        if edge.numel():
            at = (pos[edge, None] - context + slot).clamp(0, P - 1)
            acts[edge] = self.act_at(at, comp[edge, None]).float()
        return tokens, acts.masked_fill_(outside, 0.0)

    @property
    def n_positions(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_firings(self) -> int:
        return self.firing_pos.shape[0]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @classmethod
    def from_batch(
        cls,
        batch: HarvestBatch,
        space: ComponentSpace,
        threshold: float | Tensor,
        sequence_ids: Tensor,
        vocab_size: int | None,
    ) -> FiringBatch:
        B, S = batch.tokens.shape
        P = B * S
        # each layer on its own (views, float32): no [P, N] copy, the firings found layer by layer
        layers = tuple(_SparseLayer(a) if isinstance(a, SparseActivations) else a.reshape(P, a.shape[-1]).float()
                       for a in batch.activations.values())
        dev = batch.tokens.device
        N = sum(a.shape[1] for a in layers)
        valid = batch.mask.reshape(P) if batch.mask is not None else torch.ones(P, dtype=torch.bool, device=dev)
        per_comp = None
        if isinstance(threshold, Tensor):
            # float32, so a layer's threshold decides exactly as the same number given as a scalar
            per_comp = threshold.to(device=dev, dtype=torch.float32)
            if per_comp.shape != (N,):
                raise ValueError(f"threshold has shape {tuple(per_comp.shape)}, expected ({N},): "
                                 "one value per component")
        lo = 0
        found: list[tuple[Tensor, Tensor, Tensor]] = []
        for a in layers:
            thr = per_comp[lo : lo + a.shape[1]] if per_comp is not None else threshold
            p, c, v = layer_firings(a, thr, valid if batch.mask is not None else None)
            found.append((p, c + lo, v))
            lo += a.shape[1]
        pos, comp, act = found[0] if len(found) == 1 else merge_layer_firings(found, P)
        probs = batch.output_probs
        if probs is not None:
            probs = probs.reshape(P, probs.shape[-1])
        return cls(
            batch=batch,
            space=space,
            valid=valid,
            firing_pos=pos,
            firing_comp=comp,
            firing_act=act,
            tokens=batch.tokens.reshape(P).long(),
            output_probs=probs,
            sequence_ids=sequence_ids.to(dev).long(),
            seq_len=S,
            n_valid=int(valid.sum()) if batch.mask is not None else P,
            vocab_size=vocab_size if vocab_size is not None else (probs.shape[-1] if probs is not None else None),
            thresholds=per_comp,
            layer_acts=layers,
        )


#: `layer_firings` looks at a layer's columns in chunks of this many: a chunk's largest activation
#: (one vectorised max a chunk) says whether any of its columns can fire, and only those chunks are
#: compared and listed. An SAE layer of 16,384 latents with 48 active a position: 5 against 10 ms a
#: 512-position layer for the element-wise compare and its nonzero (this CPU, torch 2.13)
FIRING_CHUNK = 32
#: beyond this fraction of candidate chunks the element-wise compare is cheaper
FIRING_CHUNK_DENSE = 0.25


def layer_firings(a: Tensor, threshold: float | Tensor, valid: Tensor | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The firings of one layer's ``[P, C]`` float32 activations: ``(position, column, activation)``
    where ``a > threshold`` (a float, or ``[C]`` per column) at a valid position, in (position, column)
    order: what ``((a > threshold) & valid[:, None]).nonzero()`` gives, and the values there.

    Sparse layers are read in chunks of ``FIRING_CHUNK`` columns: a chunk can hold a firing only if
    its largest activation is above its smallest threshold (or is NaN, which no comparison passes but
    a max carries), so only those chunks are compared element by element. A `SparseActivations` layer
    compares its entries alone (a latent it does not list is 0 and does not fire)."""
    if isinstance(a, _SparseLayer):  # its entries are the candidates: (position, column) order already
        thr = threshold[a.cols] if isinstance(threshold, Tensor) else threshold
        fires = a.vals > thr
        if valid is not None:
            fires &= valid[:, None]
        p, j = fires.nonzero(as_tuple=True)
        return p, a.cols[p, j], a.vals[p, j]
    P, C = a.shape
    G = FIRING_CHUNK
    if C % G == 0 and C >= 4 * G and a.is_contiguous() and P:
        nC = C // G
        cm = a.view(P, nC, G).amax(-1)
        floor = threshold.view(nC, G).amin(-1) if isinstance(threshold, Tensor) else threshold
        cand = (cm > floor) | cm.isnan()
        if valid is not None:
            cand &= valid[:, None]
        chunks = cand.view(-1).nonzero().squeeze(1)
        if chunks.numel() <= FIRING_CHUNK_DENSE * P * nC:
            vals = a.view(-1, G).index_select(0, chunks)  # [chunks, G]
            above = vals > (threshold.view(nC, G)[chunks % nC] if isinstance(threshold, Tensor) else threshold)
            i, j = above.nonzero(as_tuple=True)
            at = chunks[i]
            return at // nC, (at % nC) * G + j, vals[i, j]
    fires = a > (threshold[None, :] if isinstance(threshold, Tensor) else threshold)
    if valid is not None:
        fires &= valid[:, None]
    p, c = fires.nonzero(as_tuple=True)
    return p, c, a[p, c]


def merge_layer_firings(found: list[tuple[Tensor, Tensor, Tensor]], n_positions: int
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Layers' firing lists (each in (position, component) order, the layers' components in increasing
    ranges) as one list in (position, component) order, without a sort: a firing's place is its
    position's start, plus the earlier layers' firings at that position, plus its rank among its own
    layer's there (counts per position: the work of the firings and positions, not of a sort)."""
    dev = found[0][0].device
    counts = torch.stack([torch.bincount(p, minlength=n_positions) for p, _, _ in found])  # [L, P]
    total = counts.sum(0)
    start = torch.cumsum(total, 0) - total
    before = torch.cumsum(counts, 0) - counts
    n = sum(p.numel() for p, _, _ in found)
    pos = torch.empty(n, dtype=found[0][0].dtype, device=dev)
    comp = torch.empty(n, dtype=found[0][1].dtype, device=dev)
    act = torch.empty(n, dtype=found[0][2].dtype, device=dev)
    for layer, (p, c, v) in enumerate(found):
        first = torch.cumsum(counts[layer], 0) - counts[layer]
        at = (start + before[layer] - first)[p] + torch.arange(p.numel(), device=dev)
        pos[at], comp[at], act[at] = p, c, v
    return pos, comp, act
