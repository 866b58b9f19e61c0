"""Training data: corpus loading (plain, .xz, .gz, .zst; several files), enwik8, and the batch layout.

A corpus file may be given with a byte range of its (decompressed) contents, Python's slice notation:
`FILE[:-3000000]` is all but its last 3,000,000 bytes, `FILE[-3000000:]` those bytes alone. Training on
the one and validating on the other holds the tail out; a validation or test range that overlaps the
training bytes of the same file is refused.

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
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
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
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs the zstandard package") from None

        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True)
    if name.endswith(".zip"):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise DataError(
                f"{path}: a .zip corpus must hold exactly one file, this one holds {len(members)}"
            )
        return archive.open(members[0])
    return path.open("rb")


def _unreadable(path: Path, e: BaseException) -> DataError:
    """The one-line error for a file that cannot be read as a corpus."""
    if isinstance(e, FileNotFoundError):
        return DataError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return DataError(f"{path} is a folder, not a file")
    if isinstance(e, PermissionError):
        return DataError(f"{path}: permission denied")
    if isinstance(e, zipfile.BadZipFile):
        return DataError(f"{path}: not a readable zip archive ({e})")
    if isinstance(e, (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile)):
        return DataError(f"{path}: damaged or truncated ({type(e).__name__}: {e})".replace("\n", " "))
    return DataError(f"{path}: cannot be read ({type(e).__name__}: {e})".replace("\n", " "))


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The (decompressed) contents of one file, streamed in chunks; at most `limit` bytes.

    Every way a file can fail to read (missing, a folder, damaged or truncated compression, a zip that is
    not one) is a DataError naming the file.
    """
    path = Path(path)
    chunks = []
    total = 0
    try:
        with open_stream(path) as f:
            while limit is None or total < limit:
                want = 1 << 22 if limit is None else min(1 << 22, limit - total)
                chunk = f.read(want)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - decompressors raise many kinds; all mean "this file is bad"
        # zstandard's errors have no common base importable without the package.
        raise _unreadable(path, e) from None
    return b"".join(chunks)


def load_corpus(paths: list[str | Path], limit: int | None = None) -> np.ndarray:
    """All files' contents (or byte ranges: `FILE[a:b]`) concatenated, as a uint8 array (at most `limit`
    bytes in all)."""
    reader = SpecReader()
    parts = []
    total = 0
    for p in paths:
        view, _ = reader.read(parse_spec(str(p)), None if limit is None else limit - total)
        parts.append(view)
        total += len(view)
        if limit is not None and total >= limit:
            break
    data = np.frombuffer(b"".join(parts), dtype=np.uint8)
    if data.size == 0:
        raise DataError(f"no data in {', '.join(str(p) for p in paths)}")
    return data


# ---------------------------------------------------------------------------------------------------------
# File specs: FILE or FILE[start:stop]

_SLICE = re.compile(r"^(?P<path>.+)\[(?P<start>[-+]?[0-9_]*):(?P<stop>[-+]?[0-9_]*)\]$")


@dataclass(frozen=True)
class Spec:
    """A corpus file, or a byte range of its decompressed contents (Python slice semantics)."""

    path: Path
    start: int | None = None
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start is None and self.stop is None

    @property
    def slice_text(self) -> str:
        if self.whole:
            return ""
        return f"[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"

    @property
    def name(self) -> str:
        """File name and range: how logs and model cards name it."""
        return self.path.name + self.slice_text

    def resolved(self) -> str:
        """Absolute path and range: how checkpoints record it."""
        return str(self.path.resolve()) + self.slice_text

    def __str__(self) -> str:
        return str(self.path) + self.slice_text


def parse_spec(text: str) -> Spec:
    """`FILE` or `FILE[start:stop]` (a file whose name really ends in such brackets is taken whole)."""
    m = _SLICE.match(text)
    if m is None or Path(text).exists():
        return Spec(Path(text))
    bounds = []
    for key in ("start", "stop"):
        if m[key] == "":
            bounds.append(None)
            continue
        try:
            bounds.append(int(m[key]))
        except ValueError:
            raise DataError(
                f"{text}: a byte range is [start:stop], e.g. [-3000000:] or [:1_000_000]"
            ) from None
    return Spec(Path(m["path"]), bounds[0], bounds[1])


