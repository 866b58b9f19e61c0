"""Context counts: what this very file has shown so far, blended into the model's tables.

A small pretrained model knows language in general, not the names, spellings and layout of the file in
hand (a play's speaker tags, a poem's diction, a log's fields). Byte counts of the frame so far in the
contexts of the last 2, 3, 4 and 6 bytes carry exactly that. Each order turns the table it receives into

    out(x) = (c(x) + A * p(x)) / (n + A)

with p the incoming table (the model's, then each order's output), c(x) the count of byte x after this
context in the frame so far and n their sum: the model's table is the prior and the counts take over as
they accumulate. How much to trust the counts (A) depends on the data: in-domain text wants a large A,
a file full of its own vocabulary a small one. So A is learnt: for each order and each count size
(bit_length(n)), the code length every candidate A would have given is tracked (an exponentially decaying
sum) and the best so far is used. Candidate 0 means "leave the table as it is".

Everything is integer (the code lengths through an integer log2 table built with integer arithmetic) and
sequential in a fixed order, so encoder and decoder compute the same tables on any machine
(docs/design.md). As with the match model, the tables of a step are computed for all lanes before any
byte of that step is known, then the step's bytes update costs and counts. Contexts are each lane's own last
bytes; the counts are shared by all lanes of the frame. The state lives for one frame.

Frames that use it carry the CONTEXT_COUNTS frame flag (docs/format.md). The writer now uses the second
version below (ContextCounts2, frame flag CONTEXT_COUNTS_2): more orders, sparse and collision-free.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shazip import _numba_cache
from shazip.intmath import LOG2_TABLE, bit_length, log2_q

ORDERS = (2, 3, 4, 6)  # context lengths in bytes
SLOT_BITS = 16  # contexts per order: order 2 exactly, longer ones hashed (collisions merge contexts)
CANDIDATES = (0, 1024, 256, 64, 16)  # values of A; 0: the incoming table unchanged
COUNT_BUCKETS = 17  # bit_length(n), n < 2**16
ROW_LIMIT = (1 << 16) - 1  # a context's counts are halved when their sum reaches this (uint16 counts)
TABLE_TOTAL = 1 << 20  # each order's output is rescaled to about this total (entries >= 1)
COST_DECAY_SHIFT = 5  # code-length sums forget with a factor 1 - 1/32 per use
_opts = {"cache": True, "nogil": True, "boundscheck": False}


@njit(**_opts)
def _charge_candidates(costs, i, bucket, candidates, n, cx, px, total, table, decay_shift) -> None:
    """Add to order i's costs in this bucket the code length each candidate A would have given the coded
    byte x ((c(x) + A p(x)) / (n + A), or p(x) for A = 0; cx = c(x), px = p(x) of the incoming table of
    this total), as an exponentially decaying sum (factor 1 - 2**-decay_shift per use)."""
    log_total = log2_q(total, table)
    for j in range(candidates.shape[0]):
        a = candidates[j]
        if a == 0:
            cost = log_total - log2_q(px, table)
        else:
            cost = log2_q(n + a, table) + log_total - log2_q(cx * total + a * px, table)
        costs[i, bucket, j] += cost - (costs[i, bucket, j] >> decay_shift)


@njit(**_opts)
def _best_candidate(costs, i, bucket) -> int:
    """Index of the candidate A with the smallest code-length sum so far (the first one on ties)."""
    best = 0
    for j in range(1, costs.shape[2]):
        if costs[i, bucket, j] < costs[i, bucket, best]:
            best = j
    return best


@njit(**_opts)
def _slot(grid, t, lane, order) -> int:
    """Context slot of the `order` bytes of `lane` before step t (t >= order)."""
    word = np.uint64(0)
    for i in range(order):
        word = (word << np.uint64(8)) | np.uint64(grid[t - 1 - i, lane])
    if order * 8 <= SLOT_BITS:
        return np.int64(word)
    return np.int64((word * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - SLOT_BITS))


@njit(**_opts)
def blend(t, rows, active, grid, orders, candidates, counts, totals, costs, inputs, input_totals, slots, out):
    """The tables of step t for lanes 0..active-1: `rows` (entries >= 1) through every order, into `out`
    (float64, as the coder takes them). Keeps each order's input row and its sum, and the slot, for update.

    The blend (c(x) * S + A * r(x)) / ((n + A) * S) is scaled to ~TABLE_TOTAL with one division per row:
    1 + (v * mult >> 40), v = c(x) * S + A * r(x), mult = ((TABLE_TOTAL - 256) << 40) // ((n + A) * S):
    exact integer arithmetic (v <= (n + A) * S, so v * mult <= 2**60)."""
    n_values = rows.shape[1]
    row = np.empty(n_values, dtype=np.int64)
    for lane in range(active):
        total = np.int64(0)
        for x in range(n_values):
            row[x] = rows[lane, x]
            total += row[x]
        for i in range(orders.shape[0]):
            order = orders[i]
            slots[lane, i] = -1
            if t < order:
                continue
            slot = _slot(grid, t, lane, order)
            slots[lane, i] = slot
            input_totals[lane, i] = total
            for x in range(n_values):
                inputs[lane, i, x] = row[x]
            n = np.int64(totals[i, slot])
            if n == 0:
                continue
            bucket = bit_length(n)
            best = _best_candidate(costs, i, bucket)
            if best == 0:
                continue
            a = candidates[best]
            mult = (np.int64(TABLE_TOTAL - n_values) << 40) // ((n + a) * total)
            new_total = np.int64(0)
            for x in range(n_values):
                v = np.int64(counts[i, slot, x]) * total + a * row[x]
                row[x] = 1 + ((v * mult) >> 40)
                new_total += row[x]
            total = new_total
        for x in range(n_values):
            out[lane, x] = row[x]


@njit(**_opts)
def update(t, active, grid, orders, candidates, counts, totals, costs, inputs, input_totals, slots, table):
    """After step t's bytes are known: charge every candidate A the code length it would have given (with
    the counts as they were when the tables were made), then count the step's bytes."""
    for lane in range(active):
        x = grid[t, lane]
        for i in range(orders.shape[0]):
            slot = slots[lane, i]
            if slot < 0:
                continue
            n = np.int64(totals[i, slot])
            if n == 0:
                continue
            bucket = bit_length(n)
            total = input_totals[lane, i]
            px = np.int64(inputs[lane, i, x])
            cx = np.int64(counts[i, slot, x])
            _charge_candidates(costs, i, bucket, candidates, n, cx, px, total, table, COST_DECAY_SHIFT)
    for lane in range(active):
        x = grid[t, lane]
        for i in range(orders.shape[0]):
            slot = slots[lane, i]
            if slot < 0:
                continue
            counts[i, slot, x] += 1
            totals[i, slot] += 1
            if totals[i, slot] >= ROW_LIMIT:
                kept = 0
                for y in range(counts.shape[2]):
                    counts[i, slot, y] >>= 1
                    kept += counts[i, slot, y]
                totals[i, slot] = kept


