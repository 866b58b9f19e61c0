"""A short GPU session turned into a better model: the CPU model, widened to the largest size that pays,
trained on the GPU, exported, and measured (float and integer engine), all within a time limit.

    python -m training.gpu_train [--init-from WEIGHTS] [--corpus DIR] [--max-minutes 8] [--widen auto]
                                 [--max-widen 2] [--out DIR] [--device cuda] [--dry-run]

Steps, each timed; OUT/summary.json and OUT/summary.md are rewritten after every step, so a run cut short
still reports what it measured:

1. data: the training mix and the structured supplement without its last 3,000,000 bytes (held out);
   validation on the held-out prose file and on that tail (the first --valid-bytes of each).
2. start: the CPU model's float validation figures on the device.
3. choose: for widening factors k (largest first, up to --max-widen and the engine's d_model <= 1040):
   widen the model k-fold (training/grow.py: the same function, d and d_boom k times larger), measure its
   training speed for a few seconds, and keep the first k whose projected bytes in the time left reach
   --bytes-per-param x its parameters (the data a model of that size needs to use its size: 20 bytes
   per parameter, the compute-optimal rule of thumb). k = 1 always qualifies. The measured steps count.
4. train: the chosen model with LAMB (fresh, warm-up, cosine to 10% at the projected end), stopping by
   time so that the rest fits: training.train.Trainer, so the log is the usual log.jsonl.
5. export: the best weights (best.pt) quantised to a shazip model file; its integer-engine bits per byte
   on the start of the prose validation file (16 lanes, as the model card does), on as many bytes (up
   to --eval-bytes) as the time left allows, with the engine on the training device.

OUT gets NAME.safetensors (the model file), weights.pt (float weights: `--init-from` for a later CPU or
GPU run, `python -m training.export`), log.jsonl and the summary. The run directory with the full
checkpoint stays in --work (not copied: hundreds of MB). `--dry-run` runs every step on CPU with tiny
sizes in seconds (what the test runs); it needs `--init-from` of a small model and `--data`/`--valid`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (docs/design.md, section 4)
_IMPORT_START = time.time()

import torch  # noqa: E402

from training.checkpoints import (  # noqa: E402
    BEST_NAME,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    model_from_checkpoint,
)
from training.data import DataError, load_train_valid  # noqa: E402
from training.grow import widen  # noqa: E402
from training.settings import TRAIN_CONFIGS, SettingsError, check_train  # noqa: E402
from training.train import LOG_NAME, RunOptions, Trainer, evaluate, resolve_device  # noqa: E402

IMPORT_SECONDS = time.time() - _IMPORT_START  # torch and CUDA's libraries: part of the budget from the shell

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INIT = ROOT / "training" / "resume" / "small-default.pt"
# Where the corpus is looked for: the folder carried to a device machine, then the project's shared one.
CORPUS_DIRS = (ROOT / ".gpu_carry", ROOT.parent / "shared" / "corpus", Path("/work/shared/corpus"))
MIX, STRUCTURED, PROSE = "train_mix_v1.txt.xz", "train_structured_v1.txt.xz", "enwiki2015_plain_heldout.txt"
STRUCTURED_HELD_OUT = 3_000_000
ENGINE_MAX_D = 1040  # shazip.engine: larger d_model overflows its exact float32 GEMMs
EVAL_LANES = 16


def find_corpus(given: str | None) -> Path:
    candidates = [Path(given)] if given else list(CORPUS_DIRS)
    for folder in candidates:
        if (folder / MIX).is_file():
            return folder
    raise DataError(f"no {MIX} in {', '.join(str(c) for c in candidates)}: pass --corpus DIR or --data")


def default_specs(corpus: Path) -> tuple[list[str], list[str]]:
    prose = corpus / PROSE if (corpus / PROSE).is_file() else corpus / "valid" / PROSE
    structured = str(corpus / STRUCTURED)
    return (
        [str(corpus / MIX), f"{structured}[:-{STRUCTURED_HELD_OUT}]"],
        [str(prose), f"{structured}[-{STRUCTURED_HELD_OUT}:]"],
    )


class Report:
    """The summary, written to OUT after every step."""

    def __init__(self, out: Path, started: float, budget_s: float) -> None:
        self.out = out
        self.started = started
        self.data: dict = {"budget_s": budget_s, "steps": {}, "ok": False}

    def step(self, name: str, **values: object) -> None:
        self.data["steps"][name] = {"at_s": round(time.time() - self.started, 1), **values}
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.started, 1)
        (self.out / "summary.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "summary.md").write_text(markdown(self.data))


def markdown(d: dict) -> str:
    s = d["steps"]
    status = "done" if d["ok"] else "INCOMPLETE"
    lines = [f"# shazip GPU training: {status} ({d['elapsed_s']} s of {d['budget_s']})"]
    if "environment" in s:
        e = s["environment"]
        lines.append(f"device {e['device']} ({e.get('gpu')}), torch {e['torch']}, dry run: {e['dry_run']}")
    if "data" in s:
        lines.append(
            f"data: {s['data']['train_bytes']:,d} training bytes; validation {s['data']['valid_sets']}"
        )
    if "start" in s:
        lines.append(f"start ({s['start']['params']:,d} parameters): float valid {s['start']['valid']}")
    for probe in s.get("choose", {}).get("probes", []):
        lines.append(
            f"probe widen x{probe['widen']} (d={probe['d_model']}, {probe['params']:,d} params):"
            f" {probe['bytes_per_s']:,.0f} B/s, projected {probe['projected_bytes'] / 1e6:,.0f} MB"
            f" (needs {probe['needed_bytes'] / 1e6:,.0f} MB): {'pays' if probe['pays'] else 'does not pay'};"
            f" widened start {probe.get('start_valid')}"
        )
    if "train" in s:
        t = s["train"]
        lines.append(
            f"trained x{t['widen']}: {t['steps']:,d} steps, {t['bytes'] / 1e6:,.1f} MB in {t['seconds']} s"
            f" ({t['bytes_per_s']:,.0f} B/s); float valid {t['valid']} (best step {t['best_step']})"
        )
    if "export" in s:
        x = s["export"]
        lines.append(
            f"exported {x['file']} ({x['bytes']:,d} bytes): integer engine {x.get('bpb_integer')} bpb,"
            f" float {x.get('bpb_float_same_bytes')} on the same {x.get('eval_bytes')} bytes of"
            f" {x.get('eval_source')} ({EVAL_LANES} lanes; {x.get('engine')})"
        )
    if d.get("error"):
        lines.append(f"ERROR: {d['error']}")
    return "\n".join(lines) + "\n"


def make_trainer(model, args: argparse.Namespace, corpus, work: Path, total_steps: int) -> Trainer:  # noqa: ANN001
    cfg = dataclasses.replace(
        TRAIN_CONFIGS["small"],
        batch=args.batch,
        bptt=args.bptt,
        lr=args.lr,
        warmup=args.warmup,
        schedule="cosine",
        total_steps=total_steps,
        min_lr_ratio=0.1,
        eval_steps=0,
        eval_batch=EVAL_LANES,
        eval_bptt=args.eval_bptt,
        log_steps=args.log_steps,
        checkpoint_steps=0,
        checkpoint_minutes=1e6,  # one checkpoint, at the end
    )
    check_train(cfg)
    cfg_model = dataclasses.replace(model.cfg, dropout=0.0)  # a run far shorter than an epoch's overfitting
    work.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        cfg_model, cfg, corpus, RunOptions(out=work, device=args.device, quiet=args.quiet), arch=model.arch
    )
    trainer.model.load_state_dict(model.state_dict())
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(trainer: Trainer, seconds: float, warmup_steps: int) -> tuple[float, float]:
    """(bytes/s, s/step) over `seconds` of training steps after `warmup_steps` untimed ones."""
    for _ in range(warmup_steps):  # cuDNN plans, the allocator, autocast caches
        trainer.train_step()
    sync(trainer.device)
    start, steps, nbytes = time.time(), 0, 0
    while steps < 3 or time.time() - start < seconds:
        _, t = trainer.train_step()
        steps += 1
        nbytes += t * trainer.cfg.batch
    sync(trainer.device)
    elapsed = time.time() - start
    return nbytes / elapsed, elapsed / steps


def valid_figures(model, corpus, args: argparse.Namespace, device: torch.device) -> tuple[dict, float]:  # noqa: ANN001
    start = time.time()
    model = model.to(device)
    figures = {
        name: round(
            evaluate(
                model, data, EVAL_LANES, args.eval_bptt, device, "auto" if device.type == "cuda" else "off"
            ),
            4,
        )
        for name, data in corpus.validation_sets()
    }
    sync(device)
    return figures, time.time() - start


@torch.no_grad()
def float_bpb_as_engine(model, data: bytes, lanes: int, device: torch.device) -> float:  # noqa: ANN001
    """The float model's bits per byte on `data` cut into `lanes` equal lanes, each started from the
    engine's START_BYTE as `shazip.engine.measure_bpb` does (len(data) a multiple of lanes): the integer
    figure's like-for-like float counterpart, on the device (float32)."""
    from shazip.engine import START_BYTE

    per = len(data) // lanes
    x = torch.frombuffer(bytearray(data[: per * lanes]), dtype=torch.uint8).long().view(lanes, per)
    x = torch.cat([torch.full((lanes, 1), START_BYTE, dtype=torch.long), x], dim=1).to(device)
    model = model.to(device).float().eval()
    state, nats = None, 0.0
    for s in range(0, per, 512):
        logits, state = model(x[:, s : min(s + 512, per)], state)
        target = x[:, s + 1 : min(s + 512, per) + 1]
        nats += float(
            torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="sum")
        )
    return nats / math.log(2) / (per * lanes)


