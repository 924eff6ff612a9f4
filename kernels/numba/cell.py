"""Numba kernels of the RNN and GRU recurrences (forward and BPTT).

Layouts (float32, C order): xp (B, T, G), h0 (B, H), W (G, H) = w_hh, WT (H, G) its
transpose, bias (G,), gate rows g (T, H); compacted compute set: step t's neurons are
idx[off[t]:off[t+1]]. Saved for backward (B, T, H): d = f - h, RNN f, GRU r, z, n, hn.
Per-chunk gradient buffers (C, ...) are summed by the launcher.

``forward`` / ``backward`` run prange over batch chunks. Event gate: ``_forward_chunk`` /
``_backward_chunk`` (one sample at a time, delta-accumulated U h; they also implement the
other gates, as the simplest statement of the arithmetic). Rhythmic and dense gates:
``_forward_chunk_rd`` / ``_backward_chunk_rd`` (the chunk's samples share the time loop and
each compacted row is taken for 4 samples at once).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._common import _EXACT, DENSE, EVENT, _sigmoid32, _tanh32, chunk, sign, surrogate_grad


@nb.njit(cache=True, inline="always")
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@nb.njit(inline="always")
def _gru_f(xr, xz, xn, ur, uz, hn, h):
    r = _sigmoid32(xr + ur)
    z = _sigmoid32(xz + uz)
    n = _tanh32(xn + r * hn)
    return r, z, n, np.float32((1.0 - z) * n + z * h)


@nb.njit(**_EXACT)
def gru_candidate(xr, xz, xn, ur, uz, hn, h):
    """GRU candidate of one neuron (rhythmic / dense kernels): xr, xz, xn = input parts
    (W_ih x + b_ih), ur, uz = recurrent parts with their bias, hn = (U_n h)_i + b_hn,
    h = current state. Returns (r, z, n, f)."""
    return _gru_f(xr, xz, xn, ur, uz, hn, h)


@nb.njit(**_EXACT)
def gru_candidates(n, xb, q, sc):
    """``gru_candidate`` of n neurons as one loop that LLVM vectorises, bit for bit (the same
    operations, fastmath off): neuron p's input parts are xb[q, 3p .. 3p + 2]; rows of sc in:
    0 ur, 1 uz, 2 hn, 3 h; out: 4 f, 5 r, 6 z, 7 n. ~2.5 ns a neuron instead of ~16 (AMD
    EPYC, AVX-512). Callers may round n up to a multiple of 16 over padding lanes, so that
    no scalar remainder runs."""
    for p in range(n):
        r, z, nn, f = _gru_f(xb[q, 3 * p], xb[q, 3 * p + 1], xb[q, 3 * p + 2], sc[0, p], sc[1, p], sc[2, p], sc[3, p])
        sc[4, p] = f
        sc[5, p] = r
        sc[6, p] = z
        sc[7, p] = nn


@nb.njit(**_EXACT)
def rnn_candidate(x, u):
    """RNN candidate tanh(x + u) of one neuron: x = (W_ih x_t + b_ih)_i, u = (U h)_i + b_i.
    The sum is formed here, with fastmath off: in a fastmath kernel x + (a + b) may be
    reassociated, differently in two kernels."""
    return _tanh32(x + u)


@nb.njit(**_EXACT)
def rnn_candidates(n, xb, q, sc):
    """sc[4, p] = rnn_candidate(xb[q, p], sc[0, p]) for p < n (bit for bit, vectorised as
    ``gru_candidates``)."""
    for p in range(n):
        sc[4, p] = _tanh32(xb[q, p] + sc[0, p])


@nb.njit(**_EXACT)
def step_input(src, b, t, idx, s, e, dense, H, nr, buf):
    """Input pre-activations of sample b at step t for the neurons idx[s:e] (p itself for
    ``dense``): buf[(p - s) * nr + g] is row g * H + i of (W_ih x_t + b_ih), g < nr gate rows.

    ``src = (fused, xp, x, w_ih, b_ih)``: gathered from ``xp`` (B, T, G), projected by the
    layer beforehand, or with ``fused`` computed here from x (B, T, F), w_ih (G, F) and
    b_ih (G,): inference then projects only the rows of neurons that update. One call per
    step and sample, compiled on its own with fastmath off (stated: see ``_common._EXACT``),
    so that every kernel gets the same bits (the neuron-split streaming kernel equals the
    batch-chunk kernel exactly). ``w_ih`` may come packed per neuron, (H, nr * F) with
    row g * H + i at [i, g * F:(g + 1) * F]: a neuron's rows are then
    one contiguous run (ops packs it for B = 1 GRU streams); the same products and sums, so
    the same bits."""
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


# ------------------------------------------------------ rhythmic / dense: batch blocks
# The samples of a chunk share one time loop; each compacted row's dot products are
# taken for 4 samples at once (12 independent GRU accumulators: the j loop vectorises
# without a reduction chain bottleneck, and each weight row is loaded once per 4 samples).


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
def _dots1(is_gru, W, i, H, hs, q, acc):
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
def _dots_packed(W, i, H, hs, q, acc):
    """``_dots1`` of a GRU neuron from W_hh packed per neuron (``packed_gru``); the same loop
    over j, so the same bits. A separate function: one ``_dots1`` choosing the offsets at
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


