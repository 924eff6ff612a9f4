"""Backend entry point of ``backend="triton"`` (see ``su_neuro.backends``).

The hooks of the backend contract (``kernels/contract.py``): :func:`recurrence` (same
signature and results as ``su_neuro.kernels.reference.recurrence``), :func:`unsupported` and
:func:`auto_pays`; the ``torch.autograd.Function`` around the kernels; and what the forward
and the backward share: the buffers they allocate and the kernels ``choose.kernels`` picks
(``rows.py``: a program per batch row; ``grid.py``: a step shared by a grid of programs;
``lif_feedforward.py``: the feed-forward LIF's streaming forward). docs/triton.md has the
design and the limits.
"""

from __future__ import annotations

import functools
import warnings

import torch

from ..contract import CELL_CODES, GATE_CODES, check_shapes, make_record
from . import choose, grid, lif_feedforward, rows
from ._common import Config, Grads, OpenLists, Operands, Sequences

__all__ = ["recurrence", "unsupported", "auto_pays"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------ hooks
def recurrence(cell, xp, h0, s0, w_hh, b_hh, gate, lif=None, record=False):
    """Triton implementation of :func:`su_neuro.kernels.reference.recurrence`.

    Shapes: xp (B, T, G), h0 (B, H), s0 (B, H) or None, w_hh (G, H) or None,
    b_hh (G,) or None; G = H (RNN, LIF) or 3H (GRU). Returns (out, h_T, s_T, rec) as the
    reference does; ``rec.delta`` of a LIF population is detached (the kernel's membranes),
    every other record field keeps its gradient (docs/core.md). A rhythmic gate whose values
    need a gradient computes candidates only where ``g = 1`` or ``gate.support`` is True;
    without a support (``None``) it computes every row (dense but exact).

    Example (any CUDA tensors; on a CPU only under ``TRITON_INTERPRET=1``):
        >>> from su_neuro.kernels.contract import GateInput
        >>> out, hT, _, _ = recurrence("rnn", xp, h0, None, w, b, GateInput("dense"))
    """
    gate = gate.materialized()  # a rhythm table: its rows
    _check(cell, xp, h0, s0, w_hh, b_hh, gate, lif)
    kind = gate.kind
    surr = gate.surrogate if kind == "event" else None
    cfg = Config(
        cell=cell,
        gate=kind,
        record=bool(record),
        threshold=float(lif.threshold) if lif is not None else 0.0,
        zero_reset=lif is not None and lif.reset == "zero",
        s_code=lif.spike.code if lif is not None else 0,
        s_scale=lif.spike.scale if lif is not None else 0.0,
        g_code=surr.code if surr is not None else 0,
        g_scale=surr.scale if surr is not None else 0.0,
        s_gain=lif.spike.gain if lif is not None else 1.0,
        g_gain=surr.gain if surr is not None else 1.0,
    )
    c = lambda x: x.contiguous() if x is not None else None  # noqa: E731
    gvals = c(gate.values) if kind == "rhythmic" else None
    theta = c(gate.values) if kind == "event" else None
    beta = c(lif.beta) if lif is not None else None
    support = getattr(gate, "support", None) if kind == "rhythmic" else None
    if support is not None:
        support = (support.detach() != 0).contiguous()
    res = _Recurrence.apply(cfg, c(xp), c(h0), c(s0), c(w_hh), c(b_hh), gvals, theta, beta, support)
    out, hT, sT = res[0], res[1], res[2]
    if cell != "lif":
        sT = None
    rec = None
    if record:
        # LIF: the saved membranes (B, T + 1, H), h0 first; RNN / GRU: the outputs are the states
        first, states = (res[3][:, 0], res[3][:, 1:]) if cell == "lif" else (h0, out)
        rec = make_record(gate, first, states, res[-1] if kind == "event" else None,
                          out if cell == "lif" else None)
    return out, hT, sT, rec


def unsupported(cell: str, gate_kind: str, dtype) -> str | None:
    """Why the Triton backend cannot run this combination, or None if it can."""
    if cell not in CELL_CODES:
        return f"backend 'triton' has no kernel for cell {cell!r}"
    if gate_kind not in GATE_CODES:
        return f"backend 'triton' has no kernel for gate {gate_kind!r}"
    if dtype not in _DTYPES:
        return f"backend 'triton' supports float32, float16 and bfloat16, not {dtype}"
    return None


def auto_pays(cell: str, batch: int, hidden: int, *, gate_kind: str | None = None, rate: float | None = None,
              training: bool = False, **_) -> bool:
    """Whether ``backend="auto"`` picks Triton over the torch reference on CUDA tensors (one
    H200, docs/triton.md): LIF always; RNN / GRU with a rhythmic or dense gate where
    :data:`choose.MEASURED` has a Triton kernel faster than the reference at the nearest
    measured (batch, width, update rate, mode) — ``rate`` is the call's open fraction,
    1.0 when unknown; with the event gate (or a stack mixing gate kinds) up to H = 512
    (the 2026-11-28 table)."""
    if cell == "lif":
        return True
    if gate_kind not in ("rhythmic", "dense", None):  # event gate, or a stack of mixed kinds
        return hidden <= 512
    r = 1.0 if rate is None else rate
    return choose.fastest(batch, hidden, r, training) != "torch"


# ------------------------------------------------------------------ autograd Function
class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, support):
        needs = ctx.needs_input_grad
        gate_grad = cfg.gate == "rhythmic" and needs[6]
        mask = dg_mask = None
        if cfg.gate == "rhythmic":
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
        x = Operands(xp, w_hh, b_hh, gvals, theta, beta)
        seq, grec = _forward(cfg, x, h0, s0, mask, any(needs))
        T = xp.shape[1]
        out = (seq.ss if cfg.cell == "lif" else seq.hs)[:, 1:]
        hT = seq.hs[:, T].clone()
        sT = seq.ss[:, T].clone() if seq.ss is not None else None
        ctx.cfg = cfg
        ctx.gate_grad = gate_grad
        ctx.set_materialize_grads(False)  # None, not zeros, for an output without a gradient
        ctx.save_for_backward(xp, w_hh, gvals, theta, beta, seq.hs, seq.ss, seq.gh, dg_mask)
        aux = [seq.hs] if cfg.record and cfg.cell == "lif" else []
        if aux:  # the LIF membranes: detached (one call: each call replaces the set marked)
            ctx.mark_non_differentiable(*aux)
        if grec is not None:  # the event gate's record keeps its surrogate gradient
            aux.append(grec)
        return (out, hT, sT, *aux)

    @staticmethod
    def backward(ctx, dout, dhT, dsT, *daux):
        cfg = ctx.cfg
        xp, w_hh, gvals, theta, beta, hs, ss, gh, dg_mask = ctx.saved_tensors
        B, T, G = xp.shape
        H = hs.shape[2]
        if dout is None:
            dout = torch.zeros(B, T, H, device=xp.device, dtype=torch.float32)
        dout = dout.contiguous()
        dhT = torch.zeros(B, H, device=xp.device) if dhT is None else dhT
        if cfg.cell == "lif":
            dsT = torch.zeros(B, H, device=xp.device) if dsT is None else dsT
        needs = ctx.needs_input_grad
        dgrec = daux[-1] if cfg.record and cfg.gate == "event" else None
        dgrec = dgrec.float().contiguous() if dgrec is not None else None
        g, dw = _backward(cfg, Operands(xp, w_hh, None, gvals, theta, beta), Sequences(hs, ss, gh), dout, dhT,
                          dsT, ctx.gate_grad, dg_mask, w_hh is not None and needs[4], dgrec)
        db = None
        if w_hh is not None and needs[5]:  # dgh's r and z sections are dxp's
            db = torch.cat([g.dxp[:, :, : G - H].sum((0, 1)), g.dgh[:, :, G - H :].sum((0, 1))]).to(w_hh.dtype)
        if dw is not None:  # the kernel's per-block sums over the open rows
            dw = dw.sum(0).to(w_hh.dtype)
        elif w_hh is not None and needs[4]:  # one GEMM over every row and step
            if cfg.cell == "gru":
                g.dgh[:, :, : 2 * H] = g.dxp[:, :, : 2 * H]
            prev = (ss if cfg.cell == "lif" else hs)[:, :T].reshape(B * T, H).float()
            dw = (g.dgh.reshape(B * T, G).t() @ prev).to(w_hh.dtype)
        dgv = g.dg.sum(0).to(gvals.dtype) if g.dg is not None else None
        dtheta = g.dth.sum(0).to(theta.dtype) if cfg.gate == "event" and needs[7] else None
        dbt = g.dbeta.sum(0).to(beta.dtype) if cfg.cell == "lif" and needs[8] else None
        ds0 = g.cs.to(xp.dtype) if g.cs is not None and needs[3] else None
        return (None, g.dxp.to(xp.dtype), g.ch.to(xp.dtype), ds0, dw, db, dgv, dtheta, dbt, None)


