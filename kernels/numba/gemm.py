"""Rhythmic and dense gates, RNN and GRU, batched training: each step as BLAS GEMMs.

For chunks of at least ``choose.use_gemm``'s least size each step is two or three small
GEMMs through BLAS (``np.dot`` on contiguous float32 buffers, scipy's OpenBLAS held to one
thread per Numba thread by the launcher): the step's compute rows of W are gathered once (no
gather when every row computes), the chunk's states multiply them (m x H)·(H x N), and in
the backward the open rows' Jacobian rows V (N x m) give lambda += V^T W_rows and
dW_rows += V h_prev. Same arithmetic as ``rows``, BLAS summation order. An input projected
inside the kernels (``Source.fused``) is the same: the step's W_ih rows gathered, x_t W_rows^T
forward and dW_ih_rows += V_x x_t, dx_t = V_x^T W_rows backward, as GEMMs (``FUSED_DOTS``)
or as short dot products.

Padded batches (``ops.ragged``) run in one call: ``ragged`` = (lens, order); chunk c runs the
samples order[lo:hi], longest first, so the samples still running at step t are a prefix
rows[:m_t] of the chunk (m_t shrinks forward and grows backward) and each step's GEMMs take
those m_t rows only: a padded step costs no arithmetic. Without lengths, lens = T and order is
the identity. The external arrays (x, xp, h0, out, hT, the gradients) are indexed by sample,
the saves by position (column lo + q).

Layouts (float32, C order): ``Source`` (the input); h0 (B, H); ``Weights``: W (G, H), bias
(G,); ``Gate``: gvals (T, H), off (T + 1,), idx (rhythmic); ``Saved`` compact (nnz, B): row
off[t] + k (rhythmic) or t * H + k (dense) of step t's k-th computed neuron, one column per
sample (d is not saved for the dense gate); ``Grads``: dxp (B, T, G) or, with the input
projected inside the kernels, dx (B, T, F), dw_ih (C, G, F), db_ih (C, G); dh0 (B, H), per
chunk dW (C, G, H), db (C, G), dg (C, T, H). ``forward`` / ``backward`` run prange over chunks.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..contract import DENSE
from ._common import FUSED_DOTS, chunk, gru_candidate_grad, gru_candidates, rnn_candidate_grad, rnn_candidates

__all__ = ["forward", "backward"]


@nb.njit(cache=True, fastmath=True, inline="always")
def _gather_rows(M, sel, n, nr, H, dst):
    """dst[r3 * n + k] = M[r3 * H + sel[k]]: the rows of the n selected neurons, block by
    block (r, z, n for a GRU), in the order the per-step GEMMs use."""
    for r3 in range(nr):
        for k in range(n):
            row = r3 * H + sel[k]
            for j in range(M.shape[1]):
                dst[r3 * n + k, j] = M[row, j]


@nb.njit(cache=True, fastmath=True, inline="always")
def _scatter_rows(v, prod, sel, n, nr, H, dM, db):
    """A weight's gradient rows from a step: dM[r3 * H + sel[k]] += prod[r3 * n + k] and
    db[r3 * H + sel[k]] += the sum of v's row r3 * n + k (over the chunk's samples)."""
    for r3 in range(nr):
        for k in range(n):
            s = r3 * n + k
            row = r3 * H + sel[k]
            sb = np.float32(0.0)
            for q in range(v.shape[1]):
                sb += v[s, q]
            db[row] += sb
            for j in range(dM.shape[1]):
                dM[row, j] += prod[s, j]


@nb.njit(cache=True, fastmath=True, inline="always")
def _gather_input_rows(wih, bih, idx, base, n_t, dense, H, nr, wx, bx):
    """Rows g * H + i of W_ih (and b_ih) of the step's computed neurons i into wx / bx, row
    k * nr + g for the k-th neuron: the column order of ``xb``."""
    for k in range(n_t):
        i = k if dense else idx[base + k]
        for g in range(nr):
            r = g * H + i
            c = k * nr + g
            bx[c] = bih[r]
            for f in range(wih.shape[1]):
                wx[c, f] = wih[r, f]


@nb.njit(cache=True, fastmath=True, inline="always")
def _step_input(src, rows, m, t, idx, base, n_t, dense, H, nr, proj, xb):
    """``_common.step_input`` for the first m samples of a chunk at once: xb[q, k * nr + g] is
    row g * H + i of sample rows[q]'s input pre-activation, i the step's k-th computed neuron.
    Fused, x_t of the chunk is gathered once (xt, m x F); with fused == FUSED_DOTS the rows
    are one GEMM (m x F)·(F x N) against the step's gathered W_ih rows (wx: gathered at every
    step, or once for the dense gate, where they never change), else one short dot per row
    and sample; unfused, the rows are gathered from xp."""
    fused, xp, x, wih, bih = src
    xt, wx, bx, xa = proj
    F = x.shape[2]
    if fused:
        for q in range(m):
            for f in range(F):
                xt[q, f] = x[rows[q], t, f]
        if fused == FUSED_DOTS:
            N = nr * n_t
            if N == 0:
                return
            if not dense or t == 0:
                _gather_input_rows(wih, bih, idx, base, n_t, dense, H, nr, wx, bx)
            a = xa[: m * N].reshape((m, N))
            np.dot(xt[:m], wx[:N].T, a)
            for q in range(m):
                for c in range(N):
                    xb[q, c] = a[q, c] + bx[c]
            return
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
                    xb[q, c] = xp[rows[q], t, r]


@nb.njit(cache=True, fastmath=True)
def _forward_chunk(c, is_gru, src, h0, weights, gate, ragged, nchunks, out, hT, saved):
    B, T, H = out.shape
    W, bias = weights.W, weights.bias
    gkind, gvals, off, idx = gate.kind, gate.gvals, gate.off, gate.idx
    save = saved.on
    G = W.shape[0]
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    lens, order = ragged
    rows = order[lo:hi]  # the chunk's samples, longest first (saves: column lo + q)
    nr = 3 if is_gru else 1
    hs = np.empty((m, H), np.float32)
    fb = np.empty((m, H), np.float32)
    xb = np.zeros((m, nr * (H + 16)), np.float32)  # padding lanes of the candidate loops: finite
    F = src.x.shape[2]
    dots = src.fused == FUSED_DOTS
    proj = (  # x_t, and for the GEMM: the gathered W_ih rows, their biases, the product
        np.empty((m, F), np.float32),
        np.empty((G if dots else 0, F), np.float32),
        np.empty(G if dots else 0, np.float32),
        np.empty(m * G if dots else 0, np.float32),
    )
    wg = np.empty((G, H), np.float32)
    bt = np.empty(G, np.float32)
    sc = np.zeros((8, H + 16), np.float32)
    accb = np.empty(m * G, np.float32)
    for q in range(m):
        for j in range(H):
            hs[q, j] = h0[rows[q], j]
    mt = m  # samples rows[:mt] run step t
    for t in range(T):
        while mt > 0 and lens[rows[mt - 1]] <= t:
            mt -= 1
        for q in range(mt, m):  # past its length: the output is zero, the state holds
            for j in range(H):
                out[rows[q], t, j] = 0.0
        if mt == 0:
            continue
        n_t = H if gkind == DENSE else off[t + 1] - off[t]
        base = 0 if gkind == DENSE else off[t]
        N = nr * n_t
        _step_input(src, rows, mt, t, idx, base, n_t, gkind == DENSE, H, nr, proj, xb)
        if N > 0:
            acc = accb[: mt * N].reshape((mt, N))
            if n_t == H:  # every row computes: W as it is
                np.dot(hs[:mt], W.T, acc)
            else:
                _gather_rows(W, idx[base : base + n_t], n_t, nr, H, wg)
                np.dot(hs[:mt], wg[:N].T, acc)
            pb = t * H if gkind == DENSE else base
            for k in range(n_t):  # the step's biases, shared by the samples
                i = k if gkind == DENSE else idx[base + k]
                for r3 in range(nr):
                    bt[r3 * n_t + k] = bias[r3 * H + i]
            lanes = min((n_t + 15) // 16 * 16, H)
            for q in range(mt):
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
                            saved.r[p, b] = sc[5, k]
                            saved.z[p, b] = sc[6, k]
                            saved.n[p, b] = sc[7, k]
                            saved.hn[p, b] = sc[2, k]
                        else:
                            saved.f[p, b] = f
                        if gkind != DENSE:
                            saved.d[p, b] = f - sc[3, k]
            for q in range(mt):
                if gkind == DENSE:
                    for k in range(n_t):
                        hs[q, k] = fb[q, k]
                else:
                    for k in range(n_t):
                        i = idx[base + k]
                        g = gvals[t, i]
                        if g != 0:
                            hs[q, i] = hs[q, i] + g * (fb[q, k] - hs[q, i])
        for q in range(mt):
            for j in range(H):
                out[rows[q], t, j] = hs[q, j]
    for q in range(m):
        for j in range(H):
            hT[rows[q], j] = hs[q, j]


@nb.njit(cache=True, fastmath=True, inline="always")
def _input_grads(vx, N, na, act, rows, m, t, H, nr, x, wih, dots, bufs, dx, dwih, dbih):
    """The input projection's gradients at step t from the pre-activations' gradients vx
    (row r3 * na + a of neuron act[a], column q of sample rows[q]): dW_ih += vx^T x_t,
    db_ih += vx, dx_t = vx W_ih, over the computed rows only. With ``dots`` (``Source.fused``
    == FUSED_DOTS) the two products are GEMMs, (N x m)·(m x F) and (m x N)·(N x F) against
    the gathered W_ih rows; else loops over the nonzero entries."""
    F = x.shape[2]
    if dots:
        xt, wx, dwr, dxt = bufs
        xt, dxt = xt[:m], dxt[:m]
        for q in range(m):
            for f in range(F):
                xt[q, f] = x[rows[q], t, f]
        v = vx[:N]
        if na == H:  # every neuron, in increasing order: row r3 * na + a is W_ih row r3 * H + a
            np.dot(v.T, wih, dxt)
        else:
            _gather_rows(wih, act, na, nr, H, wx)
            np.dot(v.T, wx[:N], dxt)
        np.dot(v, xt, dwr[:N])
        _scatter_rows(v, dwr, act, na, nr, H, dwih, dbih)
        for q in range(m):
            for f in range(F):
                dx[rows[q], t, f] += dxt[q, f]
        return
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
                b = rows[q]
                for f in range(F):
                    dwih[row, f] += gq * x[b, t, f]
                    dx[b, t, f] += gq * wih[row, f]
            dbih[row] += sb


@nb.njit(cache=True, fastmath=True)
def _backward_chunk(c, is_gru, src, h0, W, gate, ragged, nchunks, out, saved, upstream, grads):
    dout, dhT = upstream
    fused, x, wih = src.fused, src.x, src.w_ih
    dxp, dx = grads.dxp, grads.dx
    gkind, gvals, off, idx = gate.kind, gate.gvals, gate.off, gate.idx
    B, T, H = out.shape
    G = W.shape[0]
    F = x.shape[2]
    lo, hi = chunk(c, nchunks, B)
    m = hi - lo
    lens, order = ragged
    rows = order[lo:hi]
    nr = 3 if is_gru else 1
    # V and, fused, V_x (the input pre-activations' gradients): row r3 * na + a, column q,
    # (N, mt) views of flat buffers, so that the running samples' columns stay contiguous
    vxb = np.empty(G * m, np.float32)
    vtb = np.empty(G * m, np.float32)
    dots = fused == FUSED_DOTS
    nd, md = (G, m) if dots else (0, 0)  # the GEMMs' buffers: x_t, W_ih rows, dW_ih rows, dx_t
    bwd = (np.empty((md, F), np.float32), np.empty((nd, F), np.float32), np.empty((nd, F), np.float32),
           np.empty((md, F), np.float32))  # fmt: skip
    dwihc = grads.dw_ih[c]
    dbihc = grads.db_ih[c]
    lam = np.empty((m, H), np.float32)
    lamp = np.empty((m, H), np.float32)
    tmp = np.empty((m, H), np.float32)
    hp = np.empty((m, H), np.float32)
    wg = np.empty((G, H), np.float32)
    dwb = np.empty((G, H), np.float32)
    act = np.empty(H, np.int64)
    actk = np.empty(H, np.int64)
    dWc = grads.dW[c]
    dbc = grads.db[c]
    dgc = grads.dg[c]
    for q in range(m):
        for j in range(H):
            lam[q, j] = dhT[rows[q], j]
    mt = 0  # samples rows[:mt] ran step t; the others pass lambda on
    for t in range(T - 1, -1, -1):
        while mt < m and lens[rows[mt]] > t:
            mt += 1
        if mt == 0:
            continue
        for q in range(mt):
            for j in range(H):
                lam[q, j] += dout[rows[q], t, j]
                lamp[q, j] = lam[q, j]
        n_t = H if gkind == DENSE else off[t + 1] - off[t]
        base = 0 if gkind == DENSE else off[t]
        pb = t * H if gkind == DENSE else base
        # pass 1: the gate's gradient, and the rows whose Jacobian is needed (dd != 0)
        na = 0
        for k in range(n_t):
            i = k if gkind == DENSE else idx[base + k]
            active = False
            for q in range(mt):
                li = lam[q, i]
                if gkind == DENSE:
                    dd = li
                else:
                    dgc[t, i] += li * saved.d[pb + k, lo + q]
                    dd = gvals[t, i] * li
                if dd != 0:
                    active = True
            if active:
                act[na] = i
                actk[na] = pb + k
                na += 1
        if na == 0:
            continue  # lam == lamp
        N = nr * na
        vt = vtb[: N * mt].reshape((N, mt))
        vx = vxb[: N * mt].reshape((N, mt))
        # pass 2: Jacobian rows V (row r3*na + a, column q)
        for a in range(na):
            i = act[a]
            p = actk[a]
            for q in range(mt):
                b = lo + q  # the saves' column
                s = rows[q]  # the sample
                li = lam[q, i]
                dd = li if gkind == DENSE else gvals[t, i] * li
                if dd == 0:
                    for r3 in range(nr):
                        vt[r3 * na + a, q] = 0
                        vx[r3 * na + a, q] = 0
                    continue
                lamp[q, i] -= dd
                if is_gru:
                    hpi = out[s, t - 1, i] if t > 0 else h0[s, i]
                    dar, daz, dan, dhn, dh = gru_candidate_grad(
                        dd, saved.r[p, b], saved.z[p, b], saved.n[p, b], saved.hn[p, b], hpi
                    )
                    lamp[q, i] += dh
                    if fused:
                        vx[a, q] = dar
                        vx[na + a, q] = daz
                        vx[2 * na + a, q] = dan
                    else:
                        dxp[s, t, i] = dar
                        dxp[s, t, H + i] = daz
                        dxp[s, t, 2 * H + i] = dan
                    vt[a, q] = dar
                    vt[na + a, q] = daz
                    vt[2 * na + a, q] = dhn
                else:
                    da = rnn_candidate_grad(dd, saved.f[p, b])
                    if fused:
                        vx[a, q] = da
                    else:
                        dxp[s, t, i] = da
                    vt[a, q] = da
        if fused:
            _input_grads(vx, N, na, act, rows, mt, t, H, nr, x, wih, dots, bwd, dx, dwihc, dbihc)
        v = vt
        tm = tmp[:mt]
        if na == H:
            np.dot(v.T, W, tm)
        else:
            _gather_rows(W, act, na, nr, H, wg)
            np.dot(v.T, wg[:N], tm)
        for q in range(mt):
            for j in range(H):
                lam[q, j] = lamp[q, j] + tm[q, j]
        for q in range(mt):
            for j in range(H):
                hp[q, j] = out[rows[q], t - 1, j] if t > 0 else h0[rows[q], j]
        dws = dwb[:N]
        np.dot(v, hp[:mt], dws)
        _scatter_rows(v, dws, act, na, nr, H, dWc, dbc)
    for q in range(m):
        for j in range(H):
            grads.dh0[rows[q], j] = lam[q, j]


@nb.njit(cache=True, parallel=True)
def forward(is_gru, src, h0, weights, gate, ragged, nchunks, out, hT, saved):
    """Chunks of at least ``choose.use_gemm``'s least size; compact (nnz, B) saves. ``src``: the input.
    ``ragged`` = (lens, order), (B,) int64 each: sample b runs its first lens[b] steps (its
    outputs after them are zero, hT its state after them); chunk c runs the samples
    order[lo:hi] (its bounds), longest first, so at step t those still running are a prefix."""
    for c in nb.prange(nchunks):
        _forward_chunk(c, is_gru, src, h0, weights, gate, ragged, nchunks, out, hT, saved)


@nb.njit(cache=True, parallel=True)
def backward(is_gru, src, h0, W, gate, ragged, nchunks, out, saved, upstream, grads):
    """BPTT of ``forward``; ``upstream`` = (dout (B, T, H), dhT (B, H)). The input's gradient
    goes to grads.dxp, or where ``src.fused`` to grads.dx, dw_ih, db_ih; only computed
    entries contribute."""
    for c in nb.prange(nchunks):
        _backward_chunk(c, is_gru, src, h0, W, gate, ragged, nchunks, out, saved, upstream, grads)
