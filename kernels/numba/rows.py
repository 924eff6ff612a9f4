"""Rhythmic and dense gates, RNN and GRU (forward and BPTT): batch chunks, row blocks.

The samples of a chunk share one time loop; only the step's compute set (a rhythmic gate's
open neurons, compacted into lists or, without lists, found by a branchless scan of the gate
row; every neuron for the dense gate) computes a candidate, and each of its rows' dot
products is taken for 4 samples at once (12 independent GRU accumulators: the j loop
vectorises without a reduction chain bottleneck, and each weight row is loaded once per 4
samples). Closed neurons pass their state through untouched.

Layouts (float32, C order): ``Source`` (the input, ``_common.step_input``); h0 (B, H);
``Weights``: W (G, H) (for single-sample chunks a GRU's may come packed per neuron,
(H, 3H)), bias (G,); ``Gate``: gvals (T, H), off (T + 1,) and idx, or off of length 1 (scan);
``Saved`` (B, T, H): d, f (RNN), r, z, n, hn (GRU); ``Grads``: dxp (B, T, G), dh0 (B, H), per
chunk dW (C, G, H), db (C, G), dg (C, T, H). ``forward`` / ``backward`` run prange over chunks.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..contract import DENSE
from ._common import (
    chunk,
    dots1,
    dots_packed,
    gru_candidate,
    gru_candidate_grad,
    packed_gru,
    rnn_candidate,
    rnn_candidate_grad,
    scan_open,
    step_input,
)

__all__ = ["forward", "backward"]


@nb.njit(cache=True, fastmath=True, inline="always")
def _dots4(is_gru, W, i, H, hs, q, acc):
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    if is_gru:
        z0 = np.float32(0.0)
        z1 = np.float32(0.0)
        z2 = np.float32(0.0)
        z3 = np.float32(0.0)
        n0 = np.float32(0.0)
        n1 = np.float32(0.0)
        n2 = np.float32(0.0)
        n3 = np.float32(0.0)
        for j in range(H):
            wr = W[i, j]
            wz = W[H + i, j]
            wn = W[2 * H + i, j]
            h0 = hs[q, j]
            h1 = hs[q + 1, j]
            h2 = hs[q + 2, j]
            h3 = hs[q + 3, j]
            a0 += wr * h0
            a1 += wr * h1
            a2 += wr * h2
            a3 += wr * h3
            z0 += wz * h0
            z1 += wz * h1
            z2 += wz * h2
            z3 += wz * h3
            n0 += wn * h0
            n1 += wn * h1
            n2 += wn * h2
            n3 += wn * h3
        acc[1, 0] = z0
        acc[1, 1] = z1
        acc[1, 2] = z2
        acc[1, 3] = z3
        acc[2, 0] = n0
        acc[2, 1] = n1
        acc[2, 2] = n2
        acc[2, 3] = n3
    else:
        for j in range(H):
            wr = W[i, j]
            a0 += wr * hs[q, j]
            a1 += wr * hs[q + 1, j]
            a2 += wr * hs[q + 2, j]
            a3 += wr * hs[q + 3, j]
    acc[0, 0] = a0
    acc[0, 1] = a1
    acc[0, 2] = a2
    acc[0, 3] = a3


@nb.njit(cache=True, fastmath=True)
def _forward_chunk(c, is_gru, src, h0, weights, gate, nchunks, out, hT, saved):
    B, T, H = out.shape
    W, bias = weights.W, weights.bias
    gkind, gvals, off, idx = gate.kind, gate.gvals, gate.off, gate.idx
    save = saved.on
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    nr = 3 if is_gru else 1
    hs = np.empty((m, H), np.float32)
    fb = np.empty((H, m), np.float32)
    xb = np.empty((m, nr * H), np.float32)
    acc = np.empty((3, 4), np.float32)
    # a rhythmic gate without compacted lists (off of length 1): each step's open neurons
    # come from a branchless scan of its gate row (B = 1 inference: cheaper than the
    # (T, H) compaction)
    scan = gkind != DENSE and off.shape[0] != T + 1
    packed = packed_gru(is_gru, W, H)  # single-sample dots only: ``forward`` checks m < 4
    loc = np.empty(H if scan else 1, np.int32)
    ix = loc if scan else idx
    for q in range(m):
        for j in range(H):
            hs[q, j] = h0[lo + q, j]
    for t in range(T):
        if scan:
            n_t = scan_open(gvals, t, 0, H, loc)
            base = 0
        else:
            n_t = H if gkind == DENSE else off[t + 1] - off[t]
            base = 0 if gkind == DENSE else off[t]
        for q in range(m):
            step_input(src, lo + q, t, ix, base, base + n_t, gkind == DENSE, H, nr, xb[q])
        for k in range(n_t):
            i = k if gkind == DENSE else ix[base + k]
            q = 0
            while q < m:
                if q + 4 <= m:
                    _dots4(is_gru, W, i, H, hs, q, acc)
                    nq = 4
                elif packed:
                    dots_packed(W, i, H, hs, q, acc)
                    nq = 1
                else:
                    dots1(is_gru, W, i, H, hs, q, acc)
                    nq = 1
                for s in range(nq):
                    b = lo + q + s
                    hi_ = hs[q + s, i]
                    if is_gru:
                        hn = acc[2, s] + bias[2 * H + i]
                        r, z, n, f = gru_candidate(
                            xb[q + s, 3 * k], xb[q + s, 3 * k + 1], xb[q + s, 3 * k + 2],
                            acc[0, s] + bias[i], acc[1, s] + bias[H + i], hn, hi_,
                        )  # fmt: skip
                        if save:
                            saved.r[b, t, i] = r
                            saved.z[b, t, i] = z
                            saved.n[b, t, i] = n
                            saved.hn[b, t, i] = hn
                    else:
                        f = rnn_candidate(xb[q + s, k], acc[0, s] + bias[i])
                        if save:
                            saved.f[b, t, i] = f
                    fb[k, q + s] = f
                    if save:
                        saved.d[b, t, i] = f - hi_
                q += nq
        for k in range(n_t):
            if gkind == DENSE:
                for q in range(m):
                    hs[q, k] = fb[k, q]
            else:
                i = ix[base + k]
                g = gvals[t, i]
                if g != 0:
                    for q in range(m):
                        hs[q, i] = hs[q, i] + g * (fb[k, q] - hs[q, i])
        for q in range(m):
            for j in range(H):
                out[lo + q, t, j] = hs[q, j]
    for q in range(m):
        for j in range(H):
            hT[lo + q, j] = hs[q, j]


@nb.njit(cache=True, fastmath=True)
def _backward_chunk(c, is_gru, h0, W, gate, nchunks, out, saved, upstream, grads):
    dout, dhT = upstream
    dxp = grads.dxp
    B, T, G = dxp.shape
    H = h0.shape[1]
    gkind, gvals, off, idx = gate.kind, gate.gvals, gate.off, gate.idx
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    lam = np.empty((m, H), np.float32)
    lamp = np.empty((m, H), np.float32)
    vals = np.empty((3, m), np.float32)
    dWc = grads.dW[c]
    dbc = grads.db[c]
    dgc = grads.dg[c]
    nr = 3 if is_gru else 1
    for q in range(m):
        for j in range(H):
            lam[q, j] = dhT[lo + q, j]
    for t in range(T - 1, -1, -1):
        for q in range(m):
            for j in range(H):
                lam[q, j] += dout[lo + q, t, j]
                lamp[q, j] = lam[q, j]
        n_t = H if gkind == DENSE else off[t + 1] - off[t]
        base = 0 if gkind == DENSE else off[t]
        for k in range(n_t):
            i = k if gkind == DENSE else idx[base + k]
            active = False
            for q in range(m):
                b = lo + q
                li = lam[q, i]
                if gkind == DENSE:
                    dd = li
                else:
                    dgc[t, i] += li * saved.d[b, t, i]
                    dd = gvals[t, i] * li
                for r3 in range(nr):
                    vals[r3, q] = 0
                if dd == 0:
                    continue
                active = True
                lamp[q, i] -= dd
                if is_gru:
                    hpi = out[b, t - 1, i] if t > 0 else h0[b, i]
                    dar, daz, dan, dhn, dh = gru_candidate_grad(
                        dd, saved.r[b, t, i], saved.z[b, t, i], saved.n[b, t, i], saved.hn[b, t, i], hpi
                    )
                    lamp[q, i] += dh
                    dxp[b, t, i] = dar
                    dxp[b, t, H + i] = daz
                    dxp[b, t, 2 * H + i] = dan
                    vals[0, q] = dar
                    vals[1, q] = daz
                    vals[2, q] = dhn
                else:
                    da = rnn_candidate_grad(dd, saved.f[b, t, i])
                    dxp[b, t, i] = da
                    vals[0, q] = da
            if not active:
                continue
            for r3 in range(nr):
                row = i + r3 * H
                for q in range(m):
                    v = vals[r3, q]
                    if v != 0:
                        dbc[row] += v
                        for j in range(H):
                            lamp[q, j] += W[row, j] * v
                q = 0
                while q < m:
                    if q + 4 <= m:
                        v0 = vals[r3, q]
                        v1 = vals[r3, q + 1]
                        v2 = vals[r3, q + 2]
                        v3 = vals[r3, q + 3]
                        p0 = out[lo + q, t - 1] if t > 0 else h0[lo + q]
                        p1 = out[lo + q + 1, t - 1] if t > 0 else h0[lo + q + 1]
                        p2 = out[lo + q + 2, t - 1] if t > 0 else h0[lo + q + 2]
                        p3 = out[lo + q + 3, t - 1] if t > 0 else h0[lo + q + 3]
                        for j in range(H):
                            dWc[row, j] += v0 * p0[j] + v1 * p1[j] + v2 * p2[j] + v3 * p3[j]
                        q += 4
                    else:
                        v = vals[r3, q]
                        if v != 0:
                            p0 = out[lo + q, t - 1] if t > 0 else h0[lo + q]
                            for j in range(H):
                                dWc[row, j] += v * p0[j]
                        q += 1
        for q in range(m):
            for j in range(H):
                lam[q, j] = lamp[q, j]
    for q in range(m):
        for j in range(H):
            grads.dh0[lo + q, j] = lam[q, j]


@nb.njit(cache=True, parallel=True)
def forward(is_gru, src, h0, weights, gate, nchunks, out, hT, saved):
    """Parallel over batch chunks; each chunk runs its own whole time loop. ``src``: the
    input (a ``Source``)."""
    B, _, H = out.shape
    if packed_gru(is_gru, weights.W, H) and (B + nchunks - 1) // nchunks >= 4:
        raise ValueError("a packed W_hh is for single-sample chunks of the rhythmic / dense kernel")
    for c in nb.prange(nchunks):
        _forward_chunk(c, is_gru, src, h0, weights, gate, nchunks, out, hT, saved)


@nb.njit(cache=True, parallel=True)
def backward(is_gru, h0, W, gate, nchunks, out, saved, upstream, grads):
    """BPTT of ``forward``; ``upstream`` = (dout (B, T, H), dhT (B, H))."""
    for c in nb.prange(nchunks):
        _backward_chunk(c, is_gru, h0, W, gate, nchunks, out, saved, upstream, grads)
