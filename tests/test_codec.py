"""Round trips through the real engine on the fixture model: hypothesis inputs, frame and lane boundaries,
fallback frames, the model check. Inputs are small: the fixture engine takes about 1 ms per step."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shazip
from shazip.format import (
    FOOTER_SIZE,
    FRAME_HEADER_SIZE,
    MIN_HEADER_SIZE,
    Method,
    ModelMismatchError,
    frame_headers,
    scan,
)
from shazip.frames import NET_V1, FrameJob
from shazip.frames.network import NetworkLanes
from shazip.runtime import default_engine_factory
from shazip.stream import StreamDecoder, StreamEncoder
from tests.paths import sample_text


@pytest.fixture(scope="module")
def model(fixture_model_path):
    from shazip.modelfile import ModelFile

    return ModelFile.load(fixture_model_path)


@pytest.fixture(scope="module")
def engines():
    """Engines made by the codec, counted (one shared factory so torch/numba start once)."""
    made = []

    def factory(model, device, threads):
        engine = default_engine_factory(model, device, threads)
        made.append(engine)
        return engine

    factory.made = made
    return factory


def round_trip(data: bytes, model, factory, **options) -> bytes:
    out = io.BytesIO()
    encoder = StreamEncoder(out, model, device="cpu", engine_factory=factory, **options)
    encoder.write(data)
    encoder.finish()
    packed = out.getvalue()
    decoder = StreamDecoder(io.BytesIO(packed), model, device="cpu", engine_factory=factory)
    assert b"".join(decoder.frames()) == data
    return packed


inputs = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.just(bytes(range(256))),
    st.binary(max_size=300),
    st.builds(lambda b, k: b * k, st.binary(min_size=1, max_size=5), st.integers(1, 80)),
    st.text(max_size=150).map(lambda s: s.encode("utf-8")),
    st.integers(0, 20000).map(lambda offset: sample_text(300, offset)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=inputs, lanes=st.sampled_from([1, 2, 3, 7]), frame_size=st.sampled_from([64, 100, 257, 1000]))
def test_round_trip_hypothesis(model, engines, data, lanes, frame_size):
    round_trip(data, model, engines, lanes=lanes, frame_size=frame_size, strategy="model")


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 127, 128, 129, 255, 256, 257, 513])
def test_sizes_around_frame_and_lane_boundaries(model, engines, n):
    data = sample_text(n, offset=n)
    packed = round_trip(data, model, engines, lanes=4, frame_size=128, strategy="model")
    frames = frame_headers(io.BytesIO(packed))
    assert len(frames) == -(-n // 128)
    assert sum(f.raw_size for f in frames) == n


def test_text_uses_model_frames_and_beats_zstd(model, engines):
    import zstandard

    data = sample_text(3000)
    packed = round_trip(data, model, engines, lanes=2, strategy="model")
    info = scan(io.BytesIO(packed))
    assert info.header.lanes == 1 or info.header.lanes == 2
    assert all(f.method == Method.MIX for f in frame_headers(io.BytesIO(packed)))
    assert len(packed) < len(zstandard.ZstdCompressor(level=19).compress(data))


def test_all_byte_values_and_long_runs(model, engines):
    data = bytes(range(256)) * 3 + bytes(700) + b"\xff" * 300
    round_trip(data, model, engines, lanes=3, frame_size=512, strategy="model")


def test_random_data_is_stored_without_running_the_model(model, engines):
    before = len(engines.made)
    data = os.urandom(3 * 8192)
    packed = round_trip(data, model, engines, lanes=2, frame_size=8192)
    assert {f.method for f in frame_headers(io.BytesIO(packed))} == {Method.STORED}
    assert len(engines.made) == before  # no engine was ever started: the cheap test said no
    overhead = MIN_HEADER_SIZE + len(model.name.encode()) + 3 * FRAME_HEADER_SIZE + FOOTER_SIZE
    assert len(packed) == len(data) + overhead


def test_losing_model_frame_is_replaced_and_lanes_restored(model, engines):
    """Random frames make the model lose (strategy=model runs it anyway): its lane state must be rolled
    back, or the text frames after them would not decode."""
    data = os.urandom(700) + sample_text(700) + os.urandom(700) + sample_text(700, offset=5000)
    packed = round_trip(data, model, engines, lanes=2, frame_size=700, strategy="model")
    methods = [f.method for f in frame_headers(io.BytesIO(packed))]
    assert methods == [Method.STORED, Method.MIX, Method.STORED, Method.MIX]


def test_lane_state_carries_across_frames(model, engines):
    """Coding a frame after the one before it costs less than coding it alone: the engine's context is
    carried. (Measured on net frames, the engine's own tables: the mixing model starts afresh in every
    frame anyway. The fixture model's short memory gains a few bytes at most per frame, in whole 4-byte
    words, so two pairs of frames of Python source are summed.)"""

    def second_frame_size(frames: list[bytes]) -> int:
        job = FrameJob(network=NetworkLanes(model, 1, "cpu", None, engines), lanes=1)
        sizes = [len(NET_V1.encode(frame, 1 << 30, job).payload) for frame in frames]
        return sizes[-1]

    pairs = [(sample_text(800, offset), sample_text(800, offset + 800)) for offset in (150_000, 200_000)]
    after = sum(second_frame_size([first, second]) for first, second in pairs)
    alone = sum(second_frame_size([second]) for _, second in pairs)
    assert after < alone
    first, second = pairs[0]
    both = frame_headers(
        io.BytesIO(round_trip(first + second, model, engines, lanes=1, frame_size=800, strategy="model"))
    )
    assert [f.method for f in both] == [Method.MIX, Method.MIX]


def test_api_with_model_path(fixture_model_path):
    data = sample_text(500)
    packed = shazip.compress(data, fixture_model_path, device="cpu", lanes=2)
    header = shazip.frame_parameters(packed)
    assert header.model_name and header.lanes == 2
    assert shazip.decompress(packed, fixture_model_path, device="cpu") == data


@pytest.fixture(scope="module")
def other_model_path(model, tmp_path_factory):
    """A different model: the fixture with one weight changed (so a different identity)."""
    from shazip.modelfile import ModelFile

    tensors = {k: v.copy() for k, v in model.tensors.items()}
    name = sorted(k for k, v in tensors.items() if v.dtype == np.int8)[0]
    flat = tensors[name].reshape(-1)
    flat[0] = 1 if flat[0] != 1 else 2
    other = ModelFile(config=model.config, quant=model.quant, tensors=tensors, name="other-model")
    path = tmp_path_factory.mktemp("models") / "other.safetensors"
    other.save(path)
    return path


def test_wrong_model_is_refused(fixture_model_path, other_model_path, model):
    packed = shazip.compress(sample_text(300), fixture_model_path, device="cpu")
    with pytest.raises(
        ModelMismatchError, match=rf"needs model {model.name} \(id {model.model_id.hex()[:16]}"
    ):
        shazip.decompress(packed, other_model_path, device="cpu")
