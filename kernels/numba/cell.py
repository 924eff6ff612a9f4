"""Numba kernels of the RNN and GRU recurrences (forward and BPTT).

Layouts (float32, C order): xp (B, T, G), h0 (B, H), W (G, H) = w_hh, WT (H, G) its
transpose, bias (G,), gate rows g (T, H); compacted compute set: step t's neurons are
idx[off[t]:off[t+1]]. Saved for backward (B, T, H): d = f - h, RNN f, GRU r, z, n, hn.
Per-chunk gradient buffers (C, ...) are summed by the launcher.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._common import DENSE, EVENT, chunk, sign, surrogate_grad


@nb.njit(cache=True, inline="always")
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@nb.njit(cache=True, fastmath=True)
def _forward_chunk(
    c,
    is_gru,
    gkind,
    xp,
    h0,
    W,
    WT,
    bias,
    gvals,
    off,
    idx,
    theta,
    gcode,
    gscale,
    refresh,
    save,
    nchunks,
    out,
    hT,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    gsave,
):
    B, T, G = xp.shape
    H = h0.shape[1]
    lo, hi = chunk(c, nchunks, B)
    h = np.empty(H, np.float32)
    fbuf = np.empty(H, np.float32)
    u = np.zeros(G, np.float64)
    chg = np.empty(H, np.int32)
    dlt = np.empty(H, np.float64)
    for b in range(lo, hi):
        for j in range(H):
            h[j] = h0[b, j]
        for t in range(T):
            if gkind == EVENT:
                # delta accumulation: u = W h carried in float64, exact refresh every `refresh` steps
                if t % refresh == 0:
                    for r in range(G):
                        acc = 0.0
                        for j in range(H):
                            acc += np.float64(W[r, j]) * np.float64(h[j])
                        u[r] = acc
                nchg = 0
                for i in range(H):
                    hi_ = h[i]
                    if is_gru:
                        hr = np.float32(u[i]) + bias[i]
                        hz = np.float32(u[H + i]) + bias[H + i]
                        hn = np.float32(u[2 * H + i]) + bias[2 * H + i]
                        r = np.float32(_sigmoid(xp[b, t, i] + hr))
                        z = np.float32(_sigmoid(xp[b, t, H + i] + hz))
                        n = np.float32(math.tanh(xp[b, t, 2 * H + i] + r * hn))
                        f = np.float32((1.0 - z) * n + z * hi_)
                    else:
                        f = np.float32(math.tanh(xp[b, t, i] + (np.float32(u[i]) + bias[i])))
                    d = np.float32(f - hi_)
                    g = np.float32(1.0) if abs(d) - theta[i] > 0 else np.float32(0.0)
                    if save:
                        dsave[b, t, i] = d
                        gsave[b, t, i] = g
                        if is_gru:
                            rsave[b, t, i] = r
                            zsave[b, t, i] = z
                            nsave[b, t, i] = n
                            hnsave[b, t, i] = hn
                        else:
                            fsave[b, t, i] = f
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
            else:
                # compacted rows: candidates only for the step's compute set
                n_t = H if gkind == DENSE else off[t + 1] - off[t]
                base = 0 if gkind == DENSE else off[t]
                for k in range(n_t):
                    i = k if gkind == DENSE else idx[base + k]
                    hi_ = h[i]
                    if is_gru:
                        ar = np.float32(0.0)
                        az = np.float32(0.0)
                        an = np.float32(0.0)
                        for j in range(H):
                            hj = h[j]
                            ar += W[i, j] * hj
                            az += W[H + i, j] * hj
                            an += W[2 * H + i, j] * hj
                        hn = an + bias[2 * H + i]
                        r = np.float32(_sigmoid(xp[b, t, i] + (ar + bias[i])))
                        z = np.float32(_sigmoid(xp[b, t, H + i] + (az + bias[H + i])))
                        n = np.float32(math.tanh(xp[b, t, 2 * H + i] + r * hn))
                        f = np.float32((1.0 - z) * n + z * hi_)
                        if save:
                            rsave[b, t, i] = r
                            zsave[b, t, i] = z
                            nsave[b, t, i] = n
                            hnsave[b, t, i] = hn
                    else:
                        a = np.float32(0.0)
                        for j in range(H):
                            a += W[i, j] * h[j]
                        f = np.float32(math.tanh(xp[b, t, i] + (a + bias[i])))
                        if save:
                            fsave[b, t, i] = f
                    fbuf[k] = f
                    if save:
                        dsave[b, t, i] = f - hi_
                for k in range(n_t):
                    if gkind == DENSE:
                        h[k] = fbuf[k]
                    else:
                        i = idx[base + k]
                        g = gvals[t, i]
                        if g != 0:
                            h[i] = h[i] + g * (fbuf[k] - h[i])
            for j in range(H):
                out[b, t, j] = h[j]
        for j in range(H):
            hT[b, j] = h[j]


@nb.njit(cache=True, fastmath=True)
def _backward_chunk(
    c,
    is_gru,
    gkind,
    h0,
    W,
    gvals,
    off,
    idx,
    theta,
    gcode,
    gscale,
    nchunks,
    out,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    gsave,
    dout,
    dhT,
    dxp,
    dh0,
    dW,
    db,
    dg,
    dth,
):
    B, T, G = dxp.shape
    H = h0.shape[1]
    lo, hi = chunk(c, nchunks, B)
    lam = np.empty(H, np.float32)
    lamp = np.empty(H, np.float32)
    rows = np.empty(3, np.int64)
    vals = np.empty(3, np.float32)
    dWc = dW[c]
    dbc = db[c]
    dgc = dg[c]
    dthc = dth[c]
    for b in range(lo, hi):
        for j in range(H):
            lam[j] = dhT[b, j]
        for t in range(T - 1, -1, -1):
            for j in range(H):
                lam[j] += dout[b, t, j]
                lamp[j] = lam[j]
            hp = out[b, t - 1] if t > 0 else h0[b]
            if gkind == EVENT or gkind == DENSE:
                n_t = H
                base = 0
            else:
                n_t = off[t + 1] - off[t]
                base = off[t]
            for k in range(n_t):
                i = idx[base + k] if gkind == 0 else k
                li = lam[i]
                d = dsave[b, t, i]
                if gkind == DENSE:
                    dd = li
                elif gkind == EVENT:
                    g = gsave[b, t, i]
                    dgi = li * d
                    x = abs(d) - theta[i]
                    sg = np.float32(surrogate_grad(gcode, gscale, x))
                    dd = g * li + dgi * sg * sign(d)
                    dthc[i] -= dgi * sg
                else:
                    g = gvals[t, i]
                    dgc[t, i] += li * d
                    dd = g * li
                if dd == 0:
                    continue
                lamp[i] -= dd
                if is_gru:
                    r = rsave[b, t, i]
                    z = zsave[b, t, i]
                    n = nsave[b, t, i]
                    hn = hnsave[b, t, i]
                    dn = dd * (1 - z)
                    dz = dd * (hp[i] - n)
                    lamp[i] += dd * z
                    dan = dn * (1 - n * n)
                    dr = dan * hn
                    daz = dz * z * (1 - z)
                    dar = dr * r * (1 - r)
                    dxp[b, t, i] = dar
                    dxp[b, t, H + i] = daz
                    dxp[b, t, 2 * H + i] = dan
                    rows[0] = i
                    rows[1] = H + i
                    rows[2] = 2 * H + i
                    vals[0] = dar
                    vals[1] = daz
                    vals[2] = dan * r
                    nr = 3
                else:
                    f = fsave[b, t, i]
                    da = dd * (1 - f * f)
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
            dh0[b, j] = lam[j]


@nb.njit(cache=True, parallel=True)
def forward(
    is_gru,
    gkind,
    xp,
    h0,
    W,
    WT,
    bias,
    gvals,
    off,
    idx,
    theta,
    gcode,
    gscale,
    refresh,
    save,
    nchunks,
    out,
    hT,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    gsave,
):
    """Parallel over batch chunks; each chunk runs its own whole time loop."""
    for c in nb.prange(nchunks):
        _forward_chunk(
            c,
            is_gru,
            gkind,
            xp,
            h0,
            W,
            WT,
            bias,
            gvals,
            off,
            idx,
            theta,
            gcode,
            gscale,
            refresh,
            save,
            nchunks,
            out,
            hT,
            dsave,
            fsave,
            rsave,
            zsave,
            nsave,
            hnsave,
            gsave,
        )


@nb.njit(cache=True, parallel=True)
def backward(
    is_gru,
    gkind,
    h0,
    W,
    gvals,
    off,
    idx,
    theta,
    gcode,
    gscale,
    nchunks,
    out,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    gsave,
    dout,
    dhT,
    dxp,
    dh0,
    dW,
    db,
    dg,
    dth,
):
    """Parallel over batch chunks; each chunk runs its own whole time loop."""
    for c in nb.prange(nchunks):
        _backward_chunk(
            c,
            is_gru,
            gkind,
            h0,
            W,
            gvals,
            off,
            idx,
            theta,
            gcode,
            gscale,
            nchunks,
            out,
            dsave,
            fsave,
            rsave,
            zsave,
            nsave,
            hnsave,
            gsave,
            dout,
            dhT,
            dxp,
            dh0,
            dW,
            db,
            dg,
            dth,
        )
