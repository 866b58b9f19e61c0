"""Export: a trained float SHA-RNN -> an integer model file for `shazip.engine`.

Weights: int8, symmetric, one scale per output channel. Activations entering a GEMM: int8 with a
per-tensor scale calibrated on sample text (max |value| -> 127). Residual-stream values: integers with a
per-site scale (calibrated max |value| -> 4096, clamped at 32767: 8x headroom for unusual inputs).
Every scale is folded into integer multipliers and shifts here, and every nonlinearity (sigmoid, tanh,
GELU, exp) into an integer lookup table, so the engine never evaluates a float function. The exact
formulas the numbers are made for are in `shazip/engine/` (docs/engine.md).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shazip.engine import Engine, measure_bpb
from shazip.engine import fixed_point as E
from shazip.format import lane_layout
from shazip.modelfile import ModelFile
from training.model import SHARNN

RES_CAL = 4096  # a residual site's calibrated max |value| maps to this integer
CALIBRATION_LANES = 16
CALIBRATION_SEGMENT = 512
MULTIPLIER_BITS = 22  # integer multipliers are below 2**22, so int64 products never overflow


def fixed_point(m: np.ndarray | float, bits: int = MULTIPLIER_BITS) -> tuple[np.ndarray, int]:
    """Integers M and one shift S with M / 2**S ~= m (M below 2**bits in magnitude)."""
    arr = np.asarray(m, dtype=np.float64)
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    shift = 62 if top == 0.0 else bits - 1 - math.floor(math.log2(top))
    shift = int(min(max(shift, 1), 62))
    return np.round(arr * 2.0**shift).astype(np.int64), shift


def bias_safe_shift(shift: int, bias_real: np.ndarray | float | None) -> int:
    """Lower `shift` if needed so that bias * 2**shift stays far inside int64 (below 2**52)."""
    if bias_real is None:
        return shift
    top = float(np.max(np.abs(np.asarray(bias_real, dtype=np.float64)), initial=0.0))
    if top > 0.0:
        shift = min(shift, 51 - math.floor(math.log2(top)))
    return max(shift, 1)


def quantise_rows(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: (int8 weights, float64 scales)."""
    w64 = w.detach().double().numpy()
    scale = np.abs(w64).max(axis=1) / E.INT8_MAX
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w64 / scale[:, None]), -E.INT8_MAX, E.INT8_MAX).astype(np.int8)
    return q, scale


