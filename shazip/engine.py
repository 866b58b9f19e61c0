"""The integer-exact SHA-RNN inference engine shared by compression and decompression.

Why integers: DESIGN.md section 2. Every value that influences a frequency table is an integer computed
with integer operations whose result does not depend on summation order, thread count, batch grouping or
device:

* GEMMs multiply int8-valued operands. The torch reference holds them in float32 (K <= 1024, so every
  partial sum is an integer below 2**24 and exact) or, for the attention's weighted sum of values, in
  float64 (partial sums below 2**53); results are converted to int64 right away. The numba path sums
  int16 x int16 products in int32 (exact: |sum| <= K * 127**2 < 2**31; the attention's weighted sum only
  when the window allows, else int64).
* Everything after a GEMM is integer fixed point: requantisation `(v * M + B) >> S` (int64, B holds the
  round-half-up constant), sigmoid / tanh / GELU / exp through lookup tables stored in the model file.
* LayerNorm: integer sums, `V = d*sum(x^2) - sum(x)^2 + E` (E: eps in integer units), `floor(sqrt(V))`
  computed as the IEEE float64 square root of the exactly representable integer V (V < 2**53), which is
  correctly rounded on every IEEE platform (CPU and CUDA), then floored; `2**40 // sqrt` by integer
  division; the normalised value in Q12.
* Softmax: max-subtract on integer scores, exp table, weights summed as integers, integer division.
* The output table: exp table of (logit - max), scaled to TABLE_TOTAL with every entry >= 1; the rounding
  remainder goes to the first most probable symbol.

Two implementations of the same formulas: this torch module (the reference; runs on CPU and CUDA) and
the numba kernels in `shazip._kernels` (fast CPU path: GEMMs by an int16 multiply-add-pairs kernel on
packed weights, AVX2 `vpmaddwd` where available; everything else fused per block stage; a whole step of
a lane group in one compiled call that releases the GIL, `_kernels.step_group`; with several threads,
groups of lanes stepped on separate threads). Tests prove them bit-identical.

Speed notes: block 0's input GEMM depends only on the input byte, so it is computed once for all 256
bytes at load time. Weights: int8, symmetric, one scale per output channel; activations entering a GEMM:
int8 with per-tensor scales calibrated at export; residual-stream values: ints with a per-site scale
(calibrated max -> 4096, clamp 32767); LSTM cell state Q15 in int32.

Attention memory: each lane keeps a ring buffer of the last `memory + 1` int8 memory vectors (the
attention block's LayerNorm'd input, the current position included) and a count of positions written.
The key and value gates are per-channel constants, so instead of storing gated keys and values the key
gate is folded into the query and the value gate is applied to the attention output: one int8 tensor per
position instead of two.
"""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from shazip.modelfile import ModelFile

if TYPE_CHECKING:
    from shazip.crew import LaneCrew

QUANT_SCHEME = "shazip-int8-v1"  # the formulas below; export writes it into the model file
START_BYTE = 10  # a fresh lane behaves as if it had just consumed a newline from the zero state
TABLE_TOTAL = 1 << 20  # every frequency table sums to exactly this (constriction allows up to 2**24)

# Fixed-point conventions shared with training.quantise (which builds the tables for them).
GATE_Q = 10  # LSTM gate pre-activations: Q10 ...
GATE_RANGE = 16 << GATE_Q  # ... clamped to [-16, 16): sigmoid/tanh tables have 2 * GATE_RANGE entries
ACT_Q = 15  # sigmoid/tanh outputs and the LSTM cell state: Q15
CELL_MAX = 1 << 28  # cell state clamp (8192.0; tanh is saturated long before)
NORM_Q = 12  # LayerNorm normalised values: Q12
LN_INV_BITS = 40  # LayerNorm reciprocal: 2**40 // sqrt(V)
AFFINE_SHIFT = 32  # LayerNorm affine targets: (n * g + b) >> 32
RES_MAX = 32767  # residual-stream values (int) are clamped to +-RES_MAX; calibrated max maps to 4096
INT8_MAX = 127
GELU_RANGE = 1 << 14  # GELU table covers integer inputs [-GELU_RANGE, GELU_RANGE]; identity above
BOOM_CLAMP = 1 << 24
ATT_EXP_Q = 8  # attention score differences are looked up in Q8 nats ...
ATT_EXP_SIZE = 16 << ATT_EXP_Q  # ... up to 16 nats; weights in Q15
ATT_AVG_Q = 8  # attention average of int8 memory vectors, Q8
LOGIT_Q = 10  # logits in Q10 nats
LOGIT_EXP_SIZE = 20 << LOGIT_Q  # exp table over 20 nats of (max - logit), values in Q20
SPLIT_MIN_LANES = 16  # from here on, several threads step separate groups of lanes (see _step_numba) ...
GROUP_LANES = 8  # ... of about this many lanes (2 threads, interleaved in one process: 8 vs 16 lanes
# per group x1.02-1.10 at 64 and 256 lanes, 4 or 6 alike, 12 slower: a group's scratch and its lanes'
# state stay in cache, and the int8 weights it streams once per group cost little)
GEMM_WEIGHTS = ("wih", "whh", "wq", "wup", "wout")  # int8 weight matrices (per-output-channel scales)
# numba backend: per-channel arrays held as int32 when they fit (see Engine.__init__)
NARROW_MULTIPLIERS = (
    *("z_mx", "z_mh", "u_m", "qp_m", "ao_m", "logit_m"),
    *("start8_g", "startres_g", "mem8_g", "mid8_g", "attres_g", "q8_g", "xff8_g", "ffres_g"),
)


