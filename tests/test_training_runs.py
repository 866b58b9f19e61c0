"""Runs: logs after a hard kill, time left, best weights kept, the reference's final phase, several
validation sets, the test figure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_training import synthetic_text
from training import data as D
from training.checkpoints import load_checkpoint, model_from_checkpoint
from training.evaluate import main as evaluate_main
from training.settings import apply_overrides, preset
from training.train import RunOptions, Trainer, evaluate, format_record, main, prune_log, state_resets


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "text.txt"
    path.write_bytes(synthetic_text(120_000, 4))
    return path


def test_resume_after_a_hard_kill_leaves_no_duplicate_records(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--config", "tiny", "--data", str(corpus), "--out", str(run), "--quiet"]
    common += ["--set", "log_steps=2", "--set", "eval_steps=4", "--set", "checkpoint_steps=10"]
    assert main(common + ["--max-steps", "10"]) == 0
    kept = tmp_path / "checkpoint-at-10.pt"
    shutil.copy(run / "checkpoint.pt", kept)
    assert main(common + ["--max-steps", "16", "--resume"]) == 0
    # A hard kill at step 16 whose last checkpoint was step 10: the log has records the resume redoes.
    shutil.copy(kept, run / "checkpoint.pt")
    with (run / "log.jsonl").open("a") as f:
        f.write('{"event": "train", "step": 17, "train_')  # the kill cut a line in half
    assert main(common + ["--max-steps", "20", "--resume"]) == 0
    log = records(run)
    for event in ("train", "valid"):
        steps = [r["step"] for r in log if r["event"] == event]
        assert steps == sorted(set(steps)), (event, steps)  # each step once, in order
    assert [r["step"] for r in log if r["event"] == "train"] == list(range(2, 21, 2))
    resumes = [r for r in log if r["event"] == "resume"]
    assert [r["dropped_records"] for r in resumes] == [
        0,
        3 + 1 + 1 + 1 + 1,
    ]  # train 12-16, valid 12/16, stop, cut


def test_prune_log_keeps_start_records(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    lines = [{"event": "start", "step": 0}, {"event": "train", "step": 5}, {"event": "start", "step": 5}]
    lines += [{"event": "train", "step": 10}, {"event": "valid", "step": 10}]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert prune_log(log, 5) == 2
    assert [(r["event"], r["step"]) for r in records(tmp_path)] == [("start", 0), ("train", 5), ("start", 5)]
    assert prune_log(log, 5) == 0


def test_log_lines_say_the_time_left_and_end_with_a_summary(corpus: Path, tmp_path: Path) -> None:
    args = ["--config", "tiny", "--data", str(corpus), "--out", str(tmp_path), "--quiet"]
    assert main(args + ["--max-steps", "12", "--set", "log_steps=3", "--set", "eval_steps=0"]) == 0
    log = records(tmp_path)
    train = [r for r in log if r["event"] == "train"]
    assert all(r["left_until"] == "max_steps" and r["left_s"] >= 0 for r in train)
    assert train[-1]["left_s"] == 0
    line = format_record(train[0])
    assert " left (max_steps)" in line and line.startswith("step       3 |")
    stop = format_record(log[-1])
    assert stop.startswith("stopped at step 12 (max_steps); valid ") and "best " in stop
    assert "{" not in stop  # not raw JSON


def tiny_corpus(n_train: int, n_valid: int = 400, test: bool = False) -> D.Corpus:
    return D.Corpus(
        train=np.frombuffer(synthetic_text(n_train), dtype=np.uint8),
        valid=np.frombuffer(synthetic_text(n_valid, 3), dtype=np.uint8),
        description="synthetic",
        test={"test": np.frombuffer(synthetic_text(300, 5), dtype=np.uint8)} if test else {},
    )


def test_best_weights_are_kept_when_validation_gets_worse(tmp_path: Path) -> None:
    s = apply_overrides(preset("tiny"), ["eval_steps=0"])
    trainer = Trainer(
        s.model, s.train, tiny_corpus(20_000), RunOptions(out=tmp_path, quiet=True), arch=s.arch
    )
    for _ in range(15):
        trainer.train_step()
    first = trainer.validate()["valid"]
    saved = load_checkpoint(tmp_path / "best.pt")
    assert saved["step"] == trainer.best_step == 15 and saved["best_valid_bpb"] == first
    with torch.no_grad():  # ruin the weights: validation gets worse, best.pt stays
        for p in trainer.model.parameters():
            p.mul_(-3.0)
    trainer.step += 1
    worse = trainer.validate()["valid"]
    assert worse > first and trainer.best_valid_bpb == first
    again = load_checkpoint(tmp_path / "best.pt")
    assert again["step"] == 15
    for name, tensor in saved["model"].items():
        assert torch.equal(again["model"][name], tensor)
    # And best.pt is a model file the tools take: it measures what the run measured.
    model = model_from_checkpoint(again)
    assert evaluate(model, trainer.corpus.valid, 4, 64, torch.device("cpu")) == pytest.approx(first, abs=1e-6)


class ScriptedValidation(Trainer):
    """A Trainer whose validation figures are given (so the phase logic is tested deterministically);
    everything else, the test figure included, is the real thing."""

    script: list[float] = []

    def evaluate_sets(self, sets: list, batch: int, model: object = None) -> dict:
        if sets == self.corpus.validation_sets():
            return {self.corpus.valid_name: self.script.pop(0)}
        return super().evaluate_sets(sets, batch, model)

    def enter_final_phase(self) -> None:
        super().enter_final_phase()
        self.weights_at_final_start = {k: v.clone() for k, v in self.model.state_dict().items()}


def test_the_reference_final_phase(tmp_path: Path) -> None:
    """Phase 2 as the reference runs it: the best weights so far, a new optimiser warming up to final_lr,
    the data from the start; it ends when validation stops improving, and the test figure is measured on
    the best weights."""
    sets = ["schedule=paper", "epochs=2", "final_epochs=5", "final_restart=1", "final_patience=1"]
    sets += ["eval_steps=0", "eval_epoch_end=1", "warmup=2", "jitter=0", "bptt=4", "log_steps=1000"]
    s = apply_overrides(preset("tiny", "paper"), sets)
    corpus = tiny_corpus(4 * 17, test=True)  # 4 streams, 4 windows of 4 per epoch
    trainer = ScriptedValidation(s.model, s.train, corpus, RunOptions(out=tmp_path, quiet=True), arch=s.arch)
    trainer.script = [4.0, 5.0, 4.5, 4.6]  # best at step 4; phase 2's own best (4.5) is not beaten
    summary = trainer.run()
    log = records(tmp_path)
    phase = [r for r in log if r["event"] == "final_phase"]
    assert len(phase) == 1 and (phase[0]["step"], phase[0]["epoch"], phase[0]["from_best_step"]) == (
        8,
        2.0,
        4,
    )
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 4
    for name, tensor in best["model"].items():  # phase 2 began from the best weights, not the last
        assert torch.equal(trainer.weights_at_final_start[name], tensor), name
    valid = [r for r in log if r["event"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8, 12, 16]  # every epoch end; two in phase 2, then stop
    assert summary["reason"] == "validation stopped improving" and summary["best_step"] == 4
    # A new optimiser: its step count began at the phase, and it warmed up to final_lr from there.
    assert next(iter(trainer.optimizer.state.values()))["step"] == trainer.step - 8
    assert trainer.current_lr(8) == pytest.approx(s.train.final_lr / 2)
    # The test figure, on the best weights, logged and in the summary.
    test = [r for r in log if r["event"] == "test"]
    assert len(test) == 1 and test[0]["best_step"] == 4
    expected = evaluate(
        model_from_checkpoint(best),
        corpus.test["test"],
        s.train.test_batch,
        s.train.eval_bptt,
        torch.device("cpu"),
    )
    assert summary["test_bpb"]["test"] == pytest.approx(expected, abs=1e-9)
    assert format_record(test[0]).startswith("test with the best weights (step 4)")


def test_a_resumed_final_phase_goes_on_where_it_was(tmp_path: Path) -> None:
    sets = ["schedule=paper", "epochs=1", "final_epochs=2", "final_restart=1", "eval_steps=0"]
    sets += ["eval_epoch_end=1", "warmup=2", "jitter=0", "bptt=4", "checkpoint_steps=6", "dropout=0.1"]
    corpus_file = tmp_path / "c.txt"
    corpus_file.write_bytes(synthetic_text(4 * 17))
    common = ["--config", "tiny", "--fidelity", "paper", "--data", str(corpus_file), "--quiet"]
    common += ["--set", "holdout_bytes=20"]
    common += sum((["--set", x] for x in sets), [])
    assert main(common + ["--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--max-steps", "6"]) == 0  # inside phase 2
    resume = [c for c in common if c not in ("--fidelity", "paper")]
    assert main(resume + ["--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (
        load_checkpoint(tmp_path / "a" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "b" / "checkpoint.pt"),
    )
    assert a["step"] == b["step"] and a["final_phase"] == b["final_phase"] is not None
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_state_resets_are_drawn_per_step_like_the_reference() -> None:
    draws = [state_resets(5, step, 0.025) for step in range(20_000)]
    lstm, memory = (np.mean([d[i] for d in draws]) for i in (0, 1))
    assert 0.02 < lstm < 0.03 and 0.02 < memory < 0.03
    assert np.mean([a and b for a, b in draws]) < 0.002  # drawn separately
    assert state_resets(5, 7, 0.025) == state_resets(5, 7, 0.025)  # a resume draws the same
    assert state_resets(5, 7, 0.0) == (False, False)


def test_several_validation_sets_are_logged_apart(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prose, code = tmp_path / "prose.txt", tmp_path / "code.txt.xz"
    prose.write_bytes(synthetic_text(50_000, 7))
    import lzma

    code.write_bytes(lzma.compress(synthetic_text(40_000, 8).replace(b" ", b"_")))
    run = tmp_path / "run"
    args = ["--config", "tiny", "--data", str(prose), f"{code}[:-8000]", "--out", str(run), "--quiet"]
    args += ["--valid", str(prose.with_name("v.txt")), f"{code}[-8000:]", "--max-steps", "8"]
    prose.with_name("v.txt").write_bytes(synthetic_text(6_000, 9))
    assert main(args + ["--valid-bytes", "3000"]) == 0
    valid = [r for r in records(run) if r["event"] == "valid"][-1]
    assert (
        list(valid["sets"]) == ["v.txt", "code.txt.xz[-8000:]"]
        and valid["valid_bpb"] == valid["sets"]["v.txt"]
    )
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["valid_sets"] == ["v.txt", "code.txt.xz[-8000:]"] and ck["data_specs"][1].endswith("[:-8000]")
    # The evaluation tool takes several files and ranges too, and measures the same.
    same = ["--bytes", "3000", "--streams", "4", "--bptt", "64"]  # as the tiny preset validates
    assert evaluate_main([str(run), str(prose.with_name("v.txt")), f"{code}[-8000:]", *same]) == 0
    assert evaluate_main([str(run / "best.pt"), f"{code}[-8000:]", *same, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith(f"{valid['sets']['v.txt']:.4f} bits per byte")
    assert json.loads(out[2])["bpb"]["code.txt.xz[-8000:]"] == pytest.approx(
        valid["sets"]["code.txt.xz[-8000:]"], abs=6e-5
    )


@pytest.mark.slow
def test_two_process_train_figure_is_the_mean_over_ranks(corpus: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes of batch 4 logs what one process of batch 8 logs (same streams)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    common = ["--config", "tiny", "--data", str(corpus), "--max-steps", "6", "--quiet"]
    common += ["--set", "log_steps=3", "--set", "eval_steps=0", "--set", "jitter=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "training.train", *common, "--out", str(tmp_path / "two"), "--set", "batch=4"]
    subprocess.run(cmd, check=True, env=env, timeout=300)
    assert main(common + ["--out", str(tmp_path / "one"), "--set", "batch=8"]) == 0
    two = [r["train_bpb"] for r in records(tmp_path / "two") if r["event"] == "train"]
    one = [r["train_bpb"] for r in records(tmp_path / "one") if r["event"] == "train"]
    assert len(two) == len(one) == 2 and two == pytest.approx(one, abs=2e-3)
