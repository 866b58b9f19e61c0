"""Bits per byte of a trained checkpoint's float model on a file (e.g. the enwik8 test split).

    python -m training.evaluate RUN_DIR_OR_CHECKPOINT FILE [--bytes N] [--streams S] [--bptt T] [--device D]

The file is read as S contiguous streams with the LSTM state and attention memory carried through each
(S = 1: the whole file in order, the most context; more streams are faster on a GPU).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from shazip.config import ModelConfig
from training.checkpoints import checkpoint_path, load_checkpoint
from training.data import DataError, read_bytes
from training.model import SHARNN
from training.train import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a run directory or a checkpoint file")
    parser.add_argument("file", help="text to measure (plain, .xz, .gz, .zst)")
    parser.add_argument("--bytes", type=int, help="only the first N bytes")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--bptt", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast (CUDA only)")
    args = parser.parse_args(argv)
    try:
        ck = load_checkpoint(checkpoint_path(args.source))
        data = np.frombuffer(read_bytes(args.file, args.bytes), dtype=np.uint8)
        if data.size < 2:
            raise DataError(f"{args.file}: too little data")
    except (DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    model = SHARNN(ModelConfig.from_dict(ck["config"])).to(device)
    model.load_state_dict(ck["model"])
    start = time.time()
    bpb = evaluate(model, data, args.streams, args.bptt, device, args.amp)
    seconds = time.time() - start
    print(
        f"{bpb:.4f} bits per byte on {data.size:,d} bytes of {args.file} (step {ck['step']}, {seconds:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
