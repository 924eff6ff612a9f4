r"""Fused Triton recurrence: the time loop of ``kernels/reference.py`` in one launch.

Same equations as the reference (read them there). Four layers: JIT kernels
(``_fwd_kernel``, ``_bwd_kernel``) -> launchers (``_launch_fwd``, ``_launch_bwd``) ->
``_Recurrence`` (``torch.autograd.Function``) -> :func:`recurrence` (checks arguments).

Design: a persistent program per batch row, ``grid = (B,)``. Each program runs all T
steps; the state lives in a (B, T+1, H) sequence buffer in global memory (row t is
h_{t-1}, row 0 is h0), so a step reads h_{t-1} (L1/L2 resident) and writes h_t, and
``tl.debug_barrier()`` (a CTA barrier) orders the writes of step t before the reads of
step t+1. No grid-wide synchronisation is needed because no program reads another
program's state. The recurrent matrix is streamed from L2 in (BI rows x BJ columns)
tiles and reduced in fp32 registers; there is no hidden-size limit from registers.

Sparsity:
* rhythmic gate: the rows to compute at step t are a compacted index list
  ``idx[off[t]:off[t+1]]`` (prefix sum over a (T, H) mask, built once per call on the
  host side); the other rows are copied. The mask is g in inference or with a frozen
  gate, and ``g | gate.support`` when the gate trains (a closed row with
  sigma'(a) != 0 needs f - h for dL/dg but keeps its state); only a trainable gate
  without a support (a hand-built ``GateInput``) computes every row. Backward compacts
  ``U^T dgh`` on g itself (a closed neuron's candidate gets no gradient) and writes
  dL/dg only on the mask (sigma' is exactly zero elsewhere).
* event gate (RNN/GRU): U h_{t-1} is carried in a (B, G) fp32 accumulator and updated
  with U (h_{t-1} - h_{t-2}), skipping column tiles where no neuron changed; it is
  recomputed exactly every ``REFRESH`` steps to bound rounding drift.
* LIF: the recurrent current V s_{t-1} skips column tiles without a spike.
* backward: U^T dgh loads no weights for rows whose pre-activation gradient is zero.

Saved for backward: the state sequence (B, T+1, H) (it is the output of RNN/GRU), LIF
spikes, and the recurrent pre-activation gh = U h + b (B, T, G, fp32); the candidate
is recomputed elementwise from gh. dU = sum_t dgh_t^T h_{t-1} and db are one GEMM and
one reduction in PyTorch on the (B, T, G) gradient the backward kernel writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..contract import make_record
from . import grid
from ._common import (
    CELL_CODES,
    GATE_CODES,
    LAUNCH_OPTIONS,
    _gru_parts,
    _gru_parts_grad,
    _rows_matvec,
    _rows_matvec3,
    _sign,
    _step_range,
    _surrogate_grad,
    _tanh,
    dummy,
    tiles,
)
from .lif import launch_lif_ff_fwd

__all__ = ["recurrence_triton"]

REFRESH = 64  # event gate: exact U h every REFRESH steps
SPLIT = 128  # feed-forward LIF: neurons per program (no coupling between neurons)


# --------------------------------------------------------------------------- forward
@triton.jit
def _fwd_kernel(
    xp_ptr, w_ptr, b_ptr, gate_ptr, idx_ptr, off_ptr, theta_ptr, beta_ptr,
    hs_ptr, ss_ptr, gh_ptr, acc_ptr, grec_ptr,
    T, H, threshold, g_scale, s_scale,
    CELL: tl.constexpr, GATE: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    SAVE_GH: tl.constexpr, RECORD: tl.constexpr, ZERO_RESET: tl.constexpr,
    G_CODE: tl.constexpr, S_CODE: tl.constexpr, REFRESH: tl.constexpr,
    BI: tl.constexpr, BJ: tl.constexpr,
):
    # grid (B,): a program owns one batch row (the feed-forward LIF with a dense or event
    # gate runs kernels/triton/lif.py instead).
    # xp (B, T, G); hs, ss (B, T+1, H) state / LIF spike sequences (row 0 = initial);
    # gh (B, T, G) fp32; acc (B, G) fp32 event accumulator; grec (B, T, H) gate record.
    b = tl.program_id(0).to(tl.int64)
    NSEC: tl.constexpr = 3 if CELL == 1 else 1
    G = NSEC * H
    SKIP: tl.constexpr = (CELL == 2) or (GATE == 2)
    for t in range(0, T):
        prev = (b * (T + 1) + t) * H
        new = prev + H
        xrow = (b * T + t) * G
        # event gate: the U h update uses h_{t-1} (exact refresh) or h_{t-1} - h_{t-2}
        use_v2 = (t % REFRESH) != 0
        if GATE == 1:
            for j0 in range(0, H, BJ):  # closed rows keep their state, do not spike
                j = j0 + tl.arange(0, BJ)
                jm = j < H
                tl.store(hs_ptr + new + j, tl.load(hs_ptr + prev + j, mask=jm), mask=jm)
                if CELL == 2:
                    tl.store(ss_ptr + new + j, tl.zeros([BJ], tl.float32), mask=jm)
            tl.debug_barrier()
        start, end = _step_range(off_ptr, t, H, GATE)
        for c0 in range(start, end, BI):
            k = c0 + tl.arange(0, BI)
            km = k < end
            if GATE == 1:
                rows = tl.load(idx_ptr + k, mask=km, other=0)
            else:
                rows = k
            hp = tl.load(hs_ptr + prev + rows, mask=km, other=0.0).to(tl.float32)
            # ---- recurrent pre-activation gh = U h_{t-1} (+ b_hh), one per section
            gh0 = tl.zeros([BI], tl.float32)
            gh1 = tl.zeros([BI], tl.float32)
            gh2 = tl.zeros([BI], tl.float32)
            if HAS_W:
                if CELL == 2:
                    vrow = ss_ptr + prev
                    gh0 = _rows_matvec(w_ptr, rows, km, vrow, vrow, t < 0, H, True, BI, BJ)
                elif GATE == 2:
                    v1 = hs_ptr + prev
                    v2 = hs_ptr + prev - H
                    ab = acc_ptr + b * G
                    for sec in tl.static_range(NSEC):
                        a_old = tl.load(ab + sec * H + rows, mask=km & use_v2, other=0.0)
                        a_new = a_old + _rows_matvec(
                            w_ptr, sec * H + rows, km, v1, v2, use_v2, H, SKIP, BI, BJ
                        )
                        tl.store(ab + sec * H + rows, a_new, mask=km)
                        if sec == 0:
                            gh0 = a_new
                        elif sec == 1:
                            gh1 = a_new
                        else:
                            gh2 = a_new
                elif CELL == 1:
                    gh0, gh1, gh2 = _rows_matvec3(w_ptr, rows, km, hs_ptr + prev, H, BI, BJ)
                else:
                    v1 = hs_ptr + prev
                    gh0 = _rows_matvec(w_ptr, rows, km, v1, v1, t < 0, H, False, BI, BJ)
                if HAS_B:
                    gh0 += tl.load(b_ptr + rows, mask=km, other=0.0).to(tl.float32)
                    if CELL == 1:
                        gh1 += tl.load(b_ptr + H + rows, mask=km, other=0.0).to(tl.float32)
                        gh2 += tl.load(b_ptr + 2 * H + rows, mask=km, other=0.0).to(tl.float32)
            # ---- candidate f
            p0 = tl.load(xp_ptr + xrow + rows, mask=km, other=0.0).to(tl.float32)
            if CELL == 0:
                f = _tanh(p0 + gh0)
            elif CELL == 1:
                p1 = tl.load(xp_ptr + xrow + H + rows, mask=km, other=0.0).to(tl.float32)
                p2 = tl.load(xp_ptr + xrow + 2 * H + rows, mask=km, other=0.0).to(tl.float32)
                r, z, n, f = _gru_parts(p0, p1, p2, gh0, gh1, gh2, hp)
            else:
                beta = tl.load(beta_ptr + rows, mask=km, other=0.0).to(tl.float32)
                beta = tl.minimum(tl.maximum(beta, 0.0), 1.0)
                rho = tl.where(hp > threshold, 1.0, 0.0)
                if ZERO_RESET:
                    f = beta * (1.0 - rho) * hp + (p0 + gh0)
                else:
                    f = beta * hp + (p0 + gh0) - rho * threshold
            # ---- gate blend
            if GATE == 0:
                g = tl.full([BI], 1.0, tl.float32)
                hn = f
            elif GATE == 1:
                g = tl.load(gate_ptr + t * H + rows, mask=km, other=0.0).to(tl.float32)
                # a closed row is computed only for dL/dg (f - h): it keeps its state
                hn = tl.where(g != 0, hp + g * (f - hp), hp)
            else:
                theta = tl.load(theta_ptr + rows, mask=km, other=0.0).to(tl.float32)
                d = f - hp
                g = tl.where(tl.abs(d) - theta > 0, 1.0, 0.0)
                hn = hp + g * d
            tl.store(hs_ptr + new + rows, hn, mask=km)
            if CELL == 2:
                s = g * tl.where(hn - threshold > 0, 1.0, 0.0)
                tl.store(ss_ptr + new + rows, s, mask=km)
            if SAVE_GH:
                tl.store(gh_ptr + xrow + rows, gh0, mask=km)
                if CELL == 1:
                    tl.store(gh_ptr + xrow + H + rows, gh1, mask=km)
                    tl.store(gh_ptr + xrow + 2 * H + rows, gh2, mask=km)
            if RECORD:
                tl.store(grec_ptr + (b * T + t) * H + rows, g, mask=km)
        tl.debug_barrier()


# -------------------------------------------------------------------------- backward
@triton.jit
def _bwd_kernel(
    xp_ptr, w_ptr, gate_ptr, idx_ptr, off_ptr, theta_ptr, beta_ptr, sup_ptr,
    hs_ptr, ss_ptr, gh_ptr, dout_ptr,
    ch_ptr, cs_ptr, dir_ptr, dxp_ptr, dgh_ptr, dg_ptr, dth_ptr, dbeta_ptr,
    T, H, threshold, g_scale, s_scale,
    CELL: tl.constexpr, GATE: tl.constexpr, HAS_W: tl.constexpr,
    NEED_DG: tl.constexpr, DG_MASK: tl.constexpr, ZERO_RESET: tl.constexpr,
    G_CODE: tl.constexpr, S_CODE: tl.constexpr,
    SPLIT: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
):
    # grid as in _fwd_kernel (SPLIT > 0 only without recurrent weights).
    # sup (T, H) int8 (DG_MASK): rows whose candidate the forward computed (g | support);
    # dL/dg is written there and is 0 elsewhere (gh was not computed, sigma' = 0).
    # ch, cs (B, H) fp32: incoming dL/dh_t, dL/ds_t (hold dL/dh0, dL/ds0 at the end);
    # dir (B, H) scratch: the part of dL/dh_{t-1} that bypasses U; dxp, dgh (B, T, G) fp32
    # (dgh is dxp except the GRU n section); dg (B, T, H); dth, dbeta (B, H).
    b = tl.program_id(0).to(tl.int64)
    NSEC: tl.constexpr = 3 if CELL == 1 else 1
    G = NSEC * H
    lo = 0
    hi = H
    if SPLIT > 0:
        lo = tl.program_id(1) * SPLIT
        hi = tl.minimum(lo + SPLIT, H)
    for tt in range(0, T):
        t = T - 1 - tt
        prev = (b * (T + 1) + t) * H
        new = prev + H
        xrow = (b * T + t) * G
        orow = (b * T + t) * H
        # ---- phase 1, elementwise over all neurons
        for r0 in range(lo, hi, BJ):
            rows = r0 + tl.arange(0, BJ)
            rm = rows < hi
            hp = tl.load(hs_ptr + prev + rows, mask=rm, other=0.0).to(tl.float32)
            hn = tl.load(hs_ptr + new + rows, mask=rm, other=0.0).to(tl.float32)
            a = tl.load(ch_ptr + b * H + rows, mask=rm, other=0.0)
            if HAS_W:
                gh0 = tl.load(gh_ptr + xrow + rows, mask=rm, other=0.0)
            else:
                gh0 = tl.zeros([BJ], tl.float32)
            p0 = tl.load(xp_ptr + xrow + rows, mask=rm, other=0.0).to(tl.float32)
            if CELL == 0:
                f = _tanh(p0 + gh0)
            elif CELL == 1:
                gh1 = tl.load(gh_ptr + xrow + H + rows, mask=rm, other=0.0)
                gh2 = tl.load(gh_ptr + xrow + 2 * H + rows, mask=rm, other=0.0)
                p1 = tl.load(xp_ptr + xrow + H + rows, mask=rm, other=0.0).to(tl.float32)
                p2 = tl.load(xp_ptr + xrow + 2 * H + rows, mask=rm, other=0.0).to(tl.float32)
                r, z, n, f = _gru_parts(p0, p1, p2, gh0, gh1, gh2, hp)
            else:
                beta_raw = tl.load(beta_ptr + rows, mask=rm, other=0.0).to(tl.float32)
                beta = tl.minimum(tl.maximum(beta_raw, 0.0), 1.0)
                rho = tl.where(hp > threshold, 1.0, 0.0)
                if ZERO_RESET:
                    f = beta * (1.0 - rho) * hp + (p0 + gh0)
                else:
                    f = beta * hp + (p0 + gh0) - rho * threshold
            d = f - hp
            if GATE == 0:
                g = tl.full([BJ], 1.0, tl.float32)
            elif GATE == 1:
                g = tl.load(gate_ptr + t * H + rows, mask=rm, other=0.0).to(tl.float32)
            else:
                theta = tl.load(theta_ptr + rows, mask=rm, other=0.0).to(tl.float32)
                g = tl.where(tl.abs(d) - theta > 0, 1.0, 0.0)
            dgt = a * d  # dL/dg through h_t = h + g d
            if CELL == 2:
                ds = tl.load(cs_ptr + b * H + rows, mask=rm, other=0.0)
                ds += tl.load(dout_ptr + orow + rows, mask=rm, other=0.0).to(tl.float32)
                spk = tl.where(hn - threshold > 0, 1.0, 0.0)
                a += ds * g * _surrogate_grad(hn - threshold, S_CODE, s_scale)
                dgt = a * d + ds * spk
            else:
                a += tl.load(dout_ptr + orow + rows, mask=rm, other=0.0).to(tl.float32)
                dgt = a * d
            if GATE == 0:
                df = a
                dh = tl.zeros([BJ], tl.float32)
            elif GATE == 1:
                df = tl.where(g != 0, g * a, 0.0)
                dh = (1.0 - g) * a
                if NEED_DG:
                    if DG_MASK:
                        sup = tl.load(sup_ptr + t * H + rows, mask=rm, other=0)
                        dgt = tl.where(sup != 0, dgt, 0.0)
                    tl.store(dg_ptr + orow + rows, dgt, mask=rm)
            else:
                sg = _surrogate_grad(tl.abs(d) - theta, G_CODE, g_scale)
                df = g * a + dgt * sg * _sign(d)
                dh = a - df
                dth = tl.load(dth_ptr + b * H + rows, mask=rm, other=0.0)
                tl.store(dth_ptr + b * H + rows, dth - dgt * sg, mask=rm)
            if CELL == 0:
                dpre = df * (1.0 - f * f)
                tl.store(dxp_ptr + xrow + rows, dpre, mask=rm)
            elif CELL == 1:
                drp, dzp, dnp, dhz = _gru_parts_grad(df, r, z, n, gh2, hp)
                dh += dhz
                tl.store(dxp_ptr + xrow + rows, drp, mask=rm)
                tl.store(dxp_ptr + xrow + H + rows, dzp, mask=rm)
                tl.store(dxp_ptr + xrow + 2 * H + rows, dnp, mask=rm)
                tl.store(dgh_ptr + xrow + 2 * H + rows, dnp * r, mask=rm)
            else:
                tl.store(dxp_ptr + xrow + rows, df, mask=rm)
                inside = (beta_raw >= 0.0) & (beta_raw <= 1.0)
                if ZERO_RESET:
                    dh += df * beta * (1.0 - rho)
                    dbt = df * (1.0 - rho) * hp
                else:
                    dh += df * beta
                    dbt = df * hp
                dbo = tl.load(dbeta_ptr + b * H + rows, mask=rm, other=0.0)
                tl.store(dbeta_ptr + b * H + rows, dbo + tl.where(inside, dbt, 0.0), mask=rm)
            tl.store(dir_ptr + b * H + rows, dh, mask=rm)
        tl.debug_barrier()
        # ---- phase 2, transposed matvec over the rows that got a gradient
        start, end = _step_range(off_ptr, t, H, GATE)
        for j0 in range(lo, hi, BJ):
            j = j0 + tl.arange(0, BJ)
            jm = j < hi
            acc = tl.zeros([BJ], tl.float32)
            if HAS_W:
                for c0 in range(start, end, BI):
                    k = c0 + tl.arange(0, BI)
                    km = k < end
                    if GATE == 1:
                        rows = tl.load(idx_ptr + k, mask=km, other=0)
                    else:
                        rows = k
                    for sec in tl.static_range(NSEC):
                        if CELL == 1:
                            if sec == 2:
                                src = dgh_ptr
                            else:
                                src = dxp_ptr
                        else:
                            src = dxp_ptr
                        v = tl.load(src + xrow + sec * H + rows, mask=km, other=0.0)
                        # rows without a gradient load nothing (a mask, not a branch: the
                        # sections' loads do not wait for each other's reductions)
                        wm = (km & (v != 0))[:, None] & jm[None, :]
                        w = tl.load(w_ptr + (sec * H + rows)[:, None] * H + j[None, :],
                                    mask=wm, other=0.0)
                        acc += tl.sum(w.to(tl.float32) * v[:, None], axis=0)
            dh = tl.load(dir_ptr + b * H + j, mask=jm, other=0.0)
            if CELL == 2:
                tl.store(ch_ptr + b * H + j, dh, mask=jm)
                tl.store(cs_ptr + b * H + j, acc, mask=jm)
            else:
                tl.store(ch_ptr + b * H + j, dh + acc, mask=jm)
        tl.debug_barrier()


# ------------------------------------------------------------------------- launchers
def _open_lists(mask: torch.Tensor):
    """Compacted open set of a (T, H) mask: idx (int32, flat), off (T+1, int32) and the
    fraction of entries set (from the size of ``nonzero``'s result: no further sync)."""
    m = mask != 0
    idx = m.nonzero()[:, 1].to(torch.int32)
    rate = idx.numel() / max(1, m.numel())
    off = torch.zeros(m.shape[0] + 1, dtype=torch.int32, device=m.device)
    off[1:] = m.sum(1).cumsum(0).to(torch.int32)
    if idx.numel() == 0:
        idx = torch.zeros(1, dtype=torch.int32, device=m.device)
    return idx.contiguous(), off, rate


def _launch_fwd(cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, compute_mask, save, record):
    B, T, G = xp.shape
    H = h0.shape[1]
    dev, dt = xp.device, xp.dtype
    cell, gate = cfg["cell"], cfg["gate"]
    hs = torch.empty(B, T + 1, H, device=dev, dtype=dt)
    hs[:, 0] = h0
    ss = None
    if cell == "lif":
        ss = torch.empty(B, T + 1, H, device=dev, dtype=dt)
        ss[:, 0] = s0
    has_w = w_hh is not None
    d = dummy(dev)
    grec = torch.empty(B, T, H, device=dev, dtype=dt) if (record and gate == "event") else d
    if not has_w and gate != "rhythmic":  # feed-forward LIF: the streaming kernel (lif.py)
        launch_lif_ff_fwd(cfg, xp, hs, ss, theta, beta, grec, record, d)
        return hs, ss, None, (grec if record and gate == "event" else None)
    save_gh = save and has_w
    alloc = torch.zeros if gate == "rhythmic" else torch.empty
    gh = alloc(B, T, G, device=dev, dtype=torch.float32) if save_gh else d
    acc = torch.empty(B, G, device=dev, dtype=torch.float32) if gate == "event" else d
    idx, off, rate = _open_lists(compute_mask) if gate == "rhythmic" else (d, d, 1.0)
    if grid.eligible(cell, gate, w_hh, B, dev, rate, save):
        grid.launch_fwd(cfg, xp, hs, w_hh, b_hh, gvals, compute_mask, idx, off, gh, save_gh)
        return hs, ss, (gh if save_gh else None), None
    BI, BJ = tiles(H)
    _fwd_kernel[(B, 1)](
        xp, w_hh if has_w else d, b_hh if b_hh is not None else d,
        gvals if gate == "rhythmic" else d, idx, off,
        theta if gate == "event" else d, beta if cell == "lif" else d,
        hs, ss if ss is not None else d, gh, acc, grec,
        T, H, cfg["threshold"], cfg["g_scale"], cfg["s_scale"],
        CELL=CELL_CODES[cell], GATE=GATE_CODES[gate], HAS_W=has_w,
        HAS_B=(b_hh is not None) and has_w, SAVE_GH=save_gh,
        RECORD=record and gate == "event", ZERO_RESET=cfg["zero_reset"],
        G_CODE=cfg["g_code"], S_CODE=cfg["s_code"], REFRESH=REFRESH,
        BI=BI, BJ=BJ, num_warps=4, **LAUNCH_OPTIONS,
    )
    if not save_gh:
        gh = None
    return hs, ss, gh, (grec if record and gate == "event" else None)


def _launch_bwd(cfg, xp, w_hh, gvals, theta, beta, hs, ss, gh, dout, dhT, dsT, need_dg, dg_mask):
    B, T, G = xp.shape
    H = hs.shape[2]
    dev = xp.device
    cell, gate = cfg["cell"], cfg["gate"]
    f32 = dict(device=dev, dtype=torch.float32)
    ch = dhT.float().contiguous().clone()
    cs = dsT.float().contiguous().clone() if cell == "lif" else dummy(dev)
    dirb = torch.empty(B, H, **f32)
    dxp = torch.empty(B, T, G, **f32)
    dgh = torch.empty(B, T, G, **f32) if cell == "gru" else dxp
    dg = torch.empty(B, T, H, **f32) if need_dg else dummy(dev)
    dth = torch.zeros(B, H, **f32) if gate == "event" else dummy(dev)
    dbeta = torch.zeros(B, H, **f32) if cell == "lif" else dummy(dev)
    idx, off, rate = _open_lists(gvals) if gate == "rhythmic" else (dummy(dev), dummy(dev), 1.0)
    if grid.eligible(cell, gate, w_hh, B, dev, rate, True):
        grid.launch_bwd(cfg, xp, w_hh, gvals, dg_mask, idx, off, hs, gh, dout, ch, dirb, dxp,
                        dgh, dg, need_dg)
    else:
        _launch_bwd_rows(cfg, xp, w_hh, gvals, theta, beta, dg_mask, idx, off, hs, ss, gh, dout,
                         ch, cs, dirb, dxp, dgh, dg, dth, dbeta, need_dg)
    if cell == "gru":  # the r and z sections of dgh equal dxp
        dgh[:, :, : 2 * H] = dxp[:, :, : 2 * H]
    return ch, (cs if cell == "lif" else None), dxp, dgh, (dg if need_dg else None), dth, dbeta


def _launch_bwd_rows(cfg, xp, w_hh, gvals, theta, beta, dg_mask, idx, off, hs, ss, gh, dout,
                     ch, cs, dirb, dxp, dgh, dg, dth, dbeta, need_dg):
    B, T, G = xp.shape
    H = hs.shape[2]
    dev = xp.device
    cell, gate = cfg["cell"], cfg["gate"]
    BI, BJ = tiles(H)
    split = SPLIT if w_hh is None else 0
    d = dummy(dev)
    _bwd_kernel[(B, triton.cdiv(H, split) if split else 1)](
        xp, w_hh if w_hh is not None else d, gvals if gate == "rhythmic" else d, idx, off,
        theta if gate == "event" else d, beta if cell == "lif" else d,
        dg_mask if dg_mask is not None else d,
        hs, ss if ss is not None else d, gh if gh is not None else d, dout,
        ch, cs, dirb, dxp, dgh, dg, dth, dbeta,
        T, H, cfg["threshold"], cfg["g_scale"], cfg["s_scale"],
        CELL=CELL_CODES[cell], GATE=GATE_CODES[gate], HAS_W=w_hh is not None,
        NEED_DG=need_dg, DG_MASK=need_dg and dg_mask is not None, ZERO_RESET=cfg["zero_reset"],
        G_CODE=cfg["g_code"], S_CODE=cfg["s_code"], SPLIT=split, BI=BI, BJ=BJ, num_warps=4,
        **LAUNCH_OPTIONS,
    )


# ------------------------------------------------------------------ autograd Function
class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, support):
        gate = cfg["gate"]
        needs = ctx.needs_input_grad
        gate_grad = gate == "rhythmic" and needs[6]
        mask = dg_mask = None
        if gate == "rhythmic":
            # Rows whose candidate is computed: the open ones, and for a trainable gate
            # also the closed ones where sigma'(a) != 0 (dL/dg needs d = f - h there).
            # Without a support every closed row may need it: dense.
            if not gate_grad:
                mask = gvals
            elif support is None:
                mask = torch.ones_like(gvals)
            else:
                mask = (gvals != 0) | support
                dg_mask = mask.to(torch.int8)
        rec = cfg["record"]
        hs, ss, gh, grec = _launch_fwd(cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, mask,
                                       any(needs), rec)
        T = xp.shape[1]
        out = (ss if cfg["cell"] == "lif" else hs)[:, 1:]
        hT = hs[:, T].clone()
        sT = ss[:, T].clone() if ss is not None else None
        ctx.cfg = cfg
        ctx.gate_grad = gate_grad
        ctx.save_for_backward(xp, w_hh, gvals, theta, beta, hs, ss, gh, dg_mask)
        aux = [hs] if rec and cfg["cell"] == "lif" else []
        if grec is not None:
            aux.append(grec)
        for x in aux:
            ctx.mark_non_differentiable(x)
        return (out, hT, sT, *aux)

    @staticmethod
    def backward(ctx, dout, dhT, dsT, *_aux):
        cfg = ctx.cfg
        xp, w_hh, gvals, theta, beta, hs, ss, gh, dg_mask = ctx.saved_tensors
        B, T, G = xp.shape
        H = hs.shape[2]
        if dout is None:
            dout = torch.zeros(B, T, H, device=xp.device, dtype=torch.float32)
        dout = dout.contiguous()
        dhT = torch.zeros(B, H, device=xp.device) if dhT is None else dhT
        if cfg["cell"] == "lif":
            dsT = torch.zeros(B, H, device=xp.device) if dsT is None else dsT
        dh0, ds0, dxp, dgh, dg, dth, dbeta = _launch_bwd(
            cfg, xp, w_hh, gvals, theta, beta, hs, ss, gh, dout, dhT, dsT, ctx.gate_grad, dg_mask
        )
        needs = ctx.needs_input_grad
        dw = db = None
        if w_hh is not None and (needs[4] or needs[5]):
            prev = (ss if cfg["cell"] == "lif" else hs)[:, :T].reshape(B * T, H).float()
            flat = dgh.reshape(B * T, G)
            if needs[4]:
                dw = (flat.t() @ prev).to(w_hh.dtype)
            if needs[5]:
                db = flat.sum(0).to(w_hh.dtype)
        dgv = dg.sum(0).to(gvals.dtype) if dg is not None else None
        dtheta = dth.sum(0).to(theta.dtype) if cfg["gate"] == "event" and needs[7] else None
        dbt = dbeta.sum(0).to(beta.dtype) if cfg["cell"] == "lif" and needs[8] else None
        ds0 = ds0.to(xp.dtype) if ds0 is not None and needs[3] else None
        return (None, dxp.to(xp.dtype), dh0.to(xp.dtype), ds0, dw, db, dgv, dtheta, dbt, None)


