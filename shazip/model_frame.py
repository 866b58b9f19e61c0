"""Model frames (method MODEL, docs/format.md): the network's tables, refined by the in-file models,
drive constriction's range coder, step by step over the frame's lanes.

`ModelFrameCoder` holds the engine and the lanes' state, carried from frame to frame. Encoder and decoder
run the same step loop (`_run`) and differ only in what they do with each step's tables: encode the
known bytes, or decode them.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from shazip.format import ChecksumError, FrameFlag, ModelError, lane_layout
from shazip.infile import InFileModels

_U32 = struct.Struct("<I")
PROGRESS_EVERY_STEPS = 256
# What the decoder appends to a payload: constriction's encoder leaves out the last word of its state (a
# zero, which its decoder supplies), so a genuine payload makes the decoder read at most one word past its
# end. The first zero here is that word; a decoder that has also read the second has run out of payload.
_PAYLOAD_END = np.zeros(2, dtype=np.uint32)
# What the writer sets on every model frame (and CRLF_AS_LF where it applies).
WRITER_FLAGS = FrameFlag.MATCH_MODEL | FrameFlag.CONTEXT_COUNTS_2

EngineFactory = Callable[[Any, str, "int | None"], Any]  # (model, device, threads) -> engine
# code(t, active, tables) -> the step's bytes of the active lanes, or None to stop the frame
StepCoder = Callable[[int, int, np.ndarray], "np.ndarray | None"]


def crlf_as_lf_applies(raw: bytes) -> bool:
    """True for text whose every LF follows a CR (Windows line ends): then CR LF -> LF is undone exactly by
    LF -> CR LF (a CR not followed by LF stays as it is)."""
    crlf = raw.count(b"\r\n")
    return crlf > 0 and raw.count(b"\n") == crlf


def payload_bits_budget(words: int) -> float:
    """The most information (in bits, measured on the tables the decoder hands the coder) that a genuine
    payload of `words` 32-bit words can hold. The coder's range starts below 2**64 and shrinks by each
    symbol's quantised probability; it emits a word per 32 bits and one word when sealed, so the symbols'
    quantised costs add up to at most 32 * (words + 1) bits. A symbol's quantised cost is at least 95% of
    its cost on the unquantised table (tables with entries >= 1 summing to <= 2**24; the extreme, an entry
    of 1 in 2**24, costs 23 instead of 24 bits), so this budget holds every genuine payload."""
    return (32 * (words + 2) + 64) / 0.9


def _coder_model() -> Any:
    import constriction

    # perfect=False always passed explicitly: the default changed between constriction versions.
    return constriction.stream.model.Categorical(perfect=False)


class ModelFrameCoder:
    """The engine and the per-lane state, carried from frame to frame; codes one model frame at a time.

    The engine starts at the first model frame, so streams without one never load it."""

    def __init__(
        self,
        model: Any,
        lanes: int,
        device: str | None,
        threads: int | None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        from shazip.runtime import default_engine_factory

        self.model = model
        self.lanes = lanes
        self.device = device
        self.threads = threads
        self.engine_factory = engine_factory or default_engine_factory
        self.engine: Any = None
        self.state: Any = None

    def _ensure_engine(self) -> None:
        if self.engine is not None:
            return
        from shazip.runtime import resolve_device

        device = resolve_device(self.device)
        try:
            self.engine = self.engine_factory(self.model, device, self.threads)
            self.state = self.engine.new_state(self.lanes)
        except (RuntimeError, ValueError, AssertionError, ImportError) as e:  # e.g. no CUDA, bad device
            self.engine = None
            raise ModelError(f"cannot start the model on device {device!r}: {e}") from None

    def snapshot(self) -> Any:
        self._ensure_engine()
        return self.state.copy()

    def restore(self, snapshot: Any) -> None:
        self.state = snapshot

    def _run(
        self, grid: np.ndarray, n: int, flags: int, code: StepCoder, progress: Callable[[int], None] | None
    ) -> bool:
        """The step loop over a frame of n bytes laid out in grid ([run, lanes], step-major). At each step
        `code` codes the active lanes' bytes with the step's tables; then the engine and the in-file models
        learn them. False if `code` stopped the frame."""
        self._ensure_engine()
        run, full, rest = lane_layout(n, grid.shape[1])
        in_file = InFileModels(grid, run, full, rest, flags)
        done = 0
        for t in range(run):
            active = full + (1 if t < rest else 0)
            tables = in_file.tables(t, self.engine.predict(self.state), active)
            symbols = code(t, active, tables)
            if symbols is None:
                return False
            # (the in-file models learn byte t while the engine's helper threads start on it)
            self.engine.advance(self.state, symbols, alongside=functools.partial(in_file.update, t, active))
            done += active
            if progress is not None and t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                progress(done)
        return True

    # Why the tables reach the coder identically in encoder and decoder: they are integers (every entry
    # >= 1, sum <= 2**24), bit-identical on both sides by the determinism contract, passed as float64,
    # which holds every such integer exactly, unnormalised; constriction quantises each row to its
    # fixed-point model with the same sequential IEEE arithmetic on both sides. Same input -> same model.

    def encode(
        self,
        raw: bytes,
        lanes: int,
        progress: Callable[[int], None] | None = None,
        limit: int | None = None,
        flags: int = WRITER_FLAGS,
    ) -> tuple[bytes, int] | None:
        """One model frame: (payload, FrameFlag bits). `flags`: the in-file models to use. Text with CR LF
        line ends is coded as LF text (the model was trained on LF text; the decoder puts the CRs back).
        With `limit`: None as soon as the payload is sure to reach `limit` bytes (the caller has a smaller
        payload already; the lane state is then partly advanced and must be restored)."""
        import constriction

        text, prefix = raw, b""
        if crlf_as_lf_applies(raw):
            text = raw.replace(b"\r\n", b"\n")
            flags |= FrameFlag.CRLF_AS_LF
            prefix = _U32.pack(len(text))
        n = len(text)
        run, _, _ = lane_layout(n, lanes)
        flat = np.zeros(lanes * run, dtype=np.uint8)
        flat[:n] = np.frombuffer(text, dtype=np.uint8)
        grid = np.ascontiguousarray(flat.reshape(lanes, run).T)  # grid[t] = byte t of every lane
        symbols = grid.astype(np.int32)  # the coder's dtype, converted once per frame
        family = _coder_model()
        encoder = constriction.stream.queue.RangeEncoder()
        words_limit = None if limit is None else limit - len(prefix)

        def code(t: int, active: int, tables: np.ndarray) -> np.ndarray | None:
            encoder.encode(symbols[t, :active], family, tables)
            # Frames the model is losing (logs, binaries for a text model) stop here, not at the end.
            if words_limit is not None and t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                if 4 * encoder.num_words() >= words_limit:
                    return None
            return grid[t, :active]

        report = None if progress is None else (lambda done: progress(done * len(raw) // n))
        if not self._run(grid, n, int(flags), code, report):
            return None
        return prefix + encoder.get_compressed().astype("<u4").tobytes(), int(flags)

    def decode(
        self,
        payload: bytes,
        raw_size: int,
        lanes: int,
        index: int,
        flags: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> bytes:
        """The raw bytes of model frame number `index` (its header's fields given)."""
        import constriction

        n = raw_size
        if flags & FrameFlag.CRLF_AS_LF:
            (n,) = _U32.unpack_from(payload)
            payload = payload[_U32.size :]
            if not 1 <= n <= raw_size or not payload:
                raise ChecksumError(f"corrupt frame {index} (model text size)")
        run, _, _ = lane_layout(n, lanes)
        grid = np.zeros((run, lanes), dtype=np.uint8)  # grid[t] = byte t of every lane
        family = _coder_model()
        words = np.frombuffer(payload, dtype="<u4")
        decoder = constriction.stream.queue.RangeDecoder(np.concatenate([words, _PAYLOAD_END]))
        budget = payload_bits_budget(len(words))
        spent = 0.0

        def code(t: int, active: int, tables: np.ndarray) -> np.ndarray:
            nonlocal spent
            try:
                symbols = decoder.decode(family, tables)
            except Exception as e:  # a corrupt payload can drive the decoder past its data
                raise ChecksumError(f"corrupt frame {index} (model payload: {e})") from None
            grid[t, :active] = symbols
            # A decoder that runs out of payload stops here, not after raw_size bytes of model time: it
            # has read past the word a genuine payload may lack, or its symbols carry more information
            # than the payload's bits can.
            spent += float(np.sum(np.log2(tables.sum(axis=1)) - np.log2(tables[np.arange(active), symbols])))
            if decoder.maybe_exhausted() or spent > budget:
                raise ChecksumError(f"corrupt frame {index} (model payload ends too soon, at step {t})")
            return grid[t, :active]

        report = None if progress is None else (lambda done: progress(done * raw_size // n))
        self._run(grid, n, flags, code, report)
        text = grid.T.reshape(-1)[:n].tobytes()
        raw = text.replace(b"\n", b"\r\n") if flags & FrameFlag.CRLF_AS_LF else text
        if len(raw) != raw_size:
            raise ChecksumError(f"corrupt frame {index} (model frame size)")
        return raw
