"""LIF kernels (forward and BPTT), every gate, one sample at a time, parallel over chunks.

The recurrent current V s is rebuilt each step from the list of the previous step's spikes
(binary, sparse): no accumulation, so no drift. With a rhythmic gate and few open neurons
(fewer than H / 4 at a step) only their rows of V are gathered; otherwise V^T's columns of
the spiking neurons are summed.

Layouts (float32, C order): xp (B, T, H), h0 = membrane (B, H), s0 spikes (B, H);
``Cell``: V (H, H) = w_hh on spikes, VT (H, H) its transpose, bias (H,), beta (H,) already
clamped to [0, 1]; ``_common.Gate``: gvals (T, H), compacted compute sets idx[off[t]:off[t+1]]
(rhythmic), theta (H,) and the surrogate (event). out (B, T, H) must arrive zeroed. ``Saved``
(B, T, H): membrane sequence hseq, d = f - h and the gate g. ``Grads``: dxp (B, T, H), dh0,
ds0 (B, H), per chunk dVT (C, H, H), db, dbeta, dth (C, H), dg (C, T, H). ``lens`` (B,)
int64: sample b runs its first lens[b] steps (a padded batch in one call; T otherwise).
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from ..contract import DENSE, EVENT, RHYTHMIC
from ._common import FINITE_FREE, chunk, sign, surrogate_grad

__all__ = ["Cell", "Grads", "Saved", "backward", "forward"]


class Cell(NamedTuple):
    """The LIF constants: recurrent (V is used), reset_zero (else subtract), thr the
    threshold, scode / sscale the spike surrogate (``contract.SURROGATE_CODES``), V, VT,
    bias, beta, sgain the spike surrogate's gain."""

    recurrent: bool
    reset_zero: bool
    thr: float
    scode: int
    sscale: float
    V: np.ndarray
    VT: np.ndarray
    bias: np.ndarray
    beta: np.ndarray
    sgain: float = 1.0


class Saved(NamedTuple):
    """Written where ``on``: hseq (membrane), d, g (rhythmic and event gates)."""

    on: bool
    hseq: np.ndarray
    d: np.ndarray
    g: np.ndarray


class Grads(NamedTuple):
    dxp: np.ndarray
    dh0: np.ndarray
    ds0: np.ndarray
    dVT: np.ndarray
    db: np.ndarray
    dbeta: np.ndarray
    dg: np.ndarray
    dth: np.ndarray


