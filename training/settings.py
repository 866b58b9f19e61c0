"""Training settings: `TrainConfig`, the presets, and `--set key=value` parsing and checking.

Every setting is checked here, before any data is read or any step is taken: its type, its range and, for
names (schedule, amp, gelu, ...), that it is a known one. A bad setting is a `SettingsError` whose message
names the key; the command-line tools print it as one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from shazip.config import CONFIGS, VOCAB_SIZE, ModelConfig
from training.model import FIDELITIES, ArchConfig, arch_problems

SCHEDULES = ("paper", "cosine", "constant")
AMPS = ("auto", "bf16", "off")


class SettingsError(ValueError):
    """A setting the user gave (or a checkpoint holds) is not valid: the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the architecture. Any field can be set with `--set key=value`.

    Fields added after a checkpoint was written take their defaults when it is resumed, so every default
    keeps the behaviour from before the field existed; presets switch the new behaviour on.
    """

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
    # lr * window / bptt. AWD-LSTM does this; at the SHA-RNN reference's head the line is commented out.
    scale_lr_by_window: bool = False
    holdout_bytes: int = 1_000_000  # validation = data tail when no --valid is given
    # Each step, with this probability, the carried LSTM state is dropped, and (drawn separately) the
    # attention memory. A pre-paper commit of the reference code did this with 0.025; at its head those
    # lines are commented out, so the carried state is never dropped (0).
    state_reset_prob: float = 0.0
    # schedule: "paper" = warm-up, lr until `epochs`, then `final_lr` for up to `final_epochs` (then stop);
    #           "cosine" = warm-up, cosine from lr to lr*min_lr_ratio at `total_steps`, then flat;
    #           "constant" = warm-up, then lr
    schedule: str = "paper"
    epochs: float = 32.0
    final_lr: float = 1e-3
    final_epochs: float = 1.0
    # The reference's second phase is a second run: the best weights so far, a new optimiser with its own
    # warm-up to final_lr, the data from the start. False: the same optimiser goes on at final_lr.
    final_restart: bool = False
    # Stop the final phase after this many validations in a row without a new best (0: never early).
    final_patience: int = 0
    total_steps: int = 100_000
    min_lr_ratio: float = 0.1
    # evaluation, logging, checkpoints
    eval_steps: int = 1000  # validate every this many steps (0: only at the end)
    eval_epoch_end: bool = False  # validate at the end of every epoch as well (the reference: only then)
    eval_batch: int = 16
    eval_bptt: int = 1024
    test_batch: int = 10  # streams for the test figure (the enwik8 preset: 8, the reference's at its head)
    log_steps: int = 50
    checkpoint_steps: int = 500
    checkpoint_minutes: float = 10.0
    # execution
    seed: int = 1234
    threads: int = 0  # torch intra-op threads on CPU (0: torch's default)
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, float32 on CPU; "bf16"; "off"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A checkpoint's `train_config`; fields it lacks (older checkpoints) take their defaults."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"the checkpoint's training settings hold unknown fields {sorted(unknown)}")
        cfg = cls(**d)
        check_train(cfg)
        return cfg


TRAIN_CONFIGS: dict[str, TrainConfig] = {
    # The paper (Merity 2019) on enwik8 as its reference code runs it (README at Smerity/sha-rnn): LAMB (the
    # reference's variant) lr 2e-3, 800 warm-up steps, wd 1.2e-6, clip 0.25, batch 16, bptt 1024 jittered,
    # 32 epochs; then a second run from the best weights with a new optimiser at 1e-3 for up to 5 epochs,
    # until validation stops improving. Validation at the end of every epoch (~5,600 steps) on the 5 MB
    # split; the carried state never dropped and the test figure over 8 streams, as the reference at its
    # head does. A ~975 MB checkpoint every 2,000 steps.
    "enwik8": TrainConfig(
        lamb_bias_correction=False,
        lamb_weight_norm_clamp=10.0,
        test_batch=8,
        final_epochs=5.0,
        final_restart=True,
        final_patience=1,
        eval_steps=0,
        eval_epoch_end=True,
        checkpoint_steps=2000,
        checkpoint_minutes=15.0,
    ),
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

# Which architecture (training.model.FIDELITIES) a new run of each preset builds unless --fidelity says.
# enwik8: the paper's, since the preset exists to reproduce the paper's figure; the others: what the
# shazip engine runs.
PRESET_FIDELITY: dict[str, str] = {"enwik8": "paper", "small": "shazip", "tiny": "shazip"}


@dataclass(frozen=True)
class Settings:
    model: ModelConfig
    arch: ArchConfig
    train: TrainConfig


def preset(name: str, fidelity: str | None = None) -> Settings:
    if name not in CONFIGS or name not in TRAIN_CONFIGS:
        raise SettingsError(f"unknown preset {name!r}; presets: {', '.join(sorted(TRAIN_CONFIGS))}")
    fidelity = fidelity or PRESET_FIDELITY.get(name, "shazip")
    if fidelity not in FIDELITIES:
        raise SettingsError(f"unknown fidelity {fidelity!r}; fidelities: {', '.join(FIDELITIES)}")
    return Settings(CONFIGS[name], FIDELITIES[fidelity], TRAIN_CONFIGS[name])


# ---------------------------------------------------------------------------------------------------------
# Parsing and checking


def parse_value(key: str, text: str, like: object) -> object:
    """`text` as the type of `like` (the field's current value); SettingsError naming `key` if it is not."""
    if isinstance(like, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"--set {key}={text}: {key} takes true or false")
    if isinstance(like, int):
        try:
            value = float(text) if "e" in text.lower() else int(text)
        except ValueError:
            raise SettingsError(f"--set {key}={text}: {key} takes a whole number") from None
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise SettingsError(f"--set {key}={text}: {key} takes a whole number")
        return int(value)
    if isinstance(like, float):
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"--set {key}={text}: {key} takes a number") from None
        if not math.isfinite(value):
            raise SettingsError(f"--set {key}={text}: {key} takes a finite number")
        return value
    return text


