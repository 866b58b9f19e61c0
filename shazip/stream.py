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
from dataclasses import replace
from typing import Any, BinaryIO

from shazip import frames, levels
from shazip.format import (
    FRAME_HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    MAX_LANES,
    ChecksumError,
    Footer,
    FormatError,
    FrameHeader,
    FrameTally,
    FrameWalk,
    ModelMismatchError,
    ShazipError,
    StreamHeader,
    TruncatedError,
    content_hasher,
    crc32,
    printable,
    read_exact,
    read_header,
)
from shazip.frames import Coded, FrameJob
from shazip.frames.network import EngineFactory, NetworkLanes
from shazip.runtime import DEFAULT_MEMLIMIT, check_memory, load_model, resolve_device, resolve_threads

NO_MODEL_ID = bytes(32)  # header model id of files written without the network (levels 1-3, --no-model)

ProgressCallback = Callable[[int, int], None]  # (raw bytes so far, coded bytes so far)


class StreamEncoder:
    """Writes a .shz stream to `out` from input given in pieces of any size; `finish()` writes the footer.

    level: 1..9 (`shazip.levels`): which methods compete for each frame, the frame size and the lanes.
    strategy narrows or replaces the level's choice (`levels.STRATEGIES`)."""

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
        if lanes is not None and not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}")
        if frame_size is not None and not 1 <= frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be in 1..{MAX_FRAME_SIZE}")
        self.out = out
        self.level = level
        self.preset = levels.level(level)
        self.strategy = strategy
        self.candidates = [frames.writer(name) for name in levels.candidates(self.preset, strategy)]
        self.model = load_model(model) if levels.uses_network(self.preset, strategy) else None
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
        self.network: NetworkLanes | None = None
        self.buffer = bytearray()
        self.hasher = content_hasher()
        self.tally = FrameTally()
        self.raw_total = 0
        self.coded_total = 0
        self.finished = False
        self.failed = False

    # -- layout ---------------------------------------------------------------------------------------

    def _max_lanes(self, device: str) -> int:
        return levels.MAX_LANES_GPU if device.startswith("cuda") else levels.MAX_LANES_CPU

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
            max_lanes = levels.MAX_LANES_CPU
            if known >= levels.MAX_LANES_CPU * self.preset.lane_bytes:
                self.device = resolve_device(self.device)
                max_lanes = self._max_lanes(self.device)
            lanes = levels.choose_lanes(
                known, max_lanes, self.preset.lane_bytes, self.preset.small_lane_bytes
            )
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
            self.network = NetworkLanes(self.model, lanes, self.device, self.threads, self.engine_factory)

    def _grow_first_frame_if_gpu(self) -> None:
        """Called once the first frame is full: on a GPU, frames grow so 256 lanes keep long runs."""
        if self.frame_size_fixed:
            return
        self.frame_size_fixed = True
        if self.requested_lanes is None and self.model is not None:
            self.device = resolve_device(self.device)
            if self.device.startswith("cuda"):
                self.frame_size = max(self.frame_size, levels.GPU_FRAME_SIZE)

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
            self._emit(footer.to_bytes(self.coded_total))
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
        self._emit(header.to_bytes(self.tally.frames + 1, self.coded_total))
        self._emit(payload)
        self.tally.add(header)
        self.raw_total += len(raw)
        self._report(self.raw_total)

    def _code_frame(self, raw: bytes) -> tuple[FrameHeader, bytes]:
        """The smallest frame among the methods the level and strategy allow (docs/format.md, "Choices")."""
        n = len(raw)
        raw_crc = crc32(raw)
        stored = FrameHeader(frames.STORED_V1.method, n, n, raw_crc, coded_crc32=raw_crc)
        best: tuple[FrameHeader, bytes, frames.FrameMethod] = stored, raw, frames.STORED_V1
        assert self.header is not None
        base = self.raw_total
        job = FrameJob(levels.QUICK_ZSTD_LEVEL, self.network, self.header.lanes)
        job.progress = lambda done: self._report(base + done)

        def consider(method: frames.FrameMethod, coded: Coded | None) -> None:
            nonlocal best
            if coded is not None and len(coded.payload) < len(best[1]):
                size, flags = len(coded.payload), coded.flags
                header = FrameHeader(
                    method.method, n, size, raw_crc, coded.lanes, crc32(coded.payload), flags
                )
                best = replace(header, version=method.version), coded.payload, method

        quick = frames.ZSTD_V1.encode(raw, n, job)
        consider(frames.ZSTD_V1, quick)
        if not self.candidates or not self._worth_trying(n, n if quick is None else len(quick.payload)):
            return best[0], best[1]
        job.zstd_level = self.preset.zstd_level
        # A frame coded with the network advances the lanes' state, and the decoder runs only the frame
        # written: after the attempts the lanes must be as the winner left them, or as they were.
        start: Any = None
        end_states: dict[int, Any] = {}
        for method in self.candidates:
            if method is frames.ZSTD_V1 and job.zstd_level == levels.QUICK_ZSTD_LEVEL:
                continue  # (the quick zstd was this candidate)
            if method.uses_network:
                if self.network is None:
                    continue
                if best[2] is frames.CM_V1 and 8 * len(best[1]) < levels.MIX_AFTER_CM_BITS_PER_BYTE * n:
                    continue  # (little left for the network to add)
                if start is None:
                    start = self.network.snapshot()
                else:
                    self.network.restore(start.copy())
            consider(method, method.encode(raw, len(best[1]), job))
            if method.uses_network:
                end_states[id(method)] = self.network.state
        if start is not None:
            self.network.restore(end_states.get(id(best[2]), start))
        return best[0], best[1]

    def _worth_trying(self, raw_size: int, zstd_size: int) -> bool:
        if raw_size <= 4:  # (a frame of a few bytes: nothing beats storing it)
            return False
        if self.strategy == "model" or raw_size < levels.CHEAP_TEST_MIN_BYTES:
            return True
        return zstd_size < raw_size * (1 - levels.INCOMPRESSIBLE_SAVING)


