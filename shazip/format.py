"""The .shz container: build and parse the header, frame headers and footer (spec: docs/format.md).

No model and no torch here: everything in this module works on bytes, so `shazip info` and
`shazip --help` stay fast. Layout, all integers little-endian:

    header   magic(8) version(1) flags(1) lanes(2) frame_size(4) model_id(32) name_len(1) name crc32(4)
    frame*   method(1) flags(1) lanes(2) raw_size(4) coded_size(4) raw_crc32(4) coded_crc32(4) crc32(4)
             payload(coded_size)
    end      method=0xFF(1) flags(1) reserved(2) frame_count(4) total_size(8) blake2b-128(16) crc32(4)
             trailing magic(8)

From version 2 on, a frame header's and the footer's crc32 also cover the block's place in the stream
(frame index, offset), so a frame moved, dropped or repeated fails at its own header.

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
READ_VERSIONS = (1, 2)  # what it reads

MAX_LANES = 8192
MAX_LEVEL = 9  # levels a header records (shazip.levels)
LZMA_DICT_SIZE = 8 << 20  # the dictionary of LZMA frames (writer and reader)
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

# A model frame's range coder gives every symbol at least 1/2**24 of its range (constriction's 24-bit
# quantisation, every entry >= 1), so a symbol costs at least -log2(1 - 255/2**24) > 2**-15.6 bits and a
# 32-bit word holds fewer than 1,459,400 symbols. A model frame claiming more symbols than this many per
# payload word (plus the two words of coder state) cannot be genuine: refused before any model time.
MODEL_SYMBOLS_PER_WORD = 1 << 21


class Method(IntEnum):
    """How a frame's payload encodes its raw bytes."""

    STORED = 1  # payload = the raw bytes
    ZSTD = 2  # payload = one zstd frame (level chosen by the encoder)
    MODEL = 3  # payload = range-coder words (uint32 LE) driven by the model, `lanes` lanes
    MIX = 4  # payload = binary arithmetic code of the mixing model over the network, `lanes` lanes
    CM = 5  # payload = binary arithmetic code of the mixing model alone, one sequence
    BZIP2 = 6  # payload = one bzip2 stream
    LZMA = 7  # payload = a raw LZMA2 stream (LZMA_DICT_SIZE dictionary)
    END = 0xFF  # not a frame: the end-of-stream marker that starts the footer


class FrameFlag(IntFlag):
    """Options of a model frame (docs/format.md); MIX frames take CRLF_AS_LF only, other methods none."""

    CRLF_AS_LF = 0x01  # the model coded the frame with every CR LF as LF; payload starts with that size
    MATCH_MODEL = 0x02  # the engine's tables were mixed with the match model (shazip/match.py)
    CONTEXT_COUNTS = 0x04  # then blended with the frame's context counts (shazip/context_counts.py)
    CONTEXT_COUNTS_2 = 0x08  # instead of 0x04: the context counts' second version (ContextCounts2)


# (an int: ~ on a flag would keep only the known bits)
KNOWN_FRAME_FLAGS = int(
    FrameFlag.CRLF_AS_LF | FrameFlag.MATCH_MODEL | FrameFlag.CONTEXT_COUNTS | FrameFlag.CONTEXT_COUNTS_2
)


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