class ContextCounts:
    """The context counts of one frame, over the step-major `grid` the codec keeps (see MatchModel).
    Per step: `tables(t, rows, active)` before the step's bytes are coded, `update(t, active)` after."""

    def __init__(self, grid: np.ndarray) -> None:
        lanes = grid.shape[1]
        k = len(ORDERS)
        self.grid = grid
        self.orders = np.array(ORDERS, dtype=np.int64)
        self.candidates = np.array(CANDIDATES, dtype=np.int64)
        self.counts = np.zeros((k, 1 << SLOT_BITS, 256), dtype=np.uint16)  # (pages filled as contexts occur)
        self.totals = np.zeros((k, 1 << SLOT_BITS), dtype=np.int32)
        self.costs = np.zeros((k, COUNT_BUCKETS + 1, len(CANDIDATES)), dtype=np.int64)
        self.inputs = np.zeros((lanes, k, 256), dtype=np.int32)  # each order's input row (<= 2**20 each)
        self.input_totals = np.zeros((lanes, k), dtype=np.int64)
        self.slots = np.full((lanes, k), -1, dtype=np.int64)
        self.out = np.empty((lanes, 256), dtype=np.float64)

    def tables(self, t: int, rows: np.ndarray, active: int) -> np.ndarray:
        """The coder's tables (float64 [active, 256], exact integers) for step t."""
        blend(
            t, rows, active, self.grid, self.orders, self.candidates, self.counts, self.totals, self.costs,
            self.inputs, self.input_totals, self.slots, self.out,
        )  # fmt: skip
        return self.out[:active]

    def update(self, t: int, active: int) -> None:
        update(
            t, active, self.grid, self.orders, self.candidates, self.counts, self.totals, self.costs,
            self.inputs, self.input_totals, self.slots, LOG2_TABLE,
        )  # fmt: skip


