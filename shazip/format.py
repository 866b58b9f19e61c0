"""The .shz container: build and parse the header, frame headers and footer (spec: docs/format.md).

No model and no torch here: everything in this module works on bytes, so `shazip info` and
`shazip --help` stay fast. Layout, all integers little-endian:

    header   magic(8) version(1) flags(1) lanes(2) frame_size(4) model_id(32) name_len(1) name crc32(4)
    frame*   method(1) flags(1) lanes(2) raw_size(4) coded_size(4) raw_crc32(4) coded_crc32(4) crc32(4)
             payload(coded_size)
    end      method=0xFF(1) flags(1) reserved(2) frame_count(4) total_size(8) blake2b-128(16) crc32(4)
             trailing magic(8)

A frame header's and the footer's crc32 also cover the block's place in the stream (frame index,
offset), so a frame moved, dropped or repeated fails at its own header. The method byte names the frame's
method and its version; what each method's payload means is `shazip.frames`' business, not this module's.

Written in one pass over input of unknown length (nothing in the header depends on what follows) and
read in one pass (every length is known before the bytes it describes).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import BinaryIO

MAGIC = b"\x89SHZ\r\n\x1a\n"  # PNG-style: non-ASCII first byte, CR LF, ^Z and LF catch mangled transfers
TRAILING_MAGIC = b"\x89ZHS\n\x1a\n\r"  # the last 8 bytes of every complete .shz file
FORMAT_VERSION = 2  # what this shazip writes
READ_VERSIONS = (2,)  # what it reads
# Container versions this shazip no longer reads, with what a user needs to know to decode such a file.
RETIRED_VERSIONS = {1: "written by shazip before 2026-12-06; decode it with a shazip of that time"}

MAX_LANES = 8192
MAX_LEVEL = 9  # levels a header records (shazip.levels)
MAX_FRAME_SIZE = 64 * 1024 * 1024  # raw bytes per frame; also bounds every allocation a reader makes
MAX_FRAMES = 2**32 - 1
MAX_NAME_BYTES = 255
MODEL_ID_BYTES = 32
CONTENT_HASH_BYTES = 16

_HEADER_FIXED = struct.Struct("<8sBBHI32sB")  # magic .. name_len (49 bytes), then name, then crc32
_FRAME = struct.Struct("<BBHIIII")  # method .. coded_crc32 (20 bytes), then crc32
_FOOTER = struct.Struct("<BBHIQ16s")  # method=END .. content hash (32 bytes), then crc32, trailing magic
_U32 = struct.Struct("<I")
_PLACE = struct.Struct("<IQ")  # version 2: frame index (the footer: frame count), stream offset of the block

FRAME_HEADER_SIZE = _FRAME.size + 4  # 24
FOOTER_SIZE = _FOOTER.size + 4 + len(TRAILING_MAGIC)  # 44
MIN_HEADER_SIZE = _HEADER_FIXED.size + 4  # 53


class Method(IntEnum):
    """The method numbers of docs/format.md, "Frames" (the payload of each: `shazip.frames`)."""

    STORED = 1
    ZSTD = 2
    MODEL = 3  # retired: the network with in-file models over a range coder (no longer read)
    MIX = 4
    CM = 5
    BZIP2 = 6
    LZMA = 7
    NET = 8
    END = 0xFF  # not a frame: the end-of-stream marker that starts the footer


# The method byte: the method number in its low 5 bits, its version - 1 in the high 3 (so the version-1
# methods of the first files are their plain numbers). Number 31 is reserved: 0xFF is the end marker.
METHOD_NUMBER_BITS = 5
MAX_METHOD_VERSION = 1 << (8 - METHOD_NUMBER_BITS)


def method_byte(method: int, version: int) -> int:
    if not 1 <= method < (1 << METHOD_NUMBER_BITS) - 1 or not 1 <= version <= MAX_METHOD_VERSION:
        raise ValueError(f"no method byte for method {method} version {version}")
    return method | (version - 1) << METHOD_NUMBER_BITS


def split_method_byte(byte: int) -> tuple[int, int]:
    """(method number, version) of a frame header's method byte."""
    return byte & ((1 << METHOD_NUMBER_BITS) - 1), (byte >> METHOD_NUMBER_BITS) + 1


