"""shazip against zstd, xz and brotli on every file of the corpus: `pytest bench/ --benchmark-only`.

Each (file, codec) pair gives two benchmarks, compression and decompression, grouped per file. shazip is
measured once (`pedantic`, one round); the classical codecs get pytest-benchmark's usual rounds. Every
benchmark checks the round trip, and records ratio, bits per byte and MB/s in `extra_info`.
"""

from __future__ import annotations

import pytest

from bench.codecs import Codec
from bench.corpus import Case, CorpusUnavailable
from bench.harness import BenchRun, bench_run_key
from bench.report import COMPRESS, DECOMPRESS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    run = metafunc.config.stash[bench_run_key]
    try:
        cases = run.cases()
    except CorpusUnavailable as problem:
        pytest.fail(str(problem), pytrace=False)
    metafunc.parametrize("case", cases, ids=[case.name for case in cases])
    codecs = [
        pytest.param(
            codec,
            id=codec.name,
            marks=[pytest.mark.skip(reason=codec.unavailable)] if codec.unavailable else [],
        )
        for codec in run.codecs
    ]
    metafunc.parametrize("codec", codecs)


@pytest.fixture
def run(request: pytest.FixtureRequest) -> BenchRun:
    return request.config.stash[bench_run_key]


def _timer(benchmark, codec: Codec):
    """pytest-benchmark as the harness's Timer: one measured call for slow codecs, the usual rounds else."""
    if codec.slow:
        return lambda function, data: benchmark.pedantic(function, args=(data,), rounds=1, iterations=1)
    return benchmark


def _decompress_test_will_run(request: pytest.FixtureRequest) -> bool:
    """Whether this session also runs the decompression benchmark of the same file and codec."""
    wanted = request.node.nodeid.replace("::test_compress[", "::test_decompress[", 1)
    return any(item.nodeid == wanted for item in request.session.items)


def test_compress(benchmark, run: BenchRun, case: Case, codec: Codec, request: pytest.FixtureRequest) -> None:
    benchmark.group = f"{case.name} ({COMPRESS})"
    # A slow codec's output is checked by its decompression benchmark when that one runs too (it always
    # checks), rather than decompressed twice.
    verify = not (codec.slow and _decompress_test_will_run(request))
    measurement = run.measure_compress(case, codec, _timer(benchmark, codec), verify=verify)
    benchmark.extra_info.update(measurement.extra_info())


def test_decompress(benchmark, run: BenchRun, case: Case, codec: Codec) -> None:
    benchmark.group = f"{case.name} ({DECOMPRESS})"
    measurement = run.measure_decompress(case, codec, _timer(benchmark, codec))
    benchmark.extra_info.update(measurement.extra_info())
