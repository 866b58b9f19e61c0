"""The match model (shazip/match.py): valid tables, causality, and that it finds repeats."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shazip.format import FrameFlag, lane_layout
from shazip.infile import InFileModels
from shazip.infile.match import MIX_TOTAL, MatchModel


def step_major(data: bytes, lanes: int) -> tuple[np.ndarray, int, int, int]:
    run, full, rest = lane_layout(len(data), lanes)
    grid = np.zeros(lanes * run, dtype=np.uint8)
    grid[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(grid.reshape(lanes, run).T), run, full, rest


def engine_rows(rng: np.random.Generator, lanes: int) -> np.ndarray:
    """Stand-in engine tables: positive int32 rows with a few large entries, like a real model's."""
    rows = rng.integers(1, 50, size=(lanes, 256)).astype(np.int32)
    rows[np.arange(lanes), rng.integers(0, 256, size=lanes)] += 200_000
    return rows


def run_tables(data: bytes, lanes: int, seed: int, flags: int, decoder_side: bool) -> list[np.ndarray]:
    """The coder's tables of every step with the in-file models of `flags`. decoder_side: the grid is
    filled step by step, the rows of later steps hold garbage, as when decoding; otherwise it is filled up
    front, as when encoding."""
    full_grid, run, full, rest = step_major(data, lanes)
    grid = np.full_like(full_grid, 0x5A) if decoder_side else full_grid.copy()
    models = InFileModels(grid, run, full, rest, flags)
    rng = np.random.default_rng(seed)
    tables = []
    for t in range(run):
        active = full + (1 if t < rest else 0)
        tables.append(models.tables(t, engine_rows(rng, lanes), active).copy())
        grid[t] = full_grid[t]
        models.update(t, active)
    return tables


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.sampled_from(b"abc\n"), min_size=1, max_size=400).map(bytes),
    lanes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_tables_use_only_bytes_of_earlier_steps(data: bytes, lanes: int, seed: int) -> None:
    # If a match ever pointed at a byte of the current or a later step, the decoder (which does not know
    # it yet) would compute other tables than the encoder.
    encoder_side = run_tables(data, lanes, seed, FrameFlag.MATCH_MODEL, decoder_side=False)
    decoder_side = run_tables(data, lanes, seed, FrameFlag.MATCH_MODEL, decoder_side=True)
    for a, b in zip(encoder_side, decoder_side, strict=True):
        assert np.array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.sampled_from(b"ab"), min_size=8, max_size=300).map(bytes), lanes=st.integers(1, 4))
def test_tables_are_valid_for_the_coder(data: bytes, lanes: int) -> None:
    grid, run, full, rest = step_major(data, lanes)
    model = MatchModel(grid, run, full, rest)
    rng = np.random.default_rng(0)
    mixed = 0
    for t in range(run):
        active = full + (1 if t < rest else 0)
        rows = engine_rows(rng, lanes)
        tables = model.tables(rows, active)
        assert tables.shape == (active, 256)
        assert (tables >= 1).all() and np.array_equal(tables, np.floor(tables))
        for lane in range(active):
            if not np.array_equal(tables[lane], rows[lane]):  # a lane with a match: a full-size table
                assert tables[lane].sum() == MIX_TOTAL
                mixed += 1
        model.update(t, active)
    if len(data) >= 40:
        assert mixed > 0  # two-letter data repeats all the time


def code_length(data: bytes, lanes: int, use_match: bool) -> float:
    """Ideal code length in bits with a uniform 'engine' (which knows nothing) and the match model."""
    grid, run, full, rest = step_major(data, lanes)
    model = MatchModel(grid, run, full, rest)
    uniform = np.full((lanes, 256), 4096, dtype=np.int32)
    bits = 0.0
    for t in range(run):
        active = full + (1 if t < rest else 0)
        tables = model.tables(uniform, active) if use_match else uniform[:active].astype(np.float64)
        p = tables[np.arange(active), grid[t, :active]] / tables.sum(-1)
        bits -= float(np.log2(p).sum())
        model.update(t, active)
    return bits


def test_repeats_cost_little():
    rng = np.random.default_rng(7)
    block = rng.integers(0, 256, size=3000, dtype=np.uint8).tobytes()
    data = block * 4
    plain = code_length(data, 1, use_match=False)
    assert plain == len(data) * 8
    # one lane: the second to fourth copies follow a match almost all the way
    assert code_length(data, 1, use_match=True) < plain * 0.35
    # three lanes, each starting at another offset of the block: a lane finds the repeats in the other
    # lanes' earlier steps
    assert code_length(data, 3, use_match=True) < plain * 0.35
    # four lanes, one copy each: the same byte in another lane is at the same step, not known yet when
    # decoding, so no match may use it
    assert code_length(data, 4, use_match=True) == plain
