"""Frames coded with the network (docs/format.md), step by step over the frame's lanes:

- MIX: the mixing model (`shazip.mixing`) over the network's tables, binary arithmetic coding (written);
- MODEL: the network's tables refined by the in-file models (`shazip.infile`), constriction's range coder
  (what earlier versions wrote; still read).

`ModelFrameCoder` holds the engine and the lanes' state, carried from frame to frame. Both methods, encoder
and decoder, run one step loop (`_steps`) and differ only in what they do with each step's tables.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from shazip.format import ChecksumError, FrameFlag, Method, ModelError, lane_layout

_U32 = struct.Struct("<I")
PROGRESS_EVERY_STEPS = 256
# The in-file models of a MODEL frame that the last writer of that method set (and CRLF_AS_LF where it
# applied).
MODEL_FLAGS = FrameFlag.MATCH_MODEL | FrameFlag.CONTEXT_COUNTS_2
# What the decoder appends to a MODEL payload: constriction's encoder leaves out the last word of its state
# (a zero, which its decoder supplies), so a genuine payload makes the decoder read at most one word past
# its end. The first zero here is that word; a decoder that has also read the second has run out of payload.
_PAYLOAD_END = np.zeros(2, dtype=np.uint32)

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

    def _steps(
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

    def encode(
        self,
        raw: bytes,
        lanes: int,
        progress: Callable[[int], None] | None = None,
        limit: int | None = None,
        method: Method = Method.MIX,
        flags: int = MODEL_FLAGS,
    ) -> tuple[bytes, int] | None:
        """One frame of `method` (MIX or MODEL): (payload, FrameFlag bits). `flags`: a MODEL frame's in-file
        models. Text with CR LF line ends is coded as LF text (the model was trained on LF text; the
        decoder puts the CRs back). With `limit`: None as soon as the payload is sure to reach `limit`
        bytes (the caller has a smaller payload already; the lane state is then partly advanced and must
        be restored)."""
        flags = 0 if method == Method.MIX else flags
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
        report = None if progress is None else (lambda done: progress(done * len(raw) // n))
        body_limit = None if limit is None else limit - len(prefix)
        if method == Method.MIX:
            body = self._encode_mix(grid, n, report, body_limit)
        else:
            body = self._encode_model(grid, n, int(flags), report, body_limit)
        return None if body is None else (prefix + body, int(flags))

    def _encode_mix(
        self, grid: np.ndarray, n: int, progress: Callable[[int], None] | None, limit: int | None
    ) -> bytes | None:
        from shazip.mixing import MixingCoder, StopFrame

        mixing = MixingCoder(grid.shape[1], n, grid, limit=limit)
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

        if not self._steps(grid, n, code, progress) or stopped:
            return None
        try:
            return mixing.payload()
        except StopFrame:
            return None

    # Why the tables reach constriction identically in encoder and decoder: they are integers (every entry
    # >= 1, sum <= 2**24), bit-identical on both sides by the determinism contract, passed as float64,
    # which holds every such integer exactly, unnormalised; constriction quantises each row to its
    # fixed-point model with the same sequential IEEE arithmetic on both sides. Same input -> same model.

    def _encode_model(
        self, grid: np.ndarray, n: int, flags: int, progress: Callable[[int], None] | None, limit: int | None
    ) -> bytes | None:
        import constriction

        from shazip.infile import InFileModels

        symbols = grid.astype(np.int32)  # the coder's dtype, converted once per frame
        family = _coder_model()
        encoder = constriction.stream.queue.RangeEncoder()
        in_file = InFileModels(grid, *lane_layout(n, grid.shape[1]), flags)

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            encoder.encode(symbols[t, :active], family, in_file.tables(t, tables, active))
            # Frames the model is losing (logs, binaries for a text model) stop here, not at the end.
            if limit is not None and t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                if 4 * encoder.num_words() >= limit:
                    return None
            return grid[t, :active], functools.partial(in_file.update, t, active)

        if not self._steps(grid, n, code, progress):
            return None
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(
        self,
        payload: bytes,
        raw_size: int,
        lanes: int,
        index: int,
        flags: int = 0,
        progress: Callable[[int], None] | None = None,
        method: Method = Method.MIX,
    ) -> bytes:
        """The raw bytes of frame number `index` of `method` (its header's fields given)."""
        n = raw_size
        if flags & FrameFlag.CRLF_AS_LF:
            (n,) = _U32.unpack_from(payload)
            payload = payload[_U32.size :]
            if not 1 <= n <= raw_size or not payload:
                raise ChecksumError(f"corrupt frame {index} (model text size)")
        run, _, _ = lane_layout(n, lanes)
        grid = np.zeros((run, lanes), dtype=np.uint8)  # grid[t] = byte t of every lane
        report = None if progress is None else (lambda done: progress(done * raw_size // n))
        if method == Method.MIX:
            self._decode_mix(payload, grid, n, index, report)
        else:
            self._decode_model(payload, grid, n, index, flags, report)
        text = grid.T.reshape(-1)[:n].tobytes()
        raw = text.replace(b"\n", b"\r\n") if flags & FrameFlag.CRLF_AS_LF else text
        if len(raw) != raw_size:
            raise ChecksumError(f"corrupt frame {index} (model frame size)")
        return raw

    def _decode_mix(
        self, payload: bytes, grid: np.ndarray, n: int, index: int, progress: Callable[[int], None] | None
    ) -> None:
        from shazip.mixing import MixingCoder

        mixing = MixingCoder(grid.shape[1], n, grid, payload=payload, index=index)

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            mixing.step(t, active, layout, tables[:active])
            return grid[t, :active], None

        self._steps(grid, n, code, progress)

    def _decode_model(
        self,
        payload: bytes,
        grid: np.ndarray,
        n: int,
        index: int,
        flags: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        import constriction

        from shazip.infile import InFileModels

        family = _coder_model()
        words = np.frombuffer(payload, dtype="<u4")
        decoder = constriction.stream.queue.RangeDecoder(np.concatenate([words, _PAYLOAD_END]))
        budget = payload_bits_budget(len(words))
        spent = 0.0
        in_file = InFileModels(grid, *lane_layout(n, grid.shape[1]), flags)

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            nonlocal spent
            tables = in_file.tables(t, tables, active)
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
            return grid[t, :active], functools.partial(in_file.update, t, active)

        self._steps(grid, n, code, progress)
