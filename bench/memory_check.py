"""Peak memory of `shazip compress | shazip decompress` as the stream grows: it must stay flat.

    python -m bench.memory_check                       # stored/zstd: 50 MB and 400 MB; model: 2 lengths
    python -m bench.memory_check --sizes-mb 20 200 --model-kb 0

Each measurement runs a pipeline of three processes: a generator (deterministic bytes), `shazip compress -c`
and `shazip decompress -c`; the output is hashed and compared with the generator's, and the peak RSS of
the two shazip processes is read from wait4(). Stored/zstd streams alternate random blocks (stored) with
compressible text blocks (zstd, with --no-model); model streams are text through the model with small
frames, so that many model frames pass through the lanes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 1 << 20
REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("SHAZIP_CORPUS", REPO.parent / "shared" / "corpus"))
TEXT_FILE = CORPUS / "valid" / "enwiki2015_plain_heldout.txt"


def text_block(n: int, offset: int) -> bytes:
    if TEXT_FILE.exists():
        with TEXT_FILE.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(offset % max(1, size - n))
            return f.read(n)
    words = [b"alpha ", b"beta ", b"gamma\n", b"delta ", b"epsilon, "]
    rng = np.random.default_rng(offset)
    return b"".join(words[i] for i in rng.integers(0, len(words), n // 5))[:n].ljust(n, b" ")


def generate(kind: str, size: int) -> Iterator[bytes]:
    """Deterministic test streams: 'mixed' (random and text blocks, 1 MiB each) or 'text'."""
    rng = np.random.default_rng(1234)
    produced = 0
    index = 0
    while produced < size:
        n = min(BLOCK, size - produced)
        if kind == "mixed" and index % 2 == 0:
            block = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        else:
            block = text_block(n, offset=index * 7919)
        yield block
        produced += n
        index += 1


@dataclass
class Measurement:
    kind: str
    size: int
    compressed: int
    rss_compress_mb: float
    rss_decompress_mb: float


def measure(kind: str, size: int, compress_args: list[str]) -> Measurement:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    shazip = [sys.executable, "-m", "shazip"]
    generator = subprocess.Popen(
        [sys.executable, "-m", "bench.memory_check", "--generate", kind, str(size)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    compressor = subprocess.Popen(
        [*shazip, "compress", "-c", "-q", *compress_args],
        stdin=generator.stdout,
        stdout=subprocess.PIPE,
        env=env,
    )
    counter = subprocess.Popen(  # counts the compressed bytes on their way to the decompressor
        [sys.executable, "-c", _COUNT],
        stdin=compressor.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    decompressor = subprocess.Popen(
        [*shazip, "decompress", "-c", "-q"] + _model_args(compress_args),
        stdin=counter.stdout,
        stdout=subprocess.PIPE,
        env=env,
    )
    for stream in (generator.stdout, compressor.stdout, counter.stdout):
        stream.close()  # the children hold them now
    digest = hashlib.sha256()
    while chunk := decompressor.stdout.read(BLOCK):
        digest.update(chunk)
    rss = {}
    for name, process in [("compress", compressor), ("decompress", decompressor)]:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise RuntimeError(f"shazip {name} failed with exit code {process.returncode}")
        rss[name] = usage.ru_maxrss / 1024  # KiB on Linux
    generator.wait()
    compressed = int(counter.communicate()[1] or 0)
    expected = hashlib.sha256()
    for block in generate(kind, size):
        expected.update(block)
    if digest.digest() != expected.digest():
        raise RuntimeError("round trip through the pipeline changed the data")
    return Measurement(kind, size, compressed, rss["compress"], rss["decompress"])


_COUNT = (
    "import sys\nn = 0\n"
    "while chunk := sys.stdin.buffer.read(1 << 20):\n    n += len(chunk); sys.stdout.buffer.write(chunk)\n"
    "sys.stdout.buffer.flush(); sys.stderr.write(str(n))"
)


def _model_args(compress_args: list[str]) -> list[str]:
    args = []
    for option in ("--model", "--device", "--threads"):
        if option in compress_args:
            args += [option, compress_args[compress_args.index(option) + 1]]
    return args


def model_args(model: str | None) -> list[str]:
    args = ["--lanes", "8", "--frame-size", "8192", "--device", "cpu", "--threads", "1"]
    return args + (["--model", model] if model else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generate", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes-mb", nargs="+", type=int, default=[50, 400], help="stored/zstd stream sizes")
    parser.add_argument("--model-kb", nargs="*", type=int, default=[64, 256], help="model stream sizes (KB)")
    parser.add_argument("--model", help="model file (default: the embedded model)")
    args = parser.parse_args()
    if args.generate:
        kind, size = args.generate
        for block in generate(kind, int(size)):
            sys.stdout.buffer.write(block)
        return
    print(f"{'stream':>8} {'size':>12} {'compressed':>12} {'peak RSS compress':>18} {'decompress':>11}")
    runs = [("mixed", mb * 1_000_000, ["--no-model"]) for mb in args.sizes_mb]
    runs += [("text", kb * 1000, model_args(args.model)) for kb in args.model_kb]
    for kind, size, compress_args in runs:
        m = measure(kind, size, compress_args)
        print(
            f"{m.kind:>8} {m.size:>12,} {m.compressed:>12,} {m.rss_compress_mb:>15.1f} MB "
            f"{m.rss_decompress_mb:>8.1f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
