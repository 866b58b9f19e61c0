"""shazip: a neural file compressor (a SHA-RNN byte model inside a context-mixing stage).

    import shazip
    packed = shazip.compress(data)            # the embedded default model
    assert shazip.decompress(packed) == data
    with shazip.open("file.shz", "wb") as f:  # streaming; also "rb", "wt", "rt"
        f.write(data)

Importing shazip is cheap: the API (and numpy, zstandard) loads on first use, torch only when a frame is
coded with the model.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    *("compress", "decompress", "open", "frame_parameters", "info"),
    *("Compressor", "Decompressor", "ShazipReader", "ShazipWriter"),
}
_FORMAT = {
    "ShazipError",
    "FormatError",
    "ChecksumError",
    "TruncatedError",
    "ModelMismatchError",
    "ModelError",
    "MemoryLimitError",
    "StreamHeader",
    "StreamInfo",
    "FrameHeader",
    "Footer",
    "Method",
}

__all__ = sorted(_API | _FORMAT | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from shazip import api

        return getattr(api, name)
    if name in _FORMAT:
        from shazip import format as container

        return getattr(container, name)
    raise AttributeError(f"module 'shazip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
