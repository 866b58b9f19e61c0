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

# The largest model a file may describe (docs/format.md, "Limits"). d_model is bounded by the engine's
# exact GEMMs (fixed_point.MAX_EXACT_FLOAT32_DEPTH); the others bound a model's size and its per-lane state.
MAX_BLOCKS = 16
MAX_BOOM_FACTOR = 16  # d_boom <= 16 * d_model: a Boom sum of that many chunks stays far inside int64
MAX_MEMORY = 1 << 16  # attention window (the ring holds memory + 1 vectors per lane)
# Quantisation parameters that describe the export and that the engine does not read.
INFORMATIONAL_QUANT = ("scheme", "calibration_bytes", "calibration_max")


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
        # The identity only says the file is self-consistent: anyone can make such a file. What the
        # engine reads must also be what it expects, or its kernels would read outside their tables.
        validate_model(self.config, self.quant, self.tensors)

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
        if not isinstance(meta, dict):
            raise ModelFileError(f"{source}: not a shazip model file (metadata is not a JSON object)")
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{source}: not a shazip model file (format={meta.get('format')!r})")
        version = meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise ModelFileError(
                f"{source}: model file format version {version} is not supported (expected {FORMAT_VERSION})"
            )
        data_len = len(raw) - 8 - header_len
        try:
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ModelFileError(f"{source}: damaged model file (tensor entries without offsets)") from None
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
        except Exception as e:  # (safetensors' own errors too: every way a crafted file can be unreadable)
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


