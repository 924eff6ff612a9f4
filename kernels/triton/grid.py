r"""Multi-program Triton recurrence for RNN / GRU with a dense or rhythmic gate.

The kernels of ``recurrence.py`` give a batch row one program: at B = 1 one SM does all
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
  copied where the step's mask is 0, so every state entry is written by one program;
* steps are ordered by a barrier among the ``NH`` programs of a batch block (one int32
  counter per block, release add / acquire poll at GPU scope, CTA barriers around them:
  what makes the other programs' stores visible). Loads of data written by other
  programs ask for ``.cg`` (L2) as well. A spin barrier needs every program resident at
  once: the launcher keeps ``NH * NB`` within the SM count and launches the grid as a
  cooperative one, which the driver refuses (an error, not a hang) when it cannot place
  every program.

Backward, per step t from T - 1 down: phase 1 (elementwise) forms dL/d(pre-activation) of
the program's neuron slices from the saved ``gh``; a barrier; phase 2 forms
``dL/dh_{t-1} = dir + U^T dgh`` for the same slices as columns, reducing over the rows
with g = 1 (compacted on g) by ``tl.dot(dgh[BB, BK rows], U[BK rows, BH])``. A slice's
incoming gradient is written and read by the same program, so a step needs one barrier.

Triton's interpreter runs the programs of a launch one after the other, so a barrier
would wait for ever: there (``SYNC`` off) the launchers start one launch per step, and
one per phase in backward. The arithmetic is the same code; the native test run on a GPU
is what checks the barrier.

The equations are ``kernels/reference.py``'s; ``recurrence.py`` has the layouts (gh,
dxp, dgh, the backward mask) that these kernels share with the per-row ones, and its
``_Recurrence`` calls :func:`launch_fwd` / :func:`launch_bwd` when :func:`eligible`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import choice
from ._common import (
    CELL_CODES,
    GATE_CODES,
    LAUNCH_OPTIONS,
    _gru_parts,
    _gru_parts_grad,
    _step_range,
    _tanh,
    dummy,
    next_pow2,
)

__all__ = ["ENABLED", "Tiles", "eligible", "launch_fwd", "launch_bwd", "shape", "tiles"]

# None: where measured faster than the per-row kernels (choice.MEASURED, GPU only); True /
# False: always / never (tests, benchmarks). Run natively on an H200 on 2026-12-04: the kernel
# tests passed and tools/bench_gpu.py timed them (docs/triton.md).
ENABLED: bool | None = None
MAX_BB = 64  # batch rows per program
MAX_NH = None  # cap on the programs per batch block (None: one per chunk, SM count on a GPU)


class Tiles(NamedTuple):
    """How a launch cuts the work (docs/triton.md, "Cost model").

    bb: batch rows per program (a batch block); 1-64, powers of two; below 16 needs ``fma``.
    bh: rows of U per forward chunk (columns per backward slice); the chunks of a step are
        shared round robin by the NH programs of a batch block.
    bk: reduction tile (columns of U per forward iteration, rows per backward iteration).
    warps, stages: Triton's num_warps and num_stages.
    fma: products on the FMA units as broadcasts summed over the reduction axis (exact fp32,
        any bb / bh) instead of ``tl.dot`` (bb, bh >= 16; tensor cores at TF32 precision).
    """

    bb: int
    bh: int
    bk: int
    warps: int
    stages: int
    fma: bool


#: tiles to use instead of :func:`tiles`' choice (the benchmark's sweep sets it)
TILES: Tiles | None = None
#: tl.dot precision instead of the one torch's flags give ("ieee", "tf32", "tf32x3")
PRECISION: str | None = None


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
def _chunk_rows(idx_ptr, k, km, GATE: tl.constexpr):
    # rows k of the step's range (int64: row * H offsets): gathered from the compacted open
    # list of a rhythmic gate, the positions themselves otherwise
    if GATE == 1:
        rows = tl.load(idx_ptr + k, mask=km, other=0).to(tl.int64)
    else:
        rows = k.to(tl.int64)
    return rows


@triton.jit
def _fwd_grid_kernel(
    xp_ptr, w_ptr, b_ptr, gate_ptr, mask_ptr, idx_ptr, off_ptr, hs_ptr, gh_ptr, sync_ptr,
    t0, t1, B, T, H,
    CELL: tl.constexpr, GATE: tl.constexpr, HAS_B: tl.constexpr, SAVE_GH: tl.constexpr,
    SYNC: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):
    # FMA: products as [BB, BH, BK] broadcasts summed over K on the FMA units (any BB, BH),
    # else tl.dot (BB, BH >= 16) at precision PREC.
    # xp (B, T, G); hs (B, T+1, H), row 0 = h0; gh (B, T, G) fp32; mask (T, H) int8: rows
    # whose candidate is computed (idx / off: its compacted lists); sync (NB,) int32 zeros.
    p = tl.program_id(0)
    q = tl.program_id(1)
    nh = tl.num_programs(0)
    NSEC: tl.constexpr = 3 if CELL == 1 else 1
    G = NSEC * H
    bb = (q * BB + tl.arange(0, BB)).to(tl.int64)
    bm = bb < B
    for t in range(t0, t1):
        prev = (bb * (T + 1) + t) * H
        new = prev + H
        xrow = (bb * T + t) * G
        trow = tl.cast(t, tl.int64) * H  # row t of the (T, H) gate and mask
        if GATE == 1:  # closed neurons keep their state
            for j0 in range(p * BH, H, nh * BH):
                j = j0 + tl.arange(0, BH)
                jm = j < H
                keep = tl.load(mask_ptr + trow + j, mask=jm, other=1) == 0
                cm = bm[:, None] & (jm & keep)[None, :]
                v = tl.load(hs_ptr + prev[:, None] + j[None, :], mask=cm, cache_modifier=".cg")
                tl.store(hs_ptr + new[:, None] + j[None, :], v, mask=cm)
        start, end = _step_range(off_ptr, t, H, GATE)
        for c0 in range(start + p * BH, end, nh * BH):
            k = c0 + tl.arange(0, BH)
            km = k < end
            rows = _chunk_rows(idx_ptr, k, km, GATE)
            a0 = tl.zeros([BB, BH], tl.float32)
            a1 = tl.zeros([BB, BH], tl.float32)
            a2 = tl.zeros([BB, BH], tl.float32)
            for k0 in range(0, H, BK):
                kk = k0 + tl.arange(0, BK)
                kkm = kk < H
                hk = tl.load(hs_ptr + prev[:, None] + kk[None, :], mask=bm[:, None] & kkm[None, :],
                             other=0.0, cache_modifier=".cg").to(tl.float32)
                wm = km[:, None] & kkm[None, :]
                wo = rows[:, None] * H + kk[None, :]
                w0 = tl.load(w_ptr + wo, mask=wm, other=0.0).to(tl.float32)
                a0 = _mac(a0, hk, w0, FMA, PREC)
                if CELL == 1:
                    w1 = tl.load(w_ptr + H * H + wo, mask=wm, other=0.0).to(tl.float32)
                    w2 = tl.load(w_ptr + 2 * H * H + wo, mask=wm, other=0.0).to(tl.float32)
                    a1 = _mac(a1, hk, w1, FMA, PREC)
                    a2 = _mac(a2, hk, w2, FMA, PREC)
            if HAS_B:
                a0 += tl.load(b_ptr + rows, mask=km, other=0.0).to(tl.float32)[None, :]
                if CELL == 1:
                    a1 += tl.load(b_ptr + H + rows, mask=km, other=0.0).to(tl.float32)[None, :]
                    a2 += tl.load(b_ptr + 2 * H + rows, mask=km, other=0.0).to(tl.float32)[None, :]
            om = bm[:, None] & km[None, :]
            ho = prev[:, None] + rows[None, :]
            xo = xrow[:, None] + rows[None, :]
            hp = tl.load(hs_ptr + ho, mask=om, other=0.0, cache_modifier=".cg").to(tl.float32)
            p0 = tl.load(xp_ptr + xo, mask=om, other=0.0).to(tl.float32)
            if CELL == 1:
                p1 = tl.load(xp_ptr + xo + H, mask=om, other=0.0).to(tl.float32)
                p2 = tl.load(xp_ptr + xo + 2 * H, mask=om, other=0.0).to(tl.float32)
                _r, _z, _n, f = _gru_parts(p0, p1, p2, a0, a1, a2, hp)
            else:
                f = _tanh(p0 + a0)
            if GATE == 1:
                g = tl.load(gate_ptr + trow + rows, mask=km, other=0.0).to(tl.float32)[None, :]
                # a closed row is computed only for dL/dg (f - h): it keeps its state
                hn = tl.where(g != 0, hp + g * (f - hp), hp)
            else:
                hn = f
            tl.store(hs_ptr + ho + H, hn, mask=om)
            if SAVE_GH:
                tl.store(gh_ptr + xo, a0, mask=om)
                if CELL == 1:
                    tl.store(gh_ptr + xo + H, a1, mask=om)
                    tl.store(gh_ptr + xo + 2 * H, a2, mask=om)
        _grid_sync(sync_ptr, q, (t - t0 + 1) * nh, SYNC)


@triton.jit
def _bwd_grid_kernel(
    xp_ptr, w_ptr, gate_ptr, sup_ptr, idx_ptr, off_ptr, hs_ptr, gh_ptr, dout_ptr,
    ch_ptr, dir_ptr, dxp_ptr, dgh_ptr, dg_ptr, sync_ptr,
    t0, t1, B, T, H,
    CELL: tl.constexpr, GATE: tl.constexpr, NEED_DG: tl.constexpr, DG_MASK: tl.constexpr,
    PHASES: tl.constexpr, SYNC: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr,
    BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr,
):
    # Steps t = T-1-tt for tt in [t0, t1). PHASES: 3 both phases (with SYNC, a barrier
    # between them), 1 or 2 one of them (the interpreter's per-phase launches).
    # ch (B, H) fp32 in: dL/dh_T, out: dL/dh0; dir (B, H) fp32 scratch; dxp, dgh (B, T, G)
    # fp32 (dgh written only for the GRU n section); dg (B, T, H); sup (T, H) int8 (DG_MASK);
    # idx / off: rows with g != 0 per step.
    p = tl.program_id(0)
    q = tl.program_id(1)
    nh = tl.num_programs(0)
    NSEC: tl.constexpr = 3 if CELL == 1 else 1
    G = NSEC * H
    bb = (q * BB + tl.arange(0, BB)).to(tl.int64)
    bm = bb < B
    for tt in range(t0, t1):
        t = T - 1 - tt
        prev = (bb * (T + 1) + t) * H
        xrow = (bb * T + t) * G
        orow = (bb * T + t) * H
        trow = tl.cast(t, tl.int64) * H
        if PHASES != 2:  # ---- phase 1, elementwise over the program's neuron slices
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
                gh0 = tl.load(gh_ptr + xo, mask=m, other=0.0)
                p0 = tl.load(xp_ptr + xo, mask=m, other=0.0).to(tl.float32)
                if CELL == 1:
                    gh1 = tl.load(gh_ptr + xo + H, mask=m, other=0.0)
                    gh2 = tl.load(gh_ptr + xo + 2 * H, mask=m, other=0.0)
                    p1 = tl.load(xp_ptr + xo + H, mask=m, other=0.0).to(tl.float32)
                    p2 = tl.load(xp_ptr + xo + 2 * H, mask=m, other=0.0).to(tl.float32)
                    r, z, n, f = _gru_parts(p0, p1, p2, gh0, gh1, gh2, hp)
                else:
                    f = _tanh(p0 + gh0)
                if GATE == 1:
                    g = tl.load(gate_ptr + trow + j, mask=jm, other=0.0).to(tl.float32)[None, :]
                    df = tl.where(g != 0, g * a, 0.0)
                    dh = (1.0 - g) * a
                    if NEED_DG:
                        dgt = a * (f - hp)  # dL/dg through h_t = h + g (f - h)
                        if DG_MASK:
                            sup = tl.load(sup_ptr + trow + j, mask=jm, other=0)[None, :]
                            dgt = tl.where(sup != 0, dgt, 0.0)
                        tl.store(dg_ptr + orow[:, None] + j[None, :], dgt, mask=m)
                else:
                    df = a
                    dh = tl.zeros([BB, BH], tl.float32)
                if CELL == 1:
                    drp, dzp, dnp, dhz = _gru_parts_grad(df, r, z, n, gh2, hp)
                    dh += dhz
                    tl.store(dxp_ptr + xo, drp, mask=m)
                    tl.store(dxp_ptr + xo + H, dzp, mask=m)
                    tl.store(dxp_ptr + xo + 2 * H, dnp, mask=m)
                    tl.store(dgh_ptr + xo + 2 * H, dnp * r, mask=m)
                else:
                    tl.store(dxp_ptr + xo, df * (1.0 - f * f), mask=m)
                tl.store(dir_ptr + so, dh, mask=m)
        if PHASES == 3:
            _grid_sync(sync_ptr, q, (tt - t0 + 1) * nh, SYNC)
        if PHASES != 1:  # ---- phase 2, dL/dh_{t-1} = dir + U^T dgh over the open rows
            start, end = _step_range(off_ptr, t, H, GATE)
            for j0 in range(p * BH, H, nh * BH):
                j = j0 + tl.arange(0, BH)
                jm = j < H
                acc = tl.zeros([BB, BH], tl.float32)
                for c0 in range(start, end, BK):
                    k = c0 + tl.arange(0, BK)
                    km = k < end
                    rows = _chunk_rows(idx_ptr, k, km, GATE)
                    vm = bm[:, None] & km[None, :]
                    wm = km[:, None] & jm[None, :]
                    for sec in tl.static_range(NSEC):
                        if CELL == 1 and sec == 2:
                            src = dgh_ptr
                        else:
                            src = dxp_ptr
                        v = tl.load(src + xrow[:, None] + (sec * H + rows)[None, :], mask=vm,
                                    other=0.0, cache_modifier=".cg")
                        w = tl.load(w_ptr + (sec * H + rows)[:, None] * H + j[None, :], mask=wm,
                                    other=0.0)
                        acc = _mac_t(acc, v, w.to(tl.float32), FMA, PREC)
                so = (bb * H)[:, None] + j[None, :]
                m = bm[:, None] & jm[None, :]
                tl.store(ch_ptr + so, tl.load(dir_ptr + so, mask=m, other=0.0) + acc, mask=m)
        if PHASES == 3:
            # phase 1 of the next step reads the slices' ch in another thread layout
            tl.debug_barrier()


# ------------------------------------------------------------------------- launchers
def eligible(cell: str, gate: str, w_hh, B: int, device, rate: float = 1.0, training: bool = False) -> bool:
    """Whether the multi-program kernels run this call: RNN / GRU, dense or rhythmic gate,
    fp32 / fp16 / bf16, on a GPU every program resident at once, and ``ENABLED``: True
    always, False never, None (the default) where ``choice.MEASURED`` timed them faster than
    the per-row kernels for this batch, width, update rate and mode (GPU only; the
    interpreter runs the per-row kernels unless told)."""
    if ENABLED is False or cell not in ("rnn", "gru") or gate not in ("dense", "rhythmic"):
        return False
    if w_hh is None or w_hh.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    sms = _sm_count(device)
    if sms is not None:
        _, nh, nb = shape(B, w_hh.shape[1], device)
        if not (nh >= 1 and nh * nb <= sms):
            return False
    if ENABLED is None:
        return sms is not None and choice.fastest(B, w_hh.shape[1], rate, training, ("rows", "grid")) == "grid"
    return True


def _sm_count(device) -> int | None:
    """The GPU's SM count; None off a GPU (the interpreter: no residency limit).
    tools/triton_aot.py stands in a card's count to compile the GPU's grid shapes."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _clamp_block(rows: int) -> int:
    return max(16, min(MAX_BB, next_pow2(rows)))


