"""The mixing model: binary context mixing that learns the frame being coded, with the network's
prediction as its strongest input (docs/format.md, "Mixing frames", defines every formula below).

Each byte is coded as 8 binary decisions, most significant bit first. For each decision:

- 15 **context models** (orders 1, 2, 3, 4, 6, 8; the current word; the last two words; the byte above in
  the previous line with the column; that byte with the last byte; two sparse contexts; the word with the
  last byte; the bytes one and two records back, for data of fixed-length records, and the byte one record
  back with the last byte) each map their context's bit history (a state of `tables.NEXT_STATE`, kept in
  a hashed table of 16-byte slots, one per context and half byte) to a probability through an adaptive
  state map;
  each also predicts the whole next byte from its last byte and run count in that context (a "run");
- a **match model** follows the last earlier occurrence of the lane's last 5 bytes and predicts the byte
  that came next;
- the **network** gives the probability of the bit from its 256-entry table (the sums over the byte
  values that the bits so far allow), also refined by two adaptive probability maps (APMs);
- three **mixers** (weight sets chosen by the network's confidence and the bit position; by the match
  state and the partial byte; by how many context orders have seen their context and the network's
  confidence) combine the inputs in the log-odds domain, a **final mixer** combines the three, and two
  **APMs** (on the partial byte with the last byte, and with the last two bytes) refine the result.

Everything is integer arithmetic in the order the format fixes: lanes in order, each lane's byte bit by
bit, every table updated right after its bit. Frames without the network (method CM) run the same model
with the network's inputs at zero, on one lane.

The state is a tuple of arrays (`new_state`); `code_step` codes one step of every active lane of a frame
(the encoder from the known bytes, the decoder from the payload), `code_frame` a whole one-lane frame.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from shazip import _numba_cache
from shazip.intmath import LOG2_TABLE, log2_q
from shazip.mixing import table_bits
from shazip.mixing.coder import decode_bit, encode_bit
from shazip.mixing.tables import NEXT_STATE, RECIPROCAL, SQUASH, ST_MAX, STATE_COUNTS, STRETCH

# Context kinds, in the order their inputs reach the mixers.
ORDER_1, ORDER_2, ORDER_3, ORDER_4, ORDER_6, ORDER_8 = 1, 2, 3, 4, 6, 8
WORD, WORD_PAIR, COLUMN, ABOVE_LAST, SPARSE_2, SPARSE_3, WORD_LAST = 20, 21, 25, 26, 23, 24, 27
RECORD, RECORD_LAST = 28, 29
CONTEXTS = (ORDER_1, ORDER_2, ORDER_3, ORDER_4, ORDER_6, ORDER_8, WORD, WORD_PAIR, COLUMN, ABOVE_LAST)
CONTEXTS += (SPARSE_2, SPARSE_3, WORD_LAST, RECORD, RECORD_LAST)
N_CONTEXTS = len(CONTEXTS)
N_INPUTS = 2 * N_CONTEXTS + 5  # per context: state, run; match, network x3, bias
I_RUN = N_CONTEXTS
I_MATCH = 2 * N_CONTEXTS
I_NET, I_NET_APM1, I_NET_APM2, I_BIAS = I_MATCH + 1, I_MATCH + 2, I_MATCH + 3, I_MATCH + 4
SETS = (512, 1024, 64)  # weight sets of the three mixers
FINAL_SETS = 64
APM_BINS = 33
MIN_MATCH = 5
MAX_VERIFY = 32
MAP_LIMIT = 255  # state maps' count limit (their adaptation rate stops falling at 1/256.5)
APM_RATE = 6
MIXER_RATE = 4  # mixers: w += (x * err * MIXER_RATE) >> 18
FINAL_RATE = 1  # final mixer: w += (x * err * FINAL_RATE) >> 16
NET_WEIGHT = 65536  # initial weight of the network's input (1.0)
_GOLDEN = 0x9E3779B97F4A7C15
_MIX = 0xD6E8FEB86659FD93
_WORD_PRIME = 0x100000001B3

_opts = {"cache": True, "nogil": True, "boundscheck": False}


class MixState(NamedTuple):
    """The mixing model's arrays for one frame (plain tuple at the compiled calls: see new_state)."""

    slots: np.ndarray  # uint8 [contexts, 2^b, 16]: check byte, then 15 bit-history states of a half byte
    maps: np.ndarray  # int64 [contexts, 8 * 256]: state -> p (22 bits) << 10 | count, per bit position
    runs: np.ndarray  # uint32 [contexts, 2^b]: check << 16 | last byte << 8 | run count
    run_maps: np.ndarray  # int64 [contexts, 8 * 16 * 2]
    match_table: np.ndarray  # int64 [2^b]: position after the last occurrence of a 5-byte context, or -1
    match_map: np.ndarray  # int64 [64 * 2]
    weights: np.ndarray  # int64 [sum(SETS), N_INPUTS]
    final_weights: np.ndarray  # int64 [FINAL_SETS, 3]
    apms: np.ndarray  # int32 [4 * 2^a * 33]: network by order 1, network by order 2, output by order 1, 2
    history: np.ndarray  # uint64 [lanes, 3]: last 8 bytes, current word hash, previous word hash
    lane_vars: np.ndarray  # int64 [lanes, 6]: line start, previous line start, match position, match length,
    # record length, its confidence
    record_last: np.ndarray  # int64 [lanes, 512]: per byte value its last position + 1, then the distance
    # between its last two occurrences
    hashes: np.ndarray  # uint64 [lanes, contexts]: this byte's context hashes
    runs_seen: np.ndarray  # int64 [lanes, contexts, 2]: this byte's run byte (-1: none) and count


