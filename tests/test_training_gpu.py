"""The GPU training script's logic, on CPU: widening that keeps the function, and a --dry-run end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from shazip.config import CONFIGS
from shazip.modelfile import ModelFile
from tests.test_training import synthetic_text
from training.checkpoints import load_checkpoint
from training.gpu_train import main as gpu_main
from training.grow import widen
from training.model import FIDELITIES, SHARNN
from training.train import main as train_main


@pytest.mark.parametrize("fidelity", ["shazip", "paper"])
@pytest.mark.parametrize("k", [2, 4])
def test_widening_keeps_the_function(fidelity: str, k: int) -> None:
    torch.manual_seed(k)
    small = SHARNN(CONFIGS["tiny"], FIDELITIES[fidelity]).eval()
    with torch.no_grad():
        # A trained model's embedding has a variance far above LayerNorm's eps (~0.01 per row for the
        # default model); the fresh init's (~3e-4) is not, and eps is the one inexact part of widening.
        small.embed.weight.mul_(30)
    big = widen(small, k).eval()
    assert big.cfg.d_model == k * small.cfg.d_model and big.cfg.d_boom == k * small.cfg.d_boom
    assert big.arch == small.arch
    x = torch.tensor(list(synthetic_text(2 * 61, 3)), dtype=torch.long).view(2, 61)
    with torch.no_grad():
        a1, sa = small(x[:, :30])
        a2, _ = small(x[:, 30:60], sa)  # the carried state and attention memory widen too
        b1, sb = big(x[:, :30])
        b2, _ = big(x[:, 30:60], sb)
    assert torch.allclose(a1, b1, atol=2e-3) and torch.allclose(a2, b2, atol=2e-3)
    noisy = widen(small, k, noise=1e-3).eval()
    with torch.no_grad():
        c1, _ = noisy(x[:, :30])
    assert not torch.equal(c1, b1) and torch.allclose(c1, b1, atol=0.05)  # copies can now drift apart


def test_dry_run_trains_exports_and_measures(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_bytes(synthetic_text(150_000, 1))
    (tmp_path / "valid.txt").write_bytes(synthetic_text(20_000, 2))
    cpu = ["--config", "tiny", "--data", str(tmp_path / "train.txt"), "--out", str(tmp_path / "cpu")]
    assert train_main(cpu + ["--max-steps", "20", "--quiet", "--set", "eval_steps=0"]) == 0
    out = tmp_path / "out"
    args = ["--dry-run", "--init-from", str(tmp_path / "cpu"), "--data", str(tmp_path / "train.txt")]
    args += ["--valid", str(tmp_path / "valid.txt"), "--out", str(out), "--max-minutes", "0.25"]
    args += ["--bytes-per-param", "0", "--engine-backend", "torch", "--quiet"]
    started = time.time()
    assert gpu_main(args) == 0
    assert time.time() - started < 0.25 * 60 + 5  # stops by time, export included
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["ok"] and list(steps) == ["environment", "data", "start", "choose", "train", "export"]
    probe = steps["choose"]["probes"][0]
    assert probe["widen"] == 2 and probe["pays"] and probe["d_model"] == 64  # the largest that pays
    assert probe["start_valid"]["valid.txt"] == pytest.approx(steps["start"]["valid"]["valid.txt"], abs=0.01)
    train = steps["train"]
    assert train["widen"] == 2 and train["steps_this_phase"] > 5
    assert train["valid"]["valid.txt"] < steps["start"]["valid"]["valid.txt"]  # it trained
    mf = ModelFile.load(out / steps["export"]["file"])
    assert mf.config.d_model == 64
    assert mf.card["bpb_integer"] == pytest.approx(steps["export"]["bpb_integer"], abs=1e-4)
    # The integer engine codes what the float model predicts (same bytes, same lanes).
    assert steps["export"]["bpb_integer"] == pytest.approx(steps["export"]["bpb_float_same_bytes"], abs=0.1)
    weights = load_checkpoint(out / "weights.pt")
    assert weights["config"]["d_model"] == 64 and weights["grown_from"]["widen"] == 2
    assert (out / "summary.md").read_text().startswith("# shazip GPU training: done")
    # The weights go on training on CPU like any weights file.
    more = ["--config", "tiny", "--data", str(tmp_path / "train.txt"), "--out", str(tmp_path / "more")]
    assert train_main(more + ["--init-from", str(out / "weights.pt"), "--max-steps", "2", "--quiet"]) == 0


def test_dry_run_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gpu_main(["--dry-run", "--out", str(tmp_path), "--max-minutes", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-minutes")
    args = ["--dry-run", "--out", str(tmp_path), "--init-from", str(tmp_path / "none.pt")]
    args += ["--data", str(tmp_path / "missing.txt"), "--valid", str(tmp_path / "missing.txt")]
    assert gpu_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt" in err