def tiles(B: int, H: int, device, precision: str = "ieee") -> Tiles:
    """The tiles of a call: :data:`TILES` where set, else the measured defaults (one H200,
    docs/triton.md, "Tiles"):

    * B <= 8: one block of ``next_pow2(B)`` rows on the FMA units (a tensor-core tile would
      pad it to 16 rows), chunks of 8 rows, a long reduction tile (2048 / BB columns, at most
      the layer's width), 8 warps, 3 stages: many weight bytes in flight per SM, which is what
      a B = 1 step streams (B=1, H=8192, 10 %: 37 ms, against 111 ms at 16 rows x 256);
    * larger batches: blocks of 16 rows while every block keeps 16 programs (B = 64: four
      blocks of 33 programs; two blocks of 32 rows took twice as long), tl.dot on chunks of
      16 rows; reduction tile 64 at exact fp32 (IEEE dot), 32 at 3xTF32 (no spills), 128 and
      3 stages at TF32."""
    if TILES is not None:
        return TILES
    if B <= 8:
        bb = next_pow2(B)
        return Tiles(bb, 8, max(64, min(2048 // bb, next_pow2(H))), 8, 3, True)
    sms = _sm_count(device)
    bb = 16
    if sms is not None and triton.cdiv(B, 16) * 16 > sms:
        bb = _clamp_block(triton.cdiv(B * 16, sms))
    elif sms is None:
        bb = _clamp_block(B)
    if precision == "tf32":
        return Tiles(bb, 16, 128, 4, 3, False)
    if precision == "tf32x3":
        return Tiles(bb, 16, 32, 4, 3, False)
    return Tiles(bb, 16, max(32, 1024 // bb), 4, 2, False)


def shape(B: int, H: int, device, precision: str = "ieee") -> tuple[int, int, int]:
    """(BB, NH, NB): batch rows per program, programs per batch block, batch blocks.

    NH is one program per chunk of ``bh`` rows (at most ``MAX_NH``). On a GPU the programs
    must all be resident (a spin barrier): NH ≤ SMs // NB, so NH is 0 (not eligible) when
    the batch needs more blocks than there are SMs. The interpreter has no residency limit."""
    t = tiles(B, H, device, precision)
    nh = triton.cdiv(H, t.bh)
    if MAX_NH is not None:
        nh = max(1, min(nh, MAX_NH))
    nb = triton.cdiv(B, t.bb)
    sms = _sm_count(device)
    if sms is not None:
        nh = min(nh, sms // nb)
    return t.bb, nh, nb


def _precision(dtype) -> str:
    # The dot operands are fp32 (16-bit inputs are widened after the load). fp16 and bf16
    # values are exact in TF32, so for them TF32 tensor cores compute the fp32 products
    # exactly; fp32 inputs use TF32 only where torch allows it for matmuls.
    if PRECISION is not None:
        return PRECISION
    if dtype in (torch.float16, torch.bfloat16) or _tf32_matmuls():
        return "tf32"
    return "ieee"


def _tf32_matmuls() -> bool:
    """torch's switch for TF32 fp32 matmuls: ``fp32_precision`` where it is set (newer
    torch raises on the legacy flag once it is), else ``allow_tf32``."""
    m = torch.backends.cuda.matmul
    prec = getattr(m, "fp32_precision", None)
    if prec not in (None, "none"):
        return prec == "tf32"
    try:
        return bool(m.allow_tf32)
    except RuntimeError:
        return False


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


def _counters(nb: int, device) -> torch.Tensor:
    # one barrier counter per batch block, counting arrivals (programs x steps / phases)
    return torch.zeros(nb, dtype=torch.int32, device=device)


def _native(device) -> bool:
    """One launch with the barrier on (a GPU); else one launch per step (the interpreter)."""
    return device.type == "cuda"


def _setup(cfg, xp, hs, operands):
    """What both launchers need: sizes, the grid (NH, NB), a placeholder tensor, zeroed
    barrier counters and the compile-time arguments they share. ``operands``: the dtype of
    the dot operands' values (the input's forward; the fp32 gradients backward)."""
    B, T, _ = xp.shape
    H = hs.shape[2]
    prec = _precision(operands)
    t = tiles(B, H, xp.device, prec)
    _, nh, nb = shape(B, H, xp.device, prec)
    meta = dict(CELL=CELL_CODES[cfg["cell"]], GATE=GATE_CODES[cfg["gate"]], BB=t.bb, BH=t.bh,
                BK=t.bk, FMA=t.fma, PREC=prec, num_warps=t.warps, num_stages=t.stages, **LAUNCH_OPTIONS)
    return B, T, H, nh, nb, dummy(xp.device), _counters(nb, xp.device), meta


def launch_fwd(cfg, xp, hs, w_hh, b_hh, gvals, mask, idx, off, gh, save_gh):
    """Fills ``hs[:, 1:]`` (and ``gh`` when ``save_gh``); ``hs[:, 0]`` holds h0."""
    B, T, H, nh, nb, d, sync, meta = _setup(cfg, xp, hs, xp.dtype)
    dev = xp.device
    rhythmic = cfg["gate"] == "rhythmic"
    m8 = (mask != 0).to(torch.int8).contiguous() if rhythmic else d
    args = (xp, w_hh, b_hh if b_hh is not None else d, gvals if rhythmic else d, m8, idx, off,
            hs, gh if save_gh else d, sync)
    meta.update(HAS_B=b_hh is not None, SAVE_GH=save_gh)
    if _native(dev):
        k = _fwd_grid_kernel[(nh, nb)](*args, 0, T, B, T, H, SYNC=True,
                                       launch_cooperative_grid=True, **meta)
        _note("fwd", k, nh, nb)
    else:
        for t in range(T):
            _fwd_grid_kernel[(nh, nb)](*args, t, t + 1, B, T, H, SYNC=False, **meta)


def launch_bwd(cfg, xp, w_hh, gvals, dg_mask, idx, off, hs, gh, dout, ch, dirb, dxp, dgh, dg,
               need_dg):
    """Writes dxp, dgh (GRU n section), dg and leaves dL/dh0 in ``ch``."""
    B, T, H, nh, nb, d, sync, meta = _setup(cfg, xp, hs, torch.float32)
    dev = xp.device
    rhythmic = cfg["gate"] == "rhythmic"
    args = (xp, w_hh, gvals if rhythmic else d, dg_mask if dg_mask is not None else d, idx, off,
            hs, gh, dout, ch, dirb, dxp, dgh, dg if need_dg else d, sync)
    meta.update(NEED_DG=need_dg, DG_MASK=need_dg and dg_mask is not None)
    if _native(dev):
        k = _bwd_grid_kernel[(nh, nb)](*args, 0, T, B, T, H, PHASES=3, SYNC=True,
                                       launch_cooperative_grid=True, **meta)
        _note("bwd", k, nh, nb)
    else:
        for tt in range(T):
            for phase in (1, 2):
                _bwd_grid_kernel[(nh, nb)](*args, tt, tt + 1, B, T, H, PHASES=phase,
                                           SYNC=False, **meta)
