"""Device helpers and argument bundles shared by the Numba kernel variants.

The variant modules (``event``, ``rows``, ``gemm``, ``split``, ``lif``) import this module and
``kernels/contract.py`` only, never each other. Here: the argument bundles (NamedTuples;
Numba types them field by field, so a kernel call passes a few named bundles instead of
dozens of arrays), the surrogate derivatives, the float32 exp / sigmoid / tanh, the RNN and
GRU candidates and their backward (each written once), the input projection of one step
and the single-sample recurrent dot products.

Layouts (float32, C order): xp (B, T, G) input pre-activations, G = nr * H rows (nr = 3 GRU:
r, z, n; 1 RNN); W (G, H) = w_hh; gate rows g (T, H); step t's compute set
idx[off[t]:off[t+1]]; per-chunk gradient buffers (C, ...) summed by the launcher.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ..contract import SURROGATE_CODES

# ------------------------------------------------------------------------------ bundles


class Source(NamedTuple):
    """The input pre-activations W_ih x_t + b_ih (``step_input``). fused 0 (False): xp
    (B, T, G), projected beforehand; else x (B, T, F), w_ih (G, F) (or packed per neuron,
    (H, nr * F): row g * H + i at [i, g * F:(g + 1) * F]) and b_ih (G,), projected inside the
    kernels for the computed rows only: 1 (True) by short dot products per row and sample,
    ``FUSED_DOTS`` (GEMM path only) by per-step GEMMs against the gathered W_ih rows."""

    fused: int
    xp: np.ndarray
    x: np.ndarray
    w_ih: np.ndarray
    b_ih: np.ndarray


#: ``Source.fused``: the GEMM path projects the input with per-step GEMMs
_THREADS_STARTED = False


def start_threads() -> None:
    """Start Numba's thread pool, once, keeping torch's thread count. Numba's OpenMP layer,
    when it starts (at its first parallel kernel, or ``numba.get_num_threads()``), sets the
    process's OpenMP thread count to Numba's, and torch shares it: a ``torch.set_num_threads(1)``
    made before would silently become 2 (or all cores). Called by the backend's entry points
    before anything of Numba's runs, not at import: a process that has started the pool cannot
    run a parallel kernel in a child it forks, and ``numba.config.THREADING_LAYER`` chooses the
    layer only until it starts."""
    global _THREADS_STARTED
    if _THREADS_STARTED:
        return
    import torch

    before = torch.get_num_threads()
    nb.get_num_threads()
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
    _THREADS_STARTED = True


def threads() -> int:
    """Numba's thread count (its pool started by :func:`start_threads`)."""
    start_threads()
    return nb.get_num_threads()


FUSED_DOTS = 2


class Weights(NamedTuple):
    """W (G, H) = w_hh (a GRU's may come packed per neuron, (H, 3H): ``packed_gru``);
    WT (H, G) its transpose (event gate; else a placeholder); bias (G,) = b_hh."""

    W: np.ndarray
    WT: np.ndarray
    bias: np.ndarray


class Gate(NamedTuple):
    """The gate as the kernels see it. kind: ``contract.GATE_CODES``; gvals (T, H) rhythmic
    rows; off (T + 1,) int64 and idx (nnz,) int32: the compacted compute sets (off of length
    1: none, the kernel scans gvals); theta (H,) event thresholds; code, scale, gain: the
    event gate's surrogate; refresh: steps between exact recomputes of the event kernel's U h."""

    kind: int
    gvals: np.ndarray
    off: np.ndarray
    idx: np.ndarray
    theta: np.ndarray
    code: int
    scale: float
    refresh: int
    gain: float = 1.0


class Saved(NamedTuple):
    """RNN/GRU state for backward, written where ``on``: d = f - h, f (RNN), r, z, n, hn (GRU),
    g (event gate values); (B, T, H), or compact (nnz, B) on the GEMM path (row off[t] + k,
    or t * H + k for the dense gate, of step t's k-th computed neuron); placeholders else."""

    on: bool
    d: np.ndarray
    f: np.ndarray
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    hn: np.ndarray
    g: np.ndarray


class Grads(NamedTuple):
    """RNN/GRU gradients: dxp (B, T, G), dh0 (B, H); per chunk dW (C, G, H), db (C, G),
    dg (C, T, H) rhythmic gate, dth (C, H) event thresholds; GEMM path with the input
    projected inside the kernels: dx (B, T, F), dw_ih (C, G, F), db_ih (C, G)."""

    dxp: np.ndarray
    dh0: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    dg: np.ndarray
    dth: np.ndarray
    dx: np.ndarray
    dw_ih: np.ndarray
    db_ih: np.ndarray


# ------------------------------------------------------------------ surrogates, chunks
_ATAN, _FAST_SIGMOID, _SIGMOID, _STRAIGHT, _TRIANGLE = (
    SURROGATE_CODES[k] for k in ("atan", "fast_sigmoid", "sigmoid", "straight_through", "triangle")
)
_HALF_PI = 0.5 * math.pi


