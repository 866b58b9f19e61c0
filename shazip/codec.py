"""The streaming codec: input bytes -> frames -> lanes -> engine -> range coder -> .shz (docs/format.md).

`StreamEncoder` takes input of unknown length in pieces and writes a .shz stream in one pass;
`StreamDecoder` reads one in one pass and yields the raw bytes frame by frame. Memory is bounded by
one frame (raw + coded) plus the engine's per-lane state, whatever the input length.

torch is imported only when a frame is actually coded with the model (through `shazip.engine`), so
stored/zstd work, `shazip info` and `shazip --help` never pay for it.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import zstandard

from shazip.format import (
    FRAME_HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_LANES,
    ChecksumError,
    Footer,
    FormatError,
    FrameFlag,
    FrameHeader,
    Method,
    ModelError,
    ModelMismatchError,
    StreamHeader,
    check_end_of_input,
    check_footer,
    content_hasher,
    crc32,
    read_block,
    read_exact,
    read_header,
)

_U32 = struct.Struct("<I")

DEFAULT_FRAME_SIZE = 1 << 20  # 1 MiB of input per frame on CPU
GPU_FRAME_SIZE = 4 << 20  # on a GPU: more lanes, so bigger frames keep each lane's run long
MIN_LANE_BYTES = 16 << 10  # a lane gets at least this much of a frame (long context per lane)
MAX_LANES_CPU = 64
MAX_LANES_GPU = 256
ZSTD_LEVEL = 3  # zstd frames when the model is not tried, and the cheap test
# When the model does run on a frame, zstd at this level competes with it: it costs well under 1% of the
# model's time and makes a weak model's frames never worse than strong zstd on the same frame.
ZSTD_STRONG_LEVEL = 19
# The cheap "is this worth the model?" test: if zstd saves less than this fraction of a frame (already
# compressed or random data), the model is not run. Small frames always try the model: zstd's own
# overhead makes it a poor judge there, and the model costs little on them.
INCOMPRESSIBLE_SAVING = 0.03
CHEAP_TEST_MIN_BYTES = 4096

NO_MODEL_ID = bytes(32)  # header model id of files written without a model ("zstd" strategy)
PROGRESS_EVERY_STEPS = 256

ProgressCallback = Callable[[int, int], None]  # (raw bytes so far, coded bytes so far)


class EngineLike(Protocol):
    """The part of shazip.engine.Engine the codec uses (docs/internals.md)."""

    def new_state(self, lanes: int) -> Any: ...
    def predict(self, state: Any) -> np.ndarray: ...
    def advance(self, state: Any, symbols: np.ndarray, alongside: Callable[[], object] | None = None) -> None:
        """alongside: work that does not touch `state`, run on the calling thread during the step or
        before it."""


class ModelLike(Protocol):
    """The part of shazip.modelfile.ModelFile the codec uses."""

    name: str
    model_id: bytes


EngineFactory = Callable[[Any, str], EngineLike]


def load_model(model: Any = None) -> Any:
    """None -> the embedded default model; a path -> that model file; a loaded model -> itself."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    try:
        from shazip.modelfile import ModelFile, default_model_path
    except ImportError as e:  # pragma: no cover - the package is broken
        raise ModelError(f"cannot load models: {e}") from None
    path = Path(model) if model is not None else default_model_path()
    try:
        return ModelFile.load(path)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except Exception as e:  # ModelFileError and anything safetensors raises: name the file and the cause
        raise ModelError(f"cannot load model {path}: {e}") from None


def resolve_device(device: str | None) -> str:
    """'auto'/None -> 'cuda' if torch sees a GPU, else 'cpu'. Imports torch only for 'auto'."""
    if device not in (None, "auto"):
        return device
    _prepare_torch_environment()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _prepare_torch_environment() -> None:
    # libgomp's default busy-waiting collapses when another process takes a core (DESIGN.md section 4);
    # this only has an effect before torch is first imported, and respects a user's own setting.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def default_engine_factory(model: Any, device: str) -> EngineLike:
    _prepare_torch_environment()
    from shazip.engine import Engine

    return Engine(model, device=device)


