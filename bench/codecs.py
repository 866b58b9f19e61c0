"""The codecs the benchmark compares: shazip and the classical compressors at the settings people quote.

Every codec is a pair of one-shot functions `bytes -> bytes`. Codecs that cannot run here (shazip's API
not written yet, brotli not installed) stay in the list with the reason, so the benchmark reports them
as skipped instead of silently leaving them out.
"""

from __future__ import annotations

import lzma
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

SHAZIP = "shazip"


@dataclass(frozen=True)
class Codec:
    """One compressor at one setting."""

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    # Slow codecs (shazip) are measured once (pytest-benchmark `pedantic`, one round, one iteration).
    slow: bool = False
    # Why this codec cannot run here; None when it can.
    unavailable: str | None = None
    # For codecs whose output mixes methods (shazip: model, zstd and stored frames): compressed output ->
    # raw bytes coded by each method, so the report can say how much the model actually coded.
    frame_methods: Callable[[bytes], dict[str, int]] | None = None

    @property
    def classical(self) -> bool:
        return not self.name.startswith(SHAZIP)


class RoundTripError(AssertionError):
    """A codec's output did not decompress to its input."""


def _zstd_codec(level: int, long_mode: bool = False) -> Codec:
    def compress(data: bytes) -> bytes:
        # `zstd --long` (27-bit window, long-distance matching); the source size lets zstd shrink the
        # window for small inputs, as the command line does.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, source_size=len(data), enable_ldm=long_mode
        )
        return zstandard.ZstdCompressor(compression_params=params).compress(data)

    def decompress(data: bytes) -> bytes:
        return zstandard.ZstdDecompressor(max_window_size=2**27).decompress(data)

    name = f"zstd-{level}" + ("-long" if long_mode else "")
    return Codec(name, compress, decompress)


def _xz_codec() -> Codec:
    def compress(data: bytes) -> bytes:
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)

    return Codec("xz-9e", compress, lzma.decompress)


def _brotli_codec() -> Codec:
    try:
        import brotli
    except ImportError:
        return Codec(
            "brotli-11", _missing, _missing, unavailable="brotli is not installed (pip install brotli)"
        )

    def compress(data: bytes) -> bytes:
        # lgwin=24: the brotli command line's default window (the library's default is 22).
        return brotli.compress(data, quality=11, lgwin=24)

    return Codec("brotli-11", compress, brotli.decompress)


@dataclass(frozen=True)
class ShazipSettings:
    """How the benchmark runs shazip; None everywhere: shazip's own defaults."""

    model: Path | None = None  # a model file; None: the embedded default model
    device: str | None = None  # "cpu", "cuda", ...; None: shazip's "auto"
    threads: int | None = None
    # Levels to measure beside the default one (each is a codec of its own, "shazip-N").
    extra_levels: tuple[int, ...] = ()

    def describe(self) -> str:
        extra = f", also levels {', '.join(map(str, self.extra_levels))}" if self.extra_levels else ""
        return (
            f"model {self.model or 'embedded default'}, device {self.device or 'auto'}, "
            f"threads {self.threads or 'default'}{extra}"
        )


def _shazip_codec(settings: ShazipSettings, level: int | None = None) -> Codec:
    """shazip through its Python API, with the model, device and threads of `settings`; level None: the
    default level, named plain "shazip" (the codec the report compares with the classical ones)."""
    import shazip

    model = settings.model
    name = SHAZIP if level is None else f"{SHAZIP}-{level}"
    options: dict = {
        key: value for key, value in (("device", settings.device), ("threads", settings.threads)) if value
    }
    level_option = {} if level is None else {"level": level}

    def unavailable(reason: str) -> Codec:
        return Codec(name, _missing, _missing, slow=True, unavailable=reason)

    if model is None:
        from shazip.modelfile import default_model_path

        if not default_model_path().is_file():
            return unavailable(
                f"no embedded default model ({default_model_path()} is missing); "
                "give a model file with --shazip-model PATH"
            )
    elif not Path(model).is_file():
        return unavailable(f"model file {model} not found")

    def compress(data: bytes) -> bytes:
        return shazip.compress(data, model, **options, **level_option)

    def decompress(data: bytes) -> bytes:
        return shazip.decompress(data, model, **options)

    def frame_methods(compressed: bytes) -> dict[str, int]:
        return dict(shazip.info(compressed).tally.raw_by_method)

    return Codec(name, compress, decompress, slow=True, frame_methods=frame_methods)


def _missing(data: bytes) -> bytes:
    raise RuntimeError("this codec is not available")


def all_codecs(shazip_settings: ShazipSettings | None = None) -> list[Codec]:
    """The codecs in report order: classical ones from fastest to strongest, then shazip (extra levels
    first, the default level last)."""
    shazip_settings = shazip_settings or ShazipSettings()
    return [
        _zstd_codec(3),
        _zstd_codec(19),
        _zstd_codec(22, long_mode=True),
        _xz_codec(),
        _brotli_codec(),
        *(_shazip_codec(shazip_settings, level) for level in shazip_settings.extra_levels),
        _shazip_codec(shazip_settings),
    ]


def verify_round_trip(codec: Codec, original: bytes, compressed: bytes) -> None:
    """Decompress `compressed` and fail unless it gives back `original` exactly."""
    check_restored(codec.name, original, codec.decompress(compressed))


def check_restored(codec_name: str, original: bytes, restored: bytes) -> None:
    """Fail unless a decompressor's output `restored` is exactly `original`."""
    if restored != original:
        raise RoundTripError(_difference(codec_name, original, restored))


def _difference(codec_name: str, original: bytes, restored: bytes) -> str:
    common = min(len(original), len(restored))
    first = next((i for i in range(common) if original[i] != restored[i]), common)
    return (
        f"{codec_name}: round trip failed: {len(original)} bytes in, {len(restored)} bytes back, "
        f"first difference at byte {first}"
    )


class Stopwatch:
    """Wraps a function and keeps the shortest duration of its calls (the benchmark's best round)."""

    def __init__(self, function: Callable[[bytes], bytes]):
        self._function = function
        self.best_seconds = float("inf")
        self.calls = 0

    def __call__(self, data: bytes) -> bytes:
        start = time.perf_counter()
        result = self._function(data)
        self.best_seconds = min(self.best_seconds, time.perf_counter() - start)
        self.calls += 1
        return result


def codec_versions() -> dict[str, str]:
    """Versions of the libraries behind the codecs, for the report."""
    import shazip

    libzstd = ".".join(str(part) for part in zstandard.ZSTD_VERSION)
    versions = {"shazip": shazip.__version__, "zstandard": f"{zstandard.__version__} (libzstd {libzstd})"}
    try:
        import brotli

        versions["brotli"] = brotli.__version__
    except ImportError:
        pass
    return versions
