"""The float SHA-RNN used for training (Merity 2019, "Single Headed Attention RNN").

This is the *training* model: float32/bf16, dropout, autograd. Compression never runs it directly;
`training.quantise` turns a trained instance into an integer model file and `shazip.engine` runs that
file with integer-exact arithmetic (see DESIGN.md section 2 for why).

Architecture, as in the paper and its reference code, with one deliberate change:

    bytes ─► embedding (tied with the output layer)
          ─► N blocks:  LayerNorm ─► LSTM ─► (+ residual)
                        [block N-2 only] single-head attention over a bounded memory (+ residual)
                        Boom feed-forward: d ─► 4d, GELU, the 4 chunks of d summed (+ residual)
          ─► logits over all 256 byte values

The change: attention uses a *sliding window* of exactly `memory` past positions (plus the current
one) for every query, both in training and at inference. The reference code lets queries late in a
training segment see more than `memory` keys; a step-by-step compressor cannot, and the mismatch would
cost ratio. With the banded mask, a segment-parallel forward and a step-by-step forward compute the same
function, which is also what the engine's fidelity tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from shazip.config import CONFIGS, ModelConfig


@dataclass
class ModelState:
    """What is carried from one segment (or step) to the next, per sequence in the batch.

    lstm: one (h, c) pair per block, each [B, d].
    memory: the attention block's past inputs (after its memory LayerNorm), [B, m, d] with m <= memory.
    """

    lstm: list[tuple[torch.Tensor, torch.Tensor]]
    memory: torch.Tensor
    extra: dict = field(default_factory=dict)

    def detach(self) -> ModelState:
        return ModelState(lstm=[(h.detach(), c.detach()) for h, c in self.lstm], memory=self.memory.detach())


class Boom(nn.Module):
    """d -> d_boom with GELU, then the d_boom/d chunks summed back to d (no second matrix)."""

    def __init__(self, d_model: int, d_boom: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_boom)
        self.dropout = nn.Dropout(dropout)
        self.chunks = d_boom // d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.dropout(F.gelu(self.up(x)))
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

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.q_norm = nn.LayerNorm(d)
        self.q_gate = nn.Parameter(torch.zeros(d))
        self.k_gate = nn.Parameter(torch.zeros(d))
        self.v_gate = nn.Parameter(torch.zeros(d))
        self.v_overparam = Overparam(d)
        self.dropout = nn.Dropout(dropout)
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
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.dropout(torch.softmax(scores.float(), dim=-1).to(v.dtype))
        return torch.matmul(weights, v)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, has_attention: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln_start = nn.LayerNorm(d)
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.attention = Attention(d, cfg.dropout) if has_attention else None
        if has_attention:
            self.ln_mem = nn.LayerNorm(d)  # what is stored in memory and used as keys/values
            self.ln_mid = nn.LayerNorm(d)  # the query's input
        self.ln_ff = nn.LayerNorm(d)  # the residual stream going around the Boom
        self.ln_xff = nn.LayerNorm(d)  # the Boom's input
        self.boom = Boom(d, cfg.d_boom, cfg.dropout)
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
        h = h + self.dropout(x)
        new_memory = None
        if self.attention is not None:
            assert memory is not None
            mh = self.ln_mem(h)
            h = self.ln_mid(h)
            keys = torch.cat([memory.to(mh.dtype), mh], dim=1)
            mask = sliding_window_mask(h.shape[1], memory.shape[1], window, h.device)
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
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg, has_attention=(i == cfg.attn_index)) for i in range(cfg.n_blocks)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))  # the output weight is the embedding
        # Small: the output layer is this matrix too, and the LayerNorm'd residual stream starts out
        # aligned with the current byte's embedding; a large init makes a fresh model predict "the same
        # byte again" at ~30 bits/byte and spend its first ~150 steps unlearning it.
        nn.init.normal_(self.embed.weight, std=0.02)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> ModelState:
        d = self.cfg.d_model
        zeros = torch.zeros(batch, d, device=device)
        return ModelState(
            lstm=[(zeros.clone(), zeros.clone()) for _ in self.blocks],
            memory=torch.zeros(batch, 0, d, device=device),
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
        new_memory = state.memory
        for i, block in enumerate(self.blocks):
            mem = state.memory if block.attention is not None else None
            h, lstm_state, block_memory = block(h, state.lstm[i], mem, self.cfg.memory)
            new_lstm.append(lstm_state)
            if block_memory is not None:
                new_memory = block_memory
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