def _train_rules(cfg: TrainConfig) -> list[tuple[str, bool, str]]:
    """(key, holds, what it must be) for every TrainConfig field."""
    c = cfg
    positive = "a number above 0"
    return [
        ("lr", c.lr > 0, positive),
        ("warmup", c.warmup >= 0, "0 or more"),
        ("weight_decay", c.weight_decay >= 0, "0 or more"),
        ("clip", c.clip >= 0, "0 (off) or more"),
        ("beta1", 0 <= c.beta1 < 1, "in [0, 1)"),
        ("beta2", 0 <= c.beta2 < 1, "in [0, 1)"),
        ("eps", c.eps > 0, positive),
        ("min_trust", c.min_trust >= 0, "0 or more"),
        ("lamb_weight_norm_clamp", c.lamb_weight_norm_clamp >= 0, "0 (off) or more"),
        ("batch", c.batch >= 1, "1 or more"),
        ("bptt", c.bptt >= 2, "2 or more"),
        ("holdout_bytes", c.holdout_bytes >= 2, "2 or more"),
        ("state_reset_prob", 0 <= c.state_reset_prob <= 1, "in [0, 1]"),
        ("schedule", c.schedule in SCHEDULES, "one of " + ", ".join(SCHEDULES)),
        ("epochs", c.epochs > 0, positive),
        ("final_lr", c.final_lr > 0, positive),
        ("final_epochs", c.final_epochs >= 0, "0 or more"),
        ("final_patience", c.final_patience >= 0, "0 (off) or more"),
        ("total_steps", c.total_steps >= 1, "1 or more"),
        ("min_lr_ratio", 0 <= c.min_lr_ratio <= 1, "in [0, 1]"),
        ("eval_steps", c.eval_steps >= 0, "0 (only at the end) or more"),
        ("eval_batch", c.eval_batch >= 1, "1 or more"),
        ("eval_bptt", c.eval_bptt >= 1, "1 or more"),
        ("test_batch", c.test_batch >= 1, "1 or more"),
        ("log_steps", c.log_steps >= 0, "0 (off) or more"),
        ("checkpoint_steps", c.checkpoint_steps >= 0, "0 (off) or more"),
        ("checkpoint_minutes", c.checkpoint_minutes > 0, positive),
        ("seed", 0 <= c.seed < 2**63, "0 or more"),
        ("threads", c.threads >= 0, "0 (torch's default) or more"),
        ("amp", c.amp in AMPS, "one of " + ", ".join(AMPS)),
    ]