# --- Context counts, second version (frame flag CONTEXT_COUNTS_2) ------------------------------------------
#
# Measured on the engine's cached tables (exact code lengths; docs/format.md has the formulas): the counts
# above lose most of their value to hash collisions (65,536 dense rows per order for ~10^5-10^6 contexts in
# a 1 MiB frame) and choose A from too little. This version keeps orders 1 and 2 dense and exact, stores
# the longer orders sparsely (a few (byte, count) pairs per context, 2^20 contexts per order, a 16-bit tag
# so that a context never borrows another's counts), adds orders 1, 8, 12 and the current word, and picks A
# per (order, bit_length(n), how concentrated the counts are, how much the incoming table already agrees
# with the counts' favourite byte). Old frames (flag CONTEXT_COUNTS) still decode with the functions above.

ORDERS_2 = (1, 2, 3, 4, 6, 8, 12, 0)  # context lengths in bytes; 0: the current word (see update_2)
DENSE_ORDERS_2 = 2  # the first two (orders 1 and 2) are dense rows indexed by the bytes themselves
CANDIDATES_2 = (0, 4096, 1024, 512, 256, 128, 64, 32, 16, 8)  # values of A; 0: the incoming table unchanged
SPARSE_BITS = 20  # contexts per sparse order
PAIRS = 8  # (byte, count) pairs per sparse context; a new byte replaces the pair with the smallest count
BUCKETS_2 = (COUNT_BUCKETS + 1) * 64  # (bit_length(n), counts' concentration 0..7, agreement 0..7)
COST_DECAY_SHIFT_2 = 8  # slower than version 1 (>> 5): many more buckets, each seen less often
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing multiplier (2^64 / golden ratio)
_WORD_PRIME = 0x100000001B3  # FNV-1a's 64-bit prime
_WORD_SEED = 0x1234567


@njit(**_opts)
def _is_word_byte(x) -> bool:
    """ASCII letters and every byte >= 128 (UTF-8 letters of other scripts) make up words."""
    return (97 <= x <= 122) or (65 <= x <= 90) or x >= 128


@njit(**_opts)
def _sparse_hash(grid, t, lane, order, word):
    """64-bit hash of a sparse context: the `order` bytes of `lane` before step t, or its current word."""
    if order == 0:
        h = np.uint64(word[lane]) + np.uint64(_WORD_SEED)
    else:
        h = np.uint64(order)
        for i in range(order):
            h = (h + np.uint64(grid[t - 1 - i, lane]) + np.uint64(1)) * np.uint64(_GOLDEN)
    return h * np.uint64(_GOLDEN)


@njit(**_opts)
def _bucket_2(n, top_count, incoming_top, incoming_total) -> int:
    """Which costs choose A: bit_length(n); the share of the counts' most frequent byte in eighths (7: the
    only byte seen); the incoming table's log2-odds for that byte, clamped to -4..3."""
    concentration = 7 if top_count == n else (top_count * 7) // n
    odds = bit_length(incoming_top) - bit_length(incoming_total - incoming_top) + 4
    agreement = min(max(odds, 0), 7)
    return (bit_length(n) * 8 + concentration) * 8 + agreement


