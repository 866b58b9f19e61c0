"""The fused numba kernels compute exactly the torch reference's integer formulas: identical tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shazip.engine import Engine

from .test_engine import run_tables, text_lanes

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
    narrow = Engine(fixture_model_path, backend="numba")
    wide = Engine(fixture_model_path, backend="numba")
    assert all(narrow._narrow_attention_sum.values())
    wide._narrow_attention_sum = dict.fromkeys(wide._narrow_attention_sum, False)
    wide._fused = wide._fused_params()  # (the one-call step takes the setting from there)
    assert not any(block.narrow_sum for block in wide._fused[0])
    seq = text_lanes(9, 2 * narrow.cfg.memory, offset=70000)
    np.testing.assert_array_equal(run_tables(wide, seq), run_tables(narrow, seq))


@pytest.mark.parametrize("lanes", [5, 16, 40])
def test_every_numba_step_path_gives_the_same_tables(fixture_engine: Engine, lanes: int) -> None:
    """One compiled call per step (1 thread, or few lanes), one per lane group (2 threads, 16+ lanes:
    groups taken by both threads) and the kernels called one by one: the same tables."""
    import torch

    if fixture_engine.backend != "numba":
        pytest.skip("numba backend not in use")
    assert fixture_engine._fused is not None
    one_by_one = Engine(fixture_engine.model, backend="numba")
    one_by_one._fused = None  # what models whose GEMMs the int16 kernel cannot take run
    seq = text_lanes(lanes, 40, offset=90000)  # past the fixture's 32-state window
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fused = run_tables(fixture_engine, seq)
        np.testing.assert_array_equal(run_tables(one_by_one, seq), fused)
        torch.set_num_threads(2)
        np.testing.assert_array_equal(run_tables(fixture_engine, seq), fused)
    finally:
        torch.set_num_threads(before)
