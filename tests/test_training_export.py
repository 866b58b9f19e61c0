"""`python -m training.export`: a trained checkpoint becomes a model file that shazip compresses with."""

from __future__ import annotations

from pathlib import Path

import pytest

from shazip.modelfile import ModelFile
from tests.test_training import synthetic_text
from training.checkpoints import load_checkpoint
from training.export import main as export_main
from training.train import main as train_main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    (root / "train.txt").write_bytes(synthetic_text(100_000, 5))
    (root / "valid.txt").write_bytes(synthetic_text(20_000, 6))
    args = ["--config", "tiny", "--data", str(root / "train.txt"), "--valid", str(root / "valid.txt")]
    args += ["--out", str(root / "run"), "--max-steps", "80", "--quiet", "--set", "eval_steps=0"]
    assert train_main(args) == 0
    return root


def test_export_writes_a_model_file_with_its_card(trained_run: Path) -> None:
    import torch

    from training.model import SHARNN
    from training.quantise import float_bpb

    out = trained_run / "tiny.safetensors"
    assert (
        export_main([str(trained_run / "run"), "-o", str(out), "--eval-bytes", "3000", "--eval-lanes", "4"])
        == 0
    )
    mf = ModelFile.load(out)
    ck = load_checkpoint(trained_run / "run" / "checkpoint.pt")
    assert mf.name == "tiny" and mf.config.to_dict() == ck["config"]
    card = mf.card
    assert card["steps"] == 80 and card["bytes_seen"] == ck["bytes_seen"]
    assert card["training_files"] == ["train.txt"] and card["eval_source"] == "valid.txt"
    assert card["eval_bytes"] == 3000 and card["valid_bpb_float"] == ck["last_valid_bpb"]
    # The integer engine's figure is close to the float model's on the same text (quantisation costs little).
    model = SHARNN(mf.config)
    model.load_state_dict(ck["model"])
    with torch.no_grad():
        reference = float_bpb(model, (trained_run / "valid.txt").read_bytes()[:3000], lanes=4)
    assert card["bpb_integer"] == pytest.approx(reference, abs=0.1)
    assert card["bpb_integer"] < 4.0  # it learned something: uniform is 8


def test_exported_model_round_trips_through_shazip(trained_run: Path) -> None:
    import shazip

    out = trained_run / "tiny_rt.safetensors"
    assert export_main([str(trained_run / "run"), "-o", str(out), "--eval-bytes", "0"]) == 0
    assert "bpb_integer" not in ModelFile.load(out).card
    text = synthetic_text(3000, 9)
    packed = shazip.compress(text, model=str(out), strategy="model", device="cpu")
    assert len(packed) < len(text) // 2
    assert shazip.decompress(packed, model=str(out), device="cpu") == text


def test_export_without_a_checkpoint_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_main([str(tmp_path), "-o", str(tmp_path / "m.safetensors")]) == 2  # a usage error
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint" in err


def test_evaluate_command_reports_bits_per_byte(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    from training.evaluate import main as evaluate_main

    valid = str(trained_run / "valid.txt")
    assert (
        evaluate_main([str(trained_run / "run"), valid, "--bytes", "4000", "--streams", "2", "--bptt", "64"])
        == 0
    )
    bpb = float(capsys.readouterr().out.split()[0])
    ck = load_checkpoint(trained_run / "run" / "checkpoint.pt")
    assert 0 < bpb < 4.0 and bpb == pytest.approx(ck["last_valid_bpb"], abs=0.3)  # same model, other slice
    assert evaluate_main([str(trained_run / "run"), str(trained_run / "missing.txt")]) == 2


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model of the paper's architecture (no skip around the LSTMs), trained a few steps."""
    root = tmp_path_factory.mktemp("paper")
    (root / "train.txt").write_bytes(synthetic_text(100_000, 15))
    (root / "valid.txt").write_bytes(synthetic_text(20_000, 16))
    args = ["--config", "tiny", "--fidelity", "paper", "--data", str(root / "train.txt")]
    args += ["--valid", str(root / "valid.txt"), "--out", str(root / "run"), "--max-steps", "60"]
    args += ["--quiet", "--set", "eval_steps=0"]
    assert train_main(args) == 0
    return root


def test_a_paper_fidelity_model_exports_and_compresses(paper_run: Path) -> None:
    """Its skip term is exported as zeros: the integer engine follows the float model within 0.005 bits
    per byte on held-out text, and shazip round-trips with it."""
    import shazip
    from training.checkpoints import model_from_checkpoint
    from training.quantise import float_bpb

    ck = load_checkpoint(paper_run / "run" / "checkpoint.pt")
    assert ck["arch"]["lstm_skip"] is False
    out = paper_run / "paper.safetensors"
    args = [str(paper_run / "run"), "-o", str(out), "--eval-bytes", "6000", "--eval-lanes", "4"]
    assert export_main(args) == 0
    mf = ModelFile.load(out)
    assert not mf.tensors["b0.startres_table"].any()
    assert not mf.tensors["b1.startres_g"].any()
    held_out = (paper_run / "valid.txt").read_bytes()[:6000]
    reference = float_bpb(model_from_checkpoint(ck), held_out, lanes=4)
    assert reference < 4.0  # it learned something: uniform is 8
    assert mf.card["bpb_integer"] == pytest.approx(reference, abs=0.005)
    text = synthetic_text(3000, 19)
    packed = shazip.compress(text, model=str(out), strategy="model", device="cpu")
    assert len(packed) < len(text) // 2
    assert shazip.decompress(packed, model=str(out), device="cpu") == text


def test_numba_equals_torch_reference_on_a_paper_model(paper_run: Path) -> None:
    import numpy as np

    pytest.importorskip("numba")
    from shazip.engine import Engine
    from tests.engine_worker import text_lanes
    from tests.test_engine import run_tables

    out = paper_run / "paper_exact.safetensors"
    assert export_main([str(paper_run / "run"), "-o", str(out), "--eval-bytes", "0"]) == 0
    reference = Engine(out, backend="torch")
    fused = Engine(out, backend="numba")
    seq = text_lanes(6, 3 * reference.cfg.memory, offset=40000)  # past the attention window
    np.testing.assert_array_equal(run_tables(fused, seq), run_tables(reference, seq))
    binary = np.random.default_rng(3).integers(0, 256, size=(40, 5), dtype=np.uint8)
    np.testing.assert_array_equal(run_tables(fused, binary), run_tables(reference, binary))
