"""Export: float SHA-RNN -> integer model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shazip.config import CONFIGS
from shazip.engine import Engine, measure_bpb
from shazip.modelfile import ModelFile
from tests.paths import sample_text
from training.model import SHARNN
from training.quantise import export_model, fixed_point, float_bpb


@pytest.fixture(scope="module")
def text() -> bytes:
    return sample_text(24_000)


@pytest.fixture(scope="module")
def tiny_model() -> SHARNN:
    torch.manual_seed(3)
    return SHARNN(CONFIGS["tiny"]).eval()


def test_export_writes_a_loadable_integer_model(tiny_model: SHARNN, text: bytes, tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    mf = export_model(
        tiny_model,
        path,
        calibration=text[:8000],
        name="tiny-test",
        card={"steps": 0},
        eval_data=text[8000:9000],
    )
    back = ModelFile.load(path)
    assert back.model_id == mf.model_id and back.name == "tiny-test"
    assert back.config == tiny_model.cfg
    assert back.card["steps"] == 0 and back.card["bpb_integer"] > 0
    assert all(a.dtype.kind in "iu" for a in back.tensors.values())
    # the weights really are int8 per-channel quantisations of the float weights
    assert back.tensors["b0.wih"].dtype == np.int8
    assert np.abs(back.tensors["b0.wih"]).max(axis=1).min() == 127


def test_export_is_deterministic_and_identity_tracks_content(tiny_model: SHARNN, text: bytes) -> None:
    a = export_model(tiny_model, None, calibration=text[:8000], name="a", card={})
    b = export_model(tiny_model, None, calibration=text[:8000], name="a", card={"other": "card"})
    assert a.model_id == b.model_id
    c = export_model(tiny_model, None, calibration=text[:4000], name="a", card={})  # other calibration
    assert c.model_id != a.model_id


def test_integer_engine_tracks_the_float_model(tiny_model: SHARNN, text: bytes) -> None:
    mf = export_model(tiny_model, None, calibration=text[:8000], name="t", card={})
    data = text[10_000:13_000]
    float_bits = float_bpb(tiny_model, data, 3)
    int_bits = measure_bpb(Engine(mf), data, 3)
    assert abs(int_bits - float_bits) / float_bits < 0.01


def test_calibration_too_short_is_an_error(tiny_model: SHARNN) -> None:
    with pytest.raises(ValueError):
        export_model(tiny_model, None, calibration=b"", name="t", card={})


def test_fixed_point_multipliers() -> None:
    m, s = fixed_point(np.array([0.001234, -0.5, 3.0]))
    assert np.abs(m).max() < 1 << 22
    assert np.abs(m).max() >= 1 << 21  # the shift uses the bits available
    np.testing.assert_allclose(m / 2.0**s, [0.001234, -0.5, 3.0], rtol=0, atol=2.0**-s)


def test_huge_biases_do_not_overflow() -> None:
    from training.quantise import bias_safe_shift

    assert bias_safe_shift(40, np.array([3.0e6])) <= 51 - 21
    assert bias_safe_shift(40, None) == 40
    assert bias_safe_shift(10, np.array([0.5])) == 10
