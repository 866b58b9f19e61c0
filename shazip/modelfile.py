"""The integer model file: one safetensors file with integer tensors and JSON metadata.

No torch here: the CLI reads model files (name, identity, card) without importing torch.

Metadata keys: `format` (= "shazip-model"), `format_version`, `config` (JSON of `ModelConfig`), `quant`
(JSON of the quantisation parameters the engine needs), `name`, `card` (JSON model card) and `model_id`
(hex sha256). The identity covers config + quant + every tensor's name, dtype, shape and bytes in sorted
name order; the card is left out so that it can be rewritten without changing the identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shazip.config import ModelConfig

FORMAT = "shazip-model"
FORMAT_VERSION = 1
# Only integer tensors: a model file never carries a float that the engine could evaluate differently.
ALLOWED_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8)


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, damaged, truncated, foreign or of an unknown version."""


def default_model_path() -> Path:
    return Path(__file__).resolve().parent / "models" / "default.safetensors"


def compute_model_id(config_json: str, quant_json: str, tensors: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    h.update(b"shazip-model-id\0")
    for part in (config_json, quant_json):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        header = json.dumps([name, arr.dtype.str, list(arr.shape)]).encode("utf-8")
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(arr.nbytes.to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.digest()


def _canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class ModelFile:
    """A verified integer model: config, quantisation parameters, integer tensors, card and identity."""

    config: ModelConfig
    quant: dict
    tensors: dict[str, np.ndarray]
    name: str = "unnamed"
    card: dict = field(default_factory=dict)
    model_id: bytes = b""

    def __post_init__(self) -> None:
        for key, arr in self.tensors.items():
            if arr.dtype.type not in ALLOWED_DTYPES:
                raise ModelFileError(f"tensor {key!r} has dtype {arr.dtype}; model files hold integers only")
        expected = self.compute_id()
        if self.model_id and self.model_id != expected:
            raise ModelFileError(
                f"model identity mismatch: file says {self.model_id.hex()}, content hashes to "
                f"{expected.hex()} (the file is damaged or was edited)"
            )
        self.model_id = expected

    def compute_id(self) -> bytes:
        return compute_model_id(
            _canonical_json(self.config.to_dict()), _canonical_json(self.quant), self.tensors
        )

    @property
    def model_id_hex(self) -> str:
        return self.model_id.hex()

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "config": _canonical_json(self.config.to_dict()),
            "quant": _canonical_json(self.quant),
            "name": self.name,
            "card": json.dumps(self.card, sort_keys=True),
            "model_id": self.model_id.hex(),
        }
        tensors = {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.chmod(0o644)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ModelFile:
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        raw = path.read_bytes()
        return cls.from_bytes(raw, source=str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "<bytes>") -> ModelFile:
        from safetensors.numpy import load as st_load

        # safetensors layout: u64 header length, JSON header, tensor data. Check it ourselves first so
        # truncation and foreign files get a clear message instead of a parser error.
        if len(raw) < 8:
            raise ModelFileError(f"{source}: not a shazip model file (too short: {len(raw)} bytes)")
        header_len = int.from_bytes(raw[:8], "little")
        if header_len > len(raw) - 8 or header_len > 100_000_000:
            raise ModelFileError(f"{source}: not a shazip model file, or truncated (bad safetensors header)")
        try:
            header = json.loads(raw[8 : 8 + header_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{source}: not a shazip model file (unreadable header: {e})") from None
        if not isinstance(header, dict):
            raise ModelFileError(f"{source}: not a shazip model file (header is not a JSON object)")
        meta = header.get("__metadata__") or {}
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{source}: not a shazip model file (format={meta.get('format')!r})")
        version = meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise ModelFileError(
                f"{source}: model file format version {version} is not supported (expected {FORMAT_VERSION})"
            )
        data_len = len(raw) - 8 - header_len
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if ends and max(ends) > data_len:
            raise ModelFileError(
                f"{source}: model file is truncated ({data_len} data bytes, {max(ends)} expected)"
            )
        try:
            tensors = st_load(raw)
            config = ModelConfig.from_dict(json.loads(meta["config"]))
            quant = json.loads(meta["quant"])
            card = json.loads(meta.get("card", "{}"))
            model_id = bytes.fromhex(meta["model_id"])
        except (KeyError, ValueError, TypeError) as e:
            raise ModelFileError(f"{source}: damaged model file ({type(e).__name__}: {e})") from None
        try:
            return cls(
                config=config,
                quant=quant,
                tensors=dict(tensors),
                name=meta.get("name", "unnamed"),
                card=card,
                model_id=model_id,
            )
        except ModelFileError as e:
            raise ModelFileError(f"{source}: {e}") from None

    def with_card(self, card: dict) -> ModelFile:
        """The same model (same identity) with another model card."""
        return ModelFile(
            config=self.config, quant=self.quant, tensors=self.tensors, name=self.name, card=card
        )
