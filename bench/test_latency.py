"""pytest-benchmark view of bench/latency.py: whole `shazip` processes on small inputs.

pytest bench/test_latency.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.latency import cases, run_once


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    folder = tmp_path_factory.mktemp("latency")
    return folder, dict(cases(folder, 6))


@pytest.mark.parametrize(
    "label",
    ["shazip --version", "shazip info", "compress -6 2,000 B", "decompress 2,000 B", "compress -6 27,000 B"],
)
def test_latency(benchmark, commands, label: str) -> None:  # noqa: ANN001 - pytest fixtures
    folder, by_label = commands
    command = by_label[label]
    run_once(command, folder)  # (warm-up)
    benchmark.pedantic(run_once, args=(command, folder), rounds=3, iterations=1)