# --------------------------------------------------------------- buffers and kernels
def _on_its_device(fn):
    """Runs ``fn(cfg, x, ...)`` with the CUDA device of ``x.xp`` current: Triton launches on
    the current device, which need not be the tensors' (a model on cuda:1 while cuda:0 is
    current would launch on cuda:0, with cuda:0's SM count). A no-op on the CPU."""

    @functools.wraps(fn)
    def wrapped(cfg, x, *args, **kwargs):
        with torch.cuda.device_of(x.xp):
            return fn(cfg, x, *args, **kwargs)

    return wrapped


def _grid_launch(launch, *args) -> tuple[bool, object]:
    """Runs a multi-program launcher: (True, what it returns), or (False, None) where CUDA
    refused its cooperative grid (more programs than the device holds at once: other tiles
    than measured, a GPU shared under MPS), with a warning the first time; the caller then
    runs the per-row kernels (the refusal comes before anything runs, and both kernels use
    the same buffers in the same layout)."""
    global _REFUSED
    try:
        return True, launch(*args)
    except RuntimeError as err:
        if "cooperative" not in str(err).lower():
            raise
        if not _REFUSED:
            warnings.warn(f"the GPU refused the multi-program kernels' grid ({str(err).strip()}); the per-row "
                          "kernels run such calls instead (su_neuro.kernels.triton.grid.ENABLED = False leaves the "
                          "multi-program kernels out)", RuntimeWarning, stacklevel=2)
        _REFUSED = True
        return False, None