def run(args: argparse.Namespace, report: Report, started: float, deadline: float) -> None:
    device = resolve_device(args.device)
    args.device = str(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    report.step("environment", device=str(device), gpu=gpu, torch=torch.__version__, dry_run=args.dry_run)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_train_"))

    # 1. data
    t0 = time.time()
    if args.data:
        data_specs, valid_specs = args.data, args.valid
    else:
        data_specs, valid_specs = default_specs(find_corpus(args.corpus))
        valid_specs = args.valid or valid_specs
    corpus = load_train_valid(data_specs, valid_specs, args.valid_bytes)
    report.step(
        "data",
        seconds=round(time.time() - t0, 1),
        train_bytes=int(corpus.train.size),
        valid_sets={name: int(a.size) for name, a in corpus.validation_sets()},
        specs=data_specs,
    )

    # 2. the CPU model as it is
    init = load_checkpoint(checkpoint_path(args.init_from))
    base = model_from_checkpoint(init)
    if not base.arch.lstm_skip:
        raise SettingsError("the model has no LSTM skip connection: the shazip engine could not run it")
    start_valid, eval_s = valid_figures(base, corpus, args, device)
    report.step(
        "start",
        params=base.num_parameters(),
        valid=start_valid,
        eval_s=round(eval_s, 1),
        step=init.get("step"),
    )
    base = base.cpu()

    # 3. the largest widening that pays
    limit = max(1, ENGINE_MAX_D // base.cfg.d_model)
    factors = (
        [k for k in (4, 2, 1) if k <= min(args.max_widen, limit)]
        if args.widen == "auto"
        else [int(args.widen)]
    )
    if int(factors[0]) * base.cfg.d_model > ENGINE_MAX_D:
        raise SettingsError(f"--widen {factors[0]}: d_model {factors[0] * base.cfg.d_model} > {ENGINE_MAX_D}")
    probes = []
    trainer = None
    chosen = factors[-1]
    for k in factors:
        big = widen(base, k, noise=args.noise, seed=k)
        cand_valid, cand_eval_s = valid_figures(big, corpus, args, device)
        trainer = make_trainer(big, args, corpus, work / f"x{k}", total_steps=10**9)
        del big
        rate, step_s = probe(trainer, args.probe_seconds, args.probe_warmup)
        # What training has left once the rest is reserved: final validation, checkpoint, export, engine.
        reserve = 1.5 * cand_eval_s + args.reserve_seconds * (1 + k * k / 16)
        train_left = max(0.0, deadline - time.time() - reserve)
        params = trainer.model.num_parameters()
        projected, needed = rate * train_left, args.bytes_per_param * params
        pays = k == factors[-1] or projected >= needed
        probes.append(
            {
                "widen": k,
                "d_model": trainer.model_cfg.d_model,
                "params": params,
                "bytes_per_s": round(rate, 1),
                "step_s": round(step_s, 4),
                "projected_bytes": round(projected),
                "needed_bytes": round(needed),
                "pays": pays,
                "start_valid": cand_valid,
                "eval_s": round(cand_eval_s, 1),
            }
        )
        report.step("choose", probes=probes)
        if pays:
            chosen = k
            break
        del trainer
        trainer = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    assert trainer is not None

    # 4. train until the reserve
    step_s = probes[-1]["step_s"]
    reserve = 1.5 * probes[-1]["eval_s"] + args.reserve_seconds * (1 + chosen * chosen / 16)
    train_left = max(0.0, deadline - time.time() - reserve)
    trainer.cfg = dataclasses.replace(
        trainer.cfg, total_steps=trainer.step + max(1, int(train_left / step_s))
    )
    trainer.options.max_minutes = max(train_left, 1.0) / 60
    t0, steps0, bytes0 = time.time(), trainer.step, trainer.bytes_seen
    stop = trainer.run()
    seconds = time.time() - t0
    valid = [json.loads(line) for line in (trainer.out / LOG_NAME).read_text().splitlines()]
    last = [r for r in valid if r["event"] == "valid"][-1]
    report.step(
        "train",
        widen=chosen,
        steps=trainer.step,
        steps_this_phase=trainer.step - steps0,
        bytes=trainer.bytes_seen - bytes0,
        seconds=round(seconds, 1),
        bytes_per_s=round((trainer.bytes_seen - bytes0) / max(seconds, 1e-9), 1),
        valid=last["sets"],
        best_step=stop["best_step"],
        stop=stop["reason"],
    )
    shutil.copy(trainer.out / LOG_NAME, report.out / LOG_NAME)
    best_path = trainer.out / BEST_NAME
    best = load_checkpoint(best_path)
    best["bytes_seen"] = int(init.get("bytes_seen", 0)) + trainer.bytes_seen  # the model's total
    best["grown_from"] = {"file": str(args.init_from), "step": init.get("step"), "widen": chosen}
    torch.save(best, report.out / "weights.pt")
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 5. export and the integer engine's figure
    from shazip import engine as E
    from training.export import export_checkpoint

    name = args.name or f"shazip-gpu-x{chosen}"
    model_file = report.out / f"{name}.safetensors"
    mf = export_checkpoint(report.out / "weights.pt", None, name=name, eval_bytes=0, calibration_file=None)
    prose = corpus.valid[: args.eval_bytes].tobytes()
    engine = E.Engine(mf, device=device, backend=args.engine_backend)
    pilot = prose[: EVAL_LANES * args.pilot_steps]
    t0 = time.time()
    E.measure_bpb(engine, pilot, EVAL_LANES)
    per_byte = (time.time() - t0) / max(len(pilot), 1)
    affordable = int((deadline - time.time() - 5) / max(per_byte, 1e-9))
    n = max(len(pilot), min(len(prose), affordable)) // EVAL_LANES * EVAL_LANES
    t0 = time.time()
    bpb_integer = E.measure_bpb(engine, prose[:n], EVAL_LANES)
    bpb_float = float_bpb_as_engine(model_from_checkpoint(best), prose[:n], EVAL_LANES, device)
    card = {
        **mf.card,
        "bpb_integer": round(bpb_integer, 5),
        "eval_bytes": n,
        "eval_source": corpus.valid_name,
        "trained_on": f"{gpu or device.type}, {chosen}x widened from {Path(args.init_from).name}",
    }
    mf = mf.with_card(card)
    mf.save(model_file)
    report.step(
        "export",
        file=model_file.name,
        bytes=model_file.stat().st_size,
        bpb_integer=round(bpb_integer, 4),
        eval_bytes=n,
        eval_source=corpus.valid_name,
        engine=f"{engine.backend} on {device}",
        seconds=round(time.time() - t0, 1),
        bpb_float_same_bytes=round(bpb_float, 4),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.gpu_train", description=__doc__.split("\n")[0])
    p.add_argument("--init-from", default=str(DEFAULT_INIT), help="the CPU model: weights file or checkpoint")
    p.add_argument(
        "--corpus", help="folder with the corpus files (default: .gpu_carry, then ../shared/corpus)"
    )
    p.add_argument("--data", nargs="+", help="training files/ranges instead of the corpus defaults")
    p.add_argument("--valid", nargs="+", help="validation files/ranges (the first: the main one)")
    p.add_argument("--max-minutes", type=float, default=8.0, help="the whole run, export included")
    p.add_argument("--widen", default="auto", choices=["auto", "1", "2", "4"])
    p.add_argument("--max-widen", type=int, default=2, help="auto: the largest factor tried (4: d=1024)")
    p.add_argument("--bytes-per-param", type=float, default=20.0, help="auto: what a size needs to pay")
    p.add_argument("--noise", type=float, default=1e-3, help="symmetry-breaking noise in widened weights")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--bptt", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-bptt", type=int, default=512)
    p.add_argument("--valid-bytes", type=int, default=200_000, help="of each validation set")
    p.add_argument("--eval-bytes", type=int, default=100_000, help="integer engine: at most this many")
    p.add_argument("--log-steps", type=int, default=50)
    p.add_argument("--probe-seconds", type=float, default=8.0)
    p.add_argument("--probe-warmup", type=int, default=3)
    p.add_argument("--pilot-steps", type=int, default=64, help="integer engine steps timed before the rest")
    p.add_argument(
        "--reserve-seconds",
        type=float,
        default=45.0,
        help="kept for the checkpoint, export and engine (x (1 + k^2/16) for a k-fold model)",
    )
    p.add_argument("--engine-backend", default="auto", choices=["auto", "torch", "numba"])
    p.add_argument("--name", help="model name (default shazip-gpu-xK)")
    p.add_argument("--out", type=Path, help="default: $OUT if set, else ./gpu_train_out")
    p.add_argument("--work", help="run directory for the trainer (default: a temporary folder)")
    p.add_argument("--device", help="default: cuda if available")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="every step on CPU with tiny sizes (batch 4, bptt 32, short probes and budget) in seconds",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.time() - (IMPORT_SECONDS if argv is None else 0.0)
    args = build_parser().parse_args(argv)
    if args.dry_run:
        args.device = args.device or "cpu"
        args.batch, args.bptt, args.eval_bptt, args.warmup, args.log_steps = 4, 32, 64, 5, 10
        args.probe_seconds, args.probe_warmup, args.pilot_steps = 0.3, 1, 8
        args.reserve_seconds = 3.0
        args.valid_bytes = min(args.valid_bytes, 3000)
        args.eval_bytes = min(args.eval_bytes, 1500)
        args.bytes_per_param = 1e-6 if args.bytes_per_param == 20.0 else args.bytes_per_param
        if args.max_minutes == 8.0:
            args.max_minutes = 0.5
    out = args.out or Path(os.environ.get("OUT") or "gpu_train_out")
    budget = args.max_minutes * 60
    try:
        if not (math.isfinite(budget) and budget > 0):
            raise SettingsError("--max-minutes must be above 0")
        if args.widen == "auto" and args.max_widen < 1:
            raise SettingsError("--max-widen must be 1 or more")
        out.mkdir(parents=True, exist_ok=True)
    except (SettingsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = Report(out, started, budget)
    try:
        run(args, report, started, started + budget)
        report.data["ok"] = True
    except (SettingsError, DataError, CheckpointError) as e:
        report.data["error"] = str(e)
        report.write()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a device run reports what it got before it failed
        report.data["error"] = f"{type(e).__name__}: {e}"
        report.data["traceback"] = traceback.format_exc()
        report.write()
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    finally:
        report.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        report.write()
    print(markdown(report.data), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
