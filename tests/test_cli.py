"""The `shazip` command through subprocesses: files, stdin/stdout, overwrite, --rm, -c, -o, exit codes,
refusals, Ctrl-C. These use --no-model (stored/zstd frames: no torch, fast); test_cli_model.py runs the
model through the command."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import command_env

DATA = b"".join(b"%d bottles of beer on the wall, %d bottles of beer.\n" % (i, i) for i in range(2000))


def shazip(
    *args: str, cwd: Path, data: bytes | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    """`python -m shazip ARGS` in `cwd`, stdout and stderr captured unless kwargs say otherwise."""
    env = command_env()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | kwargs
    return subprocess.run(
        [sys.executable, "-m", "shazip", *args],
        input=data,
        cwd=cwd,
        env=env,
        timeout=timeout,
        **streams,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_bytes(DATA)
    (tmp_path / "b.bin").write_bytes(os.urandom(5000))
    return tmp_path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_help_and_info_do_not_import_torch(work):
    code = (
        "import sys, runpy; sys.argv = ['shazip', '--help'];\n"
        "try:\n    runpy.run_module('shazip', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=command_env()
    )
    assert "compress" in out.stdout and out.stdout.strip().endswith("NO-TORCH")
    assert shazip("compress", "--no-model", "a.txt", cwd=work).returncode == 0
    code = code.replace("'--help'", "'info', 'a.txt.shz'")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=work, env=command_env()
    )
    assert "bits/byte" in out.stdout and out.stdout.strip().endswith("NO-TORCH")


def test_compress_decompress_files_keeps_sources(work):
    result = shazip("compress", "--no-model", "a.txt", "b.bin", cwd=work)
    assert result.returncode == 0, result.stderr
    assert b"a.txt" in result.stderr  # the summary line names the file
    assert (work / "a.txt").exists() and (work / "b.bin").exists()
    assert (work / "a.txt.shz").stat().st_size < len(DATA) / 3
    os.rename(work / "a.txt", work / "a.orig")
    os.rename(work / "b.bin", work / "b.orig")
    assert shazip("decompress", "-q", "a.txt.shz", "b.bin.shz", cwd=work).returncode == 0
    assert (work / "a.txt").read_bytes() == DATA
    assert (work / "b.bin").read_bytes() == (work / "b.orig").read_bytes()
    assert leftovers(work) == []


def test_stdin_to_stdout_pipes(work):
    packed = shazip("compress", "--no-model", cwd=work, data=DATA)
    assert packed.returncode == 0 and packed.stdout[:4] == b"\x89SHZ"
    unpacked = shazip("decompress", "-", cwd=work, data=packed.stdout)
    assert unpacked.returncode == 0 and unpacked.stdout == DATA
    tested = shazip("test", cwd=work, data=packed.stdout)
    assert tested.returncode == 0 and b"OK" in tested.stderr


def test_stdout_option_and_output_option(work):
    result = shazip("compress", "--no-model", "-c", "a.txt", cwd=work)
    assert result.returncode == 0 and not (work / "a.txt.shz").exists()
    (work / "x.shz").write_bytes(result.stdout)
    assert shazip("decompress", "-o", "copy", "x.shz", cwd=work).returncode == 0
    assert (work / "copy").read_bytes() == DATA
    assert shazip("decompress", "-c", "x.shz", cwd=work).stdout == DATA


def test_overwrite_refused_without_force(work):
    (work / "a.txt.shz").write_bytes(b"precious")
    result = shazip("compress", "--no-model", "a.txt", cwd=work)
    assert result.returncode == 1
    assert b"a.txt.shz already exists" in result.stderr and b"-f" in result.stderr
    assert (work / "a.txt.shz").read_bytes() == b"precious"
    assert shazip("compress", "--no-model", "-f", "a.txt", cwd=work).returncode == 0
    assert (work / "a.txt.shz").read_bytes()[:4] == b"\x89SHZ"


def test_rm_deletes_source_only_after_success(work):
    assert shazip("compress", "--no-model", "--rm", "a.txt", cwd=work).returncode == 0
    assert not (work / "a.txt").exists()
    assert shazip("decompress", "--rm", "a.txt.shz", cwd=work).returncode == 0
    assert (work / "a.txt").read_bytes() == DATA and not (work / "a.txt.shz").exists()
    (work / "bad.shz").write_bytes(b"\x89SHZ\r\n\x1a\nbroken")
    result = shazip("decompress", "--rm", "bad.shz", cwd=work)
    assert result.returncode == 1 and (work / "bad.shz").exists() and not (work / "bad").exists()


def test_one_bad_file_does_not_stop_the_others(work):
    result = shazip("compress", "--no-model", "missing.txt", "a.txt", cwd=work)
    assert result.returncode == 1
    assert b"missing.txt" in result.stderr and (work / "a.txt.shz").exists()


def test_usage_errors_exit_2(work):
    assert shazip("compress", "--no-model", "-o", "x.shz", "a.txt", "b.bin", cwd=work).returncode == 2
    assert shazip("compress", "--bogus", cwd=work).returncode == 2
    assert shazip("compress", "--device", "tpu", "a.txt", cwd=work).returncode == 2
    assert shazip("compress", "--no-model", "--rm", "--keep", "a.txt", cwd=work).returncode == 2
    assert not (work / "x.shz").exists()


def test_refuses_input_equal_to_output(work):
    result = shazip("compress", "--no-model", "-f", "-o", "a.txt", "a.txt", cwd=work)
    assert result.returncode == 1 and b"same file" in result.stderr
    assert (work / "a.txt").read_bytes() == DATA


def test_decompress_needs_the_suffix_and_a_shz_file(work):
    result = shazip("decompress", "a.txt", cwd=work)
    assert result.returncode == 1 and b"a.txt: unknown suffix" in result.stderr
    (work / "fake.shz").write_bytes(DATA)
    result = shazip("decompress", "fake.shz", cwd=work)
    assert result.returncode == 1 and b"fake.shz: not a .shz file" in result.stderr
    assert not (work / "fake").exists() and leftovers(work) == []


def test_info_text_and_json(work):
    assert shazip("compress", "--no-model", "a.txt", cwd=work).returncode == 0
    text = shazip("info", "-v", "a.txt.shz", cwd=work)
    assert text.returncode == 0
    for word in [b"frames", b"ratio", b"bits/byte", b"blake2b-128", b"model"]:
        assert word in text.stdout
    record = json.loads(shazip("info", "--json", "a.txt.shz", cwd=work).stdout)
    assert record["raw_size"] == len(DATA)
    assert record["compressed_size"] == (work / "a.txt.shz").stat().st_size
    assert record["frames"] == 1 and record["methods"] == {"zstd": 1}
    assert abs(record["bits_per_byte"] - 8 * record["compressed_size"] / len(DATA)) < 1e-9
    bad = shazip("info", "a.txt", cwd=work)
    assert bad.returncode == 1 and b"a.txt: not a .shz file" in bad.stderr


def test_refuses_to_write_compressed_data_to_a_terminal(work):
    controller, terminal = pty.openpty()
    try:
        result = shazip(
            "compress", "--no-model", cwd=work, data=DATA, stdout=terminal, stderr=subprocess.PIPE
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2 and b"terminal" in result.stderr


def test_ctrl_c_removes_partial_output(work):
    """SIGINT while reading a pipe that never ends: exit 130, no output file, no temporary file."""
    env = command_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "shazip", "compress", "--no-model", "-o", "out.shz"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        process.stdin.write(DATA * 10)  # more than a frame: the temporary file has data in it
        process.stdin.flush()
        while not leftovers(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(work), "the temporary output never appeared"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert not (work / "out.shz").exists() and leftovers(work) == []
