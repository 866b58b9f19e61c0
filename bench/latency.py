"""Start-up and small-file latency of the `shazip` command: wall time and peak memory of whole processes.

    python -m bench.latency [--runs 5] [--level 6]

Each row runs one command several times (after one warm-up run, so numba's cache is filled) and prints
the median and the range of the wall time and the largest peak RSS. The texts are this repository's own
(tests/data/sample.txt): 2,000 and 27,000 bytes of English docs. `pytest bench/test_latency.py
--benchmark-only` times the same commands through pytest-benchmark.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "sample.txt"
SIZES = (2_000, 27_000)


def shazip_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shazip", *args]


def run_once(command: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one run of `command`, which must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss * 1024


def cases(folder: Path, level: int) -> list[tuple[str, list[str]]]:
    """(label, command) for each measured command; the input files are made in `folder`."""
    text = SAMPLE.read_bytes()
    rows: list[tuple[str, list[str]]] = [("shazip --version", shazip_command("--version"))]
    for size in SIZES:
        name = f"text{size}.txt"
        (folder / name).write_bytes(text[:size])
        subprocess.run(shazip_command("compress", "-f", "-q", f"-{level}", name), cwd=folder, check=True)
        rows.append(
            (f"compress -{level} {size:,} B", shazip_command("compress", "-f", "-q", f"-{level}", name))
        )
        rows.append((f"decompress {size:,} B", shazip_command("decompress", "-f", "-q", "-c", name + ".shz")))
    rows.insert(1, ("shazip info", shazip_command("info", f"text{SIZES[0]}.txt.shz")))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--level", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("| command | median s | min-max s | peak RSS MB |")
        print("|---|---:|---:|---:|")
        for label, command in cases(folder, args.level):
            run_once(command, folder)  # warm-up: numba's cache, the page cache
            results = [run_once(command, folder) for _ in range(args.runs)]
            walls = [w for w, _ in results]
            peak = max(r for _, r in results) / 1e6
            spread = f"{min(walls):.2f}-{max(walls):.2f}"
            print(f"| {label} | {statistics.median(walls):.2f} | {spread} | {peak:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