def ln_target(
    ln: torch.nn.LayerNorm | None, scale: float, gamma=None, beta=None
) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm affine part onto an integer grid of step `scale`: y = (n_Q12 * g + b) >> 32."""
    if gamma is None:
        gamma = ln.weight.detach().double().numpy()
        beta = ln.bias.detach().double().numpy()
    g = np.round(gamma / scale * 2.0 ** (E.AFFINE_SHIFT - E.NORM_Q)).astype(np.int64)
    b = np.round(beta / scale * 2.0**E.AFFINE_SHIFT).astype(np.int64) + (1 << (E.AFFINE_SHIFT - 1))
    return g, b


def eps_term(ln: torch.nn.LayerNorm, d: int, input_scale: float) -> int:
    """LayerNorm's eps in the engine's integer units: d^2 * eps / scale^2."""
    return int(min(round(d * d * ln.eps / input_scale**2), 1 << 52))


@torch.no_grad()
def calibrate(model: SHARNN, data: bytes) -> dict[str, float]:
    """Max |value| at every quantisation site, running the float model over `data` as several lanes."""
    cfg = model.cfg
    lanes = max(1, min(CALIBRATION_LANES, len(data) // 256))
    per = len(data) // lanes
    if per < 1:
        raise ValueError("calibration needs at least a few hundred bytes of sample text")
    arr = np.frombuffer(data[: per * lanes], dtype=np.uint8).reshape(lanes, per)
    arr = np.concatenate([np.full((lanes, 1), E.START_BYTE, dtype=np.uint8), arr], axis=1)
    x = torch.from_numpy(arr.astype(np.int64))
    stats: dict[str, float] = {}

    def record(key: str, value: torch.Tensor) -> None:
        stats[key] = max(stats.get(key, 0.0), float(value.detach().abs().max()))

    hooks = []

    def on_output(key: str, transform=None):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            record(key, transform(out) if transform else out)

        return hook

    def on_input(key: str):
        def hook(_module, inputs):
            record(key, inputs[0])

        return hook

    d = cfg.d_model
    for i, blk in enumerate(model.blocks):
        p = f"b{i}."
        hooks.append(blk.ln_start.register_forward_hook(on_output(p + "ls")))
        hooks.append(blk.ln_xff.register_forward_hook(on_output(p + "xff")))
        hooks.append(blk.boom.up.register_forward_hook(on_output(p + "u")))
        hooks.append(blk.register_forward_hook(on_output(p + "out")))
        if blk.attention is not None:
            att = blk.attention
            qs, ks, _ = att.gates()
            fold = (qs * ks * att.scale).detach()
            hooks.append(blk.ln_mem.register_forward_pre_hook(on_input(p + "mid")))
            hooks.append(blk.ln_ff.register_forward_pre_hook(on_input(p + "att")))
            hooks.append(blk.ln_mem.register_forward_hook(on_output(p + "mem")))
            hooks.append(blk.ln_mid.register_forward_hook(on_output(p + "lmid")))
            hooks.append(att.q.register_forward_hook(on_output(p + "qp")))
            hooks.append(att.q_norm.register_forward_hook(on_output(p + "q", lambda v, f=fold: v * f)))
        else:
            hooks.append(blk.ln_ff.register_forward_pre_hook(on_input(p + "mid")))
    try:
        state = model.initial_state(lanes)
        for start in range(0, x.shape[1], CALIBRATION_SEGMENT):
            _, state = model(x[:, start : start + CALIBRATION_SEGMENT], state)
    finally:
        for h in hooks:
            h.remove()
    assert d == model.cfg.d_model
    return stats


def _table(fn, lo: int, hi: int, in_scale: float, out_scale: float) -> np.ndarray:
    """Integer table of round(fn(j * in_scale) / out_scale) for integers j in [lo, hi)."""
    j = torch.arange(lo, hi, dtype=torch.float64)
    return torch.round(fn(j * in_scale) / out_scale).numpy().astype(np.int64)


@torch.no_grad()
def quantise(model: SHARNN, calibration: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The engine's integer tensors and scalar parameters for `model`."""
    model = copy.deepcopy(model).float().cpu().eval()
    # The engine adds each block's normalised input to its LSTM's output (the `startres` term). A model
    # without that skip connection (fidelity paper) is the same computation with the term exported as
    # zeros: integer zeros are exact on every backend, so no engine change is needed.
    skip = model.arch.lstm_skip
    if model.arch.attn_every_block:
        raise ValueError(
            "this model has attention in every block (attn_every_block); the shazip engine runs models with"
            " one attention block"
        )
    cfg = model.cfg
    d = cfg.d_model
    cal = calibrate(model, calibration)
    quant: dict = {"scheme": E.QUANT_SCHEME, "calibration_bytes": len(calibration)}
    t: dict[str, np.ndarray] = {}

    def res_scale(key: str) -> float:
        return max(cal[key], 1e-6) / RES_CAL

    def int8_scale(key: str) -> float:
        return max(cal[key], 1e-6) / E.INT8_MAX

    def put_target(name: str, ln, scale: float, gamma=None, beta=None) -> None:
        g, b = ln_target(ln, scale, gamma, beta)
        t[name + "_g"], t[name + "_b"] = g, b

    def put_requant(name: str, m, bias_real=None, per_channel: bool = True) -> None:
        """(v * M + B) >> S for v in integer units; m the real multiplier; bias_real in output units."""
        _, S = fixed_point(m)
        S = bias_safe_shift(S, bias_real)
        M = np.round(np.asarray(m, dtype=np.float64) * 2.0**S).astype(np.int64)
        B = np.zeros_like(np.asarray(m, dtype=np.float64)) if bias_real is None else bias_real
        B = np.round(np.asarray(B, dtype=np.float64) * 2.0**S).astype(np.int64) + (1 << (S - 1))
        quant[name + "_shift"] = S
        if per_channel:
            t[name + "_m"], t[name + "_b"] = M, B
        else:
            quant[name + "_m"], quant[name + "_b"] = int(M), int(B)

    emb = model.embed.weight.detach().double()
    prev_out_scale = None
    for i, blk in enumerate(model.blocks):
        p = f"b{i}."
        mid_scale = res_scale(p + "mid")
        # --- LayerNorm at the block's start (block 0: a table over the 256 byte values) ---
        if i == 0:
            ln0 = F.layer_norm(
                emb, (d,), blk.ln_start.weight.double(), blk.ln_start.bias.double(), blk.ln_start.eps
            )
            ls_scale = float(ln0.abs().max()) / E.INT8_MAX
            t[p + "start8_table"] = np.clip(np.round(ln0.numpy() / ls_scale), -127, 127).astype(np.int8)
            startres = np.clip(np.round(ln0.numpy() / mid_scale), -E.RES_MAX, E.RES_MAX)
            t[p + "startres_table"] = (startres if skip else np.zeros_like(startres)).astype(np.int32)
        else:
            ls_scale = int8_scale(p + "ls")
            quant[p + "ln_start_eps"] = eps_term(blk.ln_start, d, prev_out_scale)
            put_target(p + "start8", blk.ln_start, ls_scale)
            if skip:
                put_target(p + "startres", blk.ln_start, mid_scale)
            else:  # g = 0 and only the rounding constant in b: (n * 0 + b) >> 32 == 0 for every n
                zeros = np.zeros(d)
                put_target(p + "startres", None, mid_scale, zeros, zeros)
        # --- LSTM: gates in Q10 from two int8 GEMMs, h = o * tanh(c) in Q30 ---
        lstm = blk.lstm
        wih, sih = quantise_rows(lstm.weight_ih_l0)
        whh, shh = quantise_rows(lstm.weight_hh_l0)
        t[p + "wih"], t[p + "whh"] = wih, whh
        mx = sih * ls_scale * 2.0**E.GATE_Q
        mh = shh / E.INT8_MAX * 2.0**E.GATE_Q
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).double().numpy()
        _, zs = fixed_point(np.concatenate([mx, mh]))
        zs = bias_safe_shift(zs, bias * 2.0**E.GATE_Q)
        t[p + "z_mx"] = np.round(mx * 2.0**zs).astype(np.int64)
        t[p + "z_mh"] = np.round(mh * 2.0**zs).astype(np.int64)
        t[p + "z_b"] = np.round(bias * 2.0 ** (E.GATE_Q + zs)).astype(np.int64) + (1 << (zs - 1))
        quant[p + "z_shift"] = zs
        put_requant(p + "h", 1.0 / (2.0**30 * mid_scale), per_channel=False)
        # --- attention (one block) ---
        ff_in_scale = mid_scale
        if blk.attention is not None:
            att = blk.attention
            if blk.ln_mem.eps != blk.ln_mid.eps:
                raise ValueError("ln_mem and ln_mid must share eps (the engine normalises once)")
            att_scale = res_scale(p + "att")
            mem_scale = int8_scale(p + "mem")
            lmid_scale = int8_scale(p + "lmid")
            qp_scale = res_scale(p + "qp")
            q_scale = int8_scale(p + "q")
            quant[p + "ln_a_eps"] = eps_term(blk.ln_mem, d, mid_scale)
            put_target(p + "mem8", blk.ln_mem, mem_scale)
            put_target(p + "mid8", blk.ln_mid, lmid_scale)
            put_target(p + "attres", blk.ln_mid, att_scale)
            wq, sq = quantise_rows(att.q.weight)
            t[p + "wq"] = wq
            put_requant(p + "qp", sq * lmid_scale / qp_scale, att.q.bias.double().numpy() / qp_scale)
            quant[p + "ln_q_eps"] = eps_term(att.q_norm, d, qp_scale)
            qs, ks, vs = (v.double().numpy() for v in att.gates())
            fold = qs * ks * att.scale
            put_target(
                p + "q8",
                None,
                q_scale,
                att.q_norm.weight.double().numpy() * fold,
                att.q_norm.bias.double().numpy() * fold,
            )
            put_requant(p + "att", q_scale * mem_scale * 2.0**E.ATT_EXP_Q, per_channel=False)
            t[p + "att_exp_lut"] = _table(
                lambda v: torch.exp(-v), 0, E.ATT_EXP_SIZE, 2.0**-E.ATT_EXP_Q, 2.0**-15
            )
            M, S = fixed_point(mem_scale * vs / 2.0**E.ATT_AVG_Q / att_scale)
            t[p + "ao_m"], quant[p + "ao_shift"], quant[p + "ao_b"] = M, S, 1 << (S - 1)
            ff_in_scale = att_scale
        # --- Boom: LayerNorms, up-projection, GELU table, chunks summed ---
        if blk.ln_ff.eps != blk.ln_xff.eps:
            raise ValueError("ln_ff and ln_xff must share eps (the engine normalises once)")
        out_scale = res_scale(p + "out")
        xff_scale = int8_scale(p + "xff")
        u_scale = max(cal[p + "u"] / RES_CAL, 8.0 / E.GELU_RANGE)  # GELU(u) == u beyond the table
        quant[p + "ln_ff_eps"] = eps_term(blk.ln_ff, d, ff_in_scale)
        put_target(p + "ffres", blk.ln_ff, out_scale)
        put_target(p + "xff8", blk.ln_xff, xff_scale)
        wup, sup = quantise_rows(blk.boom.up.weight)
        t[p + "wup"] = wup
        put_requant(p + "u", sup * xff_scale / u_scale, blk.boom.up.bias.double().numpy() / u_scale)
        gelu = blk.boom.activation  # the model's GELU: exact, or the reference's sigmoid approximation
        t[p + "gelu_lut"] = _table(gelu, -E.GELU_RANGE, E.GELU_RANGE + 1, u_scale, u_scale).astype(np.int32)
        put_requant(p + "boom", u_scale / out_scale, per_channel=False)
        prev_out_scale = out_scale
    # --- output: int8 final state, tied embedding GEMM, logits in Q10 nats ---
    fin_scale = int8_scale(f"b{cfg.n_blocks - 1}.out")
    put_requant("fin", prev_out_scale / fin_scale, per_channel=False)
    wout, sout = quantise_rows(model.embed.weight)
    t["wout"] = wout
    put_requant("logit", sout * fin_scale * 2.0**E.LOGIT_Q, model.out_bias.double().numpy() * 2.0**E.LOGIT_Q)
    t["logit_exp_lut"] = _table(
        lambda v: torch.exp(-v), 0, E.LOGIT_EXP_SIZE, 2.0**-E.LOGIT_Q, 2.0**-20
    ).astype(np.int32)
    gate = (-E.GATE_RANGE, E.GATE_RANGE, 2.0**-E.GATE_Q, 2.0**-E.ACT_Q)
    t["sigmoid_lut"] = _table(torch.sigmoid, *gate).astype(np.int32)
    t["tanh_lut"] = _table(torch.tanh, *gate).astype(np.int32)
    # Tables as narrow as their values allow (Q15 tables are clamped to +-32767 so they fit int16: the
    # engine reads the same stored values on every path, so this is part of the model, not an error).
    for name in list(t):
        if name.endswith("_lut"):
            lut = t[name]
            if name.rsplit(".", 1)[-1] in ("sigmoid_lut", "tanh_lut", "att_exp_lut"):
                lut = np.clip(lut, -32767, 32767)
            fits16 = lut.min() >= -32768 and lut.max() <= 32767
            t[name] = lut.astype(np.int16 if fits16 else np.int32)
    quant["calibration_max"] = {k: float(v) for k, v in sorted(cal.items())}
    return quant, t