@nb.njit(cache=True, fastmath=True)
def _forward_chunk_rd(
    c,
    is_gru,
    gkind,
    src,
    h0,
    W,
    bias,
    gvals,
    off,
    idx,
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
):
    B, T, H = out.shape
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
                    _dots_packed(W, i, H, hs, q, acc)
                    nq = 1
                else:
                    _dots1(is_gru, W, i, H, hs, q, acc)
                    nq = 1
                for s in range(nq):
                    b = lo + q + s
                    hi_ = hs[q + s, i]
                    if is_gru:
                        hn = acc[2, s] + bias[2 * H + i]
                        r, z, n, f = gru_candidate(
                            xb[q + s, 3 * k],
                            xb[q + s, 3 * k + 1],
                            xb[q + s, 3 * k + 2],
                            acc[0, s] + bias[i],
                            acc[1, s] + bias[H + i],
                            hn,
                            hi_,
                        )
                        if save:
                            rsave[b, t, i] = r
                            zsave[b, t, i] = z
                            nsave[b, t, i] = n
                            hnsave[b, t, i] = hn
                    else:
                        f = rnn_candidate(xb[q + s, k], acc[0, s] + bias[i])
                        if save:
                            fsave[b, t, i] = f
                    fb[k, q + s] = f
                    if save:
                        dsave[b, t, i] = f - hi_
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
def _backward_chunk_rd(
    c,
    is_gru,
    gkind,
    h0,
    W,
    gvals,
    off,
    idx,
    nchunks,
    out,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    dout,
    dhT,
    dxp,
    dh0,
    dW,
    db,
    dg,
):
    B, T, G = dxp.shape
    H = h0.shape[1]
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    lam = np.empty((m, H), np.float32)
    lamp = np.empty((m, H), np.float32)
    vals = np.empty((3, m), np.float32)
    dWc = dW[c]
    dbc = db[c]
    dgc = dg[c]
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
                    dgc[t, i] += li * dsave[b, t, i]
                    dd = gvals[t, i] * li
                for r3 in range(nr):
                    vals[r3, q] = 0
                if dd == 0:
                    continue
                active = True
                lamp[q, i] -= dd
                if is_gru:
                    r = rsave[b, t, i]
                    z = zsave[b, t, i]
                    n = nsave[b, t, i]
                    hpi = out[b, t - 1, i] if t > 0 else h0[b, i]
                    dn = dd * (1 - z)
                    dz = dd * (hpi - n)
                    lamp[q, i] += dd * z
                    dan = dn * (1 - n * n)
                    dr = dan * hnsave[b, t, i]
                    daz = dz * z * (1 - z)
                    dar = dr * r * (1 - r)
                    dxp[b, t, i] = dar
                    dxp[b, t, H + i] = daz
                    dxp[b, t, 2 * H + i] = dan
                    vals[0, q] = dar
                    vals[1, q] = daz
                    vals[2, q] = dan * r
                else:
                    f = fsave[b, t, i]
                    da = dd * (1 - f * f)
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
            dh0[lo + q, j] = lam[q, j]


# ------------------------------------------------------ rhythmic / dense: per-step GEMM
# For chunks of at least ``gemm_min`` samples (ops.GEMM_MIN_BATCH) each step is two or
# three small GEMMs through BLAS (``np.dot`` on contiguous float32 buffers): the step's
# compute rows of W are gathered once (no gather when every row computes), the chunk's
# states multiply them (m x H)·(H x N), and in the backward the open rows' Jacobian rows
# V (N x m) give lambda += V^T W_rows and dW_rows += V h_prev. Same arithmetic as the
# ``_rd`` kernels, BLAS summation order. Saved values are compact, (nnz, B): position
# off[t] + k (rhythmic) or t*H + k (dense) of step t's k-th computed neuron, so only the
# computed entries are allocated and written (d is not saved for the dense gate).