_REFUSED = False  # a cooperative grid was refused in this process (warned once)


def _open_lists(mask: torch.Tensor):
    """Compacted open set of a (T, H) mask: :class:`OpenLists` and the fraction of entries
    set (from the size of ``nonzero``'s result: no further sync)."""
    m = mask != 0
    idx = m.nonzero()[:, 1].to(torch.int32)
    rate = idx.numel() / max(1, m.numel())
    off = torch.zeros(m.shape[0] + 1, dtype=torch.int32, device=m.device)
    off[1:] = m.sum(1).cumsum(0).to(torch.int32)
    if idx.numel() == 0:
        idx = torch.zeros(1, dtype=torch.int32, device=m.device)
    return OpenLists(idx.contiguous(), off), rate


@_on_its_device
def _forward(cfg: Config, x: Operands, h0, s0, mask, save: bool):
    """Allocates the forward's sequences and runs the kernels that fit the call; returns
    (:class:`Sequences`, the event gate's record (B, T, H) or None). ``mask`` (T, H): a
    rhythmic gate's rows to compute; ``save``: whether a backward follows (keeps ``gh``)."""
    B, T, G = x.xp.shape
    H = h0.shape[1]
    dev, dt = x.xp.device, x.xp.dtype
    hs = torch.empty(B, T + 1, H, device=dev, dtype=dt)
    hs[:, 0] = h0
    ss = None
    if cfg.cell == "lif":
        ss = torch.empty(B, T + 1, H, device=dev, dtype=dt)
        ss[:, 0] = s0
    grec = torch.empty(B, T, H, device=dev, dtype=dt) if (cfg.record and cfg.gate == "event") else None
    recurrent = x.w_hh is not None
    lists, rate = _open_lists(mask) if cfg.gate == "rhythmic" else (None, 1.0)
    eligible = grid.eligible(cfg.cell, cfg.gate, x.w_hh, B, dev, rate, save)
    kernels = choose.kernels(cfg.cell, cfg.gate, recurrent, eligible)
    gh = None
    if save and recurrent:  # zero on the rows a rhythmic gate leaves out (read by the backward)
        gh = (torch.zeros if cfg.gate == "rhythmic" else torch.empty)(B, T, G, device=dev, dtype=torch.float32)
    seq = Sequences(hs, ss, gh)
    if kernels == "lif_feedforward":
        lif_feedforward.launch_fwd(cfg, x, seq, grec)
    elif kernels != "grid" or not _grid_launch(grid.launch_fwd, cfg, x, seq, mask, lists, grec)[0]:
        rows.launch_fwd(cfg, x, seq, lists, grec)
    return seq, grec


