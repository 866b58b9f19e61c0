"""pytest plumbing for `pytest bench/ --benchmark-only`: options, the run's shared state, the summary.

Options (see docs/benchmarks.md): --shazip-full, --shazip-max-bytes, --shazip-model, --shazip-device,
--shazip-threads, --shazip-report-md, --shazip-report-json, --shazip-plot. The summary tables are printed
at the end of the session and written where the options say.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.codecs import ShazipSettings
from bench.harness import BenchRun, bench_run_key


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shazip-bench", "shazip benchmark (bench/, see docs/benchmarks.md)")
    group.addoption(
        "--shazip-full",
        action="store_true",
        help="every file of the corpus, whole (default: a quick selection of files, truncated)",
    )
    group.addoption(
        "--shazip-max-bytes",
        type=int,
        default=None,
        metavar="N",
        help="benchmark each file's first N bytes (0: whole files; default 65536, or 0 with --shazip-full)",
    )
    group.addoption(
        "--shazip-model",
        type=Path,
        metavar="PATH",
        help="benchmark shazip with this model file (default: the embedded default model)",
    )
    group.addoption(
        "--shazip-device", metavar="DEVICE", help="shazip's device: cpu, cuda, ... (default: auto)"
    )
    group.addoption(
        "--shazip-threads", type=int, metavar="N", help="shazip's thread count (default: its own)"
    )
    group.addoption(
        "--shazip-levels",
        metavar="N,N,...",
        default="",
        help="also measure shazip at these levels (codecs shazip-N), beside the default level",
    )
    group.addoption("--shazip-report-md", type=Path, metavar="PATH", help="write the summary as Markdown")
    group.addoption("--shazip-report-json", type=Path, metavar="PATH", help="write the summary as JSON")
    group.addoption(
        "--shazip-plot",
        type=Path,
        metavar="PATH",
        help="write a PNG plot of bits per byte vs MB/s (matplotlib)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[bench_run_key] = BenchRun.from_options(
        full=config.getoption("--shazip-full"),
        max_bytes=config.getoption("--shazip-max-bytes"),
        shazip=ShazipSettings(
            model=config.getoption("--shazip-model"),
            device=config.getoption("--shazip-device"),
            threads=config.getoption("--shazip-threads"),
            extra_levels=parse_levels(config.getoption("--shazip-levels")),
        ),
    )


def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise pytest.UsageError(f"--shazip-levels: expected levels such as 1,3; got {text!r}") from None
    if any(not 1 <= level <= 9 for level in levels):
        raise pytest.UsageError(f"--shazip-levels: levels are 1..9, got {text!r}")
    return levels


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables, so the summary is the last thing shown
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(bench_run_key, None)
    if run is None or not (run.measurements or run.corpus_problem):
        return
    terminalreporter.section("shazip benchmark summary")
    if run.corpus_problem:
        terminalreporter.write_line(run.corpus_problem, red=True)
        return
    summary = run.summary()
    terminalreporter.write_line(summary.markdown())
    outputs = (
        ("--shazip-report-md", summary.write_markdown),
        ("--shazip-report-json", summary.write_json),
        ("--shazip-plot", summary.write_plot),
    )
    for option, write in outputs:
        path = config.getoption(option)
        if path is None:
            continue
        try:
            write(path)
            terminalreporter.write_line(f"{option}: wrote {path}")
        except (ImportError, OSError) as error:
            terminalreporter.write_line(f"{option}: could not write {path}: {error}", red=True)
