"""Method cm, version 1: the mixing model alone (no network) over the frame's bytes as one sequence,
coded by the binary arithmetic coder (docs/format.md, "Mixing frames")."""

from __future__ import annotations

from shazip.format import FrameHeader, Method, StreamHeader
from shazip.frames.base import Coded, FrameJob, FrameMethod


class Cm(FrameMethod):
    method = Method.CM

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        from shazip.mixing import encode_cm

        payload = encode_cm(raw, limit=limit)
        return None if payload is None else Coded(payload)

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        from shazip.mixing import decode_cm

        return decode_cm(payload, frame.raw_size, index)

    def reader_bytes(self, header: StreamHeader) -> int:
        from shazip.mixing import state_bytes

        return state_bytes(1, header.frame_size)


CM_V1 = Cm()
