"""Method stored, version 1: the payload is the raw bytes."""

from __future__ import annotations

from shazip.format import FrameHeader, Method
from shazip.frames.base import Coded, FrameJob, FrameMethod


class Stored(FrameMethod):
    method = Method.STORED
    coded_size = "equal"

    def encode(self, raw: bytes, limit: int, job: FrameJob) -> Coded | None:
        return Coded(raw) if len(raw) < limit else None

    def decode(self, frame: FrameHeader, payload: bytes, index: int, job: FrameJob) -> bytes:
        return payload


STORED_V1 = Stored()
