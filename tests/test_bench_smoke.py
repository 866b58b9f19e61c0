"""Smoke test of the benchmark suite (bench/): a tiny file through its own code, so it cannot rot.

The real benchmark (`pytest bench/ --benchmark-only`) stays out of the default test run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import pytest

from bench.codecs import RoundTripError, ShazipSettings, all_codecs
from bench.corpus import (
    CANTERBURY_FILES,
    ENV_CORPUS,
    QUICK_FILES,
    CorpusUnavailable,
    cases_in_folder,
    fetch_canterbury,
    quick_selection,
)
from bench.harness import BenchRun, call_once
from bench.report import COMPRESS, DECOMPRESS, Measurement, Summary
from tests.paths import CORPUS

REPO = Path(__file__).resolve().parents[1]
SHARED_CANTERBURY = CORPUS / "bench" / "canterbury"


def tiny_text(size: int = 3000) -> bytes:
    """Deterministic English-like text (compressible, like the corpus)."""
    words = b"the quick brown fox jumps over a lazy dog while shazip counts every byte".split()
    out = bytearray()
    i = 0
    while len(out) < size:
        out += words[(i * 7 + i // 3) % len(words)] + (b"\n" if i % 11 == 10 else b" ")
        i += 1
    return bytes(out[:size])


def make_corpus(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ---- the harness: measure, verify, summarise ------------------------------------------------------


def test_every_codec_round_trips_and_the_reports_agree(tmp_path: Path) -> None:
    data = tiny_text()
    folder = make_corpus(tmp_path / "corpus", {"sub/tiny.txt": data})
    run = BenchRun.from_options(full=False, max_bytes=1024)
    (case,) = run.cases(environ={ENV_CORPUS: str(folder)})
    assert case.name == "sub/tiny.txt"
    assert run.data(case) == data[:1024]

    runnable = [c for c in run.codecs if not c.unavailable]
    assert {"zstd-3", "zstd-19", "zstd-22-long", "xz-9e"} <= {c.name for c in runnable}
    for codec in runnable:
        packed = run.measure_compress(case, codec, call_once)
        unpacked = run.measure_decompress(case, codec, call_once)
        assert packed.compressed_bytes == unpacked.compressed_bytes
        assert 0 < packed.compressed_bytes < 1024, codec.name  # text compresses
        assert packed.seconds > 0 and unpacked.seconds > 0
        info = packed.extra_info()
        assert info["bits_per_byte"] == pytest.approx(8 * packed.compressed_bytes / 1024, abs=1e-4)
        if codec.frame_methods:  # shazip: its frames account for every input byte
            assert sum(packed.frame_methods.values()) == 1024

    summary = run.summary()
    markdown = summary.markdown()
    assert "sub/tiny.txt" in markdown and "**total**" in markdown
    for codec in runnable:
        assert codec.name in markdown
    for codec in run.codecs:
        if codec.unavailable:
            assert f"{codec.name} skipped" in markdown

    summary.write_markdown(tmp_path / "out" / "report.md")
    summary.write_json(tmp_path / "out" / "report.json")
    assert (tmp_path / "out" / "report.md").read_text() == markdown
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["total"]["bytes"] == 1024
    for codec in runnable:
        total = written["total"]["codecs"][codec.name]
        measured = next(m for m in run.measurements if m.codec == codec.name)
        assert total["compressed_bytes"] == measured.compressed_bytes
        assert total["bits_per_byte"] == pytest.approx(measured.bits_per_byte)


def test_a_wrong_output_fails(tmp_path: Path) -> None:
    folder = make_corpus(tmp_path, {"a.txt": tiny_text(500)})
    run = BenchRun.from_options(full=True, max_bytes=None)
    (case,) = run.cases(environ={ENV_CORPUS: str(folder)})
    zstd = run.codecs[0]
    broken = type(zstd)(
        name="broken", compress=zstd.compress, decompress=lambda blob: zstd.decompress(blob)[:-1] + b"?"
    )
    with pytest.raises(RoundTripError, match="first difference at byte 499"):
        run.measure_compress(case, broken, call_once)
    with pytest.raises(RoundTripError):
        run.measure_decompress(case, broken, call_once)


def test_totals_and_shazip_relative_to_best_classical() -> None:
    measurements = [
        Measurement("a", "zstd-3", COMPRESS, 1000, 400, 0.001),
        Measurement("a", "xz-9e", COMPRESS, 1000, 300, 0.01),
        Measurement("a", "shazip", COMPRESS, 1000, 150, 0.1, {"model": 900, "stored": 100}),
        Measurement("a", "shazip", DECOMPRESS, 1000, 150, 0.2),
        Measurement("b", "zstd-3", COMPRESS, 3000, 600, 0.002),
        Measurement("b", "xz-9e", COMPRESS, 3000, 650, 0.03),
        Measurement("b", "shazip", COMPRESS, 3000, 300, 0.3, {"model": 3000}),
    ]
    summary = Summary.from_measurements(measurements, ["zstd-3", "xz-9e", "shazip"])
    assert summary.shazip_vs_best_classical("a") == (0.5, "xz-9e")
    assert summary.shazip_vs_best_classical("b") == (0.5, "zstd-3")  # 300 / 600
    # Over both files the best classical codec is the smallest total: xz-9e (950 bytes, zstd-3 1000).
    assert summary.shazip_vs_best_classical(None) == (450 / 950, "xz-9e")
    total = summary.total("shazip")
    assert total.bits_per_byte == pytest.approx(8 * 450 / 4000)
    assert total.mb_per_s(COMPRESS) == pytest.approx(4000 / 0.4 / 1e6)
    assert total.mb_per_s(DECOMPRESS) is None  # not measured on file b
    assert total.frame_methods == {"model": 3900, "stored": 100}
    with_a_level = Summary.from_measurements(
        [*measurements, Measurement("a", "shazip-1", COMPRESS, 1000, 100, 0.01)],
        ["zstd-3", "xz-9e", "shazip-1", "shazip"],
    )
    assert with_a_level.shazip_vs_best_classical("a") == (0.5, "xz-9e")  # shazip-1 is not classical
    assert "shazip frames, bytes coded by each method over all files: model 3,900, stored 100" in (
        summary.markdown()
    )


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    measurements = [
        Measurement("a", codec, direction, 1000, size, seconds)
        for codec, size, seconds in (("zstd-3", 400, 0.001), ("xz-9e", 300, 0.01), ("shazip", 150, 0.1))
        for direction in (COMPRESS, DECOMPRESS)
    ]
    Summary.from_measurements(measurements, ["zstd-3", "xz-9e", "shazip"]).write_plot(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the corpus -----------------------------------------------------------------------------------


def test_folder_cases_are_every_file_recursively(tmp_path: Path) -> None:
    make_corpus(tmp_path, {"b.txt": b"b", "sub/a.bin": b"a", ".hidden": b"h", "empty": b"", ".git/x": b"x"})
    assert [c.name for c in cases_in_folder(tmp_path)] == ["b.txt", "sub/a.bin"]
    with pytest.raises(CorpusUnavailable, match="not a folder"):
        cases_in_folder(tmp_path / "missing")


def test_quick_selection(tmp_path: Path) -> None:
    names = {f"canterbury/{n}": b"x" for n in CANTERBURY_FILES} | {"calgary/book1": b"x"}
    cases = cases_in_folder(make_corpus(tmp_path / "c", names))
    assert [c.path.name for c in quick_selection(cases)] == list(QUICK_FILES)
    others = cases_in_folder(make_corpus(tmp_path / "o", {f"f{i:02d}": b"x" for i in range(30)}))
    picked = [c.name for c in quick_selection(others)]
    assert picked == ["f00", "f05", "f10", "f15", "f20", "f25"]


def test_offline_download_says_how_to_point_at_a_folder(tmp_path: Path) -> None:
    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("no network")

    with pytest.raises(CorpusUnavailable) as problem:
        fetch_canterbury(tmp_path, download=offline)
    assert f"{ENV_CORPUS}=/path/to/folder pytest bench/ --benchmark-only" in str(problem.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written in the cache


def test_download_is_verified_then_cached(tmp_path: Path) -> None:
    files = {"one.txt": b"first file\n", "two.bin": bytes(range(256))}
    expected = {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}
    downloads = []

    def serve(archive: bytes):
        def download(url: str, destination: Path) -> None:
            downloads.append(url)
            destination.write_bytes(archive)

        return download

    tampered = dict(files, **{"two.bin": b"not the right bytes"})
    with pytest.raises(CorpusUnavailable, match="two.bin has 19 bytes, expected 256"):
        fetch_canterbury(tmp_path, download=serve(tar_gz(tampered)), expected=expected)
    assert list(tmp_path.iterdir()) == []

    folder = fetch_canterbury(tmp_path, download=serve(tar_gz(files)), expected=expected)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert fetch_canterbury(tmp_path, download=serve(b"unused"), expected=expected) == folder
    assert len(downloads) == 2  # the third call found the verified cache

    (folder / "one.txt").write_bytes(b"changed")  # a damaged cache is fetched again
    fetch_canterbury(tmp_path, download=serve(tar_gz(files)), expected=expected)
    assert (folder / "one.txt").read_bytes() == files["one.txt"] and len(downloads) == 3


@pytest.mark.skipif(not SHARED_CANTERBURY.is_dir(), reason="no local copy of the Canterbury corpus")
def test_recorded_canterbury_checksums_match_the_real_files(tmp_path: Path) -> None:
    real = {name: (SHARED_CANTERBURY / name).read_bytes() for name in CANTERBURY_FILES}
    archive = tar_gz(
        {f"./{name}": data for name, data in real.items()}
    )  # the way cantrbry.tar.gz is laid out
    folder = fetch_canterbury(tmp_path, download=lambda url, destination: destination.write_bytes(archive))
    assert sorted(p.name for p in folder.iterdir()) == sorted(CANTERBURY_FILES)


# ---- the pytest entry point, end to end ------------------------------------------------------------


def test_pytest_bench_runs_end_to_end(tmp_path: Path) -> None:
    folder = make_corpus(tmp_path / "corpus", {"tiny.txt": tiny_text(600)})
    env = dict(os.environ, **{ENV_CORPUS: str(folder), "OMP_NUM_THREADS": "1"})
    command = [
        sys.executable,
        "-m",
        "pytest",
        "bench/test_codecs.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-min-rounds=1",
        "--benchmark-max-time=0.000001",
        "--benchmark-warmup=off",
        "--shazip-report-md",
        str(tmp_path / "r.md"),
        "--shazip-report-json",
        str(tmp_path / "r.json"),
        "--shazip-levels",
        "1",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "shazip benchmark summary" in done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert [f["file"] for f in report["files"]] == ["tiny.txt"]
    expected_codecs = [c.name for c in all_codecs(ShazipSettings(extra_levels=(1,))) if not c.unavailable]
    assert report["codecs"] == expected_codecs and expected_codecs[-2:] == ["shazip-1", "shazip"]
    for name in expected_codecs:
        figures = report["total"]["codecs"][name]
        assert figures["compress_mb_per_s"] > 0 and figures["decompress_mb_per_s"] > 0


FAKE_SLOW_CODEC_PLUGIN = """
import json, os, zlib
import pytest
from bench.codecs import Codec
from bench.harness import bench_run_key

