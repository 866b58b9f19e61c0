"""Method net, version 1: the network alone. Each step's tables (the engine's integer frequencies of the
active lanes) go straight to constriction's range coder, one call per step for all lanes: no per-bit
work, so the network's speed is the frame's (the fast path where the network runs on a GPU).

The coder is constriction 0.5's `stream.queue.RangeEncoder` with `Categorical(perfect=False)`; both sides
hand it the same exact float64 tables (integers, every entry >= 1, sum <= 2^24), and its quantisation is
sequential IEEE arithmetic, so encoder and decoder build the same coding model (a golden vector in the
tests guards a constriction that would quantise differently).
"""

from __future__ import annotations

import numpy as np

from shazip.format import ChecksumError, FormatError, FrameFlag, FrameHeader, Method
from shazip.frames.base import Coded, FrameJob, FrameMethod, network_of
from shazip.frames.network import PROGRESS_EVERY_STEPS, Layout, empty_grid, grid_bytes, scaled, text_grid

# The coder gives every symbol at least 1/2^24 of its range, so a symbol costs more than 2^-15.6 bits and
# a 32-bit word holds fewer than 1,459,400 symbols: a frame claiming more symbols than this many per
# payload word (plus the two words of coder state) cannot be genuine, and is refused before any model time.
SYMBOLS_PER_WORD = 1 << 21
# What the decoder appends to a payload: the encoder leaves out the last word of its state (a zero, which
# its decoder supplies), so a genuine payload makes the decoder read at most one word past its end. The
# first zero here is that word; a decoder that has also read the second has run out of payload.
_PAYLOAD_END = np.zeros(2, dtype=np.uint32)


def _coder_model():  # noqa: ANN202
    import constriction

    # perfect=False always passed explicitly: the default changed between constriction versions.
    return constriction.stream.model.Categorical(perfect=False)


def payload_bits_budget(words: int) -> float:
    """The most information (in bits, measured on the tables the decoder hands the coder) that a genuine
    payload of `words` 32-bit words can hold. The coder's range starts below 2**64 and shrinks by each
    symbol's quantised probability; it emits a word per 32 bits and one word when sealed, so the symbols'
    quantised costs add up to at most 32 * (words + 1) bits. A symbol's quantised cost is at least 95% of
    its cost on the unquantised table (tables with entries >= 1 summing to <= 2**24; the extreme, an entry
    of 1 in 2**24, costs 23 instead of 24 bits), so this budget holds every genuine payload."""
    return (32 * (words + 2) + 64) / 0.9


class Net(FrameMethod):
    method = Method.NET
    uses_network = True
    uses_lanes = True
    flags = int(FrameFlag.CRLF_AS_LF)

    def check_more(self, frame: FrameHeader, index: int) -> None:
        crlf = bool(frame.flags & FrameFlag.CRLF_AS_LF)
        if frame.coded_size % 4 or frame.coded_size < 4 * (1 + crlf):
            raise FormatError(
                f"corrupt frame {index} (net frame: coded size {frame.coded_size} not whole words)"
            )
        words = frame.coded_size // 4 - crlf  # (the CRLF prefix is one word)
        symbols = (frame.raw_size + 1) // 2 if crlf else frame.raw_size  # (CR LF -> LF at most halves it)
        if symbols > SYMBOLS_PER_WORD * (words + 2):
            raise FormatError(
                f"corrupt frame {index} (net frame: {frame.coded_size} bytes too few for {frame.raw_size})"
            )

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        import constriction

        network = network_of(job, 0)
        grid, n, flags, prefix = text_grid(raw, job.lanes)
        symbols = grid.astype(np.int32)  # the coder's dtype, converted once per frame
        family = _coder_model()
        encoder = constriction.stream.queue.RangeEncoder()
        body_limit = limit - len(prefix)

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            encoder.encode(
                symbols[t, :active], family, np.ascontiguousarray(tables[:active], dtype=np.float64)
            )
            # Frames the network is losing (binaries for a text model) stop here, not at the end.
            if t % PROGRESS_EVERY_STEPS == PROGRESS_EVERY_STEPS - 1 and 4 * encoder.num_words() >= body_limit:
                return None
            return grid[t, :active], None

        if not network.steps(grid, n, code, scaled(job.progress, len(raw), n)):
            return None
        payload = prefix + encoder.get_compressed().astype("<u4").tobytes()
        return Coded(payload, job.lanes, flags) if len(payload) < limit else None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        import constriction

        network = network_of(job, index)
        grid, n, body = empty_grid(payload, frame.raw_size, frame.lanes, frame.flags, index)
        family = _coder_model()
        words = np.frombuffer(body, dtype="<u4")
        decoder = constriction.stream.queue.RangeDecoder(np.concatenate([words, _PAYLOAD_END]))
        budget = payload_bits_budget(len(words))
        spent = 0.0

        def code(t: int, active: int, layout: Layout, tables: np.ndarray):  # noqa: ANN202
            nonlocal spent
            tables = np.ascontiguousarray(tables[:active], dtype=np.float64)
            try:
                symbols = decoder.decode(family, tables)
            except Exception as e:  # noqa: BLE001 - a corrupt payload can drive the decoder past its data
                raise ChecksumError(f"corrupt frame {index} (net payload: {e})") from None
            grid[t, :active] = symbols
            # A decoder that runs out of payload stops here, not after raw_size bytes of model time: it
            # has read past the word a genuine payload may lack, or its symbols carry more information
            # than the payload's bits can.
            spent += float(np.sum(np.log2(tables.sum(axis=1)) - np.log2(tables[np.arange(active), symbols])))
            if decoder.maybe_exhausted() or spent > budget:
                raise ChecksumError(f"corrupt frame {index} (net payload ends too soon, at step {t})")
            return grid[t, :active], None

        network.steps(grid, n, code, scaled(job.progress, frame.raw_size, n))
        return grid_bytes(grid, n, frame.raw_size, frame.flags, index)


NET_V1 = Net()
