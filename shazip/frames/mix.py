"""Method mix, version 1: the mixing model over the network's tables, coded by the binary arithmetic
coder, in lanes (docs/format.md, "Mixing frames")."""

from __future__ import annotations

import numpy as np

from shazip.format import FrameFlag, FrameHeader, Method, StreamHeader
from shazip.frames.base import Coded, FrameJob, FrameMethod, network_of
from shazip.frames.network import Layout, empty_grid, grid_bytes, scaled, text_grid


class Mix(FrameMethod):
    method = Method.MIX
    uses_network = True
    uses_lanes = True
    flags = int(FrameFlag.CRLF_AS_LF)

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        from shazip.mixing import MixingCoder, StopFrame

        network = network_of(job, 0)
        grid, n, flags, prefix = text_grid(raw, job.lanes)
        mixing = MixingCoder(grid.shape[1], n, grid, limit=limit - len(prefix))
        stopped = False

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            if stopped:
                return None

            def learn() -> None:  # (the mixing model codes the step while the engine's helpers start on it)
                nonlocal stopped
                try:
                    mixing.step(t, active, layout, tables[:active])
                except StopFrame:
                    stopped = True

            return grid[t, :active], learn

        if not network.steps(grid, n, code, scaled(job.progress, len(raw), n)) or stopped:
            return None
        try:
            return Coded(prefix + mixing.payload(), job.lanes, flags)
        except StopFrame:
            return None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        from shazip.mixing import MixingCoder

        network = network_of(job, index)
        grid, n, body = empty_grid(payload, frame.raw_size, frame.lanes, frame.flags, index)
        mixing = MixingCoder(grid.shape[1], n, grid, payload=body, index=index)

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            mixing.step(t, active, layout, tables[:active])
            return grid[t, :active], None

        network.steps(grid, n, code, scaled(job.progress, frame.raw_size, n))
        return grid_bytes(grid, n, frame.raw_size, frame.flags, index)

    def reader_bytes(self, header: StreamHeader) -> int:
        from shazip.mixing import state_bytes

        return state_bytes(header.lanes, header.frame_size)


MIX_V1 = Mix()
