"""The float SHA-RNN used for training (Merity 2019, "Single Headed Attention RNN").

This is the *training* model: float32/bf16, dropout, autograd. Compression never runs it directly;
`training.quantise` turns a trained instance into an integer model file and `shazip.engine` runs that
file with integer-exact arithmetic (see docs/design.md, section 2, for why).

Architecture (the paper and its reference code, Smerity/sha-rnn `model.py`):

    bytes ─► embedding (tied with the output layer)
          ─► N blocks:  LayerNorm ─► LSTM  (shazip: + the LayerNorm'd input, a skip connection)
                        [block N-2 only] single-head attention over a bounded memory (+ residual)
                        Boom feed-forward: d ─► 4d, GELU, the 4 chunks of d summed (+ residual)
          ─► logits over all 256 byte values

Where shazip's model and the reference differ, `ArchConfig` says which is built:

- `lstm_skip`: shazip adds the block's normalised input to the LSTM's output; the reference does not
  (`residual=False`). The integer engine runs only the skip version so far.
- `attn_span`: "sliding" (shazip): every query sees exactly `memory` past positions plus itself, in
  training and at inference, so a segment-parallel forward equals a step-by-step one (what a compressor
  runs). "reference": as the reference code, the memory is cut to `memory - T` positions before a
  segment of T, so query i of the segment sees `memory - T + i + 1` keys (fewer early in a segment).
- `ln_eps` (reference 1e-12), `gelu` ("erf" exact, or the reference's "sigmoid": x * sigmoid(1.702 x)),
  `qv_dropout` (the reference drops out the attention's gated query and value as well as its weights).
- `attn_every_block`: an attention head in every block, each with its own memory (the paper's 1.068
  bits/byte variant; the reference's default and the engine have one, in block `attn_block`).
- `init`: "reference" draws every Linear and the embedding from N(0, 0.1 / sqrt(d)) with zero biases
  (a fresh model predicts near-uniform bytes, 8 bits/byte); "torch" is PyTorch's defaults with the
  embedding at N(0, 0.02), what shazip used before (its first loss is 13-30 bits/byte). LayerNorms start
  at weight 1, bias 0 in both: the reference's init matches `nn.LayerNorm` by type, and its LayerNorms are
  apex's `FusedLayerNorm`, which is not one, so they keep their defaults too. LSTMs keep PyTorch's init.

The vocabulary is all 256 byte values in every case (the reference maps enwik8's ~205 distinct bytes to
ids): a compressor must code any byte.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from shazip.config import CONFIGS, ModelConfig

GELUS = ("erf", "sigmoid")
ATTN_SPANS = ("sliding", "reference")
INITS = ("torch", "reference")


@dataclass(frozen=True)
class ArchConfig:
    """How the float model is built where shazip and the reference code differ (module docstring).

    The defaults are what shazip's models have always been (a checkpoint without an `arch` entry is one of
    these); `FIDELITIES` holds the two named sets the training presets use.
    """

    lstm_skip: bool = True
    ln_eps: float = 1e-5
    gelu: str = "erf"
    qv_dropout: bool = False
    attn_span: str = "sliding"
    init: str = "torch"
    attn_every_block: bool = False

    def __post_init__(self) -> None:
        problems = arch_problems(self.to_dict())
        if problems:
            raise ValueError(problems[0])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ArchConfig:
        """A checkpoint's `arch` entry; None (checkpoints from before it existed) is the defaults."""
        if d is None:
            return cls()
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}  # fields added later take defaults
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        return cls(**d)


def arch_problems(values: dict) -> list[str]:
    """What is wrong with these ArchConfig field values, one message per problem, naming the field."""
    out = []
    eps = values["ln_eps"]
    if not (isinstance(eps, float) and 0 < eps < 1):
        out.append(f"ln_eps must be a number in (0, 1), not {eps!r}")
    for key, allowed in (("gelu", GELUS), ("attn_span", ATTN_SPANS), ("init", INITS)):
        if values[key] not in allowed:
            out.append(f"{key} must be one of {', '.join(allowed)}, not {values[key]!r}")
    for key in ("lstm_skip", "qv_dropout", "attn_every_block"):
        if not isinstance(values[key], bool):
            out.append(f"{key} must be true or false, not {values[key]!r}")
    return out


FIDELITIES: dict[str, ArchConfig] = {
    # The reference code's architecture and init (at Smerity/sha-rnn's head).
    "paper": ArchConfig(
        lstm_skip=False,
        ln_eps=1e-12,
        gelu="sigmoid",
        qv_dropout=True,
        attn_span="reference",
        init="reference",
    ),
    # What the shazip engine runs: the skip connection, exact GELU, the sliding window, PyTorch's init
    # (with the skip connection the reference's init trained worse; docs/training.md has the comparison).
    "shazip": ArchConfig(),
}