class StreamDecoder:
    """Reads .shz streams from `src` in one pass; `frames()` yields each frame's raw bytes, verified.

    A stream's model is loaded and checked against its header at the start, but only frames that use the
    network need it: a file whose frames are all cm, zstd or stored decodes without the model file (a
    missing or wrong model is reported at the first frame that needs it, where the engine starts too).
    After a stream's last frame its footer is checked (frame count, total size, content checksum); then
    either the input ends or another stream follows (streams one after another decode as the
    concatenation of their contents); anything else is an error."""

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
        self.network: NetworkLanes | None = None
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
        self.model_problem = None
        if header.model_id != NO_MODEL_ID:
            try:
                model = load_model(self.model_arg)
                check_model(header, model)
            except ShazipError as e:
                model, self.model_problem = None, e
        # before anything the header's settings ask for is allocated
        check_memory(header, model, self.memlimit)
        self.header = header
        self.coded_total += header.size
        self.network = None
        if model is not None:
            self.network = NetworkLanes(model, header.lanes, self.device, self.threads, self.engine_factory)

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
        walk = FrameWalk(self.src, header, frames.check_frame)
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
        method = frames.reader(frame, index)
        if method.uses_network and self.network is None and self.model_problem is not None:
            raise self.model_problem
        base_raw, base_coded = self.raw_total, self.coded_total

        def report(done: int) -> None:
            if self.progress is not None:
                self.progress(base_raw + done, base_coded)

        return method.decode(frame, payload, index, FrameJob(network=self.network, progress=report))


def check_model(header: StreamHeader, model: Any) -> None:
    if model.model_id != header.model_id:
        raise ModelMismatchError(  # (names from files, printed: no terminal escapes)
            f"needs model {printable(header.model_name) or '?'} (id {header.model_id.hex()[:16]}…), "
            f"got {printable(model.name)} (id {model.model_id.hex()[:16]}…)"
        )