def new_state(lanes: int, raw_size: int) -> tuple:
    """Fresh arrays for a frame of raw_size bytes in `lanes` lanes (a plain tuple of MixState's fields)."""
    b = table_bits(raw_size)
    a = min(b, 16)
    n = N_CONTEXTS
    counts = STATE_COUNTS
    first = ((2 * counts[:, 1] + 1) << 22) // (2 * (counts[:, 0] + counts[:, 1]) + 2)
    maps = np.tile((first << 10).astype(np.int64), (n, 8))
    half = np.int64((1 << 21) << 10)
    centre = APM_BINS // 2
    apm_row = np.array(  # each APM starts as the identity: entry i holds squash((i - 16) * 128)
        [SQUASH[min(max((i - centre) * 128, -ST_MAX), ST_MAX) + ST_MAX] * 16 for i in range(APM_BINS)],
        dtype=np.int32,
    )
    weights = np.zeros((sum(SETS), N_INPUTS), dtype=np.int64)
    weights[:, I_NET] = NET_WEIGHT
    final = np.full((FINAL_SETS, 3), 21845, dtype=np.int64)
    lane_vars = np.zeros((lanes, 6), dtype=np.int64)
    lane_vars[:, 1] = -1
    lane_vars[:, 2] = -1
    return tuple(
        MixState(
            slots=np.zeros((n, 1 << b, 16), dtype=np.uint8),
            maps=maps,
            runs=np.zeros((n, 1 << b), dtype=np.uint32),
            run_maps=np.full((n, 8 * 16 * 2), half, dtype=np.int64),
            match_table=np.full(1 << b, -1, dtype=np.int64),
            match_map=np.full(64 * 2, half, dtype=np.int64),
            weights=weights,
            final_weights=final,
            apms=np.tile(apm_row, 4 << a),
            history=np.zeros((lanes, 3), dtype=np.uint64),
            lane_vars=lane_vars,
            record_last=np.zeros((lanes, 512), dtype=np.int64),
            hashes=np.zeros((lanes, n), dtype=np.uint64),
            runs_seen=np.zeros((lanes, n, 2), dtype=np.int64),
        )
    )


