r"""Event-gate kernels of the RNN and GRU (forward and BPTT), one sample at a time.

Every neuron computes its candidate f at every step (the gate looks at it: open where
|f - h| > theta), but the state changes only where the gate opened, so the recurrent input
u = U h is carried forward by delta accumulation, ``u += U[:, j] * (h_j' - h_j)`` over the
changed neurons only, in float64, recomputed exactly every ``gate.refresh`` steps (drift
bound in ops' docstring). The candidates of all H neurons are computed first, in one
vectorised loop of the float32 functions of ``_common`` (``_candidates``), then the gate
decides row by row.

Layouts (float32, C order): xp (B, T, G) projected input; h0 (B, H); ``Weights``: W (G, H),
WT (H, G) its transpose (the columns of the changed neurons), bias (G,); ``Gate``: theta
(H,), the surrogate's code and scale, refresh; ``Saved`` (B, T, H): d, f (RNN), r, z, n, hn
(GRU), g; ``Grads``: dxp (B, T, G), dh0 (B, H), per chunk dW (C, G, H), db (C, G), dth (C, H).
``forward`` / ``backward`` run prange over batch chunks; ``lens`` (B,) int64: sample b runs
its first lens[b] steps (a padded batch in one call; T for every sample otherwise).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._common import (
    _EXACT,
    FINITE_FREE,
    _gru32,
    _rnn32,
    chunk,
    gru_candidate_grad,
    packed_gru,
    rnn_candidate_grad,
    sign,
    surrogate_grad,
)

__all__ = ["forward", "backward"]


@nb.njit(**_EXACT)
def _candidates(is_gru, xp, b, t, u, bias, h, sc):
    """The candidates of all H neurons of sample b at step t as one loop that LLVM
    vectorises (fastmath off: the float32 functions of ``_common``, the bits of the scalar
    call): rows of sc out: 0 f, 1 r, 2 z, 3 n, 4 hn (GRU; RNN: row 0 only)."""
    H = h.shape[0]
    if is_gru:
        for i in range(H):
            # the recurrent part with its bias first, then the input part: as the reference
            hr = np.float32(u[i]) + bias[i]
            hz = np.float32(u[H + i]) + bias[H + i]
            hn = np.float32(u[2 * H + i]) + bias[2 * H + i]
            r, z, n, f = _gru32(xp[b, t, i], xp[b, t, H + i], xp[b, t, 2 * H + i], hr, hz, hn, h[i])
            sc[0, i] = f
            sc[1, i] = r
            sc[2, i] = z
            sc[3, i] = n
            sc[4, i] = hn
    else:
        for i in range(H):
            sc[0, i] = _rnn32(xp[b, t, i], np.float32(u[i]) + bias[i])


@nb.njit(cache=True, fastmath=FINITE_FREE)
def _forward_chunk(c, is_gru, xp, h0, weights, gate, lens, nchunks, out, hT, saved):
    B, T, G = xp.shape
    H = h0.shape[1]
    W, WT, bias = weights.W, weights.WT, weights.bias
    theta, refresh, save = gate.theta, gate.refresh, saved.on
    lo, hi = chunk(c, nchunks, B)
    h = np.empty(H, np.float32)
    u = np.zeros(G, np.float64)
    sc = np.empty((5, H), np.float32)
    chg = np.empty(H, np.int32)
    dlt = np.empty(H, np.float64)
    for b in range(lo, hi):
        for j in range(H):
            h[j] = h0[b, j]
        L = lens[b]
        for t in range(L):
            if t % refresh == 0:
                for r in range(G):
                    acc = 0.0
                    for j in range(H):
                        acc += np.float64(W[r, j]) * np.float64(h[j])
                    u[r] = acc
            _candidates(is_gru, xp, b, t, u, bias, h, sc)
            nchg = 0
            for i in range(H):
                hi_ = h[i]
                d = np.float32(sc[0, i] - hi_)
                g = np.float32(1.0) if abs(d) - theta[i] > 0 else np.float32(0.0)
                if save:
                    saved.d[b, t, i] = d
                    saved.g[b, t, i] = g
                    if is_gru:
                        saved.r[b, t, i] = sc[1, i]
                        saved.z[b, t, i] = sc[2, i]
                        saved.n[b, t, i] = sc[3, i]
                        saved.hn[b, t, i] = sc[4, i]
                    else:
                        saved.f[b, t, i] = sc[0, i]
                if g > 0:
                    hnew = np.float32(hi_ + g * d)
                    h[i] = hnew
                    chg[nchg] = i
                    dlt[nchg] = np.float64(hnew) - np.float64(hi_)
                    nchg += 1
            for k in range(nchg):
                j = chg[k]
                dj = dlt[k]
                for r in range(G):
                    u[r] += np.float64(WT[j, r]) * dj
            for j in range(H):
                out[b, t, j] = h[j]
        for t in range(L, T):  # padding: no output, no event (the record reads g)
            for j in range(H):
                out[b, t, j] = 0.0
                if save:
                    saved.g[b, t, j] = 0.0
        for j in range(H):
            hT[b, j] = h[j]


@nb.njit(cache=True, fastmath=FINITE_FREE)
def _backward_chunk(c, is_gru, h0, W, gate, lens, nchunks, out, saved, upstream, grads):
    dout, dhT, dgrec = upstream
    dxp = grads.dxp
    B, T, G = dxp.shape
    H = h0.shape[1]
    theta, gcode, gscale, ggain = gate.theta, gate.code, gate.scale, gate.gain
    lo, hi = chunk(c, nchunks, B)
    lam = np.empty(H, np.float32)
    lamp = np.empty(H, np.float32)
    rows = np.empty(3, np.int64)
    vals = np.empty(3, np.float32)
    dWc = grads.dW[c]
    dbc = grads.db[c]
    dthc = grads.dth[c]
    has_dgrec = dgrec.shape == dout.shape  # else a placeholder: the record has no gradient
    for b in range(lo, hi):
        for j in range(H):
            lam[j] = dhT[b, j]
        for t in range(lens[b] - 1, -1, -1):
            for j in range(H):
                lam[j] += dout[b, t, j]
                lamp[j] = lam[j]
            hp = out[b, t - 1] if t > 0 else h0[b]
            for i in range(H):
                li = lam[i]
                d = saved.d[b, t, i]
                g = saved.g[b, t, i]
                dgi = li * d
                if has_dgrec:  # the record's own gradient (a rate penalty on rec.gate)
                    dgi += dgrec[b, t, i]
                x = abs(d) - theta[i]
                sg = np.float32(ggain * surrogate_grad(gcode, gscale, x))
                dd = g * li + dgi * sg * sign(d)
                dthc[i] -= dgi * sg
                if dd == 0:
                    continue
                lamp[i] -= dd
                if is_gru:
                    dar, daz, dan, dhn, dh = gru_candidate_grad(
                        dd, saved.r[b, t, i], saved.z[b, t, i], saved.n[b, t, i], saved.hn[b, t, i], hp[i]
                    )
                    lamp[i] += dh
                    dxp[b, t, i] = dar
                    dxp[b, t, H + i] = daz
                    dxp[b, t, 2 * H + i] = dan
                    rows[0] = i
                    rows[1] = H + i
                    rows[2] = 2 * H + i
                    vals[0] = dar
                    vals[1] = daz
                    vals[2] = dhn
                    nr = 3
                else:
                    da = rnn_candidate_grad(dd, saved.f[b, t, i])
                    dxp[b, t, i] = da
                    rows[0] = i
                    vals[0] = da
                    nr = 1
                for q in range(nr):
                    row = rows[q]
                    v = vals[q]
                    dbc[row] += v
                    for j in range(H):
                        lamp[j] += W[row, j] * v
                        dWc[row, j] += v * hp[j]
            for j in range(H):
                lam[j] = lamp[j]
        for j in range(H):
            grads.dh0[b, j] = lam[j]


@nb.njit(cache=True, parallel=True)
def forward(is_gru, xp, h0, weights, gate, lens, nchunks, out, hT, saved):
    """Parallel over batch chunks; each chunk runs its own time loop, sample b for its
    first lens[b] steps (B,) int64; its outputs after them are zero, hT its state after them."""
    if packed_gru(is_gru, weights.W, h0.shape[1]):
        raise ValueError("a packed W_hh is for single-sample chunks of the rhythmic / dense kernel")
    for c in nb.prange(nchunks):
        _forward_chunk(c, is_gru, xp, h0, weights, gate, lens, nchunks, out, hT, saved)


@nb.njit(cache=True, parallel=True)
def backward(is_gru, h0, W, gate, lens, nchunks, out, saved, upstream, grads):
    """BPTT of ``forward``; ``upstream`` = (dout (B, T, H), dhT (B, H), dgrec): dgrec (B, T, H)
    the incoming dL/dg of the recorded gate values, or a (1, 1, 1) placeholder where the
    record has no gradient."""
    for c in nb.prange(nchunks):
        _backward_chunk(c, is_gru, h0, W, gate, lens, nchunks, out, saved, upstream, grads)
