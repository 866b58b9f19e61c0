"""Train a SHA-RNN byte model: the paper's enwik8 setup, or any corpus.

    python -m training.train --config small --data CORPUS [CORPUS ...] [--valid FILE ...] [--test FILE ...]
                             --out RUN_DIR [--fidelity paper|shazip] [--resume] [--init-from WEIGHTS]
                             [--max-steps N] [--max-minutes M] [--device D] [--set key=value ...]

A corpus, validation or test file may be a byte range of a file: `FILE[:-3000000]`, `FILE[-3000000:]`
(see training/data.py). `--set` overrides any field of the model config (`shazip.config.ModelConfig`), of
the architecture (`training.model.ArchConfig`) or of the training config (`training.settings.TrainConfig`),
e.g. `--set lr=1e-3 --set d_model=512`; all are checked before anything is read. RUN_DIR gets
`checkpoint.pt` (written atomically, every `checkpoint_steps` steps and `checkpoint_minutes` minutes, and on
exit or SIGTERM/SIGINT), `best.pt` (the weights with the best validation so far) and `log.jsonl`.
`--resume` continues exactly where the checkpoint left off: same weights, optimizer, data position, carried
LSTM/attention state and RNG, so an interrupted run equals an uninterrupted one.

Multi-GPU: `torchrun --nproc_per_node=K -m training.train ...` (DDP; each rank takes `batch` streams).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Before torch starts OpenMP: with the default busy-waiting, two threads collapse as soon as another
# process takes a core (docs/design.md, section 4). An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from shazip.config import CONFIGS, ModelConfig  # noqa: E402
from training.checkpoints import (  # noqa: E402
    BEST_NAME,
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from training.data import Corpus, DataError, StreamBatches, jittered_bptt, load_train_valid  # noqa: E402
from training.model import FIDELITIES, SHARNN, ArchConfig, ModelState  # noqa: E402
from training.optim import Lamb  # noqa: E402
from training.settings import (  # noqa: E402, F401 - TrainConfig and TRAIN_CONFIGS are imported from here too
    TRAIN_CONFIGS,
    Settings,
    SettingsError,
    TrainConfig,
    apply_overrides,
    check_arch,
    check_train,
    preset,
)

LOG_NAME = "log.jsonl"


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


def learning_rate(
    cfg: TrainConfig, step: int, epoch_progress: float, final_start: int | None = None
) -> float:
    """The learning rate for `step` (0-based); `epoch_progress` = epochs done so far, fractional.

    `final_start`: the step at which a restarted final phase began (`final_restart`); that phase warms up
    to `final_lr` from there, as the reference's second run does.
    """
    if final_start is not None:
        done = step - final_start
        return cfg.final_lr * min(1.0, (done + 1) / cfg.warmup) if cfg.warmup else cfg.final_lr
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
    raise SettingsError(f"unknown schedule {cfg.schedule!r} (paper, cosine, constant)")


def schedule_end(cfg: TrainConfig, final_start_epoch: float | None = None) -> float | None:
    """The epoch count at which the schedule ends the run (None: it never does)."""
    if cfg.schedule != "paper":
        return None
    if cfg.final_restart:
        return None if final_start_epoch is None else final_start_epoch + cfg.final_epochs
    return cfg.epochs + cfg.final_epochs


def schedule_finished(
    cfg: TrainConfig, epoch_progress: float, final_start_epoch: float | None = None
) -> bool:
    end = schedule_end(cfg, final_start_epoch)
    return end is not None and epoch_progress >= end


def state_resets(seed: int, step: int, prob: float) -> tuple[bool, bool]:
    """Whether step `step` drops the carried LSTM state, and (drawn separately) the attention memory.

    From a generator seeded by (seed, step), like the bptt jitter, so resuming needs no state.
    """
    if prob <= 0:
        return False, False
    draws = np.random.default_rng([seed, step, 0x5E7]).random(2)
    return bool(draws[0] < prob), bool(draws[1] < prob)


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """`--device` as a torch device, or SettingsError (a bad name, or CUDA that this machine lacks)."""
    if name is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SettingsError(f"--device {name}: not a device (cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise SettingsError(f"--device {name}: training runs on cpu or cuda")
    if torch.version.cuda is None:
        raise SettingsError(f"--device {name}: this PyTorch ({torch.__version__}) is built without CUDA")
    if not torch.cuda.is_available():
        raise SettingsError(f"--device {name}: PyTorch sees no CUDA device here")
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise SettingsError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return torch.device("cuda", index)


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
        raise SettingsError(f"amp must be auto, bf16 or off, not {amp!r}")
    if amp == "bf16" and device.type != "cuda":
        # oneDNN has no bf16 LSTM on most CPUs ("could not create a primitive descriptor"), and on CPU
        # bf16 would not be faster anyway.
        raise SettingsError("amp=bf16 needs a CUDA device; on CPU training runs in float32")


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
        arch: ArchConfig | None = None,
    ) -> None:
        check_train(train_cfg)
        arch = arch or ArchConfig()
        check_arch(arch.to_dict())
        self.model_cfg = model_cfg
        self.arch = arch
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
        self.device = resolve_device(options.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # training only; the engine is integer-exact
            torch.backends.cudnn.allow_tf32 = True
        check_amp(self.device, train_cfg.amp)
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)

        torch.manual_seed(train_cfg.seed)
        self.model = SHARNN(model_cfg, arch).to(self.device)
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
        self.best_step: int | None = None
        self.last_valid_bpb: float | None = None
        self.train_seconds = 0.0
        # The final phase when it restarts (final_restart): where it began, its own best and how many
        # validations in a row have not beaten it.
        self.final_start_step: int | None = None
        self.final_start_epoch: float | None = None
        self.final_best: float | None = None
        self.evals_since_final_best = 0
        self.state = self.model.initial_state(train_cfg.batch, self.device)
        self.dropped_log_records = 0
        self.last_valid_step: int | None = None  # this invocation's last validation
        if checkpoint is not None:
            self._restore(checkpoint)
        # Seed each rank's dropout differently (only on a fresh start; a resume restores the RNG).
        if checkpoint is None and self.rank:
            torch.manual_seed(train_cfg.seed + 1000 * self.rank)
        self.stop_requested = False

    # -- checkpoints --

    def _restore(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        if ck.get("final_phase") is not None and self.cfg.final_restart:
            self.final_start_step = ck["final_phase"]["start_step"]
            self.final_start_epoch = ck["final_phase"]["start_epoch"]
            self.final_best = ck["final_phase"]["best"]
        self.evals_since_final_best = ck.get("evals_since_best", 0)
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
        self.best_step = ck.get("best_step")
        self.last_valid_bpb = ck.get("last_valid_bpb")
        self.train_seconds = ck.get("train_seconds", 0.0)
        self.state = state_from_dict(ck["carry"], self.device, self.rows)
        rng = ck["rng"][self.rank] if self.rank < len(ck["rng"]) else ck["rng"][0]
        set_rng_state(rng, self.device)
        if self.is_main:
            self.dropped_log_records = prune_log(self.out / LOG_NAME, self.step)

    def model_record(self) -> dict:
        """The checkpoint entries that describe the model and the run (everything but the resume state)."""
        return {
            "config": self.model_cfg.to_dict(),
            "arch": self.arch.to_dict(),
            "train_config": self.cfg.to_dict(),
            "step": self.step,
            "bytes_seen": self.bytes_seen,
            "data": self.corpus.description,
            "data_files": self.corpus.files,
            "data_specs": self.corpus.data_specs,
            "data_position": {"epoch": self.epoch, "position": self.position, "streams": self.batches.length},
            "valid_file": self.corpus.valid_file,
            "valid_specs": self.corpus.valid_specs,
            "valid_sets": [name for name, _ in self.corpus.validation_sets()],
            "best_valid_bpb": self.best_valid_bpb,
            "best_step": self.best_step,
            "last_valid_bpb": self.last_valid_bpb,
            "train_seconds": self.train_seconds,
        }

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
        final_phase = None
        if self.final_start_step is not None:
            final_phase = {
                "start_step": self.final_start_step,
                "start_epoch": self.final_start_epoch,
                "best": self.final_best,
            }
        return {
            **self.model_record(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rngs,
            "carry": state_to_dict(carry),
            "world_size": self.world,
            "final_phase": final_phase,
            "evals_since_best": self.evals_since_final_best,
        }

    def save(self) -> None:
        ck = self.checkpoint_dict()
        if ck is not None:
            save_checkpoint(self.out / CHECKPOINT_NAME, ck)

    def save_best(self) -> None:
        """best.pt: the current weights (float32) and the run's record; rank 0 only, no collective."""
        if self.is_main:
            weights = {name: t.detach().float().cpu().clone() for name, t in self.model.state_dict().items()}
            save_checkpoint(self.out / BEST_NAME, {**self.model_record(), "model": weights})

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

    def in_final_phase(self) -> bool:
        if self.cfg.schedule != "paper":
            return False
        if self.cfg.final_restart:
            return self.final_start_step is not None
        return self.epoch_progress() >= self.cfg.epochs

    def current_lr(self, step: int | None = None) -> float:
        step = self.step if step is None else step
        return learning_rate(self.cfg, step, self.epoch_progress(), self.final_start_step)

    def evaluate_sets(
        self, sets: list[tuple[str, np.ndarray]], batch: int, model: SHARNN | None = None
    ) -> dict:
        return {
            name: evaluate(
                model or self.model,
                data,
                batch,
                self.cfg.eval_bptt,
                self.device,
                self.cfg.amp,
                self.rank,
                self.world,
            )
            for name, data in sets
        }

    def validate(self) -> dict[str, float]:
        """Bits per byte on every validation set; the first decides the best weights and early stopping."""
        results = self.evaluate_sets(self.corpus.validation_sets(), self.cfg.eval_batch)
        bpb = results[self.corpus.valid_name]
        self.last_valid_bpb = bpb
        if self.best_valid_bpb is None or bpb < self.best_valid_bpb:
            self.best_valid_bpb = bpb
            self.best_step = self.step
            self.save_best()
        if self.cfg.final_restart and self.final_start_step is not None:
            if self.final_best is None or bpb < self.final_best:
                self.final_best = bpb
                self.evals_since_final_best = 0
            else:
                self.evals_since_final_best += 1
        elif self.in_final_phase():  # the same optimiser goes on: the run's own best is the measure
            self.evals_since_final_best = (
                0 if self.best_step == self.step else self.evals_since_final_best + 1
            )
        return results

    def enter_final_phase(self) -> None:
        """The reference's second run: the best weights, a new optimiser, the data from the start."""
        if self.distributed:
            dist.barrier()  # rank 0 has written best.pt
        best = self.out / BEST_NAME
        from_step = None
        if best.exists() and self.best_step is not None:
            self.model.load_state_dict(load_checkpoint(best)["model"])
            from_step = self.best_step
        self.optimizer = Lamb(self.model.parameters(), **optimizer_settings(self.cfg))
        if self.position:
            self.epoch += 1
        self.position = 0
        self.state = self.model.initial_state(self.cfg.batch, self.device)
        self.final_start_step = self.step
        self.final_start_epoch = float(self.epoch)
        self.final_best = None
        self.evals_since_final_best = 0
        self.log(
            {
                "event": "final_phase",
                "step": self.step,
                "epoch": self.final_start_epoch,
                "from_best_step": from_step,
                "lr": self.cfg.final_lr,
            }
        )

    def train_step(self) -> tuple[float, int]:
        """One optimiser step on the next window of every stream. Returns (train bpb, window length)."""
        cfg = self.cfg
        if (
            cfg.schedule == "paper"
            and cfg.final_restart
            and self.final_start_step is None
            and self.epoch_progress() >= cfg.epochs
        ):
            self.enter_final_phase()
        bptt = jittered_bptt(cfg.seed, self.step, cfg.bptt, cfg.jitter)
        window = self.batches.window(self.position, bptt)
        if window is None:  # end of the data: next epoch, fresh state (as the reference code does)
            self.epoch += 1
            self.position = 0
            self.state = self.model.initial_state(cfg.batch, self.device)
            window = self.batches.window(0, bptt)
            assert window is not None
        x, y = window[0].to(self.device, non_blocking=True), window[1].to(self.device, non_blocking=True)
        lr = self.current_lr()
        if cfg.scale_lr_by_window:  # AWD-LSTM: shorter windows take proportionally smaller steps
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
        reset_lstm, reset_memory = state_resets(cfg.seed, self.step, cfg.state_reset_prob)
        if reset_lstm or reset_memory:  # the reference drops its carried hidden state / memory at random
            fresh = self.model.initial_state(cfg.batch, self.device)
            self.state = ModelState(
                lstm=fresh.lstm if reset_lstm else self.state.lstm,
                memory=fresh.memory if reset_memory else self.state.memory,
            )
        t = x.shape[1]
        self.position += t
        self.step += 1
        self.bytes_seen += t * cfg.batch * self.world
        return loss.item() / math.log(2), t

    def epoch_complete(self) -> bool:
        """The streams are used up: the next step starts a new epoch."""
        return self.batches.window(self.position, 1) is None

    def should_stop(self, started: float) -> str | None:
        if self.options.max_steps is not None and self.step >= self.options.max_steps:
            return "max_steps"
        if self.options.max_minutes is not None and (time.time() - started) / 60 >= self.options.max_minutes:
            return "max_minutes"
        if schedule_finished(self.cfg, self.epoch_progress(), self.final_start_epoch):
            return "schedule finished"
        patience = self.cfg.final_patience
        if patience and self.in_final_phase() and self.evals_since_final_best >= patience:
            return "validation stopped improving"
        if self.stop_requested:
            return "signal"
        return None

    def time_left(self, started: float, start_step: int, start_progress: float) -> tuple[float, str] | None:
        """Seconds until the run stops by itself, at this invocation's pace so far, and what stops it."""
        steps = self.step - start_step
        if steps <= 0:
            return None
        elapsed = time.time() - started
        per_step = elapsed / steps
        options: list[tuple[float, str]] = []
        if self.options.max_steps is not None:
            options.append((max(0, self.options.max_steps - self.step) * per_step, "max_steps"))
        if self.options.max_minutes is not None:
            options.append((max(0.0, self.options.max_minutes * 60 - elapsed), "max_minutes"))
        end = schedule_end(self.cfg, self.final_start_epoch)
        if end is None and self.cfg.schedule == "paper":  # restarted final phase not begun: its longest
            end = self.cfg.epochs + self.cfg.final_epochs
        progress_per_step = (self.epoch_progress() - start_progress) / steps
        if end is not None and progress_per_step > 0:
            options.append((max(0.0, end - self.epoch_progress()) / progress_per_step * per_step, "schedule"))
        if self.cfg.schedule == "cosine" and self.step < self.cfg.total_steps:
            options.append(((self.cfg.total_steps - self.step) * per_step, "total_steps"))
        return min(options) if options else None

    def run(self) -> dict:
        cfg = self.cfg
        started = time.time()
        start_step, start_progress = self.step, self.epoch_progress()
        last_checkpoint = started
        if self.dropped_log_records or self.step:
            self.log({"event": "resume", "step": self.step, "dropped_records": self.dropped_log_records})
        self.log(
            {
                "event": "start",
                "step": self.step,
                "params": self.model.num_parameters(),
                "model": self.model_cfg.to_dict(),
                "arch": self.arch.to_dict(),
                "train": cfg.to_dict(),
                "data": self.corpus.description,
                "train_bytes": int(self.corpus.train.size),
                "valid_bytes": int(self.corpus.valid.size),
                "valid_sets": {name: int(arr.size) for name, arr in self.corpus.validation_sets()},
                "device": str(self.device),
                "world": self.world,
                "threads": torch.get_num_threads(),
            }
        )
        window_bits = 0.0
        window_bytes = 0
        window_start = time.time()
        stop_reason = self.should_stop(started)
        while stop_reason is None:
            step_start = time.time()
            bpb, t = self.train_step()
            self.train_seconds += time.time() - step_start
            window_bits += bpb * t
            window_bytes += t
            if cfg.log_steps and self.step % cfg.log_steps == 0:
                elapsed = time.time() - window_start
                bits, nbytes = window_bits, window_bytes
                if self.distributed:  # the mean over every rank's streams, not rank 0's alone
                    totals = torch.tensor([bits, float(nbytes)], dtype=torch.float64, device=self.device)
                    dist.all_reduce(totals)
                    bits, nbytes = float(totals[0]), float(totals[1])
                left = self.time_left(started, start_step, start_progress)
                self.log(
                    {
                        "event": "train",
                        "step": self.step,
                        "epoch": round(self.epoch_progress(), 4),
                        "lr": self.current_lr(self.step - 1),
                        "train_bpb": round(bits / nbytes, 4),
                        "bytes_per_s": round(window_bytes * cfg.batch * self.world / elapsed, 1),
                        "bytes_seen": self.bytes_seen,
                        "left_s": None if left is None else round(left[0]),
                        "left_until": None if left is None else left[1],
                    }
                )
                window_bits, window_bytes, window_start = 0.0, 0, time.time()
            due_eval = cfg.eval_steps and self.step % cfg.eval_steps == 0
            if due_eval or (cfg.eval_epoch_end and self.epoch_complete()):
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
        if self.last_valid_step != self.step:
            self._validate_and_log()
        self.save()
        test = None
        if self.corpus.test and stop_reason in ("schedule finished", "validation stopped improving"):
            test = self._test_and_log()
        summary = {
            "event": "stop",
            "reason": stop_reason,
            "step": self.step,
            "bytes_seen": self.bytes_seen,
            "valid_bpb": self.last_valid_bpb,
            "best_valid_bpb": self.best_valid_bpb,
            "best_step": self.best_step,
            "test_bpb": test,
            "seconds": round(time.time() - started, 1),
        }
        self.log(summary)
        return summary

    def _validate_and_log(self) -> None:
        t0 = time.time()
        results = self.validate()
        self.last_valid_step = self.step
        self.log(
            {
                "event": "valid",
                "step": self.step,
                "epoch": round(self.epoch_progress(), 4),
                "valid_bpb": round(results[self.corpus.valid_name], 4),
                "sets": {name: round(bpb, 4) for name, bpb in results.items()},
                "best_valid_bpb": round(self.best_valid_bpb, 4),
                "best_step": self.best_step,
                "eval_seconds": round(time.time() - t0, 1),
                "bytes_seen": self.bytes_seen,
            }
        )

    def _test_and_log(self) -> dict[str, float]:
        """The test sets' bits per byte with the best weights (best.pt), as the reference reports it."""
        model = self.model
        best = self.out / BEST_NAME
        if self.distributed:
            dist.barrier()
        if best.exists():
            model = SHARNN(self.model_cfg, self.arch).to(self.device)
            model.load_state_dict(load_checkpoint(best)["model"])
        t0 = time.time()
        results = self.evaluate_sets(list(self.corpus.test.items()), self.cfg.test_batch, model)
        self.log(
            {
                "event": "test",
                "step": self.step,
                "best_step": self.best_step,
                "test_bpb": {name: round(bpb, 4) for name, bpb in results.items()},
                "eval_seconds": round(time.time() - t0, 1),
            }
        )
        return results


