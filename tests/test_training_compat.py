"""Checkpoints from before issue 17 still resume exactly; loading a checkpoint never runs code from it."""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.make_legacy_checkpoints import COMMON, CORPUS_SEED, CORPUS_SIZE
from tests.test_training import synthetic_text
from training import data as D
from training.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint
from training.train import main

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, up to the last bits that float kernels change between CPU instruction sets: the checkpoints
    were made on an AVX2 CPU, and an AVX-512 one rounds some sums differently. (Bit-exact resume on one
    machine is tested in tests/test_training.py.)"""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_checkpoint_from_before_issue_17_resumes_as_it_was_made(tmp_path: Path) -> None:
    """Made at commit 3254906 (tests/make_legacy_checkpoints.py): steps 10 and 20 of one run."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(synthetic_text(CORPUS_SIZE, CORPUS_SEED))
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DATA / "legacy_tiny_step10.pt", run / "checkpoint.pt")
    old = load_checkpoint(run / "checkpoint.pt")
    assert "arch" not in old and "final_restart" not in old["train_config"]  # really the old format
    assert main(COMMON + ["--data", str(corpus), "--out", str(run), "--max-steps", "20", "--resume"]) == 0
    resumed = load_checkpoint(run / "checkpoint.pt")
    expected = load_checkpoint(DATA / "legacy_tiny_step20.pt")
    assert resumed["step"] == expected["step"] == 20
    assert resumed["data_position"] == expected["data_position"]
    for key, tensor in expected["model"].items():
        assert same(resumed["model"][key], tensor), key
    for i, state in expected["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert same(resumed["optimizer"]["state"][i][moment], state[moment]), (i, moment)
    for (h, c), (h2, c2) in zip(resumed["carry"]["lstm"], expected["carry"]["lstm"], strict=True):
        assert same(h, h2) and same(c, c2)
    assert same(resumed["carry"]["memory"], expected["carry"]["memory"])
    assert torch.equal(resumed["rng"][0]["torch"], expected["rng"][0]["torch"])
    assert resumed["arch"]["lstm_skip"] and resumed["arch"]["init"] == "torch"  # the old architecture


def test_the_shipped_weights_file_loads_safely() -> None:
    """training/resume/small-default.pt (what a later session continues the default model from) loads
    without running code and builds the engine's architecture with every weight in place."""
    ck = load_checkpoint(REPO / "training" / "resume" / "small-default.pt")
    assert ck["config"]["d_model"] == 256 and ck.get("arch", {}).get("lstm_skip", True)
    model = model_from_checkpoint(ck)
    assert sum(p.numel() for p in model.parameters()) == 1_847_552
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_range_of_a_file_reads_like_the_old_byte_count(tmp_path: Path) -> None:
    """`--data A 'B[:-K]'` gives the same training bytes (so the same stream layout: a run started
    with `--data A B --train-bytes N` resumes with it) and holds B's tail out for validation."""
    a, b = synthetic_text(30_000, 1), synthetic_text(20_000, 2)
    (tmp_path / "a.txt.xz").write_bytes(__import__("lzma").compress(a))
    (tmp_path / "b.txt").write_bytes(b)
    files = [str(tmp_path / "a.txt.xz"), str(tmp_path / "b.txt")]
    (tmp_path / "v.txt").write_bytes(b"held-out text " * 100)
    old = D.load_train_valid(files, str(tmp_path / "v.txt"), train_limit=45_000)  # the old way: a count
    new = D.load_train_valid([files[0], files[1] + "[:-5000]"], [files[1] + "[-5000:]"])
    assert np.array_equal(old.train, new.train)
    assert new.valid.tobytes() == b[-5000:] and new.valid_name == "b.txt[-5000:]"
    assert new.data_specs[1].endswith("b.txt[:-5000]") and new.valid_file is None


class Touch:
    """What a crafted checkpoint can hold: unpickling it calls pathlib.Path.touch (any callable would do)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "ran"
    evil = load_checkpoint(DATA / "legacy_tiny_step10.pt")
    evil["payload"] = Touch(marker)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(evil, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(run / "checkpoint.pt")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(synthetic_text(CORPUS_SIZE, CORPUS_SEED))
    assert main(COMMON + ["--data", str(corpus), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "checkpoint.pt" in err
    assert not marker.exists()
    # The same file through the unsafe path would have run it: the test's payload is real.
    torch.load(run / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_the_command_that_started_a_run_from_weights_plus_resume_continues_it(tmp_path: Path) -> None:
    """The shape of the default model's long CPU run: --init-from, two files, --train-bytes, --valid."""
    from training.weights import main as weights_main

    a, b, v = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "v.txt"
    a.write_bytes(synthetic_text(40_000, 1))
    b.write_bytes(synthetic_text(30_000, 2))
    v.write_bytes(synthetic_text(5_000, 3))
    first = [
        "--config",
        "tiny",
        "--data",
        str(a),
        "--out",
        str(tmp_path / "w0"),
        "--quiet",
        "--max-steps",
        "3",
    ]
    assert main(first) == 0
    assert weights_main([str(tmp_path / "w0"), "-o", str(tmp_path / "start.pt")]) == 0
    command = ["--config", "tiny", "--init-from", str(tmp_path / "start.pt"), "--data", str(a), str(b)]
    command += ["--train-bytes", "65000", "--valid", str(v), "--valid-bytes", "2000", "--quiet"]
    command += ["--set", "threads=1", "--set", "dropout=0", "--set", "bptt=16", "--set", "lr=1e-3"]
    command += ["--set", "warmup=5", "--set", "total_steps=40", "--set", "eval_steps=5"]
    assert main(command + ["--out", str(tmp_path / "long"), "--max-steps", "12"]) == 0
    assert main(command + ["--out", str(tmp_path / "cut"), "--max-steps", "7"]) == 0
    assert main(command + ["--out", str(tmp_path / "cut"), "--max-steps", "12", "--resume"]) == 0
    long, cut = (
        load_checkpoint(tmp_path / "long" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "cut" / "checkpoint.pt"),
    )
    assert long["step"] == cut["step"] == 12
    for key, tensor in long["model"].items():
        assert torch.equal(cut["model"][key], tensor), key
