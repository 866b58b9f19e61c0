"""The engine's CPU step: integer kernels compiled by numba, and one call that runs a whole step.

Each kernel computes exactly the integer formulas of the torch reference (`shazip/engine/reference.py`),
one lane row at a time, without int64 temporaries for every elementwise op. Only integer arithmetic (plus
the correctly rounded float64 square root of an exact integer in LayerNorm, as in the reference), so the
results are the same bit for bit; `tests/test_engine_backends.py` checks it.

GEMM inputs leave as int16 arrays holding int8 values; GEMM results arrive as int32 arrays.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from shazip import _numba_cache
from shazip.engine.fixed_point import (
    ACT_Q,
    AFFINE_SHIFT,
    ATT_AVG_Q,
    ATT_EXP_SIZE,
    BOOM_CLAMP,
    CELL_MAX,
    GATE_RANGE,
    GELU_RANGE,
    INT8_MAX,
    LN_INV_BITS,
    LOGIT_EXP_SIZE,
    NORM_Q,
    RES_MAX,
)

_LN_ROUND = 1 << (LN_INV_BITS - NORM_Q - 1)
_LN_SHIFT = LN_INV_BITS - NORM_Q

_opts = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_opts)
def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else (hi if v > hi else v)


@njit(**_opts)
def _floor_div(a: int, b: int, inv: float) -> int:
    """a // b (floor) for |a| < 2**50 and 0 < b < 2**50, inv = 1.0 / b: the float64 estimate a * inv is
    within 1 of a / b (relative error < 2**-51, |a / b| < 2**50), so truncating it is off by at most one
    and the remainder check makes it exact. Several times faster than an int64 division."""
    q = np.int64(np.float64(a) * inv)
    rest = a - q * b
    if rest < 0:
        q -= 1
    elif rest >= b:
        q += 1
    return q


@njit(**_opts)
def _ln_row(x, eps: int, n) -> None:
    """Q12 normalised values of one row x (ints) into n (int32: |d * x - sum(x)| <= sqrt(d * V) and
    floor(sqrt(V)) >= sqrt(V) / 2, so |n| <= 2 * sqrt(d) * 2**12 + 1 < 2**19 for any d the engine takes;
    int32 lets LLVM multiply n by int32 gains with vpmuldq in _affine)."""
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


@njit(**_opts)
def ln_two(x, eps, g1, b1, lim1, out1, g2, b2, lim2, out2) -> None:
    """LayerNorm of each row of x, then two affine targets (e.g. int8 GEMM input and residual)."""
    n = np.empty(x.shape[1], dtype=np.int32)
    for r in range(x.shape[0]):
        _ln_row(x[r], eps, n)
        _affine(n, g1, b1, lim1, out1[r])
        _affine(n, g2, b2, lim2, out2[r])


@njit(**_opts)
def lstm_cell(acc_x, acc_h, mx, mh, zb, zs, sig, tanh, cell, h8, res, hm, hb, hs, mid) -> None:
    """Gates from both GEMMs, cell update, h (int8 state and residual contribution) for k lanes.

    Arithmetic and table lookups are in separate loops: LLVM vectorises the arithmetic ones (with int32
    multipliers mx, mh it multiplies by vpmuldq) but not a loop with a lookup in it. (Scratch arrays are
    made once per call: an allocation costs ~0.1 us, and these kernels run row by row.)
    """
    k, d = res.shape
    half = np.int64(1) << (ACT_Q - 1)
    z = np.empty(4 * d, dtype=np.uint32)  # table index of each gate pre-activation (unsigned indices: numba
    # then skips its negative-index fix-up)
    gate = np.empty(4 * d, dtype=np.int32)  # gate values, Q15: input, forget, candidate, output
    at = np.empty(d, dtype=np.uint32)  # table index of the new cell value
    tc = np.empty(d, dtype=np.int32)  # tanh of the new cell value, Q15
    for r in range(k):
        ax = acc_x[r]
        ah = acc_h[r]
        for c in range(4 * d):
            v = (np.int64(ax[c]) * mx[c] + np.int64(ah[c]) * mh[c] + zb[c]) >> zs
            z[c] = min(max(v, -GATE_RANGE), GATE_RANGE - 1) + GATE_RANGE
        for c in range(d):
            gate[c] = sig[z[c]]
            gate[c + d] = sig[z[c + d]]
            gate[c + 2 * d] = tanh[z[c + 2 * d]]
            gate[c + 3 * d] = sig[z[c + 3 * d]]
        cr = cell[r]
        for c in range(d):
            cv = np.int64(gate[c + d]) * np.int64(cr[c]) + np.int64(gate[c]) * np.int64(gate[c + 2 * d])
            cv = min(max((cv + half) >> ACT_Q, -CELL_MAX), CELL_MAX)
            cr[c] = cv
            at[c] = min(max((cv + 16) >> 5, -GATE_RANGE), GATE_RANGE - 1) + GATE_RANGE  # Q15 -> Q10
        for c in range(d):
            tc[c] = tanh[at[c]]
        hr = h8[r]
        rr = res[r]
        mr = mid[r]
        for c in range(d):
            hp = np.int64(gate[c + 3 * d]) * np.int64(tc[c])  # Q30
            hr[c] = (hp * INT8_MAX + (np.int64(1) << 29)) >> 30
            mr[c] = min(max(np.int64(rr[c]) + ((hp * hm + hb) >> hs), -RES_MAX), RES_MAX)


@njit(**_opts)
def attention_inputs(mid, eps, g_mem, b_mem, g_mid, b_mid, g_res, b_res, ring, written, mid8, attres) -> None:
    """LayerNorm of the attention input: memory vector (into the ring), query input, residual."""
    k, d = mid.shape
    slots = ring.shape[1]
    n = np.empty(d, dtype=np.int32)
    for r in range(k):
        _ln_row(mid[r], eps, n)
        _affine(n, g_mem, b_mem, INT8_MAX, ring[r, written[r] % slots])
        written[r] += 1
        _affine(n, g_mid, b_mid, INT8_MAX, mid8[r])
        _affine(n, g_res, b_res, RES_MAX, attres[r])


@njit(**_opts)
def query(acc, qm, qb, qs, eps, g, b, q8) -> None:
    """Query linear requantised (residual-style ints), its LayerNorm, gates folded in: int8 query."""
    k, d = q8.shape
    qp = np.empty(d, dtype=np.int32)  # (clamped to +-RES_MAX)
    n = np.empty(d, dtype=np.int32)
    for r in range(k):
        for c in range(d):
            qp[c] = _clamp((np.int64(acc[r, c]) * qm[c] + qb[c]) >> qs, -RES_MAX, RES_MAX)
        _ln_row(qp, eps, n)
        _affine(n, g, b, INT8_MAX, q8[r])


def _madd_pairs(builder: ir.IRBuilder, use_avx2: bool):  # noqa: ANN202
    """f(x, y) for two <16 x i16>: the <8 x i32> sums of adjacent products (x0*y0 + x1*y1, ...)."""
    i16, i32 = ir.IntType(16), ir.IntType(32)
    v16x16, v8x32, v16x32 = ir.VectorType(i16, 16), ir.VectorType(i32, 8), ir.VectorType(i32, 16)
    if use_avx2:
        pmadd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8x32, [v16x16, v16x16]), "llvm.x86.avx2.pmadd.wd"
        )
        return lambda x, y: builder.call(pmadd, [x, y])
    even = ir.Constant(v8x32, list(range(0, 16, 2)))  # the same arithmetic in plain LLVM (any CPU)
    odd = ir.Constant(v8x32, list(range(1, 16, 2)))

    def madd_pairs(x: ir.Value, y: ir.Value) -> ir.Value:
        p = builder.mul(builder.sext(x, v16x32), builder.sext(y, v16x32))
        return builder.add(builder.shuffle_vector(p, p, even), builder.shuffle_vector(p, p, odd))

    return madd_pairs


def _byte_ops(builder: ir.IRBuilder, use_avx2: bool):  # noqa: ANN202
    """(sign, madd_bytes) on <32 x i8>: sign(m, s) = m negated where s < 0 and zeroed where s == 0 (AVX2
    vpsignb); madd_bytes(a, b) = the <16 x i16> sums of adjacent products of unsigned a and signed b (AVX2
    vpmaddubsw, which saturates; its callers keep every sum within int16, so the plain sum is the same)."""
    i8, i16 = ir.IntType(8), ir.IntType(16)
    v32x8, v16x16, v32x16 = ir.VectorType(i8, 32), ir.VectorType(i16, 16), ir.VectorType(i16, 32)
    if use_avx2:
        fn_sign = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v32x8, [v32x8, v32x8]), "llvm.x86.avx2.psign.b"
        )
        fn_madd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16x16, [v32x8, v32x8]), "llvm.x86.avx2.pmadd.ub.sw"
        )
        return (lambda m, s: builder.call(fn_sign, [m, s])), (lambda a, b: builder.call(fn_madd, [a, b]))
    zero = ir.Constant(v32x8, [0] * 32)
    even = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(0, 32, 2)))
    odd = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(1, 32, 2)))

    def sign(m: ir.Value, s: ir.Value) -> ir.Value:
        flipped = builder.select(builder.icmp_signed("<", s, zero), builder.sub(zero, m), m)
        return builder.select(builder.icmp_signed("==", s, zero), zero, flipped)

    def madd_bytes(a: ir.Value, b: ir.Value) -> ir.Value:
        p = builder.mul(builder.zext(a, v32x16), builder.sext(b, v32x16))
        return builder.add(builder.shuffle_vector(p, p, even), builder.shuffle_vector(p, p, odd))

    return sign, madd_bytes


def _sum_each(builder: ir.IRBuilder, vectors: list) -> ir.Value:
    """Eight <8 x i32> -> one <8 x i32> holding each one's total (a tree of pairwise sums, in place of
    eight chains of element extractions)."""
    v8x32 = ir.VectorType(ir.IntType(32), 8)

    def pair_sums(a: ir.Value, b: ir.Value) -> ir.Value:  # (AVX2 vphaddd's layout)
        first = builder.shuffle_vector(a, b, ir.Constant(v8x32, [0, 2, 8, 10, 4, 6, 12, 14]))
        return builder.add(
            first, builder.shuffle_vector(a, b, ir.Constant(v8x32, [1, 3, 9, 11, 5, 7, 13, 15]))
        )

    h = [pair_sums(vectors[i], vectors[i + 1]) for i in range(0, 8, 2)]
    a, b = pair_sums(h[0], h[1]), pair_sums(h[2], h[3])  # [v0..v3 halves | v4..v7 halves] per 128 bits
    low = builder.shuffle_vector(a, b, ir.Constant(v8x32, [0, 1, 2, 3, 8, 9, 10, 11]))
    return builder.add(low, builder.shuffle_vector(a, b, ir.Constant(v8x32, [4, 5, 6, 7, 12, 13, 14, 15])))


def _scores_kernel(keys: int, use_avx2: bool):  # noqa: ANN202 - a numba intrinsic
    """An intrinsic kernel(q_abs, q_sign, ring, r, j0, scores): scores[j0 + t] = q . ring[r, j0 + t] for
    t < keys (1 or 8), d a multiple of 32; q_abs = |q| (uint8), q_sign = q (int8), |q| <= 127 and ring
    values in [-127, 127].

    Per 32 columns and key: the key's bytes take the query's signs (vpsignb), multiply-add with |q| into
    int16 pairs (vpmaddubsw: |pair| <= 2 * 127 * 127 < 2**15, no saturation), then into int32 (vpmaddwd
    with ones): two multiplies per 32 products, no sign extension of the keys (x1.25 over sign-extending
    16 columns at a time). Eight keys' totals come from one tree of pairwise sums."""
    if keys not in (1, 8):
        raise ValueError("the scores kernel takes 1 or 8 keys")

    @intrinsic
    def kernel(typingctx, q_abs, q_sign, ring, r, j0, scores):  # noqa: ANN001, ANN202, ARG001
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
            qa_arr = context.make_array(signature.args[0])(context, builder, args[0])
            qs_arr = context.make_array(signature.args[1])(context, builder, args[1])
            ring_arr = context.make_array(signature.args[2])(context, builder, args[2])
            s_arr = context.make_array(signature.args[5])(context, builder, args[5])
            lane, first = args[3], args[4]
            i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
            v32x8, v16x16, v8x32 = ir.VectorType(i8, 32), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
            _, slots, d = cgutils.unpack_tuple(builder, ring_arr.shape, 3)
            qa_ptr = builder.bitcast(qa_arr.data, i8.as_pointer())
            qs_ptr = builder.bitcast(qs_arr.data, i8.as_pointer())
            ring_ptr = builder.bitcast(ring_arr.data, i8.as_pointer())
            s_ptr = builder.bitcast(s_arr.data, i32.as_pointer())
            sign, madd_bytes = _byte_ops(builder, use_avx2)
            madd_pairs = _madd_pairs(builder, use_avx2)
            ones = ir.Constant(v16x16, [1] * 16)
            acc = [cgutils.alloca_once_value(builder, ir.Constant(v8x32, [0] * 8)) for _ in range(keys)]
            for t in range(keys):  # (key by key: the ring is read in memory order, which the hardware
                # prefetcher follows best when it comes from DRAM)
                row = builder.mul(
                    builder.add(builder.mul(lane, slots), builder.add(first, ir.Constant(i64, t))), d
                )
                with cgutils.for_range(builder, builder.udiv(d, ir.Constant(i64, 32))) as loop:
                    col = builder.mul(loop.index, ir.Constant(i64, 32))
                    qa = builder.load(
                        builder.bitcast(builder.gep(qa_ptr, [col]), v32x8.as_pointer()), align=1
                    )
                    qs = builder.load(
                        builder.bitcast(builder.gep(qs_ptr, [col]), v32x8.as_pointer()), align=1
                    )
                    at = builder.gep(ring_ptr, [builder.add(row, col)])
                    key = builder.load(builder.bitcast(at, v32x8.as_pointer()), align=1)
                    products = madd_pairs(madd_bytes(qa, sign(key, qs)), ones)
                    builder.store(builder.add(builder.load(acc[t]), products), acc[t])
            if keys == 8:
                totals = _sum_each(builder, [builder.load(a) for a in acc])
                builder.store(
                    totals, builder.bitcast(builder.gep(s_ptr, [first]), v8x32.as_pointer()), align=4
                )
            else:
                v = builder.load(acc[0])
                total = builder.extract_element(v, ir.Constant(i32, 0))
                for e in range(1, 8):
                    total = builder.add(total, builder.extract_element(v, ir.Constant(i32, e)))
                builder.store(total, builder.gep(s_ptr, [first]))
            return context.get_dummy_value()

        return types.void(q_abs, q_sign, ring, r, j0, scores), codegen

    return kernel