@dataclass
class ModelState:
    """What is carried from one segment (or step) to the next, per sequence in the batch.

    lstm: one (h, c) pair per block, each [B, d].
    memory: the attention block's past inputs (after its memory LayerNorm), [B, m, d] with m <= memory;
    with attention in every block, all blocks' memories side by side, [B, m, n_blocks * d] (one tensor,
    so carrying, checkpointing and gathering it are the same code for both).
    """

    lstm: list[tuple[torch.Tensor, torch.Tensor]]
    memory: torch.Tensor
    extra: dict = field(default_factory=dict)

    def detach(self) -> ModelState:
        return ModelState(lstm=[(h.detach(), c.detach()) for h, c in self.lstm], memory=self.memory.detach())


class Boom(nn.Module):
    """d -> d_boom with GELU, then the d_boom/d chunks summed back to d (no second matrix)."""

    def __init__(self, d_model: int, d_boom: int, dropout: float, gelu: str = "erf") -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_boom)
        self.dropout = nn.Dropout(dropout)
        self.chunks = d_boom // d_model
        self.gelu = gelu

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """GELU, exact or the reference's x * sigmoid(1.702 x) (the export tabulates this function)."""
        return F.gelu(x) if self.gelu == "erf" else x * torch.sigmoid(1.702 * x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.dropout(self.activation(self.up(x)))
        return z.unflatten(-1, (self.chunks, -1)).sum(dim=-2)


class Overparam(nn.Module):
    """The reference code's over-parameterised gate vector: sigmoid(f) * tanh(c), [c, f] = W v + b."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, 2 * d)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        c, f = self.linear(v).chunk(2, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


class Attention(nn.Module):
    """Single-head attention with sigmoid gates on query, key and value (SHA-RNN's "SHA")."""

    def __init__(self, d: int, dropout: float, ln_eps: float = 1e-5, qv_dropout: bool = False) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.q_norm = nn.LayerNorm(d, eps=ln_eps)
        self.q_gate = nn.Parameter(torch.zeros(d))
        self.k_gate = nn.Parameter(torch.zeros(d))
        self.v_gate = nn.Parameter(torch.zeros(d))
        self.v_overparam = Overparam(d)
        self.dropout = nn.Dropout(dropout)
        self.qv_dropout = qv_dropout
        self.scale = 1.0 / math.sqrt(d)

    def gates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three per-channel gate vectors (constant at inference; the engine bakes them in)."""
        qs = torch.sigmoid(self.q_gate)
        ks = torch.sigmoid(self.k_gate)
        vs = self.v_overparam(torch.sigmoid(self.v_gate))
        return qs, ks, vs

    def forward(self, x: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, d] query input; keys: [B, S, d] memory + segment; mask: [T, S], True = may attend."""
        qs, ks, vs = self.gates()
        q = self.q_norm(self.q(x)) * qs
        k = keys * ks
        v = keys * vs
        if self.qv_dropout:  # the reference's dropout on q and v (a mask on q acts on k too)
            q, v = self.dropout(q), self.dropout(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.dropout(torch.softmax(scores.float(), dim=-1).to(v.dtype))
        return torch.matmul(weights, v)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, has_attention: bool, arch: ArchConfig | None = None) -> None:
        super().__init__()
        arch = arch or ArchConfig()
        d, eps = cfg.d_model, arch.ln_eps
        self.ln_start = nn.LayerNorm(d, eps=eps)
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.lstm_skip = arch.lstm_skip
        self.span = arch.attn_span
        self.attention = Attention(d, cfg.dropout, eps, arch.qv_dropout) if has_attention else None
        if has_attention:
            self.ln_mem = nn.LayerNorm(d, eps=eps)  # what is stored in memory and used as keys/values
            self.ln_mid = nn.LayerNorm(d, eps=eps)  # the query's input
        self.ln_ff = nn.LayerNorm(d, eps=eps)  # the residual stream going around the Boom
        self.ln_xff = nn.LayerNorm(d, eps=eps)  # the Boom's input
        self.boom = Boom(d, cfg.d_boom, cfg.dropout, arch.gelu)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        h: torch.Tensor,
        lstm_state: tuple[torch.Tensor, torch.Tensor],
        memory: torch.Tensor | None,
        window: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        h = self.ln_start(h)
        h0, c0 = lstm_state
        x, (hn, cn) = self.lstm(h, (h0.unsqueeze(0), c0.unsqueeze(0)))
        h = h + self.dropout(x) if self.lstm_skip else self.dropout(x)
        new_memory = None
        if self.attention is not None:
            assert memory is not None
            mh = self.ln_mem(h)
            h = self.ln_mid(h)
            t = h.shape[1]
            if self.span == "reference":
                # The reference keeps `window` positions in all: the memory is cut so that it and the
                # segment together fit, and every query sees all of that memory plus the segment so far.
                memory = memory[:, max(memory.shape[1] - max(window - t, 0), 0) :]
                mask = sliding_window_mask(t, memory.shape[1], memory.shape[1] + t, h.device)
            else:
                mask = sliding_window_mask(t, memory.shape[1], window, h.device)
            keys = torch.cat([memory.to(mh.dtype), mh], dim=1)
            h = h + self.dropout(self.attention(h, keys, mask))
            new_memory = keys[:, -window:]
        h, hz = self.ln_ff(h), self.ln_xff(h)
        h = h + self.dropout(self.boom(hz))
        return h, (hn.squeeze(0), cn.squeeze(0)), new_memory


def sliding_window_mask(t: int, m: int, window: int, device: torch.device) -> torch.Tensor:
    """[t, m + t] bool: query i (absolute position m + i) sees keys at positions m + i - window ... m + i."""
    query_pos = torch.arange(t, device=device).unsqueeze(1) + m
    key_pos = torch.arange(m + t, device=device).unsqueeze(0)
    return (key_pos <= query_pos) & (key_pos >= query_pos - window)


class SHARNN(nn.Module):
    def __init__(self, cfg: ModelConfig, arch: ArchConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.arch = arch or ArchConfig()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg, has_attention=self.arch.attn_every_block or i == cfg.attn_index, arch=self.arch)
            for i in range(cfg.n_blocks)
        )
        self.attention_blocks = [i for i, block in enumerate(self.blocks) if block.attention is not None]
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))  # the output weight is the embedding
        if self.arch.init == "reference":
            self.reference_init()
        else:
            # Small: the output layer is this matrix too, and the LayerNorm'd residual stream starts out
            # aligned with the current byte's embedding; a large init makes a fresh model predict "the
            # same byte again" at ~30 bits/byte and spend its first ~150 steps unlearning it.
            nn.init.normal_(self.embed.weight, std=0.02)

    @torch.no_grad()
    def reference_init(self) -> None:
        """The reference code's init: Linear and Embedding weights N(0, 0.1/sqrt(d)), Linear biases 0.

        LayerNorms (weight 1, bias 0), LSTMs (PyTorch's uniform init), the attention's gate vectors (0)
        and the output bias (0) keep what their constructors gave them, as in the reference.
        """
        std = 0.1 / math.sqrt(self.cfg.d_model)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> ModelState:
        d = self.cfg.d_model
        zeros = torch.zeros(batch, d, device=device)
        return ModelState(
            lstm=[(zeros.clone(), zeros.clone()) for _ in self.blocks],
            memory=torch.zeros(batch, 0, d * len(self.attention_blocks), device=device),
        )

    def forward(self, x: torch.Tensor, state: ModelState | None = None) -> tuple[torch.Tensor, ModelState]:
        """x: [B, T] byte values (int64). Returns logits [B, T, 256] and the state after the last byte.

        Logit t predicts byte t + 1. The state carries LSTM (h, c) and the attention window, so calling
        forward on consecutive segments equals one call on their concatenation.
        """
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        h = self.dropout(self.embed(x))
        new_lstm = []
        memories = state.memory.chunk(len(self.attention_blocks), dim=-1)
        new_memories = []
        for i, block in enumerate(self.blocks):
            mem = memories[len(new_memories)] if block.attention is not None else None
            h, lstm_state, block_memory = block(h, state.lstm[i], mem, self.cfg.memory)
            new_lstm.append(lstm_state)
            if block_memory is not None:
                new_memories.append(block_memory)
        new_memory = torch.cat(new_memories, dim=-1) if len(new_memories) > 1 else new_memories[0]
        h = self.dropout(h)
        logits = F.linear(h, self.embed.weight, self.out_bias)
        return logits, ModelState(lstm=new_lstm, memory=new_memory)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def bits_per_byte(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in bits per byte."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)) / math.log(2)


if __name__ == "__main__":
    for name, cfg in CONFIGS.items():
        print(f"{name:8s} {SHARNN(cfg).num_parameters():>12,d} parameters  {cfg}")
