"""shazip's numba cache is dropped when any compiled source changes (numba only watches each function's
own file, and shazip's compiled code calls across files: shazip/_numba_cache.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from shazip import _numba_cache

pytest.importorskip("numba")

PACKAGE = Path(_numba_cache.__file__).resolve().parent


def test_a_changed_source_drops_every_shazip_cache_file(tmp_path: Path) -> None:
    names = [
        "kernels.step_groups-9.py311.nbi",
        "kernels.step_groups-9.py311.1.nbc",
        "crew._serve-1.py311.nbi",
    ]
    names += ["intmath.bit_length-2.py311.nbi"]
    for name in names + ["other.f-1.py311.nbi", "notes.txt"]:
        (tmp_path / name).write_text("x")
    (tmp_path / _numba_cache.STAMP_NAME).write_text("old sources")
    assert _numba_cache.refresh(tmp_path, "new sources")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["other.f-1.py311.nbi", "notes.txt", _numba_cache.STAMP_NAME])  # (not ours: kept)
    assert (tmp_path / _numba_cache.STAMP_NAME).read_text() == "new sources"
    # unchanged sources: what was compiled since stays
    (tmp_path / names[0]).write_text("x")
    assert not _numba_cache.refresh(tmp_path, "new sources")
    assert (tmp_path / names[0]).exists()


def test_a_missing_stamp_counts_as_changed(tmp_path: Path) -> None:
    (tmp_path / "crew._serve-1.py311.nbi").write_text("x")
    assert _numba_cache.refresh(tmp_path, "sources")
    assert not (tmp_path / "crew._serve-1.py311.nbi").exists()
    assert _numba_cache.refresh(tmp_path / "not yet made", "sources")  # (numba makes the directory later)
    assert (tmp_path / "not yet made" / _numba_cache.STAMP_NAME).read_text() == "sources"


def test_every_compiled_module_is_covered_and_its_cache_checked() -> None:
    # Every module with cached compiled code is in MODULES (one missing would keep stale files), and
    # importing the compiled modules leaves the current sources' stamp beside each cache they use.
    paths = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if "cache=True" not in source and '"cache": True' not in source:
            continue
        relative = path.relative_to(PACKAGE).as_posix()
        assert relative in _numba_cache.MODULES, relative
        module = importlib.import_module("shazip." + relative[:-3].replace("/", "."))
        for obj in vars(module).values():
            cache = getattr(obj, "_cache", None)
            if getattr(cache, "cache_path", None) is not None and obj.py_func.__module__ == module.__name__:
                paths.add(cache.cache_path)
    assert paths
    for path in paths:
        assert (Path(path) / _numba_cache.STAMP_NAME).read_text() == _numba_cache.sources_digest()


def test_modules_that_compiled_code_reads_constants_from_are_covered() -> None:
    # numba freezes imported constants into compiled code: a change there must drop the cache too.
    assert "engine/fixed_point.py" in _numba_cache.MODULES