@nb.njit(cache=True, inline="always")
def surrogate_grad(code, scale, x):
    """sigma'(x) of su_neuro.surrogate (``code``: contract.SURROGATE_CODES)."""
    if code == _ATAN:
        y = _HALF_PI * scale * x
        return (0.5 * scale) / (1.0 + y * y)
    if code == _FAST_SIGMOID:
        y = scale * abs(x) + 1.0
        return 1.0 / (y * y)
    if code == _SIGMOID:  # even in x, so exp(-s|x|) never overflows
        e = math.exp(-scale * abs(x))
        return scale * e / ((1.0 + e) * (1.0 + e))
    if code == _STRAIGHT:
        return 1.0
    if code == _TRIANGLE:
        y = 1.0 - abs(x) / scale
        return y / scale if y > 0.0 else 0.0
    # rectangle
    return 1.0 / scale if abs(x) < 0.5 * scale else 0.0


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
# batch-chunk kernel exactly. 2.5x faster candidate loop (measured on 3.2 M GRU entries: 81
# vs 202-217 ms). The event-gate kernel used libm in double precision until 2026-12-06 (to
# flip fewer threshold decisions against the reference); it uses these too now: a decision
# flips only where |f - h| lies within a few float32 ulp of the threshold, and its forward
# became 1.8x faster (docs/benchmarks.md, "Event-gate forward").

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
# loops (``gru_candidates``) inline them into a fastmath=False loop: the same IEEE
# operations in the same order, no contraction, so lane p gets the bits of the scalar call.
# ``error_model="numpy"``: their only division is by 1 + e^y >= 1, so Python's zero-division
# check (a branch with a raise, which keeps LLVM from vectorising) is never needed.
_EXACT = {"cache": True, "fastmath": False, "error_model": "numpy"}

# The fast-math flags of the kernels whose comparisons decide what a neuron does (the event
# gate's |d| - theta > 0, a LIF spike's v - threshold > 0): every flag of fastmath=True but
# "nnan" and "ninf". Under those two a comparison with a NaN or inf (a step that overflowed)
# has no defined answer (seen: a NaN membrane fired a spike at every step, where the
# reference fires none); without them it is IEEE's, as in torch. Reassociation stays, so the
# loops still vectorise.
FINITE_FREE = {"nsz", "arcp", "contract", "afn", "reassoc"}


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


# ------------------------------------------------------------------ RNN / GRU candidates
# Written once, with the float32 functions above; inlined into their caller.


@nb.njit(inline="always")
def _gru32(xr, xz, xn, ur, uz, hn, h):
    r = _sigmoid32(xr + ur)
    z = _sigmoid32(xz + uz)
    n = _tanh32(xn + r * hn)
    return r, z, n, np.float32((1.0 - z) * n + z * h)


@nb.njit(inline="always")
def _rnn32(x, u):
    return _tanh32(x + u)


@nb.njit(**_EXACT)
def gru_candidate(xr, xz, xn, ur, uz, hn, h):
    """GRU candidate of one neuron: xr, xz, xn = input parts (W_ih x + b_ih), ur, uz =
    recurrent parts with their bias, hn = (U_n h)_i + b_hn, h = current state.
    Returns (r, z, n, f)."""
    return _gru32(xr, xz, xn, ur, uz, hn, h)


@nb.njit(**_EXACT)
def gru_candidates(n, xb, q, sc):
    """``gru_candidate`` of n neurons as one loop that LLVM vectorises, bit for bit (the same
    operations, fastmath off): neuron p's input parts are xb[q, 3p .. 3p + 2]; rows of sc in:
    0 ur, 1 uz, 2 hn, 3 h; out: 4 f, 5 r, 6 z, 7 n. ~2.5 ns a neuron instead of ~16 (AMD
    EPYC, AVX-512). Callers may round n up to a multiple of 16 over padding lanes, so that
    no scalar remainder runs."""
    for p in range(n):
        r, z, nn, f = _gru32(xb[q, 3 * p], xb[q, 3 * p + 1], xb[q, 3 * p + 2], sc[0, p], sc[1, p], sc[2, p], sc[3, p])
        sc[4, p] = f
        sc[5, p] = r
        sc[6, p] = z
        sc[7, p] = nn


@nb.njit(**_EXACT)
def rnn_candidate(x, u):
    """RNN candidate tanh(x + u) of one neuron: x = (W_ih x_t + b_ih)_i, u = (U h)_i + b_i.
    The sum is formed here, with fastmath off: in a fastmath kernel x + (a + b) may be
    reassociated, differently in two kernels."""
    return _rnn32(x, u)


@nb.njit(**_EXACT)
def rnn_candidates(n, xb, q, sc):
    """sc[4, p] = rnn_candidate(xb[q, p], sc[0, p]) for p < n (bit for bit, vectorised as
    ``gru_candidates``)."""
    for p in range(n):
        sc[4, p] = _rnn32(xb[q, p], sc[0, p])


