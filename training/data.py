"""Training data: corpus loading (plain, .xz, .gz, .zst; several files), enwik8, and the batch layout.

The paper's pipeline (AWD-LSTM / SHA-RNN "batchify"): the training bytes are cut into `batch` contiguous
streams; each step takes the next bptt-long window of every stream, and the model's state (LSTM and
attention memory) is carried from one window to the next, so every stream is read once per epoch in order.

    python -m training.data enwik8 [--path FILE] [--out DIR]   verify (or download) enwik8 and split it
    python -m training.data info FILE...                       sizes and sha256 of corpus files
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import lzma
import math
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------------------
# Reading corpora


def open_stream(path: str | Path) -> io.BufferedIOBase:
    """A binary stream of the file's *contents*: .xz/.lzma, .gz and .zst are decompressed on the fly."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".xz", ".lzma")):
        return lzma.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)
    if name.endswith(".zip"):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise ValueError(f"{path}: a .zip corpus must hold exactly one file, found {len(members)}")
        return archive.open(members[0])
    return path.open("rb")


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The (decompressed) contents of one file, streamed in chunks; at most `limit` bytes."""
    chunks = []
    total = 0
    with open_stream(path) as f:
        while limit is None or total < limit:
            want = 1 << 22 if limit is None else min(1 << 22, limit - total)
            chunk = f.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


def load_corpus(paths: list[str | Path], limit: int | None = None) -> np.ndarray:
    """All files' contents concatenated, as a uint8 array (at most `limit` bytes in all)."""
    parts = []
    total = 0
    for p in paths:
        part = read_bytes(p, None if limit is None else limit - total)
        parts.append(part)
        total += len(part)
        if limit is not None and total >= limit:
            break
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"no data in {[str(p) for p in paths]}")
    return data


# ---------------------------------------------------------------------------------------------------------
# enwik8

ENWIK8_SIZE = 100_000_000
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)  # train, valid, test
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
# The hashes of the unpacked enwik8 as Matt Mahoney publishes them with the Hutter Prize data
# (mattmahoney.net/dc/textdata.html: "MD5 (GNU md5sum 1.22) a1fa5ffddb56f4953e226637dabbb36a, SHA-1
# 57b8363b814821dc9d47aa4d41f58733519076b2"). The SHA-256 below is the one that dozens of public projects
# pin for the same file. The zip archive itself is not checked: mirrors repack it.
ENWIK8_HASHES: dict[str, str] = {
    "sha1": "57b8363b814821dc9d47aa4d41f58733519076b2",
    "md5": "a1fa5ffddb56f4953e226637dabbb36a",
    "sha256": "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
}


class DataError(Exception):
    """A corpus problem the user can fix (missing file, wrong size or hash): printed without traceback."""


def enwik8_bytes(path: str | Path) -> bytes:
    """Read enwik8 (plain or enwik8.zip) and check its size and hash."""
    data = read_bytes(path)
    check_enwik8(data, str(path))
    return data


def check_enwik8(data: bytes, where: str = "enwik8") -> None:
    """Raise DataError unless `data` is enwik8: its size first (cheap), then every published hash."""
    if len(data) != ENWIK8_SIZE:
        raise DataError(f"{where}: {len(data):,d} bytes, but enwik8 has {ENWIK8_SIZE:,d}")
    for algorithm, expected in ENWIK8_HASHES.items():
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected:
            raise DataError(
                f"{where}: {algorithm} {actual} is not enwik8's {expected} (damaged or another file)"
            )


def split_enwik8(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The standard split: first 90,000,000 bytes train, next 5,000,000 valid, last 5,000,000 test."""
    n_train, n_valid, n_test = ENWIK8_SPLIT
    assert len(data) == n_train + n_valid + n_test
    return data[:n_train], data[n_train : n_train + n_valid], data[n_train + n_valid :]


def find_or_download_enwik8(path: str | Path | None, download_dir: Path) -> Path:
    """The given file, else enwik8 / enwik8.zip in `download_dir`, else a download into it."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path} does not exist")
        return path
    for name in ("enwik8", "enwik8.zip"):
        if (download_dir / name).exists():
            return download_dir / name
    target = download_dir / "enwik8.zip"
    download_dir.mkdir(parents=True, exist_ok=True)
    print(f"downloading {ENWIK8_URL} ...", file=sys.stderr)
    tmp = target.with_suffix(".zip.part")
    try:
        with urllib.request.urlopen(ENWIK8_URL, timeout=30) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"could not download enwik8 ({e}). Offline? Get enwik8.zip from {ENWIK8_URL} (the Hutter Prize "
            f"data) on a connected machine and put it (or the unzipped enwik8) at {download_dir}/, or pass "
            "--path FILE."
        ) from e
    tmp.replace(target)
    return target