@nb.njit(cache=True, fastmath=FINITE_FREE)
def _forward_chunk(c, cell, xp, h0, s0, gate, lens, nchunks, out, hT, saved):
    recurrent, reset_zero, thr = cell.recurrent, cell.reset_zero, cell.thr
    V, VT, bias, beta = cell.V, cell.VT, cell.bias, cell.beta
    gkind, gvals, off, idx, theta = gate.kind, gate.gvals, gate.off, gate.idx, gate.theta
    save, hseq, dsave, gsave = saved
    B, T, H = xp.shape
    thr32 = np.float32(thr)
    lo, hi = chunk(c, nchunks, B)
    h = np.empty(H, np.float32)
    u = np.zeros(H, np.float32)
    sl = np.empty(H, np.int32)  # previous step's spiking neurons
    sv = np.empty(H, np.float32)  # and their spike values
    nl = np.empty(H, np.int32)  # this step's
    nv = np.empty(H, np.float32)
    for b in range(lo, hi):
        ns = 0
        for j in range(H):
            h[j] = h0[b, j]
            if s0[b, j] != 0:
                sl[ns] = j
                sv[ns] = s0[b, j]
                ns += 1
        L = lens[b]
        for t in range(L):
            if gkind == RHYTHMIC:
                n_t = off[t + 1] - off[t]
                base = off[t]
            else:
                n_t = H
                base = 0
            rowwise = recurrent and n_t * 4 < H
            if recurrent and not rowwise:
                for r in range(H):
                    u[r] = 0
                for q in range(ns):
                    j = sl[q]
                    v = sv[q]
                    for r in range(H):
                        u[r] += VT[j, r] * v
            nn = 0
            if gkind == DENSE:
                # branch-free pass over all neurons (vectorises), then a spike scan
                for i in range(H):
                    cur = xp[b, t, i]
                    if recurrent:
                        cur = (cur + u[i]) + bias[i]
                    hi_ = h[i]
                    if reset_zero:
                        keep = np.float32(0.0) if hi_ > thr32 else np.float32(1.0)
                        h[i] = beta[i] * keep * hi_ + cur
                    else:
                        sub = thr32 if hi_ > thr32 else np.float32(0.0)
                        h[i] = (beta[i] * hi_ + cur) - sub
                for i in range(H):
                    if h[i] - thr32 > 0:
                        out[b, t, i] = 1.0
                        nl[nn] = i
                        nv[nn] = 1.0
                        nn += 1
                n_t = 0
            for k in range(n_t):
                i = idx[base + k] if gkind == RHYTHMIC else k
                cur = xp[b, t, i]
                if recurrent:
                    if rowwise:
                        acc = np.float32(0.0)
                        for q in range(ns):
                            acc += V[i, sl[q]] * sv[q]
                        cur = (cur + acc) + bias[i]
                    else:
                        cur = (cur + u[i]) + bias[i]
                hi_ = h[i]
                rho = hi_ > thr32
                if reset_zero:
                    f = np.float32(beta[i] * (np.float32(0.0) if rho else np.float32(1.0)) * hi_ + cur)
                else:
                    f = np.float32(beta[i] * hi_ + cur)
                    if rho:
                        f = np.float32(f - thr32)
                if gkind == DENSE:
                    g = np.float32(1.0)
                    hnew = f
                else:
                    d = np.float32(f - hi_)
                    if gkind == EVENT:
                        g = np.float32(1.0) if abs(d) - theta[i] > 0 else np.float32(0.0)
                    else:
                        g = gvals[t, i]
                    if save:
                        dsave[b, t, i] = d
                        gsave[b, t, i] = g
                    hnew = np.float32(hi_ + g * d) if g != 0 else hi_
                h[i] = hnew
                if g != 0 and hnew - thr32 > 0:
                    out[b, t, i] = g
                    nl[nn] = i
                    nv[nn] = g
                    nn += 1
            for q in range(nn):
                sl[q] = nl[q]
                sv[q] = nv[q]
            ns = nn
            if save:
                for j in range(H):
                    hseq[b, t, j] = h[j]
        if save:  # padding (out arrives zeroed): no membrane, no gate in the record
            for t in range(L, T):
                for j in range(H):
                    hseq[b, t, j] = 0.0
                    if gkind != DENSE:
                        gsave[b, t, j] = 0.0
        for j in range(H):
            hT[b, j] = h[j]


