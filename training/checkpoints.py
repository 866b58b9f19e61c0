"""Training checkpoints on disk: where they are, how they are written and read.

`RUN_DIR/checkpoint.pt` holds everything an exact `--resume` needs (see `training.train.Trainer`);
`RUN_DIR/best.pt` and a weights file (`python -m training.weights`) hold the model alone.

Reading never runs code from the file: `torch.load(..., weights_only=True)` rebuilds only tensors, dicts,
lists, tuples, numbers, strings and None, which is all a checkpoint holds (no allow-list is needed; the
checkpoints of every earlier version load). A file that asks for anything else is refused with a one-line
`CheckpointError` naming what it asked for.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from shazip.config import ModelConfig

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, unsafe or not one of ours: a one-line message."""


def checkpoint_path(run_dir_or_checkpoint: str | Path) -> Path:
    """A run directory's checkpoint, or the file itself; CheckpointError when there is none."""
    path = Path(run_dir_or_checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
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
    """A checkpoint, best.pt or weights file, read without running any code it might hold."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None
    except pickle.UnpicklingError as e:
        # torch names the refused global ("Unsupported global: GLOBAL os.system ..."); say which.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"a reference to {found.group(1)}" if found else "objects other than tensors and plain data"
        raise CheckpointError(
            f"{path}: refused: it holds {what}, which a checkpoint never does (loading it could run code)"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch.load fails on junk in many ways (KeyError, EOFError, ...)
        why = " ".join([type(e).__name__, *str(e).strip().splitlines()[:1]])
        raise CheckpointError(f"{path}: not a readable checkpoint ({why})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict) or "config" not in ck:
        raise CheckpointError(f"{path}: not a shazip training checkpoint or weights file")
    return ck


def model_from_checkpoint(ck: dict):  # noqa: ANN201 - training.model.SHARNN (imported here, not at the top)
    """The float model a checkpoint (or best.pt, or a weights file) holds, with its weights, in eval mode."""
    from training.model import SHARNN, ArchConfig

    try:
        model = SHARNN(ModelConfig.from_dict(ck["config"]), ArchConfig.from_dict(ck.get("arch")))
        model.load_state_dict(ck["model"])
    except (ValueError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint's model does not load: {first}") from None
    return model.eval()


# Checkpoint entries of the model alone: what best.pt, weights files and model cards keep.
MODEL_KEYS = (
    "config",
    "arch",
    "train_config",
    "step",
    "bytes_seen",
    "data",
    "data_files",
    "data_specs",
    "data_position",
    "valid_file",
    "valid_specs",
    "valid_sets",
    "best_valid_bpb",
    "best_step",
    "last_valid_bpb",
    "train_seconds",
)
