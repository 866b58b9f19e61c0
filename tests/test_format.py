"""The .shz container: build and parse every part, and refuse what does not follow the spec."""

from __future__ import annotations

import io
import struct

import pytest

from shazip.format import (
    FOOTER_SIZE,
    FORMAT_VERSION,
    FRAME_HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
    MAX_LANES,
    MIN_HEADER_SIZE,
    TRAILING_MAGIC,
    ChecksumError,
    Footer,
    FormatError,
    FrameFlag,
    FrameHeader,
    Method,
    StreamHeader,
    TruncatedError,
    assemble,
    crc32,
    frame_headers,
    method_byte,
    read_block,
    read_header,
    scan,
    split_method_byte,
)
from shazip.frames import METHODS, check_frame, reader

MODEL_ID = bytes(range(32))


def header(**changes) -> StreamHeader:
    fields = {"lanes": 8, "frame_size": 1 << 20, "model_id": MODEL_ID, "model_name": "fixture-ü"}
    return StreamHeader(**(fields | changes))


def test_magic_is_binary_and_not_utf8():
    assert len(MAGIC) == 8 and MAGIC[0] >= 0x80
    with pytest.raises(UnicodeDecodeError):
        MAGIC.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        TRAILING_MAGIC.decode("utf-8")
    assert b"\r\n" in MAGIC and b"\x1a" in MAGIC


def test_header_round_trip_and_layout():
    h = header()
    raw = h.to_bytes()
    assert raw.startswith(MAGIC)
    assert len(raw) == h.size == MIN_HEADER_SIZE + len("fixture-ü".encode())
    assert raw[8] == FORMAT_VERSION == 2 and raw[9] == 0  # version, flags
    assert struct.unpack_from("<HI", raw, 10) == (8, 1 << 20)  # little-endian lanes, frame size
    assert raw[16:48] == MODEL_ID
    assert read_header(io.BytesIO(raw)) == h


def test_header_limits_are_enforced_when_building():
    for bad in [
        {"lanes": 0},
        {"lanes": MAX_LANES + 1},
        {"frame_size": 0},
        {"frame_size": MAX_FRAME_SIZE + 1},
    ]:
        with pytest.raises(ValueError):
            header(**bad)
    with pytest.raises(ValueError):
        header(model_id=b"short")
    with pytest.raises(ValueError):
        header(model_name="x" * 256)


def resign_header(raw: bytearray) -> bytes:
    """Recompute the header CRC after an edit, to reach the checks behind it."""
    body = bytes(raw[:-4])
    return body + struct.pack("<I", crc32(body))


def test_header_errors_name_the_problem():
    raw = bytearray(header().to_bytes())
    with pytest.raises(FormatError, match="not a .shz file"):
        read_header(io.BytesIO(b"PK\x03\x04" + bytes(100)))
    with pytest.raises(FormatError, match="empty"):
        read_header(io.BytesIO(b""))
    with pytest.raises(TruncatedError):
        read_header(io.BytesIO(MAGIC[:5]))
    with pytest.raises(TruncatedError):
        read_header(io.BytesIO(bytes(raw[:30])))
    version = bytearray(raw)
    version[8] = 3
    with pytest.raises(FormatError, match="format version 3, which this shazip does not read .*newer shazip"):
        read_header(io.BytesIO(bytes(version)))
    version[8] = 0
    with pytest.raises(FormatError, match="format version 0, which this shazip does not read"):
        read_header(io.BytesIO(bytes(version)))
    version[8] = 1
    with pytest.raises(
        FormatError, match="format version 1, which this shazip does not read .*before 2026-12-06"
    ):
        read_header(io.BytesIO(bytes(version)))
    flags = bytearray(raw)
    flags[9] = 0x40
    with pytest.raises(FormatError, match="reserved header flags"):
        read_header(io.BytesIO(resign_header(flags)))
    with pytest.raises(ChecksumError, match="corrupt header"):
        read_header(io.BytesIO(bytes(flags)))
    lanes = bytearray(raw)
    lanes[10:12] = struct.pack("<H", 0)
    with pytest.raises(FormatError, match="lanes"):
        read_header(io.BytesIO(resign_header(lanes)))