def prune_log(path: Path, step: int) -> int:
    """Drop the log records of steps after `step` (a hard kill's, redone on resume); how many were dropped.

    Rewritten atomically, so a second kill during the rewrite leaves the old log.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            dropped += 1
            continue
        if record.get("event") not in ("start", "resume") and record.get("step", 0) > step:
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_record(r: dict) -> str:
    event = r.get("event")
    if event == "train":
        left = ""
        if r.get("left_s") is not None:
            left = f" | {format_duration(r['left_s'])} left ({r['left_until']})"
        return (
            f"step {r['step']:>7d} | epoch {r['epoch']:7.4f} | lr {r['lr']:.2e}"
            f" | train {r['train_bpb']:.4f} bpb | {r['bytes_per_s']:>9,.0f} B/s"
            f" | seen {r['bytes_seen'] / 1e6:,.1f} MB{left}"
        )
    if event == "valid":
        others = "".join(f" | {name} {bpb:.4f}" for name, bpb in list(r.get("sets", {}).items())[1:])
        best = f" (best {r['best_valid_bpb']:.4f} at step {r['best_step']})" if "best_step" in r else ""
        return f"step {r['step']:>7d} | valid {r['valid_bpb']:.4f} bpb{best}{others} | {r['eval_seconds']} s"
    if event == "test":
        sets = ", ".join(f"{name} {bpb:.4f} bpb" for name, bpb in r["test_bpb"].items())
        return f"test with the best weights (step {r['best_step']}): {sets} ({r['eval_seconds']} s)"
    if event == "final_phase":
        source = (
            f"the best weights (step {r['from_best_step']})" if r["from_best_step"] is not None else "here"
        )
        return (
            f"step {r['step']:>7d} | final phase: new optimiser warming up to lr {r['lr']:.1e}, from {source}"
        )
    if event == "resume":
        dropped = r["dropped_records"]
        extra = f"; {dropped} log records after it were dropped (they are redone)" if dropped else ""
        return f"resuming at step {r['step']}{extra}"
    if event == "start":
        return (
            f"start at step {r['step']}: {r['params']:,d} parameters, {r['data']}:"
            f" {r['train_bytes']:,d} train / {r['valid_bytes']:,d} valid bytes,"
            f" {r['device']} x{r['world']}, {r['threads']} threads\n"
            f"  model {r['model']}\n  arch {r.get('arch')}\n  train {r['train']}"
        )
    if event == "stop":
        parts = [f"stopped at step {r['step']:,d} ({r['reason']})"]
        if r.get("valid_bpb") is not None:
            parts.append(
                f"valid {r['valid_bpb']:.4f} bpb, best {r['best_valid_bpb']:.4f} at step {r['best_step']}"
            )
        if r.get("test_bpb"):
            parts.append("test " + ", ".join(f"{k} {v:.4f}" for k, v in r["test_bpb"].items()))
        parts.append(f"{r['bytes_seen'] / 1e6:,.1f} MB seen")
        parts.append(f"{format_duration(r['seconds'])} this run")
        return "; ".join(parts)
    return json.dumps(r)


# ---------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(CONFIGS), help="model + training preset")
    p.add_argument(
        "--fidelity",
        choices=sorted(FIDELITIES),
        help="architecture: paper (the reference code's) or shazip (what the shazip engine runs); default:"
        " paper for --config enwik8, shazip otherwise. A new run only (a resumed one keeps its own)",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="corpus file(s): plain, .xz, .gz, .zst, or enwik8[.zip]; FILE[a:b] takes a byte range of one",
    )
    p.add_argument(
        "--valid",
        nargs="+",
        help="validation file(s) or ranges, each measured and logged; the first picks the best weights"
        " (default: the last holdout_bytes of the data)",
    )
    p.add_argument(
        "--test", nargs="+", help="test file(s) or ranges: measured on the best weights at the end"
    )
    p.add_argument(
        "--valid-bytes", type=int, help="validate on the first N bytes of each validation set only"
    )
    p.add_argument("--train-bytes", type=int, help="train on the first N bytes of the data only")
    p.add_argument(
        "--out", required=True, type=Path, help="run directory (checkpoint.pt, best.pt, log.jsonl)"
    )
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
        help="override a model field (n_blocks, d_model, d_boom, memory, dropout, ...), an architecture"
        " field (lstm_skip, init, gelu, ln_eps, qv_dropout, attn_span) or a training field (lr, warmup,"
        " batch, bptt, schedule, total_steps, eval_steps, threads, ...); repeatable",
    )
    p.add_argument("--quiet", action="store_true", help="log to OUT/log.jsonl only")
    return p


def check_args(args: argparse.Namespace) -> None:
    """The numeric options' ranges (argparse has checked their types)."""
    rules = [
        ("--max-steps", args.max_steps, lambda v: v >= 0, "0 or more"),
        ("--max-minutes", args.max_minutes, lambda v: math.isfinite(v) and v > 0, "above 0"),
        ("--valid-bytes", args.valid_bytes, lambda v: v >= 2, "2 or more"),
        ("--train-bytes", args.train_bytes, lambda v: v >= 2, "2 or more"),
    ]
    for flag, value, ok, what in rules:
        if value is not None and not ok(value):
            raise SettingsError(f"{flag} {value}: must be {what}")


