r"""Multi-program Triton recurrence for RNN / GRU with a dense or rhythmic gate.

The kernels of ``rows.py`` give a batch row one program: at B = 1 one SM does all
the work, and every batch row streams the whole recurrent matrix U on its own. Here a
step is shared by a grid of programs, ``grid = (NH, NB)``:

* program ``(p, q)`` owns the batch block ``q`` (``BB`` rows, ``BB >= 16``) and takes the
  chunks ``p, p + NH, p + 2 NH, ...`` of ``BH`` rows of the step's compacted open list
  (a rhythmic gate, batch uniform) or of all H rows (dense gate). A chunk's pre-activation
  is ``tl.dot(h_{t-1}[BB, BK], U[rows, BK]^T)`` over column tiles in fp32: the batch block
  shares each weight tile (TF32 tensor cores for fp16 / bf16 inputs, whose values TF32
  holds exactly, and for fp32 inputs where torch allows TF32 matmuls; exact fp32
  otherwise), and the programs of a step together load each open row of U once per batch
  block;
* the closed neurons keep their state: neuron slices ``p, p + NH, ...`` of ``BH`` are
  copied where the step's mask is 0, so every state entry is written by one program (in a
  split step, phase 1 copies every neuron of the slices and phase 2 overwrites the
  computed ones after the barrier);
* steps are ordered by a barrier among the ``NH`` programs of a batch block (one int32
  counter per block, release add / acquire poll at GPU scope, CTA barriers around them:
  what makes the other programs' stores visible). Loads of data written by other
  programs ask for ``.cg`` (L2) as well. A spin barrier needs every program resident at
  once: the launcher keeps ``NH * NB`` within the SM count and launches the grid as a
  cooperative one. CUDA checks such a grid against the device statically (at most the
  kernel's blocks per SM times the SMs) and refuses one that does not fit with an error;
  it guarantees that the programs of a grid that passes run together. There is no check
  at run time of how many SMs other work (MPS, another process) leaves free.

Split steps (``Tiles.split``, forward only): a step in two phases with a barrier between
them. Phase 1 cuts the step's (chunk, column tile) units into equal contiguous runs, one per
program, and writes each unit's partial products to a scratch buffer; in phase 2 each
chunk's owner sums its partials and finishes the chunk. A step then takes the time of an
equal share of the open rows' weights instead of one whole chunk per program.

Backward, per step t from T - 1 down: phase 1 (elementwise) forms dL/d(pre-activation) of
the program's neuron slices from the saved ``gh``; a barrier; phase 2 forms
``dL/dh_{t-1} = dir + U^T dgh`` for the same slices as columns, reducing over the rows
with g = 1 (compacted on g) by ``tl.dot(dgh[BB, BK rows], U[BK rows, BH])``. A slice's
incoming gradient is written and read by the same program, so a step needs one barrier.

Triton's interpreter runs the programs of a launch one after the other, so a barrier
would wait for ever: there (``SYNC`` off) the launchers start one launch per step, and
one per phase in backward. The arithmetic is the same code; the native test run on a GPU
is what checks the barrier.

The equations are ``kernels/reference.py``'s; ``rows.py`` has the layouts (gh, dxp, dgh,
the backward mask) that these kernels share with the per-row ones, and ``ops.py`` calls
:func:`launch_fwd` / :func:`launch_bwd` when :func:`eligible`. How a launch cuts the work
(tiles, grid shape, dot precision) is ``grid_tiles.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import choose, grid_tiles
from ._common import (
    DENSE,
    EVENT,
    GRU,
    LAUNCH_OPTIONS,
    RHYTHMIC,
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
)
from .rows import REFRESH

__all__ = ["ENABLED", "LAUNCHED", "eligible", "launch_bwd", "launch_fwd"]

# None: where measured faster than the per-row kernels (choose.MEASURED, GPU only); True /
# False: always / never (tests, benchmarks). Run natively on an H200 on 2026-12-04: the kernel
# tests passed and tools/bench_gpu.py timed them (docs/triton.md).
ENABLED: bool | None = None

# flags an event-gate program compacts per load (int8)
_BC = 1024

# the backward's PHASES: phase 1 or phase 2 alone (the interpreter's launches), or both with
# the barrier between them
PHASE_1 = tl.constexpr(1)
PHASE_2 = tl.constexpr(2)
BOTH_PHASES = tl.constexpr(3)


@triton.jit
def _grid_sync(sync_ptr, q, target, SYNC: tl.constexpr):
    # every program of batch block q has finished `target` phases
    if SYNC:
        tl.debug_barrier()
        tl.atomic_add(sync_ptr + q, 1, sem="release", scope="gpu")
        cnt = tl.atomic_add(sync_ptr + q, 0, sem="acquire", scope="gpu")
        while cnt < target:
            cnt = tl.atomic_add(sync_ptr + q, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()


@triton.jit
def _mac(acc, a, w, FMA: tl.constexpr, PREC: tl.constexpr):
    # acc[BB, BH] += a[BB, BK] @ w[BH, BK]^T
    if FMA:
        acc += tl.sum(a[:, None, :] * w[None, :, :], axis=2)
    else:
        acc = tl.dot(a, tl.trans(w), acc, input_precision=PREC)
    return acc


@triton.jit
def _mac_t(acc, v, w, FMA: tl.constexpr, PREC: tl.constexpr):
    # acc[BB, BH] += v[BB, BK] @ w[BK, BH]
    if FMA:
        acc += tl.sum(v[:, :, None] * w[None, :, :], axis=1)
    else:
        acc = tl.dot(v, w, acc, input_precision=PREC)
    return acc


@triton.jit
def _mac_tn(acc, v, h, FMA: tl.constexpr, PREC: tl.constexpr):
    # acc[BK, BH] += v[BB, BK]^T @ h[BB, BH]
    if FMA:
        acc += tl.sum(v[:, :, None] * h[:, None, :], axis=0)
    else:
        acc = tl.dot(tl.trans(v), h, acc, input_precision=PREC)
    return acc


@triton.jit
def _tile_mac(a0, a1, a2, hs_ptr, w_ptr, prev, bm, rows, km, k0, H,
              CELL: tl.constexpr, FMA: tl.constexpr, PREC: tl.constexpr, BK: tl.constexpr):
    # a chunk's sections a0..a2 [BB, BH] += h_{t-1}[:, k0:k0+BK] @ U[sec, rows, k0:k0+BK]^T
    # (the state at offsets prev of hs; a1, a2 untouched for an RNN)
    kk = k0 + tl.arange(0, BK)
    kkm = kk < H
    hk = tl.load(hs_ptr + prev[:, None] + kk[None, :], mask=bm[:, None] & kkm[None, :],
                 other=0.0, cache_modifier=".cg").to(tl.float32)
    wm = km[:, None] & kkm[None, :]
    wo = rows[:, None] * H + kk[None, :]
    w0 = tl.load(w_ptr + wo, mask=wm, other=0.0).to(tl.float32)
    a0 = _mac(a0, hk, w0, FMA, PREC)
    if CELL == GRU:
        w1 = tl.load(w_ptr + H * H + wo, mask=wm, other=0.0).to(tl.float32)
        w2 = tl.load(w_ptr + 2 * H * H + wo, mask=wm, other=0.0).to(tl.float32)
        a1 = _mac(a1, hk, w1, FMA, PREC)
        a2 = _mac(a2, hk, w2, FMA, PREC)
    return a0, a1, a2


@triton.jit
def _program(B, H, NSEC: tl.constexpr, BB: tl.constexpr):
    # program (p, q) of nh per batch block; G = NSEC * H, the width of a pre-activation row;
    # the rows of batch block q (int64: offsets) and their mask
    p = tl.program_id(0)
    q = tl.program_id(1)
    nh = tl.num_programs(0)
    G = NSEC * H
    bb = (q * BB + tl.arange(0, BB)).to(tl.int64)
    return p, q, nh, G, bb, bb < B


@triton.jit
def _chunk_rows(idx_ptr, c0, end, BH: tl.constexpr, LISTED: tl.constexpr):
    # the rows of the chunk at positions c0 .. c0 + BH of the step's range (end: its end):
    # taken from the list idx where LISTED, else the positions themselves
    k = c0 + tl.arange(0, BH)
    km = k < end
    return _step_rows(idx_ptr, k, km, LISTED).to(tl.int64), km


@triton.jit
def _compact(ev_ptr, lst_ptr, H, BC: tl.constexpr):
    # the neurons j < H whose flag ev[j] (int8, written by the programs that own them before
    # the last barrier) is set, in increasing order, to lst[0 .. n); returns n. The list is
    # the program's own: a CTA barrier orders its stores before the loads that read it
    n = tl.full([], 0, tl.int32)
    for j0 in range(0, H, BC):
        j = j0 + tl.arange(0, BC)
        on = (tl.load(ev_ptr + j, mask=j < H, other=0, cache_modifier=".cg") != 0).to(tl.int32)
        tl.store(lst_ptr + n + tl.cumsum(on, 0) - 1, j, mask=on != 0)
        n += tl.sum(on, 0)
    tl.debug_barrier()
    return n


@triton.jit
def _flag(ev_ptr, j, jm, changed):
    # ev[j] = 1 where any row of the batch block has `changed` ([BB, BH] bool) in column j
    tl.store(ev_ptr + j, tl.max(changed.to(tl.int8), axis=0), mask=jm)


@triton.jit
def _first_rows(idx_ptr, start, end, p, nh, nk, SPLIT: tl.constexpr, LISTED: tl.constexpr, BH: tl.constexpr):
    # the rows of program p's first unit's chunk (SPLIT: the run of units p n / nh ..) or of
    # its first whole chunk, in the step range [start, end)
    if SPLIT:
        c = (p * (tl.cdiv(end - start, BH).to(tl.int64) * nk) // nh) // nk
    else:
        c = p
    return _chunk_rows(idx_ptr, start + c * BH, end, BH, LISTED)


@triton.jit
def _sections(ptr, o, m, H, CELL: tl.constexpr):
    # the sections (r, z, n for a GRU) of a G-wide row at offsets o, in fp32 (p1, p2 = p0
    # for an RNN)
    p0 = tl.load(ptr + o, mask=m, other=0.0).to(tl.float32)
    p1 = p0
    p2 = p0
    if CELL == GRU:
        p1 = tl.load(ptr + o + H, mask=m, other=0.0).to(tl.float32)
        p2 = tl.load(ptr + o + 2 * H, mask=m, other=0.0).to(tl.float32)
    return p0, p1, p2


@triton.jit
def _store_sections(ptr, o, a0, a1, a2, m, H, CELL: tl.constexpr):
    # stores the sections of a G-wide row at offsets o (a1, a2 only for a GRU): _sections' inverse
    tl.store(ptr + o, a0, mask=m)
    if CELL == GRU:
        tl.store(ptr + o + H, a1, mask=m)
        tl.store(ptr + o + 2 * H, a2, mask=m)


@triton.jit
def _cell(p0, p1, p2, a0, a1, a2, hp, CELL: tl.constexpr):
    # the candidate from the input projection's sections p0..p2 and U h + b's a0..a2 (p1,
    # p2, a1, a2 unused for an RNN): (r, z, n, f), where r, z, n are f for an RNN
    if CELL == GRU:
        r, z, n, f = gru_candidate(p0, p1, p2, a0, a1, a2, hp)
    else:
        f = _tanh(p0 + a0)
        r = f
        z = f
        n = f
    return r, z, n, f


@triton.jit
def _fwd_acc(rows, km, H, b_ptr, CELL: tl.constexpr, HAS_B: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr):
    # a chunk's accumulators a0..a2 [BB, BH] for U h + b, holding the bias
    a0 = tl.zeros([BB, BH], tl.float32)
    a1 = a0
    a2 = a0
    if HAS_B:
        b0, b1, b2 = _sections(b_ptr, rows, km, H, CELL)
        a0 += b0[None, :]
        a1 += b1[None, :]
        a2 += b2[None, :]
    return a0, a1, a2


@triton.jit
def _fwd_inputs(rows, km, bm, prev, xrow, trow, H, xp_ptr, gate_ptr, hs_ptr,
                CELL: tl.constexpr, GATE: tl.constexpr):
    # what a chunk's epilogue needs besides U h + b (none of it depends on the reduction):
    # h_{t-1}, the input projection's sections and the gate's row (h_{t-1} where there is none)
    om = bm[:, None] & km[None, :]
    hp = tl.load(hs_ptr + prev[:, None] + rows[None, :], mask=om, other=0.0, cache_modifier=".cg").to(tl.float32)
    p0, p1, p2 = _sections(xp_ptr, xrow[:, None] + rows[None, :], om, H, CELL)
    g = hp
    if GATE == RHYTHMIC:
        g = tl.load(gate_ptr + trow + rows, mask=km, other=0.0).to(tl.float32)[None, :]
    return hp, p0, p1, p2, g


@triton.jit
def _fwd_finish(a0, a1, a2, hp, p0, p1, p2, g, rows, km, bm, prev, xrow, H, hs_ptr, gh_ptr,
                CELL: tl.constexpr, GATE: tl.constexpr, SAVE_GH: tl.constexpr):
    # a chunk's epilogue: candidate, gated state written to row t+1, gh saved; a0..a2
    # [BB, BH]: the sections' U h_{t-1} + b of the chunk's rows; hp, p0..p2, g as
    # _fwd_inputs loaded them
    om = bm[:, None] & km[None, :]
    ho = prev[:, None] + rows[None, :]
    _r, _z, _n, f = _cell(p0, p1, p2, a0, a1, a2, hp, CELL)
    if GATE == RHYTHMIC:
        # a closed row is computed only for dL/dg (f - h): it keeps its state
        hn = tl.where(g != 0, hp + g * (f - hp), hp)
    else:
        hn = f
    tl.store(hs_ptr + ho + H, hn, mask=om)
    if SAVE_GH:
        _store_sections(gh_ptr, xrow[:, None] + rows[None, :], a0, a1, a2, om, H, CELL)


@triton.jit
def _partial_sums(a0, a1, a2, part_ptr, rows, km, bb, bm, nk, B, G, H,
                  CELL: tl.constexpr, PK: tl.constexpr):
    # a split step's chunk: a0..a2 += its NK column tiles' partial products from part,
    # PK tiles per load, all in flight at once, summed over the tile axis (a fixed order:
    # the same bits every run)
    for i0 in range(0, nk, PK):
        ii = i0 + tl.arange(0, PK)
        pm = (ii < nk)[:, None, None] & (bm[:, None] & km[None, :])[None, :, :]
        pi = (ii.to(tl.int64) * B)[:, None, None] * G + (bb[:, None] * G + rows[None, :])[None, :, :]
        a0 += tl.sum(tl.load(part_ptr + pi, mask=pm, other=0.0, cache_modifier=".cg"), axis=0)
        if CELL == GRU:
            a1 += tl.sum(tl.load(part_ptr + pi + H, mask=pm, other=0.0, cache_modifier=".cg"), axis=0)
            a2 += tl.sum(tl.load(part_ptr + pi + 2 * H, mask=pm, other=0.0, cache_modifier=".cg"), axis=0)
    return a0, a1, a2


@triton.jit
def _fwd_grid_kernel(
    xp_ptr, w_ptr, b_ptr, gate_ptr, mask_ptr, idx_ptr, off_ptr, hs_ptr, gh_ptr, part_ptr, sync_ptr,
    t0, t1, B, T, H,
    CELL: tl.constexpr, GATE: tl.constexpr, HAS_B: tl.constexpr, SAVE_GH: tl.constexpr,
    SPLIT: tl.constexpr, PHASES: tl.constexpr, SYNC: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr, PK: tl.constexpr,
):
    # FMA: products as [BB, BH, BK] broadcasts summed over K on the FMA units (any BB, BH),
    # else tl.dot (BB, BH >= 16) at precision PREC.
    # xp (B, T, G); hs (B, T+1, H), row 0 = h0; gh (B, T, G) fp32; mask (T, H) int8: rows
    # whose candidate is computed (idx / off: its compacted lists); sync (NB,) int32 zeros.
    # SPLIT: a step in two phases with a barrier between them. Phase 1 cuts the step's
    # units (chunk, column tile) into NH contiguous, equal runs, one per program, and writes
    # each unit's partial products to part (NK, B, G) fp32 (NK = cdiv(H, BK)); phase 2 sums
    # the NK partials of a chunk, PK tiles per load, and finishes it. Phase 1 also copies every
    # neuron of the program's slices, without the mask (unused then): phase 2 overwrites the
    # computed ones after the barrier. PHASES as in the backward (the interpreter's per-phase
    # launches); without SPLIT always BOTH_PHASES.
    NSEC: tl.constexpr = 3 if CELL == GRU else 1
    NSYNC: tl.constexpr = 2 if SPLIT else 1
    LISTED: tl.constexpr = GATE == RHYTHMIC
    p, q, nh, G, bb, bm = _program(B, H, NSEC, BB)
    nk = tl.cdiv(H, BK)
    # a step's range and the rows of the program's first unit (split) or chunk: loaded
    # before the barrier that ends the previous step (nothing a step writes changes them),
    # so that they arrive while the program waits
    start, end = _step_range(off_ptr, t0, H, GATE)
    rows, km = _first_rows(idx_ptr, start, end, p, nh, nk, SPLIT, LISTED, BH)
    for t in range(t0, t1):
        prev = (bb * (T + 1) + t) * H
        new = prev + H
        xrow = (bb * T + t) * G
        trow = tl.cast(t, tl.int64) * H  # row t of the (T, H) gate and mask
        if PHASES != PHASE_2:
            if GATE == RHYTHMIC:  # closed neurons keep their state
                for j0 in range(p * BH, H, nh * BH):
                    j = j0 + tl.arange(0, BH)
                    jm = j < H
                    if SPLIT:  # every neuron: phase 2 overwrites the computed ones after the barrier
                        cm = bm[:, None] & jm[None, :]
                    else:  # the mask's closed neurons (a chunk's owner writes the others)
                        keep = tl.load(mask_ptr + trow + j, mask=jm, other=1) == 0
                        cm = bm[:, None] & (jm & keep)[None, :]
                    v = tl.load(hs_ptr + prev[:, None] + j[None, :], mask=cm, cache_modifier=".cg")
                    tl.store(hs_ptr + new[:, None] + j[None, :], v, mask=cm)
            if SPLIT:  # this program's run of units: partial products to part
                n = tl.cdiv(end - start, BH).to(tl.int64) * nk
                for u in range(p * n // nh, (p + 1) * n // nh):
                    c = u // nk
                    i = u - c * nk
                    # the next unit's rows, while this one's loads are in flight
                    n_rows, n_m = _chunk_rows(idx_ptr, start + (u + 1) // nk * BH, end, BH, LISTED)
                    z = tl.zeros([BB, BH], tl.float32)
                    a0, a1, a2 = _tile_mac(z, z, z, hs_ptr, w_ptr, prev, bm, rows, km, i * BK, H,
                                           CELL, FMA, PREC, BK)
                    po = (i * B + bb)[:, None] * G + rows[None, :]
                    pm = bm[:, None] & km[None, :]
                    _store_sections(part_ptr, po, a0, a1, a2, pm, H, CELL)
                    rows, km = n_rows, n_m
            else:  # whole chunks, round robin; the epilogue's inputs loaded before the reduction
                for c0 in range(start + p * BH, end, nh * BH):
                    n_rows, n_m = _chunk_rows(idx_ptr, c0 + nh * BH, end, BH, LISTED)
                    a0, a1, a2 = _fwd_acc(rows, km, H, b_ptr, CELL, HAS_B, BB, BH)
                    hp, p0, p1, p2, g = _fwd_inputs(rows, km, bm, prev, xrow, trow, H, xp_ptr, gate_ptr, hs_ptr,
                                                    CELL, GATE)
                    for k0 in range(0, H, BK):
                        a0, a1, a2 = _tile_mac(a0, a1, a2, hs_ptr, w_ptr, prev, bm, rows, km, k0, H,
                                               CELL, FMA, PREC, BK)
                    _fwd_finish(a0, a1, a2, hp, p0, p1, p2, g, rows, km, bm, prev, xrow, H, hs_ptr, gh_ptr,
                                CELL, GATE, SAVE_GH)
                    rows, km = n_rows, n_m
        if SPLIT:
            if PHASES != PHASE_1:
                # phase 2's first chunk (if the program has one): its rows, loaded before the
                # barrier (nothing in phase 1 changes them) so that they arrive while it
                # waits. Holding its other inputs across the barrier as well spilled the
                # 3xTF32 and TF32 kernels (sm_90, Triton 3.6)
                c_rows, c_m = _chunk_rows(idx_ptr, start + p * BH, end, BH, LISTED)
            if PHASES == BOTH_PHASES:
                _grid_sync(sync_ptr, q, ((t - t0) * NSYNC + 1) * nh, SYNC)
            if PHASES != PHASE_1:  # the chunks, round robin: their partials summed
                for c0 in range(start + p * BH, end, nh * BH):
                    # the next chunk's rows, while this one's loads are in flight
                    n_rows, n_m = _chunk_rows(idx_ptr, c0 + nh * BH, end, BH, LISTED)
                    a0, a1, a2 = _fwd_acc(c_rows, c_m, H, b_ptr, CELL, HAS_B, BB, BH)
                    a0, a1, a2 = _partial_sums(a0, a1, a2, part_ptr, c_rows, c_m, bb, bm, nk, B, G, H, CELL, PK)
                    hp, p0, p1, p2, g = _fwd_inputs(c_rows, c_m, bm, prev, xrow, trow, H, xp_ptr, gate_ptr, hs_ptr,
                                                    CELL, GATE)
                    _fwd_finish(a0, a1, a2, hp, p0, p1, p2, g, c_rows, c_m, bm, prev, xrow, H, hs_ptr, gh_ptr,
                                CELL, GATE, SAVE_GH)
                    c_rows, c_m = n_rows, n_m
        if GATE == RHYTHMIC:  # the next step's range and first rows (above)
            start, end = _step_range(off_ptr, tl.minimum(t + 1, T - 1), H, GATE)
        rows, km = _first_rows(idx_ptr, start, end, p, nh, nk, SPLIT, LISTED, BH)
        _grid_sync(sync_ptr, q, (t - t0 + 1) * NSYNC * nh, SYNC)


@triton.jit
def _fwd_event_grid_kernel(
    xp_ptr, wt_ptr, b_ptr, theta_ptr, hs_ptr, gh_ptr, acc_ptr, ev_ptr, lst_ptr, grec_ptr, work_ptr, sync_ptr,
    t0, t1, B, T, H,
    CELL: tl.constexpr, HAS_B: tl.constexpr, SAVE_GH: tl.constexpr, RECORD: tl.constexpr, REFRESH: tl.constexpr,
    PHASES: tl.constexpr, SYNC: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr,
):
    # The event gate (RNN / GRU): every neuron's candidate is computed at every step (its
    # gate depends on it), and U h_{t-1} is carried in acc (B, G) fp32 and updated by
    # U (h_{t-1} - h_{t-2}) over the neurons that changed at step t-1 in any row of the batch
    # block (exactly U h_{t-1} over every column each REFRESH steps, as the per-row kernel).
    # Program (p, q) owns the neuron chunks p, p + NH, ... of BH neurons (their rows of every
    # section, so also their part of acc) of batch block q. After a step's barrier each
    # program compacts the flags ev (2, NB, H) int8 (by step parity; written by the neurons'
    # owners) into its own list lst (NB, NH, H) int32, and reduces over those columns:
    # tl.dot(dh[BB, BK cols], U^T[BK cols, BH rows]) from wt = U^T (H, G), whose gathered
    # columns are rows there. grec (B, T, H): the gate's record (RECORD); work (T, NB) int32:
    # the columns reduced per step and block. PHASES: always BOTH_PHASES (a step is one phase).
    NSEC: tl.constexpr = 3 if CELL == GRU else 1
    p, q, nh, G, bb, bm = _program(B, H, NSEC, BB)
    nb = tl.num_programs(1)
    own = lst_ptr + (q * nh + p).to(tl.int64) * H
    for t in range(t0, t1):
        prev = (bb * (T + 1) + t) * H
        xrow = (bb * T + t) * G
        delta = (t % REFRESH) != 0  # else a refresh: acc = U h_{t-1} over every column
        if delta:
            n = _compact(ev_ptr + (((t - 1) % 2) * nb + q).to(tl.int64) * H, own, H, BC)
        else:
            n = H
        for c0 in range(p * BH, H, nh * BH):
            j = c0 + tl.arange(0, BH)
            jm = j < H
            om = bm[:, None] & jm[None, :]
            ao = (bb * G)[:, None] + j[None, :]
            a0, a1, a2 = _sections(acc_ptr, ao, om & delta, H, CELL)
            for k0 in range(0, n, BK):
                k = k0 + tl.arange(0, BK)
                km = k < n
                cols = tl.where(delta, tl.load(own + k, mask=km & delta, other=0), k).to(tl.int64)
                vm = bm[:, None] & km[None, :]
                vo = prev[:, None] + cols[None, :]
                v = tl.load(hs_ptr + vo, mask=vm, other=0.0, cache_modifier=".cg").to(tl.float32)
                v -= tl.load(hs_ptr + vo - H, mask=vm & delta, other=0.0, cache_modifier=".cg").to(tl.float32)
                wo = cols[:, None] * G + j[None, :]
                wm = km[:, None] & jm[None, :]
                a0 = _mac_t(a0, v, tl.load(wt_ptr + wo, mask=wm, other=0.0).to(tl.float32), FMA, PREC)
                if CELL == GRU:
                    a1 = _mac_t(a1, v, tl.load(wt_ptr + wo + H, mask=wm, other=0.0).to(tl.float32), FMA, PREC)
                    a2 = _mac_t(a2, v, tl.load(wt_ptr + wo + 2 * H, mask=wm, other=0.0).to(tl.float32), FMA, PREC)
            _store_sections(acc_ptr, ao, a0, a1, a2, om, H, CELL)
            if HAS_B:
                b0, b1, b2 = _sections(b_ptr, j, jm, H, CELL)
                a0 += b0[None, :]
                a1 += b1[None, :]
                a2 += b2[None, :]
            ho = prev[:, None] + j[None, :]
            hp = tl.load(hs_ptr + ho, mask=om, other=0.0, cache_modifier=".cg").to(tl.float32)
            p0, p1, p2 = _sections(xp_ptr, xrow[:, None] + j[None, :], om, H, CELL)
            _r, _z, _n, f = _cell(p0, p1, p2, a0, a1, a2, hp, CELL)
            theta = tl.load(theta_ptr + j, mask=jm, other=0.0).to(tl.float32)[None, :]
            d = f - hp
            g = event_gate(d, theta)
            hn = hp + g * d
            tl.store(hs_ptr + ho + H, hn, mask=om)
            # the neurons whose state changed (NaN included): the next step's columns
            _flag(ev_ptr + ((t % 2) * nb + q).to(tl.int64) * H, j, jm, om & (hn != hp))
            if SAVE_GH:
                _store_sections(gh_ptr, xrow[:, None] + j[None, :], a0, a1, a2, om, H, CELL)
            if RECORD:
                tl.store(grec_ptr + ((bb * T + t) * H)[:, None] + j[None, :], g, mask=om)
        if p == 0:
            tl.store(work_ptr + t * nb + q, n)
        _grid_sync(sync_ptr, q, (t - t0 + 1) * nh, SYNC)


@triton.jit
def _bwd_grid_kernel(
    xp_ptr, w_ptr, gate_ptr, sup_ptr, idx_ptr, off_ptr, theta_ptr, hs_ptr, gh_ptr, dout_ptr, dgrec_ptr,
    ch_ptr, dir_ptr, dxp_ptr, dgh_ptr, dg_ptr, dth_ptr, du_ptr, ev_ptr, lst_ptr, work_ptr, sync_ptr,
    t0, t1, B, T, H, g_scale, g_gain,
    CELL: tl.constexpr, GATE: tl.constexpr, NEED_DG: tl.constexpr, DG_MASK: tl.constexpr, DW: tl.constexpr,
    DGREC: tl.constexpr,
    G_CODE: tl.constexpr, PHASES: tl.constexpr, SYNC: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr,
):
    # Steps t = T-1-tt for tt in [t0, t1). PHASES: BOTH_PHASES (with SYNC, a barrier
    # between them), PHASE_1 or PHASE_2 one of them (the interpreter's per-phase launches).
    # ch (B, H) fp32 in: dL/dh_T, out: dL/dh0; dir (B, H) fp32 scratch; dxp, dgh (B, T, G)
    # fp32 (dgh written only for the GRU n section); dg (B, T, H); sup (T, H) int8 (DG_MASK);
    # idx / off: rows with g != 0 per step. DW: du (NB, G, H) fp32 zeros in, out: batch block
    # q's dL/dU = sum over its rows and the steps of dgh_t^T h_{t-1}, accumulated in phase 2
    # over the rows with g != 0 only (each (row, column) of a block is the one program's that
    # owns the column slice: no atomics, a fixed order).
    # Event gate: theta (H,) its thresholds, dth (B, H) fp32 dL/dtheta per batch row (summed
    # into); phase 1 flags in ev (2, NB, H) int8 (by step parity) the neurons whose
    # pre-activations got a gradient in any row of the block, and after the barrier each
    # program compacts them into its own list lst (NB, NH, H) int32: phase 2's rows. work
    # (T, NB) int32: the rows phase 2 reduced over per step and block (event gate). DGREC:
    # dgrec (B, T, H) fp32, the incoming dL/dg of the event gate's recorded values.
    NSEC: tl.constexpr = 3 if CELL == GRU else 1
    LISTED: tl.constexpr = GATE != DENSE
    p, q, nh, G, bb, bm = _program(B, H, NSEC, BB)
    nb = tl.num_programs(1)
    own = lst_ptr + (q * nh + p).to(tl.int64) * H  # the program's list (event gate)
    for tt in range(t0, t1):
        t = T - 1 - tt
        prev = (bb * (T + 1) + t) * H
        xrow = (bb * T + t) * G
        orow = (bb * T + t) * H
        trow = tl.cast(t, tl.int64) * H
        if PHASES != PHASE_2:  # ---- phase 1, elementwise over the program's neuron slices
            for j0 in range(p * BH, H, nh * BH):
                j = j0 + tl.arange(0, BH)
                jm = j < H
                m = bm[:, None] & jm[None, :]
                so = (bb * H)[:, None] + j[None, :]
                ho = prev[:, None] + j[None, :]
                xo = xrow[:, None] + j[None, :]
                hp = tl.load(hs_ptr + ho, mask=m, other=0.0).to(tl.float32)
                a = tl.load(ch_ptr + so, mask=m, other=0.0)
                a += tl.load(dout_ptr + orow[:, None] + j[None, :], mask=m, other=0.0).to(tl.float32)
                gh0, gh1, gh2 = _sections(gh_ptr, xo, m, H, CELL)
                p0, p1, p2 = _sections(xp_ptr, xo, m, H, CELL)
                r, z, n, f = _cell(p0, p1, p2, gh0, gh1, gh2, hp, CELL)
                if GATE == RHYTHMIC:
                    g = tl.load(gate_ptr + trow + j, mask=jm, other=0.0).to(tl.float32)[None, :]
                    df = tl.where(g != 0, g * a, 0.0)
                    dh = (1.0 - g) * a
                    if NEED_DG:
                        dgt = a * (f - hp)  # dL/dg through h_t = h + g (f - h)
                        if DG_MASK:
                            sup = tl.load(sup_ptr + trow + j, mask=jm, other=0)[None, :]
                            dgt = tl.where(sup != 0, dgt, 0.0)
                        tl.store(dg_ptr + orow[:, None] + j[None, :], dgt, mask=m)
                elif GATE == EVENT:
                    theta = tl.load(theta_ptr + j, mask=jm, other=0.0).to(tl.float32)[None, :]
                    d = f - hp
                    g = event_gate(d, theta)
                    dgt = a * d  # dL/dg through h_t = h + g d
                    if DGREC:  # and through the record (a rate penalty on rec.gate)
                        dgt += tl.load(dgrec_ptr + orow[:, None] + j[None, :], mask=m, other=0.0)
                    df, dh, gs = event_grad(a, d, g, dgt, theta, G_CODE, g_scale, g_gain)
                    dth = tl.load(dth_ptr + so, mask=m, other=0.0)
                    tl.store(dth_ptr + so, dth - gs, mask=m)
                    # the neurons whose pre-activations get a gradient: phase 2's rows
                    _flag(ev_ptr + ((t % 2) * nb + q).to(tl.int64) * H, j, jm, m & (df != 0))
                else:
                    df = a
                    dh = tl.zeros([BB, BH], tl.float32)
                if CELL == GRU:
                    drp, dzp, dnp, dhz = gru_candidate_grad(df, r, z, n, gh2, hp)
                    dh += dhz
                    _store_sections(dxp_ptr, xo, drp, dzp, dnp, m, H, CELL)
                    tl.store(dgh_ptr + xo + 2 * H, dnp * r, mask=m)
                else:
                    tl.store(dxp_ptr + xo, df * (1.0 - f * f), mask=m)
                tl.store(dir_ptr + so, dh, mask=m)
        if PHASES != PHASE_1:
            # phase 2's step range, loaded before the barrier (a read-only list) so that it
            # arrives while the program waits
            start, end = _step_range(off_ptr, t, H, GATE)
        if PHASES == BOTH_PHASES:
            _grid_sync(sync_ptr, q, (tt - t0 + 1) * nh, SYNC)
        if PHASES != PHASE_1:  # ---- phase 2, dL/dh_{t-1} = dir + U^T dgh over the open rows
            rows_ptr = idx_ptr
            if GATE == EVENT:  # the rows flagged in phase 1, compacted by this program
                end = _compact(ev_ptr + ((t % 2) * nb + q).to(tl.int64) * H, own, H, BC)
                rows_ptr = own
                if p == 0:
                    tl.store(work_ptr + t * nb + q, end)
            for j0 in range(p * BH, H, nh * BH):
                j = j0 + tl.arange(0, BH)
                jm = j < H
                so = (bb * H)[:, None] + j[None, :]
                m = bm[:, None] & jm[None, :]
                dirv = tl.load(dir_ptr + so, mask=m, other=0.0)  # phase 1's, this program's own
                acc = tl.zeros([BB, BH], tl.float32)
                if DW:  # h_{t-1} of the slice: dU's right factor
                    hj = tl.load(hs_ptr + prev[:, None] + j[None, :], mask=m, other=0.0).to(tl.float32)
                for c0 in range(start, end, BK):
                    rows, km = _chunk_rows(rows_ptr, c0, end, BK, LISTED)
                    vm = bm[:, None] & km[None, :]
                    wm = km[:, None] & jm[None, :]
                    for sec in tl.static_range(NSEC):
                        if CELL == GRU and sec == 2:
                            src = dgh_ptr
                        else:
                            src = dxp_ptr
                        v = tl.load(src + xrow[:, None] + (sec * H + rows)[None, :], mask=vm,
                                    other=0.0, cache_modifier=".cg")
                        w = tl.load(w_ptr + (sec * H + rows)[:, None] * H + j[None, :], mask=wm,
                                    other=0.0)
                        acc = _mac_t(acc, v, w.to(tl.float32), FMA, PREC)
                        if DW:  # dU[q, sec rows, slice] += dgh_t[:, rows]^T h_{t-1}[:, slice]
                            do = (q.to(tl.int64) * G + sec * H + rows)[:, None] * H + j[None, :]
                            du = tl.load(du_ptr + do, mask=wm, other=0.0)
                            tl.store(du_ptr + do, _mac_tn(du, v, hj, FMA, PREC), mask=wm)
                tl.store(ch_ptr + so, dirv + acc, mask=m)
        if PHASES == BOTH_PHASES:
            # phase 1 of the next step reads the slices' ch in another thread layout
            tl.debug_barrier()


# ------------------------------------------------------------------------- launchers
def eligible(cell: str, gate: str, w_hh, B: int, device, rate: float = 1.0, training: bool = False) -> bool:
    """Whether the multi-program kernels run this call: RNN / GRU, dense, rhythmic or event
    gate, fp32 / fp16 / bf16, on a GPU every program resident at once, and ``ENABLED``: True
    always, False never, None (the default) where ``choose.MEASURED`` timed them faster than
    the per-row kernels for this batch, width, update rate and mode (GPU only; the
    interpreter runs the per-row kernels unless told). The event gate's kernels have not
    been timed on a GPU: only ``ENABLED = True`` runs them."""
    if ENABLED is False or cell not in ("rnn", "gru") or gate not in ("dense", "rhythmic", "event"):
        return False
    if gate == "event" and ENABLED is None:
        return False
    if w_hh is None or w_hh.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    sms = grid_tiles.sm_count(device)
    if sms is not None:
        # shape keeps NH * NB within what the SMs hold (NH = 0 where even one program per
        # batch block does not fit)
        if grid_tiles.shape(B, w_hh.shape[1], device)[1] < 1:
            return False
    if ENABLED is None:
        return sms is not None and choose.fastest(B, w_hh.shape[1], rate, training, ("rows", "grid")) == "grid"
    return True


#: the last native launch of each kernel: programs and the compiler's resource figures
#: (registers, spills, shared memory), printed by tools/bench_triton.py for tuning
LAUNCHED: dict[str, dict] = {}


def _note(name: str, kernel, nh: int, nb: int) -> None:
    meta = getattr(kernel, "metadata", None)
    LAUNCHED[name] = {
        "programs": f"{nh}x{nb}",
        "regs": getattr(kernel, "n_regs", None),
        "spills": getattr(kernel, "n_spills", None),
        "shared": getattr(meta, "shared", None),
        "warps": getattr(meta, "num_warps", None),
    }


#: arrivals an int32 barrier counter holds; past it a barrier's target wraps negative and
#: the barrier stops waiting (T of about 8 million steps at 132 programs with split steps)
COUNTER_LIMIT = 2**31


def _counters(nb: int, device) -> torch.Tensor:
    # one barrier counter per batch block, counting arrivals (programs x steps / phases)
    return torch.zeros(nb, dtype=torch.int32, device=device)


def _native(device) -> bool:
    """One launch with the barrier on (a GPU); else one launch per step (the interpreter)."""
    return device.type == "cuda"


def _setup(cfg: Config, xp, hs, operands):
    """What both launchers need: the tiles, the grid (NH, NB), a placeholder tensor and the
    arguments they share (sizes, zeroed barrier counters, compile-time switches).
    ``operands``: the dtype of the dot operands' values (the input's forward; the fp32
    gradients backward)."""
    B, T, _ = xp.shape
    H = hs.shape[2]
    prec = grid_tiles.dot_precision(operands)
    t = grid_tiles.tiles(B, H, xp.device, prec)
    _, nh, nb = grid_tiles.shape(B, H, xp.device, prec)
    if nh < 1 or nb < 1:  # Triton skips an empty grid: hs would stay unwritten
        raise RuntimeError(f"grid kernels: an empty grid ({nh} x {nb} programs) for B={B}, H={H}")
    if 2 * T * nh >= COUNTER_LIMIT:  # arrivals at a barrier counter: two barriers a step at most
        raise ValueError(f"a sequence of {T} steps overflows the grid kernels' barrier counters at {nh} programs a "
                         "step; run it in chunks, carrying the state, or set su_neuro.kernels.triton.grid.ENABLED "
                         "= False")
    shared = dict(sync_ptr=_counters(nb, xp.device), B=B, T=T, H=H, CELL=cfg.cell_code, GATE=cfg.gate_code,
                  BB=t.bb, BH=t.bh, BK=t.bk, FMA=t.fma, PREC=prec, num_warps=t.warps, num_stages=t.stages,
                  **LAUNCH_OPTIONS)
    return t, (nh, nb), dummy(xp.device), shared


def _launch(kernel, name: str, grid, T: int, device, two_phases: bool, args: dict) -> None:
    """All T steps in one cooperative launch with the barrier on (a GPU), else one launch
    per step, and per phase where a step has two (the interpreter runs programs one after
    another, so it cannot wait at a barrier)."""
    if _native(device):
        k = kernel[grid](t0=0, t1=T, PHASES=BOTH_PHASES.value, SYNC=True, launch_cooperative_grid=True, **args)
        _note(name, k, *grid)
    else:
        for t in range(T):
            for phase in ((PHASE_1, PHASE_2) if two_phases else (BOTH_PHASES,)):
                kernel[grid](t0=t, t1=t + 1, PHASES=phase.value, SYNC=False, **args)


#: the event gate's kernels on the FMA units reduce over at most this many gathered rows at
#: once where the tiles have no ``bwd``: at 2048 (B = 1 from H = 2048) the GRU's forward and
#: backward spill 16 B at 255 registers (sm_90, Triton 3.6); at 1024, 178 and 179 without a spill
EVENT_FMA_BK = 1024


def _own_tiles(t, shared: dict, event: bool = False) -> None:
    """The tiles' ``bwd`` (slice width, row tile, warps), where set, for a kernel that reduces
    over gathered rows of U into column slices: the backward, and the event gate's forward
    (over gathered rows of U^T); else the forward's, the event gate's FMA row tile at most
    :data:`EVENT_FMA_BK`."""
    if t.bwd is not None:
        grid_tiles.check_bwd(t)
        shared.update(BH=t.bwd[0], BK=t.bwd[1], num_warps=t.bwd[2])
    elif event and t.fma:
        shared["BK"] = min(shared["BK"], EVENT_FMA_BK)


def _event_lists(T: int, H: int, grid, device):
    """The event gate's scratch: the flags (2, NB, H) int8 of one step per parity, each
    program's compacted list (NB, NH, H) int32, and the work record (T, NB) int32."""
    nh, nb = grid
    return (torch.zeros((2, nb, H), dtype=torch.int8, device=device),
            torch.empty((nb, nh, H), dtype=torch.int32, device=device),
            torch.zeros((T, nb), dtype=torch.int32, device=device))


