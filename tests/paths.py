"""Text the tests read.

`SAMPLE_TEXT` ships with the tests (tests/data/sample.txt: 260 kB of this project's own English docs and
Python source), so the suite runs from a clone alone. The shared corpus (validation text, benchmark files)
is read in place, never copied into the repository: from $SHAZIP_CORPUS, else ../shared/corpus beside the
checkout; tests that need it are marked `needs_corpus` and skip without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_TEXT = Path(__file__).resolve().parent / "data" / "sample.txt"
CORPUS = Path(os.environ.get("SHAZIP_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
VALID_TEXT = CORPUS / "valid" / "enwiki2015_plain_heldout.txt"

needs_corpus = pytest.mark.skipif(
    not VALID_TEXT.is_file(), reason=f"needs the shared corpus ({CORPUS}; set SHAZIP_CORPUS)"
)


def sample_text(n: int, offset: int = 0) -> bytes:
    """n bytes of the shipped sample from `offset` (wrapping around at its end)."""
    data = SAMPLE_TEXT.read_bytes()
    offset %= len(data)
    out = data[offset : offset + n]
    while len(out) < n:
        out += data[: n - len(out)]
    return out


def command_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m shazip` in another folder: this checkout's shazip first on the path
    (an installed copy elsewhere would otherwise answer), one OpenMP thread."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, **extra)
