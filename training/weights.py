"""Write a run's model weights alone: small enough to keep, enough to start a new run from.

    python -m training.weights RUN_DIR_OR_CHECKPOINT -o WEIGHTS.pt
    python -m training.train --init-from WEIGHTS.pt --data ... --out NEW_RUN

A checkpoint (`checkpoint.pt`) holds the optimiser's moments, the carried state of every stream and the
RNG too, about 5x the weights: that is what an exact `--resume` needs. When the checkpoint cannot be kept
(e.g. between machines), the weights file lets a later run continue training the same model with a fresh
optimiser and schedule (`--init-from`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from training.checkpoints import MODEL_KEYS, CheckpointError, checkpoint_path, load_checkpoint


def weights_only(checkpoint: dict) -> dict:
    """The model's config and float32 weights, plus the run's counters for the model card."""
    slim = {key: checkpoint[key] for key in MODEL_KEYS if key in checkpoint}
    slim["model"] = {name: t.float().clone() for name, t in checkpoint["model"].items()}
    return slim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.weights", description=__doc__.split("\n")[0])
    p.add_argument("source", help="a run directory (its checkpoint.pt) or a checkpoint file")
    p.add_argument("-o", "--output", required=True, type=Path, help="the weights file to write")
    args = p.parse_args(argv)
    try:
        checkpoint = load_checkpoint(checkpoint_path(args.source))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tmp = args.output.with_name(args.output.name + ".tmp")
    torch.save(weights_only(checkpoint), tmp)
    tmp.replace(args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size:,d} bytes, step {checkpoint['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
