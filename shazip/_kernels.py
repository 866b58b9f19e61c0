"""Fused integer kernels (numba) for the engine's CPU path.

Each kernel computes exactly the integer formulas of the torch reference in `shazip/engine.py`, one lane
row at a time, without int64 temporaries for every elementwise op. Only integer arithmetic (plus the
correctly rounded float64 square root of an exact integer in LayerNorm, as in the reference), so the
results are the same bit for bit; `tests/test_engine_backends.py` checks it.

GEMM results arrive as float32 arrays holding exact integers; GEMM inputs leave as float32 arrays
holding int8 values.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# The constants of shazip.engine (duplicated as literals so numba can fold them; engine asserts equality).
GATE_Q = 10
GATE_RANGE = 16 << GATE_Q
ACT_Q = 15
CELL_MAX = 1 << 28
NORM_Q = 12
LN_INV_BITS = 40
AFFINE_SHIFT = 32
RES_MAX = 32767
INT8_MAX = 127
GELU_RANGE = 1 << 14
BOOM_CLAMP = 1 << 24
ATT_EXP_Q = 8
ATT_EXP_SIZE = 16 << ATT_EXP_Q
ATT_AVG_Q = 8
LOGIT_EXP_SIZE = 20 << 10

_LN_ROUND = 1 << (LN_INV_BITS - NORM_Q - 1)
_LN_SHIFT = LN_INV_BITS - NORM_Q

_opts = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_opts)
def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else (hi if v > hi else v)


@njit(**_opts)
def _ln_row(x, eps: int, n) -> None:
    """Q12 normalised values of one row x (ints) into n (int64)."""
    d = x.shape[0]
    s1 = np.int64(0)
    s2 = np.int64(0)
    for c in range(d):
        v = np.int64(x[c])
        s1 += v
        s2 += v * v
    var = d * s2 - s1 * s1 + eps
    root = np.int64(math.floor(math.sqrt(np.float64(var))))
    if root < 1:
        root = 1
    inv = (np.int64(1) << LN_INV_BITS) // root
    for c in range(d):
        n[c] = ((d * np.int64(x[c]) - s1) * inv + _LN_ROUND) >> _LN_SHIFT


@njit(**_opts)
def _affine(n, g, b, limit: int, out) -> None:
    for c in range(n.shape[0]):
        out[c] = _clamp((n[c] * g[c] + b[c]) >> AFFINE_SHIFT, -limit, limit)


def ln_two(x, eps, g1, b1, lim1, out1, g2, b2, lim2, out2) -> None:
    """LayerNorm of each row of x, then two affine targets (e.g. int8 GEMM input and residual)."""
    for r in prange(x.shape[0]):
        n = np.empty(x.shape[1], dtype=np.int64)
        _ln_row(x[r], eps, n)
        _affine(n, g1, b1, lim1, out1[r])
        _affine(n, g2, b2, lim2, out2[r])


def lstm_cell(acc_x, acc_h, mx, mh, zb, zs, sig, tanh, cell, h8, res, hm, hb, hs, mid) -> None:
    """Gates from both GEMMs, cell update, h (int8 state and residual contribution) for k lanes."""
    k, d = res.shape
    half = np.int64(1) << (ACT_Q - 1)
    for r in prange(k):
        ax = acc_x[r]
        ah = acc_h[r]
        for c in range(d):
            zi = _clamp(
                (np.int64(ax[c]) * mx[c] + np.int64(ah[c]) * mh[c] + zb[c]) >> zs, -GATE_RANGE, GATE_RANGE - 1
            )
            c1 = c + d
            zf = _clamp(
                (np.int64(ax[c1]) * mx[c1] + np.int64(ah[c1]) * mh[c1] + zb[c1]) >> zs,
                -GATE_RANGE,
                GATE_RANGE - 1,
            )
            c2 = c1 + d
            zg = _clamp(
                (np.int64(ax[c2]) * mx[c2] + np.int64(ah[c2]) * mh[c2] + zb[c2]) >> zs,
                -GATE_RANGE,
                GATE_RANGE - 1,
            )
            c3 = c2 + d
            zo = _clamp(
                (np.int64(ax[c3]) * mx[c3] + np.int64(ah[c3]) * mh[c3] + zb[c3]) >> zs,
                -GATE_RANGE,
                GATE_RANGE - 1,
            )
            ig = np.int64(sig[zi + GATE_RANGE])
            fg = np.int64(sig[zf + GATE_RANGE])
            gg = np.int64(tanh[zg + GATE_RANGE])
            og = np.int64(sig[zo + GATE_RANGE])
            cv = _clamp((fg * np.int64(cell[r, c]) + ig * gg + half) >> ACT_Q, -CELL_MAX, CELL_MAX)
            cell[r, c] = cv
            tc = np.int64(tanh[_clamp((cv + 16) >> 5, -GATE_RANGE, GATE_RANGE - 1) + GATE_RANGE])
            hp = og * tc
            h8[r, c] = (hp * INT8_MAX + (np.int64(1) << 29)) >> 30
            mid[r, c] = _clamp(np.int64(res[r, c]) + ((hp * hm + hb) >> hs), -RES_MAX, RES_MAX)


def attention_inputs(mid, eps, g_mem, b_mem, g_mid, b_mid, g_res, b_res, ring, written, mid8, attres) -> None:
    """LayerNorm of the attention input: memory vector (into the ring), query input, residual."""
    k, d = mid.shape
    slots = ring.shape[1]
    for r in prange(k):
        n = np.empty(d, dtype=np.int64)
        _ln_row(mid[r], eps, n)
        _affine(n, g_mem, b_mem, INT8_MAX, ring[r, written[r] % slots])
        written[r] += 1
        _affine(n, g_mid, b_mid, INT8_MAX, mid8[r])
        _affine(n, g_res, b_res, RES_MAX, attres[r])


def query(acc, qm, qb, qs, eps, g, b, q8) -> None:
    """Query linear requantised (residual-style ints), its LayerNorm, gates folded in: int8 query."""
    k, d = q8.shape
    for r in prange(k):
        qp = np.empty(d, dtype=np.int64)
        n = np.empty(d, dtype=np.int64)
        for c in range(d):
            qp[c] = _clamp((np.int64(acc[r, c]) * qm[c] + qb[c]) >> qs, -RES_MAX, RES_MAX)
        _ln_row(qp, eps, n)
        _affine(n, g, b, INT8_MAX, q8[r])


def attend(q8, ring, written, am, ab, ash, exp_lut, aom, aob, aos, attres, narrow_sum, out) -> None:
    """Scores over the valid ring slots, exp-table softmax, weighted sum, value gate, residual.

    The loops are written so that LLVM vectorises them on narrow integers: each score is one int16 x int8
    dot product whose sum is only kept as int32 (|sum| <= d * 127 * 127 < 2**31; LLVM then uses
    multiply-add pairs, e.g. AVX2 vpmaddwd), and with `narrow_sum` (the engine checks that
    slots * max(exp_lut) * 127 < 2**31) the weighted sum of int8 memory vectors is accumulated in int32
    instead of int64. Both are exact, so the integers are those of the reference.
    """
    k, d = q8.shape
    slots = ring.shape[1]
    for r in prange(k):
        scores = np.empty(slots, dtype=np.int32)
        weights = np.empty(slots, dtype=np.int32)
        qrow = np.empty(d, dtype=np.int16)
        valid = min(written[r], slots)
        for c in range(d):
            qrow[c] = q8[r, c]
        for j in range(valid):
            key = ring[r, j]
            s = 0
            for c in range(d):
                s += qrow[c] * key[c]
            scores[j] = s  # (only the low 32 bits are kept, and the sum fits: see the docstring)
        top = np.int64(-(1 << 40))
        for j in range(valid):
            if scores[j] > top:
                top = scores[j]
        total = np.int64(0)
        for j in range(valid):
            w = exp_lut[_clamp(((top - scores[j]) * am + ab) >> ash, 0, ATT_EXP_SIZE - 1)]
            weights[j] = w
            total += w
        acc = np.zeros(d, dtype=np.int64)
        if narrow_sum:
            acc32 = np.zeros(d, dtype=np.int32)
            for j in range(valid):
                w32 = weights[j]
                if w32 == 0:
                    continue
                key = ring[r, j]
                for c in range(d):
                    acc32[c] += w32 * key[c]
            for c in range(d):
                acc[c] = acc32[c]
        else:
            for j in range(valid):
                w = np.int64(weights[j])
                if w == 0:
                    continue
                key = ring[r, j]
                for c in range(d):
                    acc[c] += w * key[c]
        for c in range(d):
            avg = (acc[c] << ATT_AVG_Q) // total
            out[r, c] = _clamp(np.int64(attres[r, c]) + ((avg * aom[c] + aob) >> aos), -RES_MAX, RES_MAX)


def boom(acc, um, ub, us, gelu, ffres, bm, bb, bs, out) -> None:
    """GELU(up-projection) through the table, chunks summed, added to the residual."""
    k, d = ffres.shape
    chunks = acc.shape[1] // d
    for r in prange(k):
        total = np.zeros(d, dtype=np.int64)
        for j in range(chunks):
            base = j * d
            for c in range(d):
                u = _clamp(
                    (np.int64(acc[r, base + c]) * um[base + c] + ub[base + c]) >> us, -BOOM_CLAMP, BOOM_CLAMP
                )
                if u > GELU_RANGE:
                    total[c] += u
                else:
                    total[c] += gelu[_clamp(u, -GELU_RANGE, GELU_RANGE) + GELU_RANGE]
        for c in range(d):
            out[r, c] = _clamp(np.int64(ffres[r, c]) + ((total[c] * bm + bb) >> bs), -RES_MAX, RES_MAX)


def requant_int8(x, m, b, s, out) -> None:
    k, d = x.shape
    for r in prange(k):
        for c in range(d):
            out[r, c] = _clamp((np.int64(x[r, c]) * m + b) >> s, -INT8_MAX, INT8_MAX)


def frequencies(acc, lm, lb, ls, exp_lut, table_total, freqs) -> None:
    """Logits (Q10 nats) -> frequency table: exp table of (max - logit), scaled, each entry >= 1."""
    k, v = acc.shape
    spread = table_total - v
    for r in prange(k):
        logit = np.empty(v, dtype=np.int64)
        e = np.empty(v, dtype=np.int64)
        top = np.int64(-(1 << 62))
        arg = 0
        for c in range(v):
            logit[c] = (np.int64(acc[r, c]) * lm[c] + lb[c]) >> ls
            if logit[c] > top:
                top = logit[c]
                arg = c
        total = np.int64(0)
        for c in range(v):
            e[c] = exp_lut[_clamp(top - logit[c], 0, LOGIT_EXP_SIZE - 1)]
            total += e[c]
        used = np.int64(0)
        for c in range(v):
            f = 1 + (e[c] * spread) // total
            freqs[r, c] = f
            used += f
        freqs[r, arg] += table_total - used


def gemm_int8(a, w, out) -> None:
    """out[r, o] = sum_c a[r, c] * w[o, c]: int8 values (a held in float32, w stored as int8), for few lanes.

    With one to a few lanes the float32 GEMM is bound by reading float32 weights; int8 weights are a
    quarter of the bytes. Sums are accumulated in float32 in whatever order the compiler picks
    (fastmath): every partial sum is an integer below K * 127 * 127 < 2**24, so each is exact and the
    result is the same integer as any other summation order, the float32 GEMM's included.
    """
    k, depth = a.shape
    for o in prange(w.shape[0]):
        wr = w[o]
        r = 0
        while r + 4 <= k:  # four lanes per pass over the weight row
            a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
            s0 = s1 = s2 = s3 = np.float32(0)
            for c in range(depth):
                wv = np.float32(wr[c])
                s0 += a0[c] * wv
                s1 += a1[c] * wv
                s2 += a2[c] * wv
                s3 += a3[c] * wv
            out[r, o], out[r + 1, o], out[r + 2, o], out[r + 3, o] = s0, s1, s2, s3
            r += 4
        while r < k:
            ar = a[r]
            s = np.float32(0)
            for c in range(depth):
                s += ar[c] * np.float32(wr[c])
            out[r, o] = s
            r += 1


KERNELS = (
    "gemm_int8",
    "ln_two",
    "lstm_cell",
    "attention_inputs",
    "query",
    "attend",
    "boom",
    "requant_int8",
    "frequencies",
)
# Each kernel compiled twice: serial (few lanes or one thread) and over lanes in parallel (prange). Lanes
# are independent and every row is computed by one thread in a fixed order, so both give the same integers.
_FASTMATH = {"gemm_int8"}  # exact whatever the summation order (see its docstring)


def _compile(name: str, parallel: bool):  # noqa: ANN202
    return staticmethod(njit(parallel=parallel, fastmath=name in _FASTMATH, **_opts)(globals()[name]))


serial = type("serial", (), {name: _compile(name, False) for name in KERNELS})
parallel = type("parallel", (), {name: _compile(name, True) for name in KERNELS})
