"""The `shazip` command: compress, decompress, test and info, with the conventions of zstd and xz.

Exit codes: 0 success, 1 a data or I/O error (with several files: any file failed), 2 a usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP). Messages go to stderr as
"shazip: FILE: problem", one line each, naming the file that has the problem (the output when writing
fails), with every name made safe for a terminal.

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
from typer.core import TyperCommand, TyperGroup

from shazip import __version__, runtime
from shazip.levels import DEFAULT_LEVEL, LEVELS

runtime.prepare_openmp()  # before torch can be imported

SUFFIX = ".shz"
STDIO = "-"
STDOUT_NAME = "(stdout)"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
NAME_MAX = 255  # bytes in a file name, where the file system does not say
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class PlainHelp:
    """Help that names each value by its metavar (FILE, N, SIZE) and flags by nothing, never by a Python
    type (`<bool>`, `<list[str]>`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # (the name column shows its metavar)
        super().format_help(ctx, formatter)  # type: ignore[misc]


class Command(PlainHelp, TyperCommand):
    pass


class Group(PlainHelp, TyperGroup):
    pass


app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="shazip: a neural file compressor (a SHA-RNN byte model and a context-mixing stage with a binary "
    "arithmetic coder).\n\n"
    "FILE.shz files record the model that made them; decoding needs the same model.",
)


# --- options shared by the commands -----------------------------------------------------------------

Output = Annotated[
    str | None, typer.Option("-o", "--output", metavar="FILE", help="Write to FILE ('-': stdout).")
]
Stdout = Annotated[
    bool, typer.Option("-c", "--stdout", help="Write to stdout (several files: one after another).")
]
Force = Annotated[
    bool, typer.Option("-f", "--force", help="Overwrite existing outputs; allow a terminal as output.")
]
# One option with two names: the last of --rm and -k/--keep given wins, as in zstd.
Remove = Annotated[
    bool,
    typer.Option("--rm/--keep", " /-k", help="Delete / keep (the default) each input after success."),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        "--model", metavar="FILE", help="Model file (default: the embedded model).", show_default=False
    ),
]
Device = Annotated[str, typer.Option("--device", metavar="NAME", help="auto, cpu, cuda or cuda:N.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        "-T",
        metavar="N",
        help=f"CPU threads for the model (1..{runtime.MAX_THREADS}; 0: all).",
        show_default=False,
    ),
]
MemLimit = Annotated[
    str,
    typer.Option(
        "--memlimit",
        "-M",
        metavar="SIZE",
        help="Refuse streams needing more memory than SIZE to decode (512MiB, 2G; 0: no limit).",
    ),
]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Verbose = Annotated[
    int, typer.Option("-v", "--verbose", count=True, show_default=False, help="More detail (repeatable).")
]


def files_argument(help_text: str) -> Any:
    return typer.Argument(help=help_text, metavar="FILE", show_default=False)


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


class FileProblem(Exception):
    """A problem with one named file (an output that cannot be written, a --model file): reported as
    "shazip: NAME: problem", exit 1."""

    def __init__(self, name: str, problem: object) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@contextmanager
def writing(name: str) -> Iterator[None]:
    """An OSError raised inside (creating, writing, closing or naming the output) is about the output
    `name`, not the input. A pipe whose reader went away stays a BrokenPipeError (see guarded); errors
    without an errno carry their own message ("OUT already exists")."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        if e.errno is None:
            raise
        raise FileProblem(name, e.strerror or e) from None


class NamedSink:
    """A binary output whose write errors name it (a full disk, a closed stdout)."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with writing(self.name):
            return self.stream.write(data)

    def flush(self) -> None:
        with writing(self.name):
            self.stream.flush()


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