def block_crc(body: bytes | bytearray | memoryview, version: int, index: int, offset: int) -> int:
    """The CRC-32 that ends a frame header or the footer. Version 1: of the body alone. Version 2: of the
    body followed by `index` (uint32: the frame's number counted from 1; for the footer, the frame count)
    and `offset` (uint64: where the block starts, in bytes from the start of the stream), so that a block
    that is not where the writer put it fails its own check (docs/format.md)."""
    crc = zlib.crc32(body)
    if version >= 2:
        crc = zlib.crc32(_PLACE.pack(index, offset), crc)
    return crc & 0xFFFFFFFF


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
    level: int = 0  # the compression level that wrote the stream, 1..9 (0: not recorded; version 1: none)

    def __post_init__(self) -> None:
        if self.version not in READ_VERSIONS:
            raise ValueError(f"format version must be one of {READ_VERSIONS}, got {self.version}")
        if not 0 <= self.level <= (MAX_LEVEL if self.version >= 2 else 0):
            raise ValueError(f"level {self.level} cannot be recorded in a version {self.version} header")
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
        newer = ": written by a newer shazip?" if version > max(READ_VERSIONS) else ""
        raise FormatError(f"unsupported format version {version} (this shazip reads versions {known}){newer}")
    name = read_exact(stream, name_len, "the header")
    stored_crc = _U32.unpack(read_exact(stream, 4, "the header"))[0]
    if crc32(magic + rest + name) != stored_crc:
        raise ChecksumError("corrupt header (checksum)")
    # Version 2 keeps the level in the low 4 bits of the flags byte; every other bit is reserved.
    level = flags & 0x0F if version >= 2 else 0
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
    lanes: int = 0  # model frames: lanes used (1..header lanes); other methods: 0
    # CRC-32 of the payload: corruption is found before any model time is spent, and a flipped bit the
    # range decoder would not notice (its last word has slack) is still an error.
    coded_crc32: int = 0
    flags: int = 0  # FrameFlag bits, model frames only

    def to_bytes(self, index: int, offset: int, version: int = FORMAT_VERSION) -> bytes:
        """The 24-byte frame header of frame number `index` (from 1) starting at stream offset `offset`."""
        body = _FRAME.pack(
            self.method,
            self.flags,
            self.lanes,
            self.raw_size,
            self.coded_size,
            self.raw_crc32,
            self.coded_crc32,
        )
        return body + _U32.pack(block_crc(body, version, index, offset))

    def validate(self, header: StreamHeader, index: int) -> None:
        """Check the fields against the stream header; raise FormatError naming the frame."""

        def bad(problem: str) -> FormatError:
            return FormatError(f"corrupt frame {index} ({problem})")

        if not 1 <= self.raw_size <= header.frame_size:
            raise bad(f"raw size {self.raw_size} outside 1..{header.frame_size}")
        if self.flags & ~KNOWN_FRAME_FLAGS:
            raise FormatError(
                f"frame {index} uses options this shazip does not know (flags 0x{self.flags:02x}):"
                " written by a newer shazip?"
            )
        if self.flags and self.method not in (Method.MODEL, Method.MIX):
            raise bad("flags set on a frame that is not a model frame")
        if self.method == Method.MIX and self.flags & ~FrameFlag.CRLF_AS_LF:
            raise bad(f"flags 0x{self.flags:02x} on a mixing frame")
        both_counts = FrameFlag.CONTEXT_COUNTS | FrameFlag.CONTEXT_COUNTS_2
        if self.flags & both_counts == both_counts:
            raise bad("flags 0x04 and 0x08 together")
        if self.method == Method.STORED:
            if self.coded_size != self.raw_size or self.lanes != 0:
                raise bad("stored frame with coded size != raw size or lanes != 0")
        elif self.method in (Method.ZSTD, Method.BZIP2, Method.LZMA):
            if not 1 <= self.coded_size < self.raw_size or self.lanes != 0:
                name = self.method.name.lower()
                raise bad(f"{name} frame not smaller than its raw size, or lanes != 0")
        elif self.method == Method.MODEL:
            if not 1 <= self.lanes <= header.lanes:
                raise bad(f"lane count {self.lanes} outside 1..{header.lanes}")
            if not 4 <= self.coded_size < self.raw_size or self.coded_size % 4:
                raise bad(f"model frame coded size {self.coded_size} invalid")
            crlf = bool(self.flags & FrameFlag.CRLF_AS_LF)
            words = self.coded_size // 4 - crlf  # (the CRLF prefix is one word)
            symbols = (self.raw_size + 1) // 2 if crlf else self.raw_size  # (CR LF -> LF at most halves it)
            if symbols > MODEL_SYMBOLS_PER_WORD * (words + 2):
                raise bad(f"{self.coded_size}-byte payload too small for {self.raw_size} bytes")
        elif self.method == Method.MIX:
            if not 1 <= self.lanes <= header.lanes:
                raise bad(f"lane count {self.lanes} outside 1..{header.lanes}")
            if not 1 <= self.coded_size < self.raw_size:
                raise bad(f"mixing frame coded size {self.coded_size} invalid")
        elif self.method == Method.CM:
            if not 1 <= self.coded_size < self.raw_size or self.lanes != 0:
                raise bad("CM frame not smaller than its raw size, or lanes != 0")


@dataclass(frozen=True)
class Footer:
    frame_count: int
    total_size: int
    content_hash: bytes

    def to_bytes(self, offset: int, version: int = FORMAT_VERSION) -> bytes:
        """The end marker and footer, starting at stream offset `offset`."""
        body = _FOOTER.pack(Method.END, 0, 0, self.frame_count, self.total_size, self.content_hash)
        return body + _U32.pack(block_crc(body, version, self.frame_count, offset)) + TRAILING_MAGIC