def prepare_enwik8(path: str | Path | None, out_dir: str | Path) -> dict[str, Path]:
    """Verify enwik8 and write out_dir/{train,valid,test}.bin. Returns the three paths."""
    out_dir = Path(out_dir)
    source = find_or_download_enwik8(path, out_dir)
    data = enwik8_bytes(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in zip(("train", "valid", "test"), split_enwik8(data), strict=True):
        target = out_dir / f"{name}.bin"
        tmp = target.with_suffix(".bin.tmp")
        tmp.write_bytes(part)
        tmp.replace(target)
        paths[name] = target
    return paths


def is_enwik8_path(path: str | Path) -> bool:
    return Path(path).name in ("enwik8", "enwik8.zip")


# ---------------------------------------------------------------------------------------------------------
# Train / validation data


@dataclass
class Corpus:
    train: np.ndarray  # uint8
    valid: np.ndarray  # uint8
    description: str
    files: list[str] = field(default_factory=list)  # where the bytes came from (recorded in checkpoints)
    valid_file: str | None = None  # None: a held-out tail of `files`


def load_train_valid(
    data_paths: list[str],
    valid_path: str | None,
    valid_bytes: int | None = None,
    holdout_bytes: int = 1_000_000,
    train_limit: int | None = None,
) -> Corpus:
    """Training and validation bytes.

    - `--data enwik8` (a file named enwik8 or enwik8.zip): verified, standard split (train / valid;
      `valid_path` replaces the split's validation part if given).
    - else the files' concatenation; validation is `valid_path`, or the last `holdout_bytes` of the data.
    `valid_bytes` keeps only the first that many validation bytes (cheaper evaluations).
    """
    if len(data_paths) == 1 and is_enwik8_path(data_paths[0]):
        train, valid, _ = split_enwik8(enwik8_bytes(data_paths[0]))
        train_arr = np.frombuffer(train, dtype=np.uint8)
        valid_arr = np.frombuffer(valid, dtype=np.uint8)
        desc = "enwik8 (standard split: 90M train / 5M valid)"
        if valid_path is not None:  # an explicit validation file wins over the split's
            valid_arr = load_corpus([valid_path])
            desc = "enwik8 (first 90M bytes)"
    else:
        train_arr = load_corpus(data_paths, train_limit)
        desc = " + ".join(Path(p).name for p in data_paths)
        if valid_path is not None:
            valid_arr = load_corpus([valid_path])
        else:
            if holdout_bytes <= 0 or holdout_bytes > train_arr.size // 2:
                raise DataError(f"held-out tail of {holdout_bytes:,d} bytes does not fit {train_arr.size:,d}")
            train_arr, valid_arr = train_arr[:-holdout_bytes], train_arr[-holdout_bytes:]
            desc += f" (last {holdout_bytes:,d} bytes held out)"
    if train_limit is not None:
        train_arr = train_arr[:train_limit]
    if valid_bytes is not None:
        valid_arr = valid_arr[:valid_bytes]
    files = [str(Path(p).resolve()) for p in data_paths]
    valid_file = str(Path(valid_path).resolve()) if valid_path is not None else None
    return Corpus(train=train_arr, valid=valid_arr, description=desc, files=files, valid_file=valid_file)


class StreamBatches:
    """`n_streams` contiguous streams over `data`; windows are read from a shared position.

    Stream i covers data[i*L : (i+1)*L] with L = len(data) // n_streams (the remainder is dropped, as in
    batchify). A window of length T at position p is x = stream[p : p+T], y = stream[p+1 : p+T+1].
    `rows` selects which streams this process sees (data-parallel ranks take disjoint rows).
    """

    def __init__(self, data: np.ndarray, n_streams: int, rows: slice | None = None) -> None:
        length = data.size // n_streams
        if length < 2:
            raise DataError(f"{data.size:,d} bytes is too little data for {n_streams} streams")
        # A private copy: torch wants a writable array, and the corpus buffer (from bytes) is read-only.
        self.streams = torch.from_numpy(np.array(data[: length * n_streams]).reshape(n_streams, -1))
        if rows is not None:
            self.streams = self.streams[rows]
        self.length = length

    def window(self, position: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The window at `position`, shortened at the end of the streams; None when nothing is left."""
        t = min(bptt, self.length - 1 - position)
        if t <= 0:
            return None
        chunk = self.streams[:, position : position + t + 1].long()
        return chunk[:, :-1], chunk[:, 1:]

    def windows(self, bptt: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        position = start
        while (w := self.window(position, bptt)) is not None:
            yield position, w[0], w[1]
            position += w[0].shape[1]


def jittered_bptt(seed: int, step: int, bptt: int, jitter: bool, min_bptt: int = 8) -> int:
    """The window length for `step`: the paper's jitter (95%: N(bptt, 5), 5%: N(bptt/2, 5)).

    Drawn from a generator seeded by (seed, step) rather than a running one, so resuming needs no state.
    """
    if not jitter:
        return bptt
    rng = np.random.default_rng([seed, step, 0xB977])
    base = bptt if rng.random() < 0.95 else bptt / 2
    return max(min_bptt, int(math.floor(rng.normal(base, 5))))


# ---------------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_enwik8 = sub.add_parser("enwik8", help="verify (or download) enwik8 and write the standard split")
    p_enwik8.add_argument(
        "--path", help="a local enwik8 or enwik8.zip (default: look in / download to --out)"
    )
    p_enwik8.add_argument("--out", default="data/enwik8", help="where train.bin / valid.bin / test.bin go")
    p_info = sub.add_parser("info", help="decompressed size and sha256 of corpus files")
    p_info.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "enwik8":
            paths = prepare_enwik8(args.path, args.out)
            for name, p in paths.items():
                print(f"{name:5s} {p.stat().st_size:>12,d} bytes  {p}")
            print(
                f"train with: python -m training.train --config enwik8 --data {paths['train']} "
                f"--valid {paths['valid']} --out runs/enwik8"
            )
        else:
            for f in args.files:
                data = read_bytes(f)
                print(f"{len(data):>14,d} bytes  sha256 {hashlib.sha256(data).hexdigest()}  {f}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
