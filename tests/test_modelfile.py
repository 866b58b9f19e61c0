from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shazip.modelfile import ModelFile, ModelFileError, default_model_path
from tests.paths import command_env


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


# --- crafted model files: self-consistent (the identity matches), wrong inside --------------------------


def write_crafted(path: Path, config: dict, quant: object, tensors: dict[str, np.ndarray]) -> Path:
    """A model file whose identity matches its contents, whatever they are (anyone can make one)."""
    import json

    from safetensors.numpy import save_file

    from shazip.modelfile import compute_model_id

    config_json = json.dumps(config, sort_keys=True, separators=(",", ":"))
    quant_json = json.dumps(quant, sort_keys=True, separators=(",", ":"))
    metadata = {
        "format": "shazip-model",
        "format_version": "1",
        "config": config_json,
        "quant": quant_json,
        "name": "crafted",
        "card": "{}",
        "model_id": compute_model_id(config_json, quant_json, tensors).hex(),
    }
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def crafted_variants(model: ModelFile) -> list[tuple[str, dict, object, dict[str, np.ndarray]]]:
    """(what is wrong, config, quant, tensors) for the ways issue 18 found and their neighbours."""
    config, quant, tensors = model.config.to_dict(), model.quant, model.tensors
    d = model.config.d_model

    def with_tensor(name: str, value: np.ndarray | None) -> dict[str, np.ndarray]:
        changed = dict(tensors)
        if value is None:
            del changed[name]
        else:
            changed[name] = value
        return changed

    def poked(name: str, value: int, dtype: str | None = None) -> np.ndarray:
        arr = tensors[name].astype(dtype or tensors[name].dtype).copy()
        arr.reshape(-1)[len(arr.reshape(-1)) // 2] = value
        return arr

    return [
        ("missing tensor", config, quant, with_tensor("b1.wup", None)),
        ("missing tensor", config, quant, with_tensor("logit_exp_lut", None)),
        ("unexpected tensor", config, quant, with_tensor("b1.att_exp_lut", tensors["b0.att_exp_lut"])),
        ("shape", config, quant, with_tensor("sigmoid_lut", tensors["sigmoid_lut"][:1000])),  # short table
        ("shape", config, quant, with_tensor("logit_exp_lut", tensors["logit_exp_lut"][:-1])),
        ("shape", config, quant, with_tensor("wout", tensors["wout"][:200])),  # a wrong output matrix
        ("shape", config, quant, with_tensor("b0.wq", np.zeros((d, d + 8), np.int8))),
        ("dtype", config, quant, with_tensor("b0.wih", tensors["b0.wih"].astype(np.int16))),
        ("dtype", config, quant, with_tensor("tanh_lut", tensors["tanh_lut"].astype(np.int64))),
        ("integers only", config, quant, with_tensor("logit_m", tensors["logit_m"].astype(np.float32))),
        ("outside", config, quant, with_tensor("b0.whh", poked("b0.whh", -128))),
        ("outside", config, quant, with_tensor("sigmoid_lut", poked("sigmoid_lut", 40000, "int32"))),
        ("outside", config, quant, with_tensor("b1.z_mx", poked("b1.z_mx", 1 << 40))),
        ("starts with 0", config, quant, with_tensor("logit_exp_lut", poked("logit_exp_lut", 0) * 0)),
        ("missing quantisation parameter", config, {k: v for k, v in quant.items() if k != "fin_m"}, tensors),
        ("unexpected quantisation parameter", config, quant | {"b9.z_shift": 3}, tensors),
        ("not an integer", config, quant | {"b0.z_shift": 24.5}, tensors),
        ("not an integer", config, quant | {"logit_shift": True}, tensors),
        ("not an integer", config, quant | {"b1.h_m": "3"}, tensors),
        ("outside", config, quant | {"b0.u_shift": 64}, tensors),
        ("outside", config, quant | {"b0.ln_ff_eps": -5}, tensors),
        ("scheme", config, quant | {"scheme": "other"}, tensors),
        ("not a JSON object", config, [1, 2], tensors),
        ("missing tensor", config | {"n_blocks": 3}, quant, tensors),  # a changed block count
        ("unexpected tensor", config | {"n_blocks": 1, "attn_block": 0}, quant, tensors),
        ("shape", config | {"d_boom": 2 * d}, quant, tensors),
        ("config memory", config | {"memory": 1 << 20}, quant, tensors),
        ("config d_model", config | {"d_model": 2048, "d_boom": 4096}, quant, tensors),
        ("config n_blocks", config | {"n_blocks": 2.0}, quant, tensors),
        ("config d_boom", config | {"d_boom": 0}, quant, tensors),
        ("damaged model file", config | {"d_model": 0}, quant, tensors),
        ("damaged model file", config | {"colour": "red"}, quant, tensors),
    ]


def test_crafted_model_files_are_refused_with_one_line_naming_the_problem(fixture_model_path, tmp_path):
    model = ModelFile.load(fixture_model_path)
    for i, (problem, config, quant, tensors) in enumerate(crafted_variants(model)):
        path = write_crafted(tmp_path / f"crafted{i}.safetensors", config, quant, tensors)
        with pytest.raises(ModelFileError) as caught:
            ModelFile.load(path)
        message = str(caught.value)
        assert problem in message and "\n" not in message, (i, message)


def test_random_damage_to_a_model_is_refused_or_harmless(fixture_model_path, tmp_path):
    """Random mutations of tensors and parameters (a self-consistent file each time): every one is either
    refused with one line or leaves the model inside every rule (then it loads and is a valid model)."""
    from shazip.modelfile import validate_model

    model = ModelFile.load(fixture_model_path)
    rng = np.random.default_rng(18)
    names, keys = sorted(model.tensors), sorted(k for k in model.quant if k not in ("calibration_max",))
    refused = 0
    for _ in range(300):
        tensors, quant = dict(model.tensors), dict(model.quant)
        kind = rng.integers(6)
        name, key = names[rng.integers(len(names))], keys[rng.integers(len(keys))]
        arr = tensors[name]
        if kind == 0:
            tensors[name] = arr.reshape(-1)[: rng.integers(0, arr.size)]
        elif kind == 1:
            tensors[name] = arr.astype(["int8", "int16", "int32", "int64", "uint8"][rng.integers(5)])
        elif kind == 2:
            poked = arr.astype(np.int64).copy()
            value = int(rng.integers(-(1 << 62), 1 << 62)) >> int(rng.integers(62))
            poked.reshape(-1)[rng.integers(arr.size)] = value
            tensors[name] = poked.astype(arr.dtype) if rng.random() < 0.5 else poked
        elif kind == 3:
            del tensors[name]
        elif kind == 4:
            choices = [None, 1.5, "7", True, -(1 << 70), 1 << 70, [], int(rng.integers(-99, 99))]
            quant[key] = choices[rng.integers(len(choices))]
        else:
            del quant[key]
        try:
            validate_model(model.config, quant, tensors)
        except ModelFileError as e:
            assert "\n" not in str(e)
            refused += 1
    assert refused > 200


def test_crafted_model_through_the_command_is_one_line_and_exit_1(fixture_model_path, tmp_path):
    import subprocess
    import sys

    model = ModelFile.load(fixture_model_path)
    (tmp_path / "a.txt").write_bytes(b"some text to compress " * 50)
    for i in (3, 5, 10, 23):  # a short table, a wrong output matrix, a poked weight, a changed block count
        _, config, quant, tensors = crafted_variants(model)[i]
        path = write_crafted(tmp_path / f"m{i}.safetensors", config, quant, tensors)
        result = subprocess.run(
            [sys.executable, "-m", "shazip", "compress", "--model", str(path), "a.txt"],
            cwd=tmp_path,
            env=command_env(),
            capture_output=True,
            timeout=120,
        )
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"shazip: a.txt: cannot load model {path}: ")
        assert not (tmp_path / "a.txt.shz").exists()
