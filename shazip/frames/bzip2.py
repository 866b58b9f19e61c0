"""Method bzip2, version 1: the payload is one bzip2 stream (as libbzip2 writes it, any block size)."""

from __future__ import annotations

import bz2

from shazip.format import FrameHeader, Method
from shazip.frames.base import Coded, FrameJob, FrameMethod, bounded

BZIP2_LEVEL = 9  # the encoder's block size (900 kB): text at several MB/s


class Bzip2(FrameMethod):
    method = Method.BZIP2

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        payload = bz2.compress(raw, BZIP2_LEVEL)
        return Coded(payload) if len(payload) < limit else None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        # (never more than raw_size + 1 bytes: a crafted payload cannot expand)
        decompressor = bz2.BZ2Decompressor()
        return bounded(
            frame, index, lambda: decompressor.decompress(payload, max_length=frame.raw_size + 1), "bzip2"
        )


BZIP2_V1 = Bzip2()
