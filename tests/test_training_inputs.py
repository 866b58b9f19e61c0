"""Bad input to the training tools: a one-line error naming the key or file, exit status 2, no traceback."""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tests.test_training import synthetic_text
from training import data as D
from training.evaluate import main as evaluate_main
from training.export import main as export_main
from training.train import main as train_main
from training.weights import main as weights_main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "text.txt"
    path.write_bytes(synthetic_text(60_000))
    return path


def one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("schedule=foo", "schedule"),  # once accepted, then a crash when warm-up ended
        ("bptt=0", "bptt"),  # once an AssertionError
        ("eval_bptt=0", "eval_bptt"),  # once `valid nan` and exit 0
        ("batch=abc", "batch"),  # once a message that did not name the key
        ("lr=nan", "lr"),
        ("lr=-1", "lr"),
        ("warmup=1.5", "warmup"),
        ("jitter=maybe", "jitter"),
        ("amp=fp8", "amp"),
        ("beta2=1", "beta2"),
        ("d_model=0", "d_model"),
        ("d_boom=100", "d_boom"),
        ("attn_block=7", "attn_block"),
        ("dropout=1.5", "dropout"),
        ("gelu=relu", "gelu"),
        ("attn_span=full", "attn_span"),
        ("ln_eps=0", "ln_eps"),
        ("nonsense=1", "nonsense"),
        ("no_equals_sign", "key=value"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(
    setting: str, named: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--config", "tiny", "--data", str(corpus), "--out", str(tmp_path / "run"), "--set", setting]
    assert train_main(args) == 2
    one_line_error(capsys, named)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--max-steps", "-1"], "--max-steps"),
        (["--max-minutes", "0"], "--max-minutes"),
        (["--valid-bytes", "0"], "--valid-bytes"),
        (["--device", "gpu"], "--device gpu"),
        (["--device", "mps"], "--device mps"),
        (["--fidelity", "paper", "--resume"], None),  # no checkpoint yet: a fresh run, fine
    ],
)
def test_bad_options(
    extra: list[str], named: str | None, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--config", "tiny", "--data", str(corpus), "--out", str(tmp_path / "run"), "--quiet"]
    rc = train_main(args + ["--max-steps", "0"] + extra if named is None else args + extra)
    if named is None:
        assert rc == 0
    else:
        assert rc == 2
        one_line_error(capsys, named)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for device in ("cuda", "cuda:1"):
        args = ["--config", "tiny", "--data", str(corpus), "--out", str(tmp_path), "--device", device]
        assert train_main(args) == 2  # once an AttributeError traceback
        one_line_error(capsys, f"--device {device}")


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_unreadable_corpus_files_are_named(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = lzma.compress(synthetic_text(20_000))
    (tmp_path / "cut.txt.xz").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.txt.xz").write_bytes(b"not xz at all")
    (tmp_path / "folder").mkdir()
    (tmp_path / "notzip.zip").write_bytes(b"plain text")
    write_zip(tmp_path / "two.zip", {"a": b"x" * 100, "b": b"y" * 100})
    cases = {
        "cut.txt.xz": "damaged or truncated",
        "junk.txt.xz": "junk.txt.xz",
        "folder": "is a folder",
        "missing.txt": "no such file",
        "notzip.zip": "not a readable zip",
        "two.zip": "exactly one file",
        "text.txt[5:2]": "no bytes in that range",
    }
    for name, message in cases.items():
        path = (corpus.parent if name.startswith("text.txt") else tmp_path) / name
        out = tmp_path / ("run-" + name.replace("[", "_").replace(":", "_"))
        assert train_main(["--config", "tiny", "--data", str(path), "--out", str(out)]) == 2, name
        one_line_error(capsys, message)


def test_validation_that_overlaps_the_training_data_is_refused(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--config", "tiny", "--out", str(tmp_path / "run"), "--quiet", "--max-steps", "0"]
    overlapping = args + ["--data", f"{corpus}[:-10000]", "--valid", f"{corpus}[-20000:]"]
    assert train_main(overlapping) == 2
    one_line_error(capsys, "overlaps the training data", "40,000 to 50,000")
    held_out = args + ["--data", f"{corpus}[:-10000]", "--valid", f"{corpus}[-10000:]"]
    assert train_main(held_out) == 0
    other = ["--config", "tiny", "--out", str(tmp_path / "other"), "--data", str(corpus)]
    assert train_main(other + ["--test", str(corpus)]) == 2  # a test set too
    one_line_error(capsys, "test data")


def test_run_directory_problems(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train_main(["--config", "tiny", "--data", str(corpus), "--out", str(blocker)]) == 2
    one_line_error(capsys, "a file is in the way")
    run = tmp_path / "run"
    common = ["--config", "tiny", "--data", str(corpus), "--out", str(run), "--quiet"]
    assert train_main(common + ["--max-steps", "2"]) == 0
    assert train_main(common + ["--max-steps", "3"]) == 2  # exists: --resume needed
    one_line_error(capsys, "--resume")
    assert train_main(common + ["--max-steps", "3", "--resume", "--set", "d_model=64"]) == 2
    one_line_error(capsys, "cannot change on --resume")
    assert train_main(common + ["--max-steps", "3", "--resume", "--fidelity", "paper"]) == 2
    one_line_error(capsys, "--fidelity")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    other = ["--config", "tiny", "--data", str(corpus), "--out", str(tmp_path / "other")]
    assert train_main(other + ["--init-from", str(tmp_path / "junk.pt")]) == 2
    one_line_error(capsys, "junk.pt")


def test_the_other_tools_refuse_bad_input_in_one_line(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert evaluate_main([str(tmp_path / "junk.pt"), str(corpus)]) == 2
    one_line_error(capsys, "junk.pt")
    assert evaluate_main([str(tmp_path), str(corpus)]) == 2  # a folder without a checkpoint
    one_line_error(capsys, "no checkpoint")
    assert evaluate_main([str(tmp_path / "junk.pt"), str(corpus), "--device", "gpu"]) == 2
    one_line_error(capsys, "--device gpu")
    assert export_main([str(tmp_path / "junk.pt"), "-o", str(tmp_path / "m.safetensors")]) == 2
    one_line_error(capsys, "junk.pt")
    assert weights_main([str(tmp_path / "junk.pt"), "-o", str(tmp_path / "w.pt")]) == 2
    one_line_error(capsys, "junk.pt")


def test_enwik8_path_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`training.data enwik8 --path` with a file that cannot be enwik8: once tracebacks, now one line."""
    (tmp_path / "enwik8.zip").write_bytes(b"this is not a zip file")
    write_zip(tmp_path / "two.zip", {"enwik8": b"a" * 1000, "extra": b"b"})
    whole = io.BytesIO()
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("enwik8", synthetic_text(200_000))
    (tmp_path / "cut.zip").write_bytes(whole.getvalue()[:-5000])
    (tmp_path / "empty").mkdir()
    cases = {
        "enwik8.zip": "not a readable zip",
        "two.zip": "exactly one file",
        "cut.zip": "cut.zip",
        "empty": "folder without enwik8",
        "missing.zip": "no such file",
    }
    for name, message in cases.items():
        assert D.main(["enwik8", "--path", str(tmp_path / name), "--out", str(tmp_path / "split")]) == 2
        one_line_error(capsys, message)
    assert D.main(["info", str(tmp_path / "missing.zip")]) == 2
    one_line_error(capsys, "missing.zip")


def test_no_traceback_from_the_command_line(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "training.train", "--config", "tiny", "--data", str(corpus)]
    cmd += ["--out", str(tmp_path), "--set", "batch=abc"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --set batch=abc: batch takes a whole number"
