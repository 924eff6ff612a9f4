"""Compaction of a gate's (T, H) rows into per-step index lists (the compute sets).

Layouts: g (T, H) gate rows, support (T, H) bool or None; out: offsets (T + 1,) int64 and
idx (nnz,) int32, step t's neurons idx[offsets[t]:offsets[t + 1]] in increasing order.
Two passes over blocks of steps, in parallel: count each step's entries, prefix-sum the
counts into offsets, then write each step's indices at its offset.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._common import chunk, threads

__all__ = ["COMPACT_PARALLEL_MIN", "compact"]

#: below this many (step, neuron) entries ``compact`` runs on one thread
COMPACT_PARALLEL_MIN = 1 << 20


@nb.njit(cache=True, inline="always")
def _listed(g, support, use_support, t, i):
    return g[t, i] != 0 or (use_support and support[t, i])


@nb.njit(cache=True, parallel=True)
def _compact(g, support, use_support, nparts, offsets, idx):
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
    nparts = threads() if T * H >= COMPACT_PARALLEL_MIN else 1
    n = _compact(g, support if use else np.zeros((1, 1), np.bool_), use, nparts, offsets, idx)
    return offsets, idx[:n]
