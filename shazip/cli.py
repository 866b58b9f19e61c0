"""The `shazip` command: compress, decompress, test and info, with the conventions of zstd and xz.

Exit codes: 0 success, 1 a data or I/O error (with several files: any file failed), 2 a usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP). Messages go to stderr as
"shazip: FILE: problem", one line each, with anything read from a file made safe for a terminal.

Importing this module does not import torch (or the codec's numpy/zstandard): `shazip --help` and
`shazip info` answer quickly. torch loads only when a frame is coded with the model.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
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
from shazip.levels import DEFAULT_LEVEL, LEVELS

runtime.prepare_openmp()  # before torch can be imported

SUFFIX = ".shz"
STDIO = "-"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
NAME_MAX = 255  # bytes in a file name, where the file system does not say
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

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
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        "-T",
        help=f"CPU threads for the model (1..{runtime.MAX_THREADS}; 0: all).",
        show_default=False,
    ),
]
MemLimit = Annotated[
    str,
    typer.Option(
        "--memlimit",
        "-M",
        help="Refuse streams that need more memory than this to decode (512MiB, 2G; 0: no limit).",
    ),
]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Verbose = Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail (repeatable).")]


DEFAULT_MEMLIMIT_TEXT = f"{runtime.DEFAULT_MEMLIMIT >> 20}MiB"


@dataclass
class Settings:
    model: Path | None
    device: str
    threads: int | None
    verbosity: int  # 0 quiet, 1 normal, 2+ verbose
    force: bool = False
    memlimit: int | None = runtime.DEFAULT_MEMLIMIT


class UsageError(Exception):
    """Command-line misuse: exit code 2."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C (temporary files removed), exit 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    for other in (signal.SIGTERM, signal.SIGHUP):  # one is enough: let the cleanup finish
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def handle_termination() -> None:
    """SIGTERM and SIGHUP end the command the way Ctrl-C does; a SIGHUP that is ignored (nohup) stays so."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _terminate)


def printable(text: str) -> str:
    from shazip.format import printable as format_printable

    return format_printable(text)


def say(message: str, settings: Settings, level: int = 1) -> None:
    if settings.verbosity >= level:
        print(f"shazip: {printable(message)}", file=sys.stderr)


def fail(name: str, problem: object) -> None:
    print(f"shazip: {printable(f'{name}: {problem}')}", file=sys.stderr)


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


def is_special(path: str) -> bool:
    """True for an existing device, FIFO or socket (following links): written into, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def new_file_mode() -> int:
    """The mode a new file gets from open(): 0666 less the umask (as zstd gives a file made from stdin)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_prefix(target: Path) -> bytes:
    """`.NAME.` for the temporary file beside `target`, NAME cut so that the whole temporary name (with
    mkstemp's 8 random characters and `.tmp`) fits the file system's name limit."""
    try:
        name_max = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = NAME_MAX
    room = max(1, min(name_max, NAME_MAX) - len(b"..") - 8 - len(b".tmp"))
    return b"." + os.fsencode(target.name)[:room] + b"."


def publish(temp_name: bytes, target: Path, replace: bool) -> None:
    """Give the finished temporary file its final name. Without `replace`, the name is created exclusively
    (a hard link, or an O_EXCL create where links are not supported), so that of two writers racing for
    one name exactly one succeeds and the other reports that it exists."""
    if replace:
        os.replace(temp_name, target)
        return
    exists = FileExistsError(f"{target} already exists (use -f to overwrite)")
    try:
        os.link(temp_name, target)
    except FileExistsError:
        raise exists from None
    except OSError as e:
        if e.errno not in (
            errno.EPERM,
            errno.EOPNOTSUPP,
            errno.ENOTSUP,
            errno.EXDEV,
            errno.ENOSYS,
            errno.EMLINK,
        ):
            raise
        # No hard links on this file system (FAT, some network file systems): reserve the name, then move
        # the finished file onto the reservation.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise exists from None
        os.replace(temp_name, target)
    else:
        os.unlink(temp_name)


@contextmanager
def output_file(path: str | None, source: str | None, replace: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary stream for the output: stdout for None; an existing device or FIFO (a target given
    with -o, see check_target) is written into; else a temporary file beside `path`, given its name on
    success (replacing an existing file only with `replace`, see publish) and removed on any error,
    Ctrl-C, SIGTERM or SIGHUP. The source's mode and times are copied, as gzip and zstd do; output made
    from stdin gets 0666 less the umask."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if is_special(path):
        # no O_CREAT: if the device went away meanwhile, fail rather than leave a regular file there
        with os.fdopen(os.open(path, os.O_WRONLY), "wb") as stream:
            yield stream
        return
    target = Path(path)
    temp_name = b""
    try:
        # (signals wait while the file is made and named here, so that a handler finds temp_name set)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            handle, temp_name = tempfile.mkstemp(
                prefix=temporary_prefix(target), suffix=b".tmp", dir=os.fsencode(target.parent)
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        with os.fdopen(handle, "wb") as stream:
            yield stream
        if source is not None:
            info = os.stat(source)
            os.chmod(temp_name, info.st_mode & 0o7777)
            os.utime(temp_name, ns=(info.st_atime_ns, info.st_mtime_ns))
        else:
            os.chmod(temp_name, new_file_mode())
        publish(temp_name, target, replace)
    except BaseException:
        if temp_name:
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass
        raise


@contextmanager
def input_file(name: str) -> Iterator[BinaryIO]:
    """stdin for '-'; else the file, which must be a regular file or a FIFO (`<(command)`): a device
    would be read without end or with side effects, as zstd and xz refuse it."""
    if name == STDIO:
        yield sys.stdin.buffer
        return
    if os.path.isdir(name):
        raise IsADirectoryError("is a directory")
    readable = (stat.S_ISREG, stat.S_ISFIFO)
    if os.path.exists(name) and not any(kind(os.stat(name).st_mode) for kind in readable):
        raise ValueError("not a regular file -- ignored")
    with open(name, "rb") as stream:
        if not any(kind(os.fstat(stream.fileno()).st_mode) for kind in readable):  # (replaced meanwhile)
            raise ValueError("not a regular file -- ignored")
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
    named: bool = False  # the target was given with -o (a device or FIFO may then be written into)


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
            jobs.append(Job(source, output, named=True))
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
    """Refuse input = output, and an existing output without -f (checked again when the output gets its
    name: see publish). A device or FIFO is written into when -o names it, and never replaced by a
    file. Raises FileExistsError / ValueError."""
    if job.target is None:
        return
    if job.source != STDIO and same_file(job.source, job.target):
        raise ValueError(f"input and output are the same file ({job.target})")
    if is_special(job.target):
        if job.named:
            return
        raise ValueError(f"{job.target} exists and is not a regular file (name the output with -o)")
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
                if is_special(job.target) or not os.path.isfile(job.source):
                    say(f"{display(job.source)}: kept (the output is not a regular file)", settings)
                else:
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
    except Terminated as e:
        print(f"shazip: {signal.Signals(e.signum).name}: stopped", file=sys.stderr)
        code = 128 + e.signum
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): say nothing, as other filters do, and point stdout at
        # /dev/null so that the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    raise typer.Exit(code)


def make_settings(
    model: Path | None,
    device: str,
    threads: int | None,
    quiet: bool,
    verbose: int,
    force: bool,
    memlimit: str = DEFAULT_MEMLIMIT_TEXT,
) -> Settings:
    try:
        limit = runtime.parse_size(memlimit)
    except ValueError as e:
        raise UsageError(f"--memlimit: {e}") from None
    if threads is not None and not 0 <= threads <= runtime.MAX_THREADS:
        raise UsageError(f"--threads must be in 0..{runtime.MAX_THREADS} (0: all CPUs), got {threads}")
    return Settings(model, check_device(device), threads, 0 if quiet else 1 + verbose, force, limit)


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
    level: Annotated[
        int,
        typer.Option(
            "--level",
            "-L",
            help="1 (fast) .. 9 (strongest); also -1 .. -9. 1-3 need no model file to decode.",
        ),
    ] = DEFAULT_LEVEL,
    lanes: Annotated[
        int | None,
        typer.Option("--lanes", min=1, max=8192, help="Lane count (default: from the input size)."),
    ] = None,
    frame_size: Annotated[
        int | None,
        typer.Option(
            "--frame-size", min=1, max=64 << 20, help="Raw bytes per frame (default: the level's, 1-8 MiB)."
        ),
    ] = None,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="zstd/stored frames only: fast, and decodes without a model.")
    ] = False,
    memlimit: MemLimit = DEFAULT_MEMLIMIT_TEXT,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Compress FILEs to FILE.shz (stdin to stdout with no FILE or '-')."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, force, memlimit)
        if rm and keep:
            raise UsageError("--rm and --keep contradict each other")
        if level not in LEVELS:
            raise UsageError(f"--level must be in 1..9, got {level}")
        uses_network = LEVELS[level].uses_network and not no_model
        jobs = plan_jobs(files, output, stdout, lambda name: name + SUFFIX)
        if stdout and len(jobs) > 1:
            raise UsageError("-c with several files would put several .shz streams into one output")
        check_terminals(jobs, compressed_output=True, compressed_input=False, force=force)
        loaded: list[Any] = []  # the model, loaded once for all files

        def work(job: Job) -> None:
            from shazip.stream import StreamEncoder

            if job.target is not None and job.source.endswith(SUFFIX) and not force:
                raise ValueError(f"already has the {SUFFIX} suffix (use -f to compress it anyway)")
            if uses_network and not loaded:
                loaded.append(runtime.load_model(settings.model))
            started = time.monotonic()
            with (
                input_file(job.source) as source,
                output_file(job.target, None if job.source == STDIO else job.source, force) as sink,
                progress_bar(settings, display(job.source), input_size(job.source)) as update,
            ):
                encoder = StreamEncoder(
                    sink,
                    loaded[0] if loaded else None,
                    level=level,
                    strategy="zstd" if no_model else "auto",
                    lanes=lanes,
                    frame_size=frame_size,
                    device=settings.device,
                    threads=settings.threads,
                    progress=update,
                    memlimit=settings.memlimit,
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
            memlimit=settings.memlimit,
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
    memlimit: MemLimit = DEFAULT_MEMLIMIT_TEXT,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Decompress FILE.shz to FILE (stdin to stdout with no FILE or '-')."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, force, memlimit)
        if rm and keep:
            raise UsageError("--rm and --keep contradict each other")
        jobs = plan_jobs(files, output, stdout, _decompressed_name)
        check_terminals(jobs, compressed_output=False, compressed_input=True, force=force)

        def work(job: Job) -> None:
            with output_file(job.target, None if job.source == STDIO else job.source, force) as sink:
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
    memlimit: MemLimit = DEFAULT_MEMLIMIT_TEXT,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Decode FILE.shz files and verify every checksum; write nothing."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, False, memlimit)
        jobs = [Job(name, None) for name in files or [STDIO]]
        check_terminals(jobs, compressed_output=False, compressed_input=True, force=False)

        def work(job: Job) -> None:
            raw, coded = _decode(job, settings, None)
            say(f"{display(job.source)}: OK, {ratio_text(raw, coded)}", settings)

        return run_jobs(jobs, settings, work, remove_source=False)

    guarded(run)


class FrameList:
    """Every frame's header fields in compact arrays (about 20 bytes a frame: a stream may hold millions
    of frames, and `info -v` lists them all)."""

    def __init__(self) -> None:
        from array import array

        self.methods = array("B")
        self.versions = array("B")
        self.lanes = array("H")
        self.raw = array("I")
        self.coded = array("I")
        self.crcs = array("I")

    def add(self, frame: Any) -> None:
        self.methods.append(frame.method)
        self.versions.append(frame.version)
        self.lanes.append(frame.lanes)
        self.raw.append(frame.raw_size)
        self.coded.append(frame.coded_size)
        self.crcs.append(frame.raw_crc32)

    def __len__(self) -> int:
        return len(self.methods)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from shazip.format import Method

        for i in range(len(self)):
            yield {
                "method": Method(self.methods[i]).name.lower(),
                "version": self.versions[i],
                "raw_size": self.raw[i],
                "coded_size": self.coded[i],
                "lanes": self.lanes[i],
                "crc32": f"{self.crcs[i]:08x}",
            }


def memory_to_decode(header: Any) -> int | None:
    """What decoding the stream needs (runtime.memory_needed), where the model is known without loading
    another file: no model, or the embedded one. None otherwise."""
    if not any(header.model_id):
        return runtime.memory_needed(header).total
    try:
        model = runtime.load_model(None)
    except Exception:  # (no embedded model: the need stays unknown)
        return None
    return runtime.memory_needed(header, model).total if model.model_id == header.model_id else None


def info_record(name: str, list_frames: bool) -> dict[str, Any]:
    """What `shazip info` reports about one file, as plain data (also the --json output); with
    `list_frames`, every frame too (under "frame_list", a FrameList)."""
    from shazip.format import scan
    from shazip.frames import check_frame

    frames = FrameList()
    with input_file(name) as stream:
        info = scan(stream, (lambda index, frame: frames.add(frame)) if list_frames else None, check_frame)
    header, footer = info.header, info.footer
    coded = info.file_size
    raw = footer.total_size
    record = {
        "file": display(name),
        "format_version": header.version,
        "level": header.level or None,
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
        "memory_to_decode": memory_to_decode(header),
    }
    if list_frames:
        record["frame_list"] = frames
    return record


def print_info(record: dict[str, Any], verbose: int) -> None:
    model = record["model"]
    no_model = set(model["id"]) == {"0"}
    bpb = record["bits_per_byte"]
    ratio = record["ratio"]
    memory = record["memory_to_decode"]
    by_method = ", ".join(f"{count} {method}" for method, count in sorted(record["methods"].items()))
    methods = f" ({by_method})" if by_method else ""
    model_text = "(none: decodes without a model file)" if no_model else printable(model["name"] or "")
    lines = [
        f"{printable(record['file'])}:",
        f"  model        {model_text}",
        *([] if no_model else [f"  model id     {model['id']}"]),
        f"  format       .shz version {record['format_version']}"
        + (f", level {record['level']}" if record["level"] else "")
        + f", {record['lanes']} lanes, frames of up to {record['frame_size']} bytes",
        f"  frames       {record['frames']}{methods}",
        f"  size         {record['raw_size']} -> {record['compressed_size']} bytes",
        f"  ratio        {ratio:.3f}" if ratio else "  ratio        -",
        f"  bits/byte    {bpb:.4f}" if bpb is not None else "  bits/byte    -",
        f"  check        {record['check']['type']} {record['check']['value']}",
        f"  memory       {runtime.mib(memory)} to decode"
        if memory
        else "  memory       (depends on the model)",
    ]
    print("\n".join(lines))
    if verbose:
        print("  frame  method  lanes       raw     coded   bits/byte  crc32")
        for i, f in enumerate(record["frame_list"], 1):
            print(
                f"  {i:5d}  {f['method']:6s}  {f['lanes']:5d}  {f['raw_size']:8d}  {f['coded_size']:8d}"
                f"  {8 * f['coded_size'] / f['raw_size']:10.4f}  {f['crc32']}"
            )


def json_text(record: dict[str, Any], indent: str = "") -> Iterator[str]:
    """The record as indented JSON, in pieces: a frame list is written frame by frame, never whole."""
    frames = record.get("frame_list")
    plain = {k: v for k, v in record.items() if k != "frame_list"}
    text = json.dumps(plain, indent=2).replace("\n", "\n" + indent)
    if frames is None:
        yield text
        return
    yield text[:-2] + f',\n{indent}  "frame_list": ['  # (text ends with "\n}")
    for i, frame in enumerate(frames):
        yield ("," if i else "") + f"\n{indent}    " + json.dumps(frame)
    yield f"\n{indent}  ]\n{indent}}}"


@app.command()
def info(
    files: Annotated[list[str], typer.Argument(help=".shz files ('-': stdin).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = 0,
) -> None:
    """Show frames, sizes, ratio, bits per byte, model, check and the memory decoding needs, without
    decoding."""

    def run() -> int:
        from shazip.format import ShazipError

        status = EXIT_OK
        single = len(files) == 1
        written = 0
        for name in files:
            try:
                record = info_record(name, list_frames=verbose > 0)
            except ShazipError as e:
                fail(display(name), e)
                status = EXIT_ERROR
                continue
            except (OSError, ValueError) as e:
                fail(display(name), e.strerror if isinstance(e, OSError) and e.strerror else e)
                status = EXIT_ERROR
                continue
            if not as_json:
                print_info(record, verbose)
                continue
            # one object for one file, else a list, written as each file is read
            if not single:
                sys.stdout.write("[\n  " if written == 0 else ",\n  ")
            for piece in json_text(record, "" if single else "  "):
                sys.stdout.write(piece)
            written += 1
        if as_json:
            sys.stdout.write("\n" if single and written else ("\n]\n" if written else "[]\n"))
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


# Options whose value is the next argument (a value such as "-1" is not a level flag).
_VALUE_OPTIONS = {"-o", "--output", "--model", "--device", "-T", "--threads", "-L", "--level", "--lanes"}
_VALUE_OPTIONS |= {"--frame-size", "-M", "--memlimit"}


def level_flags(args: list[str]) -> list[str]:
    """-1 .. -9 (as zstd and xz spell levels) -> --level N; "--" ends the options."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        is_flag = len(arg) == 2 and arg[0] == "-" and arg[1] in "123456789"
        is_flag = is_flag and not (out and out[-1] in _VALUE_OPTIONS)
        out += ["--level", arg[1]] if is_flag else [arg]
    return out


def main() -> None:
    handle_termination()
    app(args=level_flags(sys.argv[1:]), prog_name="shazip")


if __name__ == "__main__":
    main()