# ------------------------------------------------------------------------ public API
def recurrence_triton(cell, xp, h0, s0, w_hh, b_hh, gate, lif=None, record=False):
    """Triton implementation of :func:`su_neuro.kernels.reference.recurrence`.

    Shapes: xp (B, T, G), h0 (B, H), s0 (B, H) or None, w_hh (G, H) or None,
    b_hh (G,) or None; G = H (RNN, LIF) or 3H (GRU). Returns (out, h_T, s_T, rec) as the
    reference does; ``rec.delta`` of a LIF population and ``rec.gate`` of an event gate
    are detached. A rhythmic gate whose values need a gradient computes candidates only
    where ``g = 1`` or ``gate.support`` is True; without a support (``None``) it computes
    every row (dense but exact).

    Example (any CUDA tensors; on a CPU only under ``TRITON_INTERPRET=1``):
        >>> from su_neuro.gates import GateInput
        >>> out, hT, _, _ = recurrence_triton("rnn", xp, h0, None, w, b, GateInput("dense"))
    """
    gate = gate.materialized()  # a rhythm table: its rows
    _check(cell, xp, h0, s0, w_hh, b_hh, gate, lif)
    kind = gate.kind
    surr = gate.surrogate if kind == "event" else None
    cfg = {
        "cell": cell,
        "gate": kind,
        "record": bool(record),
        "threshold": float(lif.threshold) if lif is not None else 0.0,
        "zero_reset": lif is not None and lif.reset == "zero",
        "s_code": lif.spike.code if lif is not None else 0,
        "s_scale": lif.spike.scale if lif is not None else 0.0,
        "g_code": surr.code if surr is not None else 0,
        "g_scale": surr.scale if surr is not None else 0.0,
    }
    c = lambda x: x.contiguous() if x is not None else None  # noqa: E731
    gvals = c(gate.values) if kind == "rhythmic" else None
    theta = c(gate.values) if kind == "event" else None
    beta = c(lif.beta) if lif is not None else None
    support = getattr(gate, "support", None) if kind == "rhythmic" else None
    if support is not None:
        support = (support.detach() != 0).contiguous()
    res = _Recurrence.apply(cfg, c(xp), c(h0), c(s0), c(w_hh), c(b_hh), gvals, theta, beta,
                            support)
    out, hT, sT = res[0], res[1], res[2]
    if cell != "lif":
        sT = None
    rec = None
    if record:
        vs = res[3] if cell == "lif" else torch.cat([h0[:, None], out], 1)  # (B, T + 1, H)
        rec = make_record(gate, vs[:, 0], vs[:, 1:], res[-1] if kind == "event" else None,
                          out if cell == "lif" else None)
    return out, hT, sT, rec


