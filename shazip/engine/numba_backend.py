"""The engine's CPU backend: a whole step of a lane group in one compiled call (`kernels.step_group`),
lane groups shared between the calling thread and helper threads (`crew.LaneCrew`). numpy and numba only.
"""

from __future__ import annotations

import os
import typing
import weakref
from collections.abc import Callable

import numpy as np

from shazip.engine import kernels
from shazip.engine.crew import LaneCrew
from shazip.engine.fixed_point import ATT_AVG_Q, INT8_MAX, TABLE_TOTAL
from shazip.engine.state import EngineState
from shazip.modelfile import ModelFile

GEMM_WEIGHTS = ("wih", "whh", "wq", "wup", "wout")  # int8 weight matrices (per-output-channel scales)
# Per-channel arrays held as int32 when every block's fit (the same integers: the kernels still form
# products in int64), so that the vectorised loops multiply by vpmuldq (32 x 32 -> 64 bits) instead of
# emulating a 64 x 64-bit multiply.
NARROW_MULTIPLIERS = (
    *("z_mx", "z_mh", "u_m", "qp_m", "ao_m", "logit_m"),
    *("start8_g", "startres_g", "mem8_g", "mid8_g", "attres_g", "q8_g", "xff8_g", "ffres_g"),
)
SPLIT_MIN_LANES = 16  # from here on, a step's lanes are cut into groups ...
GROUP_LANES = 8  # ... of about this many lanes: a group's scratch and its lanes' state stay in cache, and the
# int8 weights it streams once per group cost little


def fits(model: ModelFile) -> bool:
    """Whether every GEMM of the model fits the int16 kernel (the only way this backend steps)."""
    return all(
        kernels.gemm_int16_fits(*w.shape)
        for name, w in model.tensors.items()
        if name.rsplit(".", 1)[-1] in GEMM_WEIGHTS and name != "b0.wih"
    )


def byte_table(model: ModelFile) -> np.ndarray:
    """Block 0's input GEMM for every byte value ([256, 4d] int32): its input depends on the byte alone."""
    start8 = model.tensors["b0.start8_table"].astype(np.int64)
    return (start8 @ model.tensors["b0.wih"].astype(np.int64).T).astype(np.int32)


