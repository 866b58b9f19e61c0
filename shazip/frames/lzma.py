"""Method lzma, version 1: the payload is one raw LZMA2 stream (no .xz or .lzma container) with an
8 MiB dictionary."""

from __future__ import annotations

import lzma

from shazip.format import FrameHeader, Method, StreamHeader
from shazip.frames.base import Coded, FrameJob, FrameMethod, bounded

DICT_SIZE = 8 << 20  # part of the format: the reader's dictionary
PRESET = 6  # the encoder's (binaries: slow to write, fast to read)
DECODER_BYTES = 9 << 20  # the decoder's dictionary and state


def _filters(preset: int = PRESET) -> list[dict]:
    return [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": DICT_SIZE}]


class Lzma(FrameMethod):
    method = Method.LZMA

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        payload = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_filters())
        return Coded(payload) if len(payload) < limit else None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_filters())
        return bounded(
            frame, index, lambda: decompressor.decompress(payload, max_length=frame.raw_size + 1), "lzma"
        )

    def reader_bytes(self, header: StreamHeader) -> int:
        return DECODER_BYTES


LZMA_V1 = Lzma()