def open_standard_streams() -> None:
    """A standard stream closed when shazip starts (`<&-`, `>&-`) gets /dev/null opened the wrong way
    round, as xz does: reading stdin or writing stdout then fails with "Bad file descriptor" (reported in
    one line), and no file shazip opens can take the number 0, 1 or 2 and receive what was meant for a
    standard stream. A closed stderr gets a writable /dev/null: messages vanish, exit codes stay."""
    for fd, mode in ((0, os.O_WRONLY), (1, os.O_RDONLY), (2, os.O_WRONLY)):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, mode)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    # (Python leaves a stream that was closed at start-up as None)
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


def discard_stdout() -> None:
    """After stdout failed: point it at /dev/null so that the interpreter's final flush of what is still
    buffered does not complain a second time."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


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


def binary_size(n: float) -> str:
    """Bytes in binary units, the one convention of shazip's output (KiB, MiB, GiB)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def finished_bits_per_byte(coder: Any) -> str:
    """The bits per byte of the frames a StreamEncoder or StreamDecoder has finished (their raw_total and
    coded_total count only finished frames and the stream header), or nothing before the first: the bytes
    of a frame still being coded have no coded size yet, and dividing by them would show a false figure."""
    if coder is None or not coder.raw_total:
        return ""
    return f"{8 * coder.coded_total / coder.raw_total:.3f} bits/byte"


class Bar:
    """The progress callback (raw bytes so far, coded bytes so far) for a coder; `coder` is set once the
    encoder or decoder exists and gives the finished frames' figure."""

    def __init__(self, update: Callable[[int, str], None] | None = None) -> None:
        self.update = update
        self.coder: Any = None

    def __call__(self, raw: int, coded: int) -> None:
        if self.update is not None:
            self.update(raw, finished_bits_per_byte(self.coder))


@contextmanager
def progress_bar(settings: Settings, label: str, total: int | None) -> Iterator[Bar]:
    """A rich progress bar on stderr (bytes, %, bytes/s, bits per byte of the finished frames, time left
    where the total is known), only on a terminal and without -q. The label (a file name) is shown as
    plain text, escaped: never read as markup."""
    if settings.verbosity < 1 or not sys.stderr.isatty():
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{binary_size(speed)}/s", style="progress.data.speed")

    columns = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        SpeedColumn(),
        TextColumn("{task.fields[ratio]}", markup=False),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(printable(label), total=total, ratio="")
        yield Bar(lambda raw, ratio: progress.update(task, completed=raw, ratio=ratio))


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
def closing_quietly(stream: BinaryIO) -> Iterator[BinaryIO]:
    """Close `stream` after an error without a second error: its buffer may hold bytes that a full disk
    refused, and the first error is the one to report."""
    try:
        yield stream
    finally:
        if not stream.closed:
            try:
                stream.close()
            except OSError:
                pass


