"""Training checkpoints on disk: where they are, how they are written and read.

`RUN_DIR/checkpoint.pt` holds everything an exact `--resume` needs (see `training.train.Trainer`); a
weights file (`python -m training.weights`) holds the model alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run_dir_or_checkpoint: str | Path) -> Path:
    """A run directory's checkpoint, or the file itself; FileNotFoundError when there is none."""
    path = Path(run_dir_or_checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """Atomically: write a temporary file beside it, flush to disk, rename over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
