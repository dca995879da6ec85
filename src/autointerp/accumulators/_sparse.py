"""Sparse firing products, staged in float32, shared by the co-firing and output-token tables.

Both tables grow by ``Fᵀ X`` per batch, where ``F [P, N]`` is the 0/1 firing
indicator (sparse: a list of firings) and ``X [P, M]`` is dense (the firing
indicator itself, or the output probabilities). Two things make this fast on a
CPU while keeping the tables exact:

* **CSR, in column blocks.** ``F`` is built as a CSR matrix with components as
  rows, and multiplied into column blocks of the output small enough to stay in
  cache (``CPU_BLOCK_BYTES`` per block). On the benchmark's 2-core machine one
  unblocked product is memory-bound; blocking made it ~2-4x faster. On a GPU
  there is one block (cuSPARSE does its own tiling).
* **Staged in float32.** Each product is added in place (``addmm_``, no
  temporary) into a float32 buffer, which is folded into the int64 / float64
  table only when ``bound`` -- an upper bound on the firings of any one component
  the buffer holds -- would pass ``limit``. For counts the limit is 2^24, below
  which float32 sums of integers are exact; for probability mass it bounds the
  float32 rounding to that of a sum of ``limit`` terms.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from autointerp.accumulators.base import Accumulator, TensorAccumulator

#: on a CPU, each column block of the staging buffer holds about this many bytes
CPU_BLOCK_BYTES = 1 << 20
#: ... but never fewer columns than this (a block per handful of columns costs more in calls than it saves)
MIN_BLOCK_COLUMNS = 64


def firing_csr(comp: Tensor, pos: Tensor, n_components: int, n_positions: int) -> Tensor:
    """Sparse CSR ``[N, P]`` float32 matrix with a 1 at every (component, position) firing."""
    order = torch.argsort(comp, stable=True)
    counts = torch.bincount(comp, minlength=n_components)
    crow = torch.zeros(n_components + 1, dtype=torch.int64, device=comp.device)
    torch.cumsum(counts, 0, out=crow[1:])
    vals = torch.ones(comp.shape[0], dtype=torch.float32, device=comp.device)
    # torch warns that CSR is "beta"; the two ops we use (construction and addmm_
    # with a dense operand) are tested against a brute-force reference
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, pos[order], vals, (n_components, n_positions), check_invariants=False)


def block_columns(n_rows: int, n_columns: int, device: torch.device) -> int:
    """Columns per block: the whole width on a GPU, about ``CPU_BLOCK_BYTES`` of float32 rows on a CPU."""
    if device.type != "cpu":
        return max(n_columns, 1)
    width = CPU_BLOCK_BYTES // (4 * max(n_rows, 1)) // MIN_BLOCK_COLUMNS * MIN_BLOCK_COLUMNS
    return max(MIN_BLOCK_COLUMNS, min(max(n_columns, 1), width))


class StagedSum:
    """A float32 buffer ``[N, M]``, in column blocks, that collects ``Fᵀ X`` before it joins a table."""

    def __init__(self, shape: tuple[int, int], device: torch.device, limit: int):
        N, M = shape
        width = block_columns(N, M, torch.device(device))
        self.columns = [(a, min(M, a + width)) for a in range(0, M, width)]
        self.blocks = [torch.zeros(N, b - a, dtype=torch.float32, device=device) for a, b in self.columns]
        self.n_rows = N
        self.limit = limit
        self.bound = 0

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.blocks)

    def add(self, table: Tensor, comp: Tensor, pos: Tensor, n_positions: int,
            dense: Callable[[int, int], Tensor]) -> None:
        """Stage ``Fᵀ X`` for the firings (comp, pos); ``dense(a, b)`` returns ``X[:, a:b]``, contiguous float32."""
        if not comp.numel():
            return
        most = int(torch.bincount(comp, minlength=self.n_rows).max())
        if self.bound and self.bound + most > self.limit:
            self.flush_into(table)
        F = firing_csr(comp, pos, self.n_rows, n_positions)
        for (a, b), block in zip(self.columns, self.blocks):
            block.addmm_(F, dense(a, b))
        self.bound += most

    def flush_into(self, table: Tensor) -> None:
        """table += buffer (rounded for integer tables), then empty the buffer."""
        if not self.bound:
            return
        for (a, b), block in zip(self.columns, self.blocks):
            part = table[:, a:b]
            part += block if table.is_floating_point() else block.round_().to(table.dtype)
            block.zero_()
        self.bound = 0

    def reset(self) -> None:
        for block in self.blocks:
            block.zero_()
        self.bound = 0

    def to(self, device: torch.device | str) -> None:
        self.blocks = [b.to(device) for b in self.blocks]


class StagedTableAcc(TensorAccumulator):
    """A `TensorAccumulator` whose big table (the state named ``staged_table``) grows
    through a `StagedSum` held in ``self._staged``: the buffer is folded into the
    table before the state is read, merged or moved, so the table is always whole."""

    staged_table: ClassVar[str]
    _staged: StagedSum

    def _flush(self) -> None:
        if self.bound:
            self._staged.flush_into(getattr(self, self.staged_table))

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return super().state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._staged.reset()

    def merge(self, other: Accumulator) -> StagedTableAcc:
        self._flush()
        if isinstance(other, StagedTableAcc):
            other._flush()
        super().merge(other)
        return self

    def to(self, device: torch.device | str) -> StagedTableAcc:
        super().to(device)
        if self.bound:
            self._staged.to(device)
        return self
