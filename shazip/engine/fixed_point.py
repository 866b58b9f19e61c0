"""The integer formats of the engine: one definition for the torch reference, the numba kernels and the
export that builds a model's tables for them. Plain integers, importable without torch or numpy.

What each number means and why the arithmetic built on it is exact: docs/engine.md.
"""

QUANT_SCHEME = "shazip-int8-v1"  # these formats; export writes it into the model file, the engine checks it
START_BYTE = 10  # a fresh lane behaves as if it had just consumed a newline from the zero state
TABLE_TOTAL = 1 << 20  # every frequency table sums to exactly this (constriction allows up to 2**24)
VOCAB = 256  # one table entry per byte value

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

# The largest d_model whose int8 GEMMs are exact in float32 (every partial sum of K <= 1040 products of
# int8 values stays below 2**24).
MAX_EXACT_FLOAT32_DEPTH = ((1 << 24) - 1) // (INT8_MAX * INT8_MAX)
