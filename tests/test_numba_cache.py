"""shazip's numba cache is dropped when any compiled source changes (numba only watches each function's
own file, and shazip's compiled code calls across files: shazip/_numba_cache.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shazip import _numba_cache

pytest.importorskip("numba")


def test_a_changed_source_drops_every_shazip_cache_file(tmp_path: Path) -> None:
    names = [
        "_kernels.step_groups-9.py311.nbi",
        "_kernels.step_groups-9.py311.1.nbc",
        "crew._serve-1.py311.nbi",
    ]
    names += ["match._bucket-3.py311.1.nbc", "context_counts.bit_length-2.py311.nbi"]
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


def test_every_compiled_module_shares_one_checked_cache() -> None:
    # Importing the compiled modules leaves the current sources' stamp beside the cache they all use, and
    # the stamp covers every module with cached compiled code (a module missing from MODULES would keep
    # stale files).
    import inspect

    from shazip import _kernels, context_counts, crew, match

    modules = {m.__name__.rsplit(".", 1)[1]: m for m in (_kernels, context_counts, crew, match)}
    assert set(modules) == set(_numba_cache.MODULES)
    paths = set()
    package = Path(_kernels.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        if "cache=True" in source or '"cache": True' in source:
            assert path.stem in _numba_cache.MODULES, path.name
    for module in modules.values():
        for _, obj in inspect.getmembers(module):
            cache = getattr(obj, "_cache", None)
            if getattr(cache, "cache_path", None) is not None and obj.py_func.__module__ == module.__name__:
                paths.add(cache.cache_path)
    assert len(paths) == 1
    assert (Path(paths.pop()) / _numba_cache.STAMP_NAME).read_text() == _numba_cache.sources_digest()
