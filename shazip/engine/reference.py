"""The engine's reference backend: the integer formulas written with torch, on any device (CPU or CUDA).

The numba backend computes the same integers (tests compare them table by table). GEMMs multiply int8
values held in float32: with K <= 1040 terms every partial sum is an integer below 2**24, exact whatever
the summation order, BLAS, thread count, device or reduced-precision mode (TF32 and bf16 inputs hold
int8 values exactly, and accumulate in float32). The attention's weighted sum of values can pass 2**24,
so it is summed in float64. Results are converted to int64 right away; everything after is integer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from shazip.engine import fixed_point as fp
from shazip.engine.state import EngineState
from shazip.modelfile import ModelFile

GEMM_WEIGHTS = ("wih", "whh", "wq", "wup", "wout")


def _shr(v: torch.Tensor, m: torch.Tensor | int, b: torch.Tensor | int, s: int) -> torch.Tensor:
    """(v * m + b) >> s in int64 (arithmetic shift: b carries the round-half-up constant)."""
    return (v * m + b) >> s


def ln_normalise(x: torch.Tensor, eps_term: int) -> torch.Tensor:
    """Integer LayerNorm without the affine part: [B, d] int64 -> Q12 normalised values (int64)."""
    d = x.shape[-1]
    s1 = x.sum(-1, keepdim=True)
    s2 = (x * x).sum(-1, keepdim=True)
    v = d * s2 - s1 * s1 + eps_term
    root = torch.sqrt(v.to(torch.float64)).floor().to(torch.int64).clamp_min(1)
    inv = torch.div(torch.full_like(root, 1 << fp.LN_INV_BITS), root, rounding_mode="floor")
    dx = d * x - s1
    return (dx * inv + (1 << (fp.LN_INV_BITS - fp.NORM_Q - 1))) >> (fp.LN_INV_BITS - fp.NORM_Q)


def ln_affine(n: torch.Tensor, g: torch.Tensor, b: torch.Tensor, limit: int) -> torch.Tensor:
    return ((n * g + b) >> fp.AFFINE_SHIFT).clamp_(-limit, limit)


def frequency_table(logit_q: torch.Tensor, exp_lut: torch.Tensor) -> torch.Tensor:
    """[B, 256] int64 logits (Q10 nats) -> [B, 256] int32 frequencies, each >= 1, rows summing to
    TABLE_TOTAL."""
    diff = (logit_q.max(-1, keepdim=True).values - logit_q).clamp_(0, fp.LOGIT_EXP_SIZE - 1)
    e = exp_lut[diff]
    total = e.sum(-1, keepdim=True)
    spread = fp.TABLE_TOTAL - logit_q.shape[-1]
    freqs = 1 + torch.div(e * spread, total, rounding_mode="floor")
    remainder = fp.TABLE_TOTAL - freqs.sum(-1, keepdim=True)
    # first index of the largest logit (spelled out rather than argmin, whose tie rule is not documented
    # the same way for every device)
    index = torch.arange(logit_q.shape[-1], device=logit_q.device)
    top = torch.where(diff == 0, index, logit_q.shape[-1]).min(-1, keepdim=True).values
    freqs.scatter_add_(-1, top, remainder)
    return freqs.to(torch.int32)


class ReferenceBackend:
    """Steps EngineStates of torch tensors on `device`."""

    name = "torch"

    def __init__(self, model: ModelFile, device: str | torch.device = "cpu") -> None:
        self.cfg = model.config
        self.q = model.quant
        self.device = torch.device(device)
        self.d = self.cfg.d_model
        t = {}
        for name, arr in model.tensors.items():
            if name.rsplit(".", 1)[-1] in GEMM_WEIGHTS:
                t[name] = torch.from_numpy(arr.astype(np.float32)).to(self.device)  # exact in float32
            else:
                t[name] = torch.from_numpy(arr.astype(np.int64)).to(self.device)
        # Block 0's LSTM input depends on the byte only: its GEMM is done once here, for all 256 bytes.
        t["b0.wih_byte_table"] = F.linear(t["b0.start8_table"].to(torch.float32), t["b0.wih"])
        self.t = t

    def zeros(self, lanes: int) -> EngineState:
        d, dev, nb = self.d, self.device, self.cfg.n_blocks
        return EngineState(
            h8=[torch.zeros(lanes, d, dtype=torch.int8, device=dev) for _ in range(nb)],
            cell=[torch.zeros(lanes, d, dtype=torch.int32, device=dev) for _ in range(nb)],
            ring=torch.zeros(lanes, self.cfg.memory + 1, d, dtype=torch.int8, device=dev),
            written=torch.zeros(lanes, dtype=torch.int64, device=dev),
            freqs=torch.zeros(lanes, 256, dtype=torch.int32, device=dev),
        )

    def tables(self, state: EngineState) -> np.ndarray:
        return state.freqs.cpu().numpy().copy()

    def step(
        self, state: EngineState, x: np.ndarray, threads: int, alongside: Callable[[], object] | None
    ) -> None:
        """Lanes 0..len(x)-1 consume x. `threads` is torch's own business here (its setting is left
        alone); `alongside` runs first."""
        if alongside is not None:
            alongside()
        with torch.no_grad():
            self._step(state, torch.from_numpy(x.astype(np.int64)).to(self.device), len(x))

    def _step(self, st: EngineState, x: torch.Tensor, k: int) -> None:
        t, q = self.t, self.q
        out = None
        for i in range(self.cfg.n_blocks):
            p = f"b{i}."
            if i == 0:
                acc_x = t[p + "wih_byte_table"][x].to(torch.int64)
                res = t[p + "startres_table"][x]
            else:
                n = ln_normalise(out, q[p + "ln_start_eps"])
                a8 = ln_affine(n, t[p + "start8_g"], t[p + "start8_b"], fp.INT8_MAX)
                res = ln_affine(n, t[p + "startres_g"], t[p + "startres_b"], fp.RES_MAX)
                acc_x = F.linear(a8.to(torch.float32), t[p + "wih"]).to(torch.int64)
            mid = self._lstm(st, i, acc_x, res, k)
            if i == self.cfg.attn_index:
                mid = self._attention(st, mid, k)
            n = ln_normalise(mid, q[p + "ln_ff_eps"])
            ffres = ln_affine(n, t[p + "ffres_g"], t[p + "ffres_b"], fp.RES_MAX)
            xff8 = ln_affine(n, t[p + "xff8_g"], t[p + "xff8_b"], fp.INT8_MAX)
            acc = F.linear(xff8.to(torch.float32), t[p + "wup"]).to(torch.int64)
            u = _shr(acc, t[p + "u_m"], t[p + "u_b"], q[p + "u_shift"]).clamp_(-fp.BOOM_CLAMP, fp.BOOM_CLAMP)
            gelu = t[p + "gelu_lut"][u.clamp(-fp.GELU_RANGE, fp.GELU_RANGE) + fp.GELU_RANGE]
            g = torch.where(u > fp.GELU_RANGE, u, gelu)
            boom = g.view(k, -1, self.d).sum(1)
            out = (ffres + _shr(boom, q[p + "boom_m"], q[p + "boom_b"], q[p + "boom_shift"])).clamp_(
                -fp.RES_MAX, fp.RES_MAX
            )
        fin8 = _shr(out, q["fin_m"], q["fin_b"], q["fin_shift"]).clamp_(-fp.INT8_MAX, fp.INT8_MAX)
        acc = F.linear(fin8.to(torch.float32), t["wout"]).to(torch.int64)
        logit = _shr(acc, t["logit_m"], t["logit_b"], q["logit_shift"])
        st.freqs[:k] = frequency_table(logit, t["logit_exp_lut"])

    def _lstm(self, st: EngineState, i: int, acc_x: torch.Tensor, res: torch.Tensor, k: int) -> torch.Tensor:
        t, q, p = self.t, self.q, f"b{i}."
        acc_h = F.linear(st.h8[i][:k].to(torch.float32), t[p + "whh"]).to(torch.int64)
        z = (acc_x * t[p + "z_mx"] + acc_h * t[p + "z_mh"] + t[p + "z_b"]) >> q[p + "z_shift"]
        z = z.clamp_(-fp.GATE_RANGE, fp.GATE_RANGE - 1) + fp.GATE_RANGE
        zi, zf, zg, zo = z.chunk(4, dim=-1)
        sig, tanh = t["sigmoid_lut"], t["tanh_lut"]
        c = st.cell[i][:k].to(torch.int64)
        c = ((sig[zf] * c + sig[zi] * tanh[zg] + (1 << (fp.ACT_Q - 1))) >> fp.ACT_Q).clamp_(
            -fp.CELL_MAX, fp.CELL_MAX
        )
        tc = tanh[
            ((c + (1 << 4)) >> 5).clamp_(-fp.GATE_RANGE, fp.GATE_RANGE - 1) + fp.GATE_RANGE
        ]  # Q15 -> Q10
        hp = sig[zo] * tc  # Q30
        st.cell[i][:k] = c.to(torch.int32)
        st.h8[i][:k] = ((hp * fp.INT8_MAX + (1 << 29)) >> 30).to(torch.int8)
        return (res + _shr(hp, q[p + "h_m"], q[p + "h_b"], q[p + "h_shift"])).clamp_(-fp.RES_MAX, fp.RES_MAX)

    def _attention(self, st: EngineState, mid: torch.Tensor, k: int) -> torch.Tensor:
        t, q, p = self.t, self.q, f"b{self.cfg.attn_index}."
        n = ln_normalise(mid, q[p + "ln_a_eps"])
        mem8 = ln_affine(n, t[p + "mem8_g"], t[p + "mem8_b"], fp.INT8_MAX)
        mid8 = ln_affine(n, t[p + "mid8_g"], t[p + "mid8_b"], fp.INT8_MAX)
        attres = ln_affine(n, t[p + "attres_g"], t[p + "attres_b"], fp.RES_MAX)
        slots = self.cfg.memory + 1
        lane = torch.arange(k, device=self.device)
        written = st.written[:k]
        st.ring[lane, written % slots] = mem8.to(torch.int8)
        written += 1
        ring = st.ring[:k]
        acc = F.linear(mid8.to(torch.float32), t[p + "wq"]).to(torch.int64)
        qp = _shr(acc, t[p + "qp_m"], t[p + "qp_b"], q[p + "qp_shift"]).clamp_(-fp.RES_MAX, fp.RES_MAX)
        q8 = ln_affine(ln_normalise(qp, q[p + "ln_q_eps"]), t[p + "q8_g"], t[p + "q8_b"], fp.INT8_MAX)
        ringf = ring.to(torch.float32)
        scores = torch.bmm(ringf, q8.to(torch.float32).unsqueeze(-1)).squeeze(-1).to(torch.int64)
        valid = torch.arange(slots, device=self.device).unsqueeze(0) < written.clamp(max=slots).unsqueeze(1)
        scores = scores.masked_fill(~valid, -(1 << 40))
        top = scores.max(-1, keepdim=True).values
        idx = _shr(top - scores, q[p + "att_m"], q[p + "att_b"], q[p + "att_shift"]).clamp_(
            0, fp.ATT_EXP_SIZE - 1
        )
        w = t[p + "att_exp_lut"][idx].masked_fill_(~valid, 0)
        total = w.sum(-1, keepdim=True)
        o = torch.bmm(w.to(torch.float64).unsqueeze(1), ring.to(torch.float64)).squeeze(1).to(torch.int64)
        avg = torch.div(o << fp.ATT_AVG_Q, total, rounding_mode="floor")
        return (attres + _shr(avg, t[p + "ao_m"], q[p + "ao_b"], q[p + "ao_shift"])).clamp_(
            -fp.RES_MAX, fp.RES_MAX
        )