@dataclass
class EngineState:
    """Per-lane state: LSTM (int8 h, Q15 cell) per block, attention ring buffer, current tables."""

    h8: list[torch.Tensor]  # per block [B, d] int8: h quantised with scale 1/127 (the recurrent input)
    cell: list[torch.Tensor]  # per block [B, d] int32, Q15
    ring: torch.Tensor  # [B, memory + 1, d] int8
    written: torch.Tensor  # [B] int64: positions written into the ring so far
    freqs: torch.Tensor  # [B, 256] int32: each lane's next-byte table
    extra: dict = field(default_factory=dict)

    @property
    def lanes(self) -> int:
        return int(self.freqs.shape[0])

    def copy(self) -> EngineState:
        return EngineState(
            h8=[t.clone() for t in self.h8],
            cell=[t.clone() for t in self.cell],
            ring=self.ring.clone(),
            written=self.written.clone(),
            freqs=self.freqs.clone(),
            extra=copy.deepcopy(self.extra),
        )

    def select(self, lanes: list[int] | np.ndarray | torch.Tensor) -> EngineState:
        """A new state holding copies of the given lanes, in that order."""
        idx = torch.as_tensor(np.asarray(lanes, dtype=np.int64), device=self.freqs.device)
        return EngineState(
            h8=[t[idx].clone() for t in self.h8],
            cell=[t[idx].clone() for t in self.cell],
            ring=self.ring[idx].clone(),
            written=self.written[idx].clone(),
            freqs=self.freqs[idx].clone(),
        )

    @staticmethod
    def concat(states: list[EngineState]) -> EngineState:
        """Lanes of several states, one after another."""
        n = len(states[0].h8)
        return EngineState(
            h8=[torch.cat([s.h8[i] for s in states]) for i in range(n)],
            cell=[torch.cat([s.cell[i] for s in states]) for i in range(n)],
            ring=torch.cat([s.ring for s in states]),
            written=torch.cat([s.written for s in states]),
            freqs=torch.cat([s.freqs for s in states]),
        )

    def numpy_views(self) -> dict:
        """numpy arrays sharing memory with the (CPU) state tensors, made once per state: slicing them
        costs far less per step than slicing tensors."""
        key = tuple(id(t) for t in (*self.h8, *self.cell, self.ring, self.written, self.freqs))
        views = self.__dict__.get("_views")
        if views is None or views["_key"] != key:  # (the views keep their tensors alive: ids stay unique)
            views = {
                "h8": tuple(t.numpy() for t in self.h8),  # (tuples: numba takes them, not lists)
                "cell": tuple(t.numpy() for t in self.cell),
                "ring": self.ring.numpy(),
                "written": self.written.numpy(),
                "freqs": self.freqs.numpy(),
                "_key": key,
            }
            self.__dict__["_views"] = views
        return views

    def to(self, device: str | torch.device) -> EngineState:
        return EngineState(
            h8=[t.to(device) for t in self.h8],
            cell=[t.to(device) for t in self.cell],
            ring=self.ring.to(device),
            written=self.written.to(device),
            freqs=self.freqs.to(device),
        )


def _shr(v: torch.Tensor, m: torch.Tensor | int, b: torch.Tensor | int, s: int) -> torch.Tensor:
    """(v * m + b) >> s in int64 (arithmetic shift: b carries the round-half-up constant)."""
    return (v * m + b) >> s


