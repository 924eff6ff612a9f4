r"""Feed-forward LIF forward (no recurrent weights; dense or event gate) as a streaming kernel.

Without recurrent weights the neurons do not interact, so the whole population is an
elementwise recurrence over time: per neuron and step, read the input current I_t,
update the membrane, write v_t and the spike s_t (the equations of
``kernels/reference.py``; ``recurrence._fwd_kernel`` computes the same with its generic
row loop). That is 12 bytes of compulsory traffic per neuron-step in fp32, so the kernel
should run at the card's memory bandwidth, and the work is arranged for that:

* grid (B, ceil(H / BLOCK)): a program owns BLOCK neurons of one batch row for all T
  steps and keeps their membrane in registers (no state round trip through memory, no
  barrier between steps);
* the input current of T_TILE steps is loaded as one (T_TILE, BLOCK) tile before any of
  them is used, so a program has T_TILE loads in flight instead of one dependent load per
  step, and v, s (and the event record) are written back as (T_TILE, BLOCK) tiles. Within
  the tile, step u takes its row out of the registers by a masked sum over the tile's
  time axis. One warp of 32 threads per program, two neurons per thread: each thread holds
  its neurons' 8 steps, so that sum stays inside the thread (no shuffles, no shared
  memory). One-warp programs give the occupancy that keeps loads in flight: on an H200
  (docs/triton.md) 64 neurons x 8 steps ran at 86 % of the copy bandwidth, 32 x 16 at
  73 %, and two or more warps per program at 14-47 %.

The membrane is rounded to the state dtype after each step (the reference keeps its
state sequence in the input dtype); the spike is taken from the unrounded value, as in
the generic kernel.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import LAUNCH_OPTIONS

__all__ = ["launch_lif_ff_fwd", "BLOCK", "T_TILE"]

BLOCK = 64  # neurons per program: one warp, two neurons per thread
T_TILE = 8  # steps whose input current one tile load fetches
WARPS = 1
#: (BLOCK, T_TILE, WARPS) to use instead of the defaults above (the benchmark's sweep sets it)
TILES: tuple[int, int, int] | None = None


@triton.jit
def _lif_ff_fwd_kernel(
    xp_ptr, theta_ptr, beta_ptr, hs_ptr, ss_ptr, grec_ptr,
    T, H, threshold,
    GATE: tl.constexpr, RECORD: tl.constexpr, ZERO_RESET: tl.constexpr,
    BLOCK: tl.constexpr, T_TILE: tl.constexpr,
):
    # xp (B, T, H) input current; hs, ss (B, T+1, H) membrane / spike sequences, row 0 the
    # initial state (read here: hs only); grec (B, T, H) event-gate record.
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    jm = j < H
    r = tl.arange(0, T_TILE)
    beta = tl.load(beta_ptr + j, mask=jm, other=0.0).to(tl.float32)
    beta = tl.minimum(tl.maximum(beta, 0.0), 1.0)
    theta = tl.zeros([BLOCK], tl.float32)
    if GATE == 2:
        theta = tl.load(theta_ptr + j, mask=jm, other=0.0).to(tl.float32)
    v = tl.load(hs_ptr + b * (T + 1) * H + j, mask=jm, other=0.0).to(tl.float32)
    for t0 in range(0, T, T_TILE):
        t = t0 + r
        m2 = (t < T)[:, None] & jm[None, :]
        x_off = (b * T + t)[:, None] * H + j[None, :]
        cur = tl.load(xp_ptr + x_off, mask=m2, other=0.0).to(tl.float32)
        v_tile = tl.zeros([T_TILE, BLOCK], tl.float32)
        s_tile = tl.zeros([T_TILE, BLOCK], tl.float32)
        g_tile = tl.zeros([T_TILE, BLOCK], tl.float32)
        for u in tl.static_range(T_TILE):
            sel = (r == u)[:, None]
            i = tl.sum(tl.where(sel, cur, 0.0), axis=0)
            rho = tl.where(v > threshold, 1.0, 0.0)
            if ZERO_RESET:
                f = beta * (1.0 - rho) * v + i
            else:
                f = beta * v + i - rho * threshold
            if GATE == 0:
                g = tl.full([BLOCK], 1.0, tl.float32)
                hn = f
            else:
                d = f - v
                g = tl.where(tl.abs(d) - theta > 0, 1.0, 0.0)
                hn = v + g * d
            s = g * tl.where(hn - threshold > 0, 1.0, 0.0)
            v = hn.to(hs_ptr.dtype.element_ty).to(tl.float32)
            v_tile = tl.where(sel, v[None, :], v_tile)
            s_tile = tl.where(sel, s[None, :], s_tile)
            if RECORD:
                g_tile = tl.where(sel, g[None, :], g_tile)
        s_off = (b * (T + 1) + 1 + t)[:, None] * H + j[None, :]
        tl.store(hs_ptr + s_off, v_tile, mask=m2)
        tl.store(ss_ptr + s_off, s_tile, mask=m2)
        if RECORD:
            tl.store(grec_ptr + x_off, g_tile, mask=m2)


def launch_lif_ff_fwd(cfg, xp, hs, ss, theta, beta, grec, record, dummy):
    """Fills hs[:, 1:], ss[:, 1:] (and grec for a recorded event gate) from xp and hs[:, 0]."""
    B, T, H = xp.shape
    event = cfg["gate"] == "event"
    if T == 0:
        return
    block, t_tile, warps = TILES if TILES is not None else (BLOCK, T_TILE, WARPS)
    _lif_ff_fwd_kernel[(B, triton.cdiv(H, block))](
        xp, theta if event else dummy, beta, hs, ss, grec if (record and event) else dummy,
        T, H, cfg["threshold"],
        GATE=2 if event else 0, RECORD=record and event, ZERO_RESET=cfg["zero_reset"],
        BLOCK=block, T_TILE=t_tile, num_warps=warps, **LAUNCH_OPTIONS,
    )  # fmt: skip

