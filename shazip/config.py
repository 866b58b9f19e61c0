"""Model configurations: plain data, importable without torch (the CLI reads them from model files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

VOCAB_SIZE = 256  # every byte value; no remapping, no special tokens (docs/design.md)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SHA-RNN. Stored with the weights (checkpoints and model files)."""

    n_blocks: int = 4
    d_model: int = 1024
    d_boom: int = 4096  # Boom hidden width; must be a multiple of d_model
    memory: int = 5000  # attention window: past positions each query may see
    attn_block: int = -2  # index of the one block with attention (Python-style: -2 = second to last)
    dropout: float = 0.1
    vocab_size: int = VOCAB_SIZE

    def __post_init__(self) -> None:
        if self.d_boom % self.d_model:
            raise ValueError(f"d_boom ({self.d_boom}) must be a multiple of d_model ({self.d_model})")
        if not -self.n_blocks <= self.attn_block < self.n_blocks:
            raise ValueError(f"attn_block {self.attn_block} out of range for {self.n_blocks} blocks")
        if self.memory < 1:
            raise ValueError("memory must be at least 1")

    @property
    def attn_index(self) -> int:
        """The attention block's index, counted from 0."""
        return self.attn_block % self.n_blocks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)

    def with_overrides(self, **changes: object) -> ModelConfig:
        return replace(self, **changes)


CONFIGS: dict[str, ModelConfig] = {
    # The paper's enwik8 model: 4 blocks, d=1024, Boom 4096, memory 5000, dropout 0.1 (~54M params).
    "enwik8": ModelConfig(n_blocks=4, d_model=1024, d_boom=4096, memory=5000, dropout=0.1),
    # CPU-friendly default candidate: 2 blocks, d=256, 256-state window.
    "small": ModelConfig(n_blocks=2, d_model=256, d_boom=1024, memory=256, dropout=0.05),
    # For tests: trains in seconds.
    "tiny": ModelConfig(n_blocks=2, d_model=32, d_boom=128, memory=16, dropout=0.0),
}
