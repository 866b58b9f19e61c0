"""The fused numba kernels compute exactly the torch reference's integer formulas: identical tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shazip.engine import Engine
from tests.engine_worker import text_lanes

from .test_engine import run_tables

pytest.importorskip("numba")


def test_numba_equals_torch_reference(fixture_model_path: Path) -> None:
    reference = Engine(fixture_model_path, backend="torch")
    fused = Engine(fixture_model_path, backend="numba")
    memory = reference.cfg.memory
    seq = text_lanes(24, 4 * memory, offset=40000)  # well past the attention window
    np.testing.assert_array_equal(run_tables(fused, seq), run_tables(reference, seq))


def test_numba_equals_torch_on_binary_bytes(fixture_model_path: Path) -> None:
    # Random bytes push activations far outside the calibrated ranges: clamps and table ends get used.
    reference = Engine(fixture_model_path, backend="torch")
    fused = Engine(fixture_model_path, backend="numba")
    seq = np.random.default_rng(7).integers(0, 256, size=(80, 8), dtype=np.uint8)
    np.testing.assert_array_equal(run_tables(fused, seq), run_tables(reference, seq))


def test_attention_sum_int64_fallback_equals_int32(fixture_model_path: Path) -> None:
    # The fixture's window allows the int32 weighted sum; the int64 loop (large windows) must agree.
    from shazip.engine.numba_backend import NumbaBackend

    narrow = Engine(fixture_model_path, backend="numba")
    wide = Engine(fixture_model_path, backend="numba")
    assert all(narrow.backend.narrow_attention_sum.values())
    wide.backend = NumbaBackend(wide.model, narrow_attention_sum=False)
    assert not any(wide.backend.narrow_attention_sum.values())
    assert not any(block[1] for block in wide.backend.params[0])  # (BlockParams.narrow_sum)
    seq = text_lanes(9, 2 * narrow.cfg.memory, offset=70000)
    np.testing.assert_array_equal(run_tables(wide, seq), run_tables(narrow, seq))


@pytest.mark.parametrize("lanes", [5, 16, 40])
def test_every_numba_step_path_gives_the_same_tables(fixture_model_path: Path, lanes: int) -> None:
    """One compiled call per step (1 thread, or few lanes), one per lane group (2 threads, 16+ lanes:
    groups taken by both threads) and the torch reference: the same tables."""
    seq = text_lanes(lanes, 40, offset=90000)  # past the fixture's 32-state window
    one = run_tables(Engine(fixture_model_path, backend="numba", threads=1), seq)
    np.testing.assert_array_equal(
        run_tables(Engine(fixture_model_path, backend="numba", threads=2), seq), one
    )
    np.testing.assert_array_equal(run_tables(Engine(fixture_model_path, backend="torch"), seq), one)


def test_numba_equals_torch_at_the_limits(extreme_model_path: Path) -> None:
    """Models at the ends of the documented limits (one block, sixteen, d = 1040, windows of 1 and 65,536,
    d_boom = d and 16 d): the compiled step runs them and gives the reference's tables, on text and on
    random bytes, on one thread and on lane groups shared by two."""
    reference = Engine(extreme_model_path, backend="torch")
    text = text_lanes(16, 12, offset=5000)  # 12 steps: well past a window of 1
    noise = np.random.default_rng(11).integers(0, 256, size=(12, 16), dtype=np.uint8)
    for seq in (text, noise):
        expected = run_tables(reference, seq)
        for threads in (1, 2):
            fused = Engine(extreme_model_path, backend="numba", threads=threads)
            np.testing.assert_array_equal(run_tables(fused, seq), expected)
