"""What the Triton kernels share: the contract's codes as compile-time constants, device
helpers (layout comments only) and the bundles the launchers take.

The codes are ``kernels/contract.py``'s (cells RNN, GRU, LIF; gates DENSE, RHYTHMIC, EVENT;
the surrogates' formulas), held here as ``tl.constexpr`` globals so that JIT code compares
``CELL == GRU`` rather than a literal. Launches take their integer codes from the contract's
tables (:attr:`Config.cell_code`, :attr:`Config.gate_code`, ``Surrogate.code``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .. import contract

# ------------------------------------------------------------------------------ codes
RNN = tl.constexpr(contract.RNN)
GRU = tl.constexpr(contract.GRU)
LIF = tl.constexpr(contract.LIF)
DENSE = tl.constexpr(contract.DENSE)
RHYTHMIC = tl.constexpr(contract.RHYTHMIC)
EVENT = tl.constexpr(contract.EVENT)
ATAN = tl.constexpr(contract.SURROGATE_CODES["atan"])
FAST_SIGMOID = tl.constexpr(contract.SURROGATE_CODES["fast_sigmoid"])
SIGMOID = tl.constexpr(contract.SURROGATE_CODES["sigmoid"])
STRAIGHT_THROUGH = tl.constexpr(contract.SURROGATE_CODES["straight_through"])
TRIANGLE = tl.constexpr(contract.SURROGATE_CODES["triangle"])
RECTANGLE = tl.constexpr(contract.SURROGATE_CODES["rectangle"])


# ------------------------------------------------------------------------ device helpers
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
    rhythmic gate, every row 0 .. H otherwise."""
    if GATE == RHYTHMIC:
        start = tl.load(off_ptr + t)
        end = tl.load(off_ptr + t + 1)
    else:
        start = 0
        end = H
    return start, end


@triton.jit
def _step_rows(idx_ptr, k, km, LISTED: tl.constexpr):
    """Rows at positions k of a step's range: gathered from a compacted list (LISTED: a
    rhythmic gate's open rows, or the event gate's flagged ones), the positions themselves
    otherwise."""
    if LISTED:
        rows = tl.load(idx_ptr + k, mask=km, other=0)
    else:
        rows = k
    return rows


@triton.jit
def event_gate(d, theta):
    """The event gate: open (1) where the candidate moved by more than its threshold,
    |d| > theta with d = f - h, else closed (0)."""
    return tl.where(tl.abs(d) - theta > 0, 1.0, 0.0)


@triton.jit
def event_grad(a, d, g, dgt, theta, G_CODE: tl.constexpr, g_scale, g_gain):
    """The event gate's backward through h_t = h + g d, g = event_gate(d, theta) with the
    surrogate G_CODE: dL/df, the direct dL/dh_{t-1}, and dgt sigma' (dL/dtheta = -that;
    dgt = dL/dg) from a = dL/dh_t."""
    sg = g_gain * surrogate_grad(tl.abs(d) - theta, G_CODE, g_scale)
    df = g * a + dgt * sg * _sign(d)
    return df, a - df, dgt * sg


@triton.jit
def gru_candidate(p0, p1, p2, gh0, gh1, gh2, hp):
    """GRU candidate of the reference: gates r, z, n and f = (1 - z) n + z h, in fp32."""
    r = _sigmoid(p0 + gh0)
    z = _sigmoid(p1 + gh1)
    n = _tanh(p2 + r * gh2)
    return r, z, n, (1.0 - z) * n + z * hp


@triton.jit
def gru_candidate_grad(df, r, z, n, gh2, hp):
    """Backward of :func:`gru_candidate` from dL/df: dL/d(p_r), dL/d(p_z), dL/d(p_n) and the
    part of dL/dh that goes through z."""
    dn = df * (1.0 - z)
    dz = df * (hp - n)
    dnp = dn * (1.0 - n * n)
    dzp = dz * z * (1.0 - z)
    drp = dnp * gh2 * r * (1.0 - r)
    return drp, dzp, dnp, df * z


@triton.jit
def lif_candidate(beta, hp, cur, threshold, ZERO_RESET: tl.constexpr):
    """LIF candidate of the reference from the clamped decay, the membrane and the input
    current: the membrane before the gate, with the reset of a spike at the threshold."""
    rho = tl.where(hp > threshold, 1.0, 0.0)
    if ZERO_RESET:
        f = beta * (1.0 - rho) * hp + cur
    else:
        f = beta * hp + cur - rho * threshold
    return rho, f


