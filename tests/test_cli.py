"""The `shazip` command through subprocesses: files, stdin/stdout, overwrite, --rm, -c, -o, exit codes,
refusals, Ctrl-C. These use --no-model (stored/zstd frames: no torch, fast); test_cli_model.py runs the
model through the command."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import threading
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


def test_level_flags_are_recorded_and_decode_without_a_model(work):
    """-1 .. -9 as zstd and xz spell them; levels 1-3 use no network, so this needs no model file."""
    for flag, level in (("-1", 1), ("--level=2", 2), ("-L3", 3)):
        result = shazip("compress", "-k", "-f", flag, "a.txt", cwd=work)
        assert result.returncode == 0, result.stderr
        record = json.loads(shazip("info", "--json", "a.txt.shz", cwd=work).stdout)
        assert record["level"] == level and "model" not in record["methods"]
        assert shazip("test", "a.txt.shz", cwd=work).returncode == 0
    # "-1" as the value of -o names a file; it is not a level
    assert shazip("compress", "-k", "-2", "-o", "-1", "a.txt", cwd=work).returncode == 0
    assert (work / "-1").exists()
    bad = shazip("compress", "--level", "0", "a.txt", cwd=work)
    assert bad.returncode == 2 and b"level must be 1..9" in bad.stderr


def test_level_flags_leave_option_values_and_operands_alone():
    from shazip.cli import level_flags

    assert level_flags(["compress", "-9", "f"]) == ["compress", "--level", "9", "f"]
    assert level_flags(["compress", "-T", "1", "-o", "-3", "f"]) == ["compress", "-T", "1", "-o", "-3", "f"]
    assert level_flags(["compress", "--", "-5"]) == ["compress", "--", "-5"]


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


# --- devices, signals, races, names, modes (issue 18) ---------------------------------------------------


def make_char_device(path: Path, major: int, minor: int) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")


def test_a_device_given_with_o_is_written_into_and_never_replaced(work):
    make_char_device(work / "mynull", 1, 3)  # a null device of our own
    for force in ([], ["-f"]):
        result = shazip("compress", "--no-model", *force, "a.txt", "-o", "mynull", cwd=work)
        assert result.returncode == 0, result.stderr
        assert stat.S_ISCHR((work / "mynull").stat().st_mode)
    assert leftovers(work) == []


def test_a_fifo_given_with_o_gets_the_stream_and_stays_a_fifo(work):
    os.mkfifo(work / "pipe")
    got = bytearray()

    def read() -> None:
        with open(work / "pipe", "rb") as f:
            got.extend(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    result = shazip("compress", "--no-model", "--rm", "a.txt", "-o", "pipe", cwd=work)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO((work / "pipe").stat().st_mode)
    assert (work / "a.txt").exists()  # --rm keeps the input when the output is not a regular file
    assert shazip("decompress", cwd=work, data=bytes(got)).stdout == DATA


def test_a_special_file_where_the_output_name_falls_is_refused_even_with_force(work):
    os.mkfifo(work / "a.txt.shz")  # (opening it for writing would block: it must not be opened at all)
    for force in ([], ["-f"]):
        result = shazip("compress", "--no-model", *force, "a.txt", cwd=work, timeout=30)
        assert result.returncode == 1 and b"a.txt.shz exists and is not a regular file" in result.stderr
        assert stat.S_ISFIFO((work / "a.txt.shz").stat().st_mode)


def test_device_input_is_not_read(work):
    for device in ("/dev/zero", "/dev/urandom"):
        result = shazip("compress", "--no-model", device, "-o", "x.shz", cwd=work, timeout=30)
        assert result.returncode == 1, result.stderr
        assert result.stderr == f"shazip: {device}: not a regular file -- ignored\n".encode()
        for command in ("decompress", "test", "info"):
            result = (
                shazip(command, "-o", "y", device, cwd=work, timeout=30)
                if command == "decompress"
                else (shazip(command, device, cwd=work, timeout=30))
            )
            assert result.returncode == 1 and b"not a regular file -- ignored" in result.stderr
    assert not (work / "x.shz").exists() and not (work / "y").exists() and leftovers(work) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_sigterm_and_sighup_remove_the_temporary_output(work, command, signum):
    """The signal while the command waits for more input: exit 128 + signal, no output, no temporary."""
    packed = shazip("compress", "--no-model", "--frame-size", "4096", cwd=work, data=DATA * 5).stdout
    feed = DATA * 10 if command == "compress" else packed[: len(packed) // 2]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shazip",
            command,
            "--no-model" if command == "compress" else "-q",
            "-o",
            "out",
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=command_env(),
    )
    try:
        process.stdin.write(feed)
        process.stdin.flush()
        deadline = time.monotonic() + 60
        while not leftovers(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(work), "the temporary output never appeared"
        time.sleep(0.3)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, err
    assert err.decode().strip().splitlines() == [f"shazip: {signal.Signals(signum).name}: stopped"]
    assert not (work / "out").exists() and leftovers(work) == []


def test_threads_are_bounded(work):
    for threads in ("100000", "30000", "-1"):
        result = shazip("compress", "--threads", threads, "a.txt", cwd=work)
        assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr
        assert b"--threads must be in 0..256 (0: all CPUs)" in result.stderr
    assert not (work / "a.txt.shz").exists() and leftovers(work) == []
    result = shazip("compress", "-T0", "-1", "a.txt", cwd=work)  # -T0: every CPU, as xz and zstd
    assert result.returncode == 0, result.stderr


def test_two_writers_of_one_output_name_exactly_one_wins(work):
    """Without -f the final name is created exclusively: of two processes racing for it, one writes it
    and the other reports that it exists (before, both said 0 and one output was lost)."""
    inputs = {name: os.urandom(3_000_000) for name in ("n1.bin", "n2.bin")}
    for name, data in inputs.items():
        (work / name).write_bytes(data)
    for _ in range(3):
        (work / "out.shz").unlink(missing_ok=True)
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "shazip", "compress", "-q", "--no-model", name, "-o", "out.shz"],
                stderr=subprocess.PIPE,
                cwd=work,
                env=command_env(),
            )
            for name in inputs
        ]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 1], results
        loser = next(err for code, err in results if code == 1)
        assert loser.endswith(b"out.shz already exists (use -f to overwrite)\n")
        winner = next(name for (code, _), name in zip(results, inputs, strict=True) if code == 0)
        assert shazip("decompress", "-c", "out.shz", cwd=work).stdout == inputs[winner]
        assert leftovers(work) == []


def test_the_same_input_compressed_twice_at_once(work):
    (work / "big.bin").write_bytes(os.urandom(3_000_000))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "shazip", "compress", "-q", "--no-model", "big.bin"],
            stderr=subprocess.PIPE,
            cwd=work,
            env=command_env(),
        )
        for _ in range(2)
    ]
    assert sorted(p.wait(timeout=120) for p in processes) == [0, 1]
    assert shazip("decompress", "-c", "big.bin.shz", cwd=work).stdout == (work / "big.bin").read_bytes()


@pytest.mark.parametrize("length", [240, 245, 251])
def test_long_file_names(work, length):
    name = "n" * (length - 4) + ".txt"
    (work / name).write_bytes(DATA)
    result = shazip("compress", "--no-model", name, cwd=work)
    assert result.returncode == 0, result.stderr
    assert shazip("decompress", "-c", name + ".shz", cwd=work).stdout == DATA
    assert leftovers(work) == []


def test_a_name_too_long_for_the_output_is_one_clean_error(work):
    name = "n" * 252  # name.shz would be 256 bytes
    (work / name).write_bytes(DATA)
    result = shazip("compress", "--no-model", name, cwd=work)
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1
    assert b"File name too long" in result.stderr and leftovers(work) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_from_stdin_gets_the_mode_open_would_give(work, umask, mode):
    packed = subprocess.run(
        [sys.executable, "-m", "shazip", "compress", "--no-model", "-o", "out.shz"],
        input=DATA,
        cwd=work,
        env=command_env(),
        capture_output=True,
        preexec_fn=lambda: os.umask(umask),
        timeout=60,
    )
    assert packed.returncode == 0, packed.stderr
    assert stat.S_IMODE((work / "out.shz").stat().st_mode) == mode


def crafted_header_stream(name: str, model_id: bytes = bytes(32)) -> bytes:
    """A complete stream whose header carries `name` as the model's name: without frames, or (with a
    model id) one net frame, so that decoding needs the model."""
    from shazip.format import Footer, FrameHeader, Method, StreamHeader, assemble, content_hasher, crc32

    header = StreamHeader(1, 1024, model_id, name)
    if not any(model_id):
        return assemble(header, [], Footer(0, 0, content_hasher().digest()))
    payload = bytes(8)
    frame = FrameHeader(Method.NET, 100, 8, 0, 1, crc32(payload))
    return assemble(header, [(frame, payload)], Footer(1, 100, bytes(16)))


EVIL_NAME = "\x1b]0;owned\x07\x1b[2J\x1b[1;1Hfake text\r\u202etxt.exe\x9b31m"


def test_names_from_files_cannot_drive_the_terminal(work):
    (work / "evil.shz").write_bytes(crafted_header_stream(EVIL_NAME))
    (work / "needs.shz").write_bytes(crafted_header_stream(EVIL_NAME, model_id=bytes(range(32))))
    outputs = [
        shazip("info", "evil.shz", cwd=work).stdout,
        shazip("info", "-v", "evil.shz", cwd=work).stdout,
        shazip("info", "--json", "evil.shz", cwd=work).stdout,
        shazip("decompress", "-c", "needs.shz", cwd=work).stderr,
        shazip("test", "needs.shz", cwd=work).stderr,
    ]
    for text in outputs:
        assert text and not any(c in text for c in b"\x1b\x07\r\x9b") and "\u202e".encode() not in text, text
    assert b"needs model \\x1b]0;owned\\x07" in outputs[3]  # shown, escaped
    assert json.loads(outputs[2])["model"]["name"] == EVIL_NAME  # JSON keeps it exact, escaped


def test_memory_limit_refuses_a_header_asking_for_too_much(work):
    from shazip.format import Footer, FrameHeader, Method, StreamHeader, assemble, crc32
    from shazip.modelfile import ModelFile, default_model_path

    model = ModelFile.load(default_model_path())
    payload = bytes(8)
    frame = FrameHeader(Method.NET, 100, 8, 0, 8192, crc32(payload))
    header = StreamHeader(8192, 1 << 20, model.model_id, model.name)
    (work / "lanes.shz").write_bytes(assemble(header, [(frame, payload)], Footer(1, 100, bytes(16))))
    assert len((work / "lanes.shz").read_bytes()) < 200
    result = shazip("decompress", "-c", "lanes.shz", cwd=work)
    assert result.returncode == 1 and result.stdout == b""
    assert re.fullmatch(
        rb"shazip: lanes.shz: needs \d+ MiB of memory to decode \(frames .*8192 lanes .*\), more than the "
        rb"limit of 512 MiB \(--memlimit\)\n",
        result.stderr,
    ), result.stderr
    assert b"memory       " in shazip("info", "lanes.shz", cwd=work).stdout
    # the writer does not make what readers would refuse
    (work / "big.txt").write_bytes(DATA[:20000])
    result = shazip("compress", "--lanes", "8192", "--frame-size", "16384", "big.txt", cwd=work)
    assert result.returncode == 1 and b"needs" in result.stderr and b"more than the limit" in result.stderr
    assert not (work / "big.txt.shz").exists() and leftovers(work) == []
    # a no-model stream's need is its frames: a limit below three frames refuses it, "0" lifts the limit
    packed = shazip("compress", "--no-model", "--frame-size", str(1 << 20), cwd=work, data=DATA).stdout
    assert shazip("decompress", "-M", "2MiB", cwd=work, data=packed).returncode == 1
    assert shazip("decompress", "--memlimit", "0", cwd=work, data=packed).stdout == DATA
    assert shazip("decompress", "--memlimit", "lots", cwd=work, data=packed).returncode == 2


# --- zstd/xz habits, output errors, names, standard streams, filters, concatenation (issues 26, 28) -----


def test_short_flags_combine_as_in_zstd(work):
    from shazip.cli import expand_short_flags

    assert expand_short_flags(["compress", "-9f", "a"]) == ["compress", "--level", "9", "-f", "a"]
    assert expand_short_flags(["compress", "-kf1", "a"]) == ["compress", "-k", "-f", "--level", "1", "a"]
    assert expand_short_flags(["compress", "-9T2"]) == ["compress", "--level", "9", "-T2"]
    assert expand_short_flags(["-dc", "a.shz"]) == ["decompress", "-c", "a.shz"]
    assert expand_short_flags(["-l", "a.shz"]) == ["info", "a.shz"]
    for flags in (["-kf1"], ["-1kf"], ["-1", "-kf"]):
        result = shazip("compress", *flags, "a.txt", cwd=work)
        assert result.returncode == 0, result.stderr
        assert json.loads(shazip("info", "--json", "a.txt.shz", cwd=work).stdout)["level"] == 1
    result = shazip("compress", "-19", "a.txt", cwd=work)
    assert result.returncode == 2 and result.stderr == b"shazip: level must be 1..9, got 19\n"
    assert shazip("-dc", "a.txt.shz", cwd=work).stdout == DATA
    bogus = shazip("compress", "--bogus", cwd=work)
    assert bogus.returncode == 2 and bogus.stderr.count(b"\n") == 1 and b"--bogus" in bogus.stderr


def test_the_last_of_rm_and_keep_wins(work):
    assert shazip("compress", "--no-model", "--rm", "-k", "a.txt", cwd=work).returncode == 0
    assert (work / "a.txt").exists()
    assert shazip("compress", "--no-model", "-f", "-k", "--rm", "a.txt", cwd=work).returncode == 0
    assert not (work / "a.txt").exists()


def test_errors_about_the_output_name_the_output(work):
    for command, source in (("compress", "a.txt"), ("decompress", "x.shz")):
        if command == "decompress":
            (work / "x.shz").write_bytes(shazip("compress", "--no-model", cwd=work, data=DATA).stdout)
        result = shazip(command, "-o", "nodir/x.out", source, cwd=work)
        assert result.returncode == 1
        assert result.stderr == b"shazip: nodir/x.out: No such file or directory\n"
        result = shazip(command, "-o", "/dev/full", source, cwd=work)
        assert result.returncode == 1
        assert result.stderr == b"shazip: /dev/full: No space left on device\n"
    assert leftovers(work) == []


@pytest.fixture
def small_mount(tmp_path: Path):
    """A 64 KiB tmpfs (a full disk) and a read-only one (an unwritable folder, also for root)."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    mounted = []
    for folder, options in ((full, "size=64k"), (ro, "ro,size=64k")):
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        ).returncode:
            for m in mounted:
                subprocess.run(["umount", str(m)])
            pytest.skip("mounting a tmpfs needs privileges")
        mounted.append(folder)
    yield full, ro
    for m in mounted:
        subprocess.run(["umount", str(m)])


