"""Which files the benchmark runs on.

A folder named by `SHAZIP_BENCH_CORPUS` (every non-empty, non-hidden file in it, subfolders included, is a
case). Without it, the Canterbury corpus: downloaded once from its official site into a cache and
checked file by file against the sizes and SHA-256 sums recorded below. Offline, `CorpusUnavailable`
says how to point the benchmark at a folder instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_CORPUS = "SHAZIP_BENCH_CORPUS"
ENV_CACHE = "SHAZIP_BENCH_CACHE"

CANTERBURY_URL = "https://corpus.canterbury.ac.nz/resources/cantrbry.tar.gz"
# The archive itself: sha256 f140e8a5b73d3f53198555a63bfb827889394a42f20825df33c810c3d5e3f8fb (as recorded by
# distributions that package it). We check the files inside rather than the archive, so that a repacked
# archive with the same contents still verifies.
CANTERBURY_FILES: dict[str, tuple[int, str]] = {
    "alice29.txt": (152089, "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0"),
    "asyoulik.txt": (125179, "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc"),
    "cp.html": (24603, "e0cd21cef5b6c4069461e949be100080c3ce887de6f1dd8626c480528efaaf61"),
    "fields.c": (11150, "85d73e354cc50cec76cb5a50537cf8dc035f8cbb8480f9e1cbe2f7d6c23393c7"),
    "grammar.lsp": (3721, "1b0805dfc0ae706b35aac2bb4e15f02485efd24dda5dbd29de7b2f84d1a88c15"),
    "kennedy.xls": (1029744, "9af47239ca29dfe20e633f80bbbb9a4cc9783d0803d7b2b5626f42e4c3790420"),
    "lcet10.txt": (426754, "5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f"),
    "plrabn12.txt": (481861, "07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c"),
    "ptt5": (513216, "0ec3a75089bb52342813496b17e51377bc9eba3cb519a444d67025354841d650"),
    "sum": (38240, "ee5733cd76ecc2f9d8ff156adc3c02a7a851051dcf43a2d56ff4ee4ff606bdb3"),
    "xargs.1": (4227, "c58aeb5d2d1e12751d47e7412b45784405fc30a5671b03d480fa05776e183619"),
}

# The quick selection: one file of each kind in the Canterbury corpus (English text, HTML, C source,
# spreadsheet, fax image, man page), truncated to QUICK_MAX_BYTES, so that shazip (tens of kB/s on a
# laptop CPU) finishes in a few minutes. Corpora without these names get QUICK_COUNT files spread over
# their (sorted) list instead.
QUICK_FILES = ("alice29.txt", "cp.html", "fields.c", "kennedy.xls", "ptt5", "xargs.1")
QUICK_COUNT = len(QUICK_FILES)
QUICK_MAX_BYTES = 64 * 1024

Downloader = Callable[[str, Path], None]


class CorpusUnavailable(RuntimeError):
    """No corpus to benchmark; the message says what to do."""


@dataclass(frozen=True)
class Case:
    """One file of the corpus."""

    name: str  # path relative to the corpus folder, with '/' separators: the benchmark's id
    path: Path
    size: int

    def read(self, max_bytes: int | None = None) -> bytes:
        """The file's bytes, or its first `max_bytes` bytes (None or 0: all of them)."""
        with self.path.open("rb") as handle:
            return handle.read(max_bytes) if max_bytes else handle.read()


