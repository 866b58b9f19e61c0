"""Compression levels: points on one ratio / speed / memory curve (README, "Levels", has the measurements).

A level only decides what the encoder tries for each frame and how it lays frames out; it is recorded in
the stream header for `shazip info`, and decoding never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_LEVEL, MAX_LEVEL, DEFAULT_LEVEL = 1, 9, 6


@dataclass(frozen=True)
class Level:
    """What the encoder does at one level."""

    zstd_level: int  # the zstd frame that competes on every frame (3: fast; 19: strong)
    bzip2: bool  # a bzip2 frame competes (text at several MB/s)
    lzma: bool  # an LZMA2 frame competes (binaries; slow to write, fast to read)
    cm: bool  # a CM frame competes: the mixing model alone (no network, no model file needed to decode)
    mix: bool  # a MIX frame competes: the mixing model over the network
    frame_size: int  # raw bytes per frame (the mixing model learns within a frame)
    lane_bytes: int  # MIX frames: a lane gets at least this many bytes of a frame
    small_lane_bytes: int  # ... except in inputs too small for 16 such lanes: then at least this many

    @property
    def uses_network(self) -> bool:
        return self.mix


_MIB = 1 << 20
_KIB = 1 << 10
LEVELS: dict[int, Level] = {
    1: Level(3, True, False, False, False, _MIB, 64 * _KIB, 2 * _KIB),
    2: Level(19, True, True, False, False, _MIB, 64 * _KIB, 2 * _KIB),
    3: Level(19, True, True, True, False, _MIB, 64 * _KIB, 2 * _KIB),
    4: Level(19, False, False, False, True, _MIB, 16 * _KIB, 2 * _KIB),
    5: Level(19, False, False, False, True, _MIB, 64 * _KIB, 2 * _KIB),
    6: Level(19, False, False, True, True, _MIB, 64 * _KIB, 2 * _KIB),
    7: Level(19, False, False, True, True, 2 * _MIB, 128 * _KIB, 0),
    8: Level(19, False, False, True, True, 4 * _MIB, 256 * _KIB, 0),
    9: Level(19, False, False, True, True, 8 * _MIB, 512 * _KIB, 0),
}


def level(n: int) -> Level:
    if n not in LEVELS:
        raise ValueError(f"level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {n}")
    return LEVELS[n]