def test_a_full_disk_and_a_read_only_folder_name_the_output(work, small_mount):
    full, ro = small_mount
    (work / "r.bin").write_bytes(os.urandom(300_000))
    result = shazip("compress", "--no-model", "-o", str(full / "r.shz"), "r.bin", cwd=work)
    assert result.returncode == 1
    assert result.stderr == f"shazip: {full / 'r.shz'}: No space left on device\n".encode()
    assert list(full.iterdir()) == []
    result = shazip("compress", "--no-model", "-o", str(ro / "a.shz"), "a.txt", cwd=work)
    assert result.returncode == 1
    assert result.stderr == f"shazip: {ro / 'a.shz'}: Read-only file system\n".encode()


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run shazip with stderr on a pseudo-terminal (so the progress bar shows); returns (code, what the
    terminal got)."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "shazip", *args],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=command_env(COLUMNS="200"),
        )
        os.close(terminal)
        got = bytearray()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        code = process.wait(timeout=120)
    finally:
        os.close(controller)
    return code, bytes(got)


@pytest.mark.parametrize("name", ["a[/]b.txt", "[bold red]x.txt", "e\x1b]0;owned\x07.txt"])
def test_file_names_are_escaped_on_the_terminal_progress_bar_included(work, name):
    (work / name).parent.mkdir(exist_ok=True)  # ("a[/]b.txt" is the file "]b.txt" in the folder "a[")
    (work / name).write_bytes(DATA * 3)
    code, seen = run_on_a_terminal(["compress", "--no-model", "--frame-size", "4096", name], work)
    assert code == 0, seen
    assert b"Traceback" not in seen and b"MarkupError" not in seen
    assert b"\x1b]0;owned" not in seen
    if "[bold red]" in name:
        assert b"[bold red]x.txt" in seen  # shown as text, not as colour
    code, seen = run_on_a_terminal(["decompress", "-f", "-c", name + ".shz"], work)
    assert code == 0 and b"Traceback" not in seen and b"\x1b]0;owned" not in seen