def read_block(stream: BinaryIO, index: int, offset: int, version: int) -> FrameHeader | Footer:
    """Read the next block: the header of frame number `index` (counted from 1) or the end-of-stream
    footer (after index - 1 frames), starting at stream offset `offset` of a stream of format `version`."""
    first = read_exact(stream, FRAME_HEADER_SIZE, f"frame {index} header", allow_empty=True)
    if not first:
        raise TruncatedError(f"truncated (no end-of-stream footer after {index - 1} frames)")
    if len(first) < FRAME_HEADER_SIZE:
        raise TruncatedError(f"truncated (inside frame {index} header)")
    if first[0] == Method.END:
        rest = read_exact(stream, FOOTER_SIZE - FRAME_HEADER_SIZE, "the footer")
        data = first + rest
        body, stored_crc, trailing = data[: _FOOTER.size], data[_FOOTER.size : _FOOTER.size + 4], data[-8:]
        if block_crc(body, version, index - 1, offset) != _U32.unpack(stored_crc)[0]:
            raise ChecksumError("corrupt footer (checksum)")
        if trailing != TRAILING_MAGIC:
            raise FormatError("corrupt footer (trailing magic)")
        _, flags, reserved, frame_count, total_size, content_hash = _FOOTER.unpack(body)
        if flags or reserved:
            raise FormatError("reserved footer bits set")
        return Footer(frame_count, total_size, content_hash)
    method, flags, lanes, raw_size, coded_size, raw_crc, coded_crc = _FRAME.unpack(first[: _FRAME.size])
    if block_crc(first[: _FRAME.size], version, index, offset) != _U32.unpack(first[_FRAME.size :])[0]:
        # (from version 2 on this is also what a frame moved, dropped or repeated looks like)
        raise ChecksumError(f"corrupt frame {index} (header checksum)")
    try:
        method = Method(method)
    except ValueError:
        raise FormatError(
            f"frame {index} uses method {method}, which this shazip does not know: written by a newer shazip?"
        ) from None
    return FrameHeader(method, raw_size, coded_size, raw_crc, lanes, coded_crc, flags)


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


class FrameWalk:
    """The frames of a stream after its header, in order: `for index, frame in walk:` gives each frame
    header, checked against the stream header (index counted from 1); the caller then reads or skips its
    payload. When the end marker comes, its footer is checked against what was walked (frame count, total
    size) and kept in `footer`; the content hash is the decoder's to check."""

    def __init__(self, stream: BinaryIO, header: StreamHeader) -> None:
        self.stream = stream
        self.header = header
        self.tally = FrameTally()
        self.footer: Footer | None = None

    @property
    def offset(self) -> int:
        """Stream offset of the next block."""
        return self.header.size + self.tally.coded_size

    def __iter__(self) -> Iterator[tuple[int, FrameHeader]]:
        while True:
            index = self.tally.frames + 1
            block = read_block(self.stream, index, self.offset, self.header.version)
            if isinstance(block, Footer):
                check_footer(block, self.tally.frames, self.tally.raw_size)
                self.footer = block
                return
            block.validate(self.header, index)
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


def scan(stream: BinaryIO, on_frame: Callable[[int, FrameHeader], None] | None = None) -> StreamInfo:
    """Read a .shz stream's header, frame headers and footer, skipping payloads (seeking when possible);
    `on_frame(index, frame)` sees each frame header.

    Checks every structural checksum, the frame count and total size, and that nothing follows the footer;
    it cannot check the content itself (that needs decoding: `shazip test`)."""
    header = read_header(stream)
    walk = FrameWalk(stream, header)
    for index, frame in walk:
        if on_frame is not None:
            on_frame(index, frame)
        skip_exact(stream, frame.coded_size, f"frame {index}")
    assert walk.footer is not None
    check_end_of_input(stream)
    return StreamInfo(header, walk.tally, walk.footer)


def frame_headers(stream: BinaryIO) -> list[FrameHeader]:
    """Every frame header of a checked stream, in order (scan keeps none: this is for small streams)."""
    frames: list[FrameHeader] = []
    scan(stream, lambda index, frame: frames.append(frame))
    return frames


def assemble(header: StreamHeader, frames: Iterable[tuple[FrameHeader, bytes]], footer: Footer) -> bytes:
    """A whole stream from its parts, each block's checksum bound to its place (for tools and tests that
    build streams by hand; the encoder writes the same bytes as it goes)."""
    parts = [header.to_bytes()]
    offset = header.size
    for index, (frame, payload) in enumerate(frames, 1):
        parts += [frame.to_bytes(index, offset, header.version), payload]
        offset += FRAME_HEADER_SIZE + len(payload)
    parts.append(footer.to_bytes(offset, header.version))
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