class NumbaBackend:
    """Steps EngineStates of numpy arrays with the compiled kernels."""

    name = "numba"

    def __init__(self, model: ModelFile, narrow_attention_sum: bool | None = None) -> None:
        """narrow_attention_sum: None: the attention's weighted sum in int32 wherever that is exact; False:
        always int64 (the same integers; tests compare the two)."""
        if not fits(model):
            raise ValueError("the model's shapes do not fit the numba backend's int16 GEMM")
        cfg = model.config
        self.d = cfg.d_model
        self.memory = cfg.memory
        self.blocks = cfg.n_blocks
        n = {k: np.ascontiguousarray(v) for k, v in model.tensors.items()}
        for suffix in NARROW_MULTIPLIERS:
            same = [k for k in n if k.rsplit(".", 1)[-1] == suffix]
            if all(np.abs(n[k]).max() < 1 << 31 for k in same):
                n.update({k: n[k].astype(np.int32) for k in same})
        # The weighted sum of int8 memory vectors fits int32 when all slots together cannot reach 2**31
        # (the small config: 257 * 2**15 * 127 ~ 2**30); the kernel takes two weights per multiply-add, so
        # each must fit int16 too.
        slots = self.memory + 1
        narrow = {}
        for i in range(cfg.n_blocks):
            if f"b{i}.att_exp_lut" in n:
                top = int(np.abs(n[f"b{i}.att_exp_lut"]).max())
                narrow[i] = narrow_attention_sum is not False and top * INT8_MAX * slots < 1 << 31
                narrow[i] = narrow[i] and top < 1 << 15
        # The kernels' divisions (attention average, output table) are exact for numerators below 2**50
        # (kernels._floor_div); with int16 exp tables that holds for windows up to ~2**20.
        numerators = [int(np.abs(n["logit_exp_lut"]).max()) * TABLE_TOTAL]
        for i in narrow:
            numerators.append((int(np.abs(n[f"b{i}.att_exp_lut"]).max()) * INT8_MAX * slots) << ATT_AVG_Q)
        if max(numerators) >= 1 << 50:
            raise ValueError("model outside the numba backend's exact range (exp tables or window)")
        self.narrow_attention_sum = narrow
        self.params = kernels.plain_params(*self._step_params(model, n, narrow))

    @staticmethod
    def _step_params(model: ModelFile, n: dict, narrow: dict) -> tuple:
        """(blocks, head): the arguments of `kernels.step_group` describing the model."""
        cfg, q = model.config, model.quant
        fields = kernels.BlockParams._fields
        blocks = []
        for i in range(cfg.n_blocks):
            p = f"b{i}."
            values: dict = {"attention": i == cfg.attn_index, "narrow_sum": narrow.get(i, False)}
            for f in fields[2:]:  # (after the two flags above)
                if f in GEMM_WEIGHTS:  # (block 0 has no wih: it reads the byte table instead)
                    present = p + f in n and not (i == 0 and f == "wih")
                    values[f] = kernels.pack_weight(n[p + f]) if present else None
                elif p + f in n:
                    values[f] = n[p + f]
                elif p + f in q:
                    values[f] = int(q[p + f])
                else:
                    values[f] = None
            blocks.append(values)
        # What a block does not have, by the field's declared type (every block's tuple must have the same
        # numba types): an integer parameter is 0; an array is empty, of another block's dtype and rank,
        # or, where no block has it (one block: none starts with a LayerNorm), of a packed weight's or a
        # per-channel array's.
        declared = typing.get_type_hints(kernels.BlockParams)
        for f in fields[2:]:
            if declared[f] is int:
                absent: object = 0
            else:
                like = next((b[f] for b in blocks if b[f] is not None), None)
                if like is None:
                    like = np.zeros((0, 0, 16, 2), np.int8) if f in GEMM_WEIGHTS else np.zeros(0, np.int64)
                absent = np.zeros((0,) * like.ndim, like.dtype)
            for b in blocks:
                if b[f] is None:
                    b[f] = absent
        head = kernels.HeadParams(
            byte_acc=byte_table(model),
            byte_res=np.ascontiguousarray(n["b0.startres_table"].astype(np.int32)),
            sigmoid_lut=n["sigmoid_lut"],
            tanh_lut=n["tanh_lut"],
            fin_m=int(q["fin_m"]),
            fin_b=int(q["fin_b"]),
            fin_shift=int(q["fin_shift"]),
            wout=kernels.pack_weight(n["wout"]),
            logit_m=n["logit_m"],
            logit_b=n["logit_b"],
            logit_shift=int(q["logit_shift"]),
            logit_exp_lut=n["logit_exp_lut"],
            table_total=TABLE_TOTAL,
        )
        return tuple(kernels.BlockParams(**b) for b in blocks), head

    def zeros(self, lanes: int) -> EngineState:
        d = self.d
        return EngineState(
            h8=[np.zeros((lanes, d), dtype=np.int8) for _ in range(self.blocks)],
            cell=[np.zeros((lanes, d), dtype=np.int32) for _ in range(self.blocks)],
            ring=np.zeros((lanes, self.memory + 1, d), dtype=np.int8),
            written=np.zeros(lanes, dtype=np.int64),
            freqs=np.zeros((lanes, 256), dtype=np.int32),
        )

    def tables(self, state: EngineState) -> np.ndarray:
        return state.freqs.copy()

    def step(
        self, state: EngineState, x: np.ndarray, threads: int, alongside: Callable[[], object] | None
    ) -> None:
        """Lanes 0..len(x)-1 consume x (int64). From SPLIT_MIN_LANES lanes on, the lanes are cut into
        groups of about GROUP_LANES (at least two): with several threads the calling thread and the
        state's helper threads take them as they get free (a thread whose core is busy takes fewer); with
        one, the calling thread steps them in turn in one call (a small group's scratch stays in cache).
        Fewer lanes: one call on the calling thread. Each lane is computed by the same integer formulas
        whatever the grouping, so the tables do not depend on it."""
        k = len(x)
        groups = max(2, k // GROUP_LANES)
        if k >= SPLIT_MIN_LANES and threads > 1:
            self._crew(state, min(threads, groups) - 1).step(x, groups, alongside)
            return
        if alongside is not None:
            alongside()
        blocks, head = self.params
        if k < SPLIT_MIN_LANES:
            kernels.step_group(x, 0, k, blocks, head, *state.arrays())
            return
        cuts, claimed = kernels.group_bounds(k, groups), np.zeros(1, dtype=np.int64)
        kernels.step_groups(x, cuts, claimed, blocks, head, *state.arrays())

    def _crew(self, state: EngineState, helpers: int) -> LaneCrew:
        """The state's helper threads for this backend (made anew when the backend, the state's arrays,
        the number of helpers or the process changed; the old ones are stopped)."""
        arrays = state.arrays()
        key = (id(self), tuple(id(a) for a in (*arrays[0], *arrays[1], *arrays[2:])), helpers, os.getpid())
        old_key, crew = state.crew or (None, None)
        if old_key != key or crew.closed:
            if crew is not None and old_key[-1] == key[-1]:  # (a forked child has none of its threads)
                crew.close()
            crew = LaneCrew(helpers, state.lanes, self.params, arrays)
            state.crew = (key, crew)
            weakref.finalize(state, crew.close)  # (the helpers hold the state's arrays, not the state)
        return crew