@njit(**_opts)
def blend_2(
    t, rows, active, grid, orders, candidates, dense, dense_totals, dense_tops, pair_bytes, pair_counts,
    sparse_totals, tags, word, costs, first_inputs, input_totals, applied, mults, slots, fresh, new_tags,
    buckets, out,
):  # fmt: skip
    """The tables of step t for lanes 0..active-1 through every order of ORDERS_2 (see blend). For update
    it keeps the incoming row, and per order its sum and the A and multiplier used (0: unchanged), from
    which update recomputes each order's input entry for the byte that came."""
    row = np.empty(256, dtype=np.int64)
    pairs = pair_bytes.shape[1]
    for lane in range(active):
        total = np.int64(0)
        for x in range(256):
            row[x] = rows[lane, x]
            first_inputs[lane, x] = rows[lane, x]
            total += row[x]
        for i in range(orders.shape[0]):
            order = orders[i]
            slots[lane, i] = -1
            fresh[lane, i] = False
            applied[lane, i] = 0
            if t < max(order, 1):
                continue
            input_totals[lane, i] = total
            if i < DENSE_ORDERS_2:
                slot = np.int64(grid[t - 1, lane]) if order == 1 else 256 + _slot(grid, t, lane, 2)
                slots[lane, i] = slot
                n = np.int64(dense_totals[slot])
                if n == 0:
                    continue
                top = np.int64(dense_tops[slot])
                top_count = np.int64(dense[slot, top])
            else:
                h = _sparse_hash(grid, t, lane, order, word)
                slot = ((i - DENSE_ORDERS_2) << SPARSE_BITS) + np.int64(h >> np.uint64(64 - SPARSE_BITS))
                tag = np.int64((h >> np.uint64(16)) & np.uint64(0xFFFF))
                slots[lane, i] = slot
                if tags[slot] != tag:  # another context (or none) holds the slot: this one is new
                    fresh[lane, i] = True
                    new_tags[lane, i] = tag
                    continue
                n = np.int64(sparse_totals[slot])
                if n == 0:
                    continue
                k_top = 0
                for k in range(1, pairs):
                    if pair_counts[slot, k] > pair_counts[slot, k_top]:
                        k_top = k
                top_count = np.int64(pair_counts[slot, k_top])
                top = np.int64(pair_bytes[slot, k_top])
            bucket = _bucket_2(n, top_count, row[top], total)
            buckets[lane, i] = bucket
            best = _best_candidate(costs, i, bucket)
            if best == 0:
                continue
            a = candidates[best]
            mult = (np.int64(TABLE_TOTAL - 256) << 40) // ((n + a) * total)
            applied[lane, i] = a
            mults[lane, i] = mult
            if i < DENSE_ORDERS_2:
                for x in range(256):
                    row[x] = np.int64(dense[slot, x]) * total + a * row[x]
            else:
                for x in range(256):
                    row[x] = a * row[x]
                for k in range(pairs):
                    row[pair_bytes[slot, k]] += np.int64(pair_counts[slot, k]) * total
            new_total = np.int64(0)
            for x in range(256):
                row[x] = 1 + ((row[x] * mult) >> 40)
                new_total += row[x]
            total = new_total
        for x in range(256):
            out[lane, x] = row[x]


@njit(**_opts)
def update_2(
    t, active, grid, orders, candidates, dense, dense_totals, dense_tops, pair_bytes, pair_counts,
    sparse_totals, tags, word, costs, first_inputs, input_totals, applied, mults, slots, fresh, new_tags,
    buckets, table,
):  # fmt: skip
    """After step t's bytes are known: charge the candidates (every lane), count the bytes (every lane),
    then move each lane's word on."""
    pairs = pair_bytes.shape[1]
    for lane in range(active):
        x = grid[t, lane]
        px = np.int64(first_inputs[lane, x])  # order i's input entry for x, order by order
        for i in range(orders.shape[0]):
            slot = slots[lane, i]
            if slot < 0 or fresh[lane, i]:
                continue
            if i < DENSE_ORDERS_2:
                n = np.int64(dense_totals[slot])
                cx = np.int64(dense[slot, x])
            else:
                n = np.int64(sparse_totals[slot])
                cx = np.int64(0)
                for k in range(pairs):
                    if pair_counts[slot, k] > 0 and pair_bytes[slot, k] == x:
                        cx = np.int64(pair_counts[slot, k])
            if n == 0:
                continue
            bucket = buckets[lane, i]
            total = input_totals[lane, i]
            _charge_candidates(costs, i, bucket, candidates, n, cx, px, total, table, COST_DECAY_SHIFT_2)
            if applied[lane, i] > 0:  # the blend's formula for entry x (exactly as blend_2 computed it)
                px = 1 + (((cx * total + applied[lane, i] * px) * mults[lane, i]) >> 40)
    for lane in range(active):
        x = grid[t, lane]
        for i in range(orders.shape[0]):
            slot = slots[lane, i]
            if slot < 0:
                continue
            if i < DENSE_ORDERS_2:
                dense[slot, x] += 1
                dense_totals[slot] += 1
                top = dense_tops[slot]  # kept as the lowest byte with the largest count
                if dense[slot, x] > dense[slot, top] or (dense[slot, x] == dense[slot, top] and x < top):
                    dense_tops[slot] = x
                if dense_totals[slot] >= ROW_LIMIT:
                    kept = 0
                    top = 0
                    for y in range(256):
                        dense[slot, y] >>= 1
                        kept += dense[slot, y]
                        if dense[slot, y] > dense[slot, top]:
                            top = y
                    dense_totals[slot] = kept
                    dense_tops[slot] = top
                continue
            if fresh[lane, i]:  # the new context takes the slot over, empty
                tags[slot] = new_tags[lane, i]
                for k in range(pairs):
                    pair_counts[slot, k] = 0
                sparse_totals[slot] = 0
            found = -1
            smallest = 0
            for k in range(pairs):
                if pair_counts[slot, k] > 0 and pair_bytes[slot, k] == x:
                    found = k
                    break
                if pair_counts[slot, k] < pair_counts[slot, smallest]:
                    smallest = k
            if found < 0:
                found = smallest
                sparse_totals[slot] -= pair_counts[slot, smallest]
                pair_counts[slot, smallest] = 0
                pair_bytes[slot, smallest] = x
            pair_counts[slot, found] += 1
            sparse_totals[slot] += 1
            if sparse_totals[slot] >= ROW_LIMIT:
                kept = 0
                for k in range(pairs):
                    pair_counts[slot, k] >>= 1
                    kept += pair_counts[slot, k]
                sparse_totals[slot] = kept
    for lane in range(active):
        x = grid[t, lane]
        if _is_word_byte(x):
            word[lane] = (word[lane] + np.uint64(x) + np.uint64(1)) * np.uint64(_WORD_PRIME)
        else:
            word[lane] = np.uint64(0)


