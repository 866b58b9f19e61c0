"""Writes the golden corpus (tests/data/golden/): a small .shz file of one frame for every frame method
and version this shazip reads, made by that method's encoder from a fixed input, and a manifest. An
existing case is never overwritten: a method whose output changes gets a new version and a new case, and
the old files stay for its decoder."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from shazip.format import Footer, FrameHeader, StreamHeader, assemble, content_hasher, crc32, frame_headers
from shazip.frames import METHODS, FrameJob, FrameMethod
from shazip.frames.network import NetworkLanes
from shazip.runtime import load_model

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
FIXTURE = Path(__file__).resolve().parent / "data" / "fixture.safetensors"
SAMPLE = Path(__file__).resolve().parent / "data" / "sample.txt"


def pseudo_random(n: int, seed: int) -> bytes:
    """Bytes from an integer hash (no library generator whose sequence could change)."""
    out = bytearray()
    x = seed
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(x >> 56)
    return bytes(out)


def inputs() -> dict[str, bytes]:
    text = SAMPLE.read_bytes()
    records = b"".join(b"%06d,%s,%d\n" % (i, b"abcdefgh"[i % 8 :][:3], i * 37 % 1000) for i in range(600))
    binary = bytes(b for i in range(6000) for b in ((i * 7) & 0xFF, 0, (i >> 3) & 0x0F, 0x90))
    return {
        "text": text[:6000],
        "text_crlf": text[6000:11000].replace(b"\n", b"\r\n"),
        "records": records,
        "binary": binary,
        "random": pseudo_random(5000, 7),
    }


# case name -> (method label, input, lanes): one frame of that method, as its encoder writes it
CASES: dict[str, tuple[str, str, int]] = {
    "stored-v1-random": ("stored v1", "random", 0),
    "zstd-v1-records": ("zstd v1", "records", 0),
    "bzip2-v1-text": ("bzip2 v1", "text", 0),
    "lzma-v1-binary": ("lzma v1", "binary", 0),
    "cm-v1-text": ("cm v1", "text", 0),
    "cm-v1-records": ("cm v1", "records", 0),
    "mix-v1-text": ("mix v1", "text", 3),
    "mix-v1-crlf": ("mix v1", "text_crlf", 2),
    "net-v1-text": ("net v1", "text", 4),
    "net-v1-crlf": ("net v1", "text_crlf", 1),
}
ZSTD_LEVEL = 19  # the zstd case's level (the encoder's strong zstd)


def method_of(label: str) -> FrameMethod:
    found = [m for m in METHODS.values() if m.label == label]
    if not found:
        raise KeyError(f"this shazip has no frame method {label!r}")
    return found[0]


def encode_case(name: str) -> tuple[bytes, FrameHeader, bytes, StreamHeader]:
    """(raw input, frame header, payload, stream header) of a case as this shazip's method writes it."""
    label, source, lanes = CASES[name]
    raw = inputs()[source]
    method = method_of(label)
    model = load_model(str(FIXTURE)) if method.uses_network else None
    network = NetworkLanes(model, lanes, "cpu", 1) if model is not None else None
    coded = method.encode(raw, 1 << 30, FrameJob(ZSTD_LEVEL, network, lanes))
    assert coded is not None, name
    frame = FrameHeader(method.method, len(raw), len(coded.payload), crc32(raw), coded.lanes,
                        crc32(coded.payload), coded.flags, method.version)  # fmt: skip
    model_id, model_name = (model.model_id, model.name) if model is not None else (bytes(32), "")
    header = StreamHeader(max(1, lanes), len(raw), model_id, model_name)
    return raw, frame, coded.payload, header


def golden_stream(name: str) -> tuple[bytes, bytes]:
    """(raw input, the whole .shz stream of the case)."""
    raw, frame, payload, header = encode_case(name)
    hasher = content_hasher()
    hasher.update(raw)
    return raw, assemble(header, [(frame, payload)], Footer(1, len(raw), hasher.digest()))


def frame_labels(packed: bytes) -> list[str]:
    """The methods and versions of a stream's frames: ["cm v1", ...]."""
    return sorted({frame.label for frame in frame_headers(io.BytesIO(packed))})


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    manifest_path = GOLDEN / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in CASES:
        if name in manifest:
            continue
        raw, packed = golden_stream(name)
        (GOLDEN / f"{name}.shz").write_bytes(packed)
        label, source, lanes = CASES[name]
        manifest[name] = {
            "method": label,
            "input": source,
            "lanes": lanes,
            "model": "fixture" if method_of(label).uses_network else None,
            "raw_size": len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "sha256": hashlib.sha256(packed).hexdigest(),
        }
        print(f"{name}: {len(raw)} -> {len(packed)} bytes")
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
