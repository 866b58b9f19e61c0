"""The `shazip` command: compress, decompress, test and info, with the conventions of zstd and xz.

Exit codes: 0 success, 1 a data or I/O error (with several files: any file failed), 2 a usage error,
130 interrupted. Messages go to stderr as "shazip: FILE: problem".

Importing this module does not import torch (or the codec's numpy/zstandard): `shazip --help` and
`shazip info` answer quickly. torch loads only when a frame is coded with the model.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from shazip import __version__, runtime

runtime.prepare_openmp()  # before torch can be imported

SUFFIX = ".shz"
STDIO = "-"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="shazip: a neural file compressor (a SHA-RNN byte model driving a range coder).\n\n"
    "FILE.shz files record the model that made them; decoding needs the same model.",
)


# --- options shared by the commands -----------------------------------------------------------------

Files = Annotated[
    list[str] | None,
    typer.Argument(help="Files to process; '-' or none: stdin to stdout.", show_default=False),
]
Output = Annotated[str | None, typer.Option("-o", "--output", help="Write to this file ('-': stdout).")]
Stdout = Annotated[bool, typer.Option("-c", "--stdout", help="Write to stdout; keep the input files.")]
Force = Annotated[
    bool, typer.Option("-f", "--force", help="Overwrite existing outputs; allow a terminal as output.")
]
Remove = Annotated[bool, typer.Option("--rm", help="Delete each input file after success.")]
Keep = Annotated[bool, typer.Option("-k", "--keep", help="Keep input files (the default).")]
ModelPath = Annotated[
    Path | None, typer.Option("--model", help="Model file (default: the embedded model).", show_default=False)
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Threads = Annotated[int | None, typer.Option("--threads", "-T", min=1, help="CPU threads for the model.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Verbose = Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail (repeatable).")]


@dataclass
class Settings:
    model: Path | None
    device: str
    threads: int | None
    verbosity: int  # 0 quiet, 1 normal, 2+ verbose
    force: bool = False


class UsageError(Exception):
    """Command-line misuse: exit code 2."""


def say(message: str, settings: Settings, level: int = 1) -> None:
    if settings.verbosity >= level:
        print(f"shazip: {message}", file=sys.stderr)


def fail(name: str, problem: object) -> None:
    print(f"shazip: {name}: {problem}", file=sys.stderr)


def check_device(device: str) -> str:
    if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise UsageError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")


def display(name: str) -> str:
    return "(stdin)" if name == STDIO else name


# --- progress on a terminal ---------------------------------------------------------------------------


@contextmanager
def progress_bar(settings: Settings, label: str, total: int | None) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (bytes, bytes/s, ratio so far), only on a terminal and without -q."""
    if settings.verbosity < 1 or not sys.stderr.isatty():
        yield lambda raw, coded: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TextColumn("{task.fields[ratio]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, ratio="")

        def update(raw: int, coded: int) -> None:
            ratio = f"{8 * coded / raw:.3f} bits/byte" if raw else ""
            bar.update(task, completed=raw, ratio=ratio)

        yield update


# --- safe output: temporary file in the destination folder, renamed on success -------------------------


@contextmanager
def output_file(path: str | None, source: str | None) -> Iterator[BinaryIO]:
    """Yield a binary stream for the output: stdout for None, else a temporary file beside `path` that is
    renamed to `path` on success and removed on any error or Ctrl-C. The source's mode and times are
    copied, as gzip and zstd do."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    folder = target.parent
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
        if source is not None:
            info = os.stat(source)
            os.chmod(temp_name, info.st_mode & 0o7777)
            os.utime(temp_name, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def input_file(name: str) -> Iterator[BinaryIO]:
    if name == STDIO:
        yield sys.stdin.buffer
        return
    if os.path.isdir(name):
        raise IsADirectoryError("is a directory")
    with open(name, "rb") as stream:
        yield stream


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


@dataclass
class Job:
    source: str  # a path or "-"
    target: str | None  # a path, or None for stdout
    problem: str | None = None  # known before starting, e.g. an unknown suffix: reported as a file error


def plan_jobs(
    files: list[str] | None, output: str | None, to_stdout: bool, name_output: Callable[[str], str | None]
) -> list[Job]:
    """Map inputs to outputs with zstd's rules; raise UsageError for impossible combinations."""
    sources = files or [STDIO]
    if sources.count(STDIO) > 1:
        raise UsageError("stdin ('-') given more than once")
    if output is not None and len(sources) > 1:
        raise UsageError("-o/--output takes one input file")
    if output is not None and to_stdout and output != STDIO:
        raise UsageError("-o and -c both given")
    jobs = []
    for source in sources:
        if to_stdout or output == STDIO or (source == STDIO and output is None):
            jobs.append(Job(source, None))
        elif output is not None:
            jobs.append(Job(source, output))
        else:
            target = name_output(source)
            problem = None if target else f"unknown suffix, expected {SUFFIX} (use -o NAME or -c)"
            jobs.append(Job(source, target, problem))
    return jobs


def check_terminals(jobs: list[Job], compressed_output: bool, compressed_input: bool, force: bool) -> None:
    if compressed_output and not force and any(j.target is None for j in jobs) and sys.stdout.isatty():
        raise UsageError("refusing to write compressed data to a terminal (use -o FILE, or -f to force)")
    if compressed_input and any(j.source == STDIO for j in jobs) and sys.stdin.isatty():
        raise UsageError("refusing to read compressed data from a terminal")


def check_target(job: Job, force: bool) -> None:
    """Refuse input = output, and an existing output without -f. Raises FileExistsError / ValueError."""
    if job.target is None:
        return
    if job.source != STDIO and same_file(job.source, job.target):
        raise ValueError(f"input and output are the same file ({job.target})")
    if os.path.lexists(job.target):
        if not force:
            raise FileExistsError(f"{job.target} already exists (use -f to overwrite)")
        if os.path.isdir(job.target):
            raise IsADirectoryError(f"{job.target} is a directory")


def input_size(name: str) -> int | None:
    if name == STDIO:
        return None
    try:
        size = os.stat(name).st_size
        return size if os.path.isfile(name) else None
    except OSError:
        return None


def run_jobs(jobs: list[Job], settings: Settings, work: Callable[[Job], None], remove_source: bool) -> int:
    """Run `work` for every job; report errors per file and go on. Returns the exit code."""
    from shazip.format import ShazipError

    status = EXIT_OK
    for job in jobs:
        try:
            if job.problem:
                raise ValueError(job.problem)
            check_target(job, settings.force)
            work(job)
            if remove_source and job.source != STDIO and job.target is not None:
                os.unlink(job.source)
        except ShazipError as e:
            fail(display(job.source), e)
            status = EXIT_ERROR
        except BrokenPipeError:
            raise  # the reader of our stdout is gone: stop quietly (see guarded)
        except (OSError, ValueError) as e:
            fail(display(job.source), e.strerror if isinstance(e, OSError) and e.strerror else e)
            status = EXIT_ERROR
    return status


def ratio_text(raw: int, coded: int) -> str:
    if raw == 0:
        return f"0 -> {coded} bytes"
    return f"{raw} -> {coded} bytes ({100 * coded / raw:.2f}%, {8 * coded / raw:.3f} bits/byte)"


def guarded(run: Callable[[], int]) -> None:
    """Turn our usage errors into exit 2 and Ctrl-C into 130; raise typer.Exit with the code."""
    try:
        code = run()
    except UsageError as e:
        print(f"shazip: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("shazip: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): say nothing, as other filters do, and point stdout at
        # /dev/null so that the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    raise typer.Exit(code)


def make_settings(
    model: Path | None, device: str, threads: int | None, quiet: bool, verbose: int, force: bool
):
    return Settings(model, check_device(device), threads, 0 if quiet else 1 + verbose, force)


# --- commands -------------------------------------------------------------------------------------------


@app.command()
def compress(
    files: Files = None,
    output: Output = None,
    stdout: Stdout = False,
    force: Force = False,
    rm: Remove = False,
    keep: Keep = False,
    model: ModelPath = None,
    device: Device = "auto",
    threads: Threads = None,
    lanes: Annotated[
        int | None,
        typer.Option("--lanes", min=1, max=8192, help="Lane count (default: from the input size)."),
    ] = None,
    frame_size: Annotated[
        int | None,
        typer.Option("--frame-size", min=1, max=64 << 20, help="Raw bytes per frame (default 1 MiB)."),
    ] = None,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="zstd/stored frames only: fast, and decodes without a model.")
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Compress FILEs to FILE.shz (stdin to stdout with no FILE or '-')."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, force)
        if rm and keep:
            raise UsageError("--rm and --keep contradict each other")
        jobs = plan_jobs(files, output, stdout, lambda name: name + SUFFIX)
        if stdout and len(jobs) > 1:
            raise UsageError("-c with several files would put several .shz streams into one output")
        check_terminals(jobs, compressed_output=True, compressed_input=False, force=force)
        loaded: list[Any] = []  # the model, loaded once for all files

        def work(job: Job) -> None:
            from shazip.stream import StreamEncoder

            if job.target is not None and job.source.endswith(SUFFIX) and not force:
                raise ValueError(f"already has the {SUFFIX} suffix (use -f to compress it anyway)")
            if not no_model and not loaded:
                loaded.append(runtime.load_model(settings.model))
            started = time.monotonic()
            with (
                input_file(job.source) as source,
                output_file(job.target, None if job.source == STDIO else job.source) as sink,
                progress_bar(settings, display(job.source), input_size(job.source)) as update,
            ):
                encoder = StreamEncoder(
                    sink,
                    loaded[0] if loaded else None,
                    strategy="zstd" if no_model else "auto",
                    lanes=lanes,
                    frame_size=frame_size,
                    device=settings.device,
                    threads=settings.threads,
                    progress=update,
                )
                while chunk := source.read(1 << 20):
                    encoder.write(chunk)
                encoder.finish()
            elapsed = time.monotonic() - started
            summary = f"{display(job.source)}: {ratio_text(encoder.raw_total, encoder.coded_total)}"
            say(summary + (f" -> {job.target}" if job.target else ""), settings)
            header = encoder.header
            say(
                f"  model {header.model_name or '(none)'}, {header.lanes} lanes, "
                f"frames: {encoder.tally.describe()}, "
                f"{elapsed:.2f} s, {encoder.raw_total / max(elapsed, 1e-9) / 1024:.1f} KiB/s",
                settings,
                level=2,
            )

        return run_jobs(jobs, settings, work, rm)

    guarded(run)


def _decompressed_name(name: str) -> str | None:
    """FILE.shz -> FILE; None for other names (reported as a per-file error)."""
    if not name.endswith(SUFFIX) or len(os.path.basename(name)) == len(SUFFIX):
        return None
    return name[: -len(SUFFIX)]


def _decode(job: Job, settings: Settings, sink: BinaryIO | None) -> tuple[int, int]:
    """Decode job.source into `sink` (None: discard). Returns (raw bytes, coded bytes)."""
    from shazip.stream import StreamDecoder

    total = input_size(job.source)
    with (
        input_file(job.source) as source,
        progress_bar(settings, display(job.source), None) as update,
    ):
        decoder = StreamDecoder(
            source,
            settings.model,
            device=settings.device,
            threads=settings.threads,
            progress=update,
        )
        for raw in decoder.frames():
            if sink is not None:
                sink.write(raw)
    return decoder.raw_total, total if total is not None else decoder.coded_total


@app.command()
def decompress(
    files: Files = None,
    output: Output = None,
    stdout: Stdout = False,
    force: Force = False,
    rm: Remove = False,
    keep: Keep = False,
    model: ModelPath = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Decompress FILE.shz to FILE (stdin to stdout with no FILE or '-')."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, force)
        if rm and keep:
            raise UsageError("--rm and --keep contradict each other")
        jobs = plan_jobs(files, output, stdout, _decompressed_name)
        check_terminals(jobs, compressed_output=False, compressed_input=True, force=force)

        def work(job: Job) -> None:
            with output_file(job.target, None if job.source == STDIO else job.source) as sink:
                raw, coded = _decode(job, settings, sink)
            say(f"{display(job.source)}: {ratio_text(raw, coded)}", settings, level=2)

        return run_jobs(jobs, settings, work, rm)

    guarded(run)


@app.command()
def test(
    files: Files = None,
    model: ModelPath = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Decode FILE.shz files and verify every checksum; write nothing."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, False)
        jobs = [Job(name, None) for name in files or [STDIO]]
        check_terminals(jobs, compressed_output=False, compressed_input=True, force=False)

        def work(job: Job) -> None:
            raw, coded = _decode(job, settings, None)
            say(f"{display(job.source)}: OK, {ratio_text(raw, coded)}", settings)

        return run_jobs(jobs, settings, work, remove_source=False)

    guarded(run)


def info_record(name: str, list_frames: bool) -> dict[str, Any]:
    """What `shazip info` reports about one file, as plain data (also the --json output); with
    `list_frames`, every frame too (under "frame_list")."""
    from shazip.format import FrameHeader, scan

    frames: list[FrameHeader] = []
    with input_file(name) as stream:
        info = scan(stream, (lambda index, frame: frames.append(frame)) if list_frames else None)
    header, footer = info.header, info.footer
    coded = info.file_size
    raw = footer.total_size
    record = {
        "file": display(name),
        "format_version": header.version,
        "model": {"name": header.model_name or None, "id": header.model_id.hex()},
        "lanes": header.lanes,
        "frame_size": header.frame_size,
        "frames": info.tally.frames,
        "methods": info.method_counts(),
        "raw_size": raw,
        "compressed_size": coded,
        "ratio": raw / coded if coded else None,
        "bits_per_byte": 8 * coded / raw if raw else None,
        "check": {"type": "blake2b-128", "value": footer.content_hash.hex()},
    }
    if list_frames:
        record["frame_list"] = [
            {
                "method": f.method.name.lower(),
                "raw_size": f.raw_size,
                "coded_size": f.coded_size,
                "lanes": f.lanes,
                "crc32": f"{f.raw_crc32:08x}",
            }
            for f in frames
        ]
    return record


def print_info(record: dict[str, Any], verbose: int) -> None:
    model = record["model"]
    no_model = set(model["id"]) == {"0"}
    bpb = record["bits_per_byte"]
    ratio = record["ratio"]
    by_method = ", ".join(f"{count} {method}" for method, count in sorted(record["methods"].items()))
    methods = f" ({by_method})" if by_method else ""
    lines = [
        f"{record['file']}:",
        f"  model        {'(none: stored/zstd frames only)' if no_model else model['name']}",
        *([] if no_model else [f"  model id     {model['id']}"]),
        f"  format       .shz version {record['format_version']}, {record['lanes']} lanes, "
        f"frames of up to {record['frame_size']} bytes",
        f"  frames       {record['frames']}{methods}",
        f"  size         {record['raw_size']} -> {record['compressed_size']} bytes",
        f"  ratio        {ratio:.3f}" if ratio else "  ratio        -",
        f"  bits/byte    {bpb:.4f}" if bpb is not None else "  bits/byte    -",
        f"  check        {record['check']['type']} {record['check']['value']}",
    ]
    if verbose:
        lines.append("  frame  method  lanes       raw     coded   bits/byte  crc32")
        for i, f in enumerate(record["frame_list"], 1):
            lines.append(
                f"  {i:5d}  {f['method']:6s}  {f['lanes']:5d}  {f['raw_size']:8d}  {f['coded_size']:8d}"
                f"  {8 * f['coded_size'] / f['raw_size']:10.4f}  {f['crc32']}"
            )
    print("\n".join(lines))


@app.command()
def info(
    files: Annotated[list[str], typer.Argument(help=".shz files ('-': stdin).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = 0,
) -> None:
    """Show frames, sizes, ratio, bits per byte, model and check of .shz files, without decoding."""

    def run() -> int:
        from shazip.format import ShazipError

        status = EXIT_OK
        records = []
        for name in files:
            try:
                record = info_record(name, list_frames=verbose > 0)
            except ShazipError as e:
                fail(display(name), e)
                status = EXIT_ERROR
                continue
            except OSError as e:
                fail(display(name), e.strerror or e)
                status = EXIT_ERROR
                continue
            if as_json:
                records.append(record)
            else:
                print_info(record, verbose)
        if as_json:
            print(json.dumps(records[0] if len(files) == 1 and records else records, indent=2))
        return status

    guarded(run)


def _version(value: bool) -> None:
    if value:
        print(f"shazip {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """shazip: a neural file compressor."""


def main() -> None:
    app(prog_name="shazip")


if __name__ == "__main__":
    main()
