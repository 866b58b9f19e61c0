"""The int16 multiply-add-pairs GEMM of the numba backend is exact: equal to an int64 reference."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit  # noqa: E402

from shazip.engine import kernels as K  # noqa: E402

SHAPES = [
    (64, 256, 1024),
    (7, 32, 128),
    (13, 256, 256),
    (1, 64, 16),
    (6, 1024, 32),
    (32, 256, 64),
    (5, 64, 48),
]

# The same loop as K.gemm_int16 on micro-kernels in plain LLVM vector code (what a CPU without
# AVX2 runs), so that path is checked on this machine too.
_portable_tile = K._tile_kernel(use_avx2=False)


@njit
def gemm_int16_portable(a, wp, out) -> None:  # noqa: ANN001
    k = a.shape[0]
    tiles = (k + K.GEMM_ROWS - 1) // K.GEMM_ROWS
    for block in range(wp.shape[0]):
        for t in range(tiles):
            r = k * t // tiles
            _portable_tile(a, wp, out, r, k * (t + 1) // tiles - r, block)


def operands(kind: str, k: int, depth: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(-127, 128, (k, depth)), rng.integers(-127, 128, (n, depth))
    if kind == "extreme_same_sign":  # the largest sums: every product +127 * 127 (or all -127 * 127)
        return np.full((k, depth), 127), np.full((n, depth), 127)
    # extreme mixed: +-127 everywhere, random signs, rows of all -127
    a = np.where(rng.random((k, depth)) < 0.5, 127, -127)
    a[0] = -127
    w = np.where(rng.random((n, depth)) < 0.5, 127, -127)
    w[-1] = -127
    return a, w


@pytest.mark.parametrize("kind", ["random", "extreme_same_sign", "extreme_mixed"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gemm_int16_equals_int64_reference(kind: str, shape: tuple[int, int, int]) -> None:
    k, depth, n = shape
    assert K.gemm_int16_fits(n, depth)
    a, w = operands(kind, k, depth, n, seed=k + depth + n)
    expected = a.astype(np.int64) @ w.astype(np.int64).T
    a16 = np.ascontiguousarray(a.astype(np.int16))
    packed = K.pack_weight(w.astype(np.int8))
    for gemm in (K.gemm_int16, gemm_int16_portable):
        out = np.full((k, n), 12345, dtype=np.int32)
        gemm(a16, packed, out)
        np.testing.assert_array_equal(out.astype(np.int64), expected)


def test_gemm_tiles_of_every_row_count() -> None:
    # every lane count from 1 to 3 * GEMM_ROWS: tiles of each size 1..GEMM_ROWS, rows written exactly once
    rng = np.random.default_rng(11)
    w = rng.integers(-127, 128, (32, 24)).astype(np.int8)
    for k in range(1, 3 * K.GEMM_ROWS + 1):
        a = rng.integers(-127, 128, (k, 24))
        expected = a @ w.astype(np.int64).T
        out = np.full((k, 32), 12345, dtype=np.int32)
        K.gemm_int16(np.ascontiguousarray(a.astype(np.int16)), K.pack_weight(w), out)
        np.testing.assert_array_equal(out.astype(np.int64), expected)


def test_gemm_int16_extreme_sum_reaches_the_int32_range() -> None:
    # K = 1024 same-sign +-127: |sum| = 1024 * 127**2 = 16,516,096 in both signs
    a = np.full((6, 1024), 127, dtype=np.int16)
    w = np.stack([np.full(1024, 127), np.full(1024, -127)] * 8).astype(np.int8)
    out = np.zeros((6, 16), dtype=np.int32)
    K.gemm_int16(a, K.pack_weight(w), out)
    assert (out[:, 0::2] == 1024 * 127 * 127).all() and (out[:, 1::2] == -1024 * 127 * 127).all()


def test_gemm_int16_fits() -> None:
    assert K.gemm_int16_fits(1024, 256)
    assert not K.gemm_int16_fits(1000, 256)  # outputs not a multiple of 16
    assert not K.gemm_int16_fits(1024, 255)  # odd depth


@pytest.mark.parametrize("d", [75, 40, 256])
def test_attend_int32_weighted_sum_equals_int64(d: int) -> None:
    # d = 75: one 64-column weighted-sum block and 11 leftover columns, plain scores; d = 40: two 16-column
    # blocks and 8 leftover; d = 256: every kernel. Lane 1's ring is not full (7 positions: an odd count).
    rng = np.random.default_rng(d)
    k, slots = 3, 33
    q8 = rng.integers(-127, 128, (k, d)).astype(np.int16)
    ring = rng.choice(np.array([-127, 127, 0, 5], dtype=np.int8), size=(k, slots, d))
    written = np.array([100, 7, 33])
    lut = (32767 * np.exp(-np.arange(16 << 8) / 256)).astype(np.int32)  # (int16 weights: narrow_sum's terms)
    aom = rng.integers(1, 1 << 16, d).astype(np.int64)
    attres = rng.integers(-1000, 1000, (k, d)).astype(np.int32)
    args = (q8, ring, written, 1 << 20, 0, 28, lut, aom, 1 << 19, 20, attres)
    narrow, wide = np.empty((k, d), np.int32), np.empty((k, d), np.int32)
    K.attend(*args, True, narrow)
    K.attend(*args, False, wide)
    np.testing.assert_array_equal(narrow, wide)


_scores_8_avx2, _scores_1_avx2 = K._scores_kernel(8, True), K._scores_kernel(1, True)
_scores_8_portable, _scores_1_portable = K._scores_kernel(8, False), K._scores_kernel(1, False)
_sum_64_avx2, _sum_16_avx2 = K._weighted_sum_kernel(4, True), K._weighted_sum_kernel(1, True)
_sum_64_portable, _sum_16_portable = (
    K._weighted_sum_kernel(4, False),
    K._weighted_sum_kernel(1, False),
)


def _all_scores(scores_8, scores_1):  # noqa: ANN202
    @njit
    def all_scores(q, ring, r, valid, out) -> None:  # noqa: ANN001
        q_abs, q_sign = np.abs(q).astype(np.uint8), q.astype(np.int8)
        j = 0
        while j + 8 <= valid:
            scores_8(q_abs, q_sign, ring, r, j, out)
            j += 8
        while j < valid:
            scores_1(q_abs, q_sign, ring, r, j, out)
            j += 1

    return all_scores


def _weighted_sums(sum_64, sum_16):  # noqa: ANN202
    @njit
    def weighted_sums(ring, r, pairs, count, out) -> None:  # noqa: ANN001
        c0 = 0
        while c0 + 64 <= out.shape[0]:
            sum_64(ring, r, pairs, count, c0, out)
            c0 += 64
        while c0 + 16 <= out.shape[0]:
            sum_16(ring, r, pairs, count, c0, out)
            c0 += 16

    return weighted_sums


def test_attention_scores_kernel_equals_int64() -> None:
    rng = np.random.default_rng(3)
    ring = rng.choice(np.array([-127, 127, 3, 0], dtype=np.int8), size=(2, 21, 1024))
    q = rng.choice(np.array([-127, 127, 0, -1], dtype=np.int16), size=1024)
    q[:512] = 127
    ring[1, :, :512] = 127  # near the largest sums
    expected = np.einsum("d,ksd->ks", q.astype(np.int64), ring.astype(np.int64))
    kernels = [_all_scores(_scores_8_portable, _scores_1_portable)]
    kernels += [_all_scores(_scores_8_avx2, _scores_1_avx2)] if K.HAVE_AVX2 else []
    for all_scores in kernels:
        for r in range(2):
            out = np.zeros(21, dtype=np.int32)
            all_scores(q, ring, r, 21, out)
            np.testing.assert_array_equal(out, expected[r])


def test_attention_weighted_sum_kernel_equals_int64() -> None:
    # Two positions per multiply-add: weights 0..32767 (int16) in the low and high halves of each pair,
    # memory values +-127; the largest sums (257 * 32767 * 127) stay below 2**31.
    rng = np.random.default_rng(4)
    slots, d = 257, 80  # one 64-column block and one 16-column block
    ring = rng.choice(np.array([-127, 127, 5, 0], dtype=np.int8), size=(2, slots, d))
    ring[1] = 127
    weights = rng.integers(0, 1 << 15, slots).astype(np.int64)
    weights[:40] = 32767
    count = slots // 2
    pairs = (weights[0 : 2 * count : 2] | (weights[1 : 2 * count : 2] << 16)).astype(np.uint32).view(np.int32)
    expected = np.einsum("s,ksd->kd", weights[: 2 * count], ring[:, : 2 * count].astype(np.int64))
    kernels = [_weighted_sums(_sum_64_portable, _sum_16_portable)]
    kernels += [_weighted_sums(_sum_64_avx2, _sum_16_avx2)] if K.HAVE_AVX2 else []
    for weighted_sums in kernels:
        for r in range(2):
            out = np.zeros(d, dtype=np.int32)
            weighted_sums(ring, r, pairs, count, out)
            np.testing.assert_array_equal(out, expected[r])


def test_floor_div_equals_integer_division() -> None:
    # random numerators and divisors up to the stated range, both signs, exact multiples and the values
    # next to them (where the float estimate is most likely to round across an integer)
    rng = np.random.default_rng(5)
    b = rng.integers(1, 1 << 50, 2000, dtype=np.int64)
    b[:500] = rng.integers(1, 1 << 24, 500)
    q = rng.integers(-(1 << 26), 1 << 26, 2000, dtype=np.int64)
    a = np.clip(q * b, -(1 << 50) + 1, (1 << 50) - 1)
    cases = [(int(x + t), int(y)) for x, y in zip(a, b, strict=True) for t in (-1, 0, 1)]
    cases += [(int(x), int(y)) for x, y in zip(rng.integers(-(1 << 50) + 1, 1 << 50, 2000), b, strict=True)]
    cases += [((1 << 50) - 1, 1), (-(1 << 50) + 1, 1), ((1 << 50) - 1, (1 << 50) - 1), (0, 7), (-1, 3)]
    for x, y in cases:
        assert K._floor_div(x, y, 1.0 / y) == x // y, (x, y)


@njit(nogil=True)
def _claim_many(counter, out) -> None:  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = K.claim(counter)


def test_claim_is_atomic_across_threads() -> None:
    # Two threads claim from one counter at once (nogil): every number is handed out exactly once. A
    # plain load-add-store would hand some out twice (and this test would fail).
    import threading

    counter = np.zeros(1, dtype=np.int64)
    outs = [np.empty(200_000, dtype=np.int64) for _ in range(2)]
    _claim_many(np.zeros(1, dtype=np.int64), np.empty(1, dtype=np.int64))  # (compile first)
    threads = [threading.Thread(target=_claim_many, args=(counter, out)) for out in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(np.sort(np.concatenate(outs)), np.arange(400_000))
    assert counter[0] == 400_000


@pytest.mark.parametrize("d", [2, 256, 1040])
def test_layernorm_values_fit_int32(d: int) -> None:
    # _ln_row stores the normalised values as int32: the largest |value| (one row entry far from all
    # others, no eps) stays below the stated 2**19 and equals the int64 formula.
    x = np.zeros(d, dtype=np.int64)
    x[0] = 32767
    for eps in (0, 1):
        n = np.empty(d, dtype=np.int32)
        K._ln_row(x, eps, n)
        s1, s2 = int(x.sum()), int((x * x).sum())
        root = max(1, int(np.floor(np.sqrt(np.float64(d * s2 - s1 * s1 + eps)))))
        inv = (1 << 40) // root
        expected = [((d * int(v) - s1) * inv + (1 << 27)) >> 28 for v in x]
        np.testing.assert_array_equal(n, expected)
        assert np.abs(n).max() < 1 << 19
