"""Engine speed: bytes/s of the integer engine vs a float32 eager step of the same model, side by side.

    python -m bench.engine_speed [--config small] [--lanes 1 16 64 256] [--threads 1 2] [--seconds 2]
                                 [--backend auto] [--model FILE] [--best-of N]

Default: the `small` config (2 blocks, d = 256, 256-state attention window), randomly initialised and
exported with calibration on the validation text (speed does not depend on the weights' values). For
each thread count and lane count the two are measured alternately in one run, so machine noise hits both.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from shazip import runtime  # noqa: E402

runtime.prepare_openmp()  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shazip.config import CONFIGS  # noqa: E402
from shazip.engine import Engine  # noqa: E402
from shazip.modelfile import ModelFile  # noqa: E402
from training.model import SHARNN  # noqa: E402
from training.quantise import export_model  # noqa: E402

# The shared corpus: $SHAZIP_CORPUS, else ../shared/corpus beside the checkout.
CORPUS = Path(os.environ.get("SHAZIP_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
VALID = os.environ.get("SHAZIP_VALID", str(CORPUS / "valid" / "enwiki2015_plain_heldout.txt"))


def sample_text(n: int) -> bytes:
    try:
        with open(VALID, "rb") as f:
            data = f.read(n)
    except OSError:
        data = b""
    if len(data) < n:  # no corpus: deterministic pseudo-text
        rng = np.random.default_rng(0)
        data = bytes(rng.choice(np.frombuffer(b"etaoin shrdlu\n", dtype=np.uint8), size=n))
    return data


def time_steps(step, min_seconds: float, slices: int = 1) -> float:  # noqa: ANN001
    """Seconds per call of step(), measured over at least min_seconds after two warm-up calls. With
    slices > 1 the time is cut into that many slices and the fastest one counts (on a shared machine it
    shows what the code does when it gets its cores; the plain mean shows what it got)."""
    step()
    step()
    best = float("inf")
    for _ in range(slices):
        calls, start = 0, time.perf_counter()
        while True:
            step()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds / slices and calls >= 3:
                break
        best = min(best, elapsed / calls)
    return best


def measure(
    model: SHARNN, engine: Engine, lanes: int, min_seconds: float, text: np.ndarray, slices: int = 1
) -> tuple[float, float]:
    """(float bytes/s, integer bytes/s) at `lanes` lanes."""
    pos = [0]

    def next_symbols() -> np.ndarray:
        start = (pos[0] * lanes) % (len(text) - lanes)
        pos[0] += 1
        return text[start : start + lanes]

    float_state = [model.initial_state(lanes)]

    @torch.no_grad()
    def float_step() -> None:
        x = torch.from_numpy(next_symbols().astype(np.int64)).unsqueeze(1)
        _, float_state[0] = model(x, float_state[0])

    int_state = engine.new_state(lanes)

    def int_step() -> None:
        engine.advance(int_state, next_symbols())
        engine.predict(int_state)

    # fill the attention memory first: a full window is the steady state being measured
    for _ in range(model.cfg.memory // 8):
        float_step()
        int_step()
    t_float = time_steps(float_step, min_seconds, slices)
    t_int = time_steps(int_step, min_seconds, slices)
    return lanes / t_float, lanes / t_int


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--model", default=None, help="an integer model file (its float model is not needed)")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum measuring time per cell")
    ap.add_argument("--backend", default="auto", choices=["auto", "numba", "torch"])
    ap.add_argument(
        "--best-of", type=int, default=1, help="cut each cell's time into N slices, report the fastest"
    )
    args = ap.parse_args()

    torch.manual_seed(0)
    text = sample_text(1 << 20)
    if args.model:
        mf = ModelFile.load(args.model)
        cfg = mf.config
        model = SHARNN(cfg).eval()
    else:
        cfg = CONFIGS[args.config]
        model = SHARNN(cfg).eval()
        mf = export_model(model, None, calibration=text[:65536], name=f"bench-{args.config}", card={})
    engine = Engine(mf, backend=args.backend)
    arr = np.frombuffer(text, dtype=np.uint8)
    print(
        f"config: {cfg.n_blocks} blocks, d={cfg.d_model}, boom {cfg.d_boom}, window {cfg.memory}; "
        f"engine backend {engine.backend.name}; torch {torch.__version__}"
    )
    print("| threads | lanes | float32 eager bytes/s | integer engine bytes/s | integer / float |")
    print("|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)  # (the float32 step's threads)
        engine.threads = threads  # (the integer engine's)
        for lanes in args.lanes:
            f, i = measure(model, engine, lanes, args.seconds, arr, args.best_of)
            print(f"| {threads} | {lanes} | {f:,.0f} | {i:,.0f} | {i / f:.2f} |", flush=True)


if __name__ == "__main__":
    main()