class FrameFlag(IntFlag):
    """Options of the frames that code text with the network (mix, net); other methods take none."""

    CRLF_AS_LF = 0x01  # the frame was coded with every CR LF as LF; its payload starts with that size


def lane_layout(n: int, lanes: int) -> tuple[int, int, int]:
    """How a model frame of n bytes is split into `lanes` contiguous runs: lane i gets [i*L, min((i+1)*L, n)),
    L = ceil(n / lanes).

    Returns (L, full, rest): `full` lanes hold L bytes, then one lane holds `rest` (< L) bytes if rest > 0,
    then empty lanes. The lanes active at step t are a prefix: full + (1 if t < rest else 0)."""
    run = -(-n // lanes)
    full, rest = divmod(n, run)
    return run, full, rest


# --- errors -------------------------------------------------------------------------------------------


class ShazipError(Exception):
    """Base of every error shazip raises about data, files or models."""


class FormatError(ShazipError):
    """Not a .shz file, an unsupported version, reserved bits set, or a field out of range."""


class ChecksumError(ShazipError):
    """A checksum did not match: the data is corrupt."""


class TruncatedError(ShazipError):
    """The input ended before the end-of-stream footer."""


class ModelMismatchError(ShazipError):
    """The file was made with a different model than the one offered for decoding."""


class ModelError(ShazipError):
    """A model file could not be loaded or used."""


class MemoryLimitError(ShazipError):
    """Decoding (or writing) the stream would need more memory than the limit allows."""


# --- checksums ----------------------------------------------------------------------------------------


def crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def block_crc(body: bytes | bytearray | memoryview, index: int, offset: int) -> int:
    """The CRC-32 that ends a frame header or the footer: of the body followed by `index` (uint32: the
    frame's number counted from 1; for the footer, the frame count) and `offset` (uint64: where the block
    starts, in bytes from the start of the stream), so that a block that is not where the writer put it
    fails its own check (docs/format.md)."""
    return zlib.crc32(_PLACE.pack(index, offset), zlib.crc32(body)) & 0xFFFFFFFF


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences, carriage returns,
    backspaces), bidirectional overrides and other non-printable characters become \\xNN / \\uNNNN, as
    repr() writes them; letters of any script stay. For names read from files."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def content_hasher() -> hashlib._Hash:
    """The whole-content checksum: blake2b with a 128-bit digest over all raw bytes."""
    return hashlib.blake2b(digest_size=CONTENT_HASH_BYTES)


# --- header -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder must know before the first frame."""

    lanes: int  # lane count of model frames (frames record their own count, <= this)
    frame_size: int  # upper bound on any frame's raw size
    model_id: bytes  # 32-byte sha256 identity of the model (shazip.modelfile)
    model_name: str
    version: int = FORMAT_VERSION
    level: int = 0  # the compression level that wrote the stream, 1..9 (0: not recorded)

    def __post_init__(self) -> None:
        if self.version not in READ_VERSIONS:
            raise ValueError(f"format version must be one of {READ_VERSIONS}, got {self.version}")
        if not 0 <= self.level <= MAX_LEVEL:
            raise ValueError(f"level {self.level} cannot be recorded in a header")
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}, got {self.lanes}")
        if not 1 <= self.frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame size must be in 1..{MAX_FRAME_SIZE}, got {self.frame_size}")
        if len(self.model_id) != MODEL_ID_BYTES:
            raise ValueError(f"model id must be {MODEL_ID_BYTES} bytes")
        if len(self.model_name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(f"model name longer than {MAX_NAME_BYTES} bytes (UTF-8)")

    def to_bytes(self) -> bytes:
        name = self.model_name.encode("utf-8")
        body = (
            _HEADER_FIXED.pack(
                MAGIC, self.version, self.level, self.lanes, self.frame_size, self.model_id, len(name)
            )
            + name
        )
        return body + _U32.pack(crc32(body))

    @property
    def size(self) -> int:
        return MIN_HEADER_SIZE + len(self.model_name.encode("utf-8"))


def read_header(stream: BinaryIO, magic: bytes | None = None) -> StreamHeader:
    """Read and check a stream header (its first 8 bytes already read, if `magic` is given). Raises
    FormatError / ChecksumError / TruncatedError."""
    if magic is None:
        magic = read_exact(stream, len(MAGIC), "the header", allow_empty=True)
    if not magic:
        raise FormatError("not a .shz file (empty input)")
    if magic != MAGIC:
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            raise TruncatedError("truncated (inside the header)")
        raise FormatError("not a .shz file (bad magic)")
    rest = read_exact(stream, _HEADER_FIXED.size - len(MAGIC), "the header")
    _, version, flags, lanes, frame_size, model_id, name_len = _HEADER_FIXED.unpack(magic + rest)
    # The version is checked before the checksum: a later version may lay out its header differently.
    if version not in READ_VERSIONS:
        known = " and ".join(map(str, READ_VERSIONS))
        why = RETIRED_VERSIONS.get(version, "written by a newer shazip?")
        raise FormatError(
            f"format version {version}, which this shazip does not read (it reads {known}): {why}"
        )
    name = read_exact(stream, name_len, "the header")
    stored_crc = _U32.unpack(read_exact(stream, 4, "the header"))[0]
    if crc32(magic + rest + name) != stored_crc:
        raise ChecksumError("corrupt header (checksum)")
    # The level is kept in the low 4 bits of the flags byte; every other bit is reserved.
    level = flags & 0x0F
    if flags != level or level > MAX_LEVEL:
        raise FormatError(f"reserved header flags set (0x{flags:02x}): written by a newer shazip?")
    try:
        model_name = name.decode("utf-8")
        return StreamHeader(lanes, frame_size, model_id, model_name, version, level)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"invalid header ({e})") from None


