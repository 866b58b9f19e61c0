"""Train a SHA-RNN byte model: the paper's enwik8 setup, or any corpus.

    python -m training.train --config small --data CORPUS [CORPUS ...] [--valid FILE] --out RUN_DIR
                             [--resume] [--max-steps N] [--max-minutes M] [--set key=value ...]

`--set` overrides any field of the model config (`shazip.config.ModelConfig`) or of the training config
(`TrainConfig` below), e.g. `--set lr=1e-3 --set d_model=512`. RUN_DIR gets `checkpoint.pt` (written
atomically, every `checkpoint_steps` steps and `checkpoint_minutes` minutes, and on exit or SIGTERM/SIGINT)
and `log.jsonl`. `--resume` continues exactly where the checkpoint left off: same weights, optimizer,
data position, carried LSTM/attention state and RNG, so an interrupted run equals an uninterrupted one.

Multi-GPU: `torchrun --nproc_per_node=K -m training.train ...` (DDP; each rank takes `batch` streams).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

# Before torch starts OpenMP: with the default busy-waiting, two threads collapse as soon as another
# process takes a core (DESIGN.md section 4). An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F

from shazip.config import CONFIGS, ModelConfig
from training.checkpoints import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from training.data import Corpus, DataError, StreamBatches, jittered_bptt, load_train_valid
from training.model import SHARNN, ModelState
from training.optim import Lamb

LOG_NAME = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the architecture. Any field can be set with `--set key=value`."""

    # optimiser (LAMB, as in the paper)
    lr: float = 2e-3
    warmup: int = 800  # linear warm-up steps
    weight_decay: float = 1.2e-6
    clip: float = 0.25  # global gradient-norm clip
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    min_trust: float = 0.25
    lamb_bias_correction: bool = True
    lamb_weight_norm_clamp: float = 0.0  # 10 in the reference code's LAMB (see training/optim.py)
    # data layout
    batch: int = 16  # streams per process
    bptt: int = 1024  # window length
    jitter: bool = True  # the paper's bptt jitter: 95% N(bptt, 5), 5% N(bptt/2, 5)
    scale_lr_by_window: bool = False  # lr * window / bptt, as the reference code does
    holdout_bytes: int = 1_000_000  # validation = data tail when no --valid is given
    # schedule: "paper" = warm-up, lr until `epochs`, then `final_lr` for `final_epochs` (then stop);
    #           "cosine" = warm-up, cosine from lr to lr*min_lr_ratio at `total_steps`, then flat
    schedule: str = "paper"
    epochs: float = 32.0
    final_lr: float = 1e-3
    final_epochs: float = 1.0
    total_steps: int = 100_000
    min_lr_ratio: float = 0.1
    # evaluation, logging, checkpoints
    eval_steps: int = 1000  # validate every this many steps (0: only at the end)
    eval_batch: int = 16
    eval_bptt: int = 1024
    log_steps: int = 50
    checkpoint_steps: int = 500
    checkpoint_minutes: float = 10.0
    # execution
    seed: int = 1234
    threads: int = 0  # torch intra-op threads on CPU (0: torch's default)
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, float32 on CPU; "bf16"; "off"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_CONFIGS: dict[str, TrainConfig] = {
    # The paper (Merity 2019) on enwik8: LAMB lr 2e-3, 800 warm-up steps, wd 1.2e-6, clip 0.25, batch 16,
    # bptt 1024 jittered, 32 epochs then a pass at lr 1e-3; the reference code's LAMB variant.
    # Validation about once per epoch (5,500 steps) on the 5 MB split; a 650 MB checkpoint every 2,000 steps.
    "enwik8": TrainConfig(
        lamb_bias_correction=False,
        lamb_weight_norm_clamp=10.0,
        scale_lr_by_window=True,
        eval_steps=5000,
        checkpoint_steps=2000,
        checkpoint_minutes=15.0,
    ),
    # The CPU default model (README, "Training models", for the measurements behind batch/bptt).
    # The CPU default model. Short windows with many streams: the attention memory (256) and the LSTM state
    # are carried across windows, so bptt 128 loses little context and gives ~2x the updates of 256. Set
    # total_steps to what the run can afford: hours * 3600 * bytes/s / (batch * bptt).
    # Dropout 0 is recommended on CPU (`--set dropout=0`): the run is far from overfitting 151 MB, and the
    # dropout masks alone cost ~15-30% of a CPU step.
    "small": TrainConfig(
        batch=32,
        bptt=128,
        warmup=200,
        schedule="cosine",
        total_steps=20_000,
        eval_steps=500,
        eval_batch=16,
        eval_bptt=512,
        log_steps=25,
        checkpoint_steps=100,
        checkpoint_minutes=5.0,
    ),
    # For tests and smoke runs.
    "tiny": TrainConfig(
        batch=4,
        bptt=32,
        warmup=10,
        lr=3e-3,
        schedule="cosine",
        total_steps=1000,
        eval_steps=100,
        eval_batch=4,
        eval_bptt=64,
        log_steps=10,
        checkpoint_steps=100,
        checkpoint_minutes=5.0,
        holdout_bytes=20_000,
    ),
}


