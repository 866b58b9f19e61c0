"""Context counts (shazip/context_counts.py) and the in-file models together: exact integer tables the
decoder can reproduce, and that they learn a file's own statistics without hurting where they cannot."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shazip.codec import InFileModels
from shazip.context_counts import LOG2_TABLE, LOG_Q, ContextCounts, _log2_q
from shazip.format import FrameFlag
from tests.test_match import run_tables, step_major

ALL = FrameFlag.MATCH_MODEL | FrameFlag.CONTEXT_COUNTS


def test_integer_log2_is_floor_of_log2_within_one_unit():
    assert LOG2_TABLE[0] == 0 and np.all(np.diff(LOG2_TABLE) >= 0)
    for v in [1, 2, 3, 5, 1000, 4095, 4096, 4097, 123_456_789, (1 << 40) + 12345, (1 << 55) - 1]:
        exact = math.log2(v) * (1 << LOG_Q)
        assert exact - 2 < _log2_q(v, LOG2_TABLE) <= exact + 1e-6
    for k in range(50):
        assert _log2_q(1 << k, LOG2_TABLE) == k << LOG_Q


@settings(max_examples=50, deadline=None)
@given(
    data=st.lists(st.sampled_from(b"abc \n"), min_size=1, max_size=500).map(bytes),
    lanes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    flags=st.sampled_from([FrameFlag.CONTEXT_COUNTS, ALL]),
)
def test_tables_use_only_bytes_of_earlier_steps(data: bytes, lanes: int, seed: int, flags: int) -> None:
    encoder_side = run_tables(data, lanes, seed, flags, decoder_side=False)
    decoder_side = run_tables(data, lanes, seed, flags, decoder_side=True)
    for a, b in zip(encoder_side, decoder_side, strict=True):
        assert np.array_equal(a, b)
        assert (a >= 1).all() and np.array_equal(a, np.floor(a)) and (a.sum(-1) < 2**53).all()


def code_length(data: bytes, lanes: int, flags: int) -> float:
    """Ideal code length in bits with an 'engine' that knows only letter frequencies of English."""
    grid, run, full, rest = step_major(data, lanes)
    models = InFileModels(grid, run, full, rest, flags)
    prior = np.full(256, 16, dtype=np.int32)
    for i, ch in enumerate(b" etaoinshrdlcumwfgypbvkjxqz"):
        prior[ch] += 40_000 // (i + 1)
    rows = np.tile(prior, (lanes, 1))
    bits = 0.0
    for t in range(run):
        active = full + (1 if t < rest else 0)
        tables = models.tables(t, rows, active)
        p = tables[np.arange(active), grid[t, :active]] / tables.sum(-1)
        bits -= float(np.log2(p).sum())
        models.update(t, active)
    return bits


def test_counts_learn_the_file():
    rng = np.random.default_rng(3)
    words = [b"romeo", b"juliet", b"thou", b"art", b"the", b"sun", b"and", b"moon", b"speak", b"again"]
    text = b" ".join(words[i] for i in rng.integers(0, len(words), 4000))
    plain = code_length(text, 4, 0)
    assert code_length(text, 4, FrameFlag.CONTEXT_COUNTS) < plain * 0.5


def test_counts_cost_little_where_they_cannot_help():
    noise = np.random.default_rng(5).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    plain = code_length(noise, 4, 0)
    assert code_length(noise, 4, FrameFlag.CONTEXT_COUNTS) < plain * 1.01


def test_counts_are_halved_at_their_limit():
    grid, run, full, rest = step_major(b"ab" * 70_000, 1)
    counts = ContextCounts(grid)
    rows = np.full((1, 256), 4096, dtype=np.int32)
    for t in range(run):
        counts.tables(t, rows, 1)
        counts.update(t, 1)
    assert counts.totals.max() < (1 << 16) - 1
    assert counts.counts.max() > 10_000
