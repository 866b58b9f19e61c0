"""The public Python API, in the shape of python-zstandard.

    shazip.compress(data) -> bytes            shazip.decompress(data) -> bytes
    shazip.open(path_or_file, "wb") / "rb"    streaming writer / reader objects (also "wt"/"rt")
    shazip.frame_parameters(source)           the stream header (model, lanes, frame size), no decoding
    shazip.info(source)                       header, every frame header and the footer, no decoding

`model` everywhere: None (the embedded default model), a path to a model file, or a loaded ModelFile.
`device`: "auto" (a GPU if torch sees one), "cpu", "cuda", "cuda:N". `threads`: torch's CPU thread count
(process-wide, as torch.set_num_threads). Files decode on any device and with any thread count.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any, BinaryIO

from shazip.format import StreamHeader, StreamInfo, read_header, scan
from shazip.runtime import DEFAULT_MEMLIMIT
from shazip.stream import ProgressCallback, StreamDecoder, StreamEncoder

Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


def compress(
    data: bytes | bytearray | memoryview,
    model: Any = None,
    *,
    strategy: str = "auto",
    lanes: int | None = None,
    frame_size: int | None = None,
    device: str | None = "auto",
    threads: int | None = None,
    memlimit: int | None = DEFAULT_MEMLIMIT,
) -> bytes:
    """Compress `data` into a complete .shz stream (refused, MemoryLimitError, if decoding it would need
    more than `memlimit` bytes; None: no limit)."""
    out = io.BytesIO()
    encoder = StreamEncoder(
        out,
        model,
        strategy=strategy,
        lanes=lanes,
        frame_size=frame_size,
        device=device,
        threads=threads,
        memlimit=memlimit,
    )
    encoder.write(data)
    encoder.finish()
    return out.getvalue()


def decompress(
    data: bytes | bytearray | memoryview,
    model: Any = None,
    *,
    device: str | None = "auto",
    threads: int | None = None,
    memlimit: int | None = DEFAULT_MEMLIMIT,
) -> bytes:
    """Decompress a complete .shz stream; raises a ShazipError subclass on any problem (MemoryLimitError
    when its header asks for more than `memlimit` bytes; None: no limit)."""
    decoder = StreamDecoder(io.BytesIO(bytes(data)), model, device=device, threads=threads, memlimit=memlimit)
    return b"".join(decoder.frames())


class ShazipWriter(io.BufferedIOBase):
    """A writable binary stream that compresses into `fileobj`. `close()` writes the footer."""

    def __init__(
        self, fileobj: BinaryIO, model: Any = None, *, closefd: bool = False, **options: Any
    ) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._closefd = closefd
        self._encoder = StreamEncoder(fileobj, model, **options)

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
        self, fileobj: BinaryIO, model: Any = None, *, closefd: bool = False, **options: Any
    ) -> None:
        super().__init__()
        self._fileobj = fileobj
        self._closefd = closefd
        self._decoder = StreamDecoder(fileobj, model, **options)
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
    wrapper. Options for writing: those of `compress` (strategy, lanes, frame_size, device, threads,
    progress); for reading: device, threads, progress. Closing a writer writes the footer."""
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
        return scan(stream)
    finally:
        if owned:
            stream.close()


__all__ = [
    "ProgressCallback",
    "ShazipReader",
    "ShazipWriter",
    "compress",
    "decompress",
    "frame_parameters",
    "info",
    "open",
]