# ---- small pieces ----


@njit(**_opts)
def _hash(v, k):  # noqa: ANN001, ANN202
    """A 64-bit hash of value v (uint64) for context kind k."""
    h = (v + np.uint64(k) * np.uint64(_GOLDEN)) * np.uint64(_MIX)
    h ^= h >> np.uint64(32)
    h *= np.uint64(_MIX)
    return h ^ (h >> np.uint64(29))


@njit(**_opts)
def _clamp_st(x: int) -> int:
    return -ST_MAX if x < -ST_MAX else (ST_MAX if x > ST_MAX else x)


@njit(**_opts)
def _squash(x: int) -> int:
    return SQUASH[_clamp_st(x) + ST_MAX]


@njit(**_opts)
def _map_p(v: int) -> int:
    """A state map entry's probability in 16 bits (1..65535)."""
    p = v >> 16
    return 1 if p < 1 else (65535 if p > 65535 else p)


@njit(**_opts)
def _map_update(table, i: int, bit: int, limit: int) -> None:  # noqa: ANN001
    """p += (bit - p) / (n + 1.5), n counts up to limit (p: 22 bits, n: 10 bits, in one integer)."""
    v = table[i]
    n = v & 1023
    p = v >> 10
    p += (((bit << 22) - p) * RECIPROCAL[n] + 32768) >> 16
    if n < limit:
        n += 1
    table[i] = (p << 10) | n


@njit(**_opts)
def _apm(table, base: int, ctx: int, st: int) -> tuple:  # noqa: ANN001
    """(p, index of the entry to update) of the APM at table[base:] for context ctx: the two nearest of 33
    entries around log-odds st, interpolated."""
    pos = (_clamp_st(st) + 2048) * (APM_BINS - 1)
    lo = pos >> 12
    w = pos & 4095
    at = base + ctx * APM_BINS + lo
    p = (np.int64(table[at]) * (4096 - w) + np.int64(table[at + 1]) * w) >> 16
    return (1 if p < 1 else (65535 if p > 65535 else p)), at + (1 if w >= 2048 else 0)


@njit(**_opts)
def _apm_update(table, at: int, bit: int, rate: int) -> None:  # noqa: ANN001
    table[at] += ((bit << 20) - table[at]) >> rate


@njit(**_opts)
def _find_slot(slots, h, mask: int) -> int:  # noqa: ANN001
    """The slot of hash h among 4 neighbours (one 64-byte line) holding its check byte; else the one whose
    first state has the least history is emptied and taken."""
    check = np.uint8(h >> np.uint64(56))
    home = np.int64(h & np.uint64(mask))
    base = home & ~np.int64(3)
    best = home
    best_priority = 1 << 30
    for k in range(4):
        i = base + ((home + k) & 3)
        if slots[i, 0] == check:
            return i
        priority = np.int64(slots[i, 1])
        if priority < best_priority:
            best_priority = priority
            best = i
    for k in range(16):
        slots[best, k] = 0
    slots[best, 0] = check
    return best


@njit(**_opts)
def _lane_length(lane: int, run: int, full: int, rest: int) -> int:
    return run if lane < full else (rest if lane == full else 0)


