"""Levels, the reusable Compressor / Decompressor, concatenated streams, and the general-purpose frame
methods (bzip2, LZMA) that the low levels use."""

from __future__ import annotations

import bz2
import io
import lzma

import pytest

import shazip
from shazip import levels
from shazip.format import ChecksumError, FormatError, FrameHeader, Method, TruncatedError, frame_headers
from shazip.stream import StreamDecoder
from tests.paths import sample_text

TEXT = sample_text(40_000)


def methods(packed: bytes) -> set[Method]:
    return {f.method for f in frame_headers(io.BytesIO(packed))}


@pytest.mark.parametrize("level", [1, 2, 3])
def test_levels_without_the_network_round_trip_and_need_no_model(level: int) -> None:
    packed = shazip.compress(TEXT, level=level)
    assert shazip.frame_parameters(packed).model_id == bytes(32)  # decodes without a model file
    assert shazip.decompress(packed) == TEXT
    expected = {1: {Method.BZIP2}, 2: {Method.BZIP2}, 3: {Method.CM}}[level]
    assert methods(packed) == expected


def test_higher_levels_compress_better() -> None:
    sizes = [len(shazip.compress(TEXT, level=level)) for level in (1, 3)]
    assert sizes[1] < 0.9 * sizes[0]


def test_unknown_levels_are_refused() -> None:
    for bad in (0, 10):
        with pytest.raises(ValueError, match="level must be in 1..9"):
            shazip.Compressor(level=bad)


def test_a_compressor_builds_its_engine_once(fixture_model_path) -> None:
    compressor = shazip.Compressor(6, fixture_model_path, device="cpu", strategy="model")
    decompressor = shazip.Decompressor(fixture_model_path, device="cpu")
    for i in range(3):
        data = sample_text(3000, offset=7000 * i)
        packed = compressor.compress(data)
        assert Method.MIX in methods(packed)
        assert decompressor.decompress(packed) == data
    assert len(compressor._runtime._engines) == 1 and len(decompressor._runtime._engines) == 1


def test_streaming_writer_and_reader_of_a_compressor(tmp_path, fixture_model_path) -> None:
    compressor = shazip.Compressor(3)
    path = tmp_path / "x.shz"
    with path.open("wb") as f, compressor.stream_writer(f) as writer:
        for i in range(0, len(TEXT), 777):
            writer.write(TEXT[i : i + 777])
    with path.open("rb") as f, shazip.Decompressor().stream_reader(f) as reader:
        assert reader.read() == TEXT


def test_concatenated_streams_decode_as_their_concatenation(fixture_model_path) -> None:
    a = shazip.compress(TEXT[:5000], level=1)
    b = shazip.compress(TEXT[5000:9000], level=3)
    assert shazip.decompress(a + b + a) == TEXT[:5000] + TEXT[5000:9000] + TEXT[:5000]
    with pytest.raises(FormatError, match="trailing data"):
        shazip.decompress(a + b"junk!!!!!")
    with pytest.raises(TruncatedError):
        shazip.decompress(a + b[:5])
    with pytest.raises(TruncatedError):
        shazip.decompress(a + b[:-1])


def damaged(method: Method, payload: bytes, raw: bytes) -> bytes:
    """A stream of one frame of `method` with this payload claiming `raw`."""
    from shazip.format import Footer, StreamHeader, assemble, content_hasher, crc32

    header = StreamHeader(1, max(1, len(raw)), bytes(32), "")
    frame = FrameHeader(method, len(raw), len(payload), crc32(raw), coded_crc32=crc32(payload))
    return assemble(header, [(frame, payload)], Footer(1, len(raw), content_hasher().digest()))


def test_bzip2_and_lzma_frames_never_expand_past_their_claim() -> None:
    raw = b"a" * 100_000
    bomb = bz2.compress(raw * 10)  # decodes to 10 times what the frame claims
    with pytest.raises(ChecksumError, match="corrupt frame 1 .bzip2 size"):
        b"".join(StreamDecoder(io.BytesIO(damaged(Method.BZIP2, bomb, raw))).frames())
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 8 << 20}]
    junk = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)[:-3] + b"\xff\xff\xff"
    with pytest.raises(ChecksumError, match="corrupt frame 1 .lzma"):
        b"".join(StreamDecoder(io.BytesIO(damaged(Method.LZMA, junk, raw))).frames())


def test_every_level_has_a_frame_size_and_lane_size() -> None:
    assert set(levels.LEVELS) == set(range(1, 10)) and levels.DEFAULT_LEVEL == 6
    assert all(p.frame_size >= 1 << 20 and p.lane_bytes >= 16 << 10 for p in levels.LEVELS.values())