@nb.njit(cache=True, fastmath=FINITE_FREE)
def _backward_chunk(c, cell, h0, s0, gate, lens, nchunks, out, saved, upstream, grads):
    recurrent, reset_zero, thr = cell.recurrent, cell.reset_zero, cell.thr
    scode, sscale, sgain, V, beta = cell.scode, cell.sscale, cell.sgain, cell.V, cell.beta
    gkind, off, idx = gate.kind, gate.off, gate.idx
    theta, gcode, gscale, ggain = gate.theta, gate.code, gate.scale, gate.gain
    _, hseq, dsave, gsave = saved
    dout, dhT, dsT, dgrec = upstream
    dxp, dh0, ds0, dVT, db, dbeta, dg, dth = grads
    B, T, H = dxp.shape
    thr32 = np.float32(thr)
    lo, hi = chunk(c, nchunks, B)
    lh = np.empty(H, np.float32)
    ls = np.empty(H, np.float32)
    lhp = np.empty(H, np.float32)
    lsp = np.zeros(H, np.float32)
    dil = np.empty(H, np.float32)
    sl = np.empty(H, np.int32)
    dVc = dVT[c]
    dbc = db[c]
    dbetac = dbeta[c]
    dgc = dg[c]
    dthc = dth[c]
    has_dgrec = dgrec.shape == dout.shape  # else a placeholder: the record has no gradient
    for b in range(lo, hi):
        for j in range(H):
            lh[j] = dhT[b, j]
            ls[j] = dsT[b, j]
        for t in range(lens[b] - 1, -1, -1):
            for j in range(H):
                ls[j] += dout[b, t, j]
                lhp[j] = lh[j]
            hp = hseq[b, t - 1] if t > 0 else h0[b]
            sp = out[b, t - 1] if t > 0 else s0[b]
            if gkind == RHYTHMIC:
                n_t = off[t + 1] - off[t]
                base = off[t]
            else:
                n_t = H
                base = 0
            for k in range(n_t):
                i = idx[base + k] if gkind == RHYTHMIC else k
                x = hseq[b, t, i] - thr32
                sg = np.float32(sgain * surrogate_grad(scode, sscale, x))
                if gkind == DENSE:
                    dhn = lh[i] + ls[i] * sg
                    dd = dhn
                else:
                    g = gsave[b, t, i]
                    d = dsave[b, t, i]
                    dgi = ls[i] * (np.float32(1.0) if x > 0 else np.float32(0.0))
                    dhn = lh[i] + ls[i] * g * sg
                    dgi += dhn * d
                    if gkind == EVENT:
                        if has_dgrec:  # the record's own gradient (a rate penalty on rec.gate)
                            dgi += dgrec[b, t, i]
                        se = np.float32(ggain * surrogate_grad(gcode, gscale, abs(d) - theta[i]))
                        dd = g * dhn + dgi * se * sign(d)
                        dthc[i] -= dgi * se
                    else:
                        dgc[t, i] += dgi
                        dd = g * dhn
                lhp[i] = dhn - dd
                dil[k] = dd
                if dd != 0:
                    hpi = hp[i]
                    if reset_zero and hpi > thr32:
                        pass  # beta * 0 * h: no path through h or beta
                    else:
                        lhp[i] += dd * beta[i]
                        dbetac[i] += dd * hpi
                    dxp[b, t, i] = dd
                    dbc[i] += dd
            if recurrent:
                for j in range(H):
                    lsp[j] = 0
                ns = 0
                for j in range(H):
                    if sp[j] != 0:
                        sl[ns] = j
                        ns += 1
                for k in range(n_t):
                    v = dil[k]
                    if v == 0:
                        continue
                    i = idx[base + k] if gkind == RHYTHMIC else k
                    for j in range(H):
                        lsp[j] += V[i, j] * v
                    for q in range(ns):
                        j = sl[q]
                        dVc[j, i] += v * sp[j]
                for j in range(H):
                    ls[j] = lsp[j]
            else:
                for j in range(H):
                    ls[j] = 0
            for j in range(H):
                lh[j] = lhp[j]
        for j in range(H):
            dh0[b, j] = lh[j]
            ds0[b, j] = ls[j]


@nb.njit(cache=True, parallel=True)
def forward(cell, xp, h0, s0, gate, lens, nchunks, out, hT, saved):
    """Parallel over batch chunks; each chunk runs its own time loop, sample b for its
    first lens[b] steps (B,) int64; its spikes after them are zero, hT its membrane after them."""
    for c in nb.prange(nchunks):
        _forward_chunk(c, cell, xp, h0, s0, gate, lens, nchunks, out, hT, saved)


@nb.njit(cache=True, parallel=True)
def backward(cell, h0, s0, gate, lens, nchunks, out, saved, upstream, grads):
    """BPTT of ``forward``; ``upstream`` = (dout (B, T, H), dhT, dsT (B, H), dgrec), dhT and dsT
    taken at each sample's own last step lens[b] - 1; dgrec (B, T, H) the incoming dL/dg of
    the event gate's recorded values, or a (1, 1, 1) placeholder (no gradient there)."""
    for c in nb.prange(nchunks):
        _backward_chunk(c, cell, h0, s0, gate, lens, nchunks, out, saved, upstream, grads)