def cases_in_folder(folder: Path) -> list[Case]:
    """Every non-empty regular file under `folder` (recursively; hidden files and folders left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusUnavailable(f"{ENV_CORPUS}={folder}: not a folder")
    cases = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        size = path.stat().st_size
        if size:
            cases.append(Case(relative.as_posix(), path, size))
    if not cases:
        raise CorpusUnavailable(f"{ENV_CORPUS}={folder}: the folder holds no (non-empty) files")
    return cases


def quick_selection(cases: list[Case]) -> list[Case]:
    """The quick default: the QUICK_FILES present in the corpus, or else QUICK_COUNT evenly spread files."""
    by_file_name = [c for c in cases if c.path.name in QUICK_FILES]
    chosen: list[Case] = []
    for name in QUICK_FILES:  # the first of each name, in QUICK_FILES order
        chosen += [c for c in by_file_name if c.path.name == name][:1]
    if chosen:
        return chosen
    if len(cases) <= QUICK_COUNT:
        return list(cases)
    step = len(cases) / QUICK_COUNT
    return [cases[int(i * step)] for i in range(QUICK_COUNT)]


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """`SHAZIP_BENCH_CACHE`, else `$XDG_CACHE_HOME/shazip/bench`, else `~/.cache/shazip/bench`."""
    if environ.get(ENV_CACHE):
        return Path(environ[ENV_CACHE])
    base = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "shazip" / "bench"


def locate_corpus(
    environ: Mapping[str, str] = os.environ, download: Downloader | None = None
) -> tuple[Path, str]:
    """The corpus folder and a one-line description of where it came from."""
    folder = environ.get(ENV_CORPUS)
    if folder:
        return Path(folder), f"{ENV_CORPUS}={folder}"
    cache = default_cache_dir(environ)
    return fetch_canterbury(cache, download=download), f"Canterbury corpus (cached in {cache})"


def fetch_canterbury(
    cache_dir: Path,
    download: Downloader | None = None,
    url: str = CANTERBURY_URL,
    expected: Mapping[str, tuple[int, str]] = CANTERBURY_FILES,
) -> Path:
    """The folder `cache_dir/canterbury`, downloading and verifying the corpus the first time.

    A cached copy is re-verified on every call (2.8 MB of SHA-256: milliseconds). Nothing is left in the
    cache unless every expected file has the right size and checksum.
    """
    target = Path(cache_dir) / "canterbury"
    if target.is_dir() and not _problems(target, expected):
        return target
    download = download or _download_url
    archive = Path(cache_dir) / "cantrbry.tar.gz.partial"
    archive.parent.mkdir(parents=True, exist_ok=True)
    try:
        download(url, archive)
    except (urllib.error.URLError, OSError) as error:
        archive.unlink(missing_ok=True)
        raise CorpusUnavailable(_offline_message(url, error, target)) from error
    try:
        unpacked = target.with_name("canterbury.partial")
        shutil.rmtree(unpacked, ignore_errors=True)
        _unpack_verified(archive, unpacked, expected)
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(target.with_name("canterbury.partial"), ignore_errors=True)
    return target


def _download_url(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, destination.open("wb") as out:
        shutil.copyfileobj(response, out)


def _unpack_verified(archive: Path, folder: Path, expected: Mapping[str, tuple[int, str]]) -> None:
    """Write the expected files from the archive into `folder`; raise CorpusUnavailable on any mismatch."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            # Members are looked up by their base name and written under our own names: no path from
            # the archive is ever used to write (no traversal), and unexpected members are ignored.
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            contents = {}
            for name in expected:
                member = members.get(name)
                source = tar.extractfile(member) if member is not None else None
                contents[name] = source.read() if source is not None else None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise CorpusUnavailable(f"the downloaded Canterbury archive is unreadable: {error}") from error
    problems = [_problem(name, data, expected[name]) for name, data in contents.items()]
    problems = [p for p in problems if p]
    if problems:
        raise CorpusUnavailable(
            "the downloaded Canterbury corpus failed verification: " + "; ".join(problems)
        )
    folder.mkdir(parents=True)
    for name, data in contents.items():
        (folder / name).write_bytes(data)


def _problems(folder: Path, expected: Mapping[str, tuple[int, str]]) -> list[str]:
    problems = []
    for name, want in expected.items():
        path = folder / name
        data = path.read_bytes() if path.is_file() else None
        problem = _problem(name, data, want)
        if problem:
            problems.append(problem)
    return problems


def _problem(name: str, data: bytes | None, want: tuple[int, str]) -> str | None:
    size, sha256 = want
    if data is None:
        return f"{name} is missing"
    if len(data) != size:
        return f"{name} has {len(data)} bytes, expected {size}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"{name} has the wrong SHA-256"
    return None


def _offline_message(url: str, error: BaseException, target: Path) -> str:
    reason = getattr(error, "reason", None) or error
    return (
        f"No benchmark corpus: {ENV_CORPUS} is not set and downloading the Canterbury corpus from {url} "
        f"failed ({reason}).\n"
        f"Point the benchmark at a folder (every file in it, subfolders included, becomes a case):\n"
        f"    {ENV_CORPUS}=/path/to/folder pytest bench/ --benchmark-only\n"
        f"or unpack cantrbry.tar.gz into {target} (its files are checked against their SHA-256 sums)."
    )