#: the event gate's last launches: the columns (forward) / rows (backward) each step reduced
#: over, (T, NB) int32 per batch block, under "fwd" / "bwd" (tests, benchmarks)
WORK: dict[str, torch.Tensor] = {}


def launch_fwd(cfg: Config, x: Operands, seq: Sequences, mask, lists: OpenLists | None, grec=None) -> None:
    """Fills ``seq.hs[:, 1:]`` (and ``seq.gh`` where given); ``seq.hs[:, 0]`` holds h0. ``mask``
    (T, H): a rhythmic gate's rows to compute, ``lists`` the same compacted. Tiles with
    ``split`` cut each step into equal runs of (chunk, column tile) units; where their scratch
    would pass ``grid_tiles.SPLIT_MAX_BYTES`` the step runs as whole chunks instead. The event
    gate runs its own kernel (with the tiles' ``bwd`` where set) and writes its record to
    ``grec`` (B, T, H) where given."""
    if cfg.gate == "event":
        _launch_event_fwd(cfg, x, seq, grec)
        return
    t, grid, d, shared = _setup(cfg, x.xp, seq.hs, x.xp.dtype)
    B, T, G = x.xp.shape
    H = seq.hs.shape[2]
    split = t.split and grid_tiles.split_bytes(B, H, cfg.cell, t.bk) <= grid_tiles.SPLIT_MAX_BYTES
    part = torch.empty((triton.cdiv(H, t.bk), B, G), dtype=torch.float32, device=x.xp.device) if split else d
    m8 = (mask != 0).to(torch.int8).contiguous() if cfg.gate == "rhythmic" and not split else d
    pk = grid_tiles.partial_tiles(H, t.bk, shared["PREC"]) if split else 1
    flags = dict(HAS_B=x.b_hh is not None, SAVE_GH=seq.gh is not None, SPLIT=split, PK=pk)
    x, seq, lists = filled(x, d), filled(seq, d), lists if lists is not None else OpenLists(d, d)
    args = dict(xp_ptr=x.xp, w_ptr=x.w_hh, b_ptr=x.b_hh, gate_ptr=x.gvals, mask_ptr=m8, idx_ptr=lists.idx,
                off_ptr=lists.off, hs_ptr=seq.hs, gh_ptr=seq.gh, part_ptr=part, **flags, **shared)
    _launch(_fwd_grid_kernel, "fwd", grid, T, x.xp.device, split, args)


