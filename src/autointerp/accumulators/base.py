"""The Accumulator protocol: how a statistic plugs into the harvest loop.

An accumulator owns its tensors on the loop's device. The loop calls, in order:

1. ``bind(ctx)`` once, when the first batch fixes the component space and the
   vocabulary: allocate state here (``state_bytes(ctx)`` is asked first so the
   loop can refuse a table that would not fit).
2. ``update(batch)`` for every `FiringBatch`.
3. ``merge(other)`` to fold in an accumulator of the same kind that saw another
   stream (another worker, another chunk); afterwards ``self`` equals one
   accumulator that saw both.
4. ``finalize()``: pure, returns ``{flat_component_index: value}``. It is the only
   step that moves data to the CPU. The value lands in ``ComponentData`` under
   the field named ``name`` (built-in fields) or in ``ComponentData.extras[name]``;
   with ``sets_fields`` it is a dict of ``ComponentData`` fields to set.

Each accumulator holds its own view of the harvest, ``ctx``: the context is
immutable, and ``to(device)`` rebinds the accumulator to a copy with the new
device, so moving one accumulator never moves what the others of its loop see.

``TensorAccumulator`` makes the common case short: declare states with
``add_state(name, tensor, reduce="sum"|"max"|"min")`` in ``setup`` and
``state_dict``, ``load_state_dict``, ``merge`` and device moves come for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from attrs import evolve, field, frozen
from torch import Tensor

from autointerp.batch import ComponentSpace, FiringBatch


@frozen
class HarvestContext:
    """What an accumulator may know about the harvest it is part of.

    Frozen, so one context can be handed to every accumulator of a loop: an
    accumulator that moves gets a new one (`with_device`), the others keep theirs.
    """

    space: ComponentSpace
    vocab_size: int | None
    device: torch.device = field(converter=torch.device)
    seed: int
    #: the threshold of every layer; with ``layer_thresholds``, the lowest of them (use `threshold_for`)
    threshold: float
    decode: Callable[[int], str] | None = None
    #: ``{layer: threshold}`` when layers fire above different thresholds; None: ``threshold`` everywhere
    layer_thresholds: Mapping[str, float] | None = None

    @property
    def n_components(self) -> int:
        return self.space.n_components

    @property
    def uniform_threshold(self) -> bool:
        """True when every component fires above the same ``threshold``."""
        return self.layer_thresholds is None or len(set(self.layer_thresholds.values())) <= 1

    def threshold_for(self, layer: str) -> float:
        """The threshold the components of ``layer`` fire above."""
        if self.layer_thresholds is None:
            return self.threshold
        return self.layer_thresholds[layer]

    def component_thresholds(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """``[N]``: each component's threshold (its layer's), in ``dtype`` on ``device`` (default: the context's).

        In float32 it is the threshold a `FiringBatch` compares float32 activations with;
        in float64 the one a reader compares a stored value with.
        """
        dev = self.device if device is None else torch.device(device)
        values = [self.threshold_for(layer.name) for layer in self.space.layers]
        widths = torch.tensor([layer.width for layer in self.space.layers], dtype=torch.int64)
        return torch.tensor(values, dtype=torch.float64).repeat_interleave(widths).to(dtype).to(dev)

    def token_str(self, token_id: int) -> str | None:
        return None if self.decode is None or token_id < 0 else self.decode(token_id)

    def require_vocab(self, who: str) -> int:
        """``vocab_size``, or an error naming the accumulator ``who`` that needs it."""
        if self.vocab_size is None:
            raise ValueError(
                f"{who} needs the vocabulary size: pass HarvestLoop(vocab_size=...) "
                "or batches with output_probs [B, S, V]"
            )
        return self.vocab_size

    def with_device(self, device: torch.device | str) -> HarvestContext:
        """This context on another device (a new object; this one is unchanged)."""
        return evolve(self, device=torch.device(device))


class Accumulator(ABC):
    """Base class of every statistic. Subclass `TensorAccumulator` for the easy path."""

    #: where the finalized output lands in ComponentData (a field, or an extras key)
    name: ClassVar[str] = ""
    #: the loop refuses to start if a batch has no output_probs and this is True
    needs_output_probs: ClassVar[bool] = False
    #: True: each finalized value is a dict {ComponentData field name: value}, and the
    #: loop sets every one of those fields (FiringStatsAcc fills four at once).
    #: False: the whole value lands under ``name``.
    sets_fields: ClassVar[bool] = False
    #: the file under prompts/sections/ (e.g. ``"examples.j2"``) whose template renders
    #: this output in the interpreter's prompt; None: the interpreter's generic fallback.
    #: Recorded per accumulator in the harvest's config.json, where the interpreter finds it.
    prompt_section: ClassVar[str | None] = None

    ctx: HarvestContext | None = None

    def bind(self, ctx: HarvestContext) -> None:
        self.ctx = ctx
        self.setup(ctx)

    def setup(self, ctx: HarvestContext) -> None:  # noqa: B027 - optional hook
        """Allocate state. Called once by `bind`."""

    def state_bytes(self, ctx: HarvestContext) -> int:
        """Bytes of device memory this accumulator's state will take (0 if negligible)."""
        return 0

    def config(self) -> dict[str, Any]:
        """Constructor arguments, recorded in config.json and used to rebuild it."""
        return {}

    @property
    def bound(self) -> bool:
        return self.ctx is not None

    def _require_bound(self) -> HarvestContext:
        if self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} has not seen a batch yet (bind() was never called)")
        return self.ctx

    @abstractmethod
    def update(self, batch: FiringBatch) -> None: ...

    @abstractmethod
    def merge(self, other: Accumulator) -> Accumulator: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def finalize(self) -> Mapping[int, Any]: ...

    def finalize_block(self, lo: int, hi: int) -> Mapping[int, Any]:
        """The outputs of components ``lo <= i < hi`` (global indices), for a streaming finalize.

        The loop asks for consecutive blocks and writes each straight to storage, so
        an override that builds only the block's outputs bounds finalize's memory by
        a block whatever N is. This default runs `finalize` once and hands its output
        out a block at a time (held until `finalize_done`), so an accumulator that
        only defines `finalize` keeps working.
        """
        cache = self.__dict__.get("_finalized_all")
        if cache is None:
            cache = self._finalized_all = dict(self.finalize())
        return {i: cache[i] for i in range(lo, hi) if i in cache}

    def finalize_done(self) -> None:
        """Called after the last block: drop what `finalize_block` kept."""
        self.__dict__.pop("_finalized_all", None)

    def finalize_shared(self) -> Any | None:
        """Output that belongs to the whole harvest rather than one component (optional).

        Saved as ``<harvest>/shared/<name>.json`` and available as ``result.shared[name]``.
        """
        return None

    def to(self, device: torch.device | str) -> Accumulator:
        """Move the state to ``device`` and rebind to a context on it. Overrides move
        their tensors and call ``super().to(device)``."""
        if self.ctx is not None:
            self.ctx = self.ctx.with_device(device)
        return self

    def _check_mergeable(self, other: Accumulator) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other.config() != self.config():
            raise ValueError(
                f"cannot merge {type(self).__name__} with config {other.config()} into one with {self.config()}"
            )
        if self.ctx is not None and other.ctx is not None and self.ctx.space != other.ctx.space:
            raise ValueError(f"cannot merge {type(self).__name__}s that saw different component spaces")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


_REDUCERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sum": lambda a, b: a.add_(b),
    "max": lambda a, b: torch.maximum(a, b, out=a),
    "min": lambda a, b: torch.minimum(a, b, out=a),
}


class TensorAccumulator(Accumulator):
    """An accumulator whose state is a few named tensors, each with a reduction.

    The base provides ``merge`` (the config and component-space checks, binding an
    unbound ``self``, then `merge_states`), ``state_dict``, ``load_state_dict``
    (missing states and shapes are errors) and ``to``. States that only merge
    together, like a sampler's keys and the windows they select, are declared with
    ``reduce=None`` and the class overrides `merge_states`; a state whose length
    grows with the data is declared ``fixed_shape=False`` (no shape check on load).

    Example, a per-component activation histogram (see docs/custom_accumulators.md)::

        class ActivationHistogramAcc(TensorAccumulator):
            name = "activation_histogram"

            def __init__(self, bins: int = 10, max_value: float = 1.0):
                self.bins, self.max_value = bins, max_value

            def config(self):
                return {"bins": self.bins, "max_value": self.max_value}

            def setup(self, ctx):
                self.add_state("hist", torch.zeros(ctx.n_components, self.bins, dtype=torch.int64))

            def update(self, batch):
                b = (batch.firing_act / self.max_value * self.bins).long().clamp(0, self.bins - 1)
                self.hist.view(-1).index_add_(0, batch.firing_comp * self.bins + b,
                                              torch.ones_like(b))

            def finalize(self):
                return dict(enumerate(self.hist.cpu().tolist()))
    """

    _state_names: list[str]
    _reductions: dict[str, str | None]
    _fixed_shape: dict[str, bool]

    def add_state(self, name: str, default: Tensor, reduce: str | None = "sum", *, fixed_shape: bool = True) -> None:
        """Declare the state tensor ``self.<name>``, put on the context's device.

        ``reduce``: how `merge` combines it elementwise (``"sum"``, ``"max"``,
        ``"min"``), or None when the class merges its states itself (`merge_states`).
        ``fixed_shape``: False when the tensor's length changes as data arrives.
        """
        if reduce is not None and reduce not in _REDUCERS:
            raise ValueError(f"reduce must be one of {sorted(_REDUCERS)} or None, got {reduce!r}")
        if not hasattr(self, "_state_names") or self._state_names is None:
            self._state_names, self._reductions, self._fixed_shape = [], {}, {}
        if name not in self._state_names:
            self._state_names.append(name)
        self._reductions[name] = reduce
        self._fixed_shape[name] = fixed_shape
        device = self.ctx.device if self.ctx is not None else default.device
        setattr(self, name, default.to(device))

    def _states(self) -> list[str]:
        return list(getattr(self, "_state_names", None) or [])

    def state_reductions(self) -> dict[str, tuple[str | None, bool]]:
        """``{state name: (reduce, fixed_shape)}`` as declared by `add_state`.

        `autointerp.distributed` all-reduces an accumulator whose every state has an
        elementwise reduction and a fixed shape; any other one merges by `merge_states`.
        """
        return {name: (self._reductions[name], self._fixed_shape[name]) for name in self._states()}

    def merge(self, other: Accumulator) -> TensorAccumulator:
        self._check_mergeable(other)
        assert isinstance(other, TensorAccumulator)
        if not other.bound:
            return self
        if not self.bound:
            self.bind(other._require_bound())
        self.merge_states({name: getattr(other, name).to(getattr(self, name).device) for name in self._states()})
        return self

    def merge_states(self, theirs: Mapping[str, Tensor]) -> None:
        """Fold another accumulator's states (already on this device) into this one's.

        The default reduces each state by its declared reduction; a class with
        ``reduce=None`` states overrides this.
        """
        for name in self._states():
            reduce = self._reductions[name]
            if reduce is None:
                raise NotImplementedError(
                    f"{type(self).__name__}.{name} was declared with reduce=None: override merge_states to merge it"
                )
            _REDUCERS[reduce](getattr(self, name), theirs[name])

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._states()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ctx = self._require_bound()
        missing = [n for n in self._states() if n not in state]
        if missing:
            raise KeyError(f"{type(self).__name__} state is missing {missing}")
        for name in self._states():
            mine: Tensor = getattr(self, name)
            theirs = state[name]
            if self._fixed_shape[name] and tuple(theirs.shape) != tuple(mine.shape):
                raise ValueError(
                    f"{type(self).__name__}.{name} has shape {tuple(theirs.shape)} in the saved state, "
                    f"expected {tuple(mine.shape)} (was it saved with another config than {self.config()}?)"
                )
            setattr(self, name, theirs.to(device=ctx.device, dtype=mine.dtype).clone())

    def to(self, device: torch.device | str) -> TensorAccumulator:
        for name in self._states():
            setattr(self, name, getattr(self, name).to(device))
        super().to(device)
        return self