# --- what a model file must hold -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What one tensor or quantisation parameter must be: integers in lo..hi; tensors also a shape and one
    of some dtypes."""

    lo: int
    hi: int
    shape: tuple[int, ...] = ()
    dtypes: tuple[str, ...] = ()


def check_config(config: ModelConfig) -> None:
    """The architecture's fields: integers within the limits the engine and the format allow."""
    from shazip.engine.fixed_point import MAX_EXACT_FLOAT32_DEPTH, VOCAB

    for name in ("n_blocks", "d_model", "d_boom", "memory", "attn_block", "vocab_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelFileError(f"config {name} is not an integer ({value!r})")
    limits = {
        "n_blocks": (1, MAX_BLOCKS),
        "d_model": (1, MAX_EXACT_FLOAT32_DEPTH),
        "d_boom": (config.d_model, MAX_BOOM_FACTOR * config.d_model),
        "memory": (1, MAX_MEMORY),
        "vocab_size": (VOCAB, VOCAB),
    }
    for name, (lo, hi) in limits.items():
        value = getattr(config, name)
        if not lo <= value <= hi:
            raise ModelFileError(f"config {name} = {value} outside {lo}..{hi}")


def expected_contents(config: ModelConfig) -> tuple[dict[str, Rule], dict[str, Rule]]:
    """Every tensor and every quantisation parameter the engine reads for `config`, with its rule
    (docs/engine.md has the formulas). The bounds keep every index inside its table and every product
    inside int64: GEMM sums are below 2**24 (int8 values, d_model <= 1040), LayerNorm values below 2**19,
    Q15 activations below 2**15, Boom sums below 2**28, so with multipliers below 2**32, LayerNorm gains
    below 2**40 and offsets below 2**60 no intermediate reaches 2**63."""
    from shazip.engine import fixed_point as fp

    d, boom, vocab = config.d_model, config.d_boom, config.vocab_size
    weight = ("int8",)
    wide = ("int64", "int32")
    table = ("int16", "int32")
    mult, offset = 1 << 32, 1 << 60
    shift = Rule(0, 62)
    eps = Rule(0, (1 << 40) - 1)

    def channels(n: int, bound: int) -> Rule:
        return Rule(-bound + 1, bound - 1, (n,), wide)

    tensors: dict[str, Rule] = {}
    quant: dict[str, Rule] = {}

    def ln_target(name: str) -> None:  # a LayerNorm's affine target: gain and offset per channel
        tensors[name + "_g"] = channels(d, 1 << 40)
        tensors[name + "_b"] = channels(d, offset)

    def scalar_requant(name: str) -> None:
        quant[name + "_m"] = Rule(-mult + 1, mult - 1)
        quant[name + "_b"] = Rule(-offset + 1, offset - 1)
        quant[name + "_shift"] = shift

    for i in range(config.n_blocks):
        p = f"b{i}."
        if i == 0:
            tensors[p + "start8_table"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (vocab, d), weight)
            tensors[p + "startres_table"] = Rule(-fp.RES_MAX, fp.RES_MAX, (vocab, d), ("int32",))
        else:
            quant[p + "ln_start_eps"] = eps
            ln_target(p + "start8")
            ln_target(p + "startres")
        tensors[p + "wih"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (4 * d, d), weight)
        tensors[p + "whh"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (4 * d, d), weight)
        tensors[p + "z_mx"] = channels(4 * d, mult)
        tensors[p + "z_mh"] = channels(4 * d, mult)
        tensors[p + "z_b"] = channels(4 * d, offset)
        quant[p + "z_shift"] = shift
        scalar_requant(p + "h")
        if i == config.attn_index:
            quant[p + "ln_a_eps"] = eps
            for target in ("mem8", "mid8", "attres", "q8"):
                ln_target(p + target)
            tensors[p + "wq"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (d, d), weight)
            tensors[p + "qp_m"] = channels(d, mult)
            tensors[p + "qp_b"] = channels(d, offset)
            quant[p + "qp_shift"] = shift
            quant[p + "ln_q_eps"] = eps
            scalar_requant(p + "att")
            tensors[p + "att_exp_lut"] = Rule(0, 1 << 15, (fp.ATT_EXP_SIZE,), table)
            tensors[p + "ao_m"] = channels(d, mult)
            quant[p + "ao_b"] = Rule(-offset + 1, offset - 1)
            quant[p + "ao_shift"] = shift
        quant[p + "ln_ff_eps"] = eps
        ln_target(p + "ffres")
        ln_target(p + "xff8")
        tensors[p + "wup"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (boom, d), weight)
        tensors[p + "u_m"] = channels(boom, mult)
        tensors[p + "u_b"] = channels(boom, offset)
        quant[p + "u_shift"] = shift
        tensors[p + "gelu_lut"] = Rule(-fp.BOOM_CLAMP, fp.BOOM_CLAMP, (2 * fp.GELU_RANGE + 1,), table)
        scalar_requant(p + "boom")
    scalar_requant("fin")
    tensors["wout"] = Rule(-fp.INT8_MAX, fp.INT8_MAX, (vocab, d), weight)
    tensors["logit_m"] = channels(vocab, mult)
    tensors["logit_b"] = channels(vocab, offset)
    quant["logit_shift"] = shift
    tensors["logit_exp_lut"] = Rule(0, fp.TABLE_TOTAL, (fp.LOGIT_EXP_SIZE,), table)
    tensors["sigmoid_lut"] = Rule(0, 1 << fp.ACT_Q, (2 * fp.GATE_RANGE,), table)
    tensors["tanh_lut"] = Rule(-(1 << fp.ACT_Q), 1 << fp.ACT_Q, (2 * fp.GATE_RANGE,), table)
    return tensors, quant


def validate_model(config: ModelConfig, quant: object, tensors: dict[str, np.ndarray]) -> None:
    """Raise ModelFileError (one line naming the tensor or parameter) unless the model holds exactly the
    tensors and quantisation parameters its config needs, each of the right dtype, shape and range."""
    from shazip.engine.fixed_point import QUANT_SCHEME

    check_config(config)
    if not isinstance(quant, dict):
        raise ModelFileError("quantisation parameters are not a JSON object")
    if quant.get("scheme") != QUANT_SCHEME:
        raise ModelFileError(f"quantisation scheme {quant.get('scheme')!r} is not {QUANT_SCHEME!r}")
    tensor_rules, quant_rules = expected_contents(config)
    for name in sorted(tensor_rules.keys() - tensors.keys()):
        raise ModelFileError(f"missing tensor {name!r}")
    for name in sorted(tensors.keys() - tensor_rules.keys()):
        raise ModelFileError(f"unexpected tensor {name!r} (not part of this architecture)")
    for name in sorted(quant_rules.keys() - quant.keys()):
        raise ModelFileError(f"missing quantisation parameter {name!r}")
    for name in sorted(quant.keys() - quant_rules.keys() - set(INFORMATIONAL_QUANT)):
        raise ModelFileError(f"unexpected quantisation parameter {name!r}")
    for name, rule in tensor_rules.items():
        arr = tensors[name]
        if arr.dtype.name not in rule.dtypes:
            expected = " or ".join(rule.dtypes)
            raise ModelFileError(f"tensor {name!r} has dtype {arr.dtype}, expected {expected}")
        if arr.shape != rule.shape:
            raise ModelFileError(f"tensor {name!r} has shape {arr.shape}, expected {rule.shape}")
        low, high = int(arr.min()), int(arr.max())
        if low < rule.lo or high > rule.hi:
            raise ModelFileError(f"tensor {name!r} holds values outside {rule.lo}..{rule.hi} ({low}..{high})")
    for name, rule in quant_rules.items():
        value = quant[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelFileError(f"quantisation parameter {name!r} is not an integer ({value!r})")
        if not rule.lo <= value <= rule.hi:
            raise ModelFileError(f"quantisation parameter {name!r} = {value} outside {rule.lo}..{rule.hi}")
    # Softmax totals are divisors: the largest logit and the top attention score must get a weight >= 1.
    if tensors["logit_exp_lut"][0] < 1:
        raise ModelFileError("tensor 'logit_exp_lut' starts with 0 (the top logit's weight must be >= 1)")
    p = f"b{config.attn_index}."
    top = min(max(quant[p + "att_b"] >> quant[p + "att_shift"], 0), len(tensors[p + "att_exp_lut"]) - 1)
    if tensors[p + "att_exp_lut"][top] < 1:
        raise ModelFileError(f"tensor '{p}att_exp_lut' gives the top attention score weight 0")
