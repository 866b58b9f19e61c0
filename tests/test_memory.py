"""Bounded memory: peak RSS of `shazip compress | shazip decompress` stays flat as the stream grows.

Slow (minutes): run with `pytest -m slow tests/test_memory.py`. The same measurement for people:
`python -m bench.memory_check`."""

from __future__ import annotations

import pytest

from bench.memory_check import measure, model_args

pytestmark = pytest.mark.slow


def assert_flat(small, big) -> None:
    for attribute in ("rss_compress_mb", "rss_decompress_mb"):
        a, b = getattr(small, attribute), getattr(big, attribute)
        assert b <= a * 1.05 + 8, f"{attribute}: {a:.1f} MB at {small.size} bytes, {b:.1f} MB at {big.size}"


def test_stored_and_zstd_frames_memory_is_flat():
    small = measure("mixed", 30_000_000, ["--no-model"])
    big = measure("mixed", 300_000_000, ["--no-model"])
    assert big.compressed > 150_000_000  # half the stream is random: it really went through
    assert_flat(small, big)


def test_model_frames_memory_is_flat(fixture_model_path):
    args = model_args(str(fixture_model_path))
    small = measure("text", 32_000, args)
    big = measure("text", 160_000, args)  # 20 frames of 8 KiB through 8 lanes
    assert big.compressed < 160_000 * 0.6  # the model did the work
    assert_flat(small, big)


def peak_rss_mb(args: list[str], cwd) -> float:  # noqa: ANN001
    from tests.test_memory_limits import peak_rss_mb as measure_command

    code, rss, err = measure_command(args, cwd)
    assert code == 0, err
    return rss


def test_one_byte_frames_memory_stays_small(tmp_path):
    """400 kB in 1-byte frames (400,000 frames): compress, decompress, test and info each within 150 MB
    (before issue 18's fixes, frame lists made it 769, 892 MB; info -v and --json -v 266 and 617 MB)."""
    from tests.paths import sample_text

    (tmp_path / "a.txt").write_bytes(sample_text(400_000))
    limits = {
        ("compress", "-q", "--no-model", "--frame-size", "1", "a.txt"): 150,
        ("decompress", "-q", "-c", "a.txt.shz"): 150,
        ("test", "-q", "a.txt.shz"): 150,
        ("info", "a.txt.shz"): 150,
        ("info", "-v", "a.txt.shz"): 150,
        ("info", "--json", "-v", "a.txt.shz"): 150,
    }
    for args, limit in limits.items():
        rss = peak_rss_mb(list(args), tmp_path)
        assert rss <= limit, f"{' '.join(args)}: {rss:.0f} MB"


def test_decoding_stays_within_what_the_header_declares(tmp_path):
    """Peak RSS of decoding model frames <= memory_needed(header) + the program itself."""
    import io

    from shazip import runtime
    from shazip.format import read_header
    from shazip.modelfile import ModelFile, default_model_path
    from tests.paths import sample_text

    program_mb = 256  # the interpreter, numpy, numba's compiled code, zstd: about 200 MB on CPU
    (tmp_path / "t.txt").write_bytes(sample_text(40_000))
    peak_rss_mb(["compress", "-q", "--lanes", "4", "--frame-size", "20000", "t.txt"], tmp_path)
    header = read_header(io.BytesIO((tmp_path / "t.txt.shz").read_bytes()))
    need = runtime.memory_needed(header, ModelFile.load(default_model_path())).total / 2**20
    rss = peak_rss_mb(["decompress", "-q", "-c", "t.txt.shz"], tmp_path)
    assert rss <= need + program_mb, f"{rss:.0f} MB > {need:.0f} + {program_mb} MB"