class SpecReader:
    """Reads specs, each file decompressed once however many ranges of it are asked for."""

    def __init__(self) -> None:
        self._whole: dict[Path, bytes] = {}

    def prefetch(self, specs: list[Spec]) -> None:
        """Decompress these files whole, in parallel (lzma, gzip and zstd release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        paths = {spec.path.resolve(): spec.path for spec in specs}
        todo = [(key, path) for key, path in paths.items() if key not in self._whole]
        if len(todo) < 2:
            return
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            for (key, _), data in zip(todo, pool.map(lambda kp: read_bytes(kp[1]), todo), strict=True):
                self._whole[key] = data

    def read(self, spec: Spec, limit: int | None = None) -> tuple[memoryview, tuple[int, int]]:
        """The spec's bytes (at most `limit`) and their [lo, hi) offsets in the file's contents."""
        negative = (spec.start or 0) < 0 or (spec.stop or 0) < 0
        key = spec.path.resolve()
        if key in self._whole or negative or limit is None:
            if key not in self._whole:
                self._whole[key] = read_bytes(spec.path)
            data = self._whole[key]
        else:  # only a prefix is needed: read no more of the file than that
            end = (spec.start or 0) + limit
            if spec.stop is not None:
                end = min(end, spec.stop)
            data = read_bytes(spec.path, end)
        lo, hi, _ = slice(spec.start, spec.stop).indices(len(data))
        if hi <= lo and limit != 0:
            raise DataError(f"{spec}: no bytes in that range (the file holds {len(data):,d})")
        if limit is not None:
            hi = max(lo, min(hi, lo + limit))
        return memoryview(data)[lo:hi], (lo, hi)


def read_spec(text: str, limit: int | None = None) -> bytes:
    """The bytes of `FILE` or `FILE[start:stop]`, at most `limit` of them."""
    view, _ = SpecReader().read(parse_spec(text), limit)
    return bytes(view)


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


class DownloadError(DataError):
    """enwik8 could not be downloaded (offline?): says where to put a copy instead."""


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
        if path.is_dir():
            for name in ("enwik8", "enwik8.zip"):
                if (path / name).is_file():
                    return path / name
            raise DataError(f"{path} is a folder without enwik8 or enwik8.zip in it")
        if not path.exists():
            raise DataError(f"{path}: no such file")
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
        raise DownloadError(
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
    valid: np.ndarray  # uint8: the main validation set (best checkpoint, early stopping)
    description: str
    files: list[str] = field(default_factory=list)  # where the bytes came from (recorded in checkpoints)
    valid_file: str | None = None  # the main validation file when it is a whole file; None: a range/tail
    valid_name: str = "valid"
    more_valid: dict[str, np.ndarray] = field(default_factory=dict)  # further sets, each logged apart
    test: dict[str, np.ndarray] = field(default_factory=dict)  # measured on the best weights at the end
    data_specs: list[str] = field(default_factory=list)  # absolute paths with their byte ranges
    valid_specs: list[str] = field(default_factory=list)

    def validation_sets(self) -> list[tuple[str, np.ndarray]]:
        return [(self.valid_name, self.valid), *self.more_valid.items()]


def _as_list(x: str | list[str] | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def _named(specs: list[Spec], arrays: list[np.ndarray], what: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for spec, arr in zip(specs, arrays, strict=True):
        name = spec.name if spec.name not in out else str(spec)
        if name in out:
            raise DataError(f"{what} {spec} is given twice")
        out[name] = arr
    return out


def _check_disjoint(
    train_ranges: list[tuple[Path, int, int]], held: list[tuple[Spec, Path, int, int]], what: str
) -> None:
    """Refuse validation/test bytes that are also training bytes (same file, overlapping ranges)."""
    for spec, path, lo, hi in held:
        for tpath, tlo, thi in train_ranges:
            if path == tpath and lo < thi and tlo < hi:
                hint = f" (train on '{path.name}[:{lo}]' to hold them out)" if tlo < lo else ""
                raise DataError(
                    f"{what} data {spec} overlaps the training data: bytes {max(lo, tlo):,d} to"
                    f" {min(hi, thi):,d} of {path.name} are in both{hint}"
                )


def load_train_valid(
    data_paths: list[str],
    valid_path: str | list[str] | None,
    valid_bytes: int | None = None,
    holdout_bytes: int = 1_000_000,
    train_limit: int | None = None,
    test_paths: str | list[str] | None = None,
) -> Corpus:
    """Training, validation and test bytes.

    - `--data enwik8` (a file named enwik8 or enwik8.zip): verified, standard split (train / valid / test;
      validation files given replace the split's validation part).
    - else the files' (or ranges') concatenation; validation is the given files/ranges (the first is the
      main one), or the last `holdout_bytes` of the data. Validation and test ranges must not overlap the
      training bytes.
    `valid_bytes` keeps only the first that many bytes of each validation set (cheaper evaluations);
    `train_limit` the first that many training bytes.
    """
    data_specs = [parse_spec(p) for p in data_paths]
    valid_specs = [parse_spec(p) for p in _as_list(valid_path)]
    test_specs = [parse_spec(p) for p in _as_list(test_paths)]
    reader = SpecReader()
    if train_limit is None and not any(is_enwik8_path(spec.path) for spec in data_specs):
        reader.prefetch([spec for spec in data_specs + valid_specs + test_specs if spec.path.is_file()])
    test: dict[str, np.ndarray] = {}
    train_ranges: list[tuple[Path, int, int]] = []
    if len(data_specs) == 1 and data_specs[0].whole and is_enwik8_path(data_specs[0].path):
        train, valid, test_part = split_enwik8(enwik8_bytes(data_specs[0].path))
        train_arr = np.frombuffer(train, dtype=np.uint8)
        valid_sets = {"enwik8 validation split": np.frombuffer(valid, dtype=np.uint8)}
        test = {"enwik8 test split": np.frombuffer(test_part, dtype=np.uint8)}
        desc = "enwik8 (standard split: 90M train / 5M valid)"
        if train_limit is not None:
            train_arr = train_arr[:train_limit]
        if valid_specs:  # explicit validation files win over the split's
            desc = "enwik8 (first 90M bytes)"
    else:
        parts = []
        total = 0
        for spec in data_specs:
            need = None if train_limit is None else train_limit - total
            if need is not None and need <= 0:
                break
            view, (lo, hi) = reader.read(spec, need)
            parts.append(view)
            train_ranges.append((spec.path.resolve(), lo, hi))
            total += len(view)
        train_arr = np.frombuffer(b"".join(parts), dtype=np.uint8)
        desc = " + ".join(spec.name for spec in data_specs)
        valid_sets = {}
        if not valid_specs:
            if holdout_bytes <= 0 or holdout_bytes > train_arr.size // 2:
                raise DataError(f"held-out tail of {holdout_bytes:,d} bytes does not fit {train_arr.size:,d}")
            valid_sets = {f"last {holdout_bytes:,d} bytes": train_arr[-holdout_bytes:]}
            train_arr = train_arr[:-holdout_bytes]
            desc += f" (last {holdout_bytes:,d} bytes held out)"
    if valid_specs:
        held = []
        arrays = []
        for spec in valid_specs:
            view, (lo, hi) = reader.read(spec)
            arrays.append(np.array(view, dtype=np.uint8))  # a copy: the file's buffer can go
            held.append((spec, spec.path.resolve(), lo, hi))
        _check_disjoint(train_ranges, held, "validation")
        valid_sets = _named(valid_specs, arrays, "validation")
    if test_specs:
        held = []
        arrays = []
        for spec in test_specs:
            view, (lo, hi) = reader.read(spec)
            arrays.append(np.array(view, dtype=np.uint8))
            held.append((spec, spec.path.resolve(), lo, hi))
        _check_disjoint(train_ranges, held, "test")
        test = _named(test_specs, arrays, "test")
    if train_arr.size == 0:
        raise DataError(f"no training data in {', '.join(str(s) for s in data_specs)}")
    if valid_bytes is not None:
        valid_sets = {name: arr[:valid_bytes] for name, arr in valid_sets.items()}
    (valid_name, valid_arr), *more = valid_sets.items()
    first_valid = valid_specs[0] if valid_specs else None
    return Corpus(
        train=train_arr,
        valid=valid_arr,
        description=desc,
        files=[str(spec.path.resolve()) for spec in data_specs],
        valid_file=str(first_valid.path.resolve()) if first_valid and first_valid.whole else None,
        valid_name=valid_name,
        more_valid=dict(more),
        test=test,
        data_specs=[spec.resolved() for spec in data_specs],
        valid_specs=[spec.resolved() for spec in valid_specs],
    )


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
    except DownloadError as e:  # the network, not the input: not a usage error
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
