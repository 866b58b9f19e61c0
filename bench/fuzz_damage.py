"""Damaged .shz files against the decoder: every one must be refused with one named error, never give a
wrong byte, a traceback or a hang (issue 18).

    python -m bench.fuzz_damage                  # 10,000+ damaged files in-process, 300 through the command
    python -m bench.fuzz_damage --cases 2000 --command-cases 50 --seed 7

Sources: a stored/zstd stream of many frames, model streams of the test fixture model (several lanes, CR LF
frames, stored frames between them) and of the embedded default model.
Damage: bit flips, byte overwrites, truncations, inserted and deleted bytes, frames swapped, dropped,
repeated or moved, and crafted edits whose checksums are recomputed so that they reach the checks behind
them (frame header fields, the stream header's lanes and frame size, payload bytes with their payload CRC).
In-process, each decode's output must be a prefix of the original (what a streaming reader may already
have passed on) and the error a ShazipError with a one-line message; through the command (`decompress -c`
and `-o`), exit 1 with one line on stderr, stdout a prefix of the original, and no output or temporary file
left behind. Prints the counts.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shazip.format import (
    FRAME_HEADER_SIZE,
    Footer,
    ShazipError,
    StreamHeader,
    block_crc,
    crc32,
    frame_headers,
    read_header,
)
from shazip.modelfile import default_model_path
from shazip.runtime import default_engine_factory, load_model
from shazip.stream import StreamDecoder, StreamEncoder

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "fixture.safetensors"
DEFAULT = default_model_path()
SAMPLE = REPO / "tests" / "data" / "sample.txt"


@dataclass
class Source:
    name: str
    data: bytes  # the original content
    packed: bytes  # its .shz stream
    model: object  # what decodes it (None: no model)
    model_path: Path | None  # the same, for the command
    share: float  # of the in-process cases


class Blocks:
    """A stream cut into its header, its frames (header + payload each) and its footer."""

    def __init__(self, packed: bytes) -> None:
        self.header = read_header(io.BytesIO(packed))
        position, self.frames = self.header.size, []
        for frame in frame_headers(io.BytesIO(packed)):
            end = position + FRAME_HEADER_SIZE + frame.coded_size
            self.frames.append(packed[position:end])
            position = end
        self.head, self.foot = packed[: self.header.size], packed[position:]

    def join(self, frames: list[bytes]) -> bytes:
        return self.head + b"".join(frames) + self.foot

    def offset_of(self, index: int) -> int:
        return len(self.head) + sum(map(len, self.frames[:index]))


def resign_frame(raw: bytes, index: int, offset: int) -> bytes:
    """A frame header (20 bytes of fields + CRC) with its CRC recomputed for its place."""
    return raw[:20] + struct.pack("<I", block_crc(raw[:20], index, offset)) + raw[24:]


def damage(source: Source, rng: np.random.Generator) -> tuple[str, bytes]:
    """(kind, damaged stream)."""
    packed = source.packed
    blocks = Blocks(packed)
    frames, n = blocks.frames, len(blocks.frames)
    kind = str(rng.choice(KINDS, p=WEIGHTS))
    out = bytearray(packed)
    if kind == "bit flip":
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    elif kind == "byte overwrite":
        for _ in range(int(rng.integers(1, 9))):
            out[int(rng.integers(len(out)))] = int(rng.integers(256))
    elif kind == "truncation":
        out = out[: int(rng.integers(len(out)))]
    elif kind == "insertion":
        at = int(rng.integers(len(out) + 1))
        out[at:at] = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
    elif kind == "deletion":
        at = int(rng.integers(len(out)))
        del out[at : at + int(rng.integers(1, 40))]
    elif kind in ("frame swap", "frame drop", "frame repeat", "frame move") and n >= 2:
        order = list(range(n))
        i, j = (int(v) for v in rng.choice(n, 2, replace=False))
        if kind == "frame swap":
            order[i], order[j] = order[j], order[i]
        elif kind == "frame drop":
            del order[i]
        elif kind == "frame repeat":
            order.insert(j, i)
        else:
            order.insert(j, order.pop(i))
        out = bytearray(blocks.join([frames[k] for k in order]))
    elif kind == "crafted frame field" and n:
        i = int(rng.integers(n))
        raw = bytearray(frames[i])
        field, size = [(0, 1), (1, 1), (2, 2), (4, 4), (8, 4)][int(rng.integers(5))]  # method .. coded size
        value = int(rng.choice([0, 1, 2, 3, 4, 0xFF, int(rng.integers(1 << (8 * size)))]))
        raw[field : field + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
        raw = bytearray(resign_frame(bytes(raw), i + 1, blocks.offset_of(i)))
        out = bytearray(blocks.join(frames[:i] + [bytes(raw)] + frames[i + 1 :]))
    elif kind == "crafted payload" and n:
        i = int(rng.integers(n))
        raw = bytearray(frames[i])
        if len(raw) > FRAME_HEADER_SIZE:
            for _ in range(int(rng.integers(1, 5))):
                raw[int(rng.integers(FRAME_HEADER_SIZE, len(raw)))] = int(rng.integers(256))
            raw[16:20] = struct.pack("<I", crc32(raw[FRAME_HEADER_SIZE:]))  # the payload's CRC, recomputed
            raw = bytearray(resign_frame(bytes(raw), i + 1, blocks.offset_of(i)))
        out = bytearray(blocks.join(frames[:i] + [bytes(raw)] + frames[i + 1 :]))
    elif kind == "crafted header":
        h = blocks.header
        lanes = int(rng.choice([1, 2, h.lanes + 1, 8192]))
        frame_size = int(rng.choice([1, 100, h.frame_size // 2 or 1, 64 << 20]))
        new = StreamHeader(lanes, frame_size, h.model_id, h.model_name, h.version).to_bytes()
        if len(new) == len(blocks.head):  # (same length: the frames' offsets stay right)
            out = bytearray(new + packed[len(new) :])
    elif kind == "crafted footer":
        footer = Footer(n + int(rng.integers(-1, 2)), len(source.data) + int(rng.integers(-2, 3)), bytes(16))
        out = bytearray(packed[: -len(blocks.foot)] + footer.to_bytes(len(packed) - len(blocks.foot), 2))
    return kind, bytes(out)


KINDS = [
    "bit flip",
    "byte overwrite",
    "truncation",
    "insertion",
    "deletion",
    "frame swap",
    "frame drop",
    "frame repeat",
    "frame move",
    "crafted frame field",
    "crafted payload",
    "crafted header",
    "crafted footer",
]
WEIGHTS = np.array([20, 8, 12, 5, 5, 8, 8, 6, 4, 10, 8, 3, 3], dtype=np.float64)
WEIGHTS /= WEIGHTS.sum()


def make_sources() -> tuple[list[Source], Callable]:
    rng = np.random.default_rng(0)
    text = SAMPLE.read_bytes()
    fixture = load_model(str(FIXTURE))
    default = load_model(None)
    engines: dict[int, object] = {}

    def factory(model: object, device: str, threads: int | None) -> object:  # one engine per model
        if id(model) not in engines:
            engines[id(model)] = default_engine_factory(model, device, threads)
        return engines[id(model)]

    def pack(data: bytes, model: object, **options: object) -> bytes:
        out = io.BytesIO()
        encoder = StreamEncoder(out, model, device="cpu", engine_factory=factory, **options)
        encoder.write(data)
        encoder.finish()
        return out.getvalue()

    plain = text[:30000] + rng.integers(0, 256, 20000, dtype=np.uint8).tobytes() + text[40000:60000]
    mixed = text[1000:2400] + rng.integers(0, 256, 500, dtype=np.uint8).tobytes() + text[5000:6000]
    crlf = text[9000:11000].replace(b"\n", b"\r\n")
    short = text[:1600]
    sources = [
        Source(
            "stored/zstd, 35 frames",
            plain,
            pack(plain, None, strategy="zstd", frame_size=2048),
            None,
            None,
            0.4,
        ),
        Source(
            "fixture model, 4 lanes",
            mixed,
            pack(mixed, fixture, lanes=4, frame_size=512),
            fixture,
            FIXTURE,
            0.3,
        ),
        Source(
            "fixture model, CR LF", crlf, pack(crlf, fixture, lanes=3, frame_size=700), fixture, FIXTURE, 0.1
        ),
        Source(
            "default model, 2 lanes",
            short,
            pack(short, default, lanes=2, frame_size=400),
            default,
            DEFAULT,
            0.12,
        ),
    ]
    for s in sources:
        assert decode(s, s.packed, factory)[0] == s.data, s.name
    return sources, factory


def decode(source: Source, packed: bytes, factory: Callable) -> tuple[bytes, BaseException | None]:
    """(what a streaming reader passed on, the error or None)."""
    decoder = StreamDecoder(io.BytesIO(packed), source.model, device="cpu", engine_factory=factory)
    written = bytearray()
    try:
        for raw in decoder.frames():
            written += raw
    except BaseException as e:  # noqa: BLE001 - anything but a ShazipError is what this looks for
        return bytes(written), e
    return bytes(written), None


def run_in_process(sources: list[Source], factory: Callable, cases: int, rng: np.random.Generator) -> dict:
    counts: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    problems: list[str] = []
    slowest = 0.0
    shares = np.array([s.share for s in sources])
    for _ in range(cases):
        source = sources[int(rng.choice(len(sources), p=shares / shares.sum()))]
        kind, damaged = damage(source, rng)
        kinds[kind] += 1
        started = time.monotonic()
        written, error = decode(source, damaged, factory)
        slowest = max(slowest, time.monotonic() - started)
        counts["files"] += 1
        if not source.data.startswith(written):
            if source.packed[8] == 1 and kind.startswith("frame "):
                # (version 1 does not bind a frame to its place: only the footer's hash, after the frames,
                # notices a reordering; version 2 exists for this)
                counts["version 1 frames out of order: bytes passed on before the content hash failed"] += 1
            else:
                counts["wrong bytes passed on"] += 1
                problems.append(f"{source.name}, {kind}: wrong bytes")
        if error is None:
            counts["decoded exactly" if written == source.data else "decoded to other bytes"] += 1
        elif isinstance(error, ShazipError) and str(error) and "\n" not in str(error):
            counts["refused with a named error"] += 1
            counts[f"  {type(error).__name__}"] += 1
        else:
            counts["other exception (a traceback)"] += 1
            problems.append(f"{source.name}, {kind}: {type(error).__name__}: {error}")
    return {"counts": counts, "kinds": kinds, "problems": problems, "slowest_s": slowest}


def run_command(sources: list[Source], cases: int, rng: np.random.Generator) -> dict:
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for case in range(cases):
            source = sources[case % len(sources)]
            kind, damaged = damage(source, rng)
            (work / "in.shz").write_bytes(damaged)
            model = [] if source.model_path is None else ["--model", str(source.model_path)]
            to_stdout = case % 2 == 0
            args = ["decompress", *model, "--device", "cpu", "in.shz"] + (
                ["-c"] if to_stdout else ["-o", "out"]
            )
            done = subprocess.run(
                [sys.executable, "-m", "shazip", *args], cwd=work, env=env, capture_output=True, timeout=300
            )
            counts["files"] += 1
            lines = done.stderr.decode(errors="replace").splitlines()
            output = (
                done.stdout
                if to_stdout
                else ((work / "out").read_bytes() if (work / "out").exists() else b"")
            )
            if b"Traceback" in done.stderr:
                counts["traceback"] += 1
                problems.append(f"{source.name}, {kind}: traceback")
            if done.returncode == 0:
                counts["exit 0, exact" if output == source.data else "exit 0, other bytes"] += 1
            elif done.returncode == 1 and len(lines) == 1 and lines[0].startswith("shazip: in.shz: "):
                counts["exit 1, one line"] += 1
            else:
                counts[f"exit {done.returncode}, {len(lines)} lines"] += 1
                problems.append(f"{source.name}, {kind}: exit {done.returncode}: {lines[-3:]}")
            if done.returncode != 0 and not source.data.startswith(output):
                if source.packed[8] == 1 and kind.startswith("frame "):
                    counts["version 1 frames out of order: bytes written before the content hash failed"] += 1
                else:
                    counts["wrong bytes written"] += 1
                    problems.append(f"{source.name}, {kind}: wrong bytes written")
            if done.returncode != 0 and not to_stdout and (work / "out").exists():
                counts["output left after an error"] += 1
                problems.append(f"{source.name}, {kind}: output left after an error")
            leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp")]
            if leftovers:
                counts["temporary files left"] += len(leftovers)
                problems.append(f"{source.name}, {kind}: temporary files left")
            (work / "out").unlink(missing_ok=True)
    return {"counts": counts, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000, help="damaged files decoded in-process")
    parser.add_argument("--command-cases", type=int, default=300, help="damaged files through `shazip`")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    sources, factory = make_sources()
    result = run_in_process(sources, factory, args.cases, rng)
    print(
        f"in-process: {args.cases} damaged files in {time.monotonic() - started:.0f} s "
        f"(slowest decode {result['slowest_s']:.2f} s)"
    )
    for kind, count in sorted(result["kinds"].items()):
        print(f"  {kind:22s} {count:6d}")
    for name, count in result["counts"].items():
        print(f"  {name:32s} {count:6d}")
    started = time.monotonic()
    command = run_command(sources, args.command_cases, rng)
    print(f"through the command: {args.command_cases} damaged files in {time.monotonic() - started:.0f} s")
    for name, count in command["counts"].items():
        print(f"  {name:32s} {count:6d}")
    problems = result["problems"] + command["problems"]
    for line in problems[:20]:
        print("PROBLEM", line)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
