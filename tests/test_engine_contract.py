"""The determinism contract across processes and devices, and fidelity to the float model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shazip.engine import Engine, measure_bpb
from tests.paths import sample_text

from .engine_worker import digest, text_lanes

ROOT = Path(__file__).resolve().parent.parent
FLOAT_FIXTURE = Path(__file__).resolve().parent / "data" / "fixture_float.pt"


def worker_digest(model: Path, backend: str, threads: int, group: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    args = [str(model), "16", "30", "123456", backend, str(threads), str(group)]  # (see engine_worker)
    out = subprocess.run(
        [sys.executable, "-m", "tests.engine_worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_two_processes_with_different_settings(fixture_model_path: Path) -> None:
    here = digest(str(fixture_model_path), 16, 30, 123456, "numba", 1, 16)
    # another process: two threads, the torch reference, the lanes in sub-batches of 3
    assert worker_digest(fixture_model_path, "torch", 2, 3) == here


def test_fidelity_to_float_model(fixture_model_path: Path) -> None:
    from shazip.config import ModelConfig
    from training.model import SHARNN
    from training.quantise import float_bpb

    ck = torch.load(FLOAT_FIXTURE, map_location="cpu")
    model = SHARNN(ModelConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    data = sample_text(12_000, offset=20_000)  # the docs' English text
    lanes = 6  # 2,000 steps per lane: ~60x the fixture's attention window
    float_bits = float_bpb(model, data, lanes)
    int_bits = measure_bpb(Engine(fixture_model_path), data, lanes)
    assert float_bits < 5.5  # a trained model, not noise (an untrained one spends ~8 bits a byte)
    assert abs(int_bits - float_bits) / float_bits < 0.01, (int_bits, float_bits)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_tables_identical(fixture_model_path: Path) -> None:
    from .test_engine import run_tables

    seq = text_lanes(64, 3 * 32 + 10, 150_000)
    cpu = run_tables(Engine(fixture_model_path, device="cpu"), seq)
    gpu = run_tables(Engine(fixture_model_path, device="cuda", backend="torch"), seq)
    assert (cpu == gpu).all()
