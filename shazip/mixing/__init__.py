"""Mixing frames (methods MIX and CM, docs/format.md): binary context mixing that learns the frame, over
the network's prediction (MIX) or without it (CM), coded by this package's binary arithmetic coder.

    MixingCoder(lanes, raw_size, grid, payload=None, limit=None)   one frame's model and coder state
        .step(t, active, layout, tables)   code step t of the active lanes (tables: the network's, MIX)
        .payload()                          the encoder's bytes
    encode_cm(raw, limit) -> bytes | None   a whole CM frame (one lane), None if not under `limit` bytes
    decode_cm(payload, raw_size, index) -> bytes
    state_bytes(lanes, raw_size) -> int     the memory one frame's model takes (no numba needed)
"""

from __future__ import annotations

import numpy as np

from shazip.format import ChecksumError

# The model's sizes, for state_bytes (tests check them against shazip.mixing.model, which compiles).
_CONTEXTS, _INPUTS, _WEIGHT_ROWS, _FINAL_ROWS, _APM_BINS = 15, 35, 512 + 1024 + 64, 64, 33
_LANE_BYTES = 8 * (3 + 6 + 512 + _CONTEXTS + 2 * _CONTEXTS)


def table_bits(raw_size: int) -> int:
    """log2 of the hashed tables' entries for a frame of raw_size bytes: about two per byte, 2^12..2^20."""
    return min(20, max(12, raw_size.bit_length() + 1))


def state_bytes(lanes: int, raw_size: int) -> int:
    """The bytes `shazip.mixing.model.new_state(lanes, raw_size)` allocates."""
    b = table_bits(raw_size)
    a = min(b, 16)
    hashed = _CONTEXTS * (1 << b) * (16 + 4) + (1 << b) * 8  # slots, runs; the match table
    fixed = _CONTEXTS * (2048 + 256) * 8 + 128 * 8 + (_WEIGHT_ROWS * _INPUTS + _FINAL_ROWS * 3) * 8
    return hashed + fixed + 4 * (1 << a) * _APM_BINS * 4 + lanes * _LANE_BYTES


class StopFrame(Exception):
    """The encoder's payload reached the size to beat: the frame is abandoned."""


class MixingCoder:
    """The mixing model and the arithmetic coder of one frame laid out in grid ([run, lanes], step-major:
    filled by the encoder, filled step by step by the decoder). Decoding when `payload` is given."""

    def __init__(
        self,
        lanes: int,
        raw_size: int,
        grid: np.ndarray,
        payload: bytes | None = None,
        limit: int | None = None,
        index: int = 0,
    ) -> None:
        from shazip.mixing import coder, model

        self._model = model
        self.state = model.new_state(lanes, raw_size)
        self.grid = grid
        self.index = index
        self.decoding = payload is not None
        if self.decoding:
            self.buf = np.frombuffer(payload, dtype=np.uint8).copy()  # (one array type for both directions)
            self.coder = coder.new_decoder(self.buf)
        else:
            # (without a limit: room for data the model cannot predict, which costs it a little over 8 bits)
            capacity = raw_size + raw_size // 64 + 64 if limit is None else max(0, limit - 1)
            self.coder, self.buf = coder.new_encoder(capacity)
        self._finish = coder.finish_encoder

    def step(self, t: int, active: int, layout: tuple[int, int, int], tables: np.ndarray | None) -> None:
        """Code step t of lanes 0..active-1 (layout: run, full, rest) with the network's tables, or
        without the network when tables is None. Raises StopFrame or ChecksumError."""
        network = tables is not None
        if tables is None:
            tables = np.ones((active, 256), dtype=np.int32)
        run, full, rest = layout
        code = self._model.code_step(
            self.state, self._model.KINDS, self.grid, t, active, run, full, rest, tables, network,
            self.decoding, self.coder, self.buf,
        )  # fmt: skip
        self._check(code)

    def code_frame(self) -> None:
        """The whole frame at once (one lane, no network)."""
        self._check(
            self._model.code_frame(
                self.state, self._model.KINDS, self.grid, self.decoding, self.coder, self.buf
            )
        )

    def _check(self, code: int) -> None:
        if code == -1:
            raise ChecksumError(f"corrupt frame {self.index} (mixing payload ends early)")
        if code == -2:
            raise StopFrame

    def payload(self) -> bytes:
        size = self._finish(self.coder, self.buf)
        if size < 0:
            raise StopFrame
        return self.buf[:size].tobytes()


def encode_cm(raw: bytes, limit: int | None = None) -> bytes | None:
    """A CM frame's payload (the mixing model alone, one lane), or None if it would not be smaller than
    `limit` bytes."""
    grid = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 1).copy()
    coder = MixingCoder(1, len(raw), grid, limit=limit)
    try:
        coder.code_frame()
        return coder.payload()
    except StopFrame:
        return None


def decode_cm(payload: bytes, raw_size: int, index: int) -> bytes:
    """The raw bytes of CM frame number `index`."""
    grid = np.zeros((raw_size, 1), dtype=np.uint8)
    MixingCoder(1, raw_size, grid, payload=payload, index=index).code_frame()
    return grid[:, 0].tobytes()
