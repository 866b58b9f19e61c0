"""The levels' trade-off curve: size, speed and peak memory of `shazip compress -N` / `decompress` per file.

    python -m bench.levels FILE [FILE ...] [--levels 1 2 3 4 5 6 7 8 9] [--threads 2] [--model PATH]

For each file and level one compression and one decompression run as whole processes (start-up
included, as a user sees it); the round trip is checked byte for byte. Prints a Markdown table of bits
per byte, bytes/s both ways and the larger peak RSS of the two. The README's "Levels" table is its output
on the first 1,000,000 bytes of the validation text and on alice29.txt.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shazip.levels import LEVELS


def run_measured(command: list[str], stdin: Path, stdout: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of `command < stdin > stdout`, which must succeed."""
    with stdin.open("rb") as source, stdout.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=source, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None
        raise RuntimeError(f"{' '.join(command)}: {process.stderr.read().decode(errors='replace').strip()}")
    return seconds, usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levels", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--levels", nargs="+", type=int, default=sorted(LEVELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)
    shazip = [sys.executable, "-m", "shazip"]
    options = ["-q", "-T", str(args.threads), *(["--model", str(args.model)] if args.model else [])]
    print("| file | level | bits/byte | compress B/s | decompress B/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        packed, restored = Path(tmp) / "packed.shz", Path(tmp) / "restored"
        for path in args.files:
            size = path.stat().st_size
            for level in args.levels:
                in_seconds, in_peak = run_measured([*shazip, "compress", f"-{level}", *options], path, packed)
                out_seconds, out_peak = run_measured([*shazip, "decompress", *options], packed, restored)
                if restored.read_bytes() != path.read_bytes():
                    raise RuntimeError(f"{path} at level {level}: the round trip differs")
                bits = 8 * packed.stat().st_size / size
                row = [path.name, str(level), f"{bits:.3f}", f"{size / in_seconds:,.0f}"]
                row += [f"{size / out_seconds:,.0f}", f"{max(in_peak, out_peak) / 1e6:.0f}"]
                print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
