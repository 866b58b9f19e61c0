"""Computes a digest of engine tables in a separate process (used by the cross-process test).

    python -m tests.engine_worker MODEL LANES STEPS OFFSET BACKEND THREADS GROUP
prints the sha256 of all tables of lanes 0..LANES-1 over STEPS steps of the sample text, with the
lanes advanced in sub-batches of GROUP lanes, stepped with THREADS threads.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

from shazip.engine import Engine, EngineState
from tests.paths import sample_text


def text_lanes(lanes: int, steps: int, offset: int = 0) -> np.ndarray:
    """[steps, lanes] bytes of the sample text: lane i reads its own contiguous slice."""
    data = np.frombuffer(sample_text(lanes * steps, offset), dtype=np.uint8)
    return data.reshape(lanes, steps).T.copy()


def digest(model: str, lanes: int, steps: int, offset: int, backend: str, threads: int, group: int) -> str:
    engine = Engine(model, backend=backend, threads=threads)
    seq = text_lanes(lanes, steps, offset)
    h = hashlib.sha256()
    tables = []
    for start in range(0, lanes, group):
        part: EngineState = engine.new_state(min(group, lanes - start))
        out = [engine.predict(part)]
        for s in range(steps):
            engine.advance(part, seq[s, start : start + group])
            out.append(engine.predict(part))
        tables.append(np.stack(out))
    h.update(np.ascontiguousarray(np.concatenate(tables, axis=1)).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    model, lanes, steps, offset, backend, threads, group = sys.argv[1:8]
    print(digest(model, int(lanes), int(steps), int(offset), backend, int(threads), int(group)))
