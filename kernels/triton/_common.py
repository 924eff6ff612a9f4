"""Triton device helpers shared by the recurrence kernels (layout comments only).

Integer codes: cells RNN=0, GRU=1, LIF=2; gates DENSE=0, RHYTHMIC=1, EVENT=2; surrogate
codes are ``su_neuro.surrogate.Surrogate.code`` (atan 0, fast_sigmoid 1, sigmoid 2,
straight_through 3, triangle 4, rectangle 5).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

CELL_CODES = {"rnn": 0, "gru": 1, "lif": 2}
GATE_CODES = {"dense": 0, "rhythmic": 1, "event": 2}


@triton.jit
def _tanh(x):
    # tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|}); no overflow for any x.
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _step_range(off_ptr, t, H, GATE: tl.constexpr):
    """[start, end) of step t's rows: the compacted open list idx[off[t]:off[t+1]] of a
    rhythmic gate (GATE 1), every row 0 .. H otherwise."""
    if GATE == 1:
        start = tl.load(off_ptr + t)
        end = tl.load(off_ptr + t + 1)
    else:
        start = 0
        end = H
    return start, end


@triton.jit
def _gru_parts(p0, p1, p2, gh0, gh1, gh2, hp):
    """GRU candidate of the reference: gates r, z, n and f = (1 - z) n + z h, in fp32."""
    r = _sigmoid(p0 + gh0)
    z = _sigmoid(p1 + gh1)
    n = _tanh(p2 + r * gh2)
    return r, z, n, (1.0 - z) * n + z * hp


@triton.jit
def _gru_parts_grad(df, r, z, n, gh2, hp):
    """Backward of :func:`_gru_parts` from dL/df: dL/d(p_r), dL/d(p_z), dL/d(p_n) and the
    part of dL/dh that goes through z."""
    dn = df * (1.0 - z)
    dz = df * (hp - n)
    dnp = dn * (1.0 - n * n)
    dzp = dz * z * (1.0 - z)
    drp = dnp * gh2 * r * (1.0 - r)
    return drp, dzp, dnp, df * z


@triton.jit
def _surrogate_grad(x, CODE: tl.constexpr, scale):
    """sigma'(x) of su_neuro.surrogate.surrogate_derivative, in fp32."""
    if CODE == 0:  # atan
        u = 1.5707963267948966 * scale * x
        y = (scale * 0.5) / (1.0 + u * u)
    elif CODE == 1:  # fast_sigmoid
        u = scale * tl.abs(x) + 1.0
        y = 1.0 / (u * u)
    elif CODE == 2:  # sigmoid: s e^{-sx} / (1 + e^{-sx})^2 = s sig(sx) (1 - sig(sx))
        sg = _sigmoid(scale * x)
        y = scale * sg * (1.0 - sg)
    elif CODE == 3:  # straight_through
        y = x * 0.0 + 1.0
    elif CODE == 4:  # triangle
        y = tl.maximum(1.0 - tl.abs(x) / scale, 0.0) / scale
    else:  # rectangle
        y = tl.where(tl.abs(x) < 0.5 * scale, 1.0, 0.0) / scale
    return y


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
            if tl.max(tl.abs(v), axis=0) > 0:
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


#: compile options every launch passes. FMA contraction is on, the default of every Triton
#: up to 3.9 and the setting of the native GPU runs; fixed here because Triton 3.10 turns the
#: default off, and tools/triton_aot.py then compiles what a GPU runs on any version.
LAUNCH_OPTIONS = {"enable_fp_fusion": True}


def dummy(device) -> torch.Tensor:
    """A one-float placeholder for a pointer argument that a kernel's constexprs leave unused."""
    return torch.zeros(1, dtype=torch.float32, device=device)


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def tiles(hidden: int) -> tuple[int, int]:
    """(BI, BJ): rows per tile of the recurrent matrix and columns per streamed vector tile.

    A BI x BJ fp32 tile is at most 4096 values (32 registers per thread at 4 warps).
    """
    hp = next_pow2(hidden)
    return max(2, min(32, hp)), max(2, min(128, hp))