def _launch_event_fwd(cfg: Config, x: Operands, seq: Sequences, grec) -> None:
    # the dot's operand is h_{t-1} - h_{t-2} in fp32, which TF32 does not hold even where the
    # states are 16-bit (and the error would add up over the steps between refreshes): the
    # precision is fp32's (exact unless torch allows TF32 matmuls), as in the backward
    t, grid, d, shared = _setup(cfg, x.xp, seq.hs, torch.float32)
    _own_tiles(t, shared, event=True)
    del shared["GATE"]  # the kernel is the event gate's alone
    B, T, G = x.xp.shape
    H = seq.hs.shape[2]
    ev, lst, work = _event_lists(T, H, grid, x.xp.device)
    acc = torch.empty((B, G), dtype=torch.float32, device=x.xp.device)
    wt = x.w_hh.t().contiguous()  # U^T (H, G): a changed neuron's column of U is a row here
    flags = dict(HAS_B=x.b_hh is not None, SAVE_GH=seq.gh is not None, RECORD=grec is not None)
    x, seq = filled(x, d), filled(seq, d)
    args = dict(xp_ptr=x.xp, wt_ptr=wt, b_ptr=x.b_hh, theta_ptr=x.theta, hs_ptr=seq.hs, gh_ptr=seq.gh,
                acc_ptr=acc, ev_ptr=ev, lst_ptr=lst, grec_ptr=grec if grec is not None else d, work_ptr=work,
                REFRESH=REFRESH, BC=_BC, **flags, **shared)
    _launch(_fwd_event_grid_kernel, "fwd", grid, T, x.xp.device, False, args)
    WORK["fwd"] = work


