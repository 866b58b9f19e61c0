"""The .shz stream: input of any length -> frames -> .shz, and back (docs/format.md).

`StreamEncoder` takes input of unknown length in pieces and writes a stream in one pass; per frame it
chooses the method (stored, zstd, or a model frame where the model wins). `StreamDecoder` reads a stream
in one pass and yields each frame's raw bytes, verified. Memory is bounded by one frame (raw + coded) plus
the model's per-lane state and per-frame tables, whatever the input length.

torch and the numba kernels load only when a frame is actually coded with the model, so stored/zstd
work, `shazip info` and `shazip --help` never pay for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import zstandard

from shazip import levels
from shazip.format import (
    FRAME_HEADER_SIZE,
    LZMA_DICT_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    MAX_LANES,
    ChecksumError,
    Footer,
    FormatError,
    FrameHeader,
    FrameTally,
    FrameWalk,
    Method,
    ModelMismatchError,
    StreamHeader,
    TruncatedError,
    content_hasher,
    crc32,
    printable,
    read_exact,
    read_header,
)
from shazip.model_frame import EngineFactory, ModelFrameCoder
from shazip.runtime import DEFAULT_MEMLIMIT, check_memory, load_model, resolve_device, resolve_threads

GPU_FRAME_SIZE = 4 << 20  # on a GPU: more lanes, so bigger frames keep each lane's run long
MIN_LANE_BYTES = levels.LEVELS[levels.DEFAULT_LEVEL].lane_bytes  # (the default level's)
MAX_LANES_CPU = 64
SPEED_LANES = 16  # small inputs get up to this many lanes at the levels that favour speed
MAX_LANES_GPU = 256
ZSTD_LEVEL = 3  # zstd frames of data the models skip, and the cheap test
# zstd at this level competes with the models (from level 2): well under 1% of their time, and a weak
# model's frames are then never worse than strong zstd on the same frame.
ZSTD_STRONG_LEVEL = 19
BZIP2_LEVEL = 9
LZMA_PRESET = 6
# The cheap "is this worth the model?" test: if zstd saves less than this fraction of a frame (already
# compressed or random data), the model is not run. Small frames always try the model: zstd's own
# overhead makes it a poor judge there, and the model costs little on them.
INCOMPRESSIBLE_SAVING = 0.03
CHEAP_TEST_MIN_BYTES = 4096
# A CM frame under this many bits per byte (logs, tables, markup, records) leaves the network little to
# add: the encoder then does not spend the network's time on a MIX frame.
MIX_AFTER_CM_BITS_PER_BYTE = 1.0

NO_MODEL_ID = bytes(32)  # header model id of files written without the network ("zstd", "cm" strategies)

STRATEGIES = ("auto", "model", "cm", "zstd")

ProgressCallback = Callable[[int, int], None]  # (raw bytes so far, coded bytes so far)


def choose_lanes(
    first_frame_bytes: int, max_lanes: int, lane_bytes: int = MIN_LANE_BYTES, small_lane_bytes: int = 0
) -> int:
    """Few lanes for small inputs (each lane keeps >= lane_bytes of context), max_lanes for big ones; with
    small_lane_bytes, inputs too small for 16 such lanes get up to 16 lanes of at least small_lane_bytes
    (a step of the network costs about as much for 16 lanes as for one: fewer steps, a little less
    context per lane).

    Decided from the first frame: a full first frame means a big input."""
    lanes = first_frame_bytes // lane_bytes
    if small_lane_bytes:
        lanes = max(lanes, min(SPEED_LANES, first_frame_bytes // small_lane_bytes))
    return max(1, min(max_lanes, lanes))


def _lzma_filters() -> list[dict]:
    import lzma

    return [{"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": LZMA_DICT_SIZE}]


class StreamEncoder:
    """Writes a .shz stream to `out` from input given in pieces of any size; `finish()` writes the footer.

    level: 1..9 (`shazip.levels`): which methods compete for each frame, the frame size and the lanes.
    strategy narrows the level's choice: "auto" (the level's), "cm" (no network: the file decodes without
    a model file), "zstd" (stored or zstd only), or "model" (stored, zstd or MIX without the cheap test:
    the network wherever it wins; for tests and measurements)."""

    def __init__(
        self,
        out: BinaryIO,
        model: Any = None,
        *,
        level: int = levels.DEFAULT_LEVEL,
        strategy: str = "auto",
        lanes: int | None = None,
        frame_size: int | None = None,
        device: str | None = "auto",
        threads: int | None = None,
        progress: ProgressCallback | None = None,
        engine_factory: EngineFactory | None = None,
        memlimit: int | None = DEFAULT_MEMLIMIT,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if lanes is not None and not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}")
        if frame_size is not None and not 1 <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be in 1..{MAX_FRAME_SIZE}")
        self.out = out
        self.level = level
        self.preset = levels.level(level)
        self.strategy = strategy
        uses_network = strategy == "model" or (strategy == "auto" and self.preset.uses_network)
        self.model = load_model(model) if uses_network else None
        self.requested_lanes = lanes
        self.device = device
        self.threads = resolve_threads(threads)  # (ValueError beyond runtime.MAX_THREADS)
        self.progress = progress
        self.engine_factory = engine_factory
        self.memlimit = memlimit
        # Until the header is written, the first frame is being gathered and the layout is undecided.
        self.frame_size = frame_size or self.preset.frame_size
        self.frame_size_fixed = frame_size is not None or self.model is None
        self.header: StreamHeader | None = None
        self.coder: ModelFrameCoder | None = None
        self.buffer = bytearray()
        self.hasher = content_hasher()
        self.tally = FrameTally()
        self.raw_total = 0
        self.coded_total = 0
        self.finished = False
        self.failed = False
        self.zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False)
        self.zstd_strong = zstandard.ZstdCompressor(
            level=self.preset.zstd_level, write_content_size=False, write_checksum=False
        )

    # -- layout ---------------------------------------------------------------------------------------

    def _max_lanes(self, device: str) -> int:
        return MAX_LANES_GPU if device.startswith("cuda") else MAX_LANES_CPU

    def _start(self) -> None:
        """Decide lanes (and, on a GPU, the frame size) from the first frame, and write the header."""
        known = len(self.buffer)
        if known < self.frame_size:  # (called by finish: the whole input is known and fits one frame)
            self.frame_size = max(1, known)  # (so the header declares what decoding it really needs)
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
            lanes = choose_lanes(known, max_lanes, self.preset.lane_bytes, self.preset.small_lane_bytes)
        # No frame uses more lanes than it has bytes (n bytes over n or more lanes: the same layout), and
        # `known` is a whole frame or the whole input: more lanes would only raise what a reader allocates.
        lanes = min(lanes, max(1, known))
        model_id = NO_MODEL_ID if self.model is None else self.model.model_id
        name = "" if self.model is None else self.model.name
        header = StreamHeader(lanes, self.frame_size, model_id, name, level=self.level)
        # A stream that readers with the same limit would refuse is not written.
        check_memory(header, self.model, self.memlimit, "decode what this writes")
        self.header = header
        self._emit(self.header.to_bytes())
        if self.model is not None:
            self.coder = ModelFrameCoder(self.model, lanes, self.device, self.threads, self.engine_factory)

    def _grow_first_frame_if_gpu(self) -> None:
        """Called once the first frame is full: on a GPU, frames grow so 256 lanes keep long runs."""
        if self.frame_size_fixed:
            return
        self.frame_size_fixed = True
        if self.requested_lanes is None and self.model is not None:
            self.device = resolve_device(self.device)
            if self.device.startswith("cuda"):
                self.frame_size = max(self.frame_size, GPU_FRAME_SIZE)

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
            footer = Footer(self.tally.frames, self.raw_total, self.hasher.digest())
            self._emit(footer.to_bytes(self.coded_total, self.header.version))
        except BaseException:
            self.failed = True
            raise
        self.finished = True

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self.coded_total += len(data)

    def _report(self, raw_done: int) -> None:
        if self.progress is not None:
            self.progress(raw_done, self.coded_total)

    def _flush_frame(self) -> None:
        raw = bytes(self.buffer)
        self.buffer.clear()
        self.hasher.update(raw)
        header, payload = self._code_frame(raw)
        assert self.header is not None
        self._emit(header.to_bytes(self.tally.frames + 1, self.coded_total, self.header.version))
        self._emit(payload)
        self.tally.add(header)
        self.raw_total += len(raw)
        self._report(self.raw_total)

    def _code_frame(self, raw: bytes) -> tuple[FrameHeader, bytes]:
        """The smallest frame among the methods the level and strategy allow (docs/format.md, "Choices")."""
        n = len(raw)
        raw_crc = crc32(raw)
        best = FrameHeader(Method.STORED, n, n, raw_crc, coded_crc32=raw_crc), raw

        def consider(method: Method, payload: bytes | None, lanes: int = 0, flags: int = 0) -> None:
            nonlocal best
            if payload is not None and len(payload) < len(best[1]):
                header = FrameHeader(method, n, len(payload), raw_crc, lanes, crc32(payload), flags)
                best = header, payload

        quick = self.zstd.compress(raw)
        consider(Method.ZSTD, quick)
        if self.strategy == "zstd" or not self._worth_the_model(n, len(quick)):
            return best
        preset, strategy = self.preset, self.strategy
        if preset.zstd_level != ZSTD_LEVEL or strategy == "model":
            consider(Method.ZSTD, self.zstd_strong.compress(raw))
        if strategy != "model":
            if preset.bzip2:
                import bz2

                consider(Method.BZIP2, bz2.compress(raw, BZIP2_LEVEL))
            if preset.lzma:
                import lzma

                consider(Method.LZMA, lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters()))
        cm = None
        if strategy == "cm" or (strategy == "auto" and preset.cm):
            from shazip.mixing import encode_cm

            cm = encode_cm(raw, limit=len(best[1]))
            consider(Method.CM, cm)
        if self.coder is None or (cm is not None and 8 * len(cm) < MIX_AFTER_CM_BITS_PER_BYTE * n):
            return best
        assert self.header is not None
        lanes = self.header.lanes
        before = self.coder.snapshot()
        base = self.raw_total
        coded = self.coder.encode(raw, lanes, lambda done: self._report(base + done), limit=len(best[1]))
        if coded is not None and len(coded[0]) < len(best[1]):
            consider(Method.MIX, coded[0], lanes, coded[1])
            return best
        # The network lost: the decoder will not run it on this frame, so the lanes must look as if the
        # encoder had not either.
        self.coder.restore(before)
        return best

    def _worth_the_model(self, raw_size: int, zstd_size: int) -> bool:
        if raw_size <= 4:  # a model payload is whole 4-byte words and must be smaller than the frame
            return False
        if self.strategy == "model" or raw_size < CHEAP_TEST_MIN_BYTES:
            return True
        return zstd_size < raw_size * (1 - INCOMPRESSIBLE_SAVING)


class StreamDecoder:
    """Reads .shz streams from `src` in one pass; `frames()` yields each frame's raw bytes, verified.

    The model is checked against each stream's header before its first frame; the engine starts only at
    the first frame that needs the network. After a stream's last frame its footer is checked (frame
    count, total size, content checksum); then either the input ends or another stream follows (streams
    one after another decode as the concatenation of their contents); anything else is an error."""

    def __init__(
        self,
        src: BinaryIO,
        model: Any = None,
        *,
        device: str | None = "auto",
        threads: int | None = None,
        progress: ProgressCallback | None = None,
        engine_factory: EngineFactory | None = None,
        memlimit: int | None = DEFAULT_MEMLIMIT,
    ) -> None:
        self.src = src
        self.model_arg = model
        self.device = device
        self.threads = resolve_threads(threads)  # (ValueError beyond runtime.MAX_THREADS)
        self.progress = progress
        self.engine_factory = engine_factory
        self.memlimit = memlimit
        self.header: StreamHeader | None = None
        self.footer: Footer | None = None
        self.coder: ModelFrameCoder | None = None
        self.raw_total = 0
        self.coded_total = 0

    def read_header(self) -> StreamHeader:
        """The first stream's header (read at the first call)."""
        if self.header is None:
            self._start_stream(read_header(self.src))
        assert self.header is not None
        return self.header

    def _start_stream(self, header: StreamHeader) -> None:
        model = None
        if header.model_id != NO_MODEL_ID:
            model = load_model(self.model_arg)
            check_model(header, model)
        # before anything the header's settings ask for is allocated
        check_memory(header, model, self.memlimit)
        self.header = header
        self.coded_total += header.size
        self.coder = None
        if model is not None:
            self.coder = ModelFrameCoder(model, header.lanes, self.device, self.threads, self.engine_factory)

    def frames(self) -> Iterator[bytes]:
        yield from self._stream_frames(self.read_header())
        while (magic := read_exact(self.src, len(MAGIC), "the next stream", allow_empty=True)) == MAGIC:
            self._start_stream(read_header(self.src, magic))
            yield from self._stream_frames(self.header)
        if magic and MAGIC.startswith(magic):
            raise TruncatedError("truncated (inside the next stream's header)")
        if magic:
            raise FormatError("trailing data after the end of the .shz stream")

    def _stream_frames(self, header: StreamHeader) -> Iterator[bytes]:
        hasher = content_hasher()
        walk = FrameWalk(self.src, header)
        for index, frame in walk:
            payload = read_exact(self.src, frame.coded_size, f"frame {index}")
            if crc32(payload) != frame.coded_crc32:
                raise ChecksumError(f"corrupt frame {index} (payload checksum)")
            raw = self._decode_frame(frame, payload, index)
            if crc32(raw) != frame.raw_crc32:
                raise ChecksumError(f"corrupt frame {index} (checksum)")
            hasher.update(raw)
            self.raw_total += len(raw)
            self.coded_total += FRAME_HEADER_SIZE + len(payload)
            if self.progress is not None:
                self.progress(self.raw_total, self.coded_total)
            yield raw
        assert walk.footer is not None
        if hasher.digest() != walk.footer.content_hash:
            raise ChecksumError("content checksum mismatch (corrupt data)")
        self.footer = walk.footer

    def _decode_frame(self, frame: FrameHeader, payload: bytes, index: int) -> bytes:
        if frame.method == Method.STORED:
            return payload
        if frame.method == Method.ZSTD:
            try:
                # A zstd frame may declare its content size, and python-zstandard allocates what it
                # declares (max_output_size only applies when it does not): it must be raw_size.
                declared = zstandard.frame_content_size(payload)
                if declared not in (-1, frame.raw_size):
                    raise ChecksumError(f"corrupt frame {index} (zstd frame of {declared} bytes)")
                raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=frame.raw_size)
            except zstandard.ZstdError as e:
                raise ChecksumError(f"corrupt frame {index} (zstd: {e})") from None
            if len(raw) != frame.raw_size:
                raise ChecksumError(f"corrupt frame {index} (zstd size)")
            return raw
        if frame.method == Method.BZIP2:
            return _bounded_decompress(frame, payload, index, _bzip2_decompressor())
        if frame.method == Method.LZMA:
            import lzma

            decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters())
            return _bounded_decompress(frame, payload, index, decompressor)
        if frame.method == Method.CM:
            from shazip.mixing import decode_cm

            return decode_cm(payload, frame.raw_size, index)
        if self.coder is None:
            raise FormatError(f"corrupt frame {index} (model frame in a file written without a model)")
        base_raw, base_coded = self.raw_total, self.coded_total

        def report(done: int) -> None:
            if self.progress is not None:
                self.progress(base_raw + done, base_coded)

        return self.coder.decode(
            payload, frame.raw_size, frame.lanes, index, frame.flags, report, method=frame.method
        )


def check_model(header: StreamHeader, model: Any) -> None:
    if model.model_id != header.model_id:
        raise ModelMismatchError(  # (names from files, printed: no terminal escapes)
            f"needs model {printable(header.model_name) or '?'} (id {header.model_id.hex()[:16]}…), "
            f"got {printable(model.name)} (id {model.model_id.hex()[:16]}…)"
        )


def _bzip2_decompressor() -> Any:
    import bz2

    return bz2.BZ2Decompressor()


def _bounded_decompress(frame: FrameHeader, payload: bytes, index: int, decompressor: Any) -> bytes:
    """A bzip2 or LZMA frame's bytes, never more than its raw size (a crafted payload cannot expand)."""
    name = frame.method.name.lower()
    try:
        raw = decompressor.decompress(payload, max_length=frame.raw_size + 1)
    except Exception as e:  # noqa: BLE001 - bz2 raises OSError/EOFError, lzma its LZMAError
        raise ChecksumError(f"corrupt frame {index} ({name}: {e})") from None
    if len(raw) != frame.raw_size:
        raise ChecksumError(f"corrupt frame {index} ({name} size)")
    return raw
