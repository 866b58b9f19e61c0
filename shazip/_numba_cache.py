"""Keep numba's on-disk cache of shazip's compiled code in step with the sources.

numba reuses a cached compiled function for as long as the function's *own* source file is unchanged. It
does not notice a change in a compiled function that it calls from another file: with numba 0.68, a
cached g() in one module that calls f() from another keeps the old f() after f() is edited. shazip's
compiled code calls across its files (the helper threads' loop in engine/crew.py runs engine/kernels' step,
the in-file models use intmath's bit_length) and reads constants from others (engine/fixed_point.py), and
pip leaves numba's cache files behind when it replaces a package.
A stale copy on a helper thread would compute other integers than the fresh code on the calling thread:
tables the decoder cannot reproduce.

So the first of shazip's compiled modules imported in a process compares one stamp: a hash of all of
them and of the modules they take constants from, kept beside the cache (one per cache folder). When it
differs, shazip's cache files there are removed before any is loaded (numba loads them at a function's
first call, after the imports), and the new stamp is written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Every shazip module with cached compiled code, and every module such code takes constants from (paths
# below shazip/). Compiled modules' cache files start with the module's name.
MODULES = (
    "engine/kernels.py",
    "engine/crew.py",
    "engine/fixed_point.py",
    "intmath.py",
    "mixing/coder.py",
    "mixing/model.py",
    "mixing/tables.py",
)
STAMP_NAME = "shazip-numba-sources.stamp"
_checked: set[str] = set()


def sources_digest() -> str:
    """A hash of the compiled modules' sources (names and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    here = Path(__file__).resolve().parent
    for name in MODULES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def refresh(cache_dir: Path, digest: str) -> bool:
    """Remove shazip's numba cache files from cache_dir unless its stamp equals digest, then write the
    stamp. True if files were removed (or the stamp was missing or different)."""
    stamp = cache_dir / STAMP_NAME
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    names = {Path(m).stem for m in MODULES}
    for path in cache_dir.glob("*.nb[ci]"):
        if path.name.split(".", 1)[0] in names:
            path.unlink(missing_ok=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)  # (numba makes it at its first save, after this)
        stamp.write_text(digest)
    except OSError:  # (a read-only cache: numba cannot write there either)
        pass
    return True


def drop_stale(dispatcher: object) -> None:
    """Called by each compiled module after its cached functions are defined, with one of them: checks
    the cache directory they share once per process."""
    cache_path = getattr(getattr(dispatcher, "_cache", None), "cache_path", None)
    if cache_path is None or cache_path in _checked:
        return
    _checked.add(cache_path)
    refresh(Path(cache_path), sources_digest())