@njit(**_opts)
def _context_value(kind: int, h, word, pword, above, record):  # noqa: ANN001, ANN202
    """The value hashed for context kind `kind` (uint64) from the last 8 bytes h, the word hashes, the
    byte above (+1, 0 when none) with the column in bits 16.., and the bytes one and two records back
    (+1 each, 9 bits apart) with the record length in bits 18.. (0 when no record length is known)."""
    if kind <= 8:
        if kind == 8:
            return h
        return h & ((np.uint64(1) << np.uint64(8 * kind)) - np.uint64(1))
    if kind == WORD:
        return word ^ np.uint64(0x5555)
    if kind == WORD_PAIR:
        return word + pword * np.uint64(31)
    if kind == COLUMN:
        return above
    if kind == ABOVE_LAST:
        return (above & np.uint64(0xFFFF)) | ((h & np.uint64(0xFF)) << np.uint64(16))
    if kind == SPARSE_2:
        return (h >> np.uint64(8)) & np.uint64(0xFFFF)
    if kind == SPARSE_3:
        return (h >> np.uint64(16)) & np.uint64(0xFFFF)
    if kind == RECORD:
        return record
    if kind == RECORD_LAST:
        return (record & ~np.uint64(0x3FE00)) | ((h & np.uint64(0xFF)) << np.uint64(9))
    return word + (h & np.uint64(0xFF)) * np.uint64(0x1000193)  # WORD_LAST


# ---- one byte of one lane ----


