"""The golden corpus (tests/data/golden/, written by tests/make_golden.py): the format's promise that every
file once written decodes, made mechanical.

- Every golden file decodes to its recorded content: a decoder change that breaks old files fails here.
- Every method and version this shazip reads has a golden file: a new version cannot land without one.
- Every method's encoder still writes its golden file byte for byte: a change to what a method writes
  must come as a new version (docs/format.md, "Method versions"), with a new golden file beside the old.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest

import shazip
from shazip.format import frame_headers
from shazip.frames import METHODS
from tests.make_golden import CASES, FIXTURE, GOLDEN, golden_stream, inputs

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())


def changed_without_a_version(name: str, written: bytes) -> str | None:
    """Why `written` (a case's stream as this shazip's encoder makes it) breaks the versioning rule, or
    None. The golden file stays what it was; a method whose output changed needs a new version."""
    golden = (GOLDEN / f"{name}.shz").read_bytes()
    if written == golden:
        return None
    return (
        f"{MANIFEST[name]['method']} now writes other bytes for golden case {name!r}: a change to a method's "
        "output is a new method version (docs/format.md, 'Method versions'); keep this file and its decoder, "
        "and add the new version's case with `python -m tests.make_golden`"
    )


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_file_decodes_to_its_content(name):
    entry = MANIFEST[name]
    packed = (GOLDEN / f"{name}.shz").read_bytes()
    assert hashlib.sha256(packed).hexdigest() == entry["sha256"]  # (the file itself is never rewritten)
    model = str(FIXTURE) if entry["model"] == "fixture" else None
    raw = shazip.decompress(packed, model=model, device="cpu")
    assert len(raw) == entry["raw_size"] and hashlib.sha256(raw).hexdigest() == entry["raw_sha256"]
    assert {f.label for f in frame_headers(io.BytesIO(packed))} == {entry["method"]}


def test_every_method_and_version_read_has_a_golden_file():
    covered = {entry["method"] for entry in MANIFEST.values()}
    missing = sorted(m.label for m in METHODS.values() if m.label not in covered)
    assert not missing, f"no golden file for {missing}: run `python -m tests.make_golden`"
    assert set(CASES) == set(MANIFEST), "tests/make_golden.py and the manifest disagree"


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_method_still_writes_its_golden_file(name):
    raw, written = golden_stream(name)
    assert hashlib.sha256(raw).hexdigest() == MANIFEST[name]["raw_sha256"], "a golden input changed"
    problem = changed_without_a_version(name, written)
    assert problem is None, problem


def test_the_versioning_check_fails_when_a_payload_changes():
    name = "cm-v1-text"
    written = bytearray((GOLDEN / f"{name}.shz").read_bytes())
    assert changed_without_a_version(name, bytes(written)) is None
    written[100] ^= 1
    assert "new method version" in changed_without_a_version(name, bytes(written))
    assert len(inputs()) == len({entry["input"] for entry in MANIFEST.values()})