@nb.njit(inline="always")
def gru_candidate_grad(dd, r, z, n, hn, h):
    """Backward of ``gru_candidate`` for the gradient dd of f: returns (dar, daz, dan, dhn,
    dh), the gradients of the pre-activations of r, z and n (dan also that of n's input
    part), of hn = (U_n h)_i + b_hn, and of h through f's z h term."""
    dn = dd * (1 - z)
    dz = dd * (h - n)
    dan = dn * (1 - n * n)
    dr = dan * hn
    daz = dz * z * (1 - z)
    dar = dr * r * (1 - r)
    return dar, daz, dan, dan * r, dd * z


@nb.njit(inline="always")
def rnn_candidate_grad(dd, f):
    """Backward of ``rnn_candidate`` for the gradient dd of f = tanh(a): dL/da."""
    return dd * (1 - f * f)


# ------------------------------------------------------------------ input, dot products
@nb.njit(**_EXACT)
def step_input(src, b, t, idx, s, e, dense, H, nr, buf):
    """Input pre-activations of sample b at step t for the neurons idx[s:e] (p itself for
    ``dense``): buf[(p - s) * nr + g] is row g * H + i of (W_ih x_t + b_ih), g < nr gate rows,
    read from ``src.xp`` or, fused, computed from ``src`` (a ``Source``): inference then
    projects only the rows of neurons that update. Compiled on its own with fastmath off
    (stated: see ``_EXACT``), so that every kernel gets the same bits (the neuron-split
    streaming kernel equals the batch-chunk kernel exactly). A ``w_ih`` packed per neuron
    (ops packs it for B = 1 GRU streams) gives the same products and sums, so the same bits."""
    fused, xp, x, wih, bih = src
    F = x.shape[2]
    packed = wih.shape[1] != F
    for p in range(s, e):
        i = p if dense else idx[p]
        for g in range(nr):
            r = g * H + i
            if not fused:
                buf[(p - s) * nr + g] = xp[b, t, r]
                continue
            wr = i if packed else r
            o = g * F if packed else 0
            # four running sums (lane f % 4) in a fixed order: vectorisable, no reassociation
            z = np.float32(0.0)
            a0, a1, a2, a3 = z, z, z, z
            f = 0
            while f + 4 <= F:
                a0 += x[b, t, f] * wih[wr, o + f]
                a1 += x[b, t, f + 1] * wih[wr, o + f + 1]
                a2 += x[b, t, f + 2] * wih[wr, o + f + 2]
                a3 += x[b, t, f + 3] * wih[wr, o + f + 3]
                f += 4
            if f < F:
                a0 += x[b, t, f] * wih[wr, o + f]
            if f + 1 < F:
                a1 += x[b, t, f + 1] * wih[wr, o + f + 1]
            if f + 2 < F:
                a2 += x[b, t, f + 2] * wih[wr, o + f + 2]
            buf[(p - s) * nr + g] = ((a0 + a2) + (a1 + a3)) + bih[r]


@nb.njit(cache=True, inline="always")
def packed_gru(is_gru, W, H):
    """Whether W is a GRU's W_hh packed per neuron, (H, 3H): row i holds neuron i's r, z
    and n rows one after the other (ops packs it for B = 1 streams), instead of (3H, H)."""
    return is_gru and H > 0 and W.shape[1] == 3 * H


@nb.njit(cache=True, inline="always")
def scan_open(gvals, t, lo, hi, loc):
    """loc[:n] = the neurons lo <= j < hi open at step t (gvals[t, j] != 0), in order;
    returns n. Branchless: a random 10 % open set mispredicts a branch on every one."""
    n = 0
    for j in range(lo, hi):
        loc[n] = j
        n += np.int64(gvals[t, j] != 0)
    return n


@nb.njit(cache=True, fastmath=True, inline="always")
def dots1(is_gru, W, i, H, hs, q, acc):
    """acc[g, 0] = row g * H + i of W times hs[q] (g < 3 GRU, 1 RNN)."""
    a = np.float32(0.0)
    if is_gru:
        z = np.float32(0.0)
        n = np.float32(0.0)
        for j in range(H):
            hj = hs[q, j]
            a += W[i, j] * hj
            z += W[H + i, j] * hj
            n += W[2 * H + i, j] * hj
        acc[1, 0] = z
        acc[2, 0] = n
    else:
        for j in range(H):
            a += W[i, j] * hs[q, j]
    acc[0, 0] = a


@nb.njit(cache=True, fastmath=True, inline="always")
def dots_packed(W, i, H, hs, q, acc):
    """``dots1`` of a GRU neuron from W_hh packed per neuron (``packed_gru``); the same loop
    over j, so the same bits. A separate function: one ``dots1`` choosing the offsets at
    run time compiled to ~10 % slower code (87-91 against 80 ns a packed neuron from L3)."""
    a = np.float32(0.0)
    z = np.float32(0.0)
    n = np.float32(0.0)
    for j in range(H):
        hj = hs[q, j]
        a += W[i, j] * hj
        z += W[i, H + j] * hj
        n += W[i, 2 * H + j] * hj
    acc[0, 0] = a
    acc[1, 0] = z
    acc[2, 0] = n
