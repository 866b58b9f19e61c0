"""Constant tables of the mixing stage, built at import with integer arithmetic only (the same on every
machine: docs/design.md), and their exact definitions (docs/format.md, "Mixing frames").

- STRETCH[p], p = 0..65535: the log-odds of a probability p / 65536 in 1/128 bits, from the integer log2
  of `shazip.intmath`: (log2_q(p) - log2_q(65536 - p)) >> 5, clamped to [-2047, 2047] (p = 0 counts as 1).
- SQUASH[x + 2047], x = -2047..2047: its inverse, the smallest p in 1..65535 with STRETCH[p] >= x.
- NEXT_STATE[s, bit] and STATE_COUNTS[s] = (n0, n1): a bit-history state machine. A state stands for a
  pair of counts of 0s and 1s seen in a context; a new bit adds to its count and, when the other count
  is above 2, halves that one (plus one), so that old history fades; pairs the machine cannot hold are
  brought back by lowering the larger count.
- RECIPROCAL[n] = 131072 // (2n + 3): 65536 / (n + 1.5), the adaptation rate of a counter that has seen
  n updates.
"""

from __future__ import annotations

import numpy as np

from shazip.intmath import LOG2_TABLE, LOG_Q

ST_MAX = 2047  # log-odds are clamped to +-ST_MAX (1/128 bits: +-16 bits of odds)
PROB_BITS = 16  # probabilities are integers p / 2**16, 1 <= p <= 65535


def _log2_q(v: np.ndarray) -> np.ndarray:
    """`shazip.intmath.log2_q` for an array of v >= 1 (the same integers)."""
    v = np.asarray(v, dtype=np.int64)
    top = np.zeros_like(v)
    rest = v.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = rest >= (1 << shift)
        rest[big] >>= shift
        top[big] += shift
    mantissa = np.where(
        top >= LOG_Q, (v >> np.maximum(top - LOG_Q, 0)) & 4095, (v << np.maximum(LOG_Q - top, 0)) & 4095
    )
    return (top << LOG_Q) + LOG2_TABLE[mantissa]


def _stretch_table() -> np.ndarray:
    p = np.arange(1, 1 << PROB_BITS, dtype=np.int64)
    table = np.empty(1 << PROB_BITS, dtype=np.int32)
    table[1:] = np.clip((_log2_q(p) - _log2_q((1 << PROB_BITS) - p)) >> 5, -ST_MAX, ST_MAX)
    table[0] = table[1]
    return table


def _squash_table(stretch: np.ndarray) -> np.ndarray:
    x = np.arange(-ST_MAX, ST_MAX + 1)
    p = np.searchsorted(stretch[1:], x, side="left") + 1  # (stretch is non-decreasing)
    return np.clip(p, 1, (1 << PROB_BITS) - 1).astype(np.int32)


# The largest count the bit-history states keep, given the smaller count of the pair (which may be 0..5).
_STATE_LIMITS = {0: 40, 1: 30, 2: 12, 3: 8, 4: 6, 5: 5}


def _bit_history_states() -> tuple[np.ndarray, np.ndarray]:
    """(NEXT_STATE [256, 2] uint8, STATE_COUNTS [256, 2] int64). State 0 is (0, 0); then, for each
    smaller count m = 0..5 and each larger count M = max(m, 1)..limit(m), the pair (m, M) and then
    (M, m) unless it is the same pair. Unused states (178..255) lead to themselves."""
    states = [(0, 0)]
    for minor in range(len(_STATE_LIMITS)):
        for major in range(max(minor, 1), _STATE_LIMITS[minor] + 1):
            for pair in ((minor, major), (major, minor)):
                if pair not in states:
                    states.append(pair)
    index = {pair: i for i, pair in enumerate(states)}

    def allowed(n0: int, n1: int) -> bool:
        low, high = min(n0, n1), max(n0, n1)
        return low in _STATE_LIMITS and high <= _STATE_LIMITS[low]

    nxt = np.zeros((256, 2), dtype=np.uint8)
    counts = np.zeros((256, 2), dtype=np.int64)
    for s in range(256):
        nxt[s] = s
    for s, (n0, n1) in enumerate(states):
        counts[s] = (n0, n1)
        for bit in (0, 1):
            a, b = (n0, n1 + 1) if bit else (n0 + 1, n1)
            if bit and a > 2:
                a = a // 2 + 1
            if not bit and b > 2:
                b = b // 2 + 1
            while not allowed(a, b):
                if a > b or (a == b and not bit):
                    a -= 1
                else:
                    b -= 1
            nxt[s, bit] = index[(a, b)]
    return nxt, counts


STRETCH = _stretch_table()
SQUASH = _squash_table(STRETCH)
NEXT_STATE, STATE_COUNTS = _bit_history_states()
RECIPROCAL = np.array([131072 // (2 * n + 3) for n in range(1024)], dtype=np.int64)
