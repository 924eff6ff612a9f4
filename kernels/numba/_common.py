"""Helpers shared by the Numba kernels: surrogate derivatives, gate codes, thread chunks."""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# Gate kinds as the kernels see them (internal).
RHYTHMIC, EVENT, DENSE = 0, 1, 2
GATE_CODES = {"rhythmic": RHYTHMIC, "event": EVENT, "dense": DENSE}

_HALF_PI = 0.5 * math.pi


@nb.njit(cache=True, inline="always")
def surrogate_grad(code, scale, x):
    """sigma'(x) of su_neuro.surrogate (codes of su_neuro.surrogate._CODES)."""
    if code == 0:  # atan
        y = _HALF_PI * scale * x
        return (0.5 * scale) / (1.0 + y * y)
    if code == 1:  # fast_sigmoid
        y = scale * abs(x) + 1.0
        return 1.0 / (y * y)
    if code == 2:  # sigmoid; even in x, so exp(-s|x|) never overflows
        e = math.exp(-scale * abs(x))
        return scale * e / ((1.0 + e) * (1.0 + e))
    if code == 3:  # straight_through
        return 1.0
    if code == 4:  # triangle
        y = 1.0 - abs(x) / scale
        return y / scale if y > 0.0 else 0.0
    # rectangle
    return 1.0 / scale if abs(x) < 0.5 * scale else 0.0


# --------------------------------------------------------------- float32 exp, sigmoid, tanh
# The RNN/GRU candidate's sigmoid and tanh dominated the per-entry cost of the rhythmic /
# dense kernels: ``math.exp`` and ``math.tanh`` are libm calls (double precision for a
# float64 literal), ~15 ns each, and they keep LLVM from vectorising the loop. These are
# plain float32 arithmetic instead: exp by range reduction x = n ln2 + r (|r| <= ln2 / 2,
# ln2 split in two parts) and the degree-7 Taylor polynomial of e^r (truncation error
# r^8 / 8! < 6e-9 relative), scaled by 2^n built from its exponent bits. Measured error
# over [-87, 88] (tests/test_numba_math.py): exp <= 2.2 ulp, tanh <= 2.7 ulp, sigmoid
# <= 5 ulp (the worst where it is below 1e-20); sigmoid and tanh <= 1e-7 absolute. Every
# kernel gets the same bits from them (below): the neuron-split streaming kernel equals the
# batch-chunk kernel exactly. The event-gate kernel keeps
# libm (its gate compares |f - h| with a threshold, where a last-bit difference from the
# reference would flip a decision more often). 2.5x faster candidate loop (measured on
# 3.2 M GRU entries: 81 vs 202-217 ms).

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # 355 / 512, exact in float32; n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = np.float32(0.6931471805599453 - 0.693359375)
_EXP_MIN, _EXP_MAX = np.float32(-87.0), np.float32(88.0)


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        (v,) = args
        if v.type.width > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif v.type.width < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


# Each function is written once, inline="always" (``_exp32`` ...: Numba inlines it into its
# caller, which then decides the flags), and compiled as a function of its own
# (``exp32`` ...) with ``fastmath=False`` stated: Numba compiles a callee whose decorator
# leaves fastmath unset with the flags of the caller that first needed it, so the bits of
# these functions (and so a kernel's outputs) depended on which kernel a process, or the
# on-disk cache, had compiled first (tests/test_numba_math.py). The vectorised candidate
# loops (``cell.gru_candidates``) inline them into a fastmath=False loop: the same IEEE
# operations in the same order, no contraction, so lane p gets the bits of the scalar call.
# ``error_model="numpy"``: their only division is by 1 + e^y >= 1, so Python's zero-division
# check (a branch with a raise, which keeps LLVM from vectorising) is never needed.
_EXACT = {"cache": True, "fastmath": False, "error_model": "numpy"}