def _weighted_sum_kernel(groups: int, use_avx2: bool):  # noqa: ANN202 - a numba intrinsic
    """An intrinsic kernel(ring, r, weight_pairs, pairs, c0, out): out[c0 : c0 + 16 * groups] (int32) =
    sum over p < pairs of the weights of positions 2p and 2p + 1 times their memory vectors ring[r, 2p]
    and ring[r, 2p + 1]. weight_pairs[p] (int32) holds position 2p's weight in its low 16 bits and 2p + 1's
    in its high 16 bits (int16 values): one multiply-add-pairs (vpmaddwd) takes both positions, the two
    rows' bytes interleaved (x1.2 over one int32 multiply per position). The 2 * groups int32 sums stay
    in registers across all positions."""
    i32 = ir.IntType(32)
    # the two rows' 16 int16 values interleaved within each 128-bit half (AVX2 vpunpck*wd's layout)
    interleave_low = ir.Constant(
        ir.VectorType(i32, 16), [0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27]
    )
    interleave_high = ir.Constant(
        ir.VectorType(i32, 16), [4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31]
    )

    @intrinsic
    def kernel(typingctx, ring, r, weight_pairs, pairs, c0, out):  # noqa: ANN001, ANN202, ARG001
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
            ring_arr = context.make_array(signature.args[0])(context, builder, args[0])
            w_arr = context.make_array(signature.args[2])(context, builder, args[2])
            o_arr = context.make_array(signature.args[5])(context, builder, args[5])
            lane, count, col = args[1], args[3], args[4]
            i8, i16, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(64)
            v16x8, v16x16, v8x32 = ir.VectorType(i8, 16), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
            _, slots, d = cgutils.unpack_tuple(builder, ring_arr.shape, 3)
            base = builder.add(builder.mul(builder.mul(lane, slots), d), col)
            ring_ptr = builder.bitcast(ring_arr.data, i8.as_pointer())
            w_ptr = builder.bitcast(w_arr.data, i32.as_pointer())
            o_ptr = builder.bitcast(o_arr.data, i32.as_pointer())
            madd_pairs = _madd_pairs(builder, use_avx2)
            acc = [cgutils.alloca_once_value(builder, ir.Constant(v8x32, [0] * 8)) for _ in range(2 * groups)]
            two_rows = builder.mul(d, ir.Constant(i64, 2))
            with cgutils.for_range(builder, count) as loop:
                w = builder.load(builder.gep(w_ptr, [loop.index]))
                splat = builder.insert_element(ir.Constant(v8x32, ir.Undefined), w, ir.Constant(i32, 0))
                splat = builder.bitcast(
                    builder.shuffle_vector(splat, splat, ir.Constant(v8x32, [0] * 8)), v16x16
                )
                row0 = builder.add(base, builder.mul(loop.index, two_rows))
                row1 = builder.add(row0, d)
                for g in range(groups):
                    a, b = (
                        builder.sext(
                            builder.load(
                                builder.bitcast(
                                    builder.gep(ring_ptr, [builder.add(row, ir.Constant(i64, 16 * g))]),
                                    v16x8.as_pointer(),
                                ),
                                align=1,
                            ),
                            v16x16,
                        )
                        for row in (row0, row1)
                    )
                    for h, order in enumerate((interleave_low, interleave_high)):
                        products = madd_pairs(builder.shuffle_vector(a, b, order), splat)
                        builder.store(builder.add(builder.load(acc[2 * g + h]), products), acc[2 * g + h])
            for g in range(groups):  # undo the interleaving: columns 0-3, 8-11 | 4-7, 12-15 -> 0-7 | 8-15
                x, y = builder.load(acc[2 * g]), builder.load(acc[2 * g + 1])
                for h, order in enumerate(([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])):
                    at = builder.gep(o_ptr, [builder.add(col, ir.Constant(i64, 16 * g + 8 * h))])
                    value = builder.shuffle_vector(x, y, ir.Constant(v8x32, order))
                    builder.store(value, builder.bitcast(at, v8x32.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(ring, r, weight_pairs, pairs, c0, out), codegen

    return kernel


@njit(**_opts)
def attend(q8, ring, written, am, ab, ash, exp_lut, aom, aob, aos, attres, narrow_sum, out) -> None:
    """Scores over the valid ring slots, exp-table softmax, weighted sum, value gate, residual.

    Both sums are exact in int32, so the integers are those of the reference. Each score is a dot
    product of int8 values: |score| <= d * 127 * 127 < 2**31. With `narrow_sum` (the engine checks that
    every weight fits int16 and slots * max(exp_lut) * 127 < 2**31) the weighted sum of int8 memory
    vectors is kept in int32, two positions per multiply-add (see _weighted_sum_kernel); without it, in
    int64. What the kernels do not cover (scores for d not a multiple of 32, weighted-sum columns past
    the last multiple of 16, an odd last position) runs in plain loops.
    """
    k, d = q8.shape
    slots = ring.shape[1]
    scores = np.empty(slots, dtype=np.int32)
    weights = np.empty(slots, dtype=np.int32)
    pairs = np.empty(slots // 2, dtype=np.int32)
    q_abs = np.empty(d, dtype=np.uint8)
    q_sign = np.empty(d, dtype=np.int8)
    acc = np.empty(d, dtype=np.int64)
    acc32 = np.empty(d, dtype=np.int32)
    for r in range(k):
        valid = min(written[r], slots)
        for c in range(d):
            q_sign[c] = q8[r, c]
            q_abs[c] = abs(q8[r, c])
        done = 0
        if d % 32 == 0:
            while done + 8 <= valid:
                _scores_8(q_abs, q_sign, ring, r, done, scores)
                done += 8
            while done < valid:
                _scores_1(q_abs, q_sign, ring, r, done, scores)
                done += 1
        for j in range(done, valid):
            key = ring[r, j]
            s = 0
            for c in range(d):
                s += np.int32(q8[r, c]) * key[c]
            scores[j] = s  # (only the low 32 bits are kept, and the sum fits: see the docstring)
        top = np.int64(-(1 << 40))
        for j in range(valid):
            if scores[j] > top:
                top = scores[j]
        total = np.int64(0)
        for j in range(valid):
            w = exp_lut[np.uint64(_clamp(((top - scores[j]) * am + ab) >> ash, 0, ATT_EXP_SIZE - 1))]
            weights[j] = w
            total += w
        if narrow_sum:
            n_pairs = valid // 2
            for p in range(n_pairs):
                pairs[p] = (weights[2 * p] & 0xFFFF) | (weights[2 * p + 1] << 16)
            c0 = 0
            while c0 + 64 <= d:
                _weighted_sum_64(ring, r, pairs, n_pairs, c0, acc32)
                c0 += 64
            while c0 + 16 <= d:
                _weighted_sum_16(ring, r, pairs, n_pairs, c0, acc32)
                c0 += 16
            for c in range(c0, d):
                acc32[c] = 0
            for j in range(2 * n_pairs):
                key = ring[r, j]
                for c in range(c0, d):
                    acc32[c] += weights[j] * key[c]
            if valid % 2:
                key = ring[r, valid - 1]
                for c in range(d):
                    acc32[c] += weights[valid - 1] * key[c]
            for c in range(d):
                acc[c] = acc32[c]
        else:
            acc[:] = 0
            for j in range(valid):
                w = np.int64(weights[j])
                if w == 0:
                    continue
                key = ring[r, j]
                for c in range(d):
                    acc[c] += w * key[c]
        inv_total = 1.0 / np.float64(total)
        for c in range(d):
            avg = _floor_div(acc[c] << ATT_AVG_Q, total, inv_total)  # (|acc| << 8 < 2**50: see engine)
            out[r, c] = _clamp(np.int64(attres[r, c]) + ((avg * aom[c] + aob) >> aos), -RES_MAX, RES_MAX)


@njit(**_opts)
def boom(acc, um, ub, us, gelu, ffres, bm, bb, bs, out) -> None:
    """GELU(up-projection) through the table, chunks summed, added to the residual.

    One loop per kind of work (faster than one loop doing all of it): the requantisation and the
    table indices vectorise, the lookups run alone, the choice between u and its table value vectorises.
    """
    k, d = ffres.shape
    n = acc.shape[1]
    chunks = n // d
    u = np.empty(n, dtype=np.int32)
    ix = np.empty(n, dtype=np.uint32)
    g = np.empty(n, dtype=np.int32)
    total = np.empty(d, dtype=np.int64)
    for r in range(k):
        ar = acc[r]
        for c in range(n):
            u[c] = min(max((np.int64(ar[c]) * um[c] + ub[c]) >> us, -BOOM_CLAMP), BOOM_CLAMP)
        for c in range(n):
            ix[c] = min(max(u[c], -GELU_RANGE), GELU_RANGE) + GELU_RANGE
        for c in range(n):
            g[c] = gelu[ix[c]]
        total[:] = 0
        for j in range(chunks):
            for c in range(d):
                uc = u[j * d + c]
                total[c] += uc if uc > GELU_RANGE else g[j * d + c]
        for c in range(d):
            out[r, c] = _clamp(np.int64(ffres[r, c]) + ((total[c] * bm + bb) >> bs), -RES_MAX, RES_MAX)


@njit(**_opts)
def requant_int8(x, m, b, s, out) -> None:
    k, d = x.shape
    for r in range(k):
        for c in range(d):
            out[r, c] = _clamp((np.int64(x[r, c]) * m + b) >> s, -INT8_MAX, INT8_MAX)


@njit(**_opts)
def frequencies(acc, lm, lb, ls, exp_lut, table_total, freqs) -> None:
    """Logits (Q10 nats) -> frequency table: exp table of (max - logit), scaled, each entry >= 1."""
    k, v = acc.shape
    spread = table_total - v
    logit = np.empty(v, dtype=np.int64)
    e = np.empty(v, dtype=np.int64)
    for r in range(k):
        for c in range(v):  # (the logits, their maximum and its first index in separate loops: the first two
            logit[c] = (np.int64(acc[r, c]) * lm[c] + lb[c]) >> ls  # vectorise)
        top = logit[0]
        for c in range(v):
            top = max(top, logit[c])
        arg = 0
        while logit[arg] != top:
            arg += 1
        total = np.int64(0)
        for c in range(v):
            e[c] = exp_lut[np.uint64(min(top - logit[c], LOGIT_EXP_SIZE - 1))]  # (top - logit >= 0)
            total += e[c]
        used = np.int64(0)
        inv_total = 1.0 / np.float64(total)
        for c in range(v):
            f = 1 + _floor_div(e[c] * spread, total, inv_total)  # (e * spread < 2**20 * 2**24)
            freqs[r, c] = f
            used += f
        freqs[r, arg] += table_total - used


# ---- the int16 GEMM (many lanes) ----
#
# out[r, o] = sum_c a[r, c] * w[o, c] with int8-valued int16 operands and int32 sums: exact whatever the
# order (|sum| <= K * 127 * 127 < 2**31 for any K the engine accepts). Pairs of products are formed by
# multiply-add-pairs (AVX2 `vpmaddwd`: 16 int16 products summed pairwise into 8 int32 per instruction,
# twice the multiply-adds of a float32 FMA), which LLVM does not pick by itself for a GEMM, hence the
# small hand-written LLVM micro-kernel below.
#
# Layout (BLIS-style broadcast, no horizontal sums): the weight is packed as [N/16, K/2, 16, 2] int8: for
# each block of 16 outputs and each pair of inputs (c, c+1), 16 outputs x 2 inputs are 32 contiguous bytes,
# sign-extended to int16 as they are loaded (int8 storage halves the weights' traffic through the caches,
# which matters when both cores stream the weights from L3; the extension per load costs nothing while the
# multiply-adds are the bottleneck). A micro-kernel call
# computes GEMM_ROWS lanes x 16 outputs: per input pair it broadcasts a lane's (a[r, c], a[r, c+1]) to all
# 8 int32 slots and multiply-adds it with the two 16-value weight vectors into 2 * GEMM_ROWS int32
# accumulator vectors (12 + 2 + 1 of the 16 AVX2 registers).
GEMM_COLS = 16
GEMM_ROWS = 6
# The AVX2 instruction only when numba compiles for this very CPU (NUMBA_CPU_NAME unset: no portable cache).
HAVE_AVX2 = numba_config.CPU_NAME is None and "+avx2" in llvm_binding.get_host_cpu_features().flatten()


def pack_weight(w: np.ndarray) -> np.ndarray:
    """[N, K] int8 weight -> [N/16, K/2, 16, 2] int8 (the GEMM's layout); needs gemm_int16_fits."""
    n, depth = w.shape
    pairs = w.astype(np.int8).reshape(n // GEMM_COLS, GEMM_COLS, depth // 2, 2)
    return np.ascontiguousarray(pairs.transpose(0, 2, 1, 3))


def gemm_int16_fits(n: int, depth: int) -> bool:
    return n % GEMM_COLS == 0 and depth % 2 == 0 and depth * INT8_MAX * INT8_MAX < 1 << 31


def _emit_micro_kernel(context, builder, signature, args, rows: int, use_avx2: bool) -> None:  # noqa: ANN001
    """LLVM code for out[r : r + rows, 16 * block : 16 * block + 16] (args: a, wp, out, r, block)."""
    a_arr = context.make_array(signature.args[0])(context, builder, args[0])
    w_arr = context.make_array(signature.args[1])(context, builder, args[1])
    o_arr = context.make_array(signature.args[2])(context, builder, args[2])
    row, blk = args[3], args[4]
    i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    v16x8, v16x16, v8x32 = ir.VectorType(i8, 16), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
    depth = cgutils.unpack_tuple(builder, a_arr.shape, 2)[1]
    n_out = cgutils.unpack_tuple(builder, o_arr.shape, 2)[1]
    a_ptr = builder.bitcast(a_arr.data, i16.as_pointer())
    w_ptr = builder.bitcast(w_arr.data, i8.as_pointer())
    o_ptr = builder.bitcast(o_arr.data, i32.as_pointer())

    def const(v: int) -> ir.Constant:
        return ir.Constant(i64, v)

    madd_pairs = _madd_pairs(builder, use_avx2)
    acc = [
        [cgutils.alloca_once_value(builder, ir.Constant(v8x32, [0] * 8)) for _ in range(2)]
        for _ in range(rows)
    ]
    a_rows = [builder.mul(builder.add(row, const(i)), depth) for i in range(rows)]
    w_block = builder.mul(blk, builder.mul(depth, const(GEMM_COLS)))
    with cgutils.for_range(builder, builder.udiv(depth, const(2))) as loop:
        pair = loop.index
        w_at = builder.add(w_block, builder.mul(pair, const(2 * GEMM_COLS)))
        w_vectors = [
            builder.bitcast(builder.gep(w_ptr, [builder.add(w_at, const(16 * j))]), v16x8.as_pointer())
            for j in range(2)
        ]
        ws = [builder.sext(builder.load(v, align=1), v16x16) for v in w_vectors]  # (16 int8 -> int16)
        for i in range(rows):
            a_at = builder.gep(a_ptr, [builder.add(a_rows[i], builder.mul(pair, const(2)))])
            both = builder.load(builder.bitcast(a_at, i32.as_pointer()), align=2)
            splat = builder.insert_element(ir.Constant(v8x32, ir.Undefined), both, ir.Constant(i32, 0))
            x = builder.bitcast(builder.shuffle_vector(splat, splat, ir.Constant(v8x32, [0] * 8)), v16x16)
            for j in range(2):
                builder.store(builder.add(builder.load(acc[i][j]), madd_pairs(x, ws[j])), acc[i][j])
    for i in range(rows):
        for j in range(2):
            col = builder.add(builder.mul(blk, const(GEMM_COLS)), const(8 * j))
            at = builder.add(builder.mul(builder.add(row, const(i)), n_out), col)
            dest = builder.bitcast(builder.gep(o_ptr, [at]), v8x32.as_pointer())
            builder.store(builder.load(acc[i][j]), dest, align=4)


def _micro_kernel(rows: int, use_avx2: bool):  # noqa: ANN202 - a numba intrinsic
    """An intrinsic kernel(a, wp, out, r, block): out[r : r + rows, 16 * block : 16 * block + 16]."""

    @intrinsic
    def kernel(typingctx, a, wp, out, r, block):  # noqa: ANN001, ANN202, ARG001
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            _emit_micro_kernel(context, builder, signature, args, rows, use_avx2)
            return context.get_dummy_value()

        return types.void(a, wp, out, r, block), codegen

    return kernel


def _tile_kernel(use_avx2: bool):  # noqa: ANN202 - a numba intrinsic
    """An intrinsic kernel(a, wp, out, r, rows, block) for any 1 <= rows <= GEMM_ROWS: the micro-kernel
    for that many rows (one compiled copy per row count, chosen by a switch)."""

    @intrinsic
    def kernel(typingctx, a, wp, out, r, rows, block):  # noqa: ANN001, ANN202, ARG001
        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            a_, wp_, out_, r_, rows_, block_ = args
            tile_sig = types.void(*signature.args[:4], signature.args[5])
            done = builder.append_basic_block("tile.done")
            switch = builder.switch(rows_, done)  # (rows_ is int64: see the signature below)
            for n in range(1, GEMM_ROWS + 1):
                case = builder.append_basic_block(f"tile.rows{n}")
                switch.add_case(ir.Constant(ir.IntType(64), n), case)
                builder.position_at_end(case)
                _emit_micro_kernel(context, builder, tile_sig, (a_, wp_, out_, r_, block_), n, use_avx2)
                builder.branch(done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return types.void(a, wp, out, r, types.int64, block), codegen

    return kernel


_scores_8 = _scores_kernel(8, HAVE_AVX2)  # attend's scores: 8 keys per call, their totals in one tree
_scores_1 = _scores_kernel(1, HAVE_AVX2)
_weighted_sum_64 = _weighted_sum_kernel(4, HAVE_AVX2)  # 64 columns: 8 of the 16 AVX2 registers
_weighted_sum_16 = _weighted_sum_kernel(1, HAVE_AVX2)
_gemm_tile = _tile_kernel(HAVE_AVX2)


@njit(**_opts)
def gemm_int16(a, wp, out) -> None:
    """out [k, N] int32 = a [k, K] int16 (int8 values, C order) times the packed weight wp (pack_weight).

    Block by block of 16 outputs; each output is summed by one micro-kernel call. The lanes are cut
    into ceil(k / GEMM_ROWS) tiles of nearly equal size (32 lanes: 5 or 6 rows each, not 5 x 6 + 2): a
    tile of few rows has too few independent sums to keep the multiply-add units busy, so it costs about
    as much as a full one.
    """
    k = a.shape[0]
    tiles = (k + GEMM_ROWS - 1) // GEMM_ROWS
    for block in range(wp.shape[0]):
        for t in range(tiles):
            r = k * t // tiles
            _gemm_tile(a, wp, out, r, k * (t + 1) // tiles - r, block)


# ---- one whole step of a lane group in one call ----
#
# step_group runs every kernel of a step for a group of lanes in compiled code without the GIL: numba
# dispatches it once per step (calling the kernels one by one from Python cost ~0.35 ms of Python per step,
# all of it under the GIL, so threads stepping separate lane groups queued for it).


class BlockParams(NamedTuple):
    """One block's parameters for step_group. Every block's tuple has the same types (numba then indexes
    the tuple of blocks at run time): parts a block does not have are empty arrays of the same dtype."""

    attention: bool  # the attention block
    narrow_sum: bool  # attention's weighted sum fits int32 (see attend)
    # LayerNorm at the block start (blocks after the first: the first reads its byte tables instead)
    ln_start_eps: int
    start8_g: np.ndarray
    start8_b: np.ndarray
    startres_g: np.ndarray
    startres_b: np.ndarray
    wih: np.ndarray  # packed (pack_weight)
    # LSTM
    whh: np.ndarray  # packed
    z_mx: np.ndarray
    z_mh: np.ndarray
    z_b: np.ndarray
    z_shift: int
    h_m: int
    h_b: int
    h_shift: int
    # attention
    ln_a_eps: int
    mem8_g: np.ndarray
    mem8_b: np.ndarray
    mid8_g: np.ndarray
    mid8_b: np.ndarray
    attres_g: np.ndarray
    attres_b: np.ndarray
    wq: np.ndarray  # packed
    qp_m: np.ndarray
    qp_b: np.ndarray
    qp_shift: int
    ln_q_eps: int
    q8_g: np.ndarray
    q8_b: np.ndarray
    att_m: int
    att_b: int
    att_shift: int
    att_exp_lut: np.ndarray
    ao_m: np.ndarray
    ao_b: int
    ao_shift: int
    # Boom
    ln_ff_eps: int
    xff8_g: np.ndarray
    xff8_b: np.ndarray
    ffres_g: np.ndarray
    ffres_b: np.ndarray
    wup: np.ndarray  # packed
    u_m: np.ndarray
    u_b: np.ndarray
    u_shift: int
    gelu_lut: np.ndarray
    boom_m: int
    boom_b: int
    boom_shift: int


class HeadParams(NamedTuple):
    """What step_group needs besides the blocks: block 0's byte tables, the LSTM tables, the output."""

    byte_acc: np.ndarray  # [256, 4d] int32: block 0's input GEMM for every byte
    byte_res: np.ndarray  # [256, d] int32: block 0's residual for every byte
    sigmoid_lut: np.ndarray
    tanh_lut: np.ndarray
    fin_m: int
    fin_b: int
    fin_shift: int
    wout: np.ndarray  # packed
    logit_m: np.ndarray
    logit_b: np.ndarray
    logit_shift: int
    logit_exp_lut: np.ndarray
    table_total: int


def plain_params(blocks: tuple[BlockParams, ...], head: HeadParams) -> tuple[tuple, tuple]:
    """step_group's and step_groups' blocks and head arguments (see step_group)."""
    return tuple(tuple(b) for b in blocks), tuple(head)


@njit(**_opts)
def _packed_outputs(wp) -> int:  # noqa: ANN001
    return wp.shape[0] * wp.shape[2]


@njit(**_opts)
def step_group(x, lo, hi, blocks, head, h8, cell, ring, written, freqs) -> None:  # noqa: ANN001
    """Lanes lo..hi-1 consume the bytes x[lo:hi] (int64): the engine's step, the reference's formulas in
    the same order, in one call. h8, cell: tuples of the per-block state arrays;
    ring, written, freqs: the state's arrays of all lanes; blocks: a tuple of BlockParams, head: HeadParams,
    each given as a plain tuple (`plain_params`): numba checks a plain tuple's types at the call several
    times faster than a NamedTuple's, and the fields are
    named again here.
    """
    head = HeadParams(*head)
    k = hi - lo
    d = h8[0].shape[1]
    gates = np.empty((k, 4 * d), dtype=np.int32)  # the input GEMM's results (block 0: its byte table's)
    gates_h = np.empty((k, 4 * d), dtype=np.int32)
    gemm_in = np.empty((k, d), dtype=np.int16)  # every GEMM input in turn (int8 values)
    res = np.empty((k, d), dtype=np.int32)
    mid = np.empty((k, d), dtype=np.int32)
    out = np.empty((k, d), dtype=np.int32)
    boom_acc = np.empty((k, _packed_outputs(BlockParams(*blocks[0]).wup)), dtype=np.int32)
    ring_g = ring[lo:hi]
    written_g = written[lo:hi]
    for i in range(len(blocks)):
        b = BlockParams(*blocks[i])
        if i == 0:
            for r in range(k):
                byte = x[lo + r]
                gates[r] = head.byte_acc[byte]
                res[r] = head.byte_res[byte]
        else:
            ln_two(
                out, b.ln_start_eps, b.start8_g, b.start8_b, INT8_MAX, gemm_in,
                b.startres_g, b.startres_b, RES_MAX, res,
            )  # fmt: skip
            gemm_int16(gemm_in, b.wih, gates)
        h8_g = h8[i][lo:hi]
        for r in range(k):
            for c in range(d):
                gemm_in[r, c] = h8_g[r, c]
        gemm_int16(gemm_in, b.whh, gates_h)
        lstm_cell(
            gates, gates_h, b.z_mx, b.z_mh, b.z_b, b.z_shift, head.sigmoid_lut, head.tanh_lut,
            cell[i][lo:hi], h8_g, res, b.h_m, b.h_b, b.h_shift, mid,
        )  # fmt: skip
        if b.attention:
            attres = np.empty((k, d), dtype=np.int32)
            attention_inputs(
                mid, b.ln_a_eps, b.mem8_g, b.mem8_b, b.mid8_g, b.mid8_b, b.attres_g, b.attres_b,
                ring_g, written_g, gemm_in, attres,
            )  # fmt: skip
            query_acc = np.empty((k, _packed_outputs(b.wq)), dtype=np.int32)
            gemm_int16(gemm_in, b.wq, query_acc)
            q8 = np.empty((k, d), dtype=np.int32)
            query(query_acc, b.qp_m, b.qp_b, b.qp_shift, b.ln_q_eps, b.q8_g, b.q8_b, q8)
            attend(
                q8, ring_g, written_g, b.att_m, b.att_b, b.att_shift, b.att_exp_lut, b.ao_m, b.ao_b,
                b.ao_shift, attres, b.narrow_sum, mid,
            )  # fmt: skip
        ln_two(mid, b.ln_ff_eps, b.xff8_g, b.xff8_b, INT8_MAX, gemm_in, b.ffres_g, b.ffres_b, RES_MAX, res)
        gemm_int16(gemm_in, b.wup, boom_acc)
        boom(boom_acc, b.u_m, b.u_b, b.u_shift, b.gelu_lut, res, b.boom_m, b.boom_b, b.boom_shift, out)
    requant_int8(out, head.fin_m, head.fin_b, head.fin_shift, gemm_in)
    logits = np.empty((k, _packed_outputs(head.wout)), dtype=np.int32)
    gemm_int16(gemm_in, head.wout, logits)
    frequencies(
        logits, head.logit_m, head.logit_b, head.logit_shift, head.logit_exp_lut, head.table_total,
        freqs[lo:hi],
    )  # fmt: skip


@intrinsic
def _claim(typingctx, counter):  # noqa: ANN001, ANN202, ARG001 - a numba intrinsic
    """counter[0] += 1 atomically (int64 array); returns the value before: several threads calling it
    on one counter each get a different number."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        at = builder.bitcast(arr.data, ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", at, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return types.int64(counter), codegen


@njit(**_opts)
def claim(counter) -> int:  # noqa: ANN001
    return _claim(counter)


def group_bounds(k: int, groups: int) -> np.ndarray:
    """step_groups' cuts: lanes 0..k-1 in `groups` groups of nearly equal size (int64, groups + 1 bounds)."""
    return np.array([k * g // groups for g in range(groups + 1)], dtype=np.int64)


@njit(**_opts)
def step_groups(x, cuts, claimed, blocks, head, h8, cell, ring, written, freqs) -> None:  # noqa: ANN001
    """step_group for the lane groups cuts[g]..cuts[g + 1] - 1, each taken by an atomic claim on
    claimed[0] (which starts at 0): every thread of a step makes one such call and takes groups until none
    is left, so a thread whose core is busy takes fewer. One call (one argument check, under the GIL) per
    thread and step instead of one per group."""
    groups = cuts.shape[0] - 1
    g = _claim(claimed)
    while g < groups:
        step_group(x, cuts[g], cuts[g + 1], blocks, head, h8, cell, ring, written, freqs)
        g = _claim(claimed)


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(step_groups)
