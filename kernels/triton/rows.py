r"""Per-row Triton recurrence: the time loop of ``kernels/reference.py`` in one launch.

Same equations as the reference (read them there). The JIT kernels (``_fwd_kernel``,
``_bwd_kernel``) and their launchers (:func:`launch_fwd`, :func:`launch_bwd`); the
autograd Function and the public function that checks arguments are in ``ops.py``, which
also picks these kernels or the multi-program ones (``grid.py``).

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

from ._common import (
    DENSE,
    EVENT,
    GRU,
    LAUNCH_OPTIONS,
    LIF,
    RHYTHMIC,
    RNN,
    Config,
    Grads,
    OpenLists,
    Operands,
    Sequences,
    _step_range,
    _step_rows,
    _tanh,
    dummy,
    event_gate,
    event_grad,
    filled,
    gru_candidate,
    gru_candidate_grad,
    lif_candidate,
    next_pow2,
    surrogate_grad,
)

__all__ = ["REFRESH", "SPLIT", "launch_bwd", "launch_fwd", "tiles"]

REFRESH = 64  # event gate: exact U h every REFRESH steps
SPLIT = 128  # feed-forward LIF backward: neurons per program (no coupling between neurons)


# ------------------------------------------------------------------------ mat-vec tiles
@triton.jit
def _rows_matvec(w_ptr, wrow, rmask, v_ptr, v2_ptr, use_v2, H,
                 SKIP: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr):
    """acc[i] = sum_j W[wrow[i], j] * (v[j] - use_v2 * v2[j])  for one tile of BI rows.

    W is row-major (*, H). The vector is streamed in column tiles of BJ; with SKIP a
    column tile whose vector entries are all zero (no spike / no change) is not loaded.
    """
    acc = tl.zeros([BI], dtype=tl.float32)
    for j0 in range(0, H, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < H
        v = tl.load(v_ptr + j, mask=jm, other=0.0).to(tl.float32)
        v = v - tl.load(v2_ptr + j, mask=jm & use_v2, other=0.0).to(tl.float32)
        wmask = rmask[:, None] & jm[None, :]
        if SKIP:
            # != is unordered: a NaN counts as non-zero (a max of |v| would drop it on a GPU,
            # whose max returns the other operand)
            if tl.max((v != 0).to(tl.int32), axis=0) > 0:
                w = tl.load(w_ptr + wrow[:, None] * H + j[None, :], mask=wmask, other=0.0)
                acc += tl.sum(w.to(tl.float32) * v[None, :], axis=1)
        else:
            w = tl.load(w_ptr + wrow[:, None] * H + j[None, :], mask=wmask, other=0.0)
            acc += tl.sum(w.to(tl.float32) * v[None, :], axis=1)
    return acc


@triton.jit
def _rows_matvec3(w_ptr, wrow, rmask, v_ptr, H, BI: tl.constexpr, BJ: tl.constexpr):
    """The three GRU sections at once: acc_s[i] = sum_j W[s*H + wrow[i], j] * v[j], s = 0, 1, 2.

    Same tiles and the same order of additions as three ``_rows_matvec`` calls (so the same
    bits), but one column loop issues the three sections' tile loads together: three loads
    in flight per step of the loop instead of one behind each reduction.
    """
    acc0 = tl.zeros([BI], dtype=tl.float32)
    acc1 = tl.zeros([BI], dtype=tl.float32)
    acc2 = tl.zeros([BI], dtype=tl.float32)
    for j0 in range(0, H, BJ):
        j = j0 + tl.arange(0, BJ)
        jm = j < H
        v = tl.load(v_ptr + j, mask=jm, other=0.0).to(tl.float32)
        wmask = rmask[:, None] & jm[None, :]
        base = w_ptr + wrow[:, None] * H + j[None, :]
        w0 = tl.load(base, mask=wmask, other=0.0)
        w1 = tl.load(base + H * H, mask=wmask, other=0.0)
        w2 = tl.load(base + 2 * H * H, mask=wmask, other=0.0)
        acc0 += tl.sum(w0.to(tl.float32) * v[None, :], axis=1)
        acc1 += tl.sum(w1.to(tl.float32) * v[None, :], axis=1)
        acc2 += tl.sum(w2.to(tl.float32) * v[None, :], axis=1)
    return acc0, acc1, acc2



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
    # gate runs kernels/triton/lif_feedforward.py instead).
    # xp (B, T, G); hs, ss (B, T+1, H) state / LIF spike sequences (row 0 = initial);
    # gh (B, T, G) fp32; acc (B, G) fp32 event accumulator; grec (B, T, H) gate record.
    b = tl.program_id(0).to(tl.int64)
    NSEC: tl.constexpr = 3 if CELL == GRU else 1
    G = NSEC * H
    SKIP: tl.constexpr = (CELL == LIF) or (GATE == EVENT)
    for t in range(0, T):
        prev = (b * (T + 1) + t) * H
        new = prev + H
        xrow = (b * T + t) * G
        # event gate: the U h update uses h_{t-1} (exact refresh) or h_{t-1} - h_{t-2}
        use_v2 = (t % REFRESH) != 0
        if GATE == RHYTHMIC:
            for j0 in range(0, H, BJ):  # closed rows keep their state, do not spike
                j = j0 + tl.arange(0, BJ)
                jm = j < H
                tl.store(hs_ptr + new + j, tl.load(hs_ptr + prev + j, mask=jm), mask=jm)
                if CELL == LIF:
                    tl.store(ss_ptr + new + j, tl.zeros([BJ], tl.float32), mask=jm)
            tl.debug_barrier()
        start, end = _step_range(off_ptr, t, H, GATE)
        for c0 in range(start, end, BI):
            k = c0 + tl.arange(0, BI)
            km = k < end
            rows = _step_rows(idx_ptr, k, km, GATE == RHYTHMIC)
            hp = tl.load(hs_ptr + prev + rows, mask=km, other=0.0).to(tl.float32)
            # ---- recurrent pre-activation gh = U h_{t-1} (+ b_hh), one per section
            gh0 = tl.zeros([BI], tl.float32)
            gh1 = tl.zeros([BI], tl.float32)
            gh2 = tl.zeros([BI], tl.float32)
            if HAS_W:
                if CELL == LIF:
                    vrow = ss_ptr + prev
                    gh0 = _rows_matvec(w_ptr, rows, km, vrow, vrow, t < 0, H, True, BI, BJ)
                elif GATE == EVENT:
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
                elif CELL == GRU:
                    gh0, gh1, gh2 = _rows_matvec3(w_ptr, rows, km, hs_ptr + prev, H, BI, BJ)
                else:
                    v1 = hs_ptr + prev
                    gh0 = _rows_matvec(w_ptr, rows, km, v1, v1, t < 0, H, False, BI, BJ)
                if HAS_B:
                    gh0 += tl.load(b_ptr + rows, mask=km, other=0.0).to(tl.float32)
                    if CELL == GRU:
                        gh1 += tl.load(b_ptr + H + rows, mask=km, other=0.0).to(tl.float32)
                        gh2 += tl.load(b_ptr + 2 * H + rows, mask=km, other=0.0).to(tl.float32)
            # ---- candidate f
            p0 = tl.load(xp_ptr + xrow + rows, mask=km, other=0.0).to(tl.float32)
            if CELL == RNN:
                f = _tanh(p0 + gh0)
            elif CELL == GRU:
                p1 = tl.load(xp_ptr + xrow + H + rows, mask=km, other=0.0).to(tl.float32)
                p2 = tl.load(xp_ptr + xrow + 2 * H + rows, mask=km, other=0.0).to(tl.float32)
                r, z, n, f = gru_candidate(p0, p1, p2, gh0, gh1, gh2, hp)
            else:
                beta = tl.load(beta_ptr + rows, mask=km, other=0.0).to(tl.float32)
                beta = tl.minimum(tl.maximum(beta, 0.0), 1.0)
                _rho, f = lif_candidate(beta, hp, p0 + gh0, threshold, ZERO_RESET)
            # ---- gate blend
            if GATE == DENSE:
                g = tl.full([BI], 1.0, tl.float32)
                hn = f
            elif GATE == RHYTHMIC:
                g = tl.load(gate_ptr + t * H + rows, mask=km, other=0.0).to(tl.float32)
                # a closed row is computed only for dL/dg (f - h): it keeps its state
                hn = tl.where(g != 0, hp + g * (f - hp), hp)
            else:
                theta = tl.load(theta_ptr + rows, mask=km, other=0.0).to(tl.float32)
                d = f - hp
                g = event_gate(d, theta)
                hn = hp + g * d
            tl.store(hs_ptr + new + rows, hn, mask=km)
            if CELL == LIF:
                s = g * tl.where(hn - threshold > 0, 1.0, 0.0)
                tl.store(ss_ptr + new + rows, s, mask=km)
            if SAVE_GH:
                tl.store(gh_ptr + xrow + rows, gh0, mask=km)
                if CELL == GRU:
                    tl.store(gh_ptr + xrow + H + rows, gh1, mask=km)
                    tl.store(gh_ptr + xrow + 2 * H + rows, gh2, mask=km)
            if RECORD:
                tl.store(grec_ptr + (b * T + t) * H + rows, g, mask=km)
        tl.debug_barrier()


# -------------------------------------------------------------------------- backward
@triton.jit
def _bwd_kernel(
    xp_ptr, w_ptr, gate_ptr, idx_ptr, off_ptr, theta_ptr, beta_ptr, sup_ptr,
    hs_ptr, ss_ptr, gh_ptr, dout_ptr, dgrec_ptr,
    ch_ptr, cs_ptr, dir_ptr, dxp_ptr, dgh_ptr, dg_ptr, dth_ptr, dbeta_ptr,
    T, H, threshold, g_scale, s_scale, g_gain, s_gain,
    CELL: tl.constexpr, GATE: tl.constexpr, HAS_W: tl.constexpr,
    NEED_DG: tl.constexpr, DG_MASK: tl.constexpr, DGREC: tl.constexpr, ZERO_RESET: tl.constexpr,
    G_CODE: tl.constexpr, S_CODE: tl.constexpr,
    SPLIT: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr,
):
    # grid as in _fwd_kernel (SPLIT > 0 only without recurrent weights).
    # sup (T, H) int8 (DG_MASK): rows whose candidate the forward computed (g | support);
    # dL/dg is written there and is 0 elsewhere (gh was not computed, sigma' = 0).
    # ch, cs (B, H) fp32: incoming dL/dh_t, dL/ds_t (hold dL/dh0, dL/ds0 at the end);
    # dir (B, H) scratch: the part of dL/dh_{t-1} that bypasses U; dxp, dgh (B, T, G) fp32
    # (dgh is dxp except the GRU n section); dg (B, T, H); dth, dbeta (B, H).
    # DGREC (event gate): dgrec (B, T, H) the incoming dL/dg of the recorded gate values.
    b = tl.program_id(0).to(tl.int64)
    NSEC: tl.constexpr = 3 if CELL == GRU else 1
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
            if CELL == RNN:
                f = _tanh(p0 + gh0)
            elif CELL == GRU:
                gh1 = tl.load(gh_ptr + xrow + H + rows, mask=rm, other=0.0)
                gh2 = tl.load(gh_ptr + xrow + 2 * H + rows, mask=rm, other=0.0)
                p1 = tl.load(xp_ptr + xrow + H + rows, mask=rm, other=0.0).to(tl.float32)
                p2 = tl.load(xp_ptr + xrow + 2 * H + rows, mask=rm, other=0.0).to(tl.float32)
                r, z, n, f = gru_candidate(p0, p1, p2, gh0, gh1, gh2, hp)
            else:
                beta_raw = tl.load(beta_ptr + rows, mask=rm, other=0.0).to(tl.float32)
                beta = tl.minimum(tl.maximum(beta_raw, 0.0), 1.0)
                rho, f = lif_candidate(beta, hp, p0 + gh0, threshold, ZERO_RESET)
            d = f - hp
            if GATE == DENSE:
                g = tl.full([BJ], 1.0, tl.float32)
            elif GATE == RHYTHMIC:
                g = tl.load(gate_ptr + t * H + rows, mask=rm, other=0.0).to(tl.float32)
            else:
                theta = tl.load(theta_ptr + rows, mask=rm, other=0.0).to(tl.float32)
                g = event_gate(d, theta)
            dgt = a * d  # dL/dg through h_t = h + g d
            if CELL == LIF:
                ds = tl.load(cs_ptr + b * H + rows, mask=rm, other=0.0)
                ds += tl.load(dout_ptr + orow + rows, mask=rm, other=0.0).to(tl.float32)
                spk = tl.where(hn - threshold > 0, 1.0, 0.0)
                a += ds * g * (s_gain * surrogate_grad(hn - threshold, S_CODE, s_scale))
                dgt = a * d + ds * spk
            else:
                a += tl.load(dout_ptr + orow + rows, mask=rm, other=0.0).to(tl.float32)
                dgt = a * d
            if GATE == DENSE:
                df = a
                dh = tl.zeros([BJ], tl.float32)
            elif GATE == RHYTHMIC:
                df = tl.where(g != 0, g * a, 0.0)
                dh = (1.0 - g) * a
                if NEED_DG:
                    if DG_MASK:
                        sup = tl.load(sup_ptr + t * H + rows, mask=rm, other=0)
                        dgt = tl.where(sup != 0, dgt, 0.0)
                    tl.store(dg_ptr + orow + rows, dgt, mask=rm)
            else:
                if DGREC:  # the record's own gradient (a rate penalty on rec.gate)
                    dgt += tl.load(dgrec_ptr + orow + rows, mask=rm, other=0.0)
                df, dh, gs = event_grad(a, d, g, dgt, theta, G_CODE, g_scale, g_gain)
                dth = tl.load(dth_ptr + b * H + rows, mask=rm, other=0.0)
                tl.store(dth_ptr + b * H + rows, dth - gs, mask=rm)
            if CELL == RNN:
                dpre = df * (1.0 - f * f)
                tl.store(dxp_ptr + xrow + rows, dpre, mask=rm)
            elif CELL == GRU:
                drp, dzp, dnp, dhz = gru_candidate_grad(df, r, z, n, gh2, hp)
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
                    rows = _step_rows(idx_ptr, k, km, GATE == RHYTHMIC)
                    for sec in tl.static_range(NSEC):
                        if CELL == GRU:
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
            if CELL == LIF:
                tl.store(ch_ptr + b * H + j, dh, mask=jm)
                tl.store(cs_ptr + b * H + j, acc, mask=jm)
            else:
                tl.store(ch_ptr + b * H + j, dh + acc, mask=jm)
        tl.debug_barrier()


def tiles(hidden: int) -> tuple[int, int]:
    """(BI, BJ): rows per tile of the recurrent matrix and columns per streamed vector tile.

    A BI x BJ fp32 tile is at most 4096 values (32 registers per thread at 4 warps).
    """
    hp = next_pow2(hidden)
    return max(2, min(32, hp)), max(2, min(128, hp))


# ------------------------------------------------------------------------- launchers
def launch_fwd(cfg: Config, x: Operands, seq: Sequences, lists: OpenLists | None, grec) -> None:
    """Fills ``seq.hs[:, 1:]`` (a LIF's ``seq.ss[:, 1:]`` too), ``seq.gh`` where given and the
    event gate's record ``grec`` (B, T, H) where given. ``lists``: a rhythmic gate's rows to
    compute (None: every row)."""
    B, T, G = x.xp.shape
    H = seq.hs.shape[2]
    d = dummy(x.xp.device)
    acc = torch.empty(B, G, device=x.xp.device, dtype=torch.float32) if cfg.gate == "event" else d
    has_w, save_gh, record = x.w_hh is not None, seq.gh is not None, grec is not None
    flags = dict(HAS_W=has_w, HAS_B=has_w and x.b_hh is not None, SAVE_GH=save_gh, RECORD=record)
    x, seq, lists = filled(x, d), filled(seq, d), lists if lists is not None else OpenLists(d, d)
    BI, BJ = tiles(H)
    _fwd_kernel[(B, 1)](
        xp_ptr=x.xp, w_ptr=x.w_hh, b_ptr=x.b_hh, gate_ptr=x.gvals, idx_ptr=lists.idx, off_ptr=lists.off,
        theta_ptr=x.theta, beta_ptr=x.beta, hs_ptr=seq.hs, ss_ptr=seq.ss, gh_ptr=seq.gh, acc_ptr=acc,
        grec_ptr=grec if record else d, T=T, H=H, threshold=cfg.threshold, g_scale=cfg.g_scale,
        s_scale=cfg.s_scale, CELL=cfg.cell_code, GATE=cfg.gate_code, ZERO_RESET=cfg.zero_reset,
        G_CODE=cfg.g_code, S_CODE=cfg.s_code, REFRESH=REFRESH, BI=BI, BJ=BJ, num_warps=4,
        **flags, **LAUNCH_OPTIONS,
    )


def launch_bwd(cfg: Config, x: Operands, seq: Sequences, dout, lists: OpenLists | None, dg_mask,
               grads: Grads, dgrec=None) -> None:
    """Writes ``grads`` (see :class:`Grads`) from the forward's ``seq`` and dL/d(out) ``dout``
    (B, T, H); ``lists``: the rows with g = 1 of a rhythmic gate; ``dg_mask`` (T, H) int8: where
    dL/dg is written (None: everywhere); ``dgrec`` (B, T, H) fp32: the event gate's incoming
    dL/dg through its record (None: no gradient there)."""
    B, T, _ = x.xp.shape
    H = seq.hs.shape[2]
    d = dummy(x.xp.device)
    split = SPLIT if x.w_hh is None else 0
    need_dg = grads.dg is not None
    flags = dict(HAS_W=x.w_hh is not None, NEED_DG=need_dg, DG_MASK=need_dg and dg_mask is not None,
                 DGREC=dgrec is not None)
    x, seq, g = filled(x, d), filled(seq, d), filled(grads, d)
    lists = lists if lists is not None else OpenLists(d, d)
    BI, BJ = tiles(H)
    _bwd_kernel[(B, triton.cdiv(H, split) if split else 1)](
        xp_ptr=x.xp, w_ptr=x.w_hh, gate_ptr=x.gvals, idx_ptr=lists.idx, off_ptr=lists.off, theta_ptr=x.theta,
        beta_ptr=x.beta, sup_ptr=dg_mask if dg_mask is not None else d, hs_ptr=seq.hs, ss_ptr=seq.ss,
        gh_ptr=seq.gh, dout_ptr=dout, dgrec_ptr=dgrec if dgrec is not None else d, ch_ptr=g.ch, cs_ptr=g.cs,
        dir_ptr=g.dirb, dxp_ptr=g.dxp, dgh_ptr=g.dgh,
        dg_ptr=g.dg, dth_ptr=g.dth, dbeta_ptr=g.dbeta, T=T, H=H, threshold=cfg.threshold,
        g_scale=cfg.g_scale, s_scale=cfg.s_scale, g_gain=cfg.g_gain, s_gain=cfg.s_gain, CELL=cfg.cell_code,
        GATE=cfg.gate_code, ZERO_RESET=cfg.zero_reset, G_CODE=cfg.g_code, S_CODE=cfg.s_code, SPLIT=split,
        BI=BI, BJ=BJ,
        num_warps=4, **flags, **LAUNCH_OPTIONS,
    )
