"""What a stream needs in memory, computed from its header (shazip.runtime.memory_needed), against what
the code allocates; the limit refuses a header that asks for too much before anything large exists."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from shazip import runtime
from shazip.format import (
    Footer,
    FrameHeader,
    MemoryLimitError,
    Method,
    StreamHeader,
    assemble,
    crc32,
)
from shazip.frames.lzma import DECODER_BYTES
from shazip.modelfile import ModelFile, default_model_path
from shazip.stream import StreamDecoder, StreamEncoder
from tests.paths import command_env, sample_text
from tests.test_codec_toy import ToyModel, toy_compress, toy_decompress


def allocated(obj: object) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("name", ["default", "fixture"])
def test_engine_lane_bytes_cover_the_engine_state(name, fixture_model_path):
    from shazip.engine import Engine

    model = ModelFile.load(default_model_path() if name == "default" else fixture_model_path)
    state = Engine(model, device="cpu").new_state(5)
    arrays = [*state.h8, *state.cell, state.ring, state.written, state.freqs]
    per_lane = sum(a.nbytes for a in arrays) / 5
    assert per_lane <= runtime.engine_lane_bytes(model.config) < 3 * per_lane


def test_need_follows_the_header():
    model = ModelFile.load(default_model_path())

    def need(**fields) -> runtime.MemoryNeed:
        header = StreamHeader(
            **({"lanes": 64, "frame_size": 1 << 20, "model_id": model.model_id} | fields), model_name="m"
        )
        return runtime.memory_needed(header, model)

    assert need().total < runtime.DEFAULT_MEMLIMIT  # what the writer makes by default decodes by default
    assert need(lanes=256, frame_size=4 << 20).total < runtime.DEFAULT_MEMLIMIT  # (its GPU settings too)
    assert need(lanes=8192).total > runtime.DEFAULT_MEMLIMIT
    assert need(lanes=128).engine == 2 * need(lanes=64).engine
    plain = need(model_id=bytes(32))  # (no network: a CM frame's mixing model on one lane is the most)
    from shazip.mixing import state_bytes

    assert plain.frames == runtime.PLAIN_FRAME_COPIES << 20 and plain.engine == 0
    assert plain.tables == state_bytes(1, 1 << 20)
    assert need(model_id=bytes(32), frame_size=1000).tables == DECODER_BYTES  # (small frames)


def test_the_decoder_refuses_before_starting_the_engine():
    model = ToyModel()
    payload = bytes(8)
    frame = FrameHeader(Method.NET, 100, 8, 0, 8192, crc32(payload))
    packed = assemble(
        StreamHeader(8192, 1 << 20, model.model_id, "toy"), [(frame, payload)], Footer(1, 100, bytes(16))
    )
    with pytest.raises(MemoryLimitError, match=r"needs \d+ MiB of memory to decode .* 8192 lanes"):
        toy_decompress(packed, model, memlimit=200 << 20)
    assert model.engines == []
    with pytest.raises(MemoryLimitError):
        toy_decompress(packed, model, memlimit=1 << 20)


def test_the_writer_puts_no_more_lanes_in_the_header_than_bytes_can_use():
    from shazip.format import read_header

    for size, lanes in [(1000, 8192), (50, 64), (0, 17)]:
        packed = toy_compress(sample_text(size), lanes=lanes, strategy="model", frame_size=1 << 16)
        assert read_header(io.BytesIO(packed)).lanes == max(1, min(lanes, size))
        assert toy_decompress(packed) == sample_text(size)
    packed = toy_compress(sample_text(5000), lanes=8192, frame_size=1000, strategy="model")
    assert read_header(io.BytesIO(packed)).lanes == 1000  # (a whole frame's worth)
    assert toy_decompress(packed) == sample_text(5000)


def test_writer_refuses_settings_readers_would_refuse():
    out = io.BytesIO()
    encoder = StreamEncoder(
        out, ToyModel(), lanes=8192, frame_size=1 << 16, memlimit=60 << 20, strategy="model"
    )
    with pytest.raises(MemoryLimitError, match="to decode what this writes"):
        encoder.write(sample_text(1 << 16))
    assert out.getvalue() == b""


@pytest.mark.parametrize("method", ["stored", "zstd", "model"])
def test_frame_buffers_stay_within_their_share(method):
    """tracemalloc's peak while decoding one big frame (numpy and zstd allocate through it): within what
    memory_needed counts for it (the toy engine's own state added)."""
    frame_size, lanes = 1 << 18, 32
    data = os.urandom(frame_size) if method == "stored" else sample_text(frame_size)
    model = ToyModel()
    strategy = {"stored": "zstd", "zstd": "zstd", "model": "model"}[method]
    packed = toy_compress(data, model, lanes=lanes, frame_size=frame_size, strategy=strategy)
    decoder = StreamDecoder(
        io.BytesIO(packed), model if method == "model" else None, device="cpu", engine_factory=model.factory
    )
    header = decoder.read_header()
    need = runtime.memory_needed(header, model if method == "model" else None)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = b"".join(decoder.frames())
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert out == data
    toy_state = lanes * 256 * 256 * 4 + lanes * 256 * 8 * 2  # (ToyState counts; a step's tables)
    assert peak <= need.total + toy_state, (peak, need)


# Runs a command and prints its exit code and peak RSS (KiB). A process's peak RSS starts at its parent's
# at fork and survives exec, so the command is forked from this small process, not from pytest's.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # (the command's output is not measured)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mb(args: list[str], cwd: Path) -> tuple[int, float, bytes]:
    """Run `python -m shazip ARGS`; (exit code, peak RSS in MB, stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "shazip", *args],
        cwd=cwd,
        env=command_env(),
        capture_output=True,
        timeout=600,
    )
    code, kib = done.stdout.split()[-2:]
    return int(code), int(kib) / 1024, done.stderr


def test_a_small_file_claiming_8192_lanes_is_refused_in_little_memory(tmp_path):
    model = ModelFile.load(default_model_path())
    payload = bytes(8)
    frame = FrameHeader(Method.NET, 100, 8, 0, 8192, crc32(payload))
    header = StreamHeader(8192, 1 << 20, model.model_id, model.name)
    (tmp_path / "lanes.shz").write_bytes(assemble(header, [(frame, payload)], Footer(1, 100, bytes(16))))
    assert (tmp_path / "lanes.shz").stat().st_size <= 200
    code, rss, err = peak_rss_mb(["decompress", "-c", "lanes.shz"], tmp_path)
    assert code == 1 and b"more than the limit" in err
    assert rss <= 400, f"{rss:.0f} MB"