def test_frame_header_round_trip_and_validation():
    h = header()
    frame = FrameHeader(Method.NET, 1000, 400, 0xDEADBEEF, lanes=8, coded_crc32=0x12345678)
    raw = frame.to_bytes(1, 77)
    assert len(raw) == FRAME_HEADER_SIZE
    assert read_block(io.BytesIO(raw), 1, 77) == frame
    frame.validate(h, 1)
    check_frame(frame, h, 1)
    bad_frames = [
        FrameHeader(Method.NET, 1000, 400, 0, lanes=9),  # more lanes than the header
        FrameHeader(Method.NET, 1000, 402, 0, lanes=8),  # not whole words
        FrameHeader(Method.NET, 1000, 1000, 0, lanes=8),  # not smaller than raw
        FrameHeader(Method.NET, 1000, 400, 0, lanes=0),  # no lanes
        FrameHeader(Method.MIX, 1000, 400, 0, lanes=0),
        FrameHeader(Method.CM, 1000, 400, 0, lanes=1),  # lanes on a frame without lanes
        FrameHeader(Method.STORED, 10, 11, 0),
        FrameHeader(Method.ZSTD, 10, 10, 0),
        FrameHeader(Method.STORED, 0, 0, 0),  # empty frames are never written
        FrameHeader(Method.STORED, (1 << 20) + 1, (1 << 20) + 1, 0),  # above the frame size
    ]
    for bad in bad_frames:
        with pytest.raises(FormatError, match="corrupt frame 3"):
            bad.validate(h, 3)
            check_frame(bad, h, 3)


def test_method_byte_holds_the_method_and_its_version():
    assert method_byte(Method.MIX, 1) == 4  # (the first files' plain method numbers are version 1)
    assert method_byte(Method.MIX, 2) == 4 | 0x20
    assert split_method_byte(0x24) == (4, 2) and split_method_byte(0xE7) == (7, 8)
    for bad in [(0, 1), (31, 1), (4, 0), (4, 9)]:  # (31 is reserved: 0xFF is the end marker)
        with pytest.raises(ValueError):
            method_byte(*bad)
    frame = FrameHeader(Method.CM, 100, 50, 1, version=3)
    raw = frame.to_bytes(2, 90)
    assert raw[0] == 5 | 0x40 and read_block(io.BytesIO(raw), 2, 90) == frame


def test_unknown_and_retired_method_versions_are_refused_with_one_line():
    h = header()
    newer = FrameHeader(Method.MIX, 1000, 400, 1, lanes=8, version=2)
    with pytest.raises(
        FormatError, match="frame 4 is mix version 2; this shazip reads mix version 1: .*newer"
    ):
        check_frame(newer, h, 4)
    with pytest.raises(FormatError, match="frame 2 is model version 1 .*no longer reads"):
        check_frame(FrameHeader(Method.MODEL, 1000, 400, 1, lanes=8), h, 2)
    for method, version in METHODS:  # every method this shazip reads has its checks
        assert reader(FrameHeader(method, 10, 5, 0, version=version), 1) is METHODS[(method, version)]


def test_frame_flags_round_trip_and_are_checked():
    h = header()
    frame = FrameHeader(Method.MIX, 1000, 400, 1, lanes=8, coded_crc32=2, flags=FrameFlag.CRLF_AS_LF)
    assert read_block(io.BytesIO(frame.to_bytes(1, 60)), 1, 60) == frame
    check_frame(frame, h, 1)
    for bad in (
        FrameHeader(Method.MIX, 1000, 400, 1, lanes=8, flags=0x02),  # retired with the model frames
        FrameHeader(Method.NET, 1000, 400, 1, lanes=8, flags=0x10),
        FrameHeader(Method.ZSTD, 100, 50, 1, flags=FrameFlag.CRLF_AS_LF),
    ):
        with pytest.raises(FormatError, match="corrupt frame 5 .* flags 0x"):
            check_frame(bad, h, 5)


def test_frame_header_errors():
    raw = bytearray(FrameHeader(Method.ZSTD, 100, 50, 1).to_bytes(7, 500))
    flipped = bytearray(raw)
    flipped[5] ^= 1
    with pytest.raises(ChecksumError, match=r"corrupt frame 7 \(header checksum\)"):
        read_block(io.BytesIO(bytes(flipped)), 7, 500)
    unknown = bytearray(FrameHeader(Method.ZSTD, 100, 50, 1).to_bytes(1, 500))
    unknown[0] = 12
    unknown[20:24] = struct.pack("<I", crc32(bytes(unknown[:20]) + struct.pack("<IQ", 1, 500)))
    with pytest.raises(FormatError, match="frame 1 uses method 12, .*written by a newer shazip"):
        read_block(io.BytesIO(bytes(unknown)), 1, 500)
    with pytest.raises(TruncatedError, match="frame 2"):
        read_block(io.BytesIO(bytes(raw[:7])), 2, 500)
    with pytest.raises(TruncatedError, match="no end-of-stream footer"):
        read_block(io.BytesIO(b""), 4, 500)