def ln_normalise(x: torch.Tensor, eps_term: int) -> torch.Tensor:
    """Integer LayerNorm without the affine part: [B, d] int64 -> Q12 normalised values (int64)."""
    d = x.shape[-1]
    s1 = x.sum(-1, keepdim=True)
    s2 = (x * x).sum(-1, keepdim=True)
    v = d * s2 - s1 * s1 + eps_term
    root = torch.sqrt(v.to(torch.float64)).floor().to(torch.int64).clamp_min(1)
    inv = torch.div(torch.full_like(root, 1 << LN_INV_BITS), root, rounding_mode="floor")
    dx = d * x - s1
    return (dx * inv + (1 << (LN_INV_BITS - NORM_Q - 1))) >> (LN_INV_BITS - NORM_Q)


def ln_affine(n: torch.Tensor, g: torch.Tensor, b: torch.Tensor, limit: int) -> torch.Tensor:
    return ((n * g + b) >> AFFINE_SHIFT).clamp_(-limit, limit)


def frequency_table(logit_q: torch.Tensor, exp_lut: torch.Tensor) -> torch.Tensor:
    """[B, 256] int64 logits (Q10 nats) -> [B, 256] int32 frequencies, each >= 1, rows sum to TABLE_TOTAL."""
    diff = (logit_q.max(-1, keepdim=True).values - logit_q).clamp_(0, LOGIT_EXP_SIZE - 1)
    e = exp_lut[diff]
    total = e.sum(-1, keepdim=True)
    spread = TABLE_TOTAL - logit_q.shape[-1]
    freqs = 1 + torch.div(e * spread, total, rounding_mode="floor")
    remainder = TABLE_TOTAL - freqs.sum(-1, keepdim=True)
    # first index of the largest logit (spelled out rather than argmin, whose tie rule is not documented
    # the same way for every device)
    index = torch.arange(logit_q.shape[-1], device=logit_q.device)
    top = torch.where(diff == 0, index, logit_q.shape[-1]).min(-1, keepdim=True).values
    freqs.scatter_add_(-1, top, remainder)
    return freqs.to(torch.int32)


