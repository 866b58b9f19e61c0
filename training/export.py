"""Export a training checkpoint as a shazip model file (integer weights, tables, config, model card).

    python -m training.export RUN_DIR_OR_CHECKPOINT -o MODEL.safetensors [--name NAME]
                              [--calibration FILE] [--eval FILE] [--eval-bytes N] [--eval-lanes N]

Calibration text (activation ranges for quantisation) defaults to the start of the run's training data;
the card's `bpb_integer` is measured by the integer engine on the start of the run's validation data
(or `--eval FILE`). Then: `shazip compress --model MODEL.safetensors FILE`.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from training.checkpoints import CheckpointError, checkpoint_path, load_checkpoint, model_from_checkpoint
from training.data import DataError, enwik8_bytes, is_enwik8_path, parse_spec, read_spec, split_enwik8


def default_texts(
    ck: dict, calibration_bytes: int, eval_bytes: int
) -> tuple[bytes, bytes | None, str | None]:
    """(calibration text, evaluation text or None, evaluation source) from the files the run used."""
    files = ck.get("data_files") or []
    # Byte ranges (FILE[a:b]) where the run used them; older checkpoints have whole files only.
    data_specs = ck.get("data_specs") or files
    valid_specs = ck.get("valid_specs") or ([ck["valid_file"]] if ck.get("valid_file") else [])
    if len(files) == 1 and is_enwik8_path(files[0]) and Path(files[0]).exists():
        train, valid, _ = split_enwik8(enwik8_bytes(files[0]))
        return train[:calibration_bytes], valid[:eval_bytes], "enwik8 validation split"
    if not files or not Path(files[0]).exists():
        raise DataError("the checkpoint's training files are not available here: pass --calibration FILE")
    calibration = read_spec(data_specs[0], calibration_bytes)
    if valid_specs and parse_spec(valid_specs[0]).path.exists():
        return calibration, read_spec(valid_specs[0], eval_bytes), parse_spec(valid_specs[0]).name
    return calibration, None, None


def valid_name(ck: dict) -> str | None:
    """The run's main validation set as the card names it (a file name, with its byte range if any)."""
    if ck.get("valid_specs"):
        return parse_spec(ck["valid_specs"][0]).name
    return Path(ck["valid_file"]).name if ck.get("valid_file") else None


def export_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    calibration_file: str | None = None,
    calibration_bytes: int = 65_536,
    eval_file: str | None = None,
    eval_bytes: int = 100_000,
    eval_lanes: int = 16,
):  # noqa: ANN201 - returns shazip.modelfile.ModelFile
    import torch  # noqa: F401 - imported for its side effects before the model

    from training.quantise import export_model

    path = checkpoint_path(source)
    ck = load_checkpoint(path)
    model = model_from_checkpoint(ck)

    calibration, eval_data, eval_source = (None, None, None)
    if calibration_file is None or eval_file is None:
        try:
            calibration, eval_data, eval_source = default_texts(ck, calibration_bytes, eval_bytes)
        except DataError:
            if calibration_file is None:
                raise
    if calibration_file is not None:
        calibration = read_spec(calibration_file, calibration_bytes)
    if eval_file is not None:
        eval_data, eval_source = read_spec(eval_file, eval_bytes), parse_spec(eval_file).name
    if eval_bytes == 0:
        eval_data, eval_source = None, None

    train_cfg = ck.get("train_config", {})
    card = {
        "training_data": ck.get("data"),
        "training_files": [Path(f).name for f in ck.get("data_files") or []],
        "steps": ck["step"],
        "bytes_seen": ck["bytes_seen"],
        "epochs": round(
            ck["data_position"]["epoch"]
            + ck["data_position"]["position"] / (ck["data_position"]["streams"] - 1),
            4,
        ),
        "parameters": model.num_parameters(),
        "valid_bpb_float": ck.get("last_valid_bpb"),
        "valid_file": valid_name(ck),
        "train_config": {
            k: train_cfg.get(k) for k in ("lr", "batch", "bptt", "schedule", "warmup") if k in train_cfg
        },
        "eval_source": eval_source,
        "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    name = name or Path(output).stem
    return export_model(
        model,
        output,
        calibration=calibration,
        name=name,
        card=card,
        eval_data=eval_data,
        eval_lanes=eval_lanes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="a run directory (its checkpoint.pt) or a checkpoint file")
    parser.add_argument("-o", "--output", required=True, help="the model file to write (.safetensors)")
    parser.add_argument(
        "--name", help="model name recorded in the file and in .shz headers (default: file stem)"
    )
    parser.add_argument(
        "--calibration", help="text for activation ranges (default: start of the training data)"
    )
    parser.add_argument("--calibration-bytes", type=int, default=65_536)
    parser.add_argument(
        "--eval", help="text for the card's integer-engine bpb (default: the run's validation file)"
    )
    parser.add_argument("--eval-bytes", type=int, default=100_000, help="0: skip the measurement")
    parser.add_argument("--eval-lanes", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        mf = export_checkpoint(
            args.source,
            args.output,
            name=args.name,
            calibration_file=args.calibration,
            calibration_bytes=args.calibration_bytes,
            eval_file=args.eval,
            eval_bytes=args.eval_bytes,
            eval_lanes=args.eval_lanes,
        )
    except (DataError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    card = mf.card
    print(
        f"wrote {args.output}: model {mf.name} id {mf.model_id_hex[:16]}, {card['parameters']:,d} parameters"
    )
    print(
        f"  trained {card['steps']:,d} steps, {card['bytes_seen']:,d} bytes;"
        f" float valid bpb {card['valid_bpb_float']}"
    )
    if "bpb_integer" in card:
        print(
            f"  integer engine: {card['bpb_integer']} bpb"
            f" on {card['eval_bytes']:,d} bytes of {card['eval_source']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
