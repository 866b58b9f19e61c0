"""Codec mechanics with a toy engine: lanes, frames, state carried across frames, fallbacks.

The toy engine is a per-lane adaptive order-1 byte model with the same interface as shazip.engine.Engine
(docs/internals.md). It is cheap, so these tests can use many lanes and frames; the real engine's round
trips are in test_codec.py.
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shazip.format import FrameFlag, Method, ModelMismatchError, frame_headers, lane_layout, scan
from shazip.frames import MIX_V1, FrameJob
from shazip.frames.network import NetworkLanes, crlf_as_lf_applies
from shazip.levels import DEFAULT_LEVEL, LEVELS, choose_lanes
from shazip.stream import StreamDecoder, StreamEncoder

MIN_LANE_BYTES = LEVELS[DEFAULT_LEVEL].lane_bytes


class ToyState:
    def __init__(self, lanes: int) -> None:
        self.prev = np.zeros(lanes, dtype=np.int64)
        self.counts = np.zeros((lanes, 256, 256), dtype=np.int32)

    def copy(self) -> ToyState:
        other = ToyState.__new__(ToyState)
        other.prev = self.prev.copy()
        other.counts = self.counts.copy()
        return other


class ToyEngine:
    def __init__(self) -> None:
        self.steps = 0

    def new_state(self, lanes: int) -> ToyState:
        return ToyState(lanes)

    def predict(self, state: ToyState) -> np.ndarray:
        lanes = np.arange(len(state.prev))
        return state.counts[lanes, state.prev] * 16 + 1

    def advance(self, state: ToyState, symbols: np.ndarray, alongside=None) -> None:  # noqa: ANN001
        if alongside is not None:
            alongside()
        k = len(symbols)
        state.counts[np.arange(k), state.prev[:k], symbols] += 1
        state.prev[:k] = symbols
        self.steps += 1


class ToyModel:
    def __init__(self, name: str = "toy") -> None:
        self.name = name
        self.model_id = hashlib.sha256(name.encode()).digest()
        self.engines: list[ToyEngine] = []

    def factory(self, model: object, device: str, threads: int | None) -> ToyEngine:
        assert model is self
        engine = ToyEngine()
        self.engines.append(engine)
        return engine


def toy_compress(data: bytes, model: ToyModel | None = None, chunk: int | None = None, **options) -> bytes:
    model = model or ToyModel()
    out = io.BytesIO()
    encoder = StreamEncoder(out, model, device="cpu", engine_factory=model.factory, **options)
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        encoder.write(data[i : i + step])
    encoder.finish()
    return out.getvalue()


def toy_decompress(packed: bytes, model: ToyModel | None = None, **options) -> bytes:
    model = model or ToyModel()
    decoder = StreamDecoder(io.BytesIO(packed), model, device="cpu", engine_factory=model.factory, **options)
    return b"".join(decoder.frames())


def text(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    words = [b"the", b"quick", b"brown", b"fox", b"jumps", b"over", b"lazy", b"dog", b"and", b"cat"]
    out = bytearray()
    while len(out) < n:
        out += words[rng.integers(len(words))] + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:n])


def markov(n: int, seed: int = 0) -> bytes:
    """An order-1 Markov source over 16 byte values: the toy model learns it, zstd cannot exploit it."""
    rng = np.random.default_rng(seed)
    table = np.random.default_rng(99).dirichlet(np.full(16, 0.15), size=16)
    out = np.empty(n, dtype=np.uint8)
    prev = 0
    draws = rng.random(n)
    cumulative = table.cumsum(axis=1)
    for i in range(n):
        prev = min(int(np.searchsorted(cumulative[prev], draws[i])), 15)
        out[i] = prev
    return (out + ord("a")).tobytes()


def test_lane_layout_covers_every_byte_once():
    for n in [1, 2, 7, 64, 65, 100, 1000, 1023, 4097]:
        for lanes in [1, 2, 3, 7, 64]:
            run, full, rest = lane_layout(n, lanes)
            assert full * run + rest == n
            assert full + (1 if rest else 0) <= lanes
            assert rest < run


def test_choose_lanes_small_inputs_get_few_lanes():
    assert choose_lanes(0, 64, MIN_LANE_BYTES) == 1
    assert choose_lanes(100, 64, MIN_LANE_BYTES) == 1
    assert choose_lanes(5 * MIN_LANE_BYTES + 3, 64, MIN_LANE_BYTES) == 5
    assert choose_lanes(1 << 20, 64, MIN_LANE_BYTES) == (1 << 20) // MIN_LANE_BYTES
    assert choose_lanes(64 * MIN_LANE_BYTES, 64, MIN_LANE_BYTES) == 64
    assert choose_lanes(1 << 30, 256, MIN_LANE_BYTES) == 256


@pytest.mark.parametrize("lanes", [1, 2, 5, 64])
@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 999, 1000, 1001, 3001])
def test_round_trip_lane_and_frame_boundaries(n, lanes):
    data = text(n, seed=n)
    packed = toy_compress(data, lanes=lanes, frame_size=1000, strategy="model")
    assert toy_decompress(packed) == data


def test_model_frames_are_used_and_lanes_recorded():
    data = markov(20000)
    packed = toy_compress(data, lanes=3, frame_size=4096, strategy="model")
    info = scan(io.BytesIO(packed))
    assert info.header.lanes == 3
    assert info.header.frame_size == 4096
    frames = frame_headers(io.BytesIO(packed))
    assert [f.raw_size for f in frames] == [4096] * 4 + [20000 - 4 * 4096]
    model_frames = [f for f in frames if f.method == Method.MIX]
    assert model_frames and all(f.lanes == 3 for f in model_frames)
    assert info.footer.total_size == 20000 and info.footer.frame_count == 5


def test_state_is_carried_across_frames():
    """Later frames of repetitive text cost less than the first: the lanes remember earlier frames.
    (Short frames: within a long one the frame's own mixing model learns the source too, and even in
    these it learns much of it, hence the modest margin.)"""
    data = markov(6 * 1024, seed=1)
    frames = frame_headers(io.BytesIO(toy_compress(data, lanes=2, frame_size=1024, strategy="model")))
    sizes = [f.coded_size for f in frames]
    assert all(f.method == Method.MIX for f in frames)
    assert sizes[-1] < sizes[0] * 0.9


def test_incompressible_frames_skip_the_model():
    model = ToyModel()
    data = os.urandom(3 * 16384)
    packed = toy_compress(data, model=model, lanes=4, frame_size=16384)
    assert all(f.method == Method.STORED for f in frame_headers(io.BytesIO(packed)))
    assert not model.engines or model.engines[0].steps == 0
    assert len(packed) <= len(data) + 400
    assert toy_decompress(packed) == data


def test_model_frame_that_loses_is_replaced_and_state_restored():
    """Random bytes with strategy=model: the model runs, loses, and its lane state must be rolled back
    (otherwise the following text frame would decode wrongly)."""
    data = os.urandom(3000) + markov(3000) + os.urandom(100) + markov(5000, seed=2)
    packed = toy_compress(data, lanes=2, frame_size=3000, strategy="model")
    methods = [f.method for f in frame_headers(io.BytesIO(packed))]
    assert methods[0] == Method.STORED and Method.MIX in methods
    assert toy_decompress(packed) == data


def test_losing_model_frame_stops_early():
    """Once the payload is sure to reach the size to beat, the encoder stops running the model."""
    model = ToyModel()
    data = markov(20_000)
    job = FrameJob(network=NetworkLanes(model, 1, "cpu", None, model.factory), lanes=1)
    full = MIX_V1.encode(data, 1 << 30, job)
    assert full is not None
    steps = model.engines[0].steps
    assert MIX_V1.encode(data, len(full.payload) + 4, job) is not None  # can still win: runs to the end
    assert model.engines[0].steps == 2 * steps
    assert MIX_V1.encode(data, len(full.payload) // 4, job) is None
    assert model.engines[0].steps - 2 * steps < steps // 3  # stopped about a quarter of the way


def test_mixed_content_and_small_writes():
    data = markov(5000) + os.urandom(5000) + bytes(5000) + text(5000, seed=3)
    packed = toy_compress(data, lanes=4, frame_size=5000, chunk=333)
    methods = {f.method for f in frame_headers(io.BytesIO(packed))}
    assert Method.STORED in methods
    assert toy_decompress(packed) == data


def test_piecewise_writes_give_identical_output():
    data = text(10000)
    whole = toy_compress(data, lanes=3, frame_size=2048)
    assert toy_compress(data, lanes=3, frame_size=2048, chunk=1) == whole
    assert toy_compress(data, lanes=3, frame_size=2048, chunk=777) == whole


def test_wrong_model_is_refused_with_both_names():
    packed = toy_compress(text(1000), model=ToyModel("alpha"))
    with pytest.raises(ModelMismatchError, match=r"needs model alpha \(id [0-9a-f]+…\), got beta"):
        toy_decompress(packed, model=ToyModel("beta"))


def test_lanes_chosen_from_input_size():
    # (level 9: lanes of the level's size; the default level gives small inputs up to 16 faster lanes)
    big_lanes = scan(io.BytesIO(toy_compress(text(3 * (512 << 10) + 5), level=9))).header
    assert big_lanes.lanes == 3
    small = scan(io.BytesIO(toy_compress(text(3 * MIN_LANE_BYTES + 5)))).header
    assert small.lanes == 16


def test_decoder_accepts_frames_with_fewer_lanes_than_the_header():
    """The spec lets a frame use lanes 0..k-1 of the header's B lanes (today's writer always uses B)."""
    from shazip.format import Footer, FrameHeader, StreamHeader, assemble, content_hasher, crc32

    model = ToyModel()
    network = NetworkLanes(model, 4, "cpu", None, model.factory)
    frames = [markov(900, seed=1), markov(500, seed=2), markov(700, seed=3)]
    parts = []
    hasher = content_hasher()
    for raw, lanes in zip(frames, [4, 2, 3], strict=True):
        coded = MIX_V1.encode(raw, 1 << 30, FrameJob(network=network, lanes=lanes))
        payload = coded.payload
        frame = FrameHeader(
            Method.MIX, len(raw), len(payload), crc32(raw), lanes, crc32(payload), coded.flags
        )
        parts.append((frame, payload))
        hasher.update(raw)
    footer = Footer(3, sum(map(len, frames)), hasher.digest())
    packed = assemble(StreamHeader(4, 1000, model.model_id, model.name), parts, footer)
    assert toy_decompress(packed) == b"".join(frames)


def test_crlf_as_lf_applies_only_when_every_lf_follows_a_cr():
    assert crlf_as_lf_applies(b"a\r\nb\r\n")
    assert crlf_as_lf_applies(b"a\r\r\nb\rc\r\n")  # lone CRs stay as they are
    assert not crlf_as_lf_applies(b"a\r\nb\n")  # a bare LF: LF -> CR LF would not undo it
    assert not crlf_as_lf_applies(b"plain\ntext\n")
    assert not crlf_as_lf_applies(b"no line ends\r")


def test_crlf_text_is_coded_as_lf_text_and_restored():
    data = text(30000, seed=3).replace(b"\n", b"\r\n")
    packed = toy_compress(data, strategy="model", frame_size=8192)
    model_frames = [f for f in frame_headers(io.BytesIO(packed)) if f.method == Method.MIX]
    assert model_frames and all(f.flags == FrameFlag.CRLF_AS_LF for f in model_frames)
    assert toy_decompress(packed) == data


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n", b"\r\n"]), max_size=600).map(b"".join),
    frame_size=st.integers(3, 200),
)
def test_round_trip_of_any_mix_of_line_ends(data: bytes, frame_size: int) -> None:
    packed = toy_compress(data, strategy="model", frame_size=frame_size, lanes=2)
    assert toy_decompress(packed) == data


def crafted_model_stream(model: ToyModel, raw_size: int, payload: bytes, lanes: int = 1) -> bytes:
    """A stream of one net frame with a valid structure (every CRC right) around `payload`."""
    from shazip.format import Footer, FrameHeader, StreamHeader, assemble, crc32

    frame = FrameHeader(Method.NET, raw_size, len(payload), 0, lanes, crc32(payload))
    header = StreamHeader(lanes, raw_size, model.model_id, model.name)
    return assemble(header, [(frame, payload)], Footer(1, raw_size, bytes(16)))


@pytest.mark.parametrize("word", [b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x78\x56\x34\x12"])
@pytest.mark.parametrize("lanes", [1, 16])
def test_a_net_frame_that_runs_out_of_payload_fails_at_once(word: bytes, lanes: int) -> None:
    """A one-word payload claiming a million bytes: the decoder stops when its symbols carry more than the
    payload can hold (or it reads past the word a genuine payload may lack), not after a million steps."""
    from shazip.format import ChecksumError

    model = ToyModel()
    with pytest.raises(ChecksumError, match=r"corrupt frame 1 \(net payload ends too soon"):
        toy_decompress(crafted_model_stream(model, 1_000_000, word, lanes), model)
    assert model.engines[-1].steps < 5000


def test_a_tiny_payload_claiming_a_big_frame_is_refused_before_model_time() -> None:
    from shazip.format import FormatError

    model = ToyModel()
    with pytest.raises(FormatError, match="net frame: 4 bytes too few for 67108864"):
        toy_decompress(crafted_model_stream(model, 64 << 20, bytes(4)), model, memlimit=None)
    assert model.engines == []  # the engine never started


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=3000)
    | st.builds(lambda n, s: markov(n, seed=s), st.integers(0, 6000), st.integers(0, 9)),
    lanes=st.integers(1, 9),
    frame_size=st.integers(1, 4000),
)
def test_net_frames_round_trip_any_bytes_lanes_and_frames(data: bytes, lanes: int, frame_size: int) -> None:
    packed = toy_compress(data, strategy="net", lanes=lanes, frame_size=frame_size)
    assert toy_decompress(packed) == data


def test_net_strategy_writes_net_frames_with_lanes_and_crlf():
    data = markov(20_000, seed=4)
    packed = toy_compress(data, strategy="net", lanes=3, frame_size=8192)
    frames = frame_headers(io.BytesIO(packed))
    assert {f.method for f in frames} == {Method.NET} and all(f.lanes == 3 for f in frames)
    assert all(f.coded_size % 4 == 0 for f in frames)  # (range-coder words)
    assert toy_decompress(packed) == data
    body = markov(9000, seed=5).replace(b"\r", b"").replace(b"\n", b"")
    crlf = b"\r\n".join(body[i : i + 60] for i in range(0, len(body), 60))
    packed = toy_compress(crlf, strategy="net", frame_size=4096)
    net = [f for f in frame_headers(io.BytesIO(packed)) if f.method == Method.NET]
    assert net and all(f.flags == FrameFlag.CRLF_AS_LF for f in net)
    assert toy_decompress(packed) == crlf
