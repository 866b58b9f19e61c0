"""The one-shot GPU check (issue 7): exactness CPU <-> GPU, throughput, training, environment.

    python -m bench.gpu_check [--device cuda] [--quick] [--out DIR] [--parts a,b,...] [--budget SECONDS]

Parts (each time-boxed; a failing part is reported and the others still run):

  environment  torch / CUDA versions, GPU name and memory, CPU count, TF32 flags as set.
  pytest_cuda  the project's `@pytest.mark.cuda` tests, in a subprocess with a timeout.
  models       the default model (embedded) and a paper-size model: `SHARNN(CONFIGS["enwik8"])` from a
               fixed seed, exported by `training.quantise.export_model`, calibrated on the repo's own text
               (the corpus is not on the GPU machine).
  exactness    for both models: the CPU engine's and the device engine's frequency tables, step by step
               on text, at several lane counts (the last steps advance only a prefix of the lanes, as a
               frame's end does), must be identical; and a file compressed on CPU must decode on the device
               and vice versa, with byte-identical .shz files at the same lane count.
  throughput   for both models and a series of lane counts: engine-only steps (advance + predict, and
               advance alone) and `shazip.compress` / `shazip.decompress` bytes/s on the device; the range
               coder alone and zstd -19 (which the codec runs on every model frame) for comparison. A series
               stops when a point runs out of memory or would not fit its time.
  training     a few optimiser steps of the enwik8 config through `training.train.Trainer` (bf16 autocast on
               CUDA as the trainer does): bytes/s and peak GPU memory.

The summary is printed at the end and written (after every part, so a killed run still leaves one) to
DIR/summary.json and DIR/summary.md; DIR defaults to $OUT if set, else ./gpu_check_out. The exit status is
0 when every part passed. `--device cpu --quick` runs the same code on tiny sizes in seconds (the test).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before torch starts OpenMP (docs/design.md, section 4); an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("environment", "pytest_cuda", "models", "exactness", "throughput", "training")
PAPER_SEED = 20190725  # the paper-size model's weights come from this seed (any fixed value would do)
DATA_SEED = 7
TEXT_GLOBS = ("README.md", "docs/*.md", "shazip/*.py", "training/*.py", "bench/*.py", "tests/*.py")

# (label, lanes, step, device table) -> table to compare; tests use it to prove a difference is caught.
TableHook = Callable[[str, int, int, np.ndarray], np.ndarray]
# (label, .shz written on the device) -> bytes to compare and decode on CPU.
ShzHook = Callable[[str, bytes], bytes]


@dataclass
class Hooks:
    """Test hooks: alter what the device produced, to show that the checks notice."""

    tamper_tables: TableHook | None = None
    tamper_shz: ShzHook | None = None


@dataclass(frozen=True)
class Plan:
    """Sizes and time boxes of one run. `plan_for` gives the full (GPU) and the quick (CPU test) plan."""

    device: str
    quick: bool
    paper_config: str  # the "paper-size" model's architecture (CONFIGS name)
    calibration_bytes: int
    exact_lanes_default: tuple[int, ...]
    exact_lanes_paper: tuple[int, ...]
    exact_steps_default: int
    exact_steps_paper: int
    roundtrip_default: tuple[int, int]  # (lanes, steps per frame); two frames
    roundtrip_paper: tuple[int, int]
    speed_lanes_default: tuple[int, ...]
    speed_lanes_paper: tuple[int, ...]
    speed_steps_default: int  # bytes per lane in the API measurement
    speed_steps_paper: int
    engine_steps: int  # timed engine-only steps per point
    point_limit_s: float  # a series stops after a point slower than this
    train_model_config: str
    train_config: str
    train_steps: int
    budgets: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def plan_for(device: str, quick: bool) -> Plan:
    if quick:
        return Plan(
            device=device,
            quick=True,
            paper_config="tiny",
            calibration_bytes=2048,
            exact_lanes_default=(1, 3, 8),
            exact_lanes_paper=(1, 5),
            exact_steps_default=40,  # > the default model's attention window: the ring wraps
            exact_steps_paper=24,  # > tiny's window (16)
            roundtrip_default=(4, 48),
            roundtrip_paper=(3, 24),
            speed_lanes_default=(4, 16),
            speed_lanes_paper=(4, 16),
            speed_steps_default=24,
            speed_steps_paper=16,
            engine_steps=8,
            point_limit_s=20.0,
            train_model_config="tiny",
            train_config="tiny",
            train_steps=2,
            budgets={
                "environment": 20,
                "pytest_cuda": 60,
                "models": 30,
                "exactness": 60,
                "throughput": 60,
                "training": 30,
            },
        )
    return Plan(
        device=device,
        quick=False,
        paper_config="enwik8",
        calibration_bytes=4096,  # the export calibrates on CPU
        exact_lanes_default=(1, 7, 64, 256, 1024),
        exact_lanes_paper=(1, 3, 16, 64),  # <= 16 and > 16 lanes: both CPU GEMM paths
        exact_steps_default=300,  # ~9x the default model's window: the ring buffer wraps many times
        exact_steps_paper=150,  # CPU-bound (the reference engine); the 5,000-slot window does not wrap
        roundtrip_default=(64, 160),
        roundtrip_paper=(8, 40),
        speed_lanes_default=(256, 1024, 4096, 8192),
        speed_lanes_paper=(256, 512, 1024, 2048, 4096, 8192),
        speed_steps_default=256,
        speed_steps_paper=48,
        engine_steps=24,
        point_limit_s=25.0,
        train_model_config="enwik8",
        train_config="enwik8",
        train_steps=4,
        # 360 s in all; the run's own start, imports and CUDA initialisation come on top (< 8 minutes)
        budgets={
            "environment": 15,
            "pytest_cuda": 50,
            "models": 60,
            "exactness": 90,
            "throughput": 100,
            "training": 45,
        },
    )


# ---------------------------------------------------------------------------------------------------------
# Small helpers


class PartTimeout(BaseException):
    """A part ran past its time box. A BaseException (like KeyboardInterrupt), so that the `except
    Exception` handlers that turn a failed step into a finding do not swallow it."""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in the main thread after `seconds` (POSIX; elsewhere the box is only soft)."""
    if not hasattr(signal, "setitimer") or sys.platform == "win32":
        yield
        return
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise PartTimeout(f"time box of {seconds:.0f} s exceeded")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Deadline:
    """A soft deadline: loops check it and stop early (reporting that they did)."""

    end: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.perf_counter() + seconds)

    def left(self) -> float:
        return self.end - time.perf_counter()

    def passed(self) -> bool:
        return self.left() <= 0


