"""Widen a trained SHA-RNN k-fold (d -> k*d) so that it computes the same function (Net2WiderNet).

A larger model started this way begins where the smaller one is, instead of from scratch: what a short
run on a GPU needs to end up better than the CPU model it started from (training/gpu_train.py).

Every width-d vector becomes k copies of itself side by side. LayerNorms see the same mean and variance,
so they pass the copies through; a Linear that reads a widened vector has its input columns divided by k;
one that writes one has its output rows repeated; the LSTM's four gates are repeated gate by gate, so its
h and c are copies too; the Boom's chunk sum sums copies of the same chunks. Two places need a factor:

- the tied embedding is divided by k (the output layer sums k copies); the first block's LayerNorm undoes
  it for the input, exactly up to LayerNorm's eps, which now weighs k^2 times more against the embedding's
  variance (a small change; `widen` callers measure it);
- the query's LayerNorm is scaled by 1/sqrt(k), so q.k / sqrt(k*d) keeps its value.

Copies that start equal get equal gradients and would stay equal: `noise` adds a small Gaussian to every
widened weight matrix (relative to its own std) so that they can drift apart.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from training.model import SHARNN


def _tile_vector(v: torch.Tensor, k: int) -> torch.Tensor:
    return v.repeat(k)


def _rows(w: torch.Tensor, blocks: int, k: int) -> torch.Tensor:
    """Output rows in `blocks` groups of d (LSTM gates, Boom chunks, [c, f]): each group repeated k times."""
    return torch.cat([g.repeat(k, *([1] * (w.dim() - 1))) for g in w.chunk(blocks, dim=0)], dim=0)


def _linear(w: torch.Tensor, blocks: int, k: int) -> torch.Tensor:
    """A weight matrix that reads a widened vector (columns / k) and writes `blocks` widened groups."""
    return _rows(w, blocks, k).repeat(1, k) / k


@torch.no_grad()
def widen(model: SHARNN, k: int, noise: float = 0.0, seed: int = 0) -> SHARNN:
    """A new model with d_model and d_boom k times larger computing (nearly) the same function."""
    if k < 1:
        raise ValueError(f"the widening factor must be 1 or more, not {k}")
    cfg = model.cfg
    big_cfg = dataclasses.replace(cfg, d_model=cfg.d_model * k, d_boom=cfg.d_boom * k)
    big = SHARNN(big_cfg, model.arch)
    src = {name: t.detach().float() for name, t in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    chunks = cfg.d_boom // cfg.d_model
    matrices = []
    for name, t in src.items():
        leaf = name.rsplit(".", 1)[-1]
        module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        if name == "embed.weight":
            out[name] = t.repeat(1, k) / k
        elif name == "out_bias":
            out[name] = t.clone()
        elif leaf in ("weight_ih_l0", "weight_hh_l0"):
            out[name] = _linear(t, 4, k)
            matrices.append(name)
        elif leaf in ("bias_ih_l0", "bias_hh_l0"):
            out[name] = _rows(t, 4, k)
        elif name.endswith("boom.up.weight"):
            out[name] = _linear(t, chunks, k)
            matrices.append(name)
        elif name.endswith("boom.up.bias"):
            out[name] = _rows(t, chunks, k)
        elif name.endswith("v_overparam.linear.weight"):
            out[name] = _linear(t, 2, k)
            matrices.append(name)
        elif name.endswith("v_overparam.linear.bias"):
            out[name] = _rows(t, 2, k)
        elif name.endswith("attention.q.weight"):
            out[name] = _linear(t, 1, k)
            matrices.append(name)
        elif name.endswith("attention.q.bias"):
            out[name] = _tile_vector(t, k)
        elif module == "q_norm":
            out[name] = _tile_vector(t, k) / math.sqrt(k)
        elif t.dim() == 1:  # LayerNorm weights and biases, the attention's gate vectors
            out[name] = _tile_vector(t, k)
        else:
            raise ValueError(f"widen does not know how to widen {name} {tuple(t.shape)}")
    if noise > 0 and k > 1:
        gen = torch.Generator().manual_seed(seed)
        for name in matrices:
            w = out[name]
            w.add_(torch.randn(w.shape, generator=gen) * (noise * float(w.std())))
    big.load_state_dict(out)
    return big.train(model.training)
