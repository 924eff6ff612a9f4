"""Helpers shared by the Numba kernels: surrogate derivatives, gate codes, thread chunks."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

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


@nb.njit(cache=True)
def _compact(g, support, use_support, offsets, idx):
    T, H = g.shape
    n = 0
    for t in range(T):
        offsets[t] = n
        for i in range(H):
            if g[t, i] != 0 or (use_support and support[t, i]):
                idx[n] = i
                n += 1
    offsets[T] = n
    return n


def compact(g: np.ndarray, support: np.ndarray | None = None):
    """Per-step index lists of the neurons to compute: open (g != 0) or in ``support``.

    g: (T, H) gate rows; support: (T, H) bool or None. Returns (offsets (T+1,) int64,
    idx (nnz,) int32): step t's neurons are idx[offsets[t]:offsets[t+1]], increasing.
    """
    T, H = g.shape
    offsets = np.empty(T + 1, np.int64)
    idx = np.empty(T * H, np.int32)
    use = support is not None
    n = _compact(g, support if use else np.zeros((1, 1), np.bool_), use, offsets, idx)
    return offsets, idx[:n]


def nchunks(batch: int) -> int:
    return max(1, min(batch, nb.get_num_threads()))
