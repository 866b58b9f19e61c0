"""The Python API: one-shot compress/decompress, streaming open() reader/writer, frame_parameters, info.

These use strategy="zstd" (no model needed); the model path is covered in test_codec.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

import shazip
from shazip.format import (
    FOOTER_SIZE,
    FRAME_HEADER_SIZE,
    MIN_HEADER_SIZE,
    ChecksumError,
    FormatError,
    TruncatedError,
)

DATA = b"".join(b"line %d of some text, with numbers %d\n" % (i, i * i) for i in range(3000))


def test_import_is_light():
    code = "import shazip, sys; shazip.FormatError; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_one_shot_round_trip():
    for data in [b"", b"x", DATA, os.urandom(5000)]:
        packed = shazip.compress(data, strategy="zstd")
        assert shazip.decompress(packed) == data


def test_output_never_much_bigger_than_input():
    data = os.urandom(3 * 1024 + 17)
    packed = shazip.compress(data, strategy="zstd", frame_size=1024)
    assert shazip.info(packed).method_counts() == {"stored": 4}
    # header + frame headers + footer, nothing more
    assert len(packed) - len(data) == MIN_HEADER_SIZE + 4 * FRAME_HEADER_SIZE + FOOTER_SIZE


def test_streaming_writer_and_reader(tmp_path):
    path = tmp_path / "s.shz"
    with shazip.open(path, "wb", strategy="zstd", frame_size=4096) as f:
        for i in range(0, len(DATA), 1000):
            f.write(DATA[i : i + 1000])
    assert shazip.decompress(path.read_bytes()) == DATA
    with shazip.open(path, "rb") as f:
        assert f.read(10) == DATA[:10]
        assert f.read(5000) == DATA[10:5010]
        buffer = bytearray(100)
        assert f.readinto(buffer) == 100 and bytes(buffer) == DATA[5010:5110]
        assert f.read() == DATA[5110:]
        assert f.read(1) == b""
    assert shazip.info(path).header.frame_size == 4096


def test_text_mode(tmp_path):
    path = tmp_path / "t.shz"
    text = "naïve café\n" * 100
    with shazip.open(path, "wt", encoding="utf-8", strategy="zstd") as f:
        f.write(text)
    with shazip.open(path, "rt", encoding="utf-8") as f:
        assert f.readline() == "naïve café\n"
        assert f.read() == text[len("naïve café\n") :]


def test_file_objects_are_not_closed_unless_opened_here():
    sink = io.BytesIO()
    with shazip.open(sink, "wb", strategy="zstd") as f:
        f.write(DATA)
    assert not sink.closed
    sink.seek(0)
    with shazip.open(sink, "rb") as f:
        assert f.read() == DATA
    assert not sink.closed


def test_open_refuses_bad_modes(tmp_path):
    for mode in ["a", "rw", "rbt", "r+"]:
        with pytest.raises(ValueError):
            shazip.open(tmp_path / "x.shz", mode)
    with pytest.raises(ValueError):
        shazip.open(io.BytesIO(), "wb", encoding="utf-8")


def test_exclusive_mode_refuses_existing_file(tmp_path):
    path = tmp_path / "x.shz"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        shazip.open(path, "xb", strategy="zstd")
    assert path.read_bytes() == b"keep me"


def test_frame_parameters_and_info_without_decoding(tmp_path):
    packed = shazip.compress(DATA, strategy="zstd", frame_size=10000)
    params = shazip.frame_parameters(packed)
    assert params.frame_size == 10000 and params.version == 2
    path = tmp_path / "f.shz"
    path.write_bytes(packed)
    assert shazip.frame_parameters(path) == params
    with open(path, "rb") as f:
        assert shazip.frame_parameters(f) == params
    info = shazip.info(path)
    assert info.raw_size == len(DATA)
    assert info.file_size == len(packed)
    assert info.tally.frames == -(-len(DATA) // 10000)


def test_errors_are_shazip_errors():
    packed = shazip.compress(DATA, strategy="zstd")
    assert issubclass(ChecksumError, shazip.ShazipError)
    with pytest.raises(FormatError, match="not a .shz file"):
        shazip.decompress(b"hello world, not compressed")
    with pytest.raises(TruncatedError):
        shazip.decompress(packed[:-1])
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 4
    with pytest.raises(shazip.ShazipError, match="corrupt frame 1"):
        shazip.decompress(bytes(broken))


def test_reader_reports_errors_at_the_right_time():
    packed = shazip.compress(DATA, strategy="zstd", frame_size=4096)
    reader = shazip.open(io.BytesIO(packed[:-10]), "rb")
    assert reader.read(4096) == DATA[:4096]  # good frames come out before the truncation is seen
    with pytest.raises(TruncatedError):
        reader.read()


def test_writer_after_an_error_leaves_an_invalid_stream():
    class FailingSink(io.BytesIO):
        def write(self, data):
            if len(data) > 1000:
                raise OSError("disk full")
            return super().write(data)

    sink = FailingSink()
    writer = shazip.open(sink, "wb", strategy="zstd", frame_size=2000)
    with pytest.raises(OSError, match="disk full"):
        writer.write(os.urandom(5000))
    writer.close()  # no footer is added to a stream that lost a frame
    with pytest.raises(shazip.ShazipError):
        shazip.decompress(sink.getvalue())
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_round_trip_with_models_at_the_limits(extreme_model_path):
    # A model anywhere inside the documented limits compresses and decompresses through the API, its
    # network in use (MIX frames).
    from shazip.format import Method, frame_headers
    from tests.paths import sample_text

    data = sample_text(3000, offset=20000)  # (varied text: zstd beats even a mixing stage on DATA)
    packed = shazip.compress(data, model=extreme_model_path, strategy="model", lanes=2, frame_size=2048)
    assert {f.method for f in frame_headers(io.BytesIO(packed))} == {Method.MIX}
    assert shazip.decompress(packed, model=extreme_model_path) == data