CALLS = {"compress": 0, "decompress": 0}

def compress(data):
    CALLS["compress"] += 1
    return zlib.compress(data)

def broken_decompress(blob):
    CALLS["decompress"] += 1
    return zlib.decompress(blob)[:-1]

def pytest_sessionstart(session):
    session.config.stash[bench_run_key].codecs = [Codec("fake-slow", compress, broken_decompress, slow=True)]

def pytest_unconfigure(config):
    with open(os.environ["FAKE_CALLS"], "w") as out:
        json.dump(CALLS, out)
"""


@pytest.mark.parametrize("selection", ["fake-slow", "test_compress"])
def test_a_slow_codecs_wrong_output_fails_whichever_test_checks_it(tmp_path: Path, selection: str) -> None:
    """A slow codec (shazip) is decompressed once per file: its compression benchmark leaves the round-trip
    check to the decompression benchmark when that one runs, and checks itself otherwise."""
    (tmp_path / "fake_slow_codec.py").write_text(FAKE_SLOW_CODEC_PLUGIN)
    folder = make_corpus(tmp_path / "corpus", {"tiny.txt": tiny_text(500)})
    env = dict(os.environ, **{ENV_CORPUS: str(folder), "FAKE_CALLS": str(tmp_path / "calls.json")})
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")])
    command = [
        sys.executable, "-m", "pytest", "bench/test_codecs.py", "-q", "-p", "no:cacheprovider", "-p",
        "fake_slow_codec", "--benchmark-only", "-k", selection, "-rA",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    calls = json.loads((tmp_path / "calls.json").read_text())
    if selection == "fake-slow":  # both benchmarks: the decompression one catches the wrong output
        assert "PASSED bench/test_codecs.py::test_compress[tiny.txt-fake-slow]" in output
        assert "FAILED bench/test_codecs.py::test_decompress[tiny.txt-fake-slow]" in output
    else:  # only the compression benchmark: it checks the round trip itself
        assert "FAILED bench/test_codecs.py::test_compress[tiny.txt-fake-slow]" in output
    assert "round trip failed" in output
    assert calls == {"compress": 2, "decompress": 2}  # a 256-byte warm-up, then one call each


def test_levels_table_round_trips_and_reports_each_level(tmp_path: Path, capsys) -> None:
    from bench.levels import main as levels_main

    text = make_corpus(tmp_path, {"t.txt": tiny_text(4000)}) / "t.txt"
    assert levels_main([str(text), "--levels", "1", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| t.txt")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "2"]
    assert all(0 < float(row.split(" | ")[2]) < 8 for row in rows)