# --- frames -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameHeader:
    method: Method
    raw_size: int
    coded_size: int
    raw_crc32: int  # CRC-32 of the frame's raw (decoded) bytes
    lanes: int = 0  # frames coded with the network: lanes used (1..header lanes); other methods: 0
    # CRC-32 of the payload: corruption is found before any model time is spent, and a flipped bit an
    # arithmetic decoder would not notice (its last bytes have slack) is still an error.
    coded_crc32: int = 0
    flags: int = 0  # FrameFlag bits, where the method takes them
    version: int = 1  # the method's version (docs/format.md, "Method versions")

    @property
    def label(self) -> str:
        """ "mix v1" """
        return f"{self.method.name.lower()} v{self.version}"

    def to_bytes(self, index: int, offset: int) -> bytes:
        """The 24-byte frame header of frame number `index` (from 1) starting at stream offset `offset`."""
        body = _FRAME.pack(
            method_byte(self.method, self.version),
            self.flags,
            self.lanes,
            self.raw_size,
            self.coded_size,
            self.raw_crc32,
            self.coded_crc32,
        )
        return body + _U32.pack(block_crc(body, index, offset))

    def validate(self, header: StreamHeader, index: int) -> None:
        """Check the fields every method shares against the stream header; raise FormatError naming the
        frame. (Each method's own rules: `shazip.frames`.)"""
        if not 1 <= self.raw_size <= header.frame_size:
            raise FormatError(
                f"corrupt frame {index} (raw size {self.raw_size} outside 1..{header.frame_size})"
            )
        if self.lanes > header.lanes:
            raise FormatError(f"corrupt frame {index} (lane count {self.lanes} outside 0..{header.lanes})")


@dataclass(frozen=True)
class Footer:
    frame_count: int
    total_size: int
    content_hash: bytes

    def to_bytes(self, offset: int) -> bytes:
        """The end marker and footer, starting at stream offset `offset`."""
        body = _FOOTER.pack(Method.END, 0, 0, self.frame_count, self.total_size, self.content_hash)
        return body + _U32.pack(block_crc(body, self.frame_count, offset)) + TRAILING_MAGIC