def settings_for(args: argparse.Namespace, checkpoint: dict | None) -> tuple[Settings, dict | None]:
    """The run's settings, from the checkpoint (--resume), the weights file (--init-from) or the preset;
    then `--set`. Returns them and the --init-from file's contents.

    With --resume and a checkpoint, --init-from is ignored: the command that started a run from weights,
    plus --resume, continues it."""
    initial = None
    if checkpoint is not None:
        if args.fidelity:
            raise SettingsError("--fidelity cannot change on --resume (the architecture is the checkpoint's)")
        base = Settings(
            ModelConfig.from_dict(checkpoint["config"]),
            ArchConfig.from_dict(checkpoint.get("arch")),
            TrainConfig.from_dict(checkpoint["train_config"]),
        )
        settings = apply_overrides(base, args.overrides)
        # Training settings may change on resume (e.g. a longer schedule); the architecture may not.
        if (settings.model, settings.arch) != (base.model, base.arch):
            raise SettingsError("model and architecture settings cannot change on --resume")
        return settings, None
    chosen = preset(args.config, args.fidelity)
    if args.init_from:
        initial = load_checkpoint(args.init_from)
        base = Settings(
            ModelConfig.from_dict(initial["config"]), ArchConfig.from_dict(initial.get("arch")), chosen.train
        )
        if args.fidelity:
            raise SettingsError(
                "--fidelity cannot be given with --init-from (the architecture comes from the file)"
            )
        settings = apply_overrides(base, args.overrides)
        if (settings.model, settings.arch) != (base.model, base.arch):
            raise SettingsError("model settings cannot change with --init-from (they come from the file)")
        return settings, initial
    return apply_overrides(chosen, args.overrides), None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    ck_path = out / CHECKPOINT_NAME
    try:
        check_args(args)
        checkpoint = None
        if ck_path.exists() and args.resume:
            checkpoint = load_checkpoint(ck_path)
        elif ck_path.exists():
            raise SettingsError(f"{ck_path} exists: pass --resume to continue it, or choose another --out")
        settings, initial = settings_for(args, checkpoint)
        resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))  # before any data is read
        check_amp(resolve_device(args.device), settings.train.amp)
        if out.exists() and not out.is_dir():
            raise SettingsError(f"--out {out}: a file is in the way (a run directory is needed)")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SettingsError(f"--out {out}: cannot create it ({e.strerror})") from None
        if not os.access(out, os.W_OK):
            raise SettingsError(f"--out {out}: not writable")
        setup_distributed()
        corpus = load_train_valid(
            args.data, args.valid, args.valid_bytes, settings.train.holdout_bytes, args.train_bytes, args.test
        )
        options = RunOptions(
            out=out,
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
            device=args.device,
            quiet=args.quiet,
        )
        trainer = Trainer(settings.model, settings.train, corpus, options, checkpoint, settings.arch)
        if checkpoint is None and initial is not None:
            trainer.model.load_state_dict(initial["model"])
            trainer.bytes_seen = initial.get("bytes_seen", 0)  # the model's total, for its card
    except (SettingsError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def request_stop(signum: int, frame: object) -> None:
        if trainer.stop_requested:  # second signal: leave now (the last checkpoint is intact)
            raise KeyboardInterrupt
        trainer.stop_requested = True

    # Restored afterwards: main() also runs inside other programs (the tests, training.gpu_train).
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        trainer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def setup_distributed() -> None:
    """Join the process group when started by torchrun (which sets RANK and WORLD_SIZE)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)


if __name__ == "__main__":
    sys.exit(main())
