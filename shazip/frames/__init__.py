"""Frame methods: one module per method, behind one interface (`base.FrameMethod`), and this registry.

    METHODS                        every (method, version) this shazip reads, newest last per method
    writer(name) -> FrameMethod    the version the encoder writes ("zstd", "cm", "mix", ...)
    reader(frame, index)           the decoder of a frame header's method and version, or a one-line error
    check_frame(frame, header, i)  the method's rules for a frame header (a `format.FrameCheck`)
    reader_bytes(header)           the most memory one frame of the stream's possible methods allocates

The container (`shazip.format`) knows the method byte and nothing of payloads; the encoder's choice
among methods is the levels' (`shazip.levels`). Formats this shazip no longer reads are in RETIRED, so
that their files are refused with a line that names them.
"""

from __future__ import annotations

from shazip.format import FormatError, FrameHeader, Method, StreamHeader
from shazip.frames.base import Coded, FrameJob, FrameMethod
from shazip.frames.bzip2 import BZIP2_V1
from shazip.frames.cm import CM_V1
from shazip.frames.lzma import LZMA_V1
from shazip.frames.mix import MIX_V1
from shazip.frames.net import NET_V1
from shazip.frames.stored import STORED_V1
from shazip.frames.zstd import ZSTD_V1

__all__ = ["Coded", "FrameJob", "FrameMethod", "METHODS", "RETIRED", "writer", "reader", "check_frame"]

METHODS: dict[tuple[Method, int], FrameMethod] = {
    (m.method, m.version): m for m in (STORED_V1, ZSTD_V1, MIX_V1, CM_V1, BZIP2_V1, LZMA_V1, NET_V1)
}
# (method, version) -> why this shazip refuses it
RETIRED: dict[tuple[Method, int], str] = {
    (Method.MODEL, 1): "the network with in-file models, written by shazip before 2026-12-06",
}


def writer(name: str) -> FrameMethod:
    """The newest version of the method called `name`, which the encoder writes."""
    versions = [m for (method, _), m in METHODS.items() if method.name.lower() == name]
    if not versions:
        raise ValueError(f"no frame method called {name!r}")
    return max(versions, key=lambda m: m.version)


def reader(frame: FrameHeader, index: int) -> FrameMethod:
    """The method that decodes this frame; FormatError with one line if this shazip does not read it."""
    found = METHODS.get((frame.method, frame.version))
    if found is not None:
        return found
    name = frame.method.name.lower()
    if (frame.method, frame.version) in RETIRED:
        why = RETIRED[(frame.method, frame.version)]
        raise FormatError(
            f"frame {index} is {name} version {frame.version} ({why}), which this shazip no longer reads"
        )
    known = sorted(version for (method, version) in METHODS if method == frame.method)
    reads = f"{name} version {', '.join(map(str, known))}" if known else f"no {name} frames"
    newer = ": written by a newer shazip?" if not known or frame.version > known[-1] else ""
    raise FormatError(f"frame {index} is {name} version {frame.version}; this shazip reads {reads}{newer}")


def check_frame(frame: FrameHeader, header: StreamHeader, index: int) -> None:
    reader(frame, index).check(frame, header, index)


def reader_bytes(header: StreamHeader) -> int:
    """The most memory beyond frame buffers and the engine that one frame of this stream may need: over
    every method it may hold (those using the network only where the header names a model)."""
    network = any(header.model_id)
    return max(m.reader_bytes(header) for m in METHODS.values() if network or not m.uses_network)
