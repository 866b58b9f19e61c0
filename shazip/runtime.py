"""What the API and the command line share to run a model: loading model files (once per process),
choosing the device and the thread count, and the OpenMP setting torch needs on shared cores.

Nothing here imports torch unless a GPU may be present and the device is "auto".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shazip.format import ModelError

MAX_THREADS = 1024  # more is a typo: refused before any thread is started


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
