"""The network's lanes, carried from frame to frame: the step loop that the frames coded with the network
(methods mix and net) share, in the encoder and the decoder alike.

A frame's bytes (the LF text where every line ends in CR LF) are laid out in lanes (`format.lane_layout`,
grid[t] = byte t of every lane); at each step the engine's tables of the active lanes go to the method's
step coder, and then the engine learns the step's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from shazip.format import ChecksumError, FrameFlag, ModelError, lane_layout

PROGRESS_EVERY_STEPS = 256
_U32 = struct.Struct("<I")

EngineFactory = Callable[[Any, str, "int | None"], Any]  # (model, device, threads) -> engine
Layout = tuple[int, int, int]  # (run, full, rest): see format.lane_layout
# code(t, active, layout, tables) -> (the step's bytes of the active lanes, work for the calling thread
# while the engine learns them), or None to stop the frame
StepCoder = Callable[[int, int, Layout, np.ndarray], "tuple[np.ndarray, Callable[[], object] | None] | None"]


def crlf_as_lf_applies(raw: bytes) -> bool:
    """True for text whose every LF follows a CR (Windows line ends): then CR LF -> LF is undone exactly by
    LF -> CR LF (a CR not followed by LF stays as it is)."""
    crlf = raw.count(b"\r\n")
    return crlf > 0 and raw.count(b"\n") == crlf


def text_grid(raw: bytes, lanes: int) -> tuple[np.ndarray, int, int, bytes]:
    """The encoder's layout of a frame: (grid, the text's size, flags, payload prefix). With CR LF line
    ends the grid holds the LF text and the payload starts with that text's size (FrameFlag.CRLF_AS_LF)."""
    text, flags, prefix = raw, 0, b""
    if crlf_as_lf_applies(raw):
        text = raw.replace(b"\r\n", b"\n")
        flags, prefix = int(FrameFlag.CRLF_AS_LF), _U32.pack(len(text))
    n = len(text)
    run, _, _ = lane_layout(n, lanes)
    flat = np.zeros(lanes * run, dtype=np.uint8)
    flat[:n] = np.frombuffer(text, dtype=np.uint8)
    return np.ascontiguousarray(flat.reshape(lanes, run).T), n, flags, prefix


def empty_grid(
    payload: bytes, raw_size: int, lanes: int, flags: int, index: int
) -> tuple[np.ndarray, int, bytes]:
    """The decoder's layout of a frame: (an empty grid, the text's size, the payload after its prefix)."""
    n = raw_size
    if flags & FrameFlag.CRLF_AS_LF:
        if len(payload) < _U32.size:
            raise ChecksumError(f"corrupt frame {index} (text size)")
        (n,) = _U32.unpack_from(payload)
        payload = payload[_U32.size :]
        if not 1 <= n <= raw_size or not payload:
            raise ChecksumError(f"corrupt frame {index} (text size)")
    run, _, _ = lane_layout(n, lanes)
    return np.zeros((run, lanes), dtype=np.uint8), n, payload


def grid_bytes(grid: np.ndarray, n: int, raw_size: int, flags: int, index: int) -> bytes:
    """The decoded frame from its grid (CRs put back)."""
    text = grid.T.reshape(-1)[:n].tobytes()
    raw = text.replace(b"\n", b"\r\n") if flags & FrameFlag.CRLF_AS_LF else text
    if len(raw) != raw_size:
        raise ChecksumError(f"corrupt frame {index} (frame size)")
    return raw


class NetworkLanes:
    """The engine and the per-lane state, carried from frame to frame. The engine starts at the first
    frame that uses it, so streams without one never load it."""

    def __init__(
        self,
        model: Any,
        lanes: int,
        device: str | None,
        threads: int | None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.model = model
        self.lanes = lanes
        self.device = device
        self.threads = threads
        self.engine_factory = engine_factory
        self.engine: Any = None
        self.state: Any = None

    def _ensure_engine(self) -> None:
        if self.engine is not None:
            return
        from shazip.runtime import default_engine_factory, resolve_device

        device = resolve_device(self.device)
        factory = self.engine_factory or default_engine_factory
        try:
            self.engine = factory(self.model, device, self.threads)
            self.state = self.engine.new_state(self.lanes)
        except (RuntimeError, ValueError, AssertionError, ImportError) as e:  # e.g. no CUDA, bad device
            self.engine = None
            raise ModelError(f"cannot start the model on device {device!r}: {e}") from None

    def snapshot(self) -> Any:
        self._ensure_engine()
        return self.state.copy()

    def restore(self, snapshot: Any) -> None:
        self.state = snapshot

    def steps(
        self, grid: np.ndarray, n: int, code: StepCoder, progress: Callable[[int], None] | None
    ) -> bool:
        """The step loop over a frame of n bytes laid out in grid ([run, lanes], step-major): at each step
        `code` codes the active lanes' bytes with the engine's tables; then the engine learns them (with
        `code`'s other work on the calling thread meanwhile). False if `code` stopped the frame."""
        self._ensure_engine()
        layout = lane_layout(n, grid.shape[1])
        run, full, rest = layout
        done = 0
        for t in range(run):
            active = full + (1 if t < rest else 0)
            coded = code(t, active, layout, self.engine.predict(self.state))
            if coded is None:
                return False
            symbols, alongside = coded
            self.engine.advance(self.state, symbols, alongside=alongside)
            done += active
            if progress is not None and t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                progress(done)
        return True


def scaled(progress: Callable[[int], None] | None, raw_size: int, n: int) -> Callable[[int], None] | None:
    """Progress in raw bytes from progress in text bytes (they differ by the CRs of CR LF text)."""
    return None if progress is None else (lambda done: progress(done * raw_size // n))