def test_checksums_bind_each_block_to_its_place():
    frame = FrameHeader(Method.ZSTD, 100, 50, 1)
    footer = Footer(frame_count=3, total_size=300, content_hash=bytes(16))
    assert read_block(io.BytesIO(frame.to_bytes(4, 1000)), 4, 1000) == frame
    assert read_block(io.BytesIO(footer.to_bytes(1000)), 4, 1000) == footer
    for index, offset in [(3, 1000), (5, 1000), (4, 999), (4, 1000 + (1 << 32))]:
        with pytest.raises(ChecksumError, match=f"corrupt frame {index} .header checksum"):
            read_block(io.BytesIO(frame.to_bytes(4, 1000)), index, offset)
        with pytest.raises(ChecksumError, match="corrupt footer .checksum"):
            read_block(io.BytesIO(footer.to_bytes(1000)), index, offset)
    # the same CRC over the place, written out for a second implementation: crc32(body + u32 + u64)
    body = frame.to_bytes(4, 1000)[:20]
    assert frame.to_bytes(4, 1000)[20:] == struct.pack("<I", crc32(body + struct.pack("<IQ", 4, 1000)))


def test_footer_round_trip_and_errors():
    footer = Footer(frame_count=3, total_size=(1 << 40) + 5, content_hash=bytes(range(16)))
    raw = footer.to_bytes(900)
    assert len(raw) == FOOTER_SIZE and raw[0] == Method.END and raw.endswith(TRAILING_MAGIC)
    assert read_block(io.BytesIO(raw), 4, 900) == footer
    for i in range(len(raw) - 1):  # every byte but the END marker itself
        if i == 0:
            continue
        broken = bytearray(raw)
        broken[i] ^= 0x10
        with pytest.raises((ChecksumError, FormatError), match="footer"):
            read_block(io.BytesIO(bytes(broken)), 4, 900)
    for cut in range(1, len(raw)):
        with pytest.raises(TruncatedError):
            read_block(io.BytesIO(raw[:cut]), 4, 900)


def build_stream(frames: list[tuple[FrameHeader, bytes]], total: int | None = None) -> bytes:
    size = sum(f.raw_size for f, _ in frames) if total is None else total
    return assemble(header(frame_size=64), frames, Footer(len(frames), size, bytes(16)))


def test_scan_reads_structure_without_payloads():
    frames = [
        (FrameHeader(Method.STORED, 5, 5, crc32(b"hello")), b"hello"),
        (FrameHeader(Method.NET, 64, 8, 0, lanes=2), bytes(8)),
    ]
    data = build_stream(frames)
    assert [f for f, _ in frames] == frame_headers(io.BytesIO(data))
    info = scan(io.BytesIO(data))
    assert info.file_size == len(data)
    assert info.raw_size == 69
    assert info.method_counts() == {"stored": 1, "net": 1}


def test_scan_checks_footer_totals_and_trailing_data():
    frames = [(FrameHeader(Method.STORED, 5, 5, crc32(b"hello")), b"hello")]
    with pytest.raises(FormatError, match="says 6 bytes"):
        scan(io.BytesIO(build_stream(frames, total=6)))
    with pytest.raises(FormatError, match="trailing data"):
        scan(io.BytesIO(build_stream(frames) + b"\0"))
    with pytest.raises(TruncatedError):
        scan(io.BytesIO(build_stream(frames)[:-3]))


