"""The `shazip` command with a model: the embedded default model, cross-process decoding with different
thread settings, the wrong model, damaged model-coded files. Each process that runs the model pays for
importing torch, so there are few of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.paths import sample_text
from tests.test_cli import shazip as run_shazip


def shazip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_shazip(*args, cwd=cwd, timeout=300)  # (each process with the model imports numba's code)


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, bytes]:
    """A text file compressed by the command with the embedded default model, 1 thread, 3 lanes."""
    folder = tmp_path_factory.mktemp("cli_model")
    data = sample_text(2400)
    (folder / "text.txt").write_bytes(data)
    result = shazip(
        "compress", "--threads", "1", "--lanes", "3", "--device", "cpu", "-v", "text.txt", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    return folder, data


def test_default_model_round_trip_in_another_process_with_other_threads(packed):
    folder, data = packed
    record = json.loads(shazip("info", "--json", "text.txt.shz", cwd=folder).stdout)
    assert record["methods"] == {"mix": 1} and record["lanes"] == 3
    assert record["bits_per_byte"] < 4.0
    os.rename(folder / "text.txt", folder / "text.orig")
    try:
        result = shazip("decompress", "--threads", "2", "--device", "cpu", "text.txt.shz", cwd=folder)
        assert result.returncode == 0, result.stderr
        assert (folder / "text.txt").read_bytes() == data
    finally:
        (folder / "text.orig").unlink()


def test_wrong_model_is_named_and_leaves_no_output(packed, fixture_model_path, tmp_path):
    folder, _ = packed
    from shazip.modelfile import ModelFile

    model = ModelFile.load(fixture_model_path)
    tensors = {k: v.copy() for k, v in model.tensors.items()}
    key = sorted(tensors)[0]
    tensors[key].reshape(-1)[0] ^= 1
    other = ModelFile(config=model.config, quant=model.quant, tensors=tensors, name="someone-else")
    other.save(tmp_path / "other.safetensors")
    target = folder / "wrong-model-output"
    result = shazip(
        "decompress",
        "--model",
        str(tmp_path / "other.safetensors"),
        "-o",
        str(target),
        "text.txt.shz",
        cwd=folder,
    )
    assert result.returncode == 1
    assert b"text.txt.shz: needs model" in result.stderr and b"got someone-else" in result.stderr
    assert not target.exists()


def test_damaged_model_file_gives_clear_errors_and_no_output(packed):
    folder, _ = packed
    original = (folder / "text.txt.shz").read_bytes()
    (folder / "flipped.shz").write_bytes(original[:80] + bytes([original[80] ^ 4]) + original[81:])
    (folder / "cut.shz").write_bytes(original[: len(original) // 2])
    result = shazip("test", "flipped.shz", "cut.shz", cwd=folder)
    assert result.returncode == 1
    assert b"flipped.shz: corrupt frame 1" in result.stderr
    assert b"cut.shz: truncated" in result.stderr
    result = shazip("decompress", "flipped.shz", "cut.shz", cwd=folder)
    assert result.returncode == 1
    assert not (folder / "flipped").exists() and not (folder / "cut").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_while_the_model_runs_removes_the_temporary_output(tmp_path):
    import signal
    import sys
    import time

    from tests.paths import command_env

    (tmp_path / "t.txt").write_bytes(sample_text(200_000))
    process = subprocess.Popen(
        [sys.executable, "-m", "shazip", "compress", "--device", "cpu", "--lanes", "4", "t.txt"],
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=command_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)  # (the model is running by now: 200 kB take minutes)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