def test_decompress_progress_has_a_total(work):
    from shazip.cli import raw_size_hint

    packed = shazip("compress", "--no-model", "--frame-size", "4096", cwd=work, data=DATA).stdout
    (work / "one.shz").write_bytes(packed)
    (work / "two.shz").write_bytes(packed + packed)
    assert raw_size_hint(str(work / "one.shz")) == len(DATA)
    assert raw_size_hint(str(work / "two.shz")) == 2 * len(DATA)
    (work / "cut.shz").write_bytes(packed[:-5])
    assert raw_size_hint(str(work / "cut.shz")) is None and raw_size_hint("-") is None


def test_the_bar_shows_bits_per_byte_of_finished_frames_only():
    """Inside a frame the coded size is that of the frames before it: no figure until one is done."""
    from shazip.cli import Bar

    shown = []
    bar = Bar(lambda raw, ratio: shown.append(ratio))

    class Coder:
        raw_total, coded_total = 0, 60  # the header is written before the first frame is coded

    bar.coder = Coder()
    bar(500_000, 60)  # half of the first frame
    assert shown == [""]
    Coder.raw_total, Coder.coded_total = 1 << 20, 60 + 24 + 131_072
    bar(1 << 20, Coder.coded_total)
    bar((1 << 20) + 1000, Coder.coded_total)  # early in the second frame: still the first's figure
    assert shown[1] == shown[2] == f"{8 * (60 + 24 + 131_072) / (1 << 20):.3f} bits/byte"


