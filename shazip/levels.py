"""Compression levels: points on one ratio / speed / memory curve (README, "Levels", has the measurements),
as one strategy table (the model: zstd's `clevels.h`), and the encoder's policies that go with it.

A level only decides what the encoder tries for each frame and how it lays frames out; it is recorded in
the stream header for `shazip info`, and decoding never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_LEVEL, MAX_LEVEL, DEFAULT_LEVEL = 1, 9, 6


@dataclass(frozen=True)
class Level:
    """What the encoder does at one level."""

    candidates: tuple[str, ...]  # the frame methods (shazip.frames) that compete, in this order
    zstd_level: int  # the level of the zstd candidate (3: fast; 19: strong)
    frame_size: int  # raw bytes per frame (the mixing model learns within a frame)
    lane_bytes: int  # frames with the network: a lane gets at least this many bytes of a frame
    small_lane_bytes: int  # ... except in inputs too small for 16 such lanes: then at least this many

    @property
    def uses_network(self) -> bool:
        return any(name in NETWORK_METHODS for name in self.candidates)


NETWORK_METHODS = ("mix", "net")  # the candidates that need the model file (shazip.frames: uses_network)

_MIB = 1 << 20
_KIB = 1 << 10
# level: candidates, zstd level, frame size, lane bytes, small-input lane bytes
LEVELS: dict[int, Level] = {
    1: Level(("zstd", "bzip2"), 3, _MIB, 64 * _KIB, 2 * _KIB),
    2: Level(("zstd", "bzip2", "lzma"), 19, _MIB, 64 * _KIB, 2 * _KIB),
    3: Level(("zstd", "bzip2", "lzma", "cm"), 19, _MIB, 64 * _KIB, 2 * _KIB),
    4: Level(("zstd", "mix"), 19, _MIB, 16 * _KIB, 2 * _KIB),
    5: Level(("zstd", "mix"), 19, _MIB, 64 * _KIB, 2 * _KIB),
    6: Level(("zstd", "cm", "mix"), 19, _MIB, 64 * _KIB, 2 * _KIB),
    7: Level(("zstd", "cm", "mix"), 19, 2 * _MIB, 128 * _KIB, 0),
    8: Level(("zstd", "cm", "mix"), 19, 4 * _MIB, 256 * _KIB, 0),
    9: Level(("zstd", "cm", "mix"), 19, 8 * _MIB, 512 * _KIB, 0),
}

# Strategies narrow or replace a level's candidates: "auto" (the level's), "cm" (no network: the file
# decodes without a model file), "zstd" (stored or zstd only), "model" (zstd or mix, without the cheap
# test: the network wherever it wins; for tests and measurements), "net" (zstd or the network alone).
STRATEGIES = ("auto", "cm", "zstd", "model", "net")

# --- the encoder's policies -------------------------------------------------------------------------
# Every frame is first tried with zstd at this level: the cheap test, and the frame of data nothing else
# would shrink.
QUICK_ZSTD_LEVEL = 3
# If the quick zstd saves less than this fraction of a frame (already compressed or random data), nothing
# slower runs. Small frames always try the level's candidates: zstd's own overhead makes it a poor judge
# there, and the models cost little on them.
INCOMPRESSIBLE_SAVING = 0.03
CHEAP_TEST_MIN_BYTES = 4096
# A cm frame under this many bits per byte (logs, tables, markup, records) leaves the network little to
# add: the encoder then does not spend the network's time on a mix frame.
MIX_AFTER_CM_BITS_PER_BYTE = 1.0

# Lanes of frames with the network: few for small inputs (each lane keeps lane_bytes of context), many for
# big ones; on a GPU more lanes, and bigger frames so each lane's run stays long.
MAX_LANES_CPU = 64
MAX_LANES_GPU = 256
SPEED_LANES = 16  # small inputs get up to this many lanes at the levels with small_lane_bytes
GPU_FRAME_SIZE = 4 << 20


def level(n: int) -> Level:
    if n not in LEVELS:
        raise ValueError(f"level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {n}")
    return LEVELS[n]


def candidates(preset: Level, strategy: str) -> tuple[str, ...]:
    """The methods that compete for a frame at this level and strategy (beyond stored and the quick zstd)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        return preset.candidates
    if strategy == "cm":
        kept = tuple(name for name in preset.candidates if name not in NETWORK_METHODS)
        return kept if "cm" in kept else (*kept, "cm")
    if strategy == "zstd":
        return ()
    return ("zstd", "mix") if strategy == "model" else ("zstd", "net")


def uses_network(preset: Level, strategy: str) -> bool:
    """Whether a stream of this level and strategy may hold frames that need the model file."""
    return any(name in NETWORK_METHODS for name in candidates(preset, strategy))


def choose_lanes(first_frame_bytes: int, max_lanes: int, lane_bytes: int, small_lane_bytes: int = 0) -> int:
    """Few lanes for small inputs (each lane keeps >= lane_bytes of context), max_lanes for big ones; with
    small_lane_bytes, inputs too small for 16 such lanes get up to 16 lanes of at least small_lane_bytes
    (a step of the network costs about as much for 16 lanes as for one: fewer steps, a little less
    context per lane).

    Decided from the first frame: a full first frame means a big input."""
    lanes = first_frame_bytes // lane_bytes
    if small_lane_bytes:
        lanes = max(lanes, min(SPEED_LANES, first_frame_bytes // small_lane_bytes))
    return max(1, min(max_lanes, lanes))
