"""The binary arithmetic coder of mixing frames (docs/format.md, "Mixing frames"): one bit at a time with
a 16-bit probability, 32-bit integer state, carry-less.

Why not constriction (which codes the model frames): a mixing frame codes eight binary decisions per byte,
each depending on the one before, so the decoder would call the coder from Python once per bit (or once
per bit position of a step, for all lanes together). Measured here: constriction's Bernoulli decode takes
about 3 us per call of one bit and 13 us for a batch of 64, while the mixing model spends about half a
microsecond on a bit; a frame without the network is coded in one compiled loop, which no Python call per
bit can approach.

The state is [low, high, position] (encoder) or [low, high, x, position] (decoder) in an int64 array, the
bytes in a uint8 buffer, so both live inside compiled loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shazip import _numba_cache

_opts = {"cache": True, "nogil": True, "boundscheck": False}
_TOP = 0xFF000000
_ALL = 0xFFFFFFFF


@njit(**_opts)
def _split(low: int, high: int, p: int) -> int:
    """The last value of the 1-bit's part of [low, high] for P(1) = p / 65536 (1 <= p <= 65535)."""
    r = high - low
    return low + (r >> 16) * p + (((r & 0xFFFF) * p) >> 16)


def new_encoder(capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(state, buffer) of an encoder that may write up to `capacity` bytes."""
    return np.array([0, _ALL, 0], dtype=np.int64), np.zeros(capacity, dtype=np.uint8)


@njit(**_opts)
def encode_bit(state, out, bit: int, p: int) -> bool:  # noqa: ANN001
    """Code `bit` with P(1) = p / 65536. False once the buffer is full (the frame is abandoned)."""
    low, high = state[0], state[1]
    mid = _split(low, high, p)
    if bit:
        high = mid
    else:
        low = mid + 1
    pos = state[2]
    while ((low ^ high) & _TOP) == 0:
        if pos >= out.shape[0]:
            return False
        out[pos] = high >> 24
        pos += 1
        low = (low << 8) & _ALL
        high = ((high << 8) & _ALL) | 0xFF
    state[0], state[1], state[2] = low, high, pos
    return True


@njit(**_opts)
def finish_encoder(state, out) -> int:  # noqa: ANN001
    """Write the last byte (a value in [low, high] followed by zeros) and return the payload's size, or -1
    when the buffer is full."""
    low, pos = state[0], state[2]
    last = low >> 24
    if low & 0xFFFFFF:
        last += 1  # (the top bytes of low and high differ, so (last << 24) <= high)
    if pos >= out.shape[0]:
        return -1
    out[pos] = last
    state[2] = pos + 1
    return pos + 1


def new_decoder(payload: np.ndarray) -> np.ndarray:
    """The state of a decoder reading `payload` (uint8): the first 4 bytes (zeros past its end)."""
    state = np.array([0, _ALL, 0, 0], dtype=np.int64)
    x = 0
    for i in range(4):
        x = (x << 8) | (int(payload[i]) if i < len(payload) else 0)
    state[2], state[3] = x, 4
    return state


@njit(**_opts)
def decode_bit(state, data, p: int) -> int:  # noqa: ANN001
    """The next bit, coded with P(1) = p / 65536; -1 when the decoder has read more than 4 bytes past
    the payload's end (a damaged or crafted frame: the caller stops at once)."""
    low, high, x = state[0], state[1], state[2]
    mid = _split(low, high, p)
    if x <= mid:
        bit = 1
        high = mid
    else:
        bit = 0
        low = mid + 1
    pos = state[3]
    n = data.shape[0]
    while ((low ^ high) & _TOP) == 0:
        low = (low << 8) & _ALL
        high = ((high << 8) & _ALL) | 0xFF
        x = ((x << 8) & _ALL) | (np.int64(data[pos]) if pos < n else 0)
        pos += 1
    if pos > n + 4:
        return -1
    state[0], state[1], state[2], state[3] = low, high, x, pos
    return bit


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(encode_bit)
