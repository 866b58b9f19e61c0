"""The match model: long repeats that the neural model cannot see, mixed into its frequency tables.

The SHA-RNN remembers only its attention window (256 bytes for the default model) and what its LSTM state
keeps; log lines, repeated names and boilerplate further back are invisible to it. The match model looks
them up: it hashes the last MIN_MATCH bytes of each lane, finds where that context last occurred in the
frame (in any lane), and predicts that the byte which followed it then follows now. Each step it
replaces, for every lane with a match, the engine's probability of the predicted byte by an adaptive
estimate, and rescales the other 255 entries to fill the rest.

The estimate is the hit rate seen so far in the frame for matches of the same length and engine confidence
(a small table of counts: an "SSE" stage, in compression terms), so a match model that keeps failing
(random-looking data, or a model that already knows) costs little, and one that keeps hitting (logs)
drives the code length towards zero.

Everything is integer and sequential in a fixed order (lanes in order, every step), so the encoder and the
decoder compute the same tables on any machine, like the engine (docs/design.md). Within a step the
predictions of all lanes are made before any byte of that step is known (the decoder decodes the lanes of
a step together), so a match may only point at bytes of earlier steps. The state lives for one frame: the
frame's bytes (as the step-major grid the codec keeps anyway), a hash table and the counts.

Frames that use it carry the MATCH_MODEL frame flag (docs/format.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shazip import _numba_cache
from shazip.intmath import bit_length

MIN_MATCH = 4  # context bytes that must agree for a match (and that are hashed to find one)
MAX_VERIFY = 32  # a new match's length is counted back at most this far
HASH_BITS = 20  # hash table entries: 2**20 int32 (4 MiB), about one per byte of a 1 MiB frame
LEN_BUCKETS = 16  # match length - MIN_MATCH, capped
CONF_BUCKETS = 21  # the engine's own confidence in the predicted byte, as a rough log-odds (see _bucket)
MIX_TOTAL = 1 << 20  # rows with a match sum to this (the engine's own total; ample precision)
COUNT_LIMIT = 1023  # counts are halved beyond this: the estimates follow the data as it changes

_opts = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_opts)
def _context_hash(grid, t: int, lane: int) -> int:
    """Hash of the MIN_MATCH bytes of `lane` ending at step t (Fibonacci hashing of the 32-bit word)."""
    word = np.int64(0)
    for i in range(MIN_MATCH):
        word = (word << 8) | np.int64(grid[t - i, lane])
    return ((word * np.int64(2654435761)) & np.int64(0xFFFFFFFF)) >> (32 - HASH_BITS)


@njit(**_opts)
def _lane_length(lane: int, run: int, full: int, rest: int) -> int:
    if lane < full:
        return run
    if lane == full:
        return rest
    return 0


@njit(**_opts)
def _bucket(match_len: int, predicted: int) -> int:
    """Counts index: match length, and the engine's probability of the predicted byte (in MIX_TOTAL units)
    as bit_length(p) - bit_length(MIX_TOTAL - p), a rough log2 of its odds."""
    length = min(match_len - MIN_MATCH, LEN_BUCKETS - 1)
    odds = bit_length(predicted) - bit_length(MIX_TOTAL - predicted) + CONF_BUCKETS // 2
    return length * CONF_BUCKETS + min(max(odds, 0), CONF_BUCKETS - 1)


@njit(**_opts)
def mix(freqs, active, grid, match_step, match_lane, match_len, hits, counts, predicted, bucket, out):
    """Tables for the current step of lanes 0..active-1, written to `out` (int64): a lane without a
    match gets the engine's row (`freqs`: int32, entries >= 1) as it is; a lane with one gets a row summing
    to MIX_TOTAL in which the predicted byte has the estimated probability and the other entries share the
    rest in proportion to the engine's row, each >= 1."""
    for lane in range(active):
        row = freqs[lane]
        predicted[lane] = -1
        total = np.int64(0)
        for x in range(row.shape[0]):
            out[lane, x] = row[x]
            total += row[x]
        if match_step[lane] < 0:
            continue
        b = np.int64(grid[match_step[lane], match_lane[lane]])
        rest = total - row[b]
        if rest <= 0:
            continue
        k = _bucket(match_len[lane], (np.int64(row[b]) * MIX_TOTAL) // total)
        predicted[lane] = b
        bucket[lane] = k
        # the estimate (hits + 1/2) / (counts + 1), leaving room for 255 entries >= 1
        p = ((2 * hits[k] + 1) * MIX_TOTAL) // (2 * counts[k] + 2)
        p = min(max(p, np.int64(1)), MIX_TOTAL - 256)
        budget = MIX_TOTAL - p - 255  # shared by the other entries in proportion to the engine's row
        used = np.int64(0)
        for x in range(row.shape[0]):
            if x != b:
                v = 1 + (np.int64(row[x]) * budget) // rest
                out[lane, x] = v
                used += v
        out[lane, b] = MIX_TOTAL - used


@njit(**_opts)
def update(
    t,
    active,
    grid,
    run,
    full,
    rest,
    match_step,
    match_lane,
    match_len,
    hits,
    counts,
    predicted,
    bucket,
    table,
):
    """After step t's bytes (grid[t, :active]) are known: count the predictions, follow or drop each
    lane's match, look for new matches, then enter every lane's context into the hash table. Lookups
    happen before this step's entries go in, so a match always points at a byte of an earlier step."""
    lanes = grid.shape[1]
    for lane in range(active):
        x = grid[t, lane]
        if predicted[lane] >= 0:
            k = bucket[lane]
            counts[k] += 1
            if predicted[lane] == x:
                hits[k] += 1
            if counts[k] > COUNT_LIMIT:
                counts[k] >>= 1
                hits[k] >>= 1
        if match_step[lane] >= 0:
            if grid[match_step[lane], match_lane[lane]] == x:
                match_step[lane] += 1
                match_len[lane] += 1
                if match_step[lane] >= _lane_length(match_lane[lane], run, full, rest):
                    match_step[lane] = -1
            else:
                match_step[lane] = -1
        if match_step[lane] < 0 and t + 1 >= MIN_MATCH:
            found = table[_context_hash(grid, t, lane)]
            if found >= 0:
                step, other = found // lanes, found % lanes
                length = 0
                while length < MAX_VERIFY and step - 1 - length >= 0 and t - length >= 0:
                    if grid[step - 1 - length, other] != grid[t - length, lane]:
                        break
                    length += 1
                if length >= MIN_MATCH and step < _lane_length(other, run, full, rest):
                    match_step[lane] = step
                    match_lane[lane] = other
                    match_len[lane] = length
    if t + 1 >= MIN_MATCH:
        for lane in range(active):
            table[_context_hash(grid, t, lane)] = (t + 1) * lanes + lane


class MatchModel:
    """The match model of one frame laid out in `lanes` lanes of `run` steps (see codec.lane_layout).

    `grid[t, lane]` is byte t of each lane: filled by the encoder up front, by the decoder step by step.
    Per step: `tables(t, freqs, active)` before the step's bytes are coded, `update(t, active)` after."""

    def __init__(self, grid: np.ndarray, run: int, full: int, rest: int) -> None:
        lanes = grid.shape[1]
        self.grid = grid
        self.layout = (run, full, rest)
        self.match_step = np.full(lanes, -1, dtype=np.int64)
        self.match_lane = np.zeros(lanes, dtype=np.int64)
        self.match_len = np.zeros(lanes, dtype=np.int64)
        self.hits = np.zeros(LEN_BUCKETS * CONF_BUCKETS, dtype=np.int64)
        self.counts = np.zeros(LEN_BUCKETS * CONF_BUCKETS, dtype=np.int64)
        self.predicted = np.full(lanes, -1, dtype=np.int64)
        self.bucket = np.zeros(lanes, dtype=np.int64)
        self.table = np.full(1 << HASH_BITS, -1, dtype=np.int32)
        self.out = np.empty((lanes, 256), dtype=np.int64)

    def tables(self, freqs: np.ndarray, active: int) -> np.ndarray:
        """The tables (int64 [active, 256], entries >= 1) for the current step."""
        mix(
            freqs, active, self.grid, self.match_step, self.match_lane, self.match_len, self.hits,
            self.counts, self.predicted, self.bucket, self.out,
        )  # fmt: skip
        return self.out[:active]

    def update(self, t: int, active: int) -> None:
        update(
            t, active, self.grid, *self.layout, self.match_step, self.match_lane, self.match_len, self.hits,
            self.counts, self.predicted, self.bucket, self.table,
        )  # fmt: skip


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(_context_hash)
