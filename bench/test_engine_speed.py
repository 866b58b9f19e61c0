"""pytest-benchmark view of bench/engine_speed.py: one engine step vs one float32 eager step.

    pytest bench/test_engine_speed.py --benchmark-only

The `small` config (2 blocks, d = 256, 256-state window) at 64 lanes, with whatever thread count torch
has; `python -m bench.engine_speed` prints the full lanes x threads table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.engine_speed import sample_text
from shazip.config import CONFIGS
from shazip.engine import Engine
from training.model import SHARNN
from training.quantise import export_model

LANES = 64


@pytest.fixture(scope="module")
def small() -> tuple[SHARNN, Engine, np.ndarray]:
    torch.manual_seed(0)
    model = SHARNN(CONFIGS["small"]).eval()
    text = sample_text(1 << 18)
    mf = export_model(model, None, calibration=text[:65536], name="bench-small", card={})
    return model, Engine(mf), np.frombuffer(text, dtype=np.uint8)


def test_integer_engine_step(benchmark, small) -> None:  # noqa: ANN001 - pytest fixtures
    _, engine, text = small
    state = engine.new_state(LANES)
    pos = [0]

    def step() -> None:
        start = (pos[0] * LANES) % (len(text) - LANES)
        pos[0] += 1
        engine.advance(state, text[start : start + LANES])
        engine.predict(state)

    benchmark.extra_info["lanes"] = LANES
    benchmark(step)


def test_float32_eager_step(benchmark, small) -> None:  # noqa: ANN001 - pytest fixtures
    model, _, text = small
    state = [model.initial_state(LANES)]
    pos = [0]

    @torch.no_grad()
    def step() -> None:
        start = (pos[0] * LANES) % (len(text) - LANES)
        pos[0] += 1
        x = torch.from_numpy(text[start : start + LANES].astype(np.int64)).unsqueeze(1)
        _, state[0] = model(x, state[0])

    benchmark.extra_info["lanes"] = LANES
    benchmark(step)
