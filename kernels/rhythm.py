r"""A one-harmonic rhythmic gate as exact per-neuron points on the shared phase (the
gate of a B = 1 inference stream evaluated inside the kernel, instead of a (T, H) plan).

``RhythmicGate._open_rows`` computes, in float32 with torch,

.. math:: x_{t,i} = \mathrm{fl}(\beta_t + \phi_i), \qquad
          g_{t,i} = [\,\mathrm{fl}(\mathrm{fl}(\sin x_{t,i}) \, \alpha_i) + b_i > 0\,]

with the shared phase :math:`\beta_t \in [0, \mathrm{fl}(2\pi)]` (float64 remainder, rounded).
For a neuron, g is a function of the float32 x alone, and x lies in
:math:`[\phi_i, \mathrm{fl}(\mathrm{fl}(2\pi) + \phi_i)]` (rounding is monotone). Away from
the points where :math:`\sin x = c_i = -b_i / \alpha_i` that function is certain: where
:math:`|\sin x - c_i| > \varepsilon` = 2e-6 the float32 rounding (sin within about one ulp,
~6e-8, one rounded product) cannot change the sign that float64 gives. Inside those bands
every float32 x is evaluated with the very torch operations of ``_open_rows`` (elementwise:
the bits do not depend on a value's position in the tensor). That gives the float32 values
of x where g changes. Each is then carried back to the shared phase: since
:math:`\mathrm{fl}(\beta + \phi)` is monotone in :math:`\beta`, ":math:`x \ge \tau`" is
":math:`\beta \ge p`" for the least float32 p with :math:`\mathrm{fl}(p + \phi) \ge \tau`
(a bisection). A neuron open at the start of its range gets one more point, 0. So

.. math:: g_{t,i} = \#\{m : p_{m,i} \le \beta_t\} \bmod 2

exactly for every step of every stream: one comparison a point, no arithmetic (the same
under fastmath). A neuron at a 10 % rate has two points (three when it starts open); the
table is (M, H) with M the largest count but at least ``MIN_ROWS``, padded with the largest
float32. The float32
values tried in the bands number ~70 a crossing at a 10 % rate; a build takes ~10 ms at
H = 512 and is cached by the gate against a copy of its parameters.

Where the bound is not safe to state (non-finite parameters, :math:`|\alpha| < 10^{-20}`
but not 0, :math:`|\phi| > 2^{20}`, :math:`|b| > 10^{20}`) or the bands would hold more than
``MAX_POINTS`` floats (a rate within ~1e-3 of 0 or 1 makes them wide; so does a crossing
at x = 0, where float32 values are dense), there is no table and the caller plans as before.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

EPS = 2e-6  # half-width, in sin x, of the bands evaluated exactly
MAX_POINTS = 1 << 21  # float32 values evaluated per table (at most)
PAD = float(np.finfo(np.float32).max)  # padding point: above every shared phase
TWO_PI_32 = float(np.float32(2 * math.pi))  # the largest shared phase beta_t
MIN_ROWS = 3  # points a table has at least (the split kernel's unrolled scan)


class RhythmTable(NamedTuple):
    """A one-harmonic rhythm for steps t0 .. t0 + T - 1 (module docstring).

    base: (T,) float32 shared phase beta_t; points: (M, H) float32, each column sorted,
    padded with ``PAD``: neuron i is open at step t where an odd number of points[:, i]
    are <= base[t]; plan: a function returning the same rows the gate's way, or None."""

    base: torch.Tensor
    points: torch.Tensor
    plan: Callable[[], torch.Tensor] | None = None

    def values(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The gate rows g of steps start .. stop - 1 of the table's sequence, (steps, H)
        float32 in {0, 1}: the bits of ``RhythmicGate.plan``. All of them come from
        ``plan`` where the gate gave one (its in-place rows: cheaper than the table's
        comparisons over a whole (T, H) array)."""
        if self.plan is not None and start == 0 and stop is None:
            return self.plan()
        return self._rows(self.base[start:stop])

    def open_count(self, samples: int = 128) -> int:
        """Open entries of the whole sequence, estimated from ``samples`` evenly spaced
        steps (exact where T <= samples)."""
        T = self.base.shape[0]
        if T == 0:
            return 0
        pick = torch.linspace(0, T - 1, min(T, samples)).round().long()
        return int(self._rows(self.base[pick]).sum().item() * T / pick.shape[0])

    def _rows(self, phase: torch.Tensor) -> torch.Tensor:
        col = phase[:, None]
        odd = self.points[0][None] <= col  # (steps, H); one pass a point
        for m in range(1, self.points.shape[0]):
            odd ^= self.points[m][None] <= col
        return odd.to(torch.float32)


def _keys(v: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in the order of the values (-0 and +0 share key 0)."""
    b = v.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def _floats(k: np.ndarray) -> np.ndarray:
    """Inverse of ``_keys`` (key 0 gives +0)."""
    b = np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32)
    return b.view(np.float32)