class ContextCounts2:
    """The second version of the context counts (frame flag CONTEXT_COUNTS_2), same interface as
    ContextCounts. Memory: ~33 MiB dense + 30 MiB per sparse order (pages filled as contexts occur)."""

    def __init__(self, grid: np.ndarray) -> None:
        lanes = grid.shape[1]
        k = len(ORDERS_2)
        sparse_slots = (k - DENSE_ORDERS_2) << SPARSE_BITS
        self.grid = grid
        self.orders = np.array(ORDERS_2, dtype=np.int64)
        self.candidates = np.array(CANDIDATES_2, dtype=np.int64)
        self.dense = np.zeros((256 + (1 << 16), 256), dtype=np.uint16)  # order-1 rows, then order-2 rows
        self.dense_totals = np.zeros(256 + (1 << 16), dtype=np.int32)
        self.dense_tops = np.zeros(256 + (1 << 16), dtype=np.uint8)  # each row's favourite byte
        self.pair_bytes = np.zeros((sparse_slots, PAIRS), dtype=np.uint8)
        self.pair_counts = np.zeros((sparse_slots, PAIRS), dtype=np.uint16)
        self.sparse_totals = np.zeros(sparse_slots, dtype=np.int32)
        self.tags = np.zeros(sparse_slots, dtype=np.uint16)
        self.word = np.zeros(lanes, dtype=np.uint64)  # hash of each lane's current word (0: none)
        self.costs = np.zeros((k, BUCKETS_2, len(CANDIDATES_2)), dtype=np.int64)
        self.first_inputs = np.zeros((lanes, 256), dtype=np.int32)
        self.input_totals = np.zeros((lanes, k), dtype=np.int64)
        self.applied = np.zeros((lanes, k), dtype=np.int64)
        self.mults = np.zeros((lanes, k), dtype=np.int64)
        self.slots = np.full((lanes, k), -1, dtype=np.int64)
        self.fresh = np.zeros((lanes, k), dtype=np.bool_)
        self.new_tags = np.zeros((lanes, k), dtype=np.int64)
        self.buckets = np.zeros((lanes, k), dtype=np.int64)
        self.out = np.empty((lanes, 256), dtype=np.float64)

    def _state(self) -> tuple:
        return (
            self.grid, self.orders, self.candidates, self.dense, self.dense_totals, self.dense_tops,
            self.pair_bytes, self.pair_counts, self.sparse_totals, self.tags, self.word, self.costs,
            self.first_inputs, self.input_totals, self.applied, self.mults, self.slots, self.fresh,
            self.new_tags, self.buckets,
        )  # fmt: skip

    def tables(self, t: int, rows: np.ndarray, active: int) -> np.ndarray:
        """The coder's tables (float64 [active, 256], exact integers) for step t."""
        blend_2(t, rows, active, *self._state(), self.out)
        return self.out[:active]

    def update(self, t: int, active: int) -> None:
        update_2(t, active, *self._state(), LOG2_TABLE)


# numba's cache does not notice changes in compiled code called from other files: see _numba_cache.
_numba_cache.drop_stale(blend_2)