def _type_ok(value: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def check_train(cfg: TrainConfig) -> None:
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        kind = {"float": float, "int": int, "bool": bool, "str": str}[str(f.type)]
        if not _type_ok(value, kind):
            raise SettingsError(f"{f.name} must be a {kind.__name__}, not {value!r}")
    for key, holds, what in _train_rules(cfg):
        if not holds:
            raise SettingsError(f"{key} must be {what}, not {getattr(cfg, key)!r}")


def check_model(values: dict) -> None:
    """ModelConfig field values, checked before ModelConfig's own checks (which would divide by zero)."""
    cfg = _Values(values)
    n = cfg.n_blocks
    boom_ok = cfg.d_boom >= 1 and cfg.d_model >= 1 and cfg.d_boom % max(cfg.d_model, 1) == 0
    rules = [
        ("n_blocks", n >= 1, "1 or more"),
        ("d_model", cfg.d_model >= 2, "2 or more"),
        ("d_boom", boom_ok, f"a multiple of d_model ({cfg.d_model})"),
        ("memory", cfg.memory >= 1, "1 or more"),
        ("attn_block", -n <= cfg.attn_block < n, f"in [-{n}, {n})"),
        ("dropout", 0 <= cfg.dropout < 1, "in [0, 1)"),
        ("vocab_size", cfg.vocab_size == VOCAB_SIZE, f"{VOCAB_SIZE} (every byte value)"),
    ]
    for key, holds, what in rules:
        if not holds:
            raise SettingsError(f"{key} must be {what}, not {getattr(cfg, key)!r}")


class _Values:
    """Attribute access to a dict of field values (so the rules read like the dataclass's)."""

    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)


def check_arch(values: dict) -> None:
    problems = arch_problems(values)
    if problems:
        raise SettingsError(problems[0])


def apply_overrides(settings: Settings, overrides: list[str]) -> Settings:
    """`key=value` strings applied to whichever config has the field; everything checked afterwards."""
    groups = {
        "model": (settings.model, {f.name for f in fields(ModelConfig)}),
        "arch": (settings.arch, {f.name for f in fields(ArchConfig)}),
        "train": (settings.train, {f.name for f in fields(TrainConfig)}),
    }
    changes: dict[str, dict[str, object]] = {name: {} for name in groups}
    for item in overrides:
        if "=" not in item:
            raise SettingsError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        for name, (current, names) in groups.items():
            if key in names:
                changes[name][key] = parse_value(key, text.strip(), getattr(current, key))
                break
        else:
            raise SettingsError(
                f"--set {key}: unknown setting; model: {', '.join(sorted(groups['model'][1]))};"
                f" architecture: {', '.join(sorted(groups['arch'][1]))};"
                f" training: {', '.join(sorted(groups['train'][1]))}"
            )
    # The values are checked before the dataclasses are built: ModelConfig checks some things itself, less
    # helpfully (it divides by d_model).
    check_model({**settings.model.to_dict(), **changes["model"]})
    check_arch({**settings.arch.to_dict(), **changes["arch"]})
    train = dataclasses.replace(settings.train, **changes["train"])
    check_train(train)
    return Settings(
        settings.model.with_overrides(**changes["model"]),
        dataclasses.replace(settings.arch, **changes["arch"]),
        train,
    )
