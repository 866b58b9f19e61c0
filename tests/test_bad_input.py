"""Damaged input: a flipped byte anywhere, truncation anywhere, foreign files, the wrong model.

Every case must raise a ShazipError with a message naming the problem, never return wrong data and never
fail with another exception. The file mixes model, stored and zstd frames of the fixture model."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

import shazip
from shazip.format import (
    FOOTER_SIZE,
    FRAME_HEADER_SIZE,
    ChecksumError,
    FormatError,
    Method,
    ShazipError,
    TruncatedError,
    frame_headers,
    scan,
)
from shazip.runtime import default_engine_factory
from shazip.stream import StreamDecoder, StreamEncoder

TEXT = b"In the beginning was the word, and the word was with the compressor. " * 4


@pytest.fixture(scope="module")
def model(fixture_model_path):
    from shazip.modelfile import ModelFile

    return ModelFile.load(fixture_model_path)


@pytest.fixture(scope="module")
def engine_factory():
    engines = {}

    def factory(model, device, threads):  # one engine object for the whole module: it keeps no state itself
        if "engine" not in engines:
            engines["engine"] = default_engine_factory(model, device, threads)
        return engines["engine"]

    return factory


@pytest.fixture(scope="module")
def sample(model, engine_factory) -> tuple[bytes, bytes]:
    data = TEXT[:160] + os.urandom(160) + bytes(160) + TEXT[:100]
    out = io.BytesIO()
    encoder = StreamEncoder(
        out, model, lanes=4, frame_size=160, device="cpu", engine_factory=engine_factory, strategy="model"
    )
    encoder.write(data)
    encoder.finish()
    packed = out.getvalue()
    methods = {f.method for f in frame_headers(io.BytesIO(packed))}
    assert {Method.MIX, Method.STORED} <= methods
    return data, packed


def decode(packed: bytes, model, engine_factory) -> bytes:
    decoder = StreamDecoder(io.BytesIO(packed), model, device="cpu", engine_factory=engine_factory)
    return b"".join(decoder.frames())


def offsets_to_try(packed: bytes) -> list[int]:
    """Every byte of the header, the frame headers and the footer; every third payload byte (each decode
    runs the model over the frames before the damage, so all of them would be slow)."""
    info = scan(io.BytesIO(packed))
    structural = set(range(info.header.size))
    position = info.header.size
    for frame in frame_headers(io.BytesIO(packed)):
        structural |= set(range(position, position + FRAME_HEADER_SIZE))
        position += FRAME_HEADER_SIZE + frame.coded_size
    structural |= set(range(position, len(packed)))
    return sorted(structural | set(range(0, len(packed), 3)))


def test_sample_decodes(sample, model, engine_factory):
    data, packed = sample
    assert decode(packed, model, engine_factory) == data


def test_a_flipped_byte_anywhere_is_detected(sample, model, engine_factory):
    data, packed = sample
    messages = set()
    for offset in offsets_to_try(packed):
        broken = bytearray(packed)
        broken[offset] ^= 0x01 if offset % 2 else 0x80
        with pytest.raises(ShazipError) as caught:
            decode(bytes(broken), model, engine_factory)
        messages.add(str(caught.value).split(" (")[0])
    # the messages say where: the header, a numbered frame, or the footer
    assert any(m.startswith("corrupt frame ") for m in messages)
    assert {"not a .shz file", "corrupt header", "corrupt footer"} <= messages


def test_truncation_anywhere_is_detected(sample, model, engine_factory):
    _, packed = sample
    for cut in offsets_to_try(packed):
        with pytest.raises((TruncatedError, FormatError)) as caught:
            decode(packed[:cut], model, engine_factory)
        assert "truncated" in str(caught.value) or (cut == 0 and "empty" in str(caught.value))


def test_trailing_garbage_is_detected(sample, model, engine_factory):
    _, packed = sample
    with pytest.raises(FormatError, match="trailing data"):
        decode(packed + b"\n", model, engine_factory)


@pytest.mark.parametrize(
    "foreign",
    [
        b"",
        b"hello, world\n",
        gzip.compress(b"some text"),
        zstandard.ZstdCompressor().compress(b"some text"),
        b"\x89PNG\r\n\x1a\n" + bytes(100),
    ],
)
def test_foreign_files_are_not_shz(foreign, model, engine_factory):
    with pytest.raises(FormatError, match="not a .shz file"):
        decode(foreign, model, engine_factory)


def test_payload_corruption_is_named_before_model_time(sample, model, engine_factory):
    _, packed = sample
    info = scan(io.BytesIO(packed))
    offset = info.header.size + FRAME_HEADER_SIZE + 2  # inside frame 1's payload
    broken = bytearray(packed)
    broken[offset] ^= 0x10
    with pytest.raises(ChecksumError, match=r"corrupt frame 1 \(payload checksum\)"):
        decode(bytes(broken), model, engine_factory)
    footer_hash = len(packed) - FOOTER_SIZE + 16
    broken = bytearray(packed)
    broken[footer_hash] ^= 0x10
    with pytest.raises(ChecksumError, match="corrupt footer"):
        decode(bytes(broken), model, engine_factory)


def test_no_model_needed_for_files_without_model_frames():
    packed = shazip.compress(b"plain " * 100, strategy="zstd")
    assert shazip.decompress(packed, model="/nonexistent/model.safetensors") == b"plain " * 100


def test_missing_model_file_is_a_clear_error(sample):
    _, packed = sample
    with pytest.raises(shazip.ModelError, match="/nonexistent/model.safetensors"):
        shazip.decompress(packed, model="/nonexistent/model.safetensors")


def test_a_zstd_frame_declaring_a_huge_content_size_is_refused_without_allocating_it():
    """python-zstandard allocates the content size a zstd frame declares: it must equal raw_size."""
    import struct

    from shazip.format import Footer, FrameHeader, StreamHeader, assemble, crc32

    raw = b"hello world " * 10
    payload = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    assert payload[4] & 0xC0 == 0  # (no content size: the descriptor's top bits are 0)
    declared = (
        payload[:4] + bytes([payload[4] | 0xC0]) + payload[5:6] + struct.pack("<Q", 1 << 60) + payload[6:]
    )
    for zstd_payload, error in [(declared, "zstd frame of 1152921504606846976 bytes"), (payload, None)]:
        frame = FrameHeader(
            Method.ZSTD, len(raw), len(zstd_payload), crc32(raw), coded_crc32=crc32(zstd_payload)
        )
        footer = Footer(1, len(raw), _hash(raw))
        packed = assemble(StreamHeader(1, 1000, bytes(32), ""), [(frame, zstd_payload)], footer)
        if error is None:
            assert shazip.decompress(packed) == raw
        else:
            with pytest.raises(ChecksumError, match=error):
                shazip.decompress(packed)


def _hash(data: bytes) -> bytes:
    from shazip.format import content_hasher

    hasher = content_hasher()
    hasher.update(data)
    return hasher.digest()
