"""The engine's contract: valid tables, exact determinism across lane groupings, threads, processes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shazip.engine import TABLE_TOTAL, Engine, EngineState
from tests.engine_worker import text_lanes


def run_tables(engine: Engine, seq: np.ndarray, state: EngineState | None = None) -> np.ndarray:
    """Tables before every step and after the last: [steps + 1, lanes, 256]."""
    steps, lanes = seq.shape
    state = state or engine.new_state(lanes)
    out = [engine.predict(state)]
    for s in range(steps):
        engine.advance(state, seq[s])
        out.append(engine.predict(state))
    return np.stack(out)


def test_tables_are_valid(fixture_engine: Engine) -> None:
    seq = text_lanes(8, 40)
    tables = run_tables(fixture_engine, seq)
    assert tables.dtype == np.int32
    assert tables.min() >= 1
    assert (tables.sum(-1) == TABLE_TOTAL).all()
    assert TABLE_TOTAL <= 1 << 24


def test_fresh_lanes_are_identical(fixture_engine: Engine) -> None:
    t = fixture_engine.predict(fixture_engine.new_state(5))
    assert (t == t[0]).all()


def test_lane_alone_in_batch_and_sub_batches(fixture_engine: Engine) -> None:
    seq = text_lanes(64, 60, offset=1000)
    batch = run_tables(fixture_engine, seq)
    for lane in (0, 17, 63):
        alone = run_tables(fixture_engine, seq[:, lane : lane + 1])
        np.testing.assert_array_equal(alone[:, 0], batch[:, lane])
    parts = [run_tables(fixture_engine, seq[:, a:b]) for a, b in ((0, 5), (5, 37), (37, 64))]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), batch)


def test_prefix_advance_leaves_other_lanes_untouched(fixture_engine: Engine) -> None:
    seq = text_lanes(6, 30, offset=5000)
    full = run_tables(fixture_engine, seq)
    state = fixture_engine.new_state(6)
    # lanes 0..2 advance 30 steps; lanes 3..5 get their bytes later, in prefix calls of decreasing size
    for s in range(30):
        fixture_engine.advance(state, seq[s, :3])
    np.testing.assert_array_equal(fixture_engine.predict(state)[:3], full[-1, :3])
    np.testing.assert_array_equal(fixture_engine.predict(state)[3:], full[0, 3:])


def test_state_copy_save_restore(fixture_engine: Engine) -> None:
    seq = text_lanes(4, 50, offset=9000)
    state = fixture_engine.new_state(4)
    for s in range(25):
        fixture_engine.advance(state, seq[s])
    saved = state.copy()
    rest = run_tables(fixture_engine, seq[25:], state)
    again = run_tables(fixture_engine, seq[25:], saved)
    np.testing.assert_array_equal(rest, again)
    # lanes moved between states (select / concat) keep their tables
    moved = EngineState.concat([saved.select([2, 3]), saved.select([0, 1])])
    np.testing.assert_array_equal(fixture_engine.predict(moved), fixture_engine.predict(saved)[[2, 3, 0, 1]])


def test_threads_one_and_two(fixture_model_path) -> None:
    seq = text_lanes(64, 40, offset=20000)  # past the fixture's 32-state window: the ring wraps
    one = run_tables(Engine(fixture_model_path, threads=1), seq)
    two = run_tables(Engine(fixture_model_path, threads=2), seq)
    np.testing.assert_array_equal(one, two)


def test_long_sequence_beyond_memory(fixture_engine: Engine) -> None:
    memory = fixture_engine.cfg.memory
    steps = 10 * memory
    seq = text_lanes(3, steps, offset=30000)
    batch = run_tables(fixture_engine, seq)
    alone = run_tables(fixture_engine, seq[:, 1:2])
    np.testing.assert_array_equal(alone[:, 0], batch[:, 1])
    state = fixture_engine.new_state(3)
    for s in range(steps):
        fixture_engine.advance(state, seq[s])
    assert int(state.written.max()) == steps + 1  # START_BYTE + every byte; the ring stays bounded
    assert state.ring.shape[1] == memory + 1


def test_symbols_beyond_lanes_rejected(fixture_engine: Engine) -> None:
    state = fixture_engine.new_state(2)
    with pytest.raises(ValueError):
        fixture_engine.advance(state, np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError):
        fixture_engine.advance(state, np.array([1, 256]))
    with pytest.raises(ValueError):
        fixture_engine.advance(state, np.zeros((2, 1), dtype=np.uint8))


def test_symbol_types_agree(fixture_engine: Engine) -> None:
    a, b, c = (fixture_engine.new_state(3) for _ in range(3))
    fixture_engine.advance(a, b"xyz")
    fixture_engine.advance(b, [120, 121, 122])
    fixture_engine.advance(c, np.array([120, 121, 122], dtype=np.int64))
    np.testing.assert_array_equal(fixture_engine.predict(a), fixture_engine.predict(b))
    np.testing.assert_array_equal(fixture_engine.predict(a), fixture_engine.predict(c))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=6, max_size=60),
    lanes=st.integers(1, 6),
    cut=st.integers(1, 5),
)
def test_any_grouping_gives_the_same_tables(
    fixture_engine: Engine, data: bytes, lanes: int, cut: int
) -> None:
    """Property: lanes advanced all together == the same lanes split into two groups at any point."""
    steps = len(data) // lanes
    seq = np.frombuffer(data[: steps * lanes], dtype=np.uint8).reshape(lanes, steps).T.copy()
    together = run_tables(fixture_engine, seq)
    cut = min(cut, lanes)
    parts = [run_tables(fixture_engine, seq[:, :cut])]
    if cut < lanes:
        parts.append(run_tables(fixture_engine, seq[:, cut:]))
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), together)