class PipeLike(io.RawIOBase):
    """Returns at most 3 bytes per read and cannot seek, like a pipe under load."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(3, len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_scan_works_on_short_reads_without_seeking():
    frames = [(FrameHeader(Method.STORED, 40, 40, crc32(bytes(40))), bytes(40))] * 3
    data = build_stream(frames)
    assert frame_headers(PipeLike(data)) == frame_headers(io.BytesIO(data))
    with pytest.raises(TruncatedError):
        scan(PipeLike(data[:-50]))


# --- stability: files written today must decode tomorrow ----------------------------------------------

# A version-1 file (one zstd frame, one stored frame), written by shazip before 2026-12-06: refused.
GOLDEN_FILE_V1 = bytes.fromhex(
    "8953485a0d0a1a0a0100010028000000000000000000000000000000000000000000000000000000000000000000000000"
    "6c84578f0200000028000000200000004ca7651d819d0176e63a228528b52ffd0000bd0000887368617a697020666f726d"
    "61742076310a0100a99e4b0100000012000000120000000f3486dd0f3486dd2bdb2c3920666f726d61742076310a000102"
    "03040506ff000000020000003a00000000000000a6bc52115701109637df70cbe3f2d6129e812505895a48530a1a0a0d"
)

# The range coder's output for fixed integer tables: if constriction changed how Categorical(perfect=False)
# quantises a table, net frames written before would no longer decode. This vector catches that.
GOLDEN_WORDS = "030fb0207a95e9608b0855b3273831e5abd9462496d246879ffb3b375c2d986404002392"


def test_version_1_file_is_refused_with_one_line_naming_its_version():
    import shazip

    with pytest.raises(FormatError, match="^format version 1, which this shazip does not read"):
        shazip.decompress(GOLDEN_FILE_V1)


def test_range_coder_golden_vector():
    import constriction
    import numpy as np

    from shazip.frames.net import _coder_model

    i = np.arange(40)[:, None]
    s = np.arange(256)[None, :]
    freqs = (1 + (i * 7919 + s * 104729) % 1000).astype(np.int32)
    freqs[:, 65] += 200000
    symbols = ((np.arange(40) * 31) % 256).astype(np.int32)
    symbols[::3] = 65
    encoder = constriction.stream.queue.RangeEncoder()
    for t in range(0, 40, 8):
        encoder.encode(symbols[t : t + 8], _coder_model(), freqs[t : t + 8].astype(np.float64))
    assert encoder.get_compressed().astype("<u4").tobytes().hex() == GOLDEN_WORDS
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(bytes.fromhex(GOLDEN_WORDS), "<u4").copy())
    decoded = [decoder.decode(_coder_model(), freqs[t : t + 8].astype(np.float64)) for t in range(0, 40, 8)]
    assert np.concatenate(decoded).tolist() == symbols.tolist()


# A version-2 file (one zstd frame, one stored frame): each frame header's and the footer's CRC also cover
# the block's place (frame index, stream offset).
GOLDEN_FILE_V2 = bytes.fromhex(
    "8953485a0d0a1a0a0200010028000000000000000000000000000000000000000000000000000000000000000000000000"
    "ce331e6c020000002800000020000000fc1607a61c87e947ebb4aa6c28b52ffd0000bd0000887368617a697020666f726d"
    "61742076320a0100a99e4b010000001200000012000000ca080be4ca080be47bb5cbde20666f726d61742076320a000102"
    "03040506ff000000020000003a00000000000000157440fd328250e9dd2ad1b1d3d703492910c745895a48530a1a0a0d"
)


def test_golden_version_2_file_decodes_and_its_frames_are_bound_to_their_place():
    import shazip

    assert shazip.decompress(GOLDEN_FILE_V2) == b"shazip format v2\n" * 3 + bytes(range(7))
    body = GOLDEN_FILE_V2[53:73]  # frame 1's header without its CRC
    assert GOLDEN_FILE_V2[73:77] == struct.pack("<I", crc32(body + struct.pack("<IQ", 1, 53)))
    # frame 2 with a CRC of its fields alone (as version 1 had it) is not in frame 2's place
    v1_bytes = bytearray(GOLDEN_FILE_V2)
    second = 53 + FRAME_HEADER_SIZE + 32
    v1_bytes[second + 20 : second + 24] = struct.pack("<I", crc32(v1_bytes[second : second + 20]))
    with pytest.raises(ChecksumError, match="corrupt frame 2"):
        shazip.decompress(bytes(v1_bytes))


def split_blocks(packed: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(header, [frame header + payload, ...], footer) of a stream."""
    info = scan(io.BytesIO(packed))
    position, blocks = info.header.size, []
    for frame in frame_headers(io.BytesIO(packed)):
        end = position + FRAME_HEADER_SIZE + frame.coded_size
        blocks.append(packed[position:end])
        position = end
    return packed[: info.header.size], blocks, packed[position:]


@pytest.mark.parametrize(
    "edit, failing",
    [
        (lambda b: [b[0], b[2], b[1], *b[3:]], "corrupt frame 2"),  # two frames swapped
        (lambda b: [b[0], *b[2:]], "corrupt frame 2"),  # a frame dropped
        (lambda b: [b[0], b[1], b[1], *b[2:]], "corrupt frame 3"),  # a frame repeated
        (lambda b: b[:-1], "corrupt footer"),  # the last frame dropped
        (lambda b: [*b[:-2], b[-1], b[-2]], "corrupt frame 4"),  # the last two swapped
    ],
)
def test_frames_out_of_place_fail_at_that_frame_before_any_of_its_bytes(edit, failing):
    from shazip.stream import StreamDecoder, StreamEncoder

    data = b"".join(b"line %04d of a stream whose frames all differ\n" % i for i in range(25))
    out = io.BytesIO()
    encoder = StreamEncoder(out, strategy="zstd", frame_size=240)
    encoder.write(data)
    encoder.finish()
    head, blocks, foot = split_blocks(out.getvalue())
    assert len(blocks) == 5
    damaged = head + b"".join(edit(blocks)) + foot
    written = bytearray()
    with pytest.raises(ChecksumError, match=failing):
        for raw in StreamDecoder(io.BytesIO(damaged)).frames():
            written += raw
    assert data.startswith(bytes(written))  # only the frames before the damage, all correct
    assert len(written) == 240 * (int(failing.split()[-1]) - 1 if "frame" in failing else 4)
