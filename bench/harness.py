"""The benchmark's working parts, independent of pytest so the smoke test can drive them directly.

`BenchRun` holds one run's settings, corpus, compressed outputs and measurements. `measure_compress` and
`measure_decompress` time one codec on one file through a `Timer` (pytest-benchmark's fixture in
bench/test_codecs.py, a single call in tests/test_bench_smoke.py), verify the round trip and record the
figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from bench.codecs import (
    Codec,
    ShazipSettings,
    Stopwatch,
    all_codecs,
    check_restored,
    codec_versions,
    verify_round_trip,
)
from bench.corpus import (
    QUICK_MAX_BYTES,
    Case,
    CorpusUnavailable,
    cases_in_folder,
    locate_corpus,
    quick_selection,
)
from bench.report import COMPRESS, DECOMPRESS, Measurement, Summary

# Runs `function(data)` one or more times and returns its result.
Timer = Callable[[Callable[[bytes], bytes], bytes], bytes]

# Slow codecs are warmed up on this many bytes before their first measurement, so that one-time costs
# (importing torch, loading the model) are not charged to the first file.
WARM_UP_BYTES = 256


def call_once(function: Callable[[bytes], bytes], data: bytes) -> bytes:
    """A Timer that runs the function once (the Stopwatch around it does the timing)."""
    return function(data)


@dataclass
class BenchRun:
    full: bool = False
    max_bytes: int | None = QUICK_MAX_BYTES  # None or 0: whole files
    codecs: list[Codec] = field(default_factory=all_codecs)
    shazip: ShazipSettings = field(default_factory=ShazipSettings)
    measurements: list[Measurement] = field(default_factory=list)
    corpus_description: str | None = None
    corpus_problem: str | None = None
    _cases: list[Case] | None = None
    _data: dict[str, bytes] = field(default_factory=dict)
    _compressed: dict[tuple[str, str], bytes] = field(default_factory=dict)
    _warmed_up: set[str] = field(default_factory=set)

    @classmethod
    def from_options(
        cls, full: bool, max_bytes: int | None, shazip: ShazipSettings | None = None
    ) -> BenchRun:
        if max_bytes is None:
            max_bytes = 0 if full else QUICK_MAX_BYTES
        shazip = shazip or ShazipSettings()
        return cls(full=full, max_bytes=max_bytes or None, codecs=all_codecs(shazip), shazip=shazip)

    # ---- corpus --------------------------------------------------------------------------------

    def cases(self, environ: Mapping[str, str] = os.environ) -> list[Case]:
        """The files to benchmark (resolved once; raises CorpusUnavailable with advice)."""
        if self._cases is None:
            try:
                folder, self.corpus_description = locate_corpus(environ)
                every_file = cases_in_folder(folder)
            except CorpusUnavailable as problem:
                self.corpus_problem = str(problem)
                raise
            self._cases = every_file if self.full else quick_selection(every_file)
        return self._cases

    def data(self, case: Case) -> bytes:
        if case.name not in self._data:
            self._data[case.name] = case.read(self.max_bytes)
        return self._data[case.name]

    # ---- measuring ------------------------------------------------------------------------------

    def measure_compress(self, case: Case, codec: Codec, timer: Timer, verify: bool = True) -> Measurement:
        """Time `codec.compress` on the case's bytes; verify the round trip unless told that the
        decompression benchmark of the same case will (it always checks), to spare a slow codec one run."""
        data = self.data(case)
        self._warm_up(codec, data)
        stopwatch = Stopwatch(codec.compress)
        compressed = timer(stopwatch, data)
        if verify:
            verify_round_trip(codec, data, compressed)
        self._compressed[case.name, codec.name] = compressed
        return self._record(case, codec, COMPRESS, data, compressed, stopwatch.best_seconds)

    def measure_decompress(self, case: Case, codec: Codec, timer: Timer) -> Measurement:
        """Time `codec.decompress` on the case's compressed bytes (made now, unmeasured, if the
        compression benchmark did not run) and check that it gives back the original bytes."""
        data = self.data(case)
        self._warm_up(codec, data)
        compressed = self._compressed.get((case.name, codec.name))
        if compressed is None:
            compressed = codec.compress(data)
        stopwatch = Stopwatch(codec.decompress)
        restored = timer(stopwatch, compressed)
        check_restored(codec.name, data, restored)
        return self._record(case, codec, DECOMPRESS, data, compressed, stopwatch.best_seconds)

    def _warm_up(self, codec: Codec, data: bytes) -> None:
        if codec.slow and codec.name not in self._warmed_up:
            codec.decompress(codec.compress(data[:WARM_UP_BYTES]))
            self._warmed_up.add(codec.name)

    def _record(
        self, case: Case, codec: Codec, direction: str, data: bytes, compressed: bytes, seconds: float
    ) -> Measurement:
        methods = codec.frame_methods(compressed) if codec.frame_methods else None
        measurement = Measurement(
            case.name, codec.name, direction, len(data), len(compressed), seconds, methods
        )
        self.measurements.append(measurement)
        return measurement

    # ---- summary --------------------------------------------------------------------------------

    def settings(self) -> dict[str, object]:
        return {
            "corpus": self.corpus_description or "?",
            "mode": "full" if self.full else "quick",
            "max_bytes_per_file": self.max_bytes,  # None: whole files
            "shazip": self.shazip.describe(),
            "versions": codec_versions(),
        }

    def summary(self) -> Summary:
        notes = [f"{c.name} skipped: {c.unavailable}" for c in self.codecs if c.unavailable]
        return Summary.from_measurements(
            self.measurements, [c.name for c in self.codecs], notes=notes, settings=self.settings()
        )


bench_run_key = pytest.StashKey[BenchRun]()
