"""The public Python API, in the shape of python-zstandard.

    shazip.compress(data, level=6) -> bytes   shazip.decompress(data) -> bytes
    c = shazip.Compressor(level=6)            d = shazip.Decompressor()      (the model loaded once, reused)
    c.compress(data); c.stream_writer(f)      d.decompress(data); d.stream_reader(f)
    shazip.open(path_or_file, "wb") / "rb"    streaming writer / reader objects (also "wt"/"rt")
    shazip.frame_parameters(source)           the stream header (model, level, lanes, frame size)
    shazip.info(source)                       header, frames and footer, checked, without decoding

`model` everywhere: None (the embedded default model), a path to a model file, or a loaded ModelFile.
`device`: "auto" (a GPU if one is there), "cpu", "cuda", "cuda:N". `threads`: CPU threads for the model
(None or 0: all). Files decode on any device and with any thread count. Several .shz streams one after
another decode as the concatenation of their contents (as `cat a.zst b.zst | zstd -d` does).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any, BinaryIO

from shazip import levels, runtime
from shazip.format import StreamHeader, StreamInfo, read_header, scan
from shazip.frames import check_frame
from shazip.runtime import DEFAULT_MEMLIMIT
from shazip.stream import ProgressCallback, StreamDecoder, StreamEncoder

Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


class _Runtime:
    """The model (loaded once) and engines (made once per device) that a Compressor or Decompressor
    reuses for every input."""

    def __init__(self, model: Any, device: str | None, threads: int | None) -> None:
        self.model_arg = model
        self.device = device
        self.threads = runtime.resolve_threads(threads)
        self._engines: dict[str, Any] = {}

    def engine_factory(self, model: Any, device: str, threads: int | None) -> Any:
        key = f"{device}/{threads}/{model.model_id.hex()}"
        if key not in self._engines:
            self._engines[key] = runtime.default_engine_factory(model, device, threads)
        return self._engines[key]


class Compressor:
    """Compresses many inputs with one level and model: the model file is read and its engine built once.

    Options: level (1..9), model, device, threads; for tests and measurements also lanes, frame_size and
    strategy (see `shazip.stream.StreamEncoder`)."""

    def __init__(
        self,
        level: int = levels.DEFAULT_LEVEL,
        model: Any = None,
        *,
        device: str | None = "auto",
        threads: int | None = None,
        lanes: int | None = None,
        frame_size: int | None = None,
        strategy: str = "auto",
        memlimit: int | None = DEFAULT_MEMLIMIT,
    ) -> None:
        levels.level(level)  # (checked here, at construction)
        self._runtime = _Runtime(model, device, threads)
        self._options = {"level": level, "lanes": lanes, "frame_size": frame_size, "strategy": strategy}
        self._options["memlimit"] = memlimit
        uses_network = levels.uses_network(levels.level(level), strategy)
        self._model = runtime.load_model(model) if uses_network else None

    def _encoder(self, out: BinaryIO, progress: ProgressCallback | None = None) -> StreamEncoder:
        rt = self._runtime
        return StreamEncoder(
            out, self._model, device=rt.device, threads=rt.threads, progress=progress,
            engine_factory=rt.engine_factory, **self._options,
        )  # fmt: skip

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """`data` as one complete .shz stream."""
        out = io.BytesIO()
        encoder = self._encoder(out)
        encoder.write(data)
        encoder.finish()
        return out.getvalue()

    def stream_writer(
        self, fileobj: BinaryIO, *, closefd: bool = False, progress: ProgressCallback | None = None
    ) -> ShazipWriter:
        """A writable binary stream compressing into fileobj; closing it writes the footer."""
        return ShazipWriter(fileobj, closefd=closefd, encoder=self._encoder(fileobj, progress))


class Decompressor:
    """Decompresses many inputs with one model: the model file is read and its engine built once."""

    def __init__(
        self,
        model: Any = None,
        *,
        device: str | None = "auto",
        threads: int | None = None,
        memlimit: int | None = DEFAULT_MEMLIMIT,
    ) -> None:
        self._runtime = _Runtime(model, device, threads)
        self.memlimit = memlimit

    def _decoder(self, src: BinaryIO, progress: ProgressCallback | None = None) -> StreamDecoder:
        rt = self._runtime
        return StreamDecoder(
            src, rt.model_arg, device=rt.device, threads=rt.threads, progress=progress,
            engine_factory=rt.engine_factory, memlimit=self.memlimit,
        )  # fmt: skip

    def decompress(self, data: bytes | bytearray | memoryview) -> bytes:
        """The contents of one or more complete .shz streams; raises a ShazipError subclass on any
        problem."""
        return b"".join(self._decoder(io.BytesIO(bytes(data))).frames())

    def stream_reader(
        self, fileobj: BinaryIO, *, closefd: bool = False, progress: ProgressCallback | None = None
    ) -> ShazipReader:
        """A readable binary stream decompressing fileobj frame by frame, verifying as it goes."""
        return ShazipReader(fileobj, closefd=closefd, decoder=self._decoder(fileobj, progress))


_default: dict[tuple, Any] = {}


def _cached(kind: type, key: tuple, **options: Any) -> Any:
    """One Compressor/Decompressor per setting for the module-level functions (the default model and its
    engine are then built once per process)."""
    if (kind, key) not in _default:
        if len(_default) > 8:
            _default.clear()
        _default[(kind, key)] = kind(**options)
    return _default[(kind, key)]


def compress(
    data: bytes | bytearray | memoryview,
    model: Any = None,
    *,
    level: int = levels.DEFAULT_LEVEL,
    device: str | None = "auto",
    threads: int | None = None,
    memlimit: int | None = DEFAULT_MEMLIMIT,
    **options: Any,
) -> bytes:
    """Compress `data` into a complete .shz stream (options: lanes, frame_size, strategy). Refused
    (MemoryLimitError) if decoding it would need more than `memlimit` bytes; None: no limit."""
    if model is None and not options:
        key = (level, device, threads, memlimit)
        settings = {"level": level, "device": device, "threads": threads, "memlimit": memlimit}
        return _cached(Compressor, key, **settings).compress(data)
    compressor = Compressor(level, model, device=device, threads=threads, memlimit=memlimit, **options)
    return compressor.compress(data)


def decompress(
    data: bytes | bytearray | memoryview,
    model: Any = None,
    *,
    device: str | None = "auto",
    threads: int | None = None,
    memlimit: int | None = DEFAULT_MEMLIMIT,
) -> bytes:
    """Decompress one or more complete .shz streams; raises a ShazipError subclass on any problem
    (MemoryLimitError when a header asks for more than `memlimit` bytes; None: no limit)."""
    if model is None:
        key = (device, threads, memlimit)
        return _cached(Decompressor, key, device=device, threads=threads, memlimit=memlimit).decompress(data)
    return Decompressor(model, device=device, threads=threads, memlimit=memlimit).decompress(data)


class ShazipWriter(io.BufferedIOBase):
    """A writable binary stream that compresses into `fileobj`. `close()` writes the footer."""

    def __init__(
        self,
        fileobj: BinaryIO,
        model: Any = None,
        *,
        closefd: bool = False,
        encoder: StreamEncoder | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._closefd = closefd
        self._encoder = encoder or StreamEncoder(fileobj, model, **options)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed ShazipWriter")
        return self._encoder.write(data)

    def flush(self) -> None:
        # Frames are written when full; flushing does not cut a frame short (that would change the
        # compressed result depending on when a caller flushes). It only flushes the file below.
        if not self.closed:
            self._fileobj.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._encoder.failed:  # after an error the stream stays without a footer: invalid
                self._encoder.finish()
        finally:
            try:
                super().close()  # flushes the file below, so it must still be open
            finally:
                if self._closefd:
                    self._fileobj.close()

    @property
    def raw_bytes(self) -> int:
        """Raw bytes coded so far (the current partial frame not included)."""
        return self._encoder.raw_total

    @property
    def coded_bytes(self) -> int:
        return self._encoder.coded_total


class ShazipReader(io.BufferedIOBase):
    """A readable binary stream that decompresses `fileobj`, frame by frame, verifying as it goes."""

    def __init__(
        self,
        fileobj: BinaryIO,
        model: Any = None,
        *,
        closefd: bool = False,
        decoder: StreamDecoder | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._closefd = closefd
        self._decoder = decoder or StreamDecoder(fileobj, model, **options)
        self._frames = self._decoder.frames()
        self._buffer = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    @property
    def header(self) -> StreamHeader:
        return self._decoder.read_header()

    def _fill(self) -> bool:
        """Decode the next frame into the buffer; False at the end of the stream (footer verified)."""
        while not self._buffer and not self._eof:
            try:
                self._buffer = memoryview(next(self._frames))
            except StopIteration:
                self._eof = True
        return bool(self._buffer)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed ShazipReader")
        if size is None or size < 0:
            parts = []
            while self._fill():
                parts.append(bytes(self._buffer))
                self._buffer = memoryview(b"")
            return b"".join(parts)
        parts = []
        wanted = size
        while wanted > 0 and self._fill():
            piece = self._buffer[:wanted]
            self._buffer = self._buffer[len(piece) :]
            parts.append(bytes(piece))
            wanted -= len(piece)
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        """At most one frame's worth: whatever is decoded, or the next frame."""
        if self.closed:
            raise ValueError("read from a closed ShazipReader")
        if not self._fill():
            return b""
        if size is None or size < 0:
            size = len(self._buffer)
        piece = bytes(self._buffer[:size])
        self._buffer = self._buffer[len(piece) :]
        return piece

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        piece = self.read(len(view))
        view[: len(piece)] = piece
        return len(piece)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._closefd:
                self._fileobj.close()
        finally:
            super().close()