class Engine:
    """Runs an integer model file. See docs/internals.md for the interface."""

    TABLE_TOTAL = TABLE_TOTAL
    START_BYTE = START_BYTE

    def __init__(
        self, model: ModelFile | str, device: str | torch.device = "cpu", backend: str = "auto"
    ) -> None:
        """backend: "torch" (the reference, any device), "numba" (fused CPU kernels) or "auto" (numba on
        CPU when numba is installed). Both give identical tables."""
        if not isinstance(model, ModelFile):
            model = ModelFile.load(model)
        # Exactness of the float GEMMs needs full float32 (no TF32 / reduced-precision accumulation).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        if model.quant.get("scheme") != QUANT_SCHEME:
            raise ValueError(
                f"model file quantisation scheme {model.quant.get('scheme')!r} is not {QUANT_SCHEME!r}"
            )
        self.model = model
        self.cfg = model.config
        self.q = model.quant
        self.device = torch.device(device)
        self.d = self.cfg.d_model
        if max(self.d, 256) * INT8_MAX * INT8_MAX >= 1 << 24:
            raise ValueError(f"d_model {self.d} is too large for exact float32 GEMMs (at most 1040)")
        self.memory = self.cfg.memory
        self.attn_index = self.cfg.attn_index
        self._load_tensors()
        if backend == "auto":
            backend = "numba" if self.device.type == "cpu" and _numba_available() else "torch"
        if backend not in ("torch", "numba"):
            raise ValueError(f"unknown engine backend {backend!r}")
        if backend == "numba" and self.device.type != "cpu":
            raise ValueError("the numba backend runs on CPU only")
        self.backend = backend
        if backend == "numba":
            # numba reads the stored (narrow) integer dtypes directly: small tables stay in cache.
            self.n = {k: np.ascontiguousarray(v) for k, v in self.model.tensors.items()}
            # Per-channel multipliers and LayerNorm gains as int32 where every block's fit (the same
            # integers: the kernels still form products in int64), so that the vectorised loops multiply
            # by vpmuldq (32 x 32 -> 64 bits) instead of emulating a 64 x 64-bit multiply.
            for suffix in NARROW_MULTIPLIERS:
                same = [k for k in self.n if k.rsplit(".", 1)[-1] == suffix]
                if all(np.abs(self.n[k]).max() < 1 << 31 for k in same):
                    self.n.update({k: self.n[k].astype(np.int32) for k in same})
            self.n["b0.wih_byte_table"] = self.t["b0.wih_byte_table"].numpy()
            from shazip import _kernels

            self.packed = {  # weights in the int16 GEMM's layout (b0.wih is replaced by its byte table)
                name: _kernels.pack_weight(w)
                for name, w in self.n.items()
                if name.rsplit(".", 1)[-1] in GEMM_WEIGHTS
                and name != "b0.wih"
                and _kernels.gemm_int16_fits(*w.shape)
            }
            # The attention's weighted sum of int8 memory vectors fits int32 when all slots together
            # cannot reach 2**31 (the small config: 257 * 2**15 * 127 ~ 2**30); the kernel also takes two
            # weights per multiply-add, so each must fit int16.
            slots = self.memory + 1
            self._narrow_attention_sum = {
                i: (top := int(np.abs(self.n[f"b{i}.att_exp_lut"]).max())) * INT8_MAX * slots < 1 << 31
                and top < 1 << 15
                for i in range(self.cfg.n_blocks)
                if f"b{i}.att_exp_lut" in self.n
            }
            # The kernels' divisions (attention average, output table) are exact for numerators below
            # 2**50 (_kernels._floor_div); with int16 exp tables that holds for windows up to ~2**20.
            numerators = [int(np.abs(self.n["logit_exp_lut"]).max()) * TABLE_TOTAL]
            for i in self._narrow_attention_sum:
                weights = int(np.abs(self.n[f"b{i}.att_exp_lut"]).max())
                numerators.append((weights * INT8_MAX * slots) << ATT_AVG_Q)
            if max(numerators) >= 1 << 50:
                raise ValueError("model outside the numba backend's exact range (exp tables or window)")
            self._fused = self._fused_params()

    def _fused_params(self) -> tuple | None:
        """(blocks, head): the arguments of `_kernels.step_group` describing the model, built once; None
        when a GEMM weight does not fit the int16 GEMM (the step then calls the kernels one by one)."""
        from shazip import _kernels

        nb = self.cfg.n_blocks
        needed = [f"b{i}.{w}" for i in range(nb) for w in ("whh", "wup")]
        needed += [f"b{i}.wih" for i in range(1, nb)] + [f"b{self.attn_index}.wq", "wout"]
        if any(name not in self.packed for name in needed):
            return None
        n, q = self.n, self.q
        fields = _kernels.BlockParams._fields
        blocks = []
        for i in range(nb):
            p = f"b{i}."
            values: dict = {
                "attention": i == self.attn_index,
                "narrow_sum": self._narrow_attention_sum.get(i, False),
            }
            for f in fields[2:]:  # (after the two flags above)
                if f in GEMM_WEIGHTS:
                    values[f] = self.packed.get(p + f)  # (block 0's wih: None, it uses the byte table)
                elif p + f in n:
                    values[f] = n[p + f]
                elif p + f in q:
                    values[f] = int(q[p + f])
                else:
                    values[f] = None
            blocks.append(values)
        # what a block does not have: empty arrays like another block's (the same numba types), or 0
        for f in fields[2:]:
            like = next((b[f] for b in blocks if b[f] is not None), None)
            if like is None:  # only one block: no block starts with a LayerNorm
                like = np.zeros((0, 0, 16, 2), np.int8) if f in GEMM_WEIGHTS else np.zeros(0, np.int64)
            for b in blocks:
                if b[f] is None:
                    b[f] = np.zeros((0,) * like.ndim, like.dtype) if isinstance(like, np.ndarray) else 0
        byte_acc = self.t["b0.wih_byte_table"].numpy()  # exact integers below 2**24 (float32)
        head = _kernels.HeadParams(
            byte_acc=np.ascontiguousarray(byte_acc.astype(np.int32)),
            byte_res=np.ascontiguousarray(n["b0.startres_table"].astype(np.int32)),
            sigmoid_lut=n["sigmoid_lut"],
            tanh_lut=n["tanh_lut"],
            fin_m=int(q["fin_m"]),
            fin_b=int(q["fin_b"]),
            fin_shift=int(q["fin_shift"]),
            wout=self.packed["wout"],
            logit_m=n["logit_m"],
            logit_b=n["logit_b"],
            logit_shift=int(q["logit_shift"]),
            logit_exp_lut=n["logit_exp_lut"],
            table_total=TABLE_TOTAL,
        )
        return tuple(_kernels.BlockParams(**b) for b in blocks), head

    def _load_tensors(self) -> None:
        dev = self.device
        t = {}
        for name, arr in self.model.tensors.items():
            if name.rsplit(".", 1)[-1] in GEMM_WEIGHTS:
                t[name] = torch.from_numpy(arr.astype(np.float32)).to(dev)  # GEMM operand, exact in float32
            else:
                t[name] = torch.from_numpy(arr.astype(np.int64)).to(dev)
        # Block 0's LSTM input depends on the byte only: its GEMM is done once here, for all 256 bytes.
        t["b0.wih_byte_table"] = F.linear(t["b0.start8_table"].to(torch.float32), t["b0.wih"])
        self.t = t

    # ---- state ----
    def new_state(self, lanes: int) -> EngineState:
        d, dev = self.d, self.device
        nb = self.cfg.n_blocks
        state = EngineState(
            h8=[torch.zeros(lanes, d, dtype=torch.int8, device=dev) for _ in range(nb)],
            cell=[torch.zeros(lanes, d, dtype=torch.int32, device=dev) for _ in range(nb)],
            ring=torch.zeros(lanes, self.memory + 1, d, dtype=torch.int8, device=dev),
            written=torch.zeros(lanes, dtype=torch.int64, device=dev),
            freqs=torch.zeros(lanes, 256, dtype=torch.int32, device=dev),
        )
        if lanes:
            self.advance(state, np.full(lanes, START_BYTE, dtype=np.uint8))
        return state

    def predict(self, state: EngineState) -> np.ndarray:
        return state.freqs.cpu().numpy().copy()

    def advance(
        self,
        state: EngineState,
        symbols: np.ndarray | bytes | list[int],
        alongside: Callable[[], object] | None = None,
    ) -> None:
        """Lanes 0..len(symbols)-1 consume one byte each (the other lanes keep their state).

        alongside: other work for the calling thread that does not touch `state` (the codec's in-file
        models learning the same bytes). With helper threads it runs while they start on the step, and
        the calling thread joins the step when it is done: the helpers would otherwise wait for it. Without
        helpers it runs before the step. The step completes even when `alongside` raises.
        """
        if isinstance(symbols, (bytes, bytearray, memoryview)):
            sym = np.frombuffer(symbols, dtype=np.uint8)
        else:
            sym = np.asarray(symbols)
            if sym.ndim != 1:
                raise ValueError(f"symbols must be one-dimensional, got shape {sym.shape}")
            if sym.dtype != np.uint8:
                if sym.size and (sym.dtype.kind not in "iu" or sym.min() < 0 or sym.max() > 255):
                    raise ValueError("symbols must be byte values 0..255")
                sym = sym.astype(np.uint8)
        k = int(sym.shape[0])
        if k > state.lanes:
            raise ValueError(f"{k} symbols for {state.lanes} lanes")
        if self.backend == "numba" and k:
            self._step_numba(state, sym.astype(np.int64), k, alongside)
            return
        if alongside is not None:
            alongside()
        if k == 0:
            return
        with torch.no_grad():
            self._step(state, torch.from_numpy(sym.astype(np.int64)).to(self.device), k)

    # ---- the step (numba kernels for the elementwise work, torch float32 GEMMs) ----
    def _gemm(self, a: np.ndarray, name: str, G) -> np.ndarray:  # noqa: ANN001, N803 - kernels namespace
        """[k, K] int8 values times weight [N, K]^T -> [k, N] exact integers (int32 or float32 array).

        The int16 multiply-add-pairs kernel on packed weights (measured 2-3x faster than float32 sums on
        int8 weights for 1 to 32 lanes and ~1.9x faster than torch's float32 GEMM at 64 lanes, AVX2);
        weights it cannot take (shapes): torch's float32 GEMM.
        """
        packed = self.packed.get(name)
        if packed is not None:
            out = np.empty((a.shape[0], packed.shape[0] * packed.shape[2]), dtype=np.int32)
            G.gemm_int16(np.ascontiguousarray(a, dtype=np.int16), packed, out)
            return out
        return F.linear(torch.from_numpy(a.astype(np.float32, copy=False)), self.t[name]).numpy()

    def _step_numba(
        self, st: EngineState, x: np.ndarray, k: int, alongside: Callable[[], object] | None = None
    ) -> None:
        """The whole step in compiled calls without the GIL. From SPLIT_MIN_LANES lanes on, when the
        model allows the one-call step (`_kernels.step_group`), the lanes are cut into groups of about
        GROUP_LANES (at least two): with several threads (torch's setting) this thread and the state's
        helper threads take them one after another (`shazip.crew`); with one, this thread steps them in
        turn in one call (measured x1.05 at 64 lanes and x1.10 at 256 against one group of all lanes: a
        small group's scratch stays in cache). Each lane is still computed by the same integer formulas,
        so tables do not depend on the split. Fewer lanes: one call on this thread (measured fastest)."""
        groups = max(2, k // GROUP_LANES)
        threads = min(torch.get_num_threads(), _CPU_COUNT)
        if k >= SPLIT_MIN_LANES and self._fused is not None and threads > 1:
            self._lane_crew(st, min(threads, groups) - 1).step(x, groups, alongside)
            return
        if alongside is not None:
            alongside()
        if k < SPLIT_MIN_LANES or self._fused is None:
            self._step_group(st, x, 0, k)
            return
        from shazip import _kernels

        views = st.numpy_views()
        cuts, claimed = _kernels.group_bounds(k, groups), np.zeros(1, dtype=np.int64)
        _kernels.step_groups(
            x, cuts, claimed, *_kernels.plain_params(*self._fused), views["h8"], views["cell"], views["ring"],
            views["written"], views["freqs"],
        )  # fmt: skip

    def _lane_crew(self, st: EngineState, helpers: int) -> LaneCrew:
        """The state's helper threads for this model (made anew when the model, the state's arrays, the
        number of helpers or the process changed; the old ones are stopped)."""
        from shazip import _kernels
        from shazip.crew import LaneCrew

        views = st.numpy_views()
        key = (id(self._fused), views["_key"], helpers, os.getpid())
        old_key, crew = st.__dict__.get("_crew", (None, None))
        if old_key != key or crew.closed:
            if crew is not None and old_key[-1] == key[-1]:  # (a forked child has none of its threads)
                crew.close()
            state = (views["h8"], views["cell"], views["ring"], views["written"], views["freqs"])
            crew = LaneCrew(helpers, st.lanes, _kernels.plain_params(*self._fused), state)
            st.__dict__["_crew"] = (key, crew)
            weakref.finalize(st, crew.close)  # (the helpers hold the state's arrays, not the state)
        return crew

    def _step_group(self, st: EngineState, x: np.ndarray, lo: int, hi: int) -> None:
        """Lanes lo..hi-1 consume x[lo:hi] on this thread: one compiled call when the model allows."""
        from shazip import _kernels

        if self._fused is None:
            self._step_kernels(_kernels.serial, _kernels.serial, st, x, lo, hi)
            return
        blocks, head = _kernels.plain_params(*self._fused)
        views = st.numpy_views()
        _kernels.step_group(
            x,
            lo,
            hi,
            blocks,
            head,
            views["h8"],
            views["cell"],
            views["ring"],
            views["written"],
            views["freqs"],
        )

    def _step_kernels(self, K, G, st: EngineState, x: np.ndarray, lo: int, hi: int) -> None:  # noqa: ANN001, N803
        """Lanes lo..hi-1 consume x[lo:hi]. K: the elementwise kernels, G: the GEMM kernels."""
        n, q, d = self.n, self.q, self.d
        k = hi - lo
        x = x[lo:hi]
        views = st.numpy_views()
        out = None
        for i in range(self.cfg.n_blocks):
            p = f"b{i}."
            if i == 0:
                acc_x = n[p + "wih_byte_table"][x]
                res = n[p + "startres_table"][x]
            else:
                a8 = np.empty((k, d), dtype=np.int16)
                res = np.empty((k, d), dtype=np.int32)
                K.ln_two(
                    out,
                    q[p + "ln_start_eps"],
                    n[p + "start8_g"],
                    n[p + "start8_b"],
                    INT8_MAX,
                    a8,
                    n[p + "startres_g"],
                    n[p + "startres_b"],
                    RES_MAX,
                    res,
                )
                acc_x = self._gemm(a8, p + "wih", G)
            h8 = views["h8"][i][lo:hi]
            acc_h = self._gemm(h8, p + "whh", G)
            mid = np.empty((k, d), dtype=np.int32)
            K.lstm_cell(
                acc_x,
                acc_h,
                n[p + "z_mx"],
                n[p + "z_mh"],
                n[p + "z_b"],
                q[p + "z_shift"],
                n["sigmoid_lut"],
                n["tanh_lut"],
                views["cell"][i][lo:hi],
                h8,
                res,
                q[p + "h_m"],
                q[p + "h_b"],
                q[p + "h_shift"],
                mid,
            )
            if i == self.attn_index:
                mid8 = np.empty((k, d), dtype=np.int16)
                attres = np.empty((k, d), dtype=np.int32)
                ring = views["ring"][lo:hi]
                written = views["written"][lo:hi]
                K.attention_inputs(
                    mid,
                    q[p + "ln_a_eps"],
                    n[p + "mem8_g"],
                    n[p + "mem8_b"],
                    n[p + "mid8_g"],
                    n[p + "mid8_b"],
                    n[p + "attres_g"],
                    n[p + "attres_b"],
                    ring,
                    written,
                    mid8,
                    attres,
                )
                q8 = np.empty((k, d), dtype=np.int32)
                K.query(
                    self._gemm(mid8, p + "wq", G),
                    n[p + "qp_m"],
                    n[p + "qp_b"],
                    q[p + "qp_shift"],
                    q[p + "ln_q_eps"],
                    n[p + "q8_g"],
                    n[p + "q8_b"],
                    q8,
                )
                K.attend(
                    q8,
                    ring,
                    written,
                    q[p + "att_m"],
                    q[p + "att_b"],
                    q[p + "att_shift"],
                    n[p + "att_exp_lut"],
                    n[p + "ao_m"],
                    q[p + "ao_b"],
                    q[p + "ao_shift"],
                    attres,
                    self._narrow_attention_sum[i],
                    mid,
                )
            xff8 = np.empty((k, d), dtype=np.int16)
            ffres = np.empty((k, d), dtype=np.int32)
            K.ln_two(
                mid,
                q[p + "ln_ff_eps"],
                n[p + "xff8_g"],
                n[p + "xff8_b"],
                INT8_MAX,
                xff8,
                n[p + "ffres_g"],
                n[p + "ffres_b"],
                RES_MAX,
                ffres,
            )
            out = np.empty((k, d), dtype=np.int32)
            K.boom(
                self._gemm(xff8, p + "wup", G),
                n[p + "u_m"],
                n[p + "u_b"],
                q[p + "u_shift"],
                n[p + "gelu_lut"],
                ffres,
                q[p + "boom_m"],
                q[p + "boom_b"],
                q[p + "boom_shift"],
                out,
            )
        fin8 = np.empty((k, d), dtype=np.int16)
        K.requant_int8(out, q["fin_m"], q["fin_b"], q["fin_shift"], fin8)
        K.frequencies(
            self._gemm(fin8, "wout", G),
            n["logit_m"],
            n["logit_b"],
            q["logit_shift"],
            n["logit_exp_lut"],
            TABLE_TOTAL,
            views["freqs"][lo:hi],
        )

    # ---- the step (torch reference) ----
    def _step(self, st: EngineState, x: torch.Tensor, k: int) -> None:
        t, q = self.t, self.q
        out = None
        for i in range(self.cfg.n_blocks):
            p = f"b{i}."
            if i == 0:
                acc_x = t[p + "wih_byte_table"][x].to(torch.int64)
                res = t[p + "startres_table"][x]
            else:
                n = ln_normalise(out, q[p + "ln_start_eps"])
                a8 = ln_affine(n, t[p + "start8_g"], t[p + "start8_b"], INT8_MAX)
                res = ln_affine(n, t[p + "startres_g"], t[p + "startres_b"], RES_MAX)
                acc_x = F.linear(a8.to(torch.float32), t[p + "wih"]).to(torch.int64)
            mid = self._lstm(st, i, acc_x, res, k)
            if i == self.attn_index:
                mid = self._attention(st, mid, k)
            n = ln_normalise(mid, q[p + "ln_ff_eps"])
            ffres = ln_affine(n, t[p + "ffres_g"], t[p + "ffres_b"], RES_MAX)
            xff8 = ln_affine(n, t[p + "xff8_g"], t[p + "xff8_b"], INT8_MAX)
            acc = F.linear(xff8.to(torch.float32), t[p + "wup"]).to(torch.int64)
            u = _shr(acc, t[p + "u_m"], t[p + "u_b"], q[p + "u_shift"]).clamp_(-BOOM_CLAMP, BOOM_CLAMP)
            g = torch.where(
                u > GELU_RANGE, u, t[p + "gelu_lut"][u.clamp(-GELU_RANGE, GELU_RANGE) + GELU_RANGE]
            )
            boom = g.view(k, -1, self.d).sum(1)
            out = (ffres + _shr(boom, q[p + "boom_m"], q[p + "boom_b"], q[p + "boom_shift"])).clamp_(
                -RES_MAX, RES_MAX
            )
        fin8 = _shr(out, q["fin_m"], q["fin_b"], q["fin_shift"]).clamp_(-INT8_MAX, INT8_MAX)
        acc = F.linear(fin8.to(torch.float32), t["wout"]).to(torch.int64)
        logit = _shr(acc, t["logit_m"], t["logit_b"], q["logit_shift"])
        st.freqs[:k] = frequency_table(logit, t["logit_exp_lut"])

    def _lstm(self, st: EngineState, i: int, acc_x: torch.Tensor, res: torch.Tensor, k: int) -> torch.Tensor:
        t, q, p = self.t, self.q, f"b{i}."
        acc_h = F.linear(st.h8[i][:k].to(torch.float32), t[p + "whh"]).to(torch.int64)
        z = (acc_x * t[p + "z_mx"] + acc_h * t[p + "z_mh"] + t[p + "z_b"]) >> q[p + "z_shift"]
        z = z.clamp_(-GATE_RANGE, GATE_RANGE - 1) + GATE_RANGE
        zi, zf, zg, zo = z.chunk(4, dim=-1)
        sig, tanh = t["sigmoid_lut"], t["tanh_lut"]
        c = st.cell[i][:k].to(torch.int64)
        c = ((sig[zf] * c + sig[zi] * tanh[zg] + (1 << (ACT_Q - 1))) >> ACT_Q).clamp_(-CELL_MAX, CELL_MAX)
        tc = tanh[((c + (1 << 4)) >> 5).clamp_(-GATE_RANGE, GATE_RANGE - 1) + GATE_RANGE]  # Q15 -> Q10
        hp = sig[zo] * tc  # Q30
        st.cell[i][:k] = c.to(torch.int32)
        st.h8[i][:k] = ((hp * INT8_MAX + (1 << 29)) >> 30).to(torch.int8)
        return (res + _shr(hp, q[p + "h_m"], q[p + "h_b"], q[p + "h_shift"])).clamp_(-RES_MAX, RES_MAX)

    def _attention(self, st: EngineState, mid: torch.Tensor, k: int) -> torch.Tensor:
        t, q, p = self.t, self.q, f"b{self.attn_index}."
        n = ln_normalise(mid, q[p + "ln_a_eps"])
        mem8 = ln_affine(n, t[p + "mem8_g"], t[p + "mem8_b"], INT8_MAX)
        mid8 = ln_affine(n, t[p + "mid8_g"], t[p + "mid8_b"], INT8_MAX)
        attres = ln_affine(n, t[p + "attres_g"], t[p + "attres_b"], RES_MAX)
        slots = self.memory + 1
        lane = torch.arange(k, device=self.device)
        written = st.written[:k]
        st.ring[lane, written % slots] = mem8.to(torch.int8)
        written += 1
        ring = st.ring[:k]
        acc = F.linear(mid8.to(torch.float32), t[p + "wq"]).to(torch.int64)
        qp = _shr(acc, t[p + "qp_m"], t[p + "qp_b"], q[p + "qp_shift"]).clamp_(-RES_MAX, RES_MAX)
        q8 = ln_affine(ln_normalise(qp, q[p + "ln_q_eps"]), t[p + "q8_g"], t[p + "q8_b"], INT8_MAX)
        ringf = ring.to(torch.float32)
        scores = torch.bmm(ringf, q8.to(torch.float32).unsqueeze(-1)).squeeze(-1).to(torch.int64)
        valid = torch.arange(slots, device=self.device).unsqueeze(0) < written.clamp(max=slots).unsqueeze(1)
        scores = scores.masked_fill(~valid, -(1 << 40))
        top = scores.max(-1, keepdim=True).values
        idx = _shr(top - scores, q[p + "att_m"], q[p + "att_b"], q[p + "att_shift"]).clamp_(
            0, ATT_EXP_SIZE - 1
        )
        w = t[p + "att_exp_lut"][idx].masked_fill_(~valid, 0)
        total = w.sum(-1, keepdim=True)
        o = torch.bmm(w.to(torch.float64).unsqueeze(1), ring.to(torch.float64)).squeeze(1).to(torch.int64)
        avg = torch.div(o << ATT_AVG_Q, total, rounding_mode="floor")
        return (attres + _shr(avg, t[p + "ao_m"], q[p + "ao_b"], q[p + "ao_shift"])).clamp_(-RES_MAX, RES_MAX)


_CPU_COUNT = os.cpu_count() or 1  # (read once: the call costs ~0.1 ms, and _step_numba runs every step)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def measure_bpb(engine: Engine, data: bytes, lanes: int = 1) -> float:
    """Exact code length (ideal, from the tables) in bits per byte of `data` split into contiguous lanes."""
    n = len(data)
    if n == 0:
        return 0.0
    lanes = max(1, min(lanes, n))
    per = -(-n // lanes)
    lanes = -(-n // per)
    arr = np.frombuffer(data, dtype=np.uint8)
    state = engine.new_state(lanes)
    bits = 0.0
    log_total = np.log2(engine.TABLE_TOTAL)
    for step in range(per):
        active = min(lanes, (n - step + per - 1) // per)  # lanes with a byte at this step form a prefix
        syms = arr[np.arange(active) * per + step]
        freqs = engine.predict(state)[:active]
        bits += float(np.sum(log_total - np.log2(freqs[np.arange(active), syms].astype(np.float64))))
        if step + 1 < per:
            engine.advance(state, syms)
    return bits / n
