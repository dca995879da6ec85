"""A conformance check for accumulators: run it on your own class before you trust it.

Like torchmetrics' metric tester, `check_accumulator` feeds the same batches to
fresh instances of an accumulator in several ways and checks that the protocol
holds (see ``docs/custom_accumulators.md``):

* **merge equals one pass**: for several split points, the batches before and
  after the split go to two accumulators, the second is merged into the first,
  and the result (``state_dict`` and ``finalize``) equals one that saw them all;
  merging with an accumulator that saw nothing changes nothing;
* **state round trip**: ``load_state_dict(state_dict())`` into a fresh
  accumulator, also through ``torch.save``/``torch.load``, gives the same state
  and the same output;
* **finalize is pure**: calling it twice gives equal outputs and leaves the state
  untouched, and an update after finalize goes on as if finalize never ran;
* **output fits the harvest**: ``finalize`` returns ``{flat index: value}`` with
  indices of real components and values the storage layer can save as JSON;
  ``state_bytes`` is a non-negative int;
* **devices and contexts**: the state sits on ``ctx.device`` after ``bind`` and
  after ``load_state_dict``; ``to(device)`` keeps the output and rebinds the
  accumulator to a context on that device; of two accumulators bound to one
  context, moving one (to ``meta``) leaves the other's context, state and output
  alone.

Integer tensors and integers must match exactly; floats within ``rtol``/``atol``
(a float32 sum depends on where a stream was split).

>>> from autointerp import FiringStatsAcc
>>> from autointerp.testing import check_accumulator
>>> check_accumulator(FiringStatsAcc, batches)      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from autointerp.accumulators.base import Accumulator, HarvestContext
from autointerp.batch import ComponentSpace, FiringBatch, HarvestBatch
from autointerp.storage import to_dict


class ConformanceError(AssertionError):
    """An accumulator broke the protocol. The message names the check and the first difference."""


def check_accumulator(
    factory: Callable[[], Accumulator],
    batches: Sequence[HarvestBatch],
    *,
    threshold: float = 0.0,
    seed: int = 0,
    vocab_size: int | None = None,
    device: str | torch.device = "cpu",
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Raise `ConformanceError` unless the accumulator built by ``factory()`` follows the protocol.

    ``factory`` returns a fresh, unbound accumulator (a class with default
    arguments will do). ``batches`` is a list of at least two `HarvestBatch`es
    with the same layers; give some firings, and ideally a mask, so the check
    has something to compare.
    """
    batches = list(batches)
    if len(batches) < 2:
        raise ValueError(f"check_accumulator needs at least 2 batches to split, got {len(batches)}")
    first = batches[0]
    space = ComponentSpace.from_activations(first.activations)
    if vocab_size is None and first.output_probs is not None:
        vocab_size = int(first.output_probs.shape[-1])
    device = torch.device(device)
    ctx = HarvestContext(space, vocab_size, device, seed, float(threshold))
    firing = _firing_batches(batches, space, threshold, vocab_size, device)
    name = type(factory()).__name__

    def fresh() -> Accumulator:
        acc = factory()
        if not isinstance(acc, Accumulator):
            raise ConformanceError(f"factory() must return an Accumulator, got {type(acc).__name__}")
        if acc.bound:
            raise ConformanceError(f"{name}: factory() returned an accumulator that is already bound")
        acc.bind(ctx)
        return acc

    def run(parts: Sequence[FiringBatch]) -> Accumulator:
        acc = fresh()
        for fb in parts:
            acc.update(fb)
        return acc

    def same(what: str, got: Any, want: Any) -> None:
        problem = _difference(got, want, rtol, atol)
        if problem is not None:
            raise ConformanceError(f"{name}: {what}: {problem}")

    # -- the static contract
    nbytes = factory().state_bytes(ctx)
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ConformanceError(f"{name}: state_bytes(ctx) must return a non-negative int, got {nbytes!r}")
    if not factory().name:
        raise ConformanceError(f"{name}: set a class attribute `name` (where the output lands in ComponentData)")

    # -- one pass, and finalize is pure
    whole = run(firing)
    want_state = _snapshot(whole.state_dict())
    want_out = whole.finalize()
    _check_output(name, want_out, space.n_components)
    same("finalize() changed the state (it must be pure)", _snapshot(whole.state_dict()), want_state)
    same("a second finalize() differs from the first", whole.finalize(), want_out)

    # -- update after finalize goes on as if finalize had not run
    more = run(firing[:-1])
    more.finalize()
    more.update(firing[-1])
    same("update after finalize() differs from never finalizing (state)", _snapshot(more.state_dict()), want_state)

    # -- split then merge equals one pass
    for split in sorted({1, len(firing) // 2, len(firing) - 1}):
        left, right = run(firing[:split]), run(firing[split:])
        returned = left.merge(right)
        if returned is not left:
            raise ConformanceError(f"{name}: merge() must return self, got {type(returned).__name__}")
        same(f"merge of batches [:{split}] and [{split}:] differs from one pass (state)",
             _snapshot(left.state_dict()), want_state)
        same(f"merge of batches [:{split}] and [{split}:] differs from one pass (finalize)",
             left.finalize(), want_out)

    # -- merging with an accumulator that saw nothing
    acc = run(firing)
    acc.merge(factory())
    same("merging an unbound accumulator changed the state", _snapshot(acc.state_dict()), want_state)
    acc = run(firing)
    acc.merge(fresh())
    same("merging an empty bound accumulator changed the state", _snapshot(acc.state_dict()), want_state)
    empty = factory()
    empty.merge(run(firing))
    if not empty.bound:
        raise ConformanceError(f"{name}: merging into an unbound accumulator must bind it (call bind(other.ctx))")
    same("merge into an unbound accumulator differs from one pass", empty.finalize(), want_out)

    # -- state round trips, in memory and through torch.save
    loaded = fresh()
    loaded.load_state_dict(run(firing).state_dict())
    same("load_state_dict(state_dict()) differs (state)", _snapshot(loaded.state_dict()), want_state)
    same("load_state_dict(state_dict()) differs (finalize)", loaded.finalize(), want_out)
    buf = io.BytesIO()
    torch.save(run(firing).state_dict(), buf)
    buf.seek(0)
    loaded = fresh()
    loaded.load_state_dict(torch.load(buf, map_location=device, weights_only=False))
    same("state_dict() through torch.save/torch.load differs", loaded.finalize(), want_out)
    # resume: half the stream, a round trip, then the rest
    half = len(firing) // 2
    resumed = fresh()
    resumed.load_state_dict(run(firing[:half]).state_dict())
    for fb in firing[half:]:
        resumed.update(fb)
    same("resume from state_dict() then update differs from one pass", resumed.finalize(), want_out)

    # -- state lives on the accumulator's own device, after bind and after a round trip
    _check_on_device(name, "after bind()", fresh(), device)
    _check_on_device(name, "after load_state_dict()", loaded, device)

    # -- a device move keeps the state
    moved = run(firing)
    if moved.to(device) is None:
        raise ConformanceError(f"{name}: to(device) must return the accumulator, got None")
    if moved.ctx is None or moved.ctx.device != device:
        raise ConformanceError(f"{name}: after to({device}) ctx.device is {_ctx_device(moved)}, expected {device}")
    same(f"to({device}) changed the output", moved.finalize(), want_out)

    # -- each accumulator has its own context: moving one leaves another bound to the same context alone
    one, other = factory(), factory()
    one.bind(ctx)
    other.bind(ctx)
    for fb in firing:
        one.update(fb)
        other.update(fb)
    meta = torch.device("meta")  # a device other than the harvest's that allocates nothing
    try:
        one.to(meta)
    except Exception as e:  # noqa: BLE001 - reported as the protocol failure it is
        raise ConformanceError(f"{name}: to('meta') raised {type(e).__name__}: {e}") from e
    if one.ctx is None or one.ctx.device != meta:
        raise ConformanceError(
            f"{name}: after to('meta') ctx.device is {_ctx_device(one)}, expected meta; "
            "an override of to() must call super().to(device), which rebinds the context"
        )
    _check_on_device(name, "after to('meta')", one, meta)
    if ctx.device != device or other.ctx is None or other.ctx.device != device:
        raise ConformanceError(
            f"{name}: moving one accumulator to meta moved the context of another bound to the same context "
            f"(its ctx.device is {_ctx_device(other)}, expected {device}); rebind a copy, never change ctx in place"
        )
    _check_on_device(name, "of an accumulator that was not moved", other, device)
    same("moving another accumulator changed this one's output", other.finalize(), want_out)


def _ctx_device(acc: Accumulator) -> str:
    return "unbound" if acc.ctx is None else str(acc.ctx.device)


def _tensors(state: Any, where: str = "") -> Iterator[tuple[str, Tensor]]:
    if isinstance(state, Tensor):
        yield where, state
    elif isinstance(state, Mapping):
        for k, v in state.items():
            yield from _tensors(v, f"{where}[{k!r}]")
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            yield from _tensors(v, f"{where}[{i}]")


def _check_on_device(name: str, when: str, acc: Accumulator, device: torch.device) -> None:
    for where, t in _tensors(acc.state_dict()):
        if t.device.type != device.type or (device.index is not None and t.device != device):
            raise ConformanceError(f"{name}: state_dict(){where} is on {t.device} {when}, expected {device}")


def _firing_batches(
    batches: Sequence[HarvestBatch], space: ComponentSpace, threshold: float, vocab_size: int | None,
    device: torch.device,
) -> list[FiringBatch]:
    out, rows = [], 0
    for i, b in enumerate(batches):
        b = b.to(device)
        try:
            b.validate(vocab_size)
            space.check_batch(b.activations)
        except ValueError as e:
            raise ValueError(f"batches[{i}] is not a valid HarvestBatch: {e}") from None
        B = b.tokens.shape[0]
        seq = b.sequence_ids if b.sequence_ids is not None else torch.arange(rows, rows + B, device=device)
        out.append(FiringBatch.from_batch(b, space, threshold, seq, vocab_size))
        rows += B
    return out


def _snapshot(state: Mapping[str, Any]) -> Any:
    """A deep copy of a state dict (tensors cloned), so later updates cannot change it."""
    def copy_(x: Any) -> Any:
        if isinstance(x, Tensor):
            return x.detach().clone()
        if isinstance(x, Mapping):
            return {k: copy_(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(copy_(v) for v in x)
        return copy.deepcopy(x)

    return copy_(state)


def _check_output(name: str, out: Any, n_components: int) -> None:
    if not isinstance(out, Mapping):
        raise ConformanceError(f"{name}: finalize() must return a mapping {{flat index: value}}, got {type(out).__name__}")
    for idx, value in out.items():
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n_components:
            raise ConformanceError(
                f"{name}: finalize() returned key {idx!r}; keys must be flat component indices in [0, {n_components})"
            )
        try:
            json.dumps(to_dict(value), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConformanceError(
                f"{name}: finalize()[{idx}] cannot be saved as JSON ({e}); return plain numbers, "
                "strings, lists, dicts or attrs classes (call .tolist() on tensors)"
            ) from None


def _difference(got: Any, want: Any, rtol: float, atol: float, where: str = "") -> str | None:
    """None if equal (floats within tolerance), else a description of the first difference."""
    at = where or "value"
    if attrs.has(type(want)) and not isinstance(want, type):
        if type(got) is not type(want):
            return f"{at}: got a {type(got).__name__}, expected a {type(want).__name__}"
        return _difference(to_dict(got), to_dict(want), rtol, atol, where)
    if isinstance(want, Tensor):
        if not isinstance(got, Tensor):
            return f"{at}: got {type(got).__name__}, expected a tensor"
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"{at}: got a {tuple(got.shape)} {got.dtype} tensor, expected {tuple(want.shape)} {want.dtype}"
        g, w = got.detach().cpu(), want.detach().cpu()
        if w.is_floating_point():
            if not torch.allclose(g.double(), w.double(), rtol=rtol, atol=atol, equal_nan=True):
                worst = int(((g.double() - w.double()).abs().nan_to_num(0)).argmax()) if w.numel() else 0
                return (f"{at}: tensors differ beyond rtol={rtol}, atol={atol}; e.g. flat element {worst}: "
                        f"got {g.reshape(-1)[worst].item()}, expected {w.reshape(-1)[worst].item()}")
        elif not torch.equal(g, w):
            n_bad = int((g != w).sum())
            worst = int((g != w).reshape(-1).nonzero()[0])
            return (f"{at}: {n_bad} elements differ (exact match required for {w.dtype}); e.g. flat element "
                    f"{worst}: got {g.reshape(-1)[worst].item()}, expected {w.reshape(-1)[worst].item()}")
        return None
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{at}: got {type(got).__name__}, expected a mapping"
        if set(got) != set(want):
            extra, missing = sorted(map(str, set(got) - set(want))), sorted(map(str, set(want) - set(got)))
            return f"{at}: keys differ (unexpected {extra[:5]}, missing {missing[:5]})"
        for k in want:
            problem = _difference(got[k], want[k], rtol, atol, f"{where}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
            return f"{at}: got length {n}, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _difference(g, w, rtol, atol, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isnan(want) and math.isnan(got):
            return None
        if not math.isclose(got, want, rel_tol=rtol, abs_tol=atol):
            return f"{at}: got {got!r}, expected {want!r}"
        return None
    if got != want:
        return f"{at}: got {got!r}, expected {want!r}"
    return None