@nb.njit(cache=True, fastmath=True, inline="always")
def _gemm_step_input(src, lo, m, t, idx, base, n_t, dense, H, nr, xt, xb):
    """``step_input`` for the m samples lo.. of a GEMM chunk at once: xb[q, k * nr + g] is
    row g * H + i of sample lo + q's input pre-activation, i the step's k-th computed neuron.
    Fused, x_t of the chunk is gathered once (xt, m x F) and each row is one short dot per
    sample (vectorised over the samples for F = 1); else the rows are gathered from xp."""
    fused, xp, x, wih, bih = src
    F = x.shape[2]
    if fused:
        for q in range(m):
            for f in range(F):
                xt[q, f] = x[lo + q, t, f]
    for k in range(n_t):
        i = k if dense else idx[base + k]
        for g in range(nr):
            r = g * H + i
            c = k * nr + g
            if fused:
                bb = bih[r]
                for q in range(m):
                    s = bb
                    for f in range(F):
                        s += xt[q, f] * wih[r, f]
                    xb[q, c] = s
            else:
                for q in range(m):
                    xb[q, c] = xp[lo + q, t, r]


@nb.njit(cache=True, fastmath=True)
def _forward_chunk_gemm(
    c,
    is_gru,
    gkind,
    src,
    h0,
    W,
    bias,
    gvals,
    off,
    idx,
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
):
    B, T, H = out.shape
    G = W.shape[0]
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    nr = 3 if is_gru else 1
    hs = np.empty((m, H), np.float32)
    fb = np.empty((m, H), np.float32)
    xb = np.zeros((m, nr * (H + 16)), np.float32)  # padding lanes of the candidate loops: finite
    xt = np.empty((m, src[2].shape[2]), np.float32)
    wg = np.empty((G, H), np.float32)
    bt = np.empty(G, np.float32)
    sc = np.zeros((8, H + 16), np.float32)
    accb = np.empty(m * G, np.float32)
    for q in range(m):
        for j in range(H):
            hs[q, j] = h0[lo + q, j]
    for t in range(T):
        n_t = H if gkind == DENSE else off[t + 1] - off[t]
        base = 0 if gkind == DENSE else off[t]
        N = nr * n_t
        _gemm_step_input(src, lo, m, t, idx, base, n_t, gkind == DENSE, H, nr, xt, xb)
        if N > 0:
            acc = accb[: m * N].reshape((m, N))
            if n_t == H:  # every row computes: W as it is
                np.dot(hs, W.T, acc)
            else:
                for r3 in range(nr):
                    for k in range(n_t):
                        row = r3 * H + idx[base + k]
                        dst = r3 * n_t + k
                        for j in range(H):
                            wg[dst, j] = W[row, j]
                np.dot(hs, wg[:N].T, acc)
            pb = t * H if gkind == DENSE else base
            for k in range(n_t):  # the step's biases, shared by the samples
                i = k if gkind == DENSE else idx[base + k]
                for r3 in range(nr):
                    bt[r3 * n_t + k] = bias[r3 * H + i]
            lanes = min((n_t + 15) // 16 * 16, H)
            for q in range(m):
                b = lo + q
                for k in range(n_t):
                    i = k if gkind == DENSE else idx[base + k]
                    sc[0, k] = acc[q, k] + bt[k]
                    if is_gru:
                        sc[1, k] = acc[q, n_t + k] + bt[n_t + k]
                        sc[2, k] = acc[q, 2 * n_t + k] + bt[2 * n_t + k]
                    sc[3, k] = hs[q, i]
                if is_gru:
                    gru_candidates(lanes, xb, q, sc)
                else:
                    rnn_candidates(lanes, xb, q, sc)
                for k in range(n_t):
                    f = sc[4, k]
                    fb[q, k] = f
                    if save:
                        p = pb + k
                        if is_gru:
                            rsave[p, b] = sc[5, k]
                            zsave[p, b] = sc[6, k]
                            nsave[p, b] = sc[7, k]
                            hnsave[p, b] = sc[2, k]
                        else:
                            fsave[p, b] = f
                        if gkind != DENSE:
                            dsave[p, b] = f - sc[3, k]
            for q in range(m):
                if gkind == DENSE:
                    for k in range(n_t):
                        hs[q, k] = fb[q, k]
                else:
                    for k in range(n_t):
                        i = idx[base + k]
                        g = gvals[t, i]
                        if g != 0:
                            hs[q, i] = hs[q, i] + g * (fb[q, k] - hs[q, i])
        for q in range(m):
            for j in range(H):
                out[lo + q, t, j] = hs[q, j]
    for q in range(m):
        for j in range(H):
            hT[lo + q, j] = hs[q, j]


@nb.njit(cache=True, fastmath=True)
def _backward_chunk_gemm(
    c,
    is_gru,
    gkind,
    h0,
    W,
    gvals,
    off,
    idx,
    nchunks,
    out,
    dsave,
    fsave,
    rsave,
    zsave,
    nsave,
    hnsave,
    dout,
    dhT,
    dxp,
    dh0,
    dW,
    db,
    dg,
    fused,
    x,
    wih,
    dx,
    dwih,
    dbih,
):
    B, T, H = out.shape
    G = W.shape[0]
    F = x.shape[2]
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    nr = 3 if is_gru else 1
    vx = np.empty((G, m), np.float32)  # fused: the input pre-activations' gradients (dxp)
    dwihc = dwih[c]
    dbihc = dbih[c]
    lam = np.empty((m, H), np.float32)
    lamp = np.empty((m, H), np.float32)
    tmp = np.empty((m, H), np.float32)
    hp = np.empty((m, H), np.float32)
    vt = np.empty((G, m), np.float32)
    wg = np.empty((G, H), np.float32)
    dwb = np.empty((G, H), np.float32)
    act = np.empty(H, np.int64)
    actk = np.empty(H, np.int64)
    dWc = dW[c]
    dbc = db[c]
    dgc = dg[c]
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
        pb = t * H if gkind == DENSE else base
        # pass 1: the gate's gradient, and the rows whose Jacobian is needed (dd != 0)
        na = 0
        for k in range(n_t):
            i = k if gkind == DENSE else idx[base + k]
            active = False
            for q in range(m):
                li = lam[q, i]
                if gkind == DENSE:
                    dd = li
                else:
                    dgc[t, i] += li * dsave[pb + k, lo + q]
                    dd = gvals[t, i] * li
                if dd != 0:
                    active = True
            if active:
                act[na] = i
                actk[na] = pb + k
                na += 1
        if na == 0:
            for q in range(m):
                for j in range(H):
                    lam[q, j] = lamp[q, j]
            continue
        # pass 2: Jacobian rows V (row r3*na + a, column q)
        for a in range(na):
            i = act[a]
            p = actk[a]
            for q in range(m):
                b = lo + q
                li = lam[q, i]
                dd = li if gkind == DENSE else gvals[t, i] * li
                if dd == 0:
                    for r3 in range(nr):
                        vt[r3 * na + a, q] = 0
                        vx[r3 * na + a, q] = 0
                    continue
                lamp[q, i] -= dd
                if is_gru:
                    r = rsave[p, b]
                    z = zsave[p, b]
                    n = nsave[p, b]
                    hpi = out[b, t - 1, i] if t > 0 else h0[b, i]
                    dn = dd * (1 - z)
                    dz = dd * (hpi - n)
                    lamp[q, i] += dd * z
                    dan = dn * (1 - n * n)
                    dr = dan * hnsave[p, b]
                    daz = dz * z * (1 - z)
                    dar = dr * r * (1 - r)
                    if fused:
                        vx[a, q] = dar
                        vx[na + a, q] = daz
                        vx[2 * na + a, q] = dan
                    else:
                        dxp[b, t, i] = dar
                        dxp[b, t, H + i] = daz
                        dxp[b, t, 2 * H + i] = dan
                    vt[a, q] = dar
                    vt[na + a, q] = daz
                    vt[2 * na + a, q] = dan * r
                else:
                    f = fsave[p, b]
                    da = dd * (1 - f * f)
                    if fused:
                        vx[a, q] = da
                    else:
                        dxp[b, t, i] = da
                    vt[a, q] = da
        N = nr * na
        if fused:
            # input projection x_t W_ih^T + b_ih: dW_ih += dxp^T x_t, db_ih += dxp, dx_t += dxp W_ih
            for r3 in range(nr):
                for a in range(na):
                    v_row = r3 * na + a
                    row = r3 * H + act[a]
                    sb = np.float32(0.0)
                    for q in range(m):
                        gq = vx[v_row, q]
                        if gq == 0:
                            continue
                        sb += gq
                        b = lo + q
                        for f in range(F):
                            dwihc[row, f] += gq * x[b, t, f]
                            dx[b, t, f] += gq * wih[row, f]
                    dbihc[row] += sb
        v = vt[:N]
        full = na == H
        if full:
            np.dot(v.T, W, tmp)
        else:
            for r3 in range(nr):
                for a in range(na):
                    src = r3 * H + act[a]
                    dst = r3 * na + a
                    for j in range(H):
                        wg[dst, j] = W[src, j]
            np.dot(v.T, wg[:N], tmp)
        for q in range(m):
            for j in range(H):
                lam[q, j] = lamp[q, j] + tmp[q, j]
        for q in range(m):
            for j in range(H):
                hp[q, j] = out[lo + q, t - 1, j] if t > 0 else h0[lo + q, j]
        dws = dwb[:N]
        np.dot(v, hp, dws)
        for r3 in range(nr):
            for a in range(na):
                src = r3 * na + a
                row = r3 * H + act[a]
                s = np.float32(0.0)
                for q in range(m):
                    s += vt[src, q]
                dbc[row] += s
                for j in range(H):
                    dWc[row, j] += dws[src, j]
    for q in range(m):
        for j in range(H):
            dh0[lo + q, j] = lam[q, j]


@nb.njit(cache=True, parallel=True)
def forward(
    is_gru,
    gkind,
    src,
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
    """Parallel over batch chunks; each chunk runs its own whole time loop. ``src`` is the
    input source of ``step_input`` (the event gate's kernel reads its projected input ``src[1]``)."""
    B, _, H = out.shape
    if packed_gru(is_gru, W, H) and (gkind == EVENT or (B + nchunks - 1) // nchunks >= 4):
        raise ValueError("a packed W_hh is for single-sample chunks of the rhythmic / dense kernel")
    for c in nb.prange(nchunks):
        if gkind != EVENT:
            _forward_chunk_rd(
                c,
                is_gru,
                gkind,
                src,
                h0,
                W,
                bias,
                gvals,
                off,
                idx,
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
            )
            continue
        _forward_chunk(
            c,
            is_gru,
            gkind,
            src[1],
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
        if gkind != EVENT:
            _backward_chunk_rd(
                c,
                is_gru,
                gkind,
                h0,
                W,
                gvals,
                off,
                idx,
                nchunks,
                out,
                dsave,
                fsave,
                rsave,
                zsave,
                nsave,
                hnsave,
                dout,
                dhT,
                dxp,
                dh0,
                dW,
                db,
                dg,
            )
            continue
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


@nb.njit(cache=True, parallel=True)
def forward_gemm(
    is_gru, gkind, src, h0, W, bias, gvals, off, idx, save, nchunks,
    out, hT, dsave, fsave, rsave, zsave, nsave, hnsave,
):  # fmt: skip
    """Rhythmic / dense gates, chunks of >= GEMM_MIN_BATCH samples; compact (nnz, B) saves.
    ``src``: the input source of ``step_input``."""
    for c in nb.prange(nchunks):
        _forward_chunk_gemm(
            c, is_gru, gkind, src, h0, W, bias, gvals, off, idx, save, nchunks,
            out, hT, dsave, fsave, rsave, zsave, nsave, hnsave,
        )  # fmt: skip


@nb.njit(cache=True, parallel=True)
def backward_gemm(
    is_gru, gkind, h0, W, gvals, off, idx, nchunks, out, dsave, fsave,
    rsave, zsave, nsave, hnsave, dout, dhT, dxp, dh0, dW, db, dg,
    fused, x, wih, dx, dwih, dbih,
):  # fmt: skip
    """BPTT of ``forward_gemm``. The input's gradient goes to dxp (B, T, G), or with
    ``fused`` (the forward projected x (B, T, F) with w_ih (G, F) itself) to dx (B, T, F)
    and the per-chunk dwih (C, G, F), dbih (C, G); only computed entries contribute."""
    for c in nb.prange(nchunks):
        _backward_chunk_gemm(
            c, is_gru, gkind, h0, W, gvals, off, idx, nchunks, out, dsave, fsave,
            rsave, zsave, nsave, hnsave, dout, dhT, dxp, dh0, dW, db, dg,
            fused, x, wih, dx, dwih, dbih,
        )  # fmt: skip