def read_block(stream: BinaryIO, index: int, offset: int) -> FrameHeader | Footer:
    """Read the next block: the header of frame number `index` (counted from 1) or the end-of-stream
    footer (after index - 1 frames), starting at stream offset `offset`."""
    first = read_exact(stream, FRAME_HEADER_SIZE, f"frame {index} header", allow_empty=True)
    if not first:
        raise TruncatedError(f"truncated (no end-of-stream footer after {index - 1} frames)")
    if len(first) < FRAME_HEADER_SIZE:
        raise TruncatedError(f"truncated (inside frame {index} header)")
    if first[0] == Method.END:
        rest = read_exact(stream, FOOTER_SIZE - FRAME_HEADER_SIZE, "the footer")
        data = first + rest
        body, stored_crc, trailing = data[: _FOOTER.size], data[_FOOTER.size : _FOOTER.size + 4], data[-8:]
        if block_crc(body, index - 1, offset) != _U32.unpack(stored_crc)[0]:
            raise ChecksumError("corrupt footer (checksum)")
        if trailing != TRAILING_MAGIC:
            raise FormatError("corrupt footer (trailing magic)")
        _, flags, reserved, frame_count, total_size, content_hash = _FOOTER.unpack(body)
        if flags or reserved:
            raise FormatError("reserved footer bits set")
        return Footer(frame_count, total_size, content_hash)
    byte, flags, lanes, raw_size, coded_size, raw_crc, coded_crc = _FRAME.unpack(first[: _FRAME.size])
    if block_crc(first[: _FRAME.size], index, offset) != _U32.unpack(first[_FRAME.size :])[0]:
        # (this is also what a frame moved, dropped or repeated looks like)
        raise ChecksumError(f"corrupt frame {index} (header checksum)")
    number, version = split_method_byte(byte)
    try:
        method = Method(number)
    except ValueError:
        raise FormatError(
            f"frame {index} uses method {number}, which this shazip does not know: written by a newer shazip?"
        ) from None
    return FrameHeader(method, raw_size, coded_size, raw_crc, lanes, coded_crc, flags, version)


def read_exact(stream: BinaryIO, n: int, what: str, allow_empty: bool = False) -> bytes:
    """Read exactly n bytes (looping over short reads, as pipes give); TruncatedError if the input ends.

    With allow_empty, a short result is returned instead, so the caller can word its own message."""
    parts = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    data = b"".join(parts)
    if got < n and not allow_empty:
        raise TruncatedError(f"truncated (inside {what})")
    return data


# --- walking the frames ------------------------------------------------------------------------------


@dataclass
class FrameTally:
    """What a stream's frames add up to: counts and sizes, per method too (no per-frame list: a stream may
    hold billions of frames)."""

    frames: int = 0
    raw_size: int = 0
    coded_size: int = 0  # frame headers and payloads
    methods: dict[str, int] = field(default_factory=dict)  # frames per method name
    raw_by_method: dict[str, int] = field(default_factory=dict)  # raw bytes per method name

    def add(self, frame: FrameHeader) -> None:
        name = frame.method.name.lower()
        self.frames += 1
        self.raw_size += frame.raw_size
        self.coded_size += FRAME_HEADER_SIZE + frame.coded_size
        self.methods[name] = self.methods.get(name, 0) + 1
        self.raw_by_method[name] = self.raw_by_method.get(name, 0) + frame.raw_size

    def describe(self) -> str:
        """ "3 model, 1 zstd" (or "none")."""
        return ", ".join(f"{count} {method}" for method, count in sorted(self.methods.items())) or "none"


# check(frame, stream header, index): the method's own rules for a frame header; raises FormatError
FrameCheck = Callable[[FrameHeader, StreamHeader, int], None]


class FrameWalk:
    """The frames of a stream after its header, in order: `for index, frame in walk:` gives each frame
    header, checked against the stream header (index counted from 1); the caller then reads or skips its
    payload. When the end marker comes, its footer is checked against what was walked (frame count, total
    size) and kept in `footer`; the content hash is the decoder's to check."""

    def __init__(self, stream: BinaryIO, header: StreamHeader, check: FrameCheck | None = None) -> None:
        self.stream = stream
        self.header = header
        self.check = check
        self.tally = FrameTally()
        self.footer: Footer | None = None

    @property
    def offset(self) -> int:
        """Stream offset of the next block."""
        return self.header.size + self.tally.coded_size

    def __iter__(self) -> Iterator[tuple[int, FrameHeader]]:
        while True:
            index = self.tally.frames + 1
            block = read_block(self.stream, index, self.offset)
            if isinstance(block, Footer):
                check_footer(block, self.tally.frames, self.tally.raw_size)
                self.footer = block
                return
            block.validate(self.header, index)
            if self.check is not None:
                self.check(block, self.header, index)
            yield index, block
            self.tally.add(block)