def launch_bwd(cfg: Config, x: Operands, seq: Sequences, dout, lists: OpenLists | None, dg_mask,
               grads: Grads, need_dw: bool = False, dgrec=None) -> torch.Tensor | None:
    """Writes ``grads.dxp``, ``grads.dgh`` (GRU n section) and ``grads.dg``, and leaves dL/dh0
    in ``grads.ch`` (arguments as :func:`rows.launch_bwd`'s). Returns dL/dU as one sum per
    batch block, (NB, G, H) fp32, where ``need_dw`` and the tiles' ``dw`` have the kernel form
    it (at most ``grid_tiles.DW_MAX_BYTES`` of them), else None: then the caller forms it
    from ``grads.dgh`` (the GRU's r and z sections are dxp's, which the caller copies there).
    The tiles' ``split`` is the forward's alone; their ``bwd``, where set, gives the
    backward its own slice width, row tile and warps (powers of two, at least 16 on tl.dot)."""
    t, grid, d, shared = _setup(cfg, x.xp, seq.hs, torch.float32)
    _own_tiles(t, shared, event=cfg.gate == "event")
    B, T, G = x.xp.shape
    H = seq.hs.shape[2]
    dw = need_dw and t.dw and grid_tiles.dw_bytes(grid[1], H, cfg.cell) <= grid_tiles.DW_MAX_BYTES
    du = torch.zeros((grid[1], G, H), dtype=torch.float32, device=x.xp.device) if dw else d
    event = cfg.gate == "event"
    ev, lst, work = _event_lists(T, H, grid, x.xp.device) if event else (d, d, d)
    need_dg = grads.dg is not None
    flags = dict(NEED_DG=need_dg, DG_MASK=need_dg and dg_mask is not None, DW=dw, DGREC=dgrec is not None)
    x, g, lists = filled(x, d), filled(grads, d), lists if lists is not None else OpenLists(d, d)
    args = dict(xp_ptr=x.xp, w_ptr=x.w_hh, gate_ptr=x.gvals, sup_ptr=dg_mask if dg_mask is not None else d,
                idx_ptr=lists.idx, off_ptr=lists.off, theta_ptr=x.theta, hs_ptr=seq.hs, gh_ptr=seq.gh,
                dout_ptr=dout, dgrec_ptr=dgrec if dgrec is not None else d, ch_ptr=g.ch, dir_ptr=g.dirb,
                dxp_ptr=g.dxp, dgh_ptr=g.dgh, dg_ptr=g.dg,
                dth_ptr=g.dth, du_ptr=du, ev_ptr=ev, lst_ptr=lst, work_ptr=work, g_scale=cfg.g_scale,
                g_gain=cfg.g_gain, G_CODE=cfg.g_code, BC=_BC, **flags, **shared)
    _launch(_bwd_grid_kernel, "bwd", grid, T, x.xp.device, True, args)
    if event:
        WORK["bwd"] = work
    return du if dw else None
