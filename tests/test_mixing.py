"""The mixing model and its binary arithmetic coder (shazip/mixing, docs/format.md "Mixing frames"): round
trips, encoder-side equals decoder-side, golden payloads, damaged payloads, table invariants, memory."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shazip.format import ChecksumError, lane_layout
from shazip.mixing import MixingCoder, StopFrame, decode_cm, encode_cm
from shazip.mixing import model as M
from shazip.mixing.tables import NEXT_STATE, SQUASH, STATE_COUNTS, STRETCH
from tests.paths import sample_text


def fake_tables(seed: int, steps: int, lanes: int) -> np.ndarray:
    """Network-like tables ([steps, lanes, 256], entries >= 1) that favour a few bytes, deterministically."""
    rng = np.random.default_rng(seed)
    tables = rng.integers(1, 50, size=(steps, lanes, 256), dtype=np.int32)
    favourites = rng.integers(0, 256, size=(steps, lanes, 3))
    for k in range(3):
        np.put_along_axis(tables, favourites[:, :, k : k + 1], 5000 >> k, axis=2)
    return tables


def mix_round_trip(data: bytes, lanes: int, seed: int = 0) -> bytes:
    """A mix frame of `data` in `lanes` lanes with fake network tables, encoded then decoded; returns the
    payload after checking the decoded bytes."""
    n = len(data)
    layout = lane_layout(n, lanes)
    run, full, rest = layout
    flat = np.zeros(lanes * run, dtype=np.uint8)
    flat[:n] = np.frombuffer(data, dtype=np.uint8)
    grid = np.ascontiguousarray(flat.reshape(lanes, run).T)
    tables = fake_tables(seed, run, lanes)
    encoder = MixingCoder(lanes, n, grid)
    for t in range(run):
        active = full + (1 if t < rest else 0)
        encoder.step(t, active, layout, tables[t, :active])
    payload = encoder.payload()
    decoded = np.zeros((run, lanes), dtype=np.uint8)
    decoder = MixingCoder(lanes, n, decoded, payload=payload)
    for t in range(run):
        active = full + (1 if t < rest else 0)
        decoder.step(t, active, layout, tables[t, :active])
    assert decoded.T.reshape(-1)[:n].tobytes() == data
    return payload


@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000))
def test_cm_frames_round_trip_any_bytes(data: bytes) -> None:
    payload = encode_cm(data)
    assert payload is not None
    assert decode_cm(payload, len(data), 1) == data


@settings(max_examples=20, deadline=None)
@given(
    words=st.lists(
        st.sampled_from([b"ab", b"abc", b"x\n", b"\xc3\xa9", b"  ", b"the "]), min_size=1, max_size=400
    ),
    lanes=st.integers(1, 12),
    seed=st.integers(0, 3),
)
def test_mix_frames_decode_what_was_encoded_for_any_lane_count(
    words: list[bytes], lanes: int, seed: int
) -> None:
    # Repetitive words across lanes exercise matches into other lanes, runs, records and lines: the decoder
    # must see exactly the tables the encoder saw, which it can only do if nothing reads ahead.
    data = b"".join(words)
    mix_round_trip(data, min(lanes, len(data)), seed)


def test_text_and_logs_compress_well() -> None:
    text = sample_text(60_000)
    assert len(encode_cm(text)) < 0.3 * len(text)
    log = b"".join(
        b"2026-12-06 10:%02d:%02d INFO worker %d done\n" % (i // 60 % 60, i % 60, i % 7) for i in range(3000)
    )
    assert len(encode_cm(log)) < 0.03 * len(log)


def test_the_network_input_is_used() -> None:
    # Tables that put almost all their weight on the true next byte must make the frame tiny.
    data = sample_text(20_000, offset=3000)
    n, lanes = len(data), 4
    layout = lane_layout(n, lanes)
    run, full, rest = layout
    grid = np.ascontiguousarray(np.frombuffer(data, dtype=np.uint8).reshape(lanes, run).T)
    coder = MixingCoder(lanes, n, grid)
    for t in range(run):
        tables = np.ones((lanes, 256), dtype=np.int32)
        tables[np.arange(lanes), grid[t]] = 1 << 20
        coder.step(t, lanes, layout, tables)
    assert len(coder.payload()) < 0.02 * n


# sha256 of payloads as first specified in docs/format.md ("Mixing frames"): any change to a formula, an
# order of updates or a table changes them (and old files would no longer decode).
GOLDEN_CM_SHA256 = "a8c4179ced779f3419edeb31c6cf30a8a368eba95a478666d68f81cbc4642796"
GOLDEN_MIX_SHA256 = "3e510d75b7d66f999855011dd5f8f09b64cd3c788885eeda0b6d14eb902ab8ca"


def golden_payloads() -> tuple[str, str]:
    data = sample_text(30_000) + bytes(range(256)) * 8 + sample_text(5_000, offset=150_000)
    cm = encode_cm(data)
    mix = mix_round_trip(data[:12_000], 5, seed=7)
    return hashlib.sha256(cm).hexdigest(), hashlib.sha256(mix).hexdigest()


def test_payloads_are_as_specified() -> None:
    cm, mix = golden_payloads()
    assert cm == GOLDEN_CM_SHA256
    assert mix == GOLDEN_MIX_SHA256


def test_a_truncated_or_damaged_payload_fails_at_once() -> None:
    data = sample_text(50_000)
    payload = encode_cm(data)
    with pytest.raises(ChecksumError, match="corrupt frame 3 .mixing payload ends early"):
        decode_cm(payload[:100], len(data), 3)
    with pytest.raises(ChecksumError):  # a claim of 64 MiB behind a 4-byte payload stops within bytes
        decode_cm(b"\x01\x02\x03\x04", 1 << 26, 3)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0x10
    try:
        wrong = decode_cm(bytes(flipped), len(data), 3)
    except ChecksumError:
        wrong = None
    assert wrong != data  # (the frame's CRC catches what decodes to other bytes)


def test_the_encoder_stops_at_its_limit() -> None:
    data = os.urandom(20_000)
    assert encode_cm(data, limit=len(data)) is None  # noise does not get under its own size
    grid = np.frombuffer(data, dtype=np.uint8).reshape(-1, 1).copy()
    coder = MixingCoder(1, len(data), grid, limit=100)
    with pytest.raises(StopFrame):
        coder.code_frame()


def test_noise_costs_under_one_percent_more_than_stored() -> None:
    data = os.urandom(100_000)
    payload = encode_cm(data)
    assert payload is not None and len(payload) < 1.01 * len(data)


def test_stretch_squash_and_states() -> None:
    assert (np.diff(STRETCH[1:]) >= 0).all() and STRETCH[32768] == 0
    assert (np.diff(SQUASH) >= 0).all() and SQUASH[2047] == 32768
    for p in (2, 100, 30000, 32768, 60000, 65500):
        assert abs(int(SQUASH[STRETCH[p] + 2047]) - p) <= max(2, p // 100, (65536 - p) // 100)
    used = int(np.count_nonzero((STATE_COUNTS != 0).any(axis=1))) + 1
    assert used == 178
    for s in range(used):
        n0, n1 = STATE_COUNTS[s]
        a0, _ = STATE_COUNTS[NEXT_STATE[s, 0]]
        _, b1 = STATE_COUNTS[NEXT_STATE[s, 1]]
        assert a0 >= min(n0 + 1, 5) or a0 == n0  # a 0 adds to n0 unless its count is at its limit
        assert b1 >= min(n1 + 1, 5) or b1 == n1


def test_tables_grow_with_the_frame_as_state_bytes_says() -> None:
    from shazip.mixing import state_bytes

    for lanes, n in ((1, 2000), (3, 50_000), (16, 1 << 20)):
        assert sum(a.nbytes for a in M.new_state(lanes, n)) == state_bytes(lanes, n)
    assert state_bytes(1, 2000) < 8 << 20 and state_bytes(16, 1 << 20) > 40 * state_bytes(1, 2000)
