"""Make the small trained fixture model used by the tests (and, provisionally, as the default model).

    python -m tests.make_fixture_model [--steps N] [--out tests/data/fixture.safetensors]

Trains a small SHA-RNN briefly (CPU, a minute or two) on the first MBs of the training mix, then exports
it with `training.quantise.export_model`. The float weights are kept beside it (`fixture_float.pt`) so that
fidelity tests can compare the float model with the integer engine.

`EXTREME_CONFIGS` are models at the ends of the documented limits (docs/format.md, "Limits"), made untrained
by `make_extreme_model` the project's own way (export of a float SHA-RNN) when the tests need them: the
exactness and round-trip tests run them beside the fixture.
"""

from __future__ import annotations

import argparse
import lzma
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shazip.config import ModelConfig
from tests.paths import CORPUS, sample_text
from training.model import SHARNN
from training.quantise import export_model, float_bpb

HERE = Path(__file__).resolve().parent

FIXTURE_CONFIG = ModelConfig(n_blocks=2, d_model=64, d_boom=256, memory=32, dropout=0.0)
VALID_FILE = "valid/enwiki2015_plain_heldout.txt"

# Each limit's ends, where a model there stays cheap: 1 and 16 blocks, d_boom = d and 16 d, an attention
# window of 1 and of 65,536, attention in the first and in the last block, d_model = 1040 (the widest exact
# GEMM). d_model = 16 is the narrowest the numba backend's GEMM takes (narrower models run on torch only).
EXTREME_CONFIGS = {
    "one-block": ModelConfig(n_blocks=1, d_model=16, d_boom=16, memory=1, attn_block=0, dropout=0.0),
    "sixteen-blocks": ModelConfig(
        n_blocks=16, d_model=16, d_boom=256, memory=65536, attn_block=-1, dropout=0.0
    ),
    "widest": ModelConfig(n_blocks=2, d_model=1040, d_boom=1040, memory=4, attn_block=0, dropout=0.0),
}


def training_bytes(limit: int) -> bytes:
    with lzma.open(CORPUS / "train_mix_v1.txt.xz", "rb") as f:
        return f.read(limit)


def train(
    cfg: ModelConfig, data: bytes, steps: int, batch: int = 16, bptt: int = 128, seed: int = 0
) -> SHARNN:
    torch.manual_seed(seed)
    model = SHARNN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    arr = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    per = len(arr) // batch
    streams = arr[: per * batch].view(batch, per)
    state = model.initial_state(batch)
    pos = 0
    for step in range(steps):
        if pos + bptt + 1 > per:
            pos, state = 0, model.initial_state(batch)
        x = streams[:, pos : pos + bptt]
        y = streams[:, pos + 1 : pos + bptt + 1]
        logits, state = model(x, state)
        state = state.detach()
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, (step + 1) / 50)
        opt.step()
        pos += bptt
        if step % 100 == 0:
            print(f"step {step} loss {loss.item() / np.log(2):.3f} bpb", flush=True)
    return model.eval()


def make_extreme_model(name: str, path: Path) -> Path:
    """Export an untrained model of `EXTREME_CONFIGS[name]` to `path` (calibrated on the shipped sample)."""
    torch.manual_seed(sum(name.encode()))
    model = SHARNN(EXTREME_CONFIGS[name]).eval()
    # The reference init's small weights predict near-uniform tables (~8 bits/byte) at every width; the
    # default init makes a wide untrained model confidently wrong (~20 bits/byte at d = 1040), so that
    # its MIX frames would lose to zstd and a round trip would never decode one.
    model.reference_init()
    export_model(model, path, calibration=sample_text(4000), name=f"extreme-{name}", card={"steps": 0})
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=HERE / "data" / "fixture.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = train(FIXTURE_CONFIG, training_bytes(4_000_000), args.steps)
    valid = (CORPUS / VALID_FILE).read_bytes()
    calibration, evaluation = valid[:65536], valid[65536 : 65536 + 8192]
    card = {
        "description": "test fixture: tiny SHA-RNN trained briefly, not a useful compressor",
        "training_data": "first 4 MB of train_mix_v1.txt.xz",
        "steps": args.steps,
        "bpb_float": round(float_bpb(model, evaluation, 4), 5),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mf = export_model(
        model,
        args.out,
        calibration=calibration,
        name="fixture-d64",
        card=card,
        eval_data=evaluation,
        eval_lanes=4,
    )
    torch.save(
        {"config": model.cfg.to_dict(), "model": model.state_dict()}, args.out.with_name("fixture_float.pt")
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.time() - t0:.0f}s: {mf.card}")


if __name__ == "__main__":
    main()
