"""Summary of a benchmark run: tables per file with a total row, as text/Markdown, JSON and a PNG plot.

The benchmark records one `Measurement` per (file, codec, direction); `Summary` turns them into
bits per byte, MB/s (10^6 bytes of original data per second, both directions) and shazip's size
relative to the best classical codec on the same bytes.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.codecs import SHAZIP

COMPRESS = "compress"
DECOMPRESS = "decompress"
DIRECTIONS = (COMPRESS, DECOMPRESS)


@dataclass(frozen=True)
class Measurement:
    """One benchmark: a codec in one direction on one file's bytes (verified round trip)."""

    file: str
    codec: str
    direction: str  # COMPRESS or DECOMPRESS
    original_bytes: int
    compressed_bytes: int
    seconds: float  # best round
    frame_methods: dict[str, int] | None = None  # raw bytes per frame method (shazip), see Codec

    @property
    def bits_per_byte(self) -> float:
        return 8.0 * self.compressed_bytes / self.original_bytes if self.original_bytes else 0.0

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.compressed_bytes if self.compressed_bytes else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.original_bytes / self.seconds / 1e6 if self.seconds > 0 else float("inf")

    def extra_info(self) -> dict[str, float | int | str]:
        """What goes into pytest-benchmark's `extra_info` (and its JSON output)."""
        return {
            "file": self.file,
            "codec": self.codec,
            "direction": self.direction,
            "original_bytes": self.original_bytes,
            "compressed_bytes": self.compressed_bytes,
            "ratio": round(self.ratio, 4),
            "bits_per_byte": round(self.bits_per_byte, 4),
            "mb_per_s": round(self.mb_per_s, 4),
            **({"frame_methods": self.frame_methods} if self.frame_methods is not None else {}),
        }


@dataclass
class CodecTotals:
    """One codec's figures on one file (or on all files together)."""

    original_bytes: int = 0
    compressed_bytes: int | None = None
    compress_seconds: float | None = None
    decompress_seconds: float | None = None
    frame_methods: dict[str, int] | None = None

    @property
    def bits_per_byte(self) -> float | None:
        if self.compressed_bytes is None or not self.original_bytes:
            return None
        return 8.0 * self.compressed_bytes / self.original_bytes

    def mb_per_s(self, direction: str) -> float | None:
        seconds = self.compress_seconds if direction == COMPRESS else self.decompress_seconds
        if seconds is None or seconds <= 0:
            return None
        return self.original_bytes / seconds / 1e6