def export_model(
    model: SHARNN,
    path: str | Path | None,
    *,
    calibration: bytes,
    name: str,
    card: dict,
    eval_data: bytes | None = None,
    eval_lanes: int = 16,
) -> ModelFile:
    """Quantise `model`, write the model file to `path` (unless None) and return it.

    With `eval_data`, the integer engine's bits per byte on it (split into `eval_lanes` lanes) goes into
    the card as `bpb_integer`.
    """
    quant, tensors = quantise(model, calibration)
    mf = ModelFile(config=model.cfg, quant=quant, tensors=tensors, name=name, card=dict(card))
    if eval_data:
        engine = Engine(mf)
        mf = mf.with_card(
            {
                **mf.card,
                "bpb_integer": round(measure_bpb(engine, eval_data, eval_lanes), 5),
                "eval_bytes": len(eval_data),
            }
        )
    if path is not None:
        mf.save(path)
    return mf


@torch.no_grad()
def float_bpb(model: SHARNN, data: bytes, lanes: int = 1) -> float:
    """The float model's bits per byte on `data` laid out in lanes as model frames are (`lane_layout`),
    each lane starting after START_BYTE, as `shazip.engine.measure_bpb` does."""
    model = copy.deepcopy(model).float().cpu().eval()
    n = len(data)
    run, full, rest = lane_layout(n, lanes)
    total = 0.0
    for i in range(full + (1 if rest else 0)):
        chunk = data[i * run : (i + 1) * run]
        x = torch.tensor([E.START_BYTE, *chunk], dtype=torch.int64).unsqueeze(0)
        state = None
        for s in range(0, len(chunk), CALIBRATION_SEGMENT):
            end = min(s + CALIBRATION_SEGMENT, len(chunk))
            logits, state = model(x[:, s:end], state)
            target = x[0, s + 1 : end + 1]
            total += float(F.cross_entropy(logits[0], target, reduction="sum")) / math.log(2)
    return total / n
