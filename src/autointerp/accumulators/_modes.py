"""Dense or bounded: how the token and co-firing tables choose their state.

``InputTokenAcc``, ``OutputProbAcc`` and ``CorrelationAcc`` each take
``mode="dense"|"bounded"|"auto"`` and ``summary_k``. Dense is the exact ``[N, V]``
or ``[N, N]`` table; bounded keeps a per-component heavy-hitter summary of
``summary_k`` counters (`autointerp.accumulators.heavy_hitters`) beside the exact
per-token and per-component totals. ``auto`` is dense unless the loop, before
allocating, calls ``choose_mode(ctx, budget_bytes)`` and the dense table does not
fit the budget. The requested mode stays in ``config()`` (so a resume or a
worker rebuilds the same accumulator), and ``mode_used`` says which one runs;
the state itself says which mode it is, so ``load_state_dict`` switches to the
mode of the state it is given, and ``merge`` of a dense and a bounded
accumulator (both ``auto``) turns the dense one into a summary first.
"""

from __future__ import annotations

from typing import Any

from autointerp.accumulators.base import HarvestContext

MODES = ("dense", "bounded", "auto")
#: counters per component in the bounded mode: the count error is at most firings / (k + 1)
DEFAULT_SUMMARY_K = 128
#: the states of the bounded mode (the heavy-hitter summary)
SUMMARY_STATES = ("hh_ids", "hh_counts", "hh_error")
#: the most a bounded table's buffer of pending batches is scaled up where the budget has room
MAX_BUFFER_SCALE = 4


class TableModes:
    """Mode handling shared by the three table accumulators (a mixin; the class supplies the bytes)."""

    mode: str
    summary_k: int
    _chosen: str | None = None
    _mode_used: str | None = None

    def _init_mode(self, mode: str, summary_k: int) -> None:
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}(mode={mode!r}): expected one of {', '.join(MODES)}")
        if not isinstance(summary_k, int) or summary_k < 1:
            raise ValueError(f"{type(self).__name__}(summary_k={summary_k!r}): expected an int >= 1 "
                             f"(counters per component in the bounded mode; default {DEFAULT_SUMMARY_K})")
        self.mode, self.summary_k = mode, summary_k

    def _mode_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "summary_k": self.summary_k}

    def dense_state_bytes(self, ctx: HarvestContext) -> int:
        raise NotImplementedError

    def bounded_state_bytes(self, ctx: HarvestContext) -> int:
        raise NotImplementedError

    def choose_mode(self, ctx: HarvestContext, budget_bytes: int | None) -> str:
        """The mode this accumulator will use for ``ctx`` under ``budget_bytes`` (call before `bind`).

        An explicit ``mode`` is kept whatever the budget (the loop's memory check
        then refuses what does not fit); ``auto`` is dense when the dense state
        fits the budget (or no budget is given), else bounded. The choice is
        remembered, so ``state_bytes`` and ``bind`` follow it.
        """
        if self.mode != "auto":
            return self.mode
        fits = budget_bytes is None or self.dense_state_bytes(ctx) <= budget_bytes
        self._chosen = "dense" if fits else "bounded"
        return self._chosen

    def resolved_mode(self) -> str:
        return self.mode if self.mode != "auto" else (self._chosen or "dense")

    @property
    def mode_used(self) -> str | None:
        """``"dense"`` or ``"bounded"`` once bound; None before."""
        return self._mode_used

    @property
    def bounded(self) -> bool:
        return self._mode_used == "bounded"

    def state_bytes(self, ctx: HarvestContext) -> int:
        """Bytes of the mode it would use (see `choose_mode`)."""
        if self.resolved_mode() == "bounded":
            return self.bounded_state_bytes(ctx)
        return self.dense_state_bytes(ctx)

    def _state_mode(self, state: Any) -> str:
        return "bounded" if "hh_ids" in state else "dense"


def _summary_merge(acc: Any, theirs: Any) -> None:
    from autointerp.accumulators.heavy_hitters import merge_summaries

    merge_summaries(acc.hh_ids, acc.hh_counts, acc.hh_error, theirs["hh_ids"], theirs["hh_counts"],
                    theirs["hh_error"], acc._summary_columns())
    for name in acc._states():
        if name not in SUMMARY_STATES:
            getattr(acc, name).add_(theirs[name])


