from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shazip.modelfile import ModelFile, ModelFileError, default_model_path


def test_load_fixture_and_identity(fixture_model_path: Path) -> None:
    mf = ModelFile.load(fixture_model_path)
    assert len(mf.model_id) == 32
    assert mf.model_id == mf.compute_id()
    assert mf.config.d_model > 0 and mf.name
    assert all(a.dtype.kind in "iu" for a in mf.tensors.values())  # integers only


def test_default_model_loads() -> None:
    mf = ModelFile.load(default_model_path())
    assert mf.quant["scheme"]


def test_save_load_round_trip_and_card_rewrite(fixture_model_path: Path, tmp_path: Path) -> None:
    mf = ModelFile.load(fixture_model_path)
    other = mf.with_card({"note": "rewritten"})
    assert other.model_id == mf.model_id  # the card is not part of the identity
    out = tmp_path / "m.safetensors"
    other.save(out)
    back = ModelFile.load(out)
    assert back.card == {"note": "rewritten"}
    assert back.model_id == mf.model_id
    assert set(back.tensors) == set(mf.tensors)
    for k in mf.tensors:
        np.testing.assert_array_equal(back.tensors[k], mf.tensors[k])


def test_identity_changes_with_any_weight(fixture_model_path: Path) -> None:
    mf = ModelFile.load(fixture_model_path)
    tensors = dict(mf.tensors)
    w = tensors["wout"].copy()
    w[3, 5] ^= 1
    tensors["wout"] = w
    changed = ModelFile(config=mf.config, quant=mf.quant, tensors=tensors, name=mf.name)
    assert changed.model_id != mf.model_id


def test_damaged_file_is_rejected(fixture_model_path: Path, tmp_path: Path) -> None:
    raw = bytearray(fixture_model_path.read_bytes())
    raw[-100] ^= 0x40  # a byte inside the tensor data
    bad = tmp_path / "damaged.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="identity mismatch"):
        ModelFile.load(bad)


def test_truncated_file_is_rejected(fixture_model_path: Path, tmp_path: Path) -> None:
    raw = fixture_model_path.read_bytes()
    for cut in (4, 100, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"trunc{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError):
            ModelFile.load(bad)


def test_foreign_files_are_rejected(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(other), metadata={"format": "pt"})
    text = tmp_path / "text.txt"
    text.write_bytes(b"hello world, this is not a model file at all" * 10)
    for path in (other, text):
        with pytest.raises(ModelFileError, match="not a shazip model file"):
            ModelFile.load(path)
    with pytest.raises(ModelFileError, match="not found"):
        ModelFile.load(tmp_path / "missing.safetensors")
