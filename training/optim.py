"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), as the SHA-RNN paper trains with.

torch has no LAMB, so it is written here. Per parameter tensor:

    m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2          (Adam moments)
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w          (Adam step plus decoupled weight decay)
    trust = phi(||w||) / ||u||   (1 where either norm is 0), clamped to [min_trust, max_trust]
    w -= lr * trust * u

phi is the identity, or with `weight_norm_clamp = c > 0`, min(||w||, c). The SHA-RNN reference code
trained with the widely used PyTorch LAMB of its time: no bias correction, phi = min(||w||, 10), and a
minimum trust ratio of 0.25 (so small or freshly initialised tensors, such as zero gate vectors, still
move). `bias_correction=False, weight_norm_clamp=10, min_trust=0.25` reproduces that; the defaults
follow the LAMB paper (algorithm 2, with bias correction) with the trust ratio itself capped at 10.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        min_trust: float = 0.0,
        max_trust: float = 10.0,
        bias_correction: bool = True,
        weight_norm_clamp: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1): {betas}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            min_trust=min_trust,
            max_trust=max_trust,
            bias_correction=bias_correction,
            weight_norm_clamp=weight_norm_clamp,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - the torch Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                if group["bias_correction"]:
                    m_hat = m / (1 - b1 ** state["step"])
                    v_hat = v / (1 - b2 ** state["step"])
                else:
                    m_hat, v_hat = m, v
                weight = p.float()
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(weight, alpha=group["weight_decay"])
                w_norm = weight.norm()
                if group["weight_norm_clamp"] > 0:
                    w_norm = w_norm.clamp(max=group["weight_norm_clamp"])
                u_norm = update.norm()
                # Where either norm is zero (e.g. zero-initialised biases) the layer-wise ratio is
                # meaningless: fall back to 1, then clamp like everything else.
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                trust = trust.clamp(group["min_trust"], group["max_trust"])
                p.add_((update * (-group["lr"] * trust)).to(p.dtype))
        return loss