def _up(a: np.ndarray) -> np.ndarray:
    """Keys of the smallest float32 >= a (float64)."""
    f = a.astype(np.float32)
    k = _keys(f)
    return np.where(f.astype(np.float64) < a, k + 1, k)


def _down(a: np.ndarray) -> np.ndarray:
    """Keys of the largest float32 <= a (float64)."""
    f = a.astype(np.float32)
    k = _keys(f)
    return np.where(f.astype(np.float64) > a, k - 1, k)


def build(phi: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor) -> torch.Tensor | None:
    """The points (M, H) float32 of one harmonic's parameters (float32, (H,) each), or
    None where the module docstring's bound does not hold."""
    ph32 = phi.detach().cpu().numpy().astype(np.float32)
    ph = ph32.astype(np.float64)
    al = alpha.detach().cpu().numpy().astype(np.float64)
    bi = bias.detach().cpu().numpy().astype(np.float64)
    H = ph.shape[0]
    if not (np.isfinite(ph).all() and np.isfinite(al).all() and np.isfinite(bi).all()):
        return None
    if (np.abs(ph) > 2.0**20).any() or (np.abs(bi) > 1e20).any() or ((al != 0) & (np.abs(al) < 1e-20)).any():
        return None
    xlo = ph
    xhi = (np.float32(TWO_PI_32) + ph32).astype(np.float64)
    start_k, end_k = _keys(ph32), _keys(xhi.astype(np.float32))  # the range's ends
    live = al != 0  # alpha = 0: g = [b > 0] everywhere (+-0 + b)
    c = np.where(live, -bi / np.where(live, al, 1.0), 2.0)
    lo_s, hi_s = np.clip(c - EPS, -1.0, 1.0), np.clip(c + EPS, -1.0, 1.0)
    banded = live & (c - EPS <= 1.0) & (c + EPS >= -1.0)
    # the bands {x : sin x in [lo_s, hi_s]}: two intervals a period, over the periods that
    # meet [xlo, xhi] (k0 - 1 .. k0 + 2 covers a range of length 2pi + rounding)
    k0 = np.floor(xlo / (2 * math.pi))
    shifts = (k0[:, None] + np.arange(-1, 3)[None]) * (2 * math.pi)  # (H, 4)
    a1, a2 = np.arcsin(lo_s)[:, None], np.arcsin(hi_s)[:, None]
    starts = np.concatenate([a1 + shifts, math.pi - a2 + shifts], 1)  # (H, 8)
    ends = np.concatenate([a2 + shifts, math.pi - a1 + shifts], 1)
    band_n = np.arange(H).repeat(8)  # the neuron of each interval
    ks = np.maximum(_up(np.maximum(starts, xlo[:, None]).ravel()), start_k[band_n])
    ke = np.minimum(_down(np.minimum(ends, xhi[:, None]).ravel()), end_k[band_n])
    # union of the bands: per neuron in the order of their starts, each one trimmed to what
    # the ones before it do not cover (keys are integers: disjoint, sorted ranges)
    ks, ke = ks.reshape(H, 8), ke.reshape(H, 8)
    ke = np.where(banded[:, None], ke, ks - 1)  # no band: empty
    order = np.argsort(ks, axis=1, kind="stable")
    ks, ke = np.take_along_axis(ks, order, 1), np.take_along_axis(ke, order, 1)
    covered = np.maximum.accumulate(np.concatenate([np.full((H, 1), np.iinfo(np.int64).min), ke[:, :-1]], 1), 1)
    ks_u = np.maximum(ks, covered + 1)
    ks, ke = ks.ravel(), ke.ravel()
    count = np.maximum(ke - ks_u.ravel() + 1, 0)
    total = int(count.sum())
    if total > MAX_POINTS:
        return None
    neuron = band_n.repeat(count)
    first = np.cumsum(count) - count
    key = np.arange(total) - first.repeat(count) + ks_u.ravel().repeat(count)
    both = neuron.astype(np.int64) << 33 | (key + (1 << 31))  # sorted: neuron, then value
    v = _floats(key)
    # exact: the operations of RhythmicGate._open_rows, elementwise
    n_t = torch.from_numpy(neuron)
    ge = torch.from_numpy(v.copy()).sin_().mul_(alpha.detach().cpu()[n_t]).add_(bias.detach().cpu()[n_t]).gt_(0)
    ge = ge.numpy()

    def certain(n, x):  # float64 sign outside the bands
        return ((al[n] * np.sin(x) + bi[n]) > 0) | (~live[n] & (bi[n] > 0))

    # "from this float on, g = value" pairs: each band float (exact); the first float after
    # each band, also one that holds no float (certain, unless it is a band float of a
    # neighbouring band); the range's start where it is no band float (certain)
    gap_k = ke + 1
    gap = banded.repeat(8) & (gap_k >= start_k[band_n]) & (gap_k <= end_k[band_n])
    gap_n, gap_k = band_n[gap], gap_k[gap]
    start_n = np.arange(H)
    pts_n = np.concatenate([gap_n, start_n])
    pts_k = np.concatenate([gap_k, start_k])
    code = pts_n << 33 | (pts_k + (1 << 31))
    at = np.minimum(np.searchsorted(both, code), max(len(both) - 1, 0))
    outside = (both[at] != code) if len(both) else np.ones(len(code), bool)
    pts_n, pts_k = pts_n[outside], pts_k[outside]
    pts_g = certain(pts_n, _floats(pts_k).astype(np.float64))
    pts_n = np.concatenate([neuron, pts_n])
    pts_k = np.concatenate([key, pts_k])
    pts_g = np.concatenate([ge, pts_g])
    order = np.lexsort((pts_k, pts_n))
    pts_n, pts_k, pts_g = pts_n[order], pts_k[order], pts_g[order]
    head = np.ones(len(pts_n), bool)
    head[1:] = pts_n[1:] != pts_n[:-1]
    g0 = np.zeros(H, np.int32)
    g0[pts_n[head]] = pts_g[head]
    flip = ~head
    flip[1:] &= pts_g[1:] != pts_g[:-1]
    fn, fk = pts_n[flip], pts_k[flip]
    # into the shared phase's space: fl(beta + phi) >= tau exactly where beta >= the least
    # float32 beta0 >= 0 with fl(beta0 + phi) >= tau (the float32 add is monotone in beta);
    # found by bisection over the keys of [0, fl(2 pi)]; none there: never reached
    ph_f, tau_x = ph32[fn], _floats(fk)
    top = int(_keys(np.float32(TWO_PI_32)))  # key of fl(2 pi)
    lo = np.zeros(len(fn), np.int64)  # key of +0
    hi = np.full(len(fn), top + 1)  # past fl(2 pi): never reached
    while (hi > lo).any():
        active = hi > lo
        mid = (lo + hi) // 2
        ok = (_floats(mid) + ph_f) >= tau_x  # float32 + float32: the plan's add
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
    keep = lo <= top
    # g0 = 1: one more point at 0 (every phase is >= 0)
    pn = np.concatenate([fn[keep], np.flatnonzero(g0)])
    pv = np.concatenate([_floats(lo[keep]), np.zeros(int(g0.sum()), np.float32)])
    per = np.bincount(pn, minlength=H)
    M = max(int(per.max()) if H else 0, MIN_ROWS)
    points = np.full((M, H), PAD, np.float32)
    order = np.lexsort((pv, pn))
    pn, pv = pn[order], pv[order]
    rank = np.arange(len(pn)) - (np.cumsum(per) - per)[pn]
    points[rank, pn] = pv
    return torch.from_numpy(points)


def shared_phase(t0: int, steps: int, omega: torch.Tensor, dtype, device=None) -> torch.Tensor:
    """beta_t for t = t0 .. t0 + steps - 1, (steps, K): omega t formed in float64 and reduced
    modulo 2 pi, then rounded to ``dtype`` (``RhythmicGate.preactivation``)."""
    t = torch.arange(t0, t0 + steps, device=device, dtype=torch.float64)
    return torch.remainder(t[:, None] * omega.double()[None], 2 * math.pi).to(dtype)
