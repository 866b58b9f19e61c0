"""Per-lane engine state: LSTM state per block, the attention ring, each lane's current table.

The arrays are numpy arrays (the numba backend, CPU, no torch needed) or torch tensors (the torch
reference, on any device); the same methods work on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _is_tensor(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def _copy(a: Any) -> Any:
    return a.clone() if _is_tensor(a) else a.copy()


def _take(a: Any, lanes: np.ndarray) -> Any:
    if _is_tensor(a):
        import torch

        return a[torch.as_tensor(lanes, device=a.device)].clone()
    return a[lanes].copy()


def _concat(parts: list[Any]) -> Any:
    if _is_tensor(parts[0]):
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


@dataclass
class EngineState:
    """The state of `lanes` independent lanes (see `shazip.engine.Engine`)."""

    h8: list[Any]  # per block [lanes, d] int8: h quantised with scale 1/127 (the recurrent input)
    cell: list[Any]  # per block [lanes, d] int32, Q15
    ring: Any  # [lanes, memory + 1, d] int8: the attention block's memory vectors, a ring per lane
    written: Any  # [lanes] int64: positions written into the ring so far
    freqs: Any  # [lanes, 256] int32: each lane's next-byte table
    # the numba backend's helper threads bound to these arrays, with the key they were made for (not copied)
    crew: Any = field(default=None, repr=False, compare=False)

    @property
    def lanes(self) -> int:
        return int(self.freqs.shape[0])

    def arrays(self) -> tuple:
        """(h8, cell, ring, written, freqs) with tuples for the per-block lists, as the kernels take them."""
        return tuple(self.h8), tuple(self.cell), self.ring, self.written, self.freqs

    def copy(self) -> EngineState:
        return EngineState(
            h8=[_copy(a) for a in self.h8],
            cell=[_copy(a) for a in self.cell],
            ring=_copy(self.ring),
            written=_copy(self.written),
            freqs=_copy(self.freqs),
        )

    def select(self, lanes: list[int] | np.ndarray) -> EngineState:
        """A new state holding copies of the given lanes, in that order."""
        idx = np.asarray(lanes, dtype=np.int64)
        return EngineState(
            h8=[_take(a, idx) for a in self.h8],
            cell=[_take(a, idx) for a in self.cell],
            ring=_take(self.ring, idx),
            written=_take(self.written, idx),
            freqs=_take(self.freqs, idx),
        )

    @staticmethod
    def concat(states: list[EngineState]) -> EngineState:
        """Lanes of several states, one after another."""
        blocks = len(states[0].h8)
        return EngineState(
            h8=[_concat([s.h8[i] for s in states]) for i in range(blocks)],
            cell=[_concat([s.cell[i] for s in states]) for i in range(blocks)],
            ring=_concat([s.ring for s in states]),
            written=_concat([s.written for s in states]),
            freqs=_concat([s.freqs for s in states]),
        )
