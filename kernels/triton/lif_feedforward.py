r"""Feed-forward LIF forward (no recurrent weights; dense or event gate) as a streaming kernel.

Without recurrent weights the neurons do not interact, so the whole population is an
elementwise recurrence over time: per neuron and step, read the input current I_t,
update the membrane, write v_t and the spike s_t (the equations of
``kernels/reference.py``; ``rows._fwd_kernel`` computes the same with its generic
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

from ._common import DENSE, EVENT, LAUNCH_OPTIONS, Config, Operands, Sequences, dummy, event_gate, lif_candidate

__all__ = ["BLOCK", "T_TILE", "launch_fwd"]

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
    if GATE == EVENT:
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
            _rho, f = lif_candidate(beta, v, i, threshold, ZERO_RESET)
            if GATE == DENSE:
                g = tl.full([BLOCK], 1.0, tl.float32)
                hn = f
            else:
                d = f - v
                g = event_gate(d, theta)
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


def launch_fwd(cfg: Config, x: Operands, seq: Sequences, grec) -> None:
    """Fills ``seq.hs[:, 1:]``, ``seq.ss[:, 1:]`` (and ``grec`` (B, T, H), the record of an event
    gate, where given) from ``x.xp`` and ``seq.hs[:, 0]``."""
    B, T, H = x.xp.shape
    if T == 0:
        return
    d = dummy(x.xp.device)
    block, t_tile, warps = TILES if TILES is not None else (BLOCK, T_TILE, WARPS)
    _lif_ff_fwd_kernel[(B, triton.cdiv(H, block))](
        xp_ptr=x.xp, theta_ptr=x.theta if x.theta is not None else d, beta_ptr=x.beta, hs_ptr=seq.hs,
        ss_ptr=seq.ss, grec_ptr=grec if grec is not None else d, T=T, H=H, threshold=cfg.threshold,
        GATE=cfg.gate_code, RECORD=grec is not None, ZERO_RESET=cfg.zero_reset, BLOCK=block, T_TILE=t_tile,
        num_warps=warps, **LAUNCH_OPTIONS,
    )
