"""The integer-exact SHA-RNN inference engine shared by compression and decompression.

    engine = Engine(model_file)        # also device="cuda", backend="numba" | "torch", threads=N
    state = engine.new_state(lanes)    # fresh lanes, each one's first table already computed
    tables = engine.predict(state)     # int32 [lanes, 256]: every entry >= 1, rows sum to TABLE_TOTAL
    engine.advance(state, symbols)     # lanes 0..len(symbols)-1 consume one byte each

Every table is bit-identical on any machine, thread count, lane grouping and device: all arithmetic is
integer, in formats defined once in `fixed_point` (why that is exact: docs/engine.md). Two backends
compute the same integers: `numba` (CPU: compiled kernels, numpy and numba only) and `torch` (the
reference, CPU or CUDA). Nothing here changes process-wide settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shazip.engine.fixed_point import MAX_EXACT_FLOAT32_DEPTH, QUANT_SCHEME, START_BYTE, TABLE_TOTAL
from shazip.engine.state import EngineState
from shazip.modelfile import ModelFile

__all__ = ["START_BYTE", "TABLE_TOTAL", "Engine", "EngineState", "available_cpus", "measure_bpb"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Engine:
    """Runs an integer model file (see the module's docstring)."""

    TABLE_TOTAL = TABLE_TOTAL
    START_BYTE = START_BYTE

    def __init__(
        self,
        model: ModelFile | str | Path,
        device: str = "cpu",
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        """backend: "numba" (CPU), "torch" (the reference, any device) or "auto" (numba on CPU when numba is
        installed and the model's shapes fit its GEMM kernel, else torch). threads: how many threads step
        a state's lanes on the numba backend (default: every CPU this process may use); the torch backend
        leaves threads to torch's own setting."""
        if not isinstance(model, ModelFile):
            model = ModelFile.load(model)
        if model.quant.get("scheme") != QUANT_SCHEME:
            raise ValueError(
                f"model file quantisation scheme {model.quant.get('scheme')!r} is not {QUANT_SCHEME!r}"
            )
        if max(model.config.d_model, 256) > MAX_EXACT_FLOAT32_DEPTH:
            raise ValueError(f"d_model {model.config.d_model} is too large for exact GEMMs (at most 1040)")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.model = model
        self.cfg = model.config
        self.device = str(device)
        self.threads = threads or available_cpus()
        on_cpu = self.device == "cpu"
        if backend == "auto":
            from shazip.engine import numba_backend

            backend = "numba" if on_cpu and _numba_available() and numba_backend.fits(model) else "torch"
        if backend == "numba":
            if not on_cpu:
                raise ValueError("the numba backend runs on CPU only")
            from shazip.engine.numba_backend import NumbaBackend

            self.backend: Any = NumbaBackend(model)
        elif backend == "torch":
            from shazip.engine.reference import ReferenceBackend

            self.backend = ReferenceBackend(model, device)
        else:
            raise ValueError(f"unknown engine backend {backend!r}")

    def new_state(self, lanes: int) -> EngineState:
        """`lanes` fresh lanes, as if each had just consumed START_BYTE from the zero state."""
        state = self.backend.zeros(lanes)
        if lanes:
            self.advance(state, np.full(lanes, START_BYTE, dtype=np.uint8))
        return state

    def predict(self, state: EngineState) -> np.ndarray:
        """Each lane's next-byte table: int32 [lanes, 256] (a copy)."""
        return self.backend.tables(state)

    def advance(
        self,
        state: EngineState,
        symbols: np.ndarray | bytes | list[int],
        alongside: Callable[[], object] | None = None,
    ) -> None:
        """Lanes 0..len(symbols)-1 consume one byte each (the other lanes keep their state).

        alongside: other work for the calling thread that does not touch `state` (the codec's in-file
        models learning the same bytes). With helper threads it runs while they start on the step, and
        the calling thread joins the step when it is done: the helpers would otherwise wait for it. Without
        helpers it runs before the step. The step completes even when `alongside` raises.
        """
        if isinstance(symbols, (bytes, bytearray, memoryview)):
            sym = np.frombuffer(symbols, dtype=np.uint8)
        else:
            sym = np.asarray(symbols)
            if sym.ndim != 1:
                raise ValueError(f"symbols must be one-dimensional, got shape {sym.shape}")
            if (
                sym.dtype != np.uint8
                and sym.size
                and (sym.dtype.kind not in "iu" or sym.min() < 0 or sym.max() > 255)
            ):
                raise ValueError("symbols must be byte values 0..255")
        k = int(sym.shape[0])
        if k > state.lanes:
            raise ValueError(f"{k} symbols for {state.lanes} lanes")
        if k == 0:
            if alongside is not None:
                alongside()
            return
        self.backend.step(state, sym.astype(np.int64), self.threads, alongside)


def measure_bpb(engine: Engine, data: bytes, lanes: int = 1) -> float:
    """The engine's ideal code length in bits per byte of `data` laid out in `lanes` lanes as model frames
    are (`shazip.format.lane_layout`): the network alone, without the codec's in-file models."""
    from shazip.format import lane_layout

    n = len(data)
    if n == 0:
        return 0.0
    run, full, rest = lane_layout(n, max(1, min(lanes, n)))
    lanes = full + (1 if rest else 0)
    grid = np.zeros(lanes * run, dtype=np.uint8)
    grid[:n] = np.frombuffer(data, dtype=np.uint8)
    columns = grid.reshape(lanes, run).T
    state = engine.new_state(lanes)
    bits = 0.0
    log_total = np.log2(engine.TABLE_TOTAL)
    for t in range(run):
        active = full + (1 if t < rest else 0)
        symbols = columns[t, :active]
        tables = engine.predict(state)[:active]
        bits += float(np.sum(log_total - np.log2(tables[np.arange(active), symbols].astype(np.float64))))
        if t + 1 < run:
            engine.advance(state, symbols)
    return bits / n
