"""Bits per byte of a trained model (float) on one or more files, e.g. the enwik8 test split.

    python -m training.evaluate RUN_DIR_OR_CHECKPOINT FILE [FILE ...] [--bytes N] [--streams S] [--bptt T]
                                [--device D] [--json]

RUN_DIR_OR_CHECKPOINT: a run directory (its checkpoint.pt), RUN_DIR/best.pt, or any checkpoint or weights
file. A FILE may be a byte range, e.g. `train_structured_v1.txt.xz[-3000000:]` (quote it in the shell).
Each file is read as S contiguous streams with the LSTM state and attention memory carried through each
(S = 1: the whole file in order, the most context; more streams are faster on a GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from training.checkpoints import CheckpointError, checkpoint_path, load_checkpoint, model_from_checkpoint
from training.data import DataError, parse_spec, read_spec
from training.settings import SettingsError
from training.train import evaluate, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a run directory, or a checkpoint, best.pt or weights file")
    parser.add_argument("files", nargs="+", metavar="FILE", help="text to measure (plain, .xz, .gz, .zst)")
    parser.add_argument("--bytes", type=int, help="only the first N bytes of each file")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--bptt", type=int, default=1024)
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast (CUDA only)")
    parser.add_argument("--json", action="store_true", help="one JSON object with every figure, on stdout")
    args = parser.parse_args(argv)
    try:
        for flag, value in (("--bytes", args.bytes), ("--streams", args.streams), ("--bptt", args.bptt)):
            if value is not None and value < (2 if flag == "--bytes" else 1):
                raise SettingsError(f"{flag} {value}: too small")
        device = resolve_device(args.device)
        if args.amp == "bf16" and device.type != "cuda":
            raise SettingsError("--amp bf16 needs a CUDA device")
        ck = load_checkpoint(checkpoint_path(args.source))
        model = model_from_checkpoint(ck).to(device)
        texts = []
        for name in args.files:
            data = np.frombuffer(read_spec(name, args.bytes), dtype=np.uint8)
            if data.size < 2:
                raise DataError(f"{name}: too little data")
            texts.append((name, data))
    except (CheckpointError, DataError, SettingsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {}
    for name, data in texts:
        start = time.time()
        with torch.no_grad():
            bpb = evaluate(model, data, args.streams, args.bptt, device, args.amp)
        results[parse_spec(name).name] = bpb
        if not args.json:
            print(
                f"{bpb:.4f} bits per byte on {data.size:,d} bytes of {name}"
                f" (step {ck['step']}, {time.time() - start:.0f} s)",
                flush=True,
            )
    if args.json:
        print(json.dumps({"step": ck["step"], "bpb": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
