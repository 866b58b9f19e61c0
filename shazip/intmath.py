"""Integer helpers shared by the in-file models (and anything else that must compute the same integers
on every machine): bit lengths and base-2 logarithms in fixed point, from a table built with integer
arithmetic only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shazip import _numba_cache

LOG_Q = 12  # code lengths in 1/4096 bits
_LOG_MANTISSA_BITS = 12

_opts = {"cache": True, "nogil": True, "boundscheck": False}


def _log2_mantissa_table() -> np.ndarray:
    """log2(1 + m / 4096) for m < 4096 in Q12, by integer arithmetic only (repeated squaring), so the
    table is the same on every machine whatever its libm."""
    one = 1 << 40
    table = np.empty(1 << _LOG_MANTISSA_BITS, dtype=np.int64)
    for m in range(1 << _LOG_MANTISSA_BITS):
        y = one + (m << (40 - _LOG_MANTISSA_BITS))  # 1 <= y < 2 in Q40
        bits = 0
        for _ in range(LOG_Q + 4):
            y = (y * y) >> 40
            bits <<= 1
            if y >= 2 * one:
                y >>= 1
                bits |= 1
        table[m] = bits >> 4  # 16 fractional bits computed, 12 kept (floor)
    return table


LOG2_TABLE = _log2_mantissa_table()


@njit(**_opts)
def bit_length(v) -> int:
    """Number of bits of 0 <= v < 2**63 (a binary search: this runs ~40 times per lane and step)."""
    n = 0
    if v >= 1 << 32:
        v >>= 32
        n += 32
    if v >= 1 << 16:
        v >>= 16
        n += 16
    if v >= 1 << 8:
        v >>= 8
        n += 8
    if v >= 1 << 4:
        v >>= 4
        n += 4
    if v >= 1 << 2:
        v >>= 2
        n += 2
    if v >= 1 << 1:
        v >>= 1
        n += 1
    return n + v


@njit(**_opts)
def log2_q(v, table) -> int:
    """log2(v) in Q12 for v >= 1 (integer part exact, fraction from the 12 bits below the leading 1)."""
    v = np.int64(v)
    top = bit_length(v) - 1
    if top >= _LOG_MANTISSA_BITS:
        mantissa = (v >> (top - _LOG_MANTISSA_BITS)) & ((1 << _LOG_MANTISSA_BITS) - 1)
    else:
        mantissa = (v << (_LOG_MANTISSA_BITS - top)) & ((1 << _LOG_MANTISSA_BITS) - 1)
    return (top << LOG_Q) + table[mantissa]


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(bit_length)