def _check(cell, xp, h0, s0, w_hh, b_hh, gate, lif) -> None:
    if cell not in CELL_CODES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(CELL_CODES)}")
    if gate.kind not in GATE_CODES:
        raise ValueError(f"unknown gate kind {gate.kind!r}; valid: {', '.join(GATE_CODES)}")
    if xp.dim() != 3 or h0.dim() != 2 or xp.shape[0] != h0.shape[0]:
        raise ValueError(f"xp must be (B, T, G) and h0 (B, H); got {tuple(xp.shape)}, {tuple(h0.shape)}")
    B, T, G = xp.shape
    H = h0.shape[1]
    rows = 3 if cell == "gru" else 1
    if G != rows * H:
        raise ValueError(f"{cell}: xp has G = {G} features, expected {rows} * H = {rows * H}")
    if T < 1:
        raise ValueError("xp has T = 0 steps")
    tensors = {"xp": xp, "h0": h0, "s0": s0, "w_hh": w_hh, "b_hh": b_hh}
    for name, x in tensors.items():
        if x is None:
            continue
        if x.device != xp.device or x.dtype != xp.dtype:
            raise TypeError(f"{name} is {x.dtype} on {x.device}; xp is {xp.dtype} on {xp.device}")
    if w_hh is not None and tuple(w_hh.shape) != (G, H):
        raise ValueError(f"w_hh must be ({G}, {H}), got {tuple(w_hh.shape)}")
    if b_hh is not None and tuple(b_hh.shape) != (G,):
        raise ValueError(f"b_hh must be ({G},), got {tuple(b_hh.shape)}")
    if w_hh is None and cell != "lif":
        raise ValueError(f"{cell} needs recurrent weights w_hh")
    if cell == "lif":
        if lif is None or s0 is None:
            raise ValueError("lif needs LIFParams and initial spikes s0")
        if lif.reset not in ("subtract", "zero"):
            raise ValueError(f"unknown reset {lif.reset!r}; valid resets: subtract, zero")
        if tuple(lif.beta.shape) != (H,):
            raise ValueError(f"lif.beta must be ({H},), got {tuple(lif.beta.shape)}")
    if gate.kind == "rhythmic" and tuple(gate.values.shape) != (T, H):
        raise ValueError(f"rhythmic gate values must be (T, H) = ({T}, {H}), got {tuple(gate.values.shape)}")
    support = getattr(gate, "support", None)
    if gate.kind == "rhythmic" and support is not None:
        if tuple(support.shape) != (T, H):
            raise ValueError(f"rhythmic gate support must be (T, H) = ({T}, {H}), got {tuple(support.shape)}")
        if support.device != xp.device:
            raise TypeError(f"gate support is on {support.device}; xp is on {xp.device}")
    if gate.kind == "event":
        if tuple(gate.values.shape) != (H,):
            raise ValueError(f"event gate threshold must be ({H},), got {tuple(gate.values.shape)}")
        if gate.surrogate is None:
            raise ValueError("event gate needs its surrogate")