@nb.njit(inline="always")
def _exp32(x):
    x = min(max(np.float32(x), _EXP_MIN), _EXP_MAX)
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _f32_from_bits((np.int64(n) + 127) << 23)


@nb.njit(inline="always")
def _sigmoid32(x):
    return np.float32(1.0) / (np.float32(1.0) + _exp32(-x))


@nb.njit(inline="always")
def _tanh32(x):
    a = abs(np.float32(x))
    e = _exp32(np.float32(-2.0) * a)
    y = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    if a < np.float32(0.25):
        z = a * a
        q = np.float32(-1382.0 / 155925.0)
        q = q * z + np.float32(62.0 / 2835.0)
        q = q * z + np.float32(-17.0 / 315.0)
        q = q * z + np.float32(2.0 / 15.0)
        q = q * z + np.float32(-1.0 / 3.0)
        y = a + a * z * q
    return y if x >= 0 else -y


@nb.njit(**_EXACT)
def exp32(x):
    """e^x in float32 for float32 x (clamped to [-87, 88]: no overflow, no denormals)."""
    return _exp32(x)


@nb.njit(**_EXACT)
def sigmoid32(x):
    return _sigmoid32(x)


@nb.njit(**_EXACT)
def tanh32(x):
    """tanh in float32: (1 - e^{-2|x|}) / (1 + e^{-2|x|}), and below |x| = 0.25 (where that
    difference cancels) the odd Taylor polynomial to x^11 (error < 3e-9 relative)."""
    return _tanh32(x)


@nb.njit(cache=True, inline="always")
def sign(x):
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


@nb.njit(cache=True, inline="always")
def chunk(c, nchunks, n):
    """[lo, hi) of chunk c when n items are split into nchunks."""
    return (c * n) // nchunks, ((c + 1) * n) // nchunks


@nb.njit(cache=True, inline="always")
def _listed(g, support, use_support, t, i):
    return g[t, i] != 0 or (use_support and support[t, i])


@nb.njit(cache=True, parallel=True)
def _compact(g, support, use_support, nparts, offsets, idx):
    """Two passes over row blocks in parallel: count each step's entries, prefix-sum the
    counts into offsets, then write each step's indices at its offset."""
    T, H = g.shape
    counts = np.empty(T, np.int64)
    for p in nb.prange(nparts):
        lo, hi = chunk(p, nparts, T)
        for t in range(lo, hi):
            n = 0
            for i in range(H):
                if _listed(g, support, use_support, t, i):
                    n += 1
            counts[t] = n
    n = 0
    for t in range(T):
        offsets[t] = n
        n += counts[t]
    offsets[T] = n
    for p in nb.prange(nparts):
        lo, hi = chunk(p, nparts, T)
        for t in range(lo, hi):
            k = offsets[t]
            for i in range(H):
                if _listed(g, support, use_support, t, i):
                    idx[k] = i
                    k += 1
    return n


#: below this many (step, neuron) entries ``compact`` runs on one thread
COMPACT_PARALLEL_MIN = 1 << 20


def compact(g: np.ndarray, support: np.ndarray | None = None):
    """Per-step index lists of the neurons to compute: open (g != 0) or in ``support``.

    g: (T, H) gate rows; support: (T, H) bool or None. Returns (offsets (T+1,) int64,
    idx (nnz,) int32): step t's neurons are idx[offsets[t]:offsets[t+1]], increasing.
    Large plans (a 10,000-step stream of 1,024 neurons) are compacted by all Numba threads.
    """
    T, H = g.shape
    offsets = np.empty(T + 1, np.int64)
    idx = np.empty(T * H, np.int32)
    use = support is not None
    nparts = nb.get_num_threads() if T * H >= COMPACT_PARALLEL_MIN else 1
    n = _compact(g, support if use else np.zeros((1, 1), np.bool_), use, nparts, offsets, idx)
    return offsets, idx[:n]


def nchunks(batch: int) -> int:
    return max(1, min(batch, nb.get_num_threads()))