@_on_its_device
def _backward(cfg: Config, x: Operands, seq: Sequences, dout, dhT, dsT, need_dg: bool, dg_mask,
              need_dw: bool = False, dgrec=None):
    """Allocates the backward's buffers, runs the kernels that fit the call and returns them
    (:class:`Grads`: ``ch`` then holds dL/dh0, ``cs`` dL/ds0) with dL/dU where the kernels
    formed it (``need_dw`` and multi-program tiles with ``dw``: (NB, G, H) fp32, one sum per
    batch block), else None. ``dout`` (B, T, H), ``dhT``, ``dsT`` (B, H): the incoming
    gradients; ``need_dg``: whether the rhythmic gate's values need one; ``dg_mask`` (T, H)
    int8: where the forward computed candidates (None: all); ``dgrec`` (B, T, H) fp32: the
    event gate's incoming gradient through its record, or None. A GRU's ``dgh`` holds only
    the n section (r and z are dxp's)."""
    B, T, G = x.xp.shape
    H = seq.hs.shape[2]
    f32 = dict(device=x.xp.device, dtype=torch.float32)
    dxp = torch.empty(B, T, G, **f32)
    g = Grads(
        ch=dhT.float().contiguous().clone(),
        cs=dsT.float().contiguous().clone() if cfg.cell == "lif" else None,
        dirb=torch.empty(B, H, **f32),
        dxp=dxp,
        dgh=torch.empty(B, T, G, **f32) if cfg.cell == "gru" else dxp,
        dg=torch.empty(B, T, H, **f32) if need_dg else None,
        dth=torch.zeros(B, H, **f32) if cfg.gate == "event" else None,
        dbeta=torch.zeros(B, H, **f32) if cfg.cell == "lif" else None,
    )
    lists, rate = _open_lists(x.gvals) if cfg.gate == "rhythmic" else (None, 1.0)
    if grid.eligible(cfg.cell, cfg.gate, x.w_hh, B, x.xp.device, rate, True):
        launched, dw = _grid_launch(grid.launch_bwd, cfg, x, seq, dout, lists, dg_mask, g, need_dw, dgrec)
        if launched:
            return g, dw
    rows.launch_bwd(cfg, x, seq, dout, lists, dg_mask, g, dgrec)
    return g, None


# ------------------------------------------------------------------------ arguments
def _check(cell, xp, h0, s0, w_hh, b_hh, gate, lif) -> None:
    if cell not in CELL_CODES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(CELL_CODES)}")
    if gate.kind not in GATE_CODES:
        raise ValueError(f"unknown gate kind {gate.kind!r}; valid: {', '.join(GATE_CODES)}")
    support = getattr(gate, "support", None) if gate.kind == "rhythmic" else None
    check_shapes(cell, xp, h0, s0=s0, w_hh=w_hh, b_hh=b_hh, rows=gate.values if gate.kind == "rhythmic" else None,
                 support=support, threshold=gate.values if gate.kind == "event" else None,
                 beta=lif.beta if cell == "lif" and lif is not None else None)
    T = xp.shape[1]
    if T < 1:
        raise ValueError("xp has T = 0 steps")
    tensors = {"xp": xp, "h0": h0, "s0": s0, "w_hh": w_hh, "b_hh": b_hh}
    for name, x in tensors.items():
        if x is None:
            continue
        if x.device != xp.device or x.dtype != xp.dtype:
            raise TypeError(f"{name} is {x.dtype} on {x.device}; xp is {xp.dtype} on {xp.device}")
    if w_hh is None and cell != "lif":
        raise ValueError(f"{cell} needs recurrent weights w_hh")
    if cell == "lif":
        if lif is None or s0 is None:
            raise ValueError("lif needs LIFParams and initial spikes s0")
        if lif.reset not in ("subtract", "zero"):
            raise ValueError(f"unknown reset {lif.reset!r}; valid resets: subtract, zero")
    if support is not None:
        if support.device != xp.device:
            raise TypeError(f"gate support is on {support.device}; xp is on {xp.device}")
    if gate.kind == "event":
        if gate.surrogate is None:
            raise ValueError("event gate needs its surrogate")
