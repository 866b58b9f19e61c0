"""In-file models: what the file being compressed teaches about itself, applied to the network's tables.

A model frame's flags say which run (docs/format.md); they live for one frame and learn each byte after
the step that coded it, in lane order, so the decoder rebuilds the same tables:

- `match`: long repeats beyond the network's attention window (flag MATCH_MODEL);
- `context_counts`: the frame's own byte counts after short contexts, blended into the table (flag
  CONTEXT_COUNTS, or CONTEXT_COUNTS_2 for the second version that the writer uses).
"""

from __future__ import annotations

import numpy as np

from shazip.format import FrameFlag


class InFileModels:
    """The in-file models of one model frame, as its flags ask: the engine's tables go through the match
    model, then the context counts (either version), to the coder. `grid[t, lane]` is byte t of each lane
    (filled up front by the encoder, step by step by the decoder)."""

    def __init__(self, grid: np.ndarray, run: int, full: int, rest: int, flags: int) -> None:
        # (numba kernels: imported only when a model frame is coded)
        from shazip.infile.context_counts import ContextCounts, ContextCounts2
        from shazip.infile.match import MatchModel

        self.match = MatchModel(grid, run, full, rest) if flags & FrameFlag.MATCH_MODEL else None
        self.counts: ContextCounts | ContextCounts2 | None = None
        if flags & FrameFlag.CONTEXT_COUNTS_2:
            self.counts = ContextCounts2(grid)
        elif flags & FrameFlag.CONTEXT_COUNTS:
            self.counts = ContextCounts(grid)

    def tables(self, t: int, freqs: np.ndarray, active: int) -> np.ndarray:
        """Step t's tables for the coder: float64 [active, 256], exact integers (the range coder's input)."""
        rows = freqs if self.match is None else self.match.tables(freqs, active)
        if self.counts is not None:
            return self.counts.tables(t, rows, active)
        return np.ascontiguousarray(rows[:active], dtype=np.float64)

    def update(self, t: int, active: int) -> None:
        """Learn step t's bytes (grid[t, :active])."""
        if self.match is not None:
            self.match.update(t, active)
        if self.counts is not None:
            self.counts.update(t, active)
