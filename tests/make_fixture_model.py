"""Make the small trained fixture model used by the tests (and, provisionally, as the default model).

    python -m tests.make_fixture_model [--steps N] [--out tests/data/fixture.safetensors]

Trains a small SHA-RNN briefly (CPU, a minute or two) on the first MBs of the training mix, then exports
it with `training.quantise.export_model`. The float weights are kept beside it (`fixture_float.pt`) so that
fidelity tests can compare the float model with the integer engine.
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
from tests.paths import CORPUS
from training.model import SHARNN
from training.quantise import export_model, float_bpb

HERE = Path(__file__).resolve().parent

FIXTURE_CONFIG = ModelConfig(n_blocks=2, d_model=64, d_boom=256, memory=32, dropout=0.0)
VALID_FILE = "valid/enwiki2015_plain_heldout.txt"


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
