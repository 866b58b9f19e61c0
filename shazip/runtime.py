"""What the API and the command line share to run a model: loading model files (once per process),
choosing the device and the thread count, and the OpenMP setting torch needs on shared cores.

Nothing here imports torch unless a GPU may be present and the device is "auto".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shazip.format import ModelError

MAX_THREADS = 256  # more is a typo (zstd stops at 200): refused before any thread is started


def prepare_openmp() -> None:
    """libgomp's default busy-waiting collapses when another process takes a core (docs/engine.md): wait
    passively. Takes effect only before torch is first imported, and respects a user's own setting."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_loaded: dict[tuple, Any] = {}


def load_model(model: Any = None) -> Any:
    """None -> the embedded default model; a path -> that model file; a loaded ModelFile -> itself.

    A file is read and its identity hashed once per process (again only when it changed on disk)."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model
    from shazip.modelfile import ModelFile, default_model_path

    path = Path(model) if model is not None else default_model_path()
    try:
        info = path.stat()
        key = (str(path.resolve()), info.st_mtime_ns, info.st_size)
        if key not in _loaded:
            _loaded.clear()  # (one model at a time is what a process uses; keep memory bounded)
            _loaded[key] = ModelFile.load(path)
        return _loaded[key]
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except Exception as e:  # ModelFileError and anything safetensors raises: name the file and the cause
        problem = str(e).removeprefix(f"{path}: ")
        raise ModelError(f"cannot load model {path}: {problem}") from None


def gpu_may_be_present() -> bool:
    """A cheap look for an NVIDIA GPU without importing torch: the driver's device files, unless
    CUDA_VISIBLE_DEVICES hides every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/proc/driver/nvidia/gpus").is_dir()


def resolve_device(device: str | None) -> str:
    """'auto'/None -> 'cuda' if torch sees a GPU, else 'cpu'; torch is imported only if one may be there."""
    if device not in (None, "auto"):
        return device
    if not gpu_may_be_present():
        return "cpu"
    prepare_openmp()
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_threads(threads: int | None) -> int | None:
    """None: the engine's default (every CPU this process may use); 0: the same, said explicitly (-T0);
    N: N threads."""
    if threads is None or threads == 0:
        return None
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be in 0..{MAX_THREADS}, got {threads}")
    return threads


def default_engine_factory(model: Any, device: str, threads: int | None) -> Any:
    """The engine for a model on a device (`shazip.engine.Engine`)."""
    prepare_openmp()  # (in case the engine's backend is torch's)
    from shazip.engine import Engine

    return Engine(model, device=device, threads=threads)


# --- memory: what a stream needs, computed from its header before anything large is allocated ----------
#
# Every allocation that grows with a setting is here, so a decoder can refuse a stream whose header asks
# for more than its limit (as xz's --memlimit) and the format can document the bound (docs/format.md,
# "Memory"). The program itself (interpreter, numpy, numba's compiled code, zstd) comes on top: about
# 160 MB on CPU, more when torch loads for a GPU.

DEFAULT_MEMLIMIT = 512 << 20  # bytes; a stream whose need is larger is refused unless the limit is raised
# Copies of a frame's size a reader holds at once: stored/zstd frames the payload, the raw bytes and the
# caller's; frames with the network also the coder's words, the lane grid, its transposed copy and (CRLF)
# the text.
PLAIN_FRAME_COPIES = 3
MODEL_FRAME_COPIES = 7
CODER_LANE_BYTES = 4_096  # per lane: the step's table copies on their way to a coder


@dataclass(frozen=True)
class MemoryNeed:
    """The most memory (bytes) that decoding a stream allocates, by part."""

    frames: int  # frame buffers
    engine: int = 0  # every lane's state (LSTM, attention ring, table) and the step's scratch
    tables: int = 0  # a frame's models learning the frame (the mixing model), or a codec's state
    model: int = 0  # the model's weights as the engine holds them
    lanes: int = 0

    @property
    def total(self) -> int:
        return self.frames + self.engine + self.tables + self.model

    def describe(self) -> str:
        parts = [f"frames {mib(self.frames)}"]
        if self.lanes:
            parts.append(f"{self.lanes} lanes {mib(self.engine)}")
        parts.append(f"frame models {mib(self.tables)}")
        if self.lanes:
            parts.append(f"model {mib(self.model)}")
        return ", ".join(parts)


def mib(n: int) -> str:
    return f"{-(-n // (1 << 20))} MiB"


def engine_lane_bytes(config: Any) -> int:
    """One lane's engine state (shazip.engine.state.EngineState: int8 h and int32 cell per block, the
    attention ring of memory + 1 int8 vectors, the position, the int32 table) plus its share of a step's
    scratch (GEMM results, residuals, the Boom's up-projection)."""
    d, blocks = config.d_model, config.n_blocks
    state = blocks * d * (1 + 4) + (config.memory + 1) * d + 8 + 256 * 4
    scratch = 4 * (2 * 4 * d + 5 * d + config.d_boom)
    return state + scratch


def model_bytes(model: Any) -> int:
    """The model's tensors as the engine holds them: the file's integers plus the backend's copies (the
    torch path holds weights as float32: at most four times their size)."""
    tensors = getattr(model, "tensors", {})
    return 5 * sum(int(getattr(t, "nbytes", 0)) for t in tensors.values())


def memory_needed(header: Any, model: Any = None) -> MemoryNeed:
    """What decoding a stream with this header (shazip.format.StreamHeader) needs at most, with `model`
    (the one its model_id names; None for streams without frames that use the network)."""
    from shazip.frames import reader_bytes

    tables = reader_bytes(header)  # (one frame is decoded at a time: the largest method's)
    if not any(header.model_id):  # (no model: no frame needs the network)
        return MemoryNeed(frames=PLAIN_FRAME_COPIES * header.frame_size, tables=tables)
    config = getattr(model, "config", None)
    lanes = header.lanes
    per_lane = CODER_LANE_BYTES + (engine_lane_bytes(config) if config else 0)
    return MemoryNeed(
        frames=MODEL_FRAME_COPIES * header.frame_size,
        engine=lanes * per_lane,
        tables=tables,
        model=model_bytes(model),
        lanes=lanes,
    )


def check_memory(header: Any, model: Any, limit: int | None, what: str = "decode") -> MemoryNeed:
    """The stream's need; MemoryLimitError if it exceeds `limit` (None: no limit)."""
    from shazip.format import MemoryLimitError

    need = memory_needed(header, model)
    if limit is not None and need.total > limit:
        raise MemoryLimitError(
            f"needs {mib(need.total)} of memory to {what} ({need.describe()}), more than the limit of "
            f"{mib(limit)} (--memlimit)"
        )
    return need


def parse_size(text: str) -> int | None:
    """'512MiB', '1G', '300M', '1000000' -> bytes; '0' or 'max' -> None (no limit). Units: K, M, G, T
    (powers of 1024, with or without 'iB'/'B')."""
    value = text.strip().lower()
    if value in ("0", "max", "none"):
        return None
    for suffix in ("ib", "b"):
        if value.endswith(suffix) and value[: -len(suffix)][-1:] in ("k", "m", "g", "t"):
            value = value[: -len(suffix)]
            break
    scale = 1
    if value[-1:] in ("k", "m", "g", "t"):
        scale = 1 << (10 * ("kmgt".index(value[-1]) + 1))
        value = value[:-1]
    if not value.isdigit():
        raise ValueError(f"not a size: {text!r} (examples: 512MiB, 2G, 0 for no limit)")
    return int(value) * scale
