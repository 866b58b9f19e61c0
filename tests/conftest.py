"""Shared pytest fixtures: a small trained model file and an engine on it (CPU)."""

from __future__ import annotations

import os
from pathlib import Path

# Before any test module imports torch: OpenMP threads that busy-wait collapse on a machine whose cores
# are taken by other work (docs/design.md, section 4); training.train sets this too, but only if it is
# imported first.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

FIXTURE_MODEL = Path(__file__).resolve().parent / "data" / "fixture.safetensors"
FIXTURE_FLOAT = Path(__file__).resolve().parent / "data" / "fixture_float.pt"


@pytest.fixture(scope="session")
def fixture_model_path() -> Path:
    """A small trained integer model file (made by `python -m tests.make_fixture_model`)."""
    return FIXTURE_MODEL


@pytest.fixture(scope="session", params=["one-block", "sixteen-blocks", "widest"])
def extreme_model_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained models at the ends of the documented limits (tests/make_fixture_model.py,
    EXTREME_CONFIGS), exported once per session."""
    from tests.make_fixture_model import make_extreme_model

    folder = tmp_path_factory.mktemp("models")
    return make_extreme_model(request.param, folder / f"{request.param}.safetensors")


@pytest.fixture(scope="session")
def fixture_engine(fixture_model_path: Path):  # noqa: ANN201 - avoid importing torch at collection time
    """An `Engine` on the fixture model, on CPU. Stateless between calls: safe to share."""
    from shazip.engine import Engine

    return Engine(fixture_model_path, device="cpu")
