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