def open(  # noqa: A001 - the python-zstandard / gzip spelling
    file: str | os.PathLike | BinaryIO,
    mode: str = "rb",
    model: Any = None,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    **options: Any,
) -> IO[Any]:
    """Open a .shz file (a path or a binary file object) for streaming reading or writing.

    mode: "rb"/"r" (read), "wb"/"w" (write), "xb"/"x" (write, the file must not exist), with "t" for a text
    wrapper. Options for writing: those of `compress` (level, device, threads, lanes, frame_size,
    strategy, progress); for reading: device, threads, progress. Closing a writer writes the footer."""
    text = "t" in mode
    base = mode.replace("t", "").replace("b", "")
    if base not in ("r", "w", "x") or ("t" in mode and "b" in mode):
        raise ValueError(f"invalid mode {mode!r}: use r, w or x, with b or t")
    if not text and (encoding or errors or newline):
        raise ValueError("encoding, errors and newline are only for text mode")
    opened = isinstance(file, (str, os.PathLike))
    fileobj: BinaryIO = Path(file).open(base + "b") if opened else file  # type: ignore[assignment]
    stream: io.BufferedIOBase
    try:
        if base == "r":
            stream = ShazipReader(fileobj, model, closefd=opened, **options)
        else:
            stream = ShazipWriter(fileobj, model, closefd=opened, **options)
    except BaseException:
        if opened:
            fileobj.close()
        raise
    if text:
        return io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline=newline)
    return stream


def _as_stream(source: Source) -> tuple[BinaryIO, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        return Path(source).open("rb"), True
    return source, False


def frame_parameters(source: Source) -> StreamHeader:
    """The stream header of a .shz file or bytes: model identity and name, lanes, frame size, version."""
    stream, owned = _as_stream(source)
    try:
        return read_header(stream)
    finally:
        if owned:
            stream.close()


def info(source: Source) -> StreamInfo:
    """Header, every frame header and the footer of a .shz file or bytes, checked, without decoding."""
    stream, owned = _as_stream(source)
    try:
        return scan(stream, check=check_frame)
    finally:
        if owned:
            stream.close()


__all__ = [
    "Compressor",
    "Decompressor",
    "ProgressCallback",
    "ShazipReader",
    "ShazipWriter",
    "compress",
    "decompress",
    "frame_parameters",
    "info",
    "open",
]
