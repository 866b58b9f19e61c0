"""Weights files: a run's weights kept alone, and a new run started from them (--init-from)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.test_training import synthetic_text
from training import weights
from training.checkpoints import load_checkpoint
from training.train import main


def test_weights_file_starts_a_new_run_from_the_same_model(tmp_path: Path) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_bytes(synthetic_text(100_000))
    common = ["--config", "tiny", "--data", str(corpus), "--quiet", "--set", "eval_steps=0"]
    assert main(common + ["--out", str(tmp_path / "a"), "--max-steps", "10"]) == 0
    assert weights.main([str(tmp_path / "a"), "-o", str(tmp_path / "w.pt")]) == 0
    full = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    slim = torch.load(tmp_path / "w.pt", weights_only=True)
    assert "optimizer" not in slim and "carry" not in slim
    assert slim["config"] == full["config"] and slim["bytes_seen"] == full["bytes_seen"]
    assert (tmp_path / "w.pt").stat().st_size < (tmp_path / "a" / "checkpoint.pt").stat().st_size

    # Zero steps from the weights: the new run's model is exactly the old one; bytes_seen carries over.
    init = ["--init-from", str(tmp_path / "w.pt")]
    assert main(common + init + ["--out", str(tmp_path / "b"), "--max-steps", "0"]) == 0
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert b["step"] == 0 and b["bytes_seen"] == full["bytes_seen"]
    for name, tensor in full["model"].items():
        assert torch.equal(b["model"][name], tensor), name
    # And it trains on from there.
    assert main(common + init + ["--out", str(tmp_path / "c"), "--max-steps", "5"]) == 0
    assert load_checkpoint(tmp_path / "c" / "checkpoint.pt")["step"] == 5

    # The architecture comes from the file: changing it is refused (usage error).
    bad = common + init + ["--out", str(tmp_path / "d"), "--max-steps", "1", "--set", "d_model=16"]
    assert main(bad) == 2


def test_a_weights_file_exports_like_its_checkpoint(tmp_path: Path) -> None:
    from training.export import main as export_main

    corpus = tmp_path / "text.txt"
    corpus.write_bytes(synthetic_text(60_000))
    common = ["--config", "tiny", "--data", str(corpus), "--quiet", "--set", "eval_steps=0"]
    assert main(common + ["--out", str(tmp_path / "a"), "--max-steps", "5"]) == 0
    assert weights.main([str(tmp_path / "a"), "-o", str(tmp_path / "w.pt")]) == 0
    texts = ["--calibration", str(corpus), "--eval-bytes", "0"]
    assert export_main([str(tmp_path / "a"), "-o", str(tmp_path / "from_ck.safetensors"), *texts]) == 0
    assert export_main([str(tmp_path / "w.pt"), "-o", str(tmp_path / "from_w.safetensors"), *texts]) == 0
    from shazip.modelfile import ModelFile

    a = ModelFile.load(tmp_path / "from_ck.safetensors")
    b = ModelFile.load(tmp_path / "from_w.safetensors")
    assert a.model_id == b.model_id