# ---------------------------------------------------------------------------------------------------------
# Configuration


def parse_value(text: str, like: object) -> object:
    if isinstance(like, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if isinstance(like, int):
        return int(float(text)) if "e" in text.lower() else int(text)
    if isinstance(like, float):
        return float(text)
    return text


def apply_overrides(
    model_cfg: ModelConfig, train_cfg: TrainConfig, overrides: list[str]
) -> tuple[ModelConfig, TrainConfig]:
    """`key=value` strings applied to whichever config has the field (model fields first)."""
    model_fields = {f.name for f in fields(ModelConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    model_changes: dict[str, object] = {}
    train_changes: dict[str, object] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in model_fields:
            model_changes[key] = parse_value(text, getattr(model_cfg, key))
        elif key in train_fields:
            train_changes[key] = parse_value(text, getattr(train_cfg, key))
        else:
            raise ValueError(
                f"unknown setting {key!r}; model: {sorted(model_fields)}; training: {sorted(train_fields)}"
            )
    return model_cfg.with_overrides(**model_changes), dataclasses.replace(train_cfg, **train_changes)


def optimizer_settings(cfg: TrainConfig) -> dict:
    return dict(
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        min_trust=cfg.min_trust,
        bias_correction=cfg.lamb_bias_correction,
        weight_norm_clamp=cfg.lamb_weight_norm_clamp,
    )


def learning_rate(cfg: TrainConfig, step: int, epoch_progress: float) -> float:
    """The learning rate for `step` (0-based); `epoch_progress` = epochs done so far, fractional."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "paper":
        return cfg.lr if epoch_progress < cfg.epochs else cfg.final_lr
    if cfg.schedule == "cosine":
        span = max(1, cfg.total_steps - cfg.warmup)
        t = min(1.0, (step - cfg.warmup) / span)
        floor = cfg.lr * cfg.min_lr_ratio
        return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * t))
    if cfg.schedule == "constant":
        return cfg.lr
    raise ValueError(f"unknown schedule {cfg.schedule!r} (paper, cosine, constant)")


def schedule_finished(cfg: TrainConfig, epoch_progress: float) -> bool:
    return cfg.schedule == "paper" and epoch_progress >= cfg.epochs + cfg.final_epochs


# ---------------------------------------------------------------------------------------------------------
# Model state helpers


def carry_state(state: ModelState) -> ModelState:
    """Detached, float32 copy of the state to carry into the next window (autocast may return bf16)."""
    return ModelState(
        lstm=[(h.detach().float(), c.detach().float()) for h, c in state.lstm],
        memory=state.memory.detach().float(),
    )


def state_to_dict(state: ModelState) -> dict:
    return {"lstm": [(h.cpu(), c.cpu()) for h, c in state.lstm], "memory": state.memory.cpu()}


def state_from_dict(d: dict, device: torch.device, rows: slice | None = None) -> ModelState:
    rows = rows if rows is not None else slice(None)
    return ModelState(
        lstm=[(h[rows].to(device), c[rows].to(device)) for h, c in d["lstm"]],
        memory=d["memory"][rows].to(device),
    )


def gather_state(state: ModelState, world: int) -> ModelState:
    """All ranks' carried states concatenated along the batch (collective: every rank must call it)."""
    if not dist.is_initialized():
        return state

    def gather(t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)

    return ModelState(lstm=[(gather(h), gather(c)) for h, c in state.lstm], memory=gather(state.memory))


# ---------------------------------------------------------------------------------------------------------
# Evaluation


def check_amp(device: torch.device, amp: str) -> None:
    if amp not in ("auto", "bf16", "off"):
        raise ValueError(f"amp must be auto, bf16 or off, not {amp!r}")
    if amp == "bf16" and device.type != "cuda":
        # oneDNN has no bf16 LSTM on most CPUs ("could not create a primitive descriptor"), and on CPU
        # bf16 would not be faster anyway.
        raise ValueError("amp=bf16 needs a CUDA device; on CPU training runs in float32")


def autocast_context(device: torch.device, amp: str):  # noqa: ANN201 - a context manager
    """bf16 autocast on CUDA (amp auto or bf16); float32 otherwise. The weights stay float32."""
    use_bf16 = device.type == "cuda" and amp in ("auto", "bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


@torch.no_grad()
def evaluate(
    model: SHARNN,
    data,  # np.ndarray uint8  # noqa: ANN001
    batch: int,
    bptt: int,
    device: torch.device,
    amp: str = "off",
    rank: int = 0,
    world: int = 1,
) -> float:
    """Bits per byte on `data` read as `batch` contiguous streams with carried state (dropout off).

    Every byte but each stream's first is predicted. Under DDP the streams are shared out among ranks
    and the sums combined, so every rank returns the same figure.
    """
    was_training = model.training
    model.eval()
    batch = max(1, min(batch, data.size // 2))
    streams = StreamBatches(data, batch, rows=slice(rank, None, world))
    state = model.initial_state(streams.streams.shape[0], device) if streams.streams.shape[0] else None
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    if state is not None:
        for _, x, y in streams.windows(bptt):
            x, y = x.to(device), y.to(device)
            with autocast_context(device, amp):
                logits, state = model(x, state)
            state = carry_state(state)
            total_nats += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
            )
            count += y.numel()
    if dist.is_initialized():
        dist.all_reduce(total_nats)
        dist.all_reduce(count)
    model.train(was_training)
    return float(total_nats / count) / math.log(2)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


def rng_state(device: torch.device) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


# ---------------------------------------------------------------------------------------------------------
# Training


@dataclass
class RunOptions:
    out: Path
    max_steps: int | None = None
    max_minutes: float | None = None
    device: str | None = None
    quiet: bool = False


class Trainer:
    """One training run (one process; a rank under torchrun)."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        corpus: Corpus,
        options: RunOptions,
        checkpoint: dict | None = None,
    ) -> None:
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.corpus = corpus
        self.options = options
        self.out = options.out
        # Under torchrun (even a one-process world) all collective code paths run: DDP, gathers, reductions.
        self.distributed = dist.is_initialized()
        self.world = dist.get_world_size() if self.distributed else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.is_main = self.rank == 0
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # torchrun: one GPU per local process
        if options.device:
            self.device = torch.device(options.device)
            if self.device.type == "cuda" and self.device.index is None:
                self.device = torch.device("cuda", local_rank)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # training only; the engine is integer-exact
            torch.backends.cudnn.allow_tf32 = True
        check_amp(self.device, train_cfg.amp)
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)

        torch.manual_seed(train_cfg.seed)
        self.model = SHARNN(model_cfg).to(self.device)
        self.net: torch.nn.Module = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = Lamb(self.model.parameters(), **optimizer_settings(train_cfg))
        self.rows = slice(self.rank * train_cfg.batch, (self.rank + 1) * train_cfg.batch)
        self.batches = StreamBatches(corpus.train, train_cfg.batch * self.world, rows=self.rows)

        self.step = 0
        self.epoch = 0
        self.position = 0
        self.bytes_seen = 0
        self.best_valid_bpb: float | None = None
        self.last_valid_bpb: float | None = None
        self.train_seconds = 0.0
        self.state = self.model.initial_state(train_cfg.batch, self.device)
        if checkpoint is not None:
            self._restore(checkpoint)
        # Seed each rank's dropout differently (only on a fresh start; a resume restores the RNG).
        if checkpoint is None and self.rank:
            torch.manual_seed(train_cfg.seed + 1000 * self.rank)
        self.stop_requested = False

    # -- checkpoints --

    def _restore(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        # load_state_dict brings back the saved hyperparameters; the current config wins (so `--set` on
        # resume works, and checkpoints from before a new optimiser option still load).
        for group in self.optimizer.param_groups:
            group.update(optimizer_settings(self.cfg))
        self.step = ck["step"]
        self.bytes_seen = ck["bytes_seen"]
        self.epoch = ck["data_position"]["epoch"]
        self.position = ck["data_position"]["position"]
        if ck["data_position"]["streams"] != self.batches.length:
            raise DataError(
                "the checkpoint's data layout does not match: other training data, batch or process count"
                f" (stream length {self.batches.length:,d}, checkpoint {ck['data_position']['streams']:,d})"
            )
        self.best_valid_bpb = ck.get("best_valid_bpb")
        self.last_valid_bpb = ck.get("last_valid_bpb")
        self.train_seconds = ck.get("train_seconds", 0.0)
        self.state = state_from_dict(ck["carry"], self.device, self.rows)
        rng = ck["rng"][self.rank] if self.rank < len(ck["rng"]) else ck["rng"][0]
        set_rng_state(rng, self.device)

    def checkpoint_dict(self) -> dict | None:
        """Collective under DDP; returns the checkpoint on rank 0, None elsewhere."""
        carry = gather_state(self.state, self.world)
        rngs = [rng_state(self.device)]
        if self.distributed:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.is_main:
            return None
        return {
            "config": self.model_cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "bytes_seen": self.bytes_seen,
            "data_position": {"epoch": self.epoch, "position": self.position, "streams": self.batches.length},
            "rng": rngs,
            "carry": state_to_dict(carry),
            "train_config": self.cfg.to_dict(),
            "data": self.corpus.description,
            "data_files": self.corpus.files,
            "valid_file": self.corpus.valid_file,
            "world_size": self.world,
            "best_valid_bpb": self.best_valid_bpb,
            "last_valid_bpb": self.last_valid_bpb,
            "train_seconds": self.train_seconds,
        }

    def save(self) -> None:
        ck = self.checkpoint_dict()
        if ck is not None:
            save_checkpoint(self.out / CHECKPOINT_NAME, ck)

    # -- logging --

    def log(self, record: dict) -> None:
        if not self.is_main:
            return
        record = {"time": round(time.time(), 1), **record}
        with (self.out / LOG_NAME).open("a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.options.quiet:
            print(format_record(record), flush=True)

    # -- the loop --

    def epoch_progress(self) -> float:
        return self.epoch + self.position / (self.batches.length - 1)  # length - 1 inputs per stream

    def validate(self) -> float:
        bpb = evaluate(
            self.model,
            self.corpus.valid,
            self.cfg.eval_batch,
            self.cfg.eval_bptt,
            self.device,
            self.cfg.amp,
            self.rank,
            self.world,
        )
        self.last_valid_bpb = bpb
        if self.best_valid_bpb is None or bpb < self.best_valid_bpb:
            self.best_valid_bpb = bpb
        return bpb

    def train_step(self) -> tuple[float, int]:
        """One optimiser step on the next window of every stream. Returns (train bpb, window length)."""
        cfg = self.cfg
        bptt = jittered_bptt(cfg.seed, self.step, cfg.bptt, cfg.jitter)
        window = self.batches.window(self.position, bptt)
        if window is None:  # end of the data: next epoch, fresh state (as the reference code does)
            self.epoch += 1
            self.position = 0
            self.state = self.model.initial_state(cfg.batch, self.device)
            window = self.batches.window(0, bptt)
            assert window is not None
        x, y = window[0].to(self.device, non_blocking=True), window[1].to(self.device, non_blocking=True)
        lr = learning_rate(cfg, self.step, self.epoch_progress())
        if cfg.scale_lr_by_window:  # AWD-LSTM / SHA-RNN: shorter windows take proportionally smaller steps
            lr *= x.shape[1] / cfg.bptt
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast_context(self.device, cfg.amp):
            logits, new_state = self.net(x, self.state)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        self.optimizer.step()
        self.state = carry_state(new_state)
        t = x.shape[1]
        self.position += t
        self.step += 1
        self.bytes_seen += t * cfg.batch * self.world
        return loss.item() / math.log(2), t

    def should_stop(self, started: float) -> str | None:
        if self.options.max_steps is not None and self.step >= self.options.max_steps:
            return "max_steps"
        if self.options.max_minutes is not None and (time.time() - started) / 60 >= self.options.max_minutes:
            return "max_minutes"
        if schedule_finished(self.cfg, self.epoch_progress()):
            return "schedule finished"
        if self.stop_requested:
            return "signal"
        return None

    def run(self) -> dict:
        cfg = self.cfg
        started = time.time()
        last_checkpoint = started
        self.log(
            {
                "event": "start",
                "step": self.step,
                "params": self.model.num_parameters(),
                "model": self.model_cfg.to_dict(),
                "train": cfg.to_dict(),
                "data": self.corpus.description,
                "train_bytes": int(self.corpus.train.size),
                "valid_bytes": int(self.corpus.valid.size),
                "device": str(self.device),
                "world": self.world,
                "threads": torch.get_num_threads(),
            }
        )
        window_bits = 0.0
        window_bytes = 0
        window_steps = 0
        window_start = time.time()
        stop_reason = self.should_stop(started)
        while stop_reason is None:
            step_start = time.time()
            bpb, t = self.train_step()
            self.train_seconds += time.time() - step_start
            window_bits += bpb * t
            window_bytes += t
            window_steps += 1
            if cfg.log_steps and self.step % cfg.log_steps == 0:
                elapsed = time.time() - window_start
                self.log(
                    {
                        "event": "train",
                        "step": self.step,
                        "epoch": round(self.epoch_progress(), 4),
                        "lr": learning_rate(cfg, self.step - 1, self.epoch_progress()),
                        "train_bpb": round(window_bits / window_bytes, 4),
                        "bytes_per_s": round(window_bytes * cfg.batch * self.world / elapsed, 1),
                        "bytes_seen": self.bytes_seen,
                    }
                )
                window_bits, window_bytes, window_steps, window_start = 0.0, 0, 0, time.time()
            if cfg.eval_steps and self.step % cfg.eval_steps == 0:
                self._validate_and_log()
                window_start = time.time()  # evaluation time is not training throughput
            stop_reason = self.should_stop(started)
            if self.distributed:  # every rank must stop together (the time limit is per process)
                flag = torch.tensor([stop_reason is not None], dtype=torch.int32, device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if flag.item() and stop_reason is None:
                    stop_reason = "another rank stopped"
            due = (cfg.checkpoint_steps and self.step % cfg.checkpoint_steps == 0) or (
                time.time() - last_checkpoint >= cfg.checkpoint_minutes * 60
            )
            if self.distributed:  # the minute clock differs between ranks: agree, the save is collective
                flag = torch.tensor([bool(due)], dtype=torch.int32, device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                due = bool(flag.item())
            if due and stop_reason is None:
                self.save()
                last_checkpoint = time.time()
        if not cfg.eval_steps or self.step % cfg.eval_steps:
            self._validate_and_log()
        self.save()
        summary = {
            "event": "stop",
            "reason": stop_reason,
            "step": self.step,
            "bytes_seen": self.bytes_seen,
            "valid_bpb": self.last_valid_bpb,
            "best_valid_bpb": self.best_valid_bpb,
        }
        self.log(summary)
        return summary

    def _validate_and_log(self) -> None:
        t0 = time.time()
        bpb = self.validate()
        self.log(
            {
                "event": "valid",
                "step": self.step,
                "epoch": round(self.epoch_progress(), 4),
                "valid_bpb": round(bpb, 4),
                "eval_seconds": round(time.time() - t0, 1),
                "bytes_seen": self.bytes_seen,
            }
        )


def format_record(r: dict) -> str:
    event = r.get("event")
    if event == "train":
        return (
            f"step {r['step']:>7d} | epoch {r['epoch']:7.4f} | lr {r['lr']:.2e}"
            f" | train {r['train_bpb']:.4f} bpb | {r['bytes_per_s']:>9,.0f} B/s"
            f" | seen {r['bytes_seen'] / 1e6:,.1f} MB"
        )
    if event == "valid":
        return f"step {r['step']:>7d} | valid {r['valid_bpb']:.4f} bpb ({r['eval_seconds']} s)"
    if event == "start":
        return (
            f"start at step {r['step']}: {r['params']:,d} parameters, {r['data']}:"
            f" {r['train_bytes']:,d} train / {r['valid_bytes']:,d} valid bytes,"
            f" {r['device']} x{r['world']}, {r['threads']} threads\n"
            f"  model {r['model']}\n  train {r['train']}"
        )
    return json.dumps(r)


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(CONFIGS), help="model + training preset")
    p.add_argument(
        "--data", nargs="+", required=True, help="corpus file(s): plain, .xz, .gz, .zst; or enwik8[.zip]"
    )
    p.add_argument("--valid", help="validation file (default: the last holdout_bytes of the data)")
    p.add_argument(
        "--valid-bytes", type=int, help="validate on the first N bytes of the validation data only"
    )
    p.add_argument("--train-bytes", type=int, help="train on the first N bytes of the data only")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoint.pt, log.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument(
        "--init-from",
        type=Path,
        help="start a new run from the weights of a checkpoint or weights file (python -m training.weights);"
        " fresh optimiser and schedule, the architecture comes from the file",
    )
    p.add_argument("--max-steps", type=int, help="stop at this (total) step count")
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes of this invocation")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model field (n_blocks, d_model, d_boom, memory, dropout, ...) or a training field"
        " (lr, warmup, batch, bptt, schedule, total_steps, eval_steps, threads, ...); repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="log to OUT/log.jsonl only")
    return p


def setup_distributed() -> None:
    """Join the process group when started by torchrun (which sets RANK and WORLD_SIZE)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    ck_path = out / CHECKPOINT_NAME
    checkpoint = None
    try:
        if ck_path.exists() and args.resume:
            checkpoint = load_checkpoint(ck_path)
            model_cfg = ModelConfig.from_dict(checkpoint["config"])
            train_cfg = TrainConfig(**checkpoint["train_config"])
            # Training settings may change on resume (e.g. a longer schedule); the architecture may not.
            model_cfg2, train_cfg = apply_overrides(model_cfg, train_cfg, args.overrides)
            if model_cfg2 != model_cfg:
                raise ValueError("model settings cannot change on --resume")
        elif ck_path.exists():
            raise ValueError(f"{ck_path} exists: pass --resume to continue it, or choose another --out")
        elif args.init_from:
            initial = load_checkpoint(args.init_from)
            model_cfg = ModelConfig.from_dict(initial["config"])
            model_cfg2, train_cfg = apply_overrides(model_cfg, TRAIN_CONFIGS[args.config], args.overrides)
            if model_cfg2 != model_cfg:
                raise ValueError("model settings cannot change with --init-from (they come from the file)")
        else:
            model_cfg, train_cfg = apply_overrides(
                CONFIGS[args.config], TRAIN_CONFIGS[args.config], args.overrides
            )
        setup_distributed()
        out.mkdir(parents=True, exist_ok=True)
        corpus = load_train_valid(
            args.data, args.valid, args.valid_bytes, train_cfg.holdout_bytes, args.train_bytes
        )
        options = RunOptions(
            out=out,
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
            device=args.device,
            quiet=args.quiet,
        )
        trainer = Trainer(model_cfg, train_cfg, corpus, options, checkpoint)
        if checkpoint is None and args.init_from:
            trainer.model.load_state_dict(initial["model"])
            trainer.bytes_seen = initial.get("bytes_seen", 0)  # the model's total, for its card
    except (ValueError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def request_stop(signum: int, frame: object) -> None:
        if trainer.stop_requested:  # second signal: leave now (the last checkpoint is intact)
            raise KeyboardInterrupt
        trainer.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    trainer.run()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