@dataclass
class Summary:
    """All measurements of a run, indexed by file and codec, with the totals over all files."""

    codecs: list[str]
    files: dict[str, int] = field(default_factory=dict)  # file -> original bytes
    cells: dict[tuple[str, str], CodecTotals] = field(default_factory=dict)  # (file, codec) -> figures
    notes: list[str] = field(default_factory=list)  # e.g. skipped codecs and why
    settings: dict[str, object] = field(default_factory=dict)  # corpus, mode, truncation...

    @classmethod
    def from_measurements(
        cls,
        measurements: Iterable[Measurement],
        codec_order: list[str],
        notes: list[str] | None = None,
        settings: dict[str, object] | None = None,
    ) -> Summary:
        measurements = list(measurements)
        present = {m.codec for m in measurements}
        codecs = [c for c in codec_order if c in present] + sorted(present - set(codec_order))
        summary = cls(codecs=codecs, notes=list(notes or []), settings=dict(settings or {}))
        for m in measurements:
            summary.files.setdefault(m.file, m.original_bytes)
            cell = summary.cells.setdefault((m.file, m.codec), CodecTotals(original_bytes=m.original_bytes))
            cell.compressed_bytes = m.compressed_bytes
            if m.frame_methods is not None:
                cell.frame_methods = dict(m.frame_methods)
            if m.direction == COMPRESS:
                cell.compress_seconds = m.seconds
            else:
                cell.decompress_seconds = m.seconds
        return summary

    def cell(self, file: str, codec: str) -> CodecTotals | None:
        return self.cells.get((file, codec))

    def total(self, codec: str) -> CodecTotals | None:
        """The codec over all files; None unless it has a compressed size for every file.

        A speed total needs that direction measured on every file, otherwise it stays None.
        """
        cells = [self.cells.get((f, codec)) for f in self.files]
        if not cells or any(c is None or c.compressed_bytes is None for c in cells):
            return None
        total = CodecTotals(
            original_bytes=sum(c.original_bytes for c in cells),
            compressed_bytes=sum(c.compressed_bytes for c in cells),
        )
        if all(c.compress_seconds is not None for c in cells):
            total.compress_seconds = sum(c.compress_seconds for c in cells)
        if all(c.decompress_seconds is not None for c in cells):
            total.decompress_seconds = sum(c.decompress_seconds for c in cells)
        if all(c.frame_methods is not None for c in cells):
            total.frame_methods = {}
            for c in cells:
                for method, raw_bytes in c.frame_methods.items():
                    total.frame_methods[method] = total.frame_methods.get(method, 0) + raw_bytes
        return total

    def shazip_vs_best_classical(self, file: str | None) -> tuple[float, str] | None:
        """shazip's compressed size / the smallest classical one (file None: all files), and that codec."""
        pick = self.total if file is None else (lambda codec: self.cell(file, codec))
        shazip = pick(SHAZIP)
        if shazip is None or shazip.compressed_bytes is None:
            return None
        classical = [(pick(c), c) for c in self.codecs if not c.startswith(SHAZIP)]
        sizes = [(t.compressed_bytes, c) for t, c in classical if t is not None and t.compressed_bytes]
        if not sizes:
            return None
        best_size, best_codec = min(sizes)
        return shazip.compressed_bytes / best_size, best_codec

    # ---- outputs -------------------------------------------------------------------------------

    def _table(
        self, title: str, value: Callable[[CodecTotals], float | None], fmt: str, show_relative: bool = False
    ) -> list[str]:
        header = ["file", "bytes", *self.codecs]
        show_relative = show_relative and SHAZIP in self.codecs and len(self.codecs) > 1
        if show_relative:
            header.append("shazip / best classical")
        lines = [f"**{title}**", "", _md_row(header), _md_row(["---"] + ["---:"] * (len(header) - 1))]
        labels: list[str | None] = [*self.files, None]
        for label in labels:
            original = sum(self.files.values()) if label is None else self.files[label]
            figures = [self.total(c) if label is None else self.cell(label, c) for c in self.codecs]
            row = ["**total**" if label is None else label, f"{original:,}"]
            row += [_fmt(value(f), fmt) if f is not None else "–" for f in figures]
            if show_relative:
                relative = self.shazip_vs_best_classical(label)
                row.append(f"{relative[0]:.3f} ({relative[1]})" if relative else "–")
            lines.append(_md_row(row))
        return lines

    def _frame_method_lines(self) -> list[str]:
        """How much each codec with mixed frames (shazip) coded with each method, over all files."""
        lines = []
        for codec in self.codecs:
            total = self.total(codec)
            if total is None or not total.frame_methods:
                continue
            parts = ", ".join(f"{method} {raw:,}" for method, raw in sorted(total.frame_methods.items()))
            lines.append(f"{codec} frames, bytes coded by each method over all files: {parts}")
        return ["", *lines] if lines else []

    def markdown(self) -> str:
        """Three tables (bits per byte, compression MB/s, decompression MB/s), a row per file and a total."""
        lines = ["# shazip benchmark", ""]
        if self.settings:
            lines += [*(f"- {k}: {_describe(v)}" for k, v in self.settings.items()), ""]
        lines += self._table(
            "bits per byte (lower is better)", lambda t: t.bits_per_byte, ".3f", show_relative=True
        )
        lines += self._frame_method_lines()
        lines.append("")
        lines += self._table("compression MB/s", lambda t: t.mb_per_s(COMPRESS), "speed")
        lines.append("")
        lines += self._table("decompression MB/s", lambda t: t.mb_per_s(DECOMPRESS), "speed")
        lines += [
            "",
            "MB/s: 10^6 bytes of original data per second (best round). "
            "shazip / best classical: shazip's compressed size divided by the smallest classical one.",
        ]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        def figures(t: CodecTotals | None) -> dict | None:
            if t is None:
                return None
            return {
                **asdict(t),
                "bits_per_byte": t.bits_per_byte,
                "compress_mb_per_s": t.mb_per_s(COMPRESS),
                "decompress_mb_per_s": t.mb_per_s(DECOMPRESS),
            }

        def relative(file: str | None) -> dict | None:
            found = self.shazip_vs_best_classical(file)
            return {"ratio": found[0], "best_classical": found[1]} if found else None

        return {
            "settings": self.settings,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "codecs": self.codecs,
            "files": [
                {
                    "file": f,
                    "bytes": n,
                    "codecs": {c: figures(self.cell(f, c)) for c in self.codecs},
                    "shazip_vs_best_classical": relative(f),
                }
                for f, n in self.files.items()
            ],
            "total": {
                "bytes": sum(self.files.values()),
                "codecs": {c: figures(self.total(c)) for c in self.codecs},
                "shazip_vs_best_classical": relative(None),
            },
            "notes": self.notes,
        }

    def write_markdown(self, path: Path) -> None:
        _prepare(path).write_text(self.markdown(), encoding="utf-8")

    def write_json(self, path: Path) -> None:
        _prepare(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    def write_plot(self, path: Path) -> None:
        """PNG: total bits per byte against MB/s per codec (filled: compression, open: decompression).

        Needs matplotlib (`pip install 'shazip[plot]'`); raises ImportError with that hint otherwise.
        """
        try:
            import matplotlib
        except ImportError as error:
            raise ImportError("the plot needs matplotlib: pip install 'shazip[plot]'") from error
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
        colours = plt.get_cmap("tab10")
        for index, codec in enumerate(self.codecs):
            total = self.total(codec)
            if total is None or total.bits_per_byte is None:
                continue
            colour = colours(index % 10)
            speeds = [total.mb_per_s(COMPRESS), total.mb_per_s(DECOMPRESS)]
            points = [(s, total.bits_per_byte) for s in speeds if s is not None]
            if not points:
                continue
            # One codec: a line from its compression speed (filled) to its decompression speed (open).
            axes.plot(*zip(*points, strict=True), color=colour, linewidth=0.8, alpha=0.6)
            for (speed, bpb), fill in zip(points, (colour, "white"), strict=False):
                axes.scatter([speed], [bpb], s=60, facecolors=fill, edgecolors=colour, zorder=3)
            # Alternate the label above/below so codecs with nearly equal figures stay readable.
            axes.annotate(
                codec,
                points[0],
                textcoords="offset points",
                xytext=(-4, 8 if index % 2 == 0 else -14),
                ha="right",
                fontsize=8,
                color=colour,
            )
        axes.set_xscale("log")
        axes.set_xlabel("MB/s (filled: compression, open: decompression)")
        axes.set_ylabel("bits per byte (all files)")
        axes.set_title(
            f"shazip vs classical codecs, {len(self.files)} file(s), {sum(self.files.values()):,} bytes"
        )
        axes.grid(True, which="both", alpha=0.3)
        figure.tight_layout()
        figure.savefig(_prepare(path), format="png")
        plt.close(figure)


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "whole files" if value is None else str(value)


def _prepare(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None, fmt: str) -> str:
    """`fmt`: a format spec, or "speed": three significant digits, no exponent (1,234 / 12.3 / 0.0123)."""
    if value is None:
        return "–"
    if fmt != "speed":
        return format(value, fmt)
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