@pytest.mark.parametrize(
    "args, shell",
    [
        (["compress", "--no-model"], "<&- >OUT"),
        (["compress", "--no-model"], "<a.txt >&-"),
        (["decompress"], "<&- >OUT"),
        (["decompress"], "<a.txt.shz >&-"),
        (["info", "a.txt.shz"], ">/dev/full"),
        (["--help"], ">/dev/full"),
        (["--version"], ">/dev/full"),
        (["info", "a.txt.shz"], ">&-"),
    ],
)
def test_closed_or_full_standard_streams_give_one_line(work, args, shell):
    assert shazip("compress", "--no-model", "-k", "a.txt", cwd=work).returncode == 0
    command = " ".join([sys.executable, "-m", "shazip", *args, shell])
    result = subprocess.run(
        ["bash", "-c", command], cwd=work, env=command_env(), capture_output=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"shazip: \((stdin|stdout)\): (Bad file descriptor|No space left on device)", lines[0]
    ), result.stderr
    assert not (work / "OUT").exists() or (work / "OUT").read_bytes() == b""


def test_a_filter_is_silent_unless_verbose(work):
    packed = shazip("compress", "--no-model", cwd=work, data=DATA)
    assert packed.returncode == 0 and packed.stderr == b""
    assert shazip("compress", "--no-model", "-c", "a.txt", cwd=work).stderr == b""
    assert b"ratio" in shazip("compress", "--no-model", "-v", cwd=work, data=DATA).stderr