class TableModeStates(TableModes):
    """The state plumbing of the two modes, for a `TensorAccumulator` subclass.

    The class implements ``_setup_mode(ctx, mode)`` (declare the states of that
    mode), ``_table_pairs()`` (its dense table as (rows, cols, weights)),
    ``summary_width(ctx)`` (V or N) and ``_summary_dtype``.
    """

    _summary_dtype: Any

    def setup(self, ctx: HarvestContext) -> None:
        self._switch_mode(ctx, self.resolved_mode())

    def _switch_mode(self, ctx: HarvestContext, mode: str) -> None:
        for name in getattr(self, "_state_names", None) or []:
            delattr(self, name)
        self._state_names = None  # type: ignore[assignment]
        self._pending_buffer().clear()
        self._mode_used = mode
        self._setup_mode(ctx, mode)

    def _flush(self) -> None:
        # a staged table (StagedTableAcc) exists only in the dense mode; the bounded
        # mode's pending batches are merged only by `_fold` (finalize and state_dict stay pure)
        parent = getattr(super(), "_flush", None)
        if parent is not None and not self.bounded:
            parent()

    def merge_pending(self) -> None:
        """Merge what waits in a buffer (the bounded mode's pending batches, the dense mode's float32
        staging buffer) into the state now. The accumulator does this by itself whenever it is needed;
        a benchmark calls it to time every merge of a run."""
        self._flush_table()

    def _flush_table(self) -> None:
        if self.bounded:
            self._fold()
        else:
            self._flush()

    # -- the bounded mode's pending batches ------------------------------------------
    #
    # Each batch's firings and X rows wait in a `PendingProducts` buffer of about
    # N * k entries and are merged into the summary at once (see heavy_hitters):
    # the per-batch cost then grows with the batch's firings, not with N. The
    # buffer is merged when full, before a merge or a device move, and into a copy
    # for ``state_dict`` and finalize (which stay pure).

    #: drop a row's own column (co-firing of a component with itself)
    _exclude_self = False

    def _pending_buffer(self) -> Any:
        from autointerp.accumulators.heavy_hitters import PendingProducts

        if "_pending" not in self.__dict__:
            self._pending = PendingProducts()
        return self._pending

    #: the buffer merges when it holds ``buffer_scale x N x summary_k`` entries. A merge costs its
    #: entries plus a pass over ``rows x summary width`` (co-firing: N wide), so a larger buffer pays
    #: that pass less often; the loop raises the scale where its memory plan has room
    #: (`HarvestLoop.check_memory`, up to ``MAX_BUFFER_SCALE``). The summary's bound is the same at any scale.
    buffer_scale: int = 1

    def _pending_capacity(self, n_components: int) -> int:
        return max(n_components * self.summary_k * self.buffer_scale, 1 << 16)

    def pending_bytes(self, ctx: HarvestContext) -> int:
        """The most the bounded mode's buffer of pending batches holds, in bytes."""
        from autointerp.accumulators.heavy_hitters import PENDING_ENTRY_BYTES

        return PENDING_ENTRY_BYTES * self._pending_capacity(ctx.n_components)

    def summary_width(self, ctx: HarvestContext) -> int:
        """The columns the summary counts over (V for the token tables, N for co-firing)."""
        raise NotImplementedError

    def _summary_columns(self) -> int:
        return self.summary_width(self._require_bound())  # type: ignore[attr-defined]

    def merge_bytes(self, ctx: HarvestContext) -> int:
        """Working memory of one merge of the pending batches (0 in the dense mode); the loop's memory
        check adds the largest accumulator's (one merges at a time)."""
        if self.resolved_mode() != "bounded":
            return 0
        from autointerp.accumulators.heavy_hitters import merge_working_bytes

        return merge_working_bytes(ctx.n_components, self.summary_width(ctx), self._pending_capacity(ctx.n_components))

    def _stage_product(self, comp: Any, pos: Any, X: Any) -> None:
        """Buffer a batch's firings ``(comp, pos)`` and its CSR ``X [P, M]`` (kept compactly: `PendingProducts.add`)."""
        pending = self._pending_buffer()
        pending.add(comp, pos, X)
        if pending.entries >= self._pending_capacity(self.hh_ids.shape[0]):
            self._fold()

    def _merge_pending_into(self, ids: Any, counts: Any, error: Any) -> None:
        self._pending_buffer().merge_into(ids, counts, error, exclude_self=self._exclude_self)

    def _fold(self) -> None:
        if len(self._pending_buffer()):
            self._merge_pending_into(self.hh_ids, self.hh_counts, self.hh_error)
            self._pending.clear()

    def _block_summary(self) -> tuple[Any, Any, Any]:
        """`_summary`, merged once for all the blocks of one finalize (dropped by `finalize_done`)."""
        cached = self.__dict__.get("_finalize_summary")
        if cached is None:
            cached = self._finalize_summary = self._summary()
        return cached

    def finalize_done(self) -> None:
        self.__dict__.pop("_finalize_summary", None)
        super().finalize_done()  # type: ignore[misc]

    def _summary(self) -> tuple[Any, Any, Any]:
        """(ids, counts, error) with the pending batches merged in, leaving the state as it is."""
        if not len(self._pending_buffer()):
            return self.hh_ids, self.hh_counts, self.hh_error
        ids, counts, error = self.hh_ids.clone(), self.hh_counts.clone(), self.hh_error.clone()
        self._merge_pending_into(ids, counts, error)
        return ids, counts, error

    def state_dict(self) -> dict[str, Any]:
        from autointerp.accumulators.heavy_hitters import canonical

        state = super().state_dict()  # type: ignore[misc]
        if self.bounded:
            state = dict(state)
            ids, counts, state["hh_error"] = self._summary()
            state["hh_ids"], state["hh_counts"] = canonical(ids, counts)
        return state

    def to(self, device: Any) -> Any:
        if self.bounded:
            self._fold()
        return super().to(device)  # type: ignore[misc]

    def _summary_state(self) -> dict[str, Any]:
        """This accumulator's state in the bounded mode's layout (the dense table summarised exactly: error 0
        for rows with at most ``summary_k`` columns)."""
        from autointerp.accumulators.heavy_hitters import HeavyHitters

        self._flush_table()
        if self.bounded:
            return {name: getattr(self, name) for name in self._states()}
        ctx = self._require_bound()
        hh = HeavyHitters.empty(ctx.n_components, self.summary_k, self._summary_columns(), self._summary_dtype,
                                ctx.device)
        hh.add(*self._table_pairs())
        out = {"hh_ids": hh.ids, "hh_counts": hh.counts, "hh_error": hh.error}
        out.update({name: getattr(self, name) for name in self._states() if name not in self._dense_only()})
        return out

    def _dense_only(self) -> tuple[str, ...]:
        return (self.staged_table,) if hasattr(self, "staged_table") else ("joint",)

    def _become_bounded(self) -> None:
        state = self._summary_state()
        self._switch_mode(self._require_bound(), "bounded")
        for name in self._states():
            setattr(self, name, state[name].clone())

    def merge(self, other: Any) -> Any:
        self._check_mergeable(other)  # type: ignore[attr-defined]
        if not other.bound:
            return self
        if not self.bound:  # type: ignore[attr-defined]
            if self.mode == "auto" and other.mode_used:
                self._chosen = other.mode_used
            self.bind(other._require_bound())  # type: ignore[attr-defined]
        self._flush_table()
        other._flush_table()
        if other.mode_used == self.mode_used:
            theirs = {name: getattr(other, name) for name in self._states()}  # type: ignore[attr-defined]
        else:
            # a dense table cannot take in a summary exactly: both become summaries
            if not self.bounded:
                self._become_bounded()
            theirs = other._summary_state()
        device = self.hh_ids.device if self.bounded else getattr(self, self._dense_only()[0]).device  # type: ignore[attr-defined]
        self.merge_states({n: t.to(device) for n, t in theirs.items()})  # type: ignore[attr-defined]
        return self

    def merge_states(self, theirs: Any) -> None:
        if self.bounded:
            _summary_merge(self, theirs)
        else:
            super().merge_states(theirs)  # type: ignore[misc]

    def load_state_dict(self, state: Any) -> None:
        ctx = self._require_bound()  # type: ignore[attr-defined]
        mode = self._state_mode(state)
        if mode != self.mode_used:
            self._switch_mode(ctx, mode)
        self._pending_buffer().clear()
        super().load_state_dict(state)  # type: ignore[misc]
