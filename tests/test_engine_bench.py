"""The engine speed benchmark script runs (tiny config, a fraction of a second per cell)."""

from __future__ import annotations

import sys

import pytest


def test_engine_speed_script_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import engine_speed

    argv = [
        "engine_speed",
        "--config",
        "tiny",
        "--lanes",
        "1",
        "4",
        "--threads",
        "1",
        "--seconds",
        "0.05",
        "--best-of",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    engine_speed.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2].replace(",", "")) > 0 and float(cells[3].replace(",", "")) > 0