@functools.lru_cache(maxsize=1)
def repo_text() -> bytes:
    """The repo's own docs and sources: text that travels with the repo (the corpus does not)."""
    parts = []
    for pattern in TEXT_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            parts.append(path.read_bytes())
    text = b"\n".join(parts)
    if len(text) < 4096:
        raise RuntimeError(f"too little repo text found under {ROOT} ({len(text)} bytes)")
    return text


def text_of_size(n: int, offset: int = 0) -> bytes:
    """n bytes of repo text, repeated as needed, starting at `offset`."""
    text = repo_text()
    reps = -(-(n + offset) // len(text))
    return (text * reps)[offset : offset + n]


def text_columns(lanes: int, steps: int, offset: int = 0) -> np.ndarray:
    """[steps, lanes] uint8: lane i reads its own contiguous run of text."""
    data = np.frombuffer(text_of_size(lanes * steps, offset), dtype=np.uint8)
    return np.ascontiguousarray(data.reshape(lanes, steps).T)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def is_out_of_memory(e: BaseException) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def free_device_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else math.inf


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def tf32_flags() -> dict:
    import torch

    return {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


# ---------------------------------------------------------------------------------------------------------
# Part: environment


def part_environment(ctx: Context) -> dict:
    import torch

    import shazip

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "shazip": shazip.__version__,
        "device": ctx.plan.device,
        "cuda_available": torch.cuda.is_available(),
        "tf32_at_start": tf32_flags(),
    }
    for name in ("constriction", "zstandard", "numba", "safetensors", "typer", "pytest"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a missing package is a finding, not a crash
            info[name] = "missing"
    if torch.cuda.is_available():
        index = (torch.device(ctx.plan.device).index or 0) if ctx.plan.device.startswith("cuda") else 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "count": torch.cuda.device_count(),
        }
        info["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    return {"status": "ok", **info}


# ---------------------------------------------------------------------------------------------------------
# Part: the project's CUDA-marked tests


def cuda_test_files() -> list[str]:
    """Test files that hold a `pytest.mark.cuda` test (collecting only those keeps the run short)."""
    return sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text()
    )


def pytest_counts(output: str) -> dict[str, int]:
    """'3 passed, 1 skipped, 2 deselected in 4.2s' -> {'passed': 3, 'skipped': 1, 'deselected': 2}."""
    counts: dict[str, int] = {}
    for number, word in re.findall(
        r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", output
    ):
        key = "error" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def part_pytest_cuda(ctx: Context) -> dict:
    files = cuda_test_files()
    if not files:
        return {"status": "skipped", "reason": "no test is marked cuda"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    timeout = max(5.0, ctx.deadline.left() - 2)
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or "")[-1500:] if isinstance(e.stdout, str) else ""
        return {"status": "timeout", "files": files, "output_tail": tail}
    output = done.stdout + done.stderr
    counts = pytest_counts(output)
    if done.returncode == 0 and counts.get("passed", 0) > 0:
        status = "ok"
    elif done.returncode in (0, 5) and not counts.get("failed") and not counts.get("error"):
        status = "skipped"  # all skipped (no CUDA here) or none selected
    else:
        status = "fail"
    return {
        "status": status,
        "files": files,
        "returncode": done.returncode,
        "counts": counts,
        "output_tail": output[-1500:] if status == "fail" else output.strip().splitlines()[-1:],
    }


# ---------------------------------------------------------------------------------------------------------
# Part: models


def build_paper_model(config_name: str, calibration_bytes: int) -> Any:
    """A randomly initialised SHA-RNN of the given config (fixed seed), exported to an integer model."""
    import torch

    from shazip.config import CONFIGS
    from training.model import SHARNN
    from training.quantise import export_model

    torch.manual_seed(PAPER_SEED)
    model = SHARNN(CONFIGS[config_name]).eval()
    # At d = 1024 a random SHA-RNN predicts sharply (mostly "the last byte again": the tied embedding has
    # |e|^2 ~ 10). Smaller configs (the quick run) get the same by a larger embedding, so that data sampled
    # from them is something the model codes better than zstd (see `sample_frames`).
    d = model.cfg.d_model
    if d < 1000:
        with torch.no_grad():
            model.embed.weight.mul_(math.sqrt(1000 / d))
    card = {"description": f"gpu_check: random {config_name} SHA-RNN, seed {PAPER_SEED}", "steps": 0}
    calibration = text_of_size(calibration_bytes)
    return export_model(model, None, calibration=calibration, name=f"gpucheck-{config_name}", card=card)


def part_models(ctx: Context) -> dict:
    from shazip.modelfile import ModelFile, default_model_path

    default = ModelFile.load(default_model_path())
    ctx.models["default"] = default
    out: dict[str, Any] = {
        "default": {
            "name": default.name,
            "config": default.config.to_dict(),
            "id": default.model_id.hex()[:16],
        }
    }
    # The CPU engine's numba kernels compile on first use (no cache on a fresh machine: tens of seconds);
    # compile them here (one lane and a lane group), so that the exactness part measures checking only.
    started = time.perf_counter()
    engine = reference_engine(default)
    for lanes in (1, 16):
        engine.advance(engine.new_state(lanes), np.full(lanes, 65, dtype=np.uint8))
    out["cpu_engine_warmup_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    paper = build_paper_model(ctx.plan.paper_config, ctx.plan.calibration_bytes)
    ctx.models["paper"] = paper
    params = sum(int(np.prod(t.shape)) for t in paper.tensors.values())
    out["paper"] = {
        "name": paper.name,
        "config": paper.config.to_dict(),
        "id": paper.model_id.hex()[:16],
        "stored_values": params,
        "export_s": round(time.perf_counter() - started, 1),
    }
    return {"status": "ok", **out}


# ---------------------------------------------------------------------------------------------------------
# Part: exactness


def reference_engine(model: Any) -> Any:
    """The CPU engine as a CPU user gets it (numba kernels where numba is installed)."""
    from shazip.engine import Engine

    return Engine(model, device="cpu")


def device_engine(model: Any, device: str) -> Any:
    """The torch engine on the device (on CPU: the torch reference path, a real second implementation)."""
    from shazip.engine import Engine

    return Engine(model, device=device, backend="torch")


def user_engine(model: Any, device: str) -> Any:
    """The engine the codec uses on `device` (the default backend there): what throughput is measured on."""
    from shazip.engine import Engine

    return Engine(model, device=device)


def compare_tables(
    label: str,
    ref: Any,
    dev: Any,
    lanes: int,
    steps: int,
    deadline: Deadline,
    hook: TableHook | None,
    offset: int,
) -> dict:
    """Run both engines in lockstep over text; every table before every step must be identical.

    The last eighth of the steps advances only the first half of the lanes (what the codec does at the end of
    a frame whose lanes are not all the same length)."""
    seq = text_columns(lanes, steps, offset)
    partial_from = steps - max(1, steps // 8)
    started = time.perf_counter()
    s_ref, s_dev = ref.new_state(lanes), dev.new_state(lanes)
    compared = 0
    result: dict[str, Any] = {"lanes": lanes, "steps_planned": steps}
    for step in range(steps + 1):
        a = ref.predict(s_ref)
        b = dev.predict(s_dev)
        if hook is not None:
            b = hook(label, lanes, step, b)
        if a.shape != b.shape or not np.array_equal(a, b):
            bad = np.argwhere((a != b).any(-1)) if a.shape == b.shape else np.zeros((1, 1), dtype=int)
            result.update(
                equal=False,
                first_mismatch_step=step,
                first_mismatch_lane=int(bad[0, 0]),
                mismatched_lanes=int(len(bad)),
            )
            break
        compared += 1
        if step == steps:
            break
        if deadline.passed():
            result["stopped_early"] = True
            break
        k = lanes if step < partial_from else max(1, lanes // 2)
        ref.advance(s_ref, seq[step, :k])
        dev.advance(s_dev, seq[step, :k])
    else:  # pragma: no cover - the loop always breaks
        pass
    result.setdefault("equal", True)
    result["tables_compared"] = compared * lanes
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def sample_frames(engine: Any, lanes: int, steps: int, frames: int, seed: int) -> bytes:
    """Bytes drawn from the model's own tables, laid out as the codec lays out frames and lanes.

    Data the model predicts well: the codec keeps a model frame only when it beats stored/zstd, so text
    under a random (untrained) model would silently round-trip through zstd and test nothing. Lane i of
    frame f continues lane i of frame f-1, as the codec's carried state does."""
    rng = np.random.default_rng(seed)
    state = engine.new_state(lanes)
    out = []
    for _ in range(frames):
        columns = np.empty((steps, lanes), dtype=np.uint8)
        for t in range(steps):
            cum = np.cumsum(engine.predict(state), axis=1)
            u = rng.integers(0, cum[:, -1:], size=(lanes, 1))
            columns[t] = (cum <= u).sum(axis=1)
            engine.advance(state, columns[t])
        out.append(columns.T.tobytes())  # lane-major: lane i's run is contiguous
    return b"".join(out)


def roundtrip(label: str, model: Any, lanes: int, steps: int, device: str, hook: ShzHook | None) -> dict:
    """CPU-written and device-written .shz must be byte-identical, and each must decode on the other side."""
    import shazip

    started = time.perf_counter()
    data = sample_frames(device_engine(model, device), lanes, steps, 2, DATA_SEED)
    options = {"strategy": "model", "lanes": lanes, "frame_size": lanes * steps}
    on_cpu = shazip.compress(data, model, device="cpu", **options)
    on_dev = shazip.compress(data, model, device=device, **options)
    if hook is not None:
        on_dev = hook(label, on_dev)
    result: dict[str, Any] = {
        "lanes": lanes,
        "bytes": len(data),
        "shz_bytes": len(on_cpu),
        "frames": shazip.info(on_cpu).method_counts(),
        "identical_shz": on_cpu == on_dev,
    }
    for name, blob, where in (("cpu_to_device", on_cpu, device), ("device_to_cpu", on_dev, "cpu")):
        try:
            result[name] = shazip.decompress(blob, model, device=where) == data
        except Exception as e:  # a decoding failure is the finding
            result[name] = False
            result[name + "_error"] = error_text(e)
    result["model_frames"] = result["frames"].get("mix", 0)
    result["equal"] = bool(
        result["identical_shz"]
        and result["cpu_to_device"]
        and result["device_to_cpu"]
        and result["model_frames"]
    )
    if not result["model_frames"]:
        result["note"] = "no frame was coded with the model: the round trip did not exercise it"
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def part_exactness(ctx: Context) -> dict:
    plan = ctx.plan
    out = ctx.partial  # filled as it goes: a part stopped by its time box still reports what it did
    out.update(reference=None, device_side=f"{plan.device} (torch)")
    ok = True
    series = [("default", plan.exact_lanes_default, plan.exact_steps_default, plan.roundtrip_default)]
    if "paper" in ctx.models:
        series.append(("paper", plan.exact_lanes_paper, plan.exact_steps_paper, plan.roundtrip_paper))
    else:
        ok = False
        out["paper"] = {"error": "no paper-size model (the models part failed)"}
    total = ctx.deadline.left()
    for index, (label, lane_counts, steps, (rt_lanes, rt_steps)) in enumerate(series):
        model = ctx.models[label]
        # each model gets its share of what is left (the paper model, CPU-bound, the larger one)
        share = 0.35 if (label == "default" and len(series) > 1) else 1.0
        deadline = Deadline.after(
            min(ctx.deadline.left(), total * share) if index == 0 else ctx.deadline.left()
        )
        ref, dev = reference_engine(model), device_engine(model, plan.device)
        out["reference"] = f"cpu ({ref.backend.name})"
        tables: list[dict] = []
        out[label] = {"tables": tables}
        for i, lanes in enumerate(lane_counts):
            if deadline.passed():
                tables.append({"lanes": lanes, "skipped": "out of time"})
                continue
            r = compare_tables(label, ref, dev, lanes, steps, deadline, ctx.hooks.tamper_tables, 997 * i)
            tables.append(r)
            ok &= r["equal"]
        compared = [t for t in tables if "equal" in t]
        ok &= bool(compared)
        entry = out[label]
        try:
            entry["roundtrip"] = roundtrip(
                label, model, rt_lanes, rt_steps, plan.device, ctx.hooks.tamper_shz
            )
            ok &= entry["roundtrip"]["equal"]
        except Exception as e:
            entry["roundtrip"] = {"equal": False, "error": error_text(e)}
            ok = False
    out["tf32_after"] = tf32_flags()
    return {"status": "ok" if ok else "fail", **out}


# ---------------------------------------------------------------------------------------------------------
# Part: throughput


def engine_rates(model: Any, device: str, lanes: int, steps: int) -> dict:
    """Engine-only: (advance + predict) per step, and advance alone; lane-bytes per second."""
    engine = user_engine(model, device)
    seq = text_columns(lanes, steps + 2, 12345)
    state = engine.new_state(lanes)
    for t in range(2):  # warm-up: kernels chosen, caches filled
        engine.predict(state)
        engine.advance(state, seq[t])
    synchronize(device)
    started = time.perf_counter()
    for t in range(2, steps + 2):
        engine.predict(state)
        engine.advance(state, seq[t])
    engine.predict(state)
    with_predict = time.perf_counter() - started
    started = time.perf_counter()
    for t in range(2, steps + 2):
        engine.advance(state, seq[t])
    synchronize(device)
    advance_only = time.perf_counter() - started
    del state
    return {
        "step_ms": round(1000 * with_predict / steps, 3),
        "advance_ms": round(1000 * advance_only / steps, 3),
        "engine_bytes_per_s": rate(lanes * steps, with_predict),
        "advance_bytes_per_s": rate(lanes * steps, advance_only),
    }


def coder_rate(model: Any, device: str, lanes: int, steps: int) -> dict:
    """The range coder alone on real tables: constriction's encode of one step of `lanes` symbols."""
    import constriction

    engine = user_engine(model, device)
    state = engine.new_state(lanes)
    symbols = text_columns(lanes, steps)
    for t in range(4):  # tables after some text, not the fresh-lane table
        engine.advance(state, symbols[t])
    probabilities = np.ascontiguousarray(engine.predict(state), dtype=np.float64)
    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    started = time.perf_counter()
    for t in range(steps):
        encoder.encode(symbols[t].astype(np.int32), family, probabilities)
    seconds = time.perf_counter() - started
    return {
        "coder_us_per_symbol": round(1e6 * seconds / (lanes * steps), 3),
        "coder_bytes_per_s": rate(lanes * steps, seconds),
    }


def api_rates(model: Any, device: str, lanes: int, steps: int) -> dict:
    """shazip.compress / decompress on one frame of lanes * steps bytes (strategy "model").

    The input is sampled from the model itself: repeated repo text would let zstd -19 (which competes with
    the model on every frame) win, and decompression would then never run the model. The engine's cost
    does not depend on the bytes."""
    import zstandard

    import shazip
    from shazip.levels import DEFAULT_LEVEL, LEVELS

    data = sample_frames(user_engine(model, device), lanes, steps, 1, DATA_SEED + lanes)
    started = time.perf_counter()
    packed = shazip.compress(data, model, strategy="model", lanes=lanes, frame_size=len(data), device=device)
    compress_s = time.perf_counter() - started
    started = time.perf_counter()
    restored = shazip.decompress(packed, model, device=device)
    decompress_s = time.perf_counter() - started
    methods = shazip.info(packed).method_counts()
    started = time.perf_counter()
    zstandard.ZstdCompressor(level=LEVELS[DEFAULT_LEVEL].zstd_level).compress(data)  # (every frame tries it)
    zstd_s = time.perf_counter() - started
    result = {
        "bytes": len(data),
        "compress_bytes_per_s": rate(len(data), compress_s),
        "decompress_bytes_per_s": rate(len(data), decompress_s),
        "ratio": round(len(data) / len(packed), 3),
        "frames": methods,
        "roundtrip_ok": restored == data,
        "zstd19_bytes_per_s": rate(len(data), zstd_s),
    }
    if "mix" not in methods:
        # the frame went out as zstd/stored; decompression then never ran the model
        result["note"] = "the model lost to zstd on this frame: decompress did not run the model"
    return result


def speed_series(
    model: Any, ctx: Context, lane_counts: tuple[int, ...], steps: int, deadline: Deadline, rows: list
) -> None:
    """One row per lane count; the series stops after an out-of-memory error or a point that took too long."""
    from shazip.format import MAX_LANES

    plan = ctx.plan
    stop: str | None = None
    for lanes in lane_counts:
        if stop or deadline.passed():
            rows.append({"lanes": lanes, "skipped": stop or "out of time"})
            continue
        row: dict[str, Any] = {"lanes": lanes}
        started = time.perf_counter()
        try:
            row.update(engine_rates(model, plan.device, lanes, plan.engine_steps))
            # fit the API measurement (sampling, compress, decompress, the codec's overhead) into what is left
            step_s = row["step_ms"] / 1000
            fit = int(min(deadline.left(), plan.point_limit_s) / (4 * step_s + 1e-9))
            api_steps = min(steps, fit)
            if lanes > MAX_LANES:
                row["api"] = {"skipped": f"the format allows at most {MAX_LANES} lanes"}
            elif api_steps < 8:
                row["api"] = {"skipped": f"too slow for the time left ({row['step_ms']} ms per step)"}
            else:
                row["api"] = api_rates(model, plan.device, lanes, api_steps)
        except Exception as e:
            row["error"] = error_text(e)
            if is_out_of_memory(e):
                stop = f"out of memory at {lanes} lanes"
        finally:
            free_device_memory(plan.device)
        if plan.device.startswith("cuda"):
            import torch

            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
        row["seconds"] = round(time.perf_counter() - started, 1)
        if row["seconds"] > plan.point_limit_s * 1.5 and stop is None:
            stop = f"the {lanes}-lane point took {row['seconds']} s"
        rows.append(row)


def part_throughput(ctx: Context) -> dict:
    plan = ctx.plan
    out = ctx.partial
    total = ctx.deadline.left()
    series = [("default", plan.speed_lanes_default, plan.speed_steps_default)]
    if "paper" in ctx.models:
        series.append(("paper", plan.speed_lanes_paper, plan.speed_steps_paper))
    for index, (label, lane_counts, steps) in enumerate(series):
        share = 0.4 if (index == 0 and len(series) > 1) else 1.0
        deadline = Deadline.after(min(ctx.deadline.left() - 3, total * share))
        out[label] = []
        speed_series(ctx.models[label], ctx, lane_counts, steps, deadline, out[label])
    lanes = min(max(plan.speed_lanes_default), 4096)
    try:
        out["coder"] = {"lanes": lanes, **coder_rate(ctx.models["default"], plan.device, lanes, 16)}
    except Exception as e:
        out["coder"] = {"lanes": lanes, "error": error_text(e)}
    rows = [r for label in ("default", "paper") for r in out.get(label, [])]
    measured = [r["api"] for r in rows if "compress_bytes_per_s" in r.get("api", {})]
    out["targets"] = targets(out)
    # The part passes when the default model was measured and every measured round trip was right; slow
    # points, out-of-memory points and the format's lane limit are findings in the table, not failures.
    ok = any("compress_bytes_per_s" in r.get("api", {}) for r in out.get("default", []))
    ok = ok and all(api["roundtrip_ok"] for api in measured)
    return {"status": "ok" if ok else "fail", **out}


def targets(out: dict) -> dict:
    """The issue's targets: >= 1e6 bytes/s (default model), >= 1e5 (paper-size), compress and decompress."""
    result = {}
    for label, goal in (("default", 1_000_000), ("paper", 100_000)):
        apis = [r["api"] for r in out.get(label, []) if "compress_bytes_per_s" in r.get("api", {})]
        best_c = max((a["compress_bytes_per_s"] for a in apis), default=0)
        best_d = max((a["decompress_bytes_per_s"] for a in apis), default=0)
        result[label] = {
            "goal": goal,
            "best_compress": best_c,
            "best_decompress": best_d,
            "met": min(best_c, best_d) >= goal,
        }
    return result


# ---------------------------------------------------------------------------------------------------------
# Part: training


def part_training(ctx: Context) -> dict:
    import torch

    from shazip.config import CONFIGS
    from training.data import Corpus
    from training.train import TRAIN_CONFIGS, RunOptions, Trainer

    plan = ctx.plan
    model_cfg = CONFIGS[plan.train_model_config]
    train_cfg = TRAIN_CONFIGS[plan.train_config]
    if plan.quick:
        train_cfg = dataclasses.replace(train_cfg, batch=2, bptt=16, jitter=False)
    need = train_cfg.batch * (train_cfg.bptt + 8) * (plan.train_steps + 2) * 2
    data = np.frombuffer(text_of_size(need), dtype=np.uint8)
    corpus = Corpus(train=data, valid=data[: 1 << 14], description="gpu_check: repo text")
    cuda = plan.device.startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as tmp:
        options = RunOptions(out=Path(tmp), device=plan.device, quiet=True)
        trainer = Trainer(model_cfg, train_cfg, corpus, options)
        trainer.train_step()  # warm-up: cuDNN plans, allocator
        synchronize(plan.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        tokens = 0
        losses = []
        steps = 0
        for _ in range(plan.train_steps):
            bpb, t = trainer.train_step()
            tokens += t * train_cfg.batch
            losses.append(round(bpb, 3))
            steps += 1
            if ctx.deadline.left() < 3:
                break
        synchronize(plan.device)
        seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "model": plan.train_model_config,
        "params": trainer.model.num_parameters(),
        "batch": train_cfg.batch,
        "bptt": train_cfg.bptt,
        "amp": "bf16" if cuda and train_cfg.amp in ("auto", "bf16") else "off",
        "steps": steps,
        "step_s": round(seconds / max(steps, 1), 3),
        "bytes_per_s": rate(tokens, seconds),
        "train_bpb": losses,
        "tf32_after": tf32_flags(),
    }
    if cuda:
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    finite = all(math.isfinite(x) for x in losses)
    return {"status": "ok" if steps and finite else "fail", **result}


# ---------------------------------------------------------------------------------------------------------
# Running the parts


@dataclass
class Context:
    plan: Plan
    hooks: Hooks
    deadline: Deadline = field(default_factory=lambda: Deadline.after(0))
    models: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=dict)  # the running part's results so far


PART_FUNCTIONS: dict[str, Callable[[Context], dict]] = {
    "environment": part_environment,
    "pytest_cuda": part_pytest_cuda,
    "models": part_models,
    "exactness": part_exactness,
    "throughput": part_throughput,
    "training": part_training,
}


def run_part(name: str, ctx: Context, budget: float) -> dict:
    ctx.deadline = Deadline.after(budget * 0.9)  # the soft deadline comes before the hard one
    ctx.partial = {}
    started = time.perf_counter()
    try:
        with time_box(budget):
            result = PART_FUNCTIONS[name](ctx)
    except PartTimeout as e:
        result = {**ctx.partial, "status": "timeout", "error": str(e)}
    except Exception as e:
        result = {**ctx.partial, "status": "error", "error": error_text(e)}
        result["traceback"] = traceback.format_exc()[-2000:]
    finally:
        with contextlib.suppress(Exception):
            free_device_memory(ctx.plan.device)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def run_check(
    plan: Plan,
    out_dir: Path | None,
    parts: tuple[str, ...] = PARTS,
    hooks: Hooks | None = None,
    echo: bool = True,
) -> dict:
    """Run the parts in order; write the summary after each one (a killed run still leaves it)."""
    ctx = Context(plan=plan, hooks=hooks or Hooks())
    summary: dict[str, Any] = {
        "plan": plan.to_dict(),
        "parts": {},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    started = time.perf_counter()
    for name in parts:
        if echo:
            print(f"[gpu_check] {name} ...", flush=True)
        result = run_part(name, ctx, plan.budgets[name])
        summary["parts"][name] = result
        if echo:
            print(f"[gpu_check] {name}: {result['status']} ({result['seconds']} s)", flush=True)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["ok"] = all(p["status"] in ("ok", "skipped") for p in summary["parts"].values())
        if out_dir is not None:
            write_summary(summary, out_dir)
    return summary


def write_summary(summary: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out_dir / "summary.md").write_text(markdown(summary))


def _fmt(x: Any) -> str:
    if isinstance(x, float) and math.isfinite(x) and x >= 1000:
        return f"{x:,.0f}"
    return str(x)


def markdown(summary: dict) -> str:
    """A compact human summary (the JSON holds everything)."""
    parts = summary["parts"]
    plan = summary["plan"]
    lines = [
        f"# shazip GPU check: {'PASS' if summary.get('ok') else 'FAIL'}",
        "",
        f"device {plan['device']}, {'quick' if plan['quick'] else 'full'} plan, {summary.get('seconds')} s",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {p['status']} | {p['seconds']} |" for name, p in parts.items()]
    env = parts.get("environment", {})
    if env.get("status") == "ok":
        gpu = env.get("gpu", {})
        lines += [
            "",
            f"Environment: Python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda']}), "
            f"GPU {gpu.get('name', 'none')} {gpu.get('memory_gib', '-')} GiB, {env['cpu_count']} CPUs, "
            f"constriction {env.get('constriction')}, numba {env.get('numba')}",
            f"TF32 at start: {env['tf32_at_start']}",
        ]
    for name, p in parts.items():
        if "error" in p:
            lines += ["", f"{name} error: {p['error']}"]
    pt = parts.get("pytest_cuda", {})
    if "counts" in pt:
        lines += ["", f"pytest -m cuda ({', '.join(pt['files'])}): {pt['counts']}"]
    ex = parts.get("exactness", {})
    for label in ("default", "paper"):
        entry = ex.get(label)
        if not isinstance(entry, dict) or "tables" not in entry:
            continue
        cells = []
        for t in entry["tables"]:
            if "equal" not in t:
                cells.append(f"{t['lanes']}: skipped")
            elif t["equal"]:
                cells.append(f"{t['lanes']}: equal{' (stopped early)' if t.get('stopped_early') else ''}")
            else:
                cells.append(
                    f"{t['lanes']}: DIFFER at step {t['first_mismatch_step']} lane {t['first_mismatch_lane']}"
                )
        rt = entry.get("roundtrip", {})
        lines += [
            "",
            f"Exactness, {label} model ({ex.get('reference')} vs {ex.get('device_side')}): tables by lanes: "
            + "; ".join(cells),
            f"  round trip: identical .shz {rt.get('identical_shz')}, cpu->device {rt.get('cpu_to_device')}, "
            f"device->cpu {rt.get('device_to_cpu')}, frames {rt.get('frames')}"
            + (f", error {rt['error']}" if "error" in rt else ""),
        ]
    tp = parts.get("throughput", {})
    for label in ("default", "paper"):
        rows = tp.get(label)
        if not rows:
            continue
        lines += [
            "",
            f"Throughput, {label} model, bytes/s (engine: advance + predict; advance: no table copy):",
            "",
            "| lanes | compress | decompress | engine | advance | zstd-19 | step ms | peak GiB | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            api = r.get("api", {})
            note = r.get("skipped") or r.get("error") or api.get("skipped") or api.get("note") or ""
            cells = [
                r["lanes"],
                api.get("compress_bytes_per_s", "-"),
                api.get("decompress_bytes_per_s", "-"),
                r.get("engine_bytes_per_s", "-"),
                r.get("advance_bytes_per_s", "-"),
                api.get("zstd19_bytes_per_s", "-"),
                r.get("step_ms", "-"),
                r.get("peak_gib", "-"),
                str(note)[:90],
            ]
            lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    coder = tp.get("coder", {})
    if "coder_us_per_symbol" in coder:
        lines += [
            "",
            f"Range coder alone ({coder['lanes']} symbols per call): "
            f"{coder['coder_us_per_symbol']} us/symbol ({_fmt(coder['coder_bytes_per_s'])} bytes/s)",
        ]
    if "targets" in tp:
        met = [
            f"{k} >= {_fmt(float(v['goal']))}: compress {_fmt(v['best_compress'])}, decompress "
            f"{_fmt(v['best_decompress'])}, {'met' if v['met'] else 'NOT met'}"
            for k, v in tp["targets"].items()
        ]
        lines += ["", "Targets: " + "; ".join(met)]
    tr = parts.get("training", {})
    if tr.get("status") == "ok":
        lines += [
            "",
            f"Training ({tr['model']}, {tr['params']:,d} params, batch {tr['batch']} x bptt {tr['bptt']}, "
            f"amp {tr['amp']}): {tr['steps']} steps, {tr['step_s']} s/step, "
            f"{_fmt(tr['bytes_per_s'])} bytes/s, peak {tr.get('peak_gib', '-')} GiB, bpb {tr['train_bpb']}",
        ]
    return "\n".join(lines) + "\n"


def default_out_dir() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("gpu_check_out")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (a GPU when present)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and models (seconds, for tests/CPU)")
    parser.add_argument(
        "--out", type=Path, default=None, help="summary folder (default: $OUT or ./gpu_check_out)"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time box")
    args = parser.parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = plan_for(device, args.quick)
    if args.budget_scale != 1.0:
        plan = dataclasses.replace(plan, budgets={k: v * args.budget_scale for k, v in plan.budgets.items()})
    out_dir = args.out or default_out_dir()
    summary = run_check(plan, out_dir, parts)
    print()
    print(markdown(summary), end="")
    print(f"(written to {out_dir}/summary.json and summary.md)")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