@njit(**_opts)
def _code_byte(s, kinds, grid, t, lane, run, full, rest, table, network, decoding, coder, buf, scratch):  # noqa: ANN001, ANN201, E501
    """Code byte t of `lane` (known in grid when encoding; decoded into grid when decoding) and learn it.
    table: the lane's network table (int32 [256], every entry >= 1) when `network`; scratch: _scratch().
    Returns the byte, -1 when the decoder ran out of payload, -2 when the encoder's buffer is full."""
    s = MixState(*s)
    slot, cum, x, state, run_at, used, run_bits = scratch
    lanes = grid.shape[1]
    n_ctx = kinds.shape[0]
    mask = s.slots.shape[1] - 1
    apm_mask = (s.apms.shape[0] // (4 * APM_BINS)) - 1
    apm_size = (apm_mask + 1) * APM_BINS
    h = s.history[lane, 0]
    word = s.history[lane, 1]
    pword = s.history[lane, 2]
    line0 = s.lane_vars[lane, 0]
    line1 = s.lane_vars[lane, 1]
    col = t - line0
    above = np.uint64(0)
    if line1 >= 0 and col < line0 - line1:
        above = np.uint64(grid[line1 + col, lane]) + np.uint64(1)
        above |= np.uint64(min(col, 255)) << np.uint64(16)
    record = np.uint64(0)
    rlen = s.lane_vars[lane, 4]
    if rlen > 0 and t >= 2 * rlen:
        record = np.uint64(grid[t - rlen, lane]) + np.uint64(1)
        record |= (np.uint64(grid[t - 2 * rlen, lane]) + np.uint64(1)) << np.uint64(9)
        record |= np.uint64(rlen) << np.uint64(18)
    for o in range(n_ctx):
        hv = _hash(_context_value(kinds[o], h, word, pword, above, record), kinds[o])
        s.hashes[lane, o] = hv
        slot[o] = _find_slot(s.slots[o], hv, mask)
        entry = np.int64(s.runs[o, np.int64(hv >> np.uint64(64 - run_bits))])
        check = np.int64((hv >> np.uint64(8)) & np.uint64(0xFFFF))
        if entry != 0 and (entry >> 16) == check:
            s.runs_seen[lane, o, 0] = (entry >> 8) & 255
            s.runs_seen[lane, o, 1] = entry & 255
        else:
            s.runs_seen[lane, o, 0] = -1
            s.runs_seen[lane, o, 1] = 0
    # the match: dropped when it reaches the end of its lane
    mpos = s.lane_vars[lane, 2]
    if mpos >= 0 and mpos // lanes >= _lane_length(mpos % lanes, run, full, rest):
        mpos = -1
        s.lane_vars[lane, 2] = -1
        s.lane_vars[lane, 3] = 0
    expected = -1 if mpos < 0 else np.int64(grid[mpos // lanes, mpos % lanes])
    mlen = s.lane_vars[lane, 3]
    c1 = np.int64(h & np.uint64(0xFF))
    c2 = np.int64((h >> np.uint64(8)) & np.uint64(0xFF))
    # the network's cumulative table: sums over byte ranges give each bit's probability
    if network:
        for v in range(256):
            cum[v + 1] = cum[v] + table[v]
    byte = np.int64(grid[t, lane]) if not decoding else np.int64(0)
    c0 = np.int64(1)
    for j in range(8):
        node = ((c0 & ((1 << (j & 3)) - 1)) | (1 << (j & 3))) - 1
        st_net = np.int64(0)
        if network:
            lo = (c0 - (1 << j)) << (8 - j)
            mid = lo + (1 << (7 - j))
            hi = lo + (1 << (8 - j))
            ones, zeros = cum[hi] - cum[mid], cum[mid] - cum[lo]
            st_net = _clamp_st((log2_q(ones, LOG2_TABLE) - log2_q(zeros, LOG2_TABLE)) >> 5)
        seen = 0
        for o in range(n_ctx):
            st = np.int64(s.slots[o, slot[o], 1 + node])
            state[o] = st
            x[o] = STRETCH[_map_p(s.maps[o, j * 256 + st])]
            if st != 0 and kinds[o] <= 8:
                seen = o + 1
            r = s.runs_seen[lane, o, 0]
            run_at[o] = -1
            x[I_RUN + o] = 0
            if r >= 0 and ((r + 256) >> (8 - j)) == c0:
                count = min(s.runs_seen[lane, o, 1], 15)
                run_at[o] = (j * 16 + count) * 2 + ((r >> (7 - j)) & 1)
                x[I_RUN + o] = STRETCH[_map_p(s.run_maps[o, run_at[o]])]
        match_at = -1
        x[I_MATCH] = 0
        if expected >= 0 and ((expected + 256) >> (8 - j)) == c0:
            match_at = min(mlen, 63) * 2 + ((expected >> (7 - j)) & 1)
            x[I_MATCH] = STRETCH[_map_p(s.match_map[match_at])]
        ctx1 = c0 | (c1 << 8)
        ctx2 = np.int64(_hash(np.uint64(c1 | (c2 << 8)), c0) >> np.uint64(40)) & apm_mask
        ctx1 &= apm_mask
        x[I_NET] = st_net
        pn1, an1 = _apm(s.apms, 0, ctx1, st_net)
        pn2, an2 = _apm(s.apms, apm_size, ctx2, st_net)
        x[I_NET_APM1] = STRETCH[pn1] if network else 0
        x[I_NET_APM2] = STRETCH[pn2] if network else 0
        x[I_BIAS] = 256
        confidence = min((st_net if st_net >= 0 else -st_net) >> 8, 7)
        match_state = 0
        if match_at >= 0:
            match_state = 1 + (1 if mlen >= 16 else 0) + (1 if mlen >= 32 else 0)
        set0 = (confidence * 8 + (c1 >> 5)) * 8 + j
        set1 = SETS[0] + match_state * 256 + c0
        set2 = SETS[0] + SETS[1] + seen * 8 + confidence
        d0 = np.int64(0)
        d1 = np.int64(0)
        d2 = np.int64(0)
        n_used = 0  # (inputs at 0 add nothing and learn nothing: only the others are visited)
        for i in range(N_INPUTS):
            if x[i] != 0:
                used[n_used] = i
                n_used += 1
                d0 += s.weights[set0, i] * x[i]
                d1 += s.weights[set1, i] * x[i]
                d2 += s.weights[set2, i] * x[i]
        d0 = _clamp_st(d0 >> 16)
        d1 = _clamp_st(d1 >> 16)
        d2 = _clamp_st(d2 >> 16)
        fset = j * 8 + confidence
        fw = s.final_weights
        d = _clamp_st((fw[fset, 0] * d0 + fw[fset, 1] * d1 + fw[fset, 2] * d2) >> 16)
        p_mix = _squash(d)
        q1, aq1 = _apm(s.apms, 2 * apm_size, ctx1, d)
        q2, aq2 = _apm(s.apms, 3 * apm_size, ctx2, d)
        p = (p_mix + q1 + 2 * q2) >> 2
        p = 1 if p < 1 else (65535 if p > 65535 else p)
        if decoding:
            bit = decode_bit(coder, buf, p)
            if bit < 0:
                return -1
        else:
            bit = (byte >> (7 - j)) & 1
            if not encode_bit(coder, buf, bit, p):
                return -2
        # learn the bit
        err = (bit << 16) - p_mix
        fw[fset, 0] += (d0 * err * FINAL_RATE + 32768) >> 16
        fw[fset, 1] += (d1 * err * FINAL_RATE + 32768) >> 16
        fw[fset, 2] += (d2 * err * FINAL_RATE + 32768) >> 16
        e0 = ((bit << 16) - _squash(d0)) * MIXER_RATE
        e1 = ((bit << 16) - _squash(d1)) * MIXER_RATE
        e2 = ((bit << 16) - _squash(d2)) * MIXER_RATE
        for k in range(n_used):
            i = used[k]
            s.weights[set0, i] += (x[i] * e0 + 131072) >> 18
            s.weights[set1, i] += (x[i] * e1 + 131072) >> 18
            s.weights[set2, i] += (x[i] * e2 + 131072) >> 18
        if network:
            _apm_update(s.apms, an1, bit, APM_RATE)
            _apm_update(s.apms, an2, bit, APM_RATE)
        _apm_update(s.apms, aq1, bit, APM_RATE)
        _apm_update(s.apms, aq2, bit, APM_RATE)
        for o in range(n_ctx):
            _map_update(s.maps[o], j * 256 + state[o], bit, MAP_LIMIT)
            s.slots[o, slot[o], 1 + node] = NEXT_STATE[state[o], bit]
            if run_at[o] >= 0:
                _map_update(s.run_maps[o], run_at[o], bit, MAP_LIMIT)
        if match_at >= 0:
            _map_update(s.match_map, match_at, bit, MAP_LIMIT)
        c0 = (c0 << 1) | bit
        if j == 3:
            for o in range(n_ctx):
                slot[o] = _find_slot(s.slots[o], _hash(s.hashes[lane, o], c0), mask)
    byte = c0 & 255
    if decoding:
        grid[t, lane] = byte
    _end_byte(s, kinds, grid, t, lane, byte, expected, run_bits)
    return byte


@njit(**_opts)
def _end_byte(s, kinds, grid, t, lane, byte, expected, run_bits) -> None:  # noqa: ANN001
    """After byte t of `lane`: runs, match, history, word and line; then the match lookup and insertion."""
    lanes = grid.shape[1]
    for o in range(kinds.shape[0]):
        hv = s.hashes[lane, o]
        at = np.int64(hv >> np.uint64(64 - run_bits))
        check = np.int64((hv >> np.uint64(8)) & np.uint64(0xFFFF))
        count = s.runs_seen[lane, o, 1] + 1 if s.runs_seen[lane, o, 0] == byte else 1
        s.runs[o, at] = (check << 16) | (byte << 8) | min(count, 255)
    if expected >= 0:
        if expected == byte:
            s.lane_vars[lane, 2] += lanes
            s.lane_vars[lane, 3] += 1
        else:
            s.lane_vars[lane, 2] = -1
            s.lane_vars[lane, 3] = 0
    h = (s.history[lane, 0] << np.uint64(8)) | np.uint64(byte)
    s.history[lane, 0] = h
    if (97 <= byte <= 122) or (65 <= byte <= 90) or byte >= 128:
        lower = byte + 32 if 65 <= byte <= 90 else byte
        s.history[lane, 1] = (s.history[lane, 1] + np.uint64(lower) + np.uint64(1)) * np.uint64(_WORD_PRIME)
    elif s.history[lane, 1] != np.uint64(0):
        s.history[lane, 2] = s.history[lane, 1]
        s.history[lane, 1] = np.uint64(0)
    if byte == 10:
        s.lane_vars[lane, 1] = s.lane_vars[lane, 0]
        s.lane_vars[lane, 0] = t + 1
    # The record length: a distance at which a byte value repeats twice in a row is a vote for it.
    last = s.record_last[lane, byte]
    if last > 0:
        distance = t + 1 - last
        if distance == s.record_last[lane, 256 + byte] and distance >= 8:
            if distance == s.lane_vars[lane, 4]:
                s.lane_vars[lane, 5] = min(s.lane_vars[lane, 5] + 1, 15)
            elif s.lane_vars[lane, 5] == 0:
                s.lane_vars[lane, 4] = distance
                s.lane_vars[lane, 5] = 1
            else:
                s.lane_vars[lane, 5] -= 1
        s.record_last[lane, 256 + byte] = distance
    s.record_last[lane, byte] = t + 1
    if t + 1 >= MIN_MATCH:
        bits = np.int64(0)
        while (1 << bits) < s.match_table.shape[0]:
            bits += 1
        at = np.int64(_hash(h & np.uint64(0xFFFFFFFFFF), 9) >> np.uint64(64 - bits))
        if s.lane_vars[lane, 2] < 0:
            found = s.match_table[at]
            if found >= 0:
                ft, fl = found // lanes, found % lanes
                length = 0
                while length < MAX_VERIFY and ft - 1 - length >= 0 and t - length >= 0:
                    if grid[ft - 1 - length, fl] != grid[t - length, lane]:
                        break
                    length += 1
                if length >= MIN_MATCH:
                    s.lane_vars[lane, 2] = found
                    s.lane_vars[lane, 3] = length
        s.match_table[at] = (t + 1) * lanes + lane


# ---- steps and frames ----


@njit(**_opts)
def _scratch(n_ctx, runs):  # noqa: ANN001, ANN202
    """Work arrays of _code_byte, made once per call: slots, network sums, inputs, states, run entries,
    the inputs in use, and log2 of the run tables' size."""
    run_bits = np.int64(0)
    while (1 << run_bits) < runs.shape[1]:
        run_bits += 1
    return (
        np.zeros(n_ctx, dtype=np.int64),
        np.zeros(257, dtype=np.int64),
        np.zeros(N_INPUTS, dtype=np.int64),
        np.zeros(n_ctx, dtype=np.int64),
        np.zeros(n_ctx, dtype=np.int64),
        np.zeros(N_INPUTS, dtype=np.int64),
        run_bits,
    )


@njit(**_opts)
def code_step(s, kinds, grid, t, active, run, full, rest, tables, network, decoding, coder, buf) -> int:  # noqa: ANN001
    """Step t of a frame laid out in grid ([run, lanes]): lanes 0..active-1 in order, each with its
    network table tables[lane] when `network`. Returns 0, or the first negative code of _code_byte."""
    scratch = _scratch(kinds.shape[0], MixState(*s).runs)
    for lane in range(active):
        r = _code_byte(
            s, kinds, grid, t, lane, run, full, rest, tables[lane], network, decoding, coder, buf, scratch
        )
        if r < 0:
            return r
    return 0


@njit(**_opts)
def code_frame(s, kinds, grid, decoding, coder, buf) -> int:  # noqa: ANN001
    """A whole one-lane frame without the network (grid [n, 1]). Returns 0 or a negative code."""
    n = grid.shape[0]
    none = np.ones(256, dtype=np.int32)
    scratch = _scratch(kinds.shape[0], MixState(*s).runs)
    for t in range(n):
        r = _code_byte(s, kinds, grid, t, 0, n, 1, 0, none, False, decoding, coder, buf, scratch)
        if r < 0:
            return r
    return 0


KINDS = np.array(CONTEXTS, dtype=np.int64)

# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(code_step)