@contextmanager
def output_file(path: str | None, source: str | None, replace: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary stream for the output: stdout for None; an existing device or FIFO (a target given
    with -o, see check_target) is written into; else a temporary file beside `path`, given its name on
    success (replacing an existing file only with `replace`, see publish) and removed on any error,
    Ctrl-C, SIGTERM or SIGHUP. The source's mode and times are copied, as gzip and zstd do; output made
    from stdin gets 0666 less the umask. Failing to create, write or name the output raises FileProblem
    naming the output (see writing)."""
    if path is None:
        sink = NamedSink(sys.stdout.buffer, STDOUT_NAME)
        yield sink  # type: ignore[misc]
        sink.flush()
        return
    if is_special(path):
        # no O_CREAT: if the device went away meanwhile, fail rather than leave a regular file there
        with writing(path):
            handle = os.open(path, os.O_WRONLY)
        with closing_quietly(os.fdopen(handle, "wb")) as stream:
            yield NamedSink(stream, path)  # type: ignore[misc]
            with writing(path):
                stream.close()
        return
    target = Path(path)
    temp_name = b""
    try:
        # (signals wait while the file is made and named here, so that a handler finds temp_name set)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            with writing(path):
                handle, temp_name = tempfile.mkstemp(
                    prefix=temporary_prefix(target), suffix=b".tmp", dir=os.fsencode(target.parent)
                )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        with closing_quietly(os.fdopen(handle, "wb")) as stream:
            yield NamedSink(stream, path)  # type: ignore[misc]
            with writing(path):
                stream.close()  # (the last buffered bytes reach the disk here: a full disk says so)
        info = os.stat(source) if source is not None else None
        with writing(path):
            if info is not None:
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
    """Run `work` for every job; report errors per file and go on. Returns the exit code. A failing
    stdout ends the run (every later output would fail the same way; see guarded)."""
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
        except FileProblem as e:
            if e.name == STDOUT_NAME:
                raise
            fail(e.name, e.problem)
            status = EXIT_ERROR
        except BrokenPipeError:
            raise  # the reader of our stdout is gone: stop quietly (see guarded)
        except (OSError, ValueError) as e:
            fail(display(job.source), e.strerror if isinstance(e, OSError) and e.strerror else e)
            status = EXIT_ERROR
    return status


def ratio_text(raw: int, coded: int) -> str:
    """Sizes, ratio (raw / compressed, as `info` shows it) and bits per byte."""
    if raw == 0:
        return f"0 -> {coded} bytes"
    return f"{raw} -> {coded} bytes (ratio {raw / coded:.3f}, {8 * coded / raw:.3f} bits/byte)"


def guarded(run: Callable[[], int]) -> None:
    """Turn our usage errors into exit 2, file problems into 1 and Ctrl-C into 130; raise typer.Exit with
    the code."""
    try:
        code = run()
    except UsageError as e:
        print(f"shazip: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except FileProblem as e:
        fail(e.name, e.problem)
        if e.name == STDOUT_NAME:
            discard_stdout()
        code = EXIT_ERROR
    except KeyboardInterrupt:
        print("shazip: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Terminated as e:
        print(f"shazip: {signal.Signals(e.signum).name}: stopped", file=sys.stderr)
        code = 128 + e.signum
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): say nothing, as other filters do, and point stdout at
        # /dev/null so that the interpreter's final flush does not complain either.
        discard_stdout()
        code = EXIT_ERROR
    raise typer.Exit(code)


def check_model_file(path: Path | None) -> None:
    """A --model file must be there and be a model file even when no frame will need it (a level without
    the network, a file without model frames): a typo is an error, not silently ignored. A training
    checkpoint (torch's zip or pickle format) gets the command that turns it into a model file."""
    if path is None:
        return
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise FileProblem(str(path), e.strerror or e) from None
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise FileProblem(
            str(path),
            "a training checkpoint, not a model file (make one with: "
            "python -m training.export CHECKPOINT -o MODEL.safetensors)",
        )


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
    settings = Settings(model, check_device(device), threads, 0 if quiet else 1 + verbose, force, limit)
    check_model_file(model)
    return settings


def parse_frame_size(text: str | None) -> int | None:
    from shazip.format import MAX_FRAME_SIZE

    if text is None:
        return None
    try:
        size = runtime.parse_size(text)
    except ValueError:
        size = 0
    if size is None or not 1 <= size <= MAX_FRAME_SIZE:
        raise UsageError(f"--frame-size must be 1 byte .. 64MiB (1048576, 1MiB, 4M), got {text!r}")
    return size


# --- commands -------------------------------------------------------------------------------------------


@app.command(cls=Command)
def compress(
    files: Annotated[list[str] | None, files_argument("Files to compress; '-' or none: stdin.")] = None,
    output: Output = None,
    stdout: Stdout = False,
    force: Force = False,
    rm: Remove = False,
    model: ModelPath = None,
    device: Device = "auto",
    threads: Threads = None,
    level: Annotated[
        int,
        typer.Option(
            "--level",
            "-L",
            metavar="N",
            help="1 (fast) .. 9 (strongest); also -1 .. -9. 1-3 need no model file to decode.",
        ),
    ] = DEFAULT_LEVEL,
    lanes: Annotated[
        int | None,
        typer.Option("--lanes", metavar="N", help="Lane count, 1..8192 (default: from the input size)."),
    ] = None,
    frame_size: Annotated[
        str | None,
        typer.Option(
            "--frame-size", metavar="SIZE", help="Raw bytes per frame (default: the level's, 1-8 MiB)."
        ),
    ] = None,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="zstd/stored frames only: fast, and decodes without a model.")
    ] = False,
    memlimit: MemLimit = DEFAULT_MEMLIMIT_TEXT,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Compress FILEs to FILE.shz (no FILE or '-': stdin to stdout)."""

    def run() -> int:
        from shazip.format import MAX_LANES

        if level not in LEVELS:
            raise UsageError(f"level must be 1..9, got {level}")
        if lanes is not None and not 1 <= lanes <= MAX_LANES:
            raise UsageError(f"--lanes must be 1..{MAX_LANES}, got {lanes}")
        frame_bytes = parse_frame_size(frame_size)
        settings = make_settings(model, device, threads, quiet, verbose, force, memlimit)
        uses_network = LEVELS[level].uses_network and not no_model
        jobs = plan_jobs(files, output, stdout, lambda name: name + SUFFIX)
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
                progress_bar(settings, display(job.source), input_size(job.source)) as bar,
            ):
                encoder = StreamEncoder(
                    sink,
                    loaded[0] if loaded else None,
                    level=level,
                    strategy="zstd" if no_model else "auto",
                    lanes=lanes,
                    frame_size=frame_bytes,
                    device=settings.device,
                    threads=settings.threads,
                    progress=bar,
                    memlimit=settings.memlimit,
                )
                bar.coder = encoder
                while chunk := source.read(1 << 20):
                    encoder.write(chunk)
                encoder.finish()
            elapsed = time.monotonic() - started
            summary = f"{display(job.source)}: {ratio_text(encoder.raw_total, encoder.coded_total)}"
            # A filter (output to stdout) is silent unless -v, as zstd, xz and gzip are.
            say(summary + (f" -> {job.target}" if job.target else ""), settings, 1 if job.target else 2)
            header = encoder.header
            say(
                f"  model {header.model_name or '(none)'}, {header.lanes} lanes, "
                f"frames: {encoder.tally.describe()}, "
                f"{elapsed:.2f} s, {binary_size(encoder.raw_total / max(elapsed, 1e-9))}/s",
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


def scan_streams(stream: BinaryIO, on_frame: Callable[[int, Any], None] | None = None) -> Iterator[Any]:
    """Each stream's StreamInfo of a concatenation, every frame header checked by its method's rules."""
    from shazip.format import scan_streams as scan_all
    from shazip.frames import check_frame

    return scan_all(stream, on_frame, check_frame)


def raw_size_hint(name: str) -> int | None:
    """The raw size a .shz file decodes to, from its frame headers and footers (a cheap walk that seeks
    over the payloads), for the progress bar's total and time left; None for pipes and for files the walk
    finds damaged (the decoder then says what is wrong)."""
    from shazip.format import ShazipError

    if name == STDIO or input_size(name) is None:
        return None
    try:
        with open(name, "rb") as stream:
            return sum(info.raw_size for info in scan_streams(stream))
    except (ShazipError, OSError, ValueError):
        return None


def _decode(job: Job, settings: Settings, sink: BinaryIO | None) -> tuple[int, int]:
    """Decode job.source into `sink` (None: discard). Returns (raw bytes, coded bytes)."""
    from shazip.stream import StreamDecoder

    total = input_size(job.source)
    with (
        input_file(job.source) as source,
        progress_bar(settings, display(job.source), raw_size_hint(job.source)) as bar,
    ):
        decoder = StreamDecoder(
            source,
            settings.model,
            device=settings.device,
            threads=settings.threads,
            progress=bar,
            memlimit=settings.memlimit,
        )
        bar.coder = decoder
        for raw in decoder.frames():
            if sink is not None:
                sink.write(raw)
    return decoder.raw_total, total if total is not None else decoder.coded_total


@app.command(cls=Command)
def decompress(
    files: Annotated[
        list[str] | None, files_argument("Files to decompress; '-' or none: stdin to stdout.")
    ] = None,
    output: Output = None,
    stdout: Stdout = False,
    force: Force = False,
    rm: Remove = False,
    model: ModelPath = None,
    device: Device = "auto",
    threads: Threads = None,
    memlimit: MemLimit = DEFAULT_MEMLIMIT_TEXT,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Decompress FILE.shz to FILE (no FILE or '-': stdin to stdout)."""

    def run() -> int:
        settings = make_settings(model, device, threads, quiet, verbose, force, memlimit)
        jobs = plan_jobs(files, output, stdout, _decompressed_name)
        check_terminals(jobs, compressed_output=False, compressed_input=True, force=force)

        def work(job: Job) -> None:
            with output_file(job.target, None if job.source == STDIO else job.source, force) as sink:
                raw, coded = _decode(job, settings, sink)
            say(f"{display(job.source)}: {ratio_text(raw, coded)}", settings, level=2)

        return run_jobs(jobs, settings, work, rm)

    guarded(run)


@app.command(cls=Command)
def test(
    files: Annotated[list[str] | None, files_argument("Files to test; '-' or none: stdin.")] = None,
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


def sizes(raw: int, coded: int) -> dict[str, Any]:
    return {
        "raw_size": raw,
        "compressed_size": coded,
        "ratio": raw / coded if coded else None,
        "bits_per_byte": 8 * coded / raw if raw else None,
    }


def stream_record(info: Any, frames: FrameList | None) -> dict[str, Any]:
    header, footer = info.header, info.footer
    record = {
        "format_version": header.version,
        "level": header.level or None,
        "model": {"name": header.model_name or None, "id": header.model_id.hex()},
        "lanes": header.lanes,
        "frame_size": header.frame_size,
        "frames": info.tally.frames,
        "methods": info.method_counts(),
        **sizes(footer.total_size, info.file_size),
        "check": {"type": "blake2b-128", "value": footer.content_hash.hex()},
        "memory_to_decode": memory_to_decode(header),
    }
    if frames is not None:
        record["frame_list"] = frames
    return record


def info_record(name: str, list_frames: bool) -> dict[str, Any]:
    """What `shazip info` reports about one file, as plain data (also the --json output); with
    `list_frames`, every frame too (under "frame_list", a FrameList). A file of several streams one after
    another (`cat a.shz b.shz`) gets its totals and every stream's record under "stream_list"."""
    streams: list[dict[str, Any]] = []
    with input_file(name) as stream:
        frames = [FrameList()]  # (the current stream's)

        def on_frame(index: int, frame: Any) -> None:
            frames[0].add(frame)

        for info in scan_streams(stream, on_frame if list_frames else None):
            streams.append(stream_record(info, frames[0] if list_frames else None))
            frames[0] = FrameList()
    if len(streams) == 1:
        return {"file": display(name), "streams": 1, **streams[0]}
    methods: dict[str, int] = {}
    for record in streams:
        for method, count in record["methods"].items():
            methods[method] = methods.get(method, 0) + count
    needs = [record["memory_to_decode"] for record in streams]
    return {
        "file": display(name),
        "streams": len(streams),
        "frames": sum(record["frames"] for record in streams),
        "methods": methods,
        **sizes(sum(r["raw_size"] for r in streams), sum(r["compressed_size"] for r in streams)),
        "memory_to_decode": None if None in needs else max(needs),
        "stream_list": streams,
    }


def ratio_lines(record: dict[str, Any]) -> list[str]:
    ratio, bpb = record["ratio"], record["bits_per_byte"]
    return [
        f"  size         {record['raw_size']} -> {record['compressed_size']} bytes",
        f"  ratio        {ratio:.3f}" if ratio else "  ratio        -",
        f"  bits/byte    {bpb:.3f}" if bpb is not None else "  bits/byte    -",
    ]


def print_stream(title: str, record: dict[str, Any], verbose: int) -> None:
    model = record["model"]
    no_model = set(model["id"]) == {"0"}
    memory = record["memory_to_decode"]
    by_method = ", ".join(f"{count} {method}" for method, count in sorted(record["methods"].items()))
    methods = f" ({by_method})" if by_method else ""
    model_text = "(none: decodes without a model file)" if no_model else printable(model["name"] or "")
    lines = [
        f"{printable(title)}:",
        f"  model        {model_text}",
        *([] if no_model else [f"  model id     {model['id']}"]),
        f"  format       .shz version {record['format_version']}"
        + (f", level {record['level']}" if record["level"] else "")
        + f", {record['lanes']} lanes, frames of up to {record['frame_size']} bytes",
        f"  frames       {record['frames']}{methods}",
        *ratio_lines(record),
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
                f"  {8 * f['coded_size'] / f['raw_size']:10.3f}  {f['crc32']}"
            )


def print_info(record: dict[str, Any], verbose: int) -> None:
    if "stream_list" not in record:
        print_stream(record["file"], record, verbose)
        return
    count = record["streams"]
    for i, stream in enumerate(record["stream_list"], 1):
        print_stream(f"{record['file']}, stream {i} of {count}", stream, verbose)
    print(f"{printable(record['file'])}: {count} streams, {record['frames']} frames")
    print("\n".join(ratio_lines(record)))


def json_text(record: dict[str, Any], indent: str = "") -> Iterator[str]:
    """The record as indented JSON, in pieces: a frame list is written frame by frame, never whole."""
    frames = record.get("frame_list")
    streams = record.get("stream_list")
    plain = {k: v for k, v in record.items() if k not in ("frame_list", "stream_list")}
    text = json.dumps(plain, indent=2).replace("\n", "\n" + indent)
    if frames is None and streams is None:
        yield text
        return
    yield text.rstrip()[:-1].rstrip()  # (without its closing brace: the list goes inside)
    if frames is not None:
        yield f',\n{indent}  "frame_list": ['
        for i, frame in enumerate(frames):
            yield ("," if i else "") + f"\n{indent}    " + json.dumps(frame)
        yield f"\n{indent}  ]"
    if streams is not None:
        yield f',\n{indent}  "stream_list": ['
        for i, stream in enumerate(streams):
            yield ("," if i else "") + f"\n{indent}    "
            yield from json_text(stream, indent + "    ")
        yield f"\n{indent}  ]"
    yield f"\n{indent}}}"


@app.command(cls=Command)
def info(
    files: Annotated[list[str], files_argument(".shz files ('-': stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = 0,
) -> None:
    """Show a .shz file's model, level, frames, sizes, ratio, check and memory need, without decoding."""

    def run() -> int:
        from shazip.format import ShazipError

        status = EXIT_OK
        single = len(files) == 1
        written = 0
        with writing(STDOUT_NAME):
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
            sys.stdout.flush()
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


# Short options whose value follows (in the same argument, `-T4`, or the next one); every other short
# option is a flag.
_VALUE_SHORT = set("oTLM")
_VALUE_OPTIONS = {"-o", "--output", "--model", "--device", "-T", "--threads", "-L", "--level", "--lanes"}
_VALUE_OPTIONS |= {"--frame-size", "-M", "--memlimit"}
# zstd's and xz's operation flags, before the command: `shazip -dc a.shz` is `shazip decompress -c a.shz`.
_MODES = {"z": "compress", "d": "decompress", "t": "test", "l": "info"}
_LONG_MODES = {"--compress": "compress", "--decompress": "decompress", "--test": "test", "--list": "info"}


def _split_cluster(arg: str) -> list[str]:
    """One short-option cluster with digits in it (`-9f`, `-kf1`, `-19`) as separate options: flags stay
    flags, each run of digits is a level (`-19`: level 19, refused as outside 1..9), and a value option
    takes the rest of the cluster as its value (`-9T2`: level 9, two threads)."""
    out: list[str] = []
    body = arg[1:]
    i = 0
    while i < len(body):
        c = body[i]
        if c.isdigit():
            j = i
            while j < len(body) and body[j].isdigit():
                j += 1
            out += ["--level", body[i:j]]
            i = j
        elif c in _VALUE_SHORT:
            out.append("-" + body[i:])
            break
        else:
            out.append("-" + c)
            i += 1
    return out


def _is_cluster(arg: str) -> bool:
    return len(arg) >= 2 and arg[0] == "-" and arg[1] != "-"


def _leading_mode(args: list[str]) -> list[str]:
    """zstd/xz operation flags (-z, -d, -t, -l and their long names) among the options before the first
    operand, when no command is named: the command, then the rest with those letters taken out."""
    if not args or not args[0].startswith("-") or args[0] in ("-h", "--help", "-V", "--version"):
        return args
    modes: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        arg = args[i]
        if arg in _LONG_MODES:
            modes.append(_LONG_MODES[arg])
        elif _is_cluster(arg) and arg[1] not in _VALUE_SHORT:
            kept = ""
            for j, c in enumerate(arg[1:], 1):
                if c in _VALUE_SHORT:  # (the rest is its value)
                    kept += arg[j:]
                    break
                if c in _MODES:
                    modes.append(_MODES[c])
                else:
                    kept += c
            if kept:
                rest.append("-" + kept)
        else:
            rest.append(arg)
        if arg in _VALUE_OPTIONS or (_is_cluster(arg) and arg[-1] in _VALUE_SHORT):
            i += 1
            if i < len(args):
                rest.append(args[i])
        i += 1
    if not modes:
        return args
    if len(set(modes)) > 1:
        raise UsageError(f"options for different operations given together ({', '.join(sorted(set(modes)))})")
    return [modes[0], *rest, *args[i:]]


def expand_short_flags(args: list[str]) -> list[str]:
    """Spell options as zstd and xz do: -1 .. -9 for --level N, clusters with a level in them (`-9f`,
    `-kf1`), and -z/-d/-t/-l before the files instead of a command; "--" ends the options."""
    args = _leading_mode(args)
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        after_value_option = bool(out) and out[-1] in _VALUE_OPTIONS
        if _is_cluster(arg) and any(c.isdigit() for c in arg) and arg[1] not in _VALUE_SHORT:
            if not after_value_option:
                out += _split_cluster(arg)
                continue
        out.append(arg)
    return out


level_flags = expand_short_flags  # (the older name)


def usage_line(error: Any) -> str:
    """A command-line parsing error in one line, with where to look: "shazip: No such option: -x (see
    'shazip compress --help')"."""
    ctx = getattr(error, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"shazip: {error.format_message()}{where}"


def finish_stdout(code: int) -> int:
    """Flush stdout before exit: a full disk or a closed stdout behind `--help`, `--version` or `info`
    is one line and exit 1, not the interpreter's traceback; a reader gone away stays silent."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
        return code or EXIT_ERROR
    except OSError as e:
        fail(STDOUT_NAME, e.strerror or e)
        discard_stdout()
        return code or EXIT_ERROR
    return code


def main() -> None:
    open_standard_streams()
    handle_termination()
    try:
        code = app(args=expand_short_flags(sys.argv[1:]), prog_name="shazip", standalone_mode=False)
    except UsageError as e:  # (from expand_short_flags)
        print(f"shazip: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_ERROR
    except BrokenPipeError:
        discard_stdout()
        code = EXIT_ERROR
    except OSError as e:  # (writing --help or a usage message: the commands report their own errors)
        fail(STDOUT_NAME, e.strerror or e)
        discard_stdout()
        code = EXIT_ERROR
    except Exception as e:
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        # click's errors: a missing argument, an unknown option, a bad value; "no arguments" is the help
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # type: ignore[attr-defined]
        else:
            print(usage_line(e), file=sys.stderr)
        code = e.exit_code  # type: ignore[attr-defined]
    sys.exit(finish_stdout(code if isinstance(code, int) else EXIT_OK))


if __name__ == "__main__":
    main()