@triton.jit
def surrogate_grad(x, CODE: tl.constexpr, scale):
    """sigma'(x) of su_neuro.surrogate.surrogate_derivative, in fp32."""
    if CODE == ATAN:
        u = 1.5707963267948966 * scale * x
        y = (scale * 0.5) / (1.0 + u * u)
    elif CODE == FAST_SIGMOID:
        u = scale * tl.abs(x) + 1.0
        y = 1.0 / (u * u)
    elif CODE == SIGMOID:  # s sig(sx) (1 - sig(sx)) = s e / (1 + e)^2 with e = e^{-s|x|}
        # even in x: on |x| the tail keeps its digits (1 - sig(sx) cancels for x > 0 and is
        # exactly 0 from s x ~ 17), as in the reference and numba
        e = tl.exp(-scale * tl.abs(x))
        y = scale * e / ((1.0 + e) * (1.0 + e))
    elif CODE == STRAIGHT_THROUGH:
        y = x * 0.0 + 1.0
    elif CODE == TRIANGLE:
        y = tl.maximum(1.0 - tl.abs(x) / scale, 0.0) / scale
    else:  # RECTANGLE
        y = tl.where(tl.abs(x) < 0.5 * scale, 1.0, 0.0) / scale
    return y


# ------------------------------------------------------------------------------- host side
#: compile options every launch passes. FMA contraction is on, the default of every Triton
#: up to 3.9 and the setting of the native GPU runs; fixed here because Triton 3.10 turns the
#: default off, and tools/triton_aot.py then compiles what a GPU runs on any version.
LAUNCH_OPTIONS = {"enable_fp_fusion": True}


class Config(NamedTuple):
    """A call's constants: cell ("rnn", "gru", "lif") and gate kind; whether it records;
    LIF threshold and reset (``zero_reset``); the surrogates' codes, scales and gains (``s_``:
    the LIF spike, ``g_``: the event gate; code and scale 0 where the call has none)."""

    cell: str
    gate: str
    record: bool
    threshold: float
    zero_reset: bool
    s_code: int
    s_scale: float
    g_code: int
    g_scale: float
    s_gain: float = 1.0
    g_gain: float = 1.0

    @property
    def cell_code(self) -> int:
        return contract.CELL_CODES[self.cell]

    @property
    def gate_code(self) -> int:
        return contract.GATE_CODES[self.gate]


class Operands(NamedTuple):
    """What the kernels read of a call, None where it has none: xp (B, T, G); w_hh (G, H);
    b_hh (G,); gvals (T, H) rhythmic gate; theta (H,) event threshold; beta (H,) LIF decay."""

    xp: torch.Tensor
    w_hh: torch.Tensor | None
    b_hh: torch.Tensor | None
    gvals: torch.Tensor | None
    theta: torch.Tensor | None
    beta: torch.Tensor | None


class Sequences(NamedTuple):
    """What the forward writes and the backward reads: hs (B, T+1, H) states, row 0 = h0 (LIF:
    the membrane); ss (B, T+1, H) LIF spikes, row 0 = s0, else None; gh (B, T, G) fp32 the
    recurrent pre-activation U h + b, None where not saved."""

    hs: torch.Tensor
    ss: torch.Tensor | None
    gh: torch.Tensor | None


class OpenLists(NamedTuple):
    """A (T, H) mask compacted: idx (int32) the set columns of every row, off (T+1,) int32
    where each row's start in idx."""

    idx: torch.Tensor
    off: torch.Tensor


class Grads(NamedTuple):
    """The backward's buffers, fp32: ch (B, H) dL/dh_T in, dL/dh0 out; cs (B, H) the same for
    the LIF spikes (else None); dirb (B, H) scratch; dxp, dgh (B, T, G) (dgh is dxp but for
    the GRU n section); dg (B, T, H) dL/dg of a trainable rhythmic gate, else None; dth,
    dbeta (B, H) per-row dL/dtheta (event gate), dL/dbeta (LIF), else None."""

    ch: torch.Tensor
    cs: torch.Tensor | None
    dirb: torch.Tensor
    dxp: torch.Tensor
    dgh: torch.Tensor
    dg: torch.Tensor | None
    dth: torch.Tensor | None
    dbeta: torch.Tensor | None


def dummy(device) -> torch.Tensor:
    """A one-float placeholder for a pointer argument that a kernel's constexprs leave unused."""
    return torch.zeros(1, dtype=torch.float32, device=device)


def filled(bundle, placeholder: torch.Tensor):
    """``bundle`` (a NamedTuple of tensors, or None) with the placeholder where it holds None."""
    if bundle is None:
        return None
    return type(bundle)._make(placeholder if v is None else v for v in bundle)


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))