def test_help_has_plain_metavars_and_current_wording(work):
    texts = {c: shazip(c, "--help", cwd=work).stdout for c in ("compress", "test")}
    texts["main"] = shazip("--help", cwd=work).stdout
    for text in texts.values():
        assert (
            b"<bool>" not in text and b"<list" not in text and b"<int>" not in text and b"<str>" not in text
        )
        assert b"range coder" not in text
    assert b"FILE" in texts["compress"] and b"SIZE" in texts["compress"]
    assert b"stdin to stdout" not in texts["test"]


def test_compress_c_writes_concatenated_streams_and_info_lists_them(work):
    result = shazip("compress", "--no-model", "-c", "a.txt", "b.bin", cwd=work)
    assert result.returncode == 0, result.stderr
    (work / "cat.shz").write_bytes(result.stdout)
    assert shazip("decompress", "-c", "cat.shz", cwd=work).stdout == DATA + (work / "b.bin").read_bytes()
    record = json.loads(shazip("info", "--json", "cat.shz", cwd=work).stdout)
    assert record["streams"] == 2 and len(record["stream_list"]) == 2
    assert record["raw_size"] == len(DATA) + 5000
    assert record["compressed_size"] == len(result.stdout)
    assert [s["raw_size"] for s in record["stream_list"]] == [len(DATA), 5000]
    verbose = json.loads(shazip("info", "--json", "-v", "cat.shz", "cat.shz", cwd=work).stdout)
    assert len(verbose) == 2 and len(verbose[0]["stream_list"][1]["frame_list"]) == 1
    text = shazip("info", "cat.shz", cwd=work)
    assert text.returncode == 0 and b"stream 2 of 2" in text.stdout and b"2 streams" in text.stdout


def test_a_model_file_given_is_checked_whatever_the_level(work):
    result = shazip("compress", "-1", "--model", "nosuch", "a.txt", cwd=work)
    assert result.returncode == 1 and result.stderr == b"shazip: nosuch: No such file or directory\n"
    assert not (work / "a.txt.shz").exists()
    import zipfile

    with zipfile.ZipFile(work / "ckpt.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02.")
    result = shazip("compress", "-1", "--model", "ckpt.pt", "a.txt", cwd=work)
    assert result.returncode == 1 and b"ckpt.pt: a training checkpoint" in result.stderr
    assert b"python -m training.export" in result.stderr