def choose_lanes(first_frame_bytes: int, max_lanes: int) -> int:
    """Few lanes for small inputs (each lane keeps >= MIN_LANE_BYTES of context), max_lanes for big ones.

    Decided from the first frame: a full first frame means a big input."""
    return max(1, min(max_lanes, first_frame_bytes // MIN_LANE_BYTES))


def lane_layout(n: int, lanes: int) -> tuple[int, int, int]:
    """Split n bytes into `lanes` contiguous runs: lane i gets [i*L, min((i+1)*L, n)), L = ceil(n/lanes).

    Returns (L, full, rest): `full` lanes hold L bytes, then one lane holds `rest` (< L) bytes if rest > 0,
    then empty lanes. The lanes active at step t are a prefix: full + (1 if t < rest else 0)."""
    run = -(-n // lanes)
    full, rest = divmod(n, run)
    return run, full, rest


class ModelCoder:
    """The engine and the per-lane state, carried from frame to frame; codes one model frame at a time."""

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
        self.engine_factory = engine_factory or default_engine_factory
        self.engine: EngineLike | None = None
        self.state: Any = None

    def _ensure_engine(self) -> None:
        if self.engine is not None:
            return
        device = resolve_device(self.device)
        if self.threads:
            _prepare_torch_environment()
            import torch

            torch.set_num_threads(self.threads)
        try:
            self.engine = self.engine_factory(self.model, device)
            self.state = self.engine.new_state(self.lanes)
        except (RuntimeError, ValueError, AssertionError, ImportError) as e:  # e.g. no CUDA, bad device
            self.engine = None
            raise ModelError(f"cannot start the model on device {device!r}: {e}") from None

    def snapshot(self) -> Any:
        self._ensure_engine()
        return self.state.copy()

    def restore(self, snapshot: Any) -> None:
        self.state = snapshot

    @staticmethod
    def _coder_model():
        import constriction

        # perfect=False always passed explicitly: the default changed between constriction versions.
        return constriction.stream.model.Categorical(perfect=False)

    # Why the tables reach the coder identically in encoder and decoder: the engine's tables are int32
    # (every entry >= 1, sum <= 2**24), bit-identical on both sides by the determinism contract. They are
    # converted to float64, which represents every such integer exactly, and passed unnormalised;
    # constriction then quantises each row to its fixed-point model with the same sequential IEEE
    # arithmetic on both sides (no threads, no reduction order, no libm). Same input -> same model.
    @staticmethod
    def _probabilities(freqs: np.ndarray, active: int) -> np.ndarray:
        return np.ascontiguousarray(freqs[:active], dtype=np.float64)

    def encode(
        self,
        raw: bytes,
        lanes: int,
        progress: Callable[[int], None] | None = None,
        limit: int | None = None,
    ) -> tuple[bytes, int] | None:
        """One model frame: (payload, FrameFlag bits). Text with CR LF line ends is coded as LF text (the
        model was trained on LF text; the decoder puts the CRs back); the match model and the context counts
        (second version) are always on. With `limit`: None as soon as the payload is sure to reach `limit`
        bytes (the caller has a smaller payload already; the lane state is then partly advanced and must be
        restored)."""
        flags = FrameFlag.MATCH_MODEL | FrameFlag.CONTEXT_COUNTS_2
        text, prefix = raw, b""
        if crlf_as_lf_applies(raw):
            text = raw.replace(b"\r\n", b"\n")
            flags |= FrameFlag.CRLF_AS_LF
            prefix = _U32.pack(len(text))
        n = len(text)
        report = None if progress is None else (lambda done: progress(done * len(raw) // n))
        words_limit = None if limit is None else limit - len(prefix)
        words = self._encode_bytes(text, lanes, int(flags), report, words_limit)
        return None if words is None else (prefix + words, int(flags))

    def _encode_bytes(
        self,
        raw: bytes,
        lanes: int,
        flags: int,
        progress: Callable[[int], None] | None,
        limit: int | None = None,
    ) -> bytes | None:
        import constriction

        self._ensure_engine()
        assert self.engine is not None
        n = len(raw)
        run, full, rest = lane_layout(n, lanes)
        grid = np.zeros(lanes * run, dtype=np.uint8)
        grid[:n] = np.frombuffer(raw, dtype=np.uint8)
        columns = np.ascontiguousarray(grid.reshape(lanes, run).T)  # columns[t] = byte t of every lane
        coder_symbols = columns.astype(np.int32)  # the coder's dtype, converted once per frame, not per step
        in_file = InFileModels(columns, run, full, rest, flags)
        family = self._coder_model()
        encoder = constriction.stream.queue.RangeEncoder()
        done = 0
        for t in range(run):
            active = full + (1 if t < rest else 0)
            symbols = columns[t, :active]
            tables = in_file.tables(t, self.engine.predict(self.state), active)
            encoder.encode(coder_symbols[t, :active], family, tables)
            # (the in-file models learn byte t while the engine's helper threads start on it)
            self.engine.advance(self.state, symbols, alongside=functools.partial(in_file.update, t, active))
            done += active
            if t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                if progress is not None:
                    progress(done)
                # Frames the model is losing (logs, binaries for a text model) stop here, not at the end.
                if limit is not None and 4 * encoder.num_words() >= limit:
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
    ) -> bytes:
        both_counts = FrameFlag.CONTEXT_COUNTS | FrameFlag.CONTEXT_COUNTS_2
        if flags & both_counts == both_counts:
            raise FormatError(f"corrupt frame {index} (flags 0x04 and 0x08 together)")
        size = raw_size
        if flags & FrameFlag.CRLF_AS_LF:
            (size,) = _U32.unpack_from(payload)
            payload = payload[_U32.size :]
            if not 1 <= size <= raw_size or not payload:
                raise ChecksumError(f"corrupt frame {index} (model text size)")
        report = None if progress is None else (lambda done: progress(done * raw_size // size))
        text = self._decode_bytes(payload, size, lanes, index, flags, report)
        raw = text.replace(b"\n", b"\r\n") if flags & FrameFlag.CRLF_AS_LF else text
        if len(raw) != raw_size:
            raise ChecksumError(f"corrupt frame {index} (model frame size)")
        return raw

    def _decode_bytes(
        self,
        payload: bytes,
        raw_size: int,
        lanes: int,
        index: int,
        flags: int,
        progress: Callable[[int], None] | None,
    ) -> bytes:
        import constriction

        self._ensure_engine()
        assert self.engine is not None
        run, full, rest = lane_layout(raw_size, lanes)
        grid = np.zeros((run, lanes), dtype=np.uint8)  # grid[t] = byte t of every lane
        in_file = InFileModels(grid, run, full, rest, flags)
        family = self._coder_model()
        decoder = constriction.stream.queue.RangeDecoder(
            np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        )
        done = 0
        for t in range(run):
            active = full + (1 if t < rest else 0)
            freqs = self.engine.predict(self.state)
            tables = in_file.tables(t, freqs, active)
            try:
                symbols = decoder.decode(family, tables)
            except Exception as e:  # a corrupt payload can drive the decoder past its data
                raise ChecksumError(f"corrupt frame {index} (model payload: {e})") from None
            symbols = np.asarray(symbols).astype(np.uint8)
            grid[t, :active] = symbols
            self.engine.advance(self.state, symbols, alongside=functools.partial(in_file.update, t, active))
            done += active
            if progress is not None and t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1:
                progress(done)
        return grid.T.reshape(-1)[:raw_size].tobytes()


class InFileModels:
    """The models that learn from the frame itself, as a model frame's flags ask: the engine's tables go
    through the match model, then the context counts (either version), to the coder. Lives for one frame;
    `grid[t, lane]` is byte t of each lane (filled up front by the encoder, step by step by the decoder)."""

    def __init__(self, grid: np.ndarray, run: int, full: int, rest: int, flags: int) -> None:
        # (numba kernels: imported only when the model runs)
        from shazip.context_counts import ContextCounts, ContextCounts2
        from shazip.match import MatchModel

        self.match = MatchModel(grid, run, full, rest) if flags & FrameFlag.MATCH_MODEL else None
        self.counts: ContextCounts | ContextCounts2 | None = None
        if flags & FrameFlag.CONTEXT_COUNTS_2:
            self.counts = ContextCounts2(grid)
        elif flags & FrameFlag.CONTEXT_COUNTS:
            self.counts = ContextCounts(grid)

    def tables(self, t: int, freqs: np.ndarray, active: int) -> np.ndarray:
        """Step t's tables for the coder: float64 [active, 256], exact integers (see _probabilities)."""
        rows = freqs if self.match is None else self.match.tables(freqs, active)
        if self.counts is not None:
            return self.counts.tables(t, rows, active)
        return ModelCoder._probabilities(rows, active)

    def update(self, t: int, active: int) -> None:
        if self.match is not None:
            self.match.update(t, active)
        if self.counts is not None:
            self.counts.update(t, active)


def crlf_as_lf_applies(raw: bytes) -> bool:
    """True for text whose every LF follows a CR (Windows line ends): then CR LF -> LF is undone exactly by
    LF -> CR LF (a CR not followed by LF stays as it is)."""
    crlf = raw.count(b"\r\n")
    return crlf > 0 and raw.count(b"\n") == crlf


class StreamEncoder:
    """Writes a .shz stream to `out` from input given in pieces of any size; `finish()` writes the footer.

    strategy: "auto" (cheap test, then the model where it helps), "model" (always try the model; still falls
    back to stored/zstd where the model frame would be bigger), or "zstd" (never the model: stored/zstd
    only, and the file decodes without any model)."""

    def __init__(
        self,
        out: BinaryIO,
        model: Any = None,
        *,
        strategy: str = "auto",
        lanes: int | None = None,
        frame_size: int | None = None,
        device: str | None = "auto",
        threads: int | None = None,
        progress: ProgressCallback | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        if strategy not in ("auto", "model", "zstd"):
            raise ValueError(f"strategy must be 'auto', 'model' or 'zstd', got {strategy!r}")
        if lanes is not None and not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}")
        if frame_size is not None and not 1 <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be in 1..{MAX_FRAME_SIZE}")
        self.out = out
        self.strategy = strategy
        self.model = None if strategy == "zstd" else load_model(model)
        self.requested_lanes = lanes
        self.device = device
        self.threads = threads
        self.progress = progress
        self.engine_factory = engine_factory
        # Until the header is written, the first frame is being gathered and the layout is undecided.
        self.frame_size = frame_size or DEFAULT_FRAME_SIZE
        self.frame_size_fixed = frame_size is not None or strategy == "zstd"
        self.header: StreamHeader | None = None
        self.coder: ModelCoder | None = None
        self.buffer = bytearray()
        self.hasher = content_hasher()
        self.frames: list[FrameHeader] = []
        self.raw_total = 0
        self.coded_total = 0
        self.finished = False
        self.failed = False
        self.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False)
        self.zstd_strong = zstandard.ZstdCompressor(
            level=ZSTD_STRONG_LEVEL, write_content_size=False, write_checksum=False
        )

    # -- layout ---------------------------------------------------------------------------------------

    def _max_lanes(self, device: str) -> int:
        return MAX_LANES_GPU if device.startswith("cuda") else MAX_LANES_CPU

    def _start(self) -> None:
        """Decide lanes (and, on a GPU, the frame size) from the first frame, and write the header."""
        known = len(self.buffer)
        if self.model is None:
            lanes = 1
        elif self.requested_lanes is not None:
            lanes = self.requested_lanes
        else:
            # The device matters only for big inputs; small ones never import torch to find out.
            max_lanes = MAX_LANES_CPU
            if known >= MAX_LANES_CPU * MIN_LANE_BYTES:
                self.device = resolve_device(self.device)
                max_lanes = self._max_lanes(self.device)
            lanes = choose_lanes(known, max_lanes)
        model_id = NO_MODEL_ID if self.model is None else self.model.model_id
        name = "" if self.model is None else self.model.name
        self.header = StreamHeader(lanes, self.frame_size, model_id, name)
        self._emit(self.header.to_bytes())
        if self.model is not None:
            self.coder = ModelCoder(self.model, lanes, self.device, self.threads, self.engine_factory)

    def _grow_first_frame_if_gpu(self) -> None:
        """Called once the first frame is full: on a GPU, frames grow so 256 lanes keep long runs."""
        if self.frame_size_fixed:
            return
        self.frame_size_fixed = True
        if self.requested_lanes is None and self.model is not None:
            self.device = resolve_device(self.device)
            if self.device.startswith("cuda"):
                self.frame_size = GPU_FRAME_SIZE

    # -- writing --------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_usable()
        try:
            return self._write(data)
        except BaseException:
            self.failed = True  # a frame may be half written: never end this stream with a valid footer
            raise

    def _check_usable(self) -> None:
        if self.failed:
            raise ValueError("the .shz stream is incomplete after an earlier error")
        if self.finished:
            raise ValueError("write to a finished .shz stream")

    def _write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        taken = 0
        while taken < len(view):
            room = self.frame_size - len(self.buffer)
            piece = view[taken : taken + room]
            self.buffer += piece
            taken += len(piece)
            if len(self.buffer) >= self.frame_size:
                if self.header is None:
                    self._grow_first_frame_if_gpu()
                    if len(self.buffer) < self.frame_size:
                        continue
                    self._start()
                self._flush_frame()
        return len(view)

    def finish(self) -> None:
        """Code what is buffered, then write the end-of-stream marker and the footer."""
        if self.finished:
            return
        self._check_usable()
        try:
            if self.header is None:
                self._start()
            if self.buffer:
                self._flush_frame()
            footer = Footer(len(self.frames), self.raw_total, self.hasher.digest())
            self._emit(footer.to_bytes())
        except BaseException:
            self.failed = True
            raise
        self.finished = True

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self.coded_total += len(data)

    def _report(self, raw_done: int, extra_coded: int = 0) -> None:
        if self.progress is not None:
            self.progress(raw_done, self.coded_total + extra_coded)

    def _flush_frame(self) -> None:
        raw = bytes(self.buffer)
        self.buffer.clear()
        self.hasher.update(raw)
        header, payload = self._code_frame(raw)
        self._emit(header.to_bytes())
        self._emit(payload)
        self.frames.append(header)
        self.raw_total += len(raw)
        self._report(self.raw_total)

    def _code_frame(self, raw: bytes) -> tuple[FrameHeader, bytes]:
        n = len(raw)
        raw_crc = crc32(raw)
        stored = (FrameHeader(Method.STORED, n, n, raw_crc, coded_crc32=raw_crc), raw)

        def smaller_of_stored_and(zstd_payload: bytes) -> tuple[FrameHeader, bytes]:
            if len(zstd_payload) >= n:
                return stored
            header = FrameHeader(Method.ZSTD, n, len(zstd_payload), raw_crc, coded_crc32=crc32(zstd_payload))
            return header, zstd_payload

        quick = self.zstd.compress(raw)
        if self.coder is None or not self._worth_the_model(n, len(quick)):
            return smaller_of_stored_and(quick)
        best = smaller_of_stored_and(min(quick, self.zstd_strong.compress(raw), key=len))
        assert self.header is not None
        lanes = self.header.lanes
        before = self.coder.snapshot()
        base = self.raw_total
        coded = self.coder.encode(raw, lanes, lambda done: self._report(base + done), limit=len(best[1]))
        if coded is not None and len(coded[0]) < len(best[1]):
            payload, flags = coded
            return FrameHeader(Method.MODEL, n, len(payload), raw_crc, lanes, crc32(payload), flags), payload
        # The model lost to stored/zstd: the decoder will not run the model on this frame, so the lanes
        # must look as if the encoder had not either.
        self.coder.restore(before)
        return best

    def _worth_the_model(self, raw_size: int, zstd_size: int) -> bool:
        if raw_size <= 4:  # a model payload is whole 4-byte words and must be smaller than the frame
            return False
        if self.strategy == "model" or raw_size < CHEAP_TEST_MIN_BYTES:
            return True
        return zstd_size < raw_size * (1 - INCOMPRESSIBLE_SAVING)


class StreamDecoder:
    """Reads a .shz stream from `src` in one pass; `frames()` yields each frame's raw bytes, verified.

    The model is checked against the header before the first frame; the engine (and torch) starts only at
    the first model frame. After the last frame the footer is checked (frame count, total size, content
    checksum) and nothing may follow it."""

    def __init__(
        self,
        src: BinaryIO,
        model: Any = None,
        *,
        device: str | None = "auto",
        threads: int | None = None,
        progress: ProgressCallback | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.src = src
        self.model_arg = model
        self.device = device
        self.threads = threads
        self.progress = progress
        self.engine_factory = engine_factory
        self.header: StreamHeader | None = None
        self.footer: Footer | None = None
        self.coder: ModelCoder | None = None
        self.frames_read: list[FrameHeader] = []
        self.raw_total = 0
        self.coded_total = 0

    def read_header(self) -> StreamHeader:
        if self.header is None:
            self.header = read_header(self.src)
            self.coded_total = self.header.size
            if self.header.model_id != NO_MODEL_ID:
                model = load_model(self.model_arg)
                check_model(self.header, model)
                self.coder = ModelCoder(
                    model, self.header.lanes, self.device, self.threads, self.engine_factory
                )
        return self.header

    def frames(self) -> Iterator[bytes]:
        header = self.read_header()
        hasher = content_hasher()
        while True:
            index = len(self.frames_read) + 1
            block = read_block(self.src, index)
            if isinstance(block, Footer):
                break
            block.validate(header, index)
            payload = read_exact(self.src, block.coded_size, f"frame {index}")
            if crc32(payload) != block.coded_crc32:
                raise ChecksumError(f"corrupt frame {index} (payload checksum)")
            raw = self._decode_frame(block, payload, index)
            if crc32(raw) != block.raw_crc32:
                raise ChecksumError(f"corrupt frame {index} (checksum)")
            hasher.update(raw)
            self.frames_read.append(block)
            self.raw_total += len(raw)
            self.coded_total += FRAME_HEADER_SIZE + len(payload)
            if self.progress is not None:
                self.progress(self.raw_total, self.coded_total)
            yield raw
        check_footer(block, len(self.frames_read), self.raw_total)
        if hasher.digest() != block.content_hash:
            raise ChecksumError("content checksum mismatch (corrupt data)")
        check_end_of_input(self.src)
        self.footer = block

    def _decode_frame(self, frame: FrameHeader, payload: bytes, index: int) -> bytes:
        if frame.method == Method.STORED:
            return payload
        if frame.method == Method.ZSTD:
            try:
                raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=frame.raw_size)
            except zstandard.ZstdError as e:
                raise ChecksumError(f"corrupt frame {index} (zstd: {e})") from None
            if len(raw) != frame.raw_size:
                raise ChecksumError(f"corrupt frame {index} (zstd size)")
            return raw
        if self.coder is None:
            raise FormatError(f"corrupt frame {index} (model frame in a file written without a model)")
        base_raw, base_coded = self.raw_total, self.coded_total

        def report(done: int) -> None:
            if self.progress is not None:
                self.progress(base_raw + done, base_coded)

        return self.coder.decode(payload, frame.raw_size, frame.lanes, index, frame.flags, report)


def check_model(header: StreamHeader, model: Any) -> None:
    if model.model_id != header.model_id:
        raise ModelMismatchError(
            f"needs model {header.model_name or '?'} (id {header.model_id.hex()[:16]}…), "
            f"got {model.name} (id {model.model_id.hex()[:16]}…)"
        )