@dataclass(frozen=True)
class StreamInfo:
    """Everything `shazip info` shows: the header, what the frames add up to, and the footer."""

    header: StreamHeader
    tally: FrameTally
    footer: Footer

    @property
    def raw_size(self) -> int:
        return self.footer.total_size

    @property
    def file_size(self) -> int:
        return self.header.size + self.tally.coded_size + FOOTER_SIZE

    def method_counts(self) -> dict[str, int]:
        return dict(self.tally.methods)


def scan(
    stream: BinaryIO,
    on_frame: Callable[[int, FrameHeader], None] | None = None,
    check: FrameCheck | None = None,
) -> StreamInfo:
    """Read a .shz stream's header, frame headers and footer, skipping payloads (seeking when possible);
    `on_frame(index, frame)` sees each frame header, after `check` (the methods' own rules:
    `shazip.frames.check_frame`).

    Checks every structural checksum, the frame count and total size, and that nothing follows the footer;
    it cannot check the content itself (that needs decoding: `shazip test`)."""
    info = _scan_one(stream, read_header(stream), on_frame, check)
    check_end_of_input(stream)
    return info


def scan_streams(
    stream: BinaryIO,
    on_frame: Callable[[int, FrameHeader], None] | None = None,
    check: FrameCheck | None = None,
) -> Iterator[StreamInfo]:
    """`scan` over a concatenation: each stream's StreamInfo in turn. After a footer either the input
    ends or another stream's magic follows; anything else is an error (as for the decoder)."""
    header = read_header(stream)
    while True:
        yield _scan_one(stream, header, on_frame, check)
        magic = read_exact(stream, len(MAGIC), "the next stream", allow_empty=True)
        if not magic:
            return
        if magic != MAGIC:
            if MAGIC.startswith(magic):
                raise TruncatedError("truncated (inside the next stream's header)")
            raise FormatError("trailing data after the end of the .shz stream")
        header = read_header(stream, magic)


def _scan_one(
    stream: BinaryIO,
    header: StreamHeader,
    on_frame: Callable[[int, FrameHeader], None] | None,
    check: FrameCheck | None,
) -> StreamInfo:
    walk = FrameWalk(stream, header, check)
    for index, frame in walk:
        if on_frame is not None:
            on_frame(index, frame)
        skip_exact(stream, frame.coded_size, f"frame {index}")
    assert walk.footer is not None
    return StreamInfo(header, walk.tally, walk.footer)


def frame_headers(stream: BinaryIO, check: FrameCheck | None = None) -> list[FrameHeader]:
    """Every frame header of a checked stream, in order (scan keeps none: this is for small streams)."""
    frames: list[FrameHeader] = []
    scan(stream, lambda index, frame: frames.append(frame), check)
    return frames


def assemble(header: StreamHeader, frames: Iterable[tuple[FrameHeader, bytes]], footer: Footer) -> bytes:
    """A whole stream from its parts, each block's checksum bound to its place (for tools and tests that
    build streams by hand; the encoder writes the same bytes as it goes)."""
    parts = [header.to_bytes()]
    offset = header.size
    for index, (frame, payload) in enumerate(frames, 1):
        parts += [frame.to_bytes(index, offset), payload]
        offset += FRAME_HEADER_SIZE + len(payload)
    parts.append(footer.to_bytes(offset))
    return b"".join(parts)


def check_footer(footer: Footer, frame_count: int, total_size: int) -> None:
    if footer.frame_count != frame_count:
        raise FormatError(f"corrupt footer (says {footer.frame_count} frames, found {frame_count})")
    if footer.total_size != total_size:
        raise FormatError(f"corrupt footer (says {footer.total_size} bytes, frames hold {total_size})")


def check_end_of_input(stream: BinaryIO) -> None:
    if stream.read(1):
        raise FormatError("trailing data after the end of the .shz stream")


def skip_exact(stream: BinaryIO, n: int, what: str) -> None:
    """Skip n bytes; TruncatedError if fewer remain. Seeks on seekable files, reads in chunks otherwise."""
    if n == 0:
        return
    seekable = False
    try:
        seekable = stream.seekable()
    except (AttributeError, OSError):
        pass
    if seekable:
        here = stream.tell()
        end = stream.seek(0, 2)
        if end - here < n:
            raise TruncatedError(f"truncated (inside {what})")
        stream.seek(here + n)
        return
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if got == 0:
            raise TruncatedError(f"truncated (inside {what})")
        n -= got
