"""Method zstd, version 1: the payload is one zstd frame (RFC 8878) of any level."""

from __future__ import annotations

import functools

import zstandard

from shazip.format import ChecksumError, FrameHeader, Method
from shazip.frames.base import Coded, FrameJob, FrameMethod, bounded


@functools.lru_cache(maxsize=8)
def _compressor(level: int) -> zstandard.ZstdCompressor:
    # (no content size, no checksum: the frame header holds both)
    return zstandard.ZstdCompressor(level=level, write_content_size=False, write_checksum=False)


class Zstd(FrameMethod):
    method = Method.ZSTD

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        payload = _compressor(job.zstd_level).compress(raw)
        return Coded(payload) if len(payload) < limit else None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        # A zstd frame may declare its content size, and python-zstandard allocates what it declares
        # (max_output_size only applies when it does not): it must be raw_size.
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise ChecksumError(f"corrupt frame {index} (zstd: {e})") from None
        if declared not in (-1, frame.raw_size):
            raise ChecksumError(f"corrupt frame {index} (zstd frame of {declared} bytes)")
        decompressor = zstandard.ZstdDecompressor()
        return bounded(
            frame, index, lambda: decompressor.decompress(payload, max_output_size=frame.raw_size), "zstd"
        )


ZSTD_V1 = Zstd()
