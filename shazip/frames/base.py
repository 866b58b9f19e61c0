"""What every frame method provides: one small interface (docs/internals.md, "Adding a frame method").

A method is a `FrameMethod` instance in a module of its own in this package, listed once in
`shazip.frames.METHODS`. Its number is in `shazip.format.Method`, its version in its `version`: a change to
what it writes for any input is a new version (a new instance beside the old one, whose decoder stays).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shazip.format import FormatError, FrameHeader, Method, StreamHeader

if TYPE_CHECKING:
    from shazip.frames.network import NetworkLanes


@dataclass(frozen=True)
class Coded:
    """A frame's payload as a method wrote it, with the header fields that go with it."""

    payload: bytes
    lanes: int = 0
    flags: int = 0


@dataclass
class FrameJob:
    """What a method needs beside the frame's bytes, in the encoder and in the decoder."""

    zstd_level: int = 19  # the encoder's zstd level for this frame
    network: NetworkLanes | None = None  # the network's lanes, carried from frame to frame (or none)
    lanes: int = 0  # the stream header's lane count
    progress: Callable[[int], None] | None = None  # raw bytes of this frame done so far


class FrameMethod:
    """One version of one frame method. Subclasses set the class attributes and implement encode and
    decode; the defaults suit a method without lanes, flags or the network."""

    method: Method
    version: int = 1
    uses_network: bool = False  # decoding needs the network (the model file the header names)
    uses_lanes: bool = False  # the frame header's lanes field is 1..header lanes (else 0)
    flags: int = 0  # the FrameFlag bits the method may carry
    # payload size rule: "smaller" (1 <= coded < raw) or "equal" (coded == raw)
    coded_size: str = "smaller"

    @property
    def name(self) -> str:
        return self.method.name.lower()

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def check(self, frame: FrameHeader, header: StreamHeader, index: int) -> None:
        """The method's rules for a frame header (before its payload is read); FormatError if broken."""

        def bad(problem: str) -> FormatError:
            return FormatError(f"corrupt frame {index} ({self.name} frame: {problem})")

        if frame.flags & ~self.flags:
            raise bad(f"flags 0x{frame.flags:02x}")
        if self.uses_lanes and not 1 <= frame.lanes <= header.lanes:
            raise bad(f"lane count {frame.lanes} outside 1..{header.lanes}")
        if not self.uses_lanes and frame.lanes != 0:
            raise bad("lanes != 0")
        if self.coded_size == "equal" and frame.coded_size != frame.raw_size:
            raise bad("coded size != raw size")
        if self.coded_size == "smaller" and not 1 <= frame.coded_size < frame.raw_size:
            raise bad(f"coded size {frame.coded_size} not in 1..raw size - 1")
        self.check_more(frame, index)

    def check_more(self, frame: FrameHeader, index: int) -> None:
        """Rules beyond the shared ones (a method may bound its payload further)."""

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        """The frame's payload, or None if it would not be smaller than `limit` bytes."""
        raise NotImplementedError

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        """The raw bytes of frame number `index`; ChecksumError (or FormatError) if the payload is bad."""
        raise NotImplementedError

    def reader_bytes(self, header: StreamHeader) -> int:
        """The memory, beyond the frame buffers and the engine, that decoding one frame of this method
        allocates at most (tables), for frames of the header's frame size and lanes."""
        return 0


def network_of(job: FrameJob, index: int) -> NetworkLanes:
    """The network's lanes a mix or net frame needs; a file without a model has none."""
    if job.network is None:
        raise FormatError(f"corrupt frame {index} (a network frame in a file written without a model)")
    return job.network


def bounded(frame: FrameHeader, index: int, decompress: Callable[[], Any], name: str) -> bytes:
    """A general-purpose codec's output for a frame, which must be exactly raw_size bytes; any error of the
    codec is a corrupt frame."""
    from shazip.format import ChecksumError

    try:
        raw = decompress()
    except Exception as e:  # noqa: BLE001 - bz2 raises OSError/EOFError, lzma its LZMAError, zstd ZstdError
        raise ChecksumError(f"corrupt frame {index} ({name}: {e})") from None
    if len(raw) != frame.raw_size:
        raise ChecksumError(f"corrupt frame {index} ({name} size)")
    return raw
