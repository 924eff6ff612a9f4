r"""The Numba CPU backend: ``recurrence`` with the signature and semantics of
:func:`su_neuro.kernels.reference.recurrence`, forward and every gradient.

How the work follows activity
-----------------------------
* **Rhythmic gate, RNN/GRU** — the open set of step t is batch uniform and known before
  the data: it is compacted once per sequence (``compact.compact``: per-step index lists
  with prefix-sum offsets; B = 1 inference scans each step's gate row in the kernel
  instead). Only listed neurons compute a candidate, k_t·G_rows·H
  multiply-adds per step instead of G·H; everything else passes state through untouched.
* **Event gate, RNN/GRU** — every neuron needs its candidate (the gate looks at it), but
  the state changes only where the gate opened, so the recurrent input u = U h is carried
  forward by delta accumulation: ``u += U[:, j] * (h_j' - h_j)`` for the changed neurons
  only, k_t·G per step. u is held in float64 and recomputed exactly every ``REFRESH``
  steps. Drift bound: each update adds one float64 rounding of relative size
  :math:`\epsilon_{64} = 1.1\cdot10^{-16}` to a term bounded by
  :math:`|U|_{max}\,|\Delta h|_{max}`, so between two refreshes
  :math:`|u_{acc} - U h| \le 2\,\epsilon_{64}\,R\,H\,|U|_{max}\,|\Delta h|_{max}`
  (:math:`\approx 2\cdot10^{-10}` for R = 4096, H = 512, |U| ≤ 1, |Δh| ≤ 2), far below the
  float32 rounding of u itself (:math:`6\cdot10^{-8}|u|`): the float32 result is the same
  as with an exact U h (tested at T = 100,000).
* **LIF** — the recurrent current V s is rebuilt each step from the list of the previous
  step's spikes (binary and sparse): n_spikes·H per step, exact, no accumulated drift.
  With a rhythmic gate and few open neurons only their rows are gathered (k_t·n_spikes).
* Dense gate: the same kernels over all neurons.
* **Streaming, B = 1, RNN/GRU, rhythmic or dense gate** (``split``): with one
  sample the batch-chunk kernels run on one thread, and the GRU's W_hh (3H x H float32,
  3 MiB at H = 512) outgrows one core's L2 (1-2 MiB). When nothing is saved (no gradient
  needed; a record of an RNN/GRU with these gates needs no saves), B == 1, Numba has >= 2
  threads and each step has enough work (``choose.split_tasks``), the neurons are split into
  contiguous blocks, one per thread (fixed blocks; each task scans its block of the gate
  row for the open neurons, so that path needs no compaction); in each step task k
  computes block k's open neurons from h_{t-1}, read from the previous output row (the
  outputs are the state), so each thread mostly keeps its slice of W_hh in its own L2,
  read from a copy in huge pages on long streams. Steps are synchronised by per-task
  claim / done words (compare-and-swap, acquire / release): a worker runs its own task,
  then waits (spinning, then sched_yield) until every task of the step is done, and takes
  over a task whose owner has not claimed it after ``split.STEAL`` polls; a late,
  descheduled or absent thread never deadlocks a step. Same arithmetic as the batch-chunk
  kernel: bit-identical results.

* **Input projection inside the kernel (inference)** (``recurrence_input``): the layer
  calls it first; in inference of RNN/GRU with a rhythmic or dense gate and small thread
  chunks, the kernels compute W_ih x_t + b_ih themselves (``_common.step_input``) for the
  neurons that update only, instead of reading a dense (B, T, G) projection made beforehand.
  At 10 % open that skips 90 % of the projection, and its 61 MB array at B = 1, H = 512,
  T = 10,000, F = 16 (25-28 ms of a 119 ms run, and a cache miss per gate row read).

Backward (BPTT in Numba, one pass per sample, parallel over batch chunks)
--------------------------------------------------------------------------
A closed step passes the gradient through unchanged (no work). A candidate's Jacobian is
applied only where the blend's gradient dd is non-zero: g = 1, or, for the event gate,
where the gate surrogate σ'(|d| − θ) ≠ 0. The rhythmic gate's own gradient
dL/dg_{t,i} = Σ_b λ_{t,i}·d_{t,i} needs d = f − h at every (t, i) where the gate's surrogate
is non-zero; the backend computes d there in the forward pass (candidate only, no Jacobian).
The kernel cannot see the rhythmic gate's pre-activation: when the gate values require a
gradient it takes the support from ``gate.support`` ((T, H) bool, σ'(a) ≠ 0) if the
GateInput carries one, else computes d at every closed entry (dense candidate work,
sparse Jacobian work). Cost per surrogate (event gate, and rhythmic with a support):
``triangle`` / ``rectangle`` (compact support) — work ∝ open + near-threshold entries;
``atan``, ``fast_sigmoid``, ``sigmoid``, ``straight_through`` — every entry has a non-zero
derivative, so training work is dense in time (inference stays sparse).

Batched training (rhythmic / dense RNN and GRU, every thread chunk at least the least
chunk of ``choose.use_gemm``: 8 samples; with a dense gate 16 for a GRU of H >= 512, 2 for
an RNN of H < 512): each step runs as BLAS GEMMs over the step's gathered compute rows
(``gemm.forward`` / ``gemm.backward``, scipy's OpenBLAS through Numba's ``np.dot``, held
to one thread per Numba thread with threadpoolctl; without scipy or threadpoolctl the
block kernels run), and saves only the computed entries, compact (nnz, B).

Saved for backward: the state sequence (it is the output), d, the gate (event), GRU
r, z, n, hn; dense (B, T, H) arrays of which only the computed entries are written
(compact (nnz, B) arrays on the GEMM path; no d for the dense gate there).

Records: ``StepRecord.gate`` carries the rhythmic gate's gradient (it is the gate row
expanded) and the event gate's (the backward takes the record's incoming gradient);
RNN / GRU ``delta`` and LIF ``spike`` are the outputs' (differentiable); LIF ``delta`` is
detached (the kernel's membranes).

Layers: ``choose.choose_kernel`` picks the variant (a pure function of the sizes); the
launchers here allocate the outputs and saves and call the variant's parallel driver with a
few argument bundles (``_common``: ``Source``, ``Weights``, ``Gate``, ``Saved``, ``Grads``):
``event`` (event gate), ``rows`` (rhythmic / dense, 4-sample row blocks), ``gemm``
(batched training), ``split`` (B = 1 streams over neuron blocks) and ``lif``; ``_common``
holds their shared device helpers, ``compact`` the compaction of the gate rows.

Supported dtype: float32 (float64 / float16: use backend="torch").
"""

from __future__ import annotations

import numpy as np
import torch

from ..buffers import huge_copy, pooled
from ..contract import DENSE, EVENT, GATE_CODES, RHYTHMIC, check_shapes, make_record, mask_record
from . import choose
from . import event as _event
from . import gemm as _gemm
from . import lif as _lif
from . import rows as _rows
from . import split as _split
from ._common import FUSED_DOTS, Gate, Grads, Saved, Source, Weights, start_threads, threads
from .choose import auto_pays, unsupported
from .compact import compact

__all__ = ["recurrence", "recurrence_input", "rhythm_table", "ragged", "unsupported", "auto_pays", "REFRESH"]

RAGGED_KERNELS = ("gemm", "event", "lif")  # the kernels that take lengths (:func:`ragged`)
REFRESH = 4096  # exact recompute of the delta-accumulated U h every REFRESH steps

_F32 = np.float32

_BLAS = None  # threadpoolctl controller of the loaded OpenBLAS libraries; False: no GEMM path


def _blas_ready() -> bool:
    """Whether the GEMM path can run.

    Numba's ``np.dot`` calls scipy's OpenBLAS; inside our prange threads it must run on
    one thread (its own thread pool otherwise spins against Numba's: 10-50x slower and
    "Detect OpenMP Loop" warnings), which needs threadpoolctl. Without scipy or
    threadpoolctl the 4-sample-block kernels run instead.
    """
    global _BLAS
    if _BLAS is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba binds to)
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(internal_api="openblas")
        except ImportError:
            _BLAS = False
    return _BLAS is not False


def _stream_weights(W: np.ndarray, is_gru: bool, steps: int) -> np.ndarray:
    """W_hh as the B = 1 inference kernels read it: where ``choose.huge_weights`` says so a
    copy in huge pages, a GRU's packed per neuron ((H, 3H): a neuron's r, z, n rows in one
    run; ``_common.packed_gru``, same bits); else W itself."""
    if not choose.huge_weights(steps, W.nbytes):
        return W
    H = W.shape[1]
    return huge_copy(W.reshape(3, H, H).transpose(1, 0, 2) if is_gru else W).reshape(H, -1)


def _pack_rows(w_ih: np.ndarray, H: int) -> np.ndarray:
    """A GRU's W_ih (3H, F) packed per neuron, (H, 3F): neuron i's r, z and n rows in one
    run (``_common.step_input`` reads either layout, same bits). One 3-line run instead of
    three lines 64·F bytes apart: split kernel x0.93-0.97 at H = 512, 10 %, F = 16."""
    F = w_ih.shape[1]
    if H == 0 or F == 0:
        return w_ih
    return np.ascontiguousarray(w_ih.reshape(3, H, F).transpose(1, 0, 2)).reshape(H, 3 * F)


def _np(t: torch.Tensor | None, shape=None) -> np.ndarray:
    if t is None:
        return np.zeros(shape, _F32)
    return t.detach().contiguous().numpy()


def _dummy(ndim: int) -> np.ndarray:
    return np.zeros((1,) * ndim, _F32)


# ------------------------------------------------------------------- choose, gate


def _choose(cfg: dict, B: int, T: int, H: int, save: bool, gv: np.ndarray, table) -> choose.Variant:
    """``choose.choose_kernel`` with this process's thread count and BLAS; the split rule's
    open count comes from the table, or from the first SPLIT_SAMPLE steps' gate rows."""

    def opened() -> int:
        if table is not None:
            return table.open_count()
        head = gv[: min(T, choose.SPLIT_SAMPLE)]
        return int(np.count_nonzero(head)) * T // head.shape[0]

    return choose.choose_kernel(cfg["cell"], cfg["kind"], B, H, T, save, threads=threads(),
                                blas=_blas_ready(), opened=opened)  # fmt: skip


def _gate(cfg: dict, variant: choose.Variant, gv: np.ndarray, theta, gate_grad: bool) -> Gate:
    """The kernels' ``Gate``: rows compacted where the variant wants lists (with the
    surrogate's support, or every entry, where the gate values need a gradient)."""
    off, idx = np.zeros(1, np.int64), np.zeros(1, np.int32)
    if variant.compact:
        support = None
        if gate_grad:
            support = cfg["support"]
            if support is None:  # the gate's support is unknown: every closed entry
                support = np.ones(gv.shape, np.bool_)
        off, idx = compact(gv, support)
    sur = cfg["gate_surrogate"]
    code, scale, gain = (sur.code, sur.scale, sur.gain) if sur is not None else (0, 0.0, 1.0)
    th = _np(theta) if cfg["kind"] == "event" else _dummy(1)
    return Gate(GATE_CODES[cfg["kind"]], gv, off, idx, th, code, scale, REFRESH, gain)


# -------------------------------------------------------------- allocate and launch


def _saves(variant: choose.Variant, is_gru: bool, gk: int, B: int, T: int, H: int, nnz: int, save: bool) -> Saved:
    """Saved arrays: (B, T, H), or compact (nnz, B) on the GEMM path; placeholders where unused."""
    if variant.kernel == "gemm":
        full = lambda on: np.empty((nnz, B), _F32) if (save and on) else _dummy(2)  # noqa: E731
    else:
        full = lambda on: np.empty((B, T, H), _F32) if (save and on) else _dummy(3)  # noqa: E731
    d = full(gk != DENSE or variant.kernel != "gemm")  # (dense, block kernels: written, unused)
    return Saved(bool(save), d, full(not is_gru), *(full(is_gru) for _ in range(4)), full(gk == EVENT))


def _forward_rnn(ctx, cfg, variant, gate, table, save, xp_n, h0_n, w_hh, b_hh, proj):
    """RNN/GRU: allocate, launch the variant; returns (out, hT, the event gate's values)."""
    x, w_ih, b_ih = proj
    is_gru = cfg["cell"] == "gru"
    B, H = h0_n.shape
    T = x.shape[1] if x is not None else xp_n.shape[1]
    W = _np(w_hh)
    G = W.shape[0]
    WT = np.ascontiguousarray(W.T) if gate.kind == EVENT else _dummy(2)
    bias = _np(b_hh, (G,))
    out = pooled((B, T, H), _F32)  # returned to the caller as a tensor
    hT = np.empty((B, H), _F32)
    nnz = T * H if gate.kind == DENSE else int(gate.off[-1])
    saved = _saves(variant, is_gru, gate.kind, B, T, H, nnz, save)
    src = Source(0, xp_n, _dummy(3), _dummy(2), _dummy(1))
    ctx.proj = None
    if x is not None:
        assert variant.kernel == "gemm" or not save, "a fused input projection trains on the GEMM path only"
        x_n, wih_n = _np(x), _np(w_ih)
        # the B = 1 inference kernels read a GRU's W_ih packed per neuron
        wih_k = _pack_rows(wih_n, H) if is_gru and variant.stream else wih_n
        gate_name = "dense" if gate.kind == DENSE else "rhythmic"
        dots = variant.kernel == "gemm" and choose.fused_dots(gate_name, x_n.shape[2])
        mode = FUSED_DOTS if dots else 1
        src = Source(mode, _dummy(3), x_n, wih_k, _np(b_ih, (G,)))
        ctx.proj = Source(mode, _dummy(3), x_n, wih_n, _dummy(1))  # for the backward
    weights = Weights(_stream_weights(W, is_gru, T) if variant.stream else W, WT, bias)
    C = variant.chunks
    if variant.kernel == "split":
        workers = (variant.tasks, variant.tasks, _split.SPIN)
        _split.forward(is_gru, src, h0_n, weights, gate, _split.rhythm_args(table), workers, out, hT)
    elif variant.kernel == "gemm":
        with _BLAS.limit(limits=1):
            _gemm.forward(is_gru, src, h0_n, weights, gate, ctx.ragged, C, out, hT, saved)
    elif variant.kernel == "event":
        _event.forward(is_gru, xp_n, h0_n, weights, gate, ctx.ragged[0], C, out, hT, saved)
    else:
        _rows.forward(is_gru, src, h0_n, weights, gate, C, out, hT, saved)
    ctx.np_saved = (h0_n, out, W, saved)
    return out, hT, saved.g if (save and gate.kind == EVENT) else None


def _forward_lif(ctx, cfg, gate, save, xp_n, h0_n, s0, w_hh, b_hh, beta):
    """LIF: allocate, launch; returns (spikes, membrane hT, membrane sequence, gate values)."""
    B, T, H = xp_n.shape
    lif = cfg["lif"]
    recurrent = w_hh is not None
    V = _np(w_hh) if recurrent else _dummy(2)
    # V^T (the column pass over the previous step's spikes) is read only at steps
    # whose compute set has >= H/4 neurons (lif.py: "rowwise" otherwise): a sparse
    # rhythmic gate never needs the (H, H) transposed copy (4 ms at H = 1024)
    rowwise = gate.kind == RHYTHMIC and T > 0 and int(np.diff(gate.off).max()) * 4 < H
    VT = np.ascontiguousarray(V.T) if recurrent and not rowwise else V
    bias = _np(b_hh, (H,)) if recurrent else np.zeros(H, _F32)
    cell = _lif.Cell(recurrent, lif.reset == "zero", float(lif.threshold), lif.spike.code, lif.spike.scale,
                     V, VT, bias, _np(beta), lif.spike.gain)  # fmt: skip
    s0_n = _np(s0, (B, H))
    out = np.zeros((B, T, H), _F32)
    hT = np.empty((B, H), _F32)
    gated = save and gate.kind != DENSE
    gated_or_dummy = lambda: np.empty((B, T, H), _F32) if gated else _dummy(3)  # noqa: E731
    hseq = np.empty((B, T, H), _F32) if save else _dummy(3)
    saved = _lif.Saved(bool(save), hseq, gated_or_dummy(), gated_or_dummy())
    _lif.forward(cell, xp_n, h0_n, s0_n, gate, ctx.ragged[0], ctx.variant.chunks, out, hT, saved)
    ctx.np_saved = (h0_n, out, cell, s0_n, saved)
    return out, hT, hseq if save else None, saved.g if gated else None


def _tensor(a: np.ndarray | None) -> torch.Tensor:
    return torch.from_numpy(a) if a is not None else torch.empty(0)


def _sum(a: np.ndarray, on: bool) -> torch.Tensor | None:
    """The per-chunk gradient buffer ``a`` summed over its chunks, where needed."""
    return torch.from_numpy(a.sum(0)) if on else None


def _backward_rnn(ctx, need, upstream, dh0, dg, dth):
    """RNN/GRU BPTT; returns (dxp, dW, db, dx, dw_ih, db_ih) (None where not needed)."""
    h0_n, out, W, saved = ctx.np_saved
    B, T, H = out.shape
    G = W.shape[0]
    C = ctx.variant.chunks
    is_gru = ctx.cfg["cell"] == "gru"
    src = ctx.proj
    if src is None:
        src = Source(0, _dummy(3), _dummy(3), _dummy(2), _dummy(1))
        inputs = (np.zeros((B, T, G), _F32), _dummy(3), _dummy(3), _dummy(2))
    else:
        Fin = src.x.shape[2]
        inputs = (_dummy(3), np.zeros((B, T, Fin), _F32), np.zeros((C, G, Fin), _F32), np.zeros((C, G), _F32))
    dxp, dx, dwih, dbih = inputs
    grads = Grads(dxp, dh0, np.zeros((C, G, H), _F32), np.zeros((C, G), _F32), dg, dth, dx, dwih, dbih)
    if ctx.variant.kernel == "gemm":
        with _BLAS.limit(limits=1):
            _gemm.backward(is_gru, src, h0_n, W, ctx.gate, ctx.ragged, C, out, saved, upstream, grads)
    elif ctx.variant.kernel == "event":
        _event.backward(is_gru, h0_n, W, ctx.gate, ctx.ragged[0], C, out, saved, upstream, grads)
    else:
        _rows.backward(is_gru, h0_n, W, ctx.gate, C, out, saved, upstream, grads)
    fused = ctx.proj is not None
    return (
        torch.from_numpy(dxp) if need[1] and not fused else None,
        _sum(grads.dW, need[4]),
        _sum(grads.db, need[5]),
        torch.from_numpy(dx) if fused and need[9] else None,
        _sum(dwih, fused and need[10]),
        _sum(dbih, fused and need[11]),
    )


def _backward_lif(ctx, need, upstream, dh0, dg, dth):
    """LIF BPTT; returns (dxp, ds0, dV, db, dbeta) (None where not needed)."""
    h0_n, out, cell, s0_n, saved = ctx.np_saved
    B, T, H = out.shape
    C = ctx.variant.chunks
    dVT = np.zeros((C, H, H), _F32) if cell.recurrent else _dummy(3)
    grads = _lif.Grads(np.zeros((B, T, H), _F32), dh0, np.empty((B, H), _F32), dVT, np.zeros((C, H), _F32),
                       np.zeros((C, H), _F32), dg, dth)  # fmt: skip
    _lif.backward(cell, h0_n, s0_n, ctx.gate, ctx.ragged[0], C, out, saved, upstream, grads)
    return (
        torch.from_numpy(grads.dxp) if need[1] else None,
        torch.from_numpy(grads.ds0) if need[3] and cell.recurrent else None,
        torch.from_numpy(np.ascontiguousarray(dVT.sum(0).T)) if need[4] else None,
        _sum(grads.db, need[5]),
        _sum(grads.dbeta, need[8]),
    )


class _Recurrence(torch.autograd.Function):
    """choose (``choose.choose_kernel``) → allocate → launch, forward and backward."""

    @staticmethod
    def forward(ctx, cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, x, w_ih, b_ih):
        cell, kind = cfg["cell"], cfg["kind"]
        need = ctx.needs_input_grad
        # the backward's state; a record needs the kernel's own saves only where the kernel
        # decides what is recorded (event gate) or holds it (LIF membrane)
        save = (cfg["grad"] and any(need[1:])) or (cfg["record"] and (cell == "lif" or kind == "event"))
        fused = x is not None  # the kernels project x with w_ih, b_ih themselves (xp is empty)
        B, T = (x.shape[0], x.shape[1]) if fused else xp.shape[:2]
        H = h0.shape[1]
        # a rhythm table (``plan(..., table=True)``, no gate rows): the split kernel evaluates
        # it; every other kernel reads the rows it gives
        table = cfg["rhythm"] if kind == "rhythmic" and gvals is None else None
        gv = _np(gvals) if kind == "rhythmic" and table is None else _dummy(2)
        ctx.variant = variant = _choose(cfg, B, T, H, save, gv, table)
        lens = cfg["lengths"]  # (lengths, sample order): the GEMM kernels reorder, the others do not
        if lens is None:
            ctx.ragged = (np.full(B, T, np.int64), np.arange(B, dtype=np.int64))
        else:
            assert variant.kernel in RAGGED_KERNELS, f"lengths do not run on the {variant.kernel} kernel (``ragged``)"
            order = _ragged_order(lens, variant.chunks) if variant.kernel == "gemm" else np.arange(B, dtype=np.int64)
            ctx.ragged = (lens, order)
        if table is not None and variant.kernel != "split":
            gv, table = table.values().numpy(), None
        ctx.gate = gate = _gate(cfg, variant, gv, theta, cfg["grad"] and need[6])
        ctx.cfg = cfg
        xp_n, h0_n = _np(xp), _np(h0)
        if cell == "lif":
            out, hT, hseq, opened = _forward_lif(ctx, cfg, gate, save, xp_n, h0_n, s0, w_hh, b_hh, beta)
            out_t = torch.from_numpy(out)
            if lens is None:
                sT = out_t[:, -1].clone()
            else:  # the spikes of each sample's own last step
                sT = out_t[torch.arange(B), torch.from_numpy(lens - 1)]
        else:
            out, hT, opened = _forward_rnn(ctx, cfg, variant, gate, table, save, xp_n, h0_n, w_hh, b_hh,
                                           (x, w_ih, b_ih))  # fmt: skip
            out_t, sT, hseq = torch.from_numpy(out), torch.empty(0), None
        extra = (_tensor(hseq), _tensor(opened))
        # The numpy arrays above share memory with these tensors: saving the tensors makes
        # autograd's version counters catch an in-place edit before backward reads them.
        # the event gate's values are rec.gate and what the backward reads as g: saved too
        saved_g = (extra[1],) if gate.kind == EVENT and save else ()
        # and every input the backward reads again: the fused projection's x and W_ih, the
        # threshold, the gate rows, the LIF's s0 and beta (an edit of x between forward and
        # backward gave a wrong dW_ih without an error)
        read = (w_hh, b_hh, x, w_ih, s0, beta, theta if kind == "event" else None,
                gvals if kind == "rhythmic" else None)
        ctx.save_for_backward(out_t, h0, *(t for t in read if isinstance(t, torch.Tensor)), *saved_g)
        ctx.set_materialize_grads(False)  # None, not zeros, for an output without a gradient
        # the LIF membranes are detached; the event gate's values keep their surrogate gradient
        ctx.mark_non_differentiable(*(extra if gate.kind != EVENT else extra[:1]))
        return out_t, torch.from_numpy(hT), sT, *extra

    @staticmethod
    def backward(ctx, dout, dhT, dsT, _dhseq, dopened):
        start_threads()
        cell = ctx.cfg["cell"]
        gk = ctx.gate.kind
        C = ctx.variant.chunks
        ctx.saved_tensors  # noqa: B018  (raises if an output or input was modified in place)
        out = ctx.np_saved[1]
        B, T, H = out.shape
        dout_n = _np(dout) if dout is not None else np.zeros((B, T, H), _F32)
        dhT_n = _np(dhT) if dhT is not None else np.zeros((B, H), _F32)
        dg = np.zeros((C, T, H), _F32) if gk == RHYTHMIC else _dummy(3)
        dth = np.zeros((C, H), _F32)
        dh0 = np.empty((B, H), _F32)
        need = ctx.needs_input_grad
        g_s0 = g_beta = g_x = g_wih = g_bih = None
        # the event gate's record: its incoming dL/dg, else a placeholder (the kernels compare shapes)
        dgrec = _np(dopened) if gk == EVENT and dopened is not None else _dummy(3)
        if cell == "lif":
            dsT_n = _np(dsT) if dsT is not None else np.zeros((B, H), _F32)
            g_xp, g_s0, g_w, g_b, g_beta = _backward_lif(ctx, need, (dout_n, dhT_n, dsT_n, dgrec), dh0, dg, dth)
        else:
            upstream = (dout_n, dhT_n, dgrec) if gk == EVENT else (dout_n, dhT_n)
            g_xp, g_w, g_b, g_x, g_wih, g_bih = _backward_rnn(ctx, need, upstream, dh0, dg, dth)
        g_h0 = torch.from_numpy(dh0) if need[2] else None
        g_g = _sum(dg, need[6] and gk == RHYTHMIC)
        g_th = _sum(dth, need[7] and gk == EVENT)
        return None, g_xp, g_h0, g_s0, g_w, g_b, g_g, g_th, g_beta, g_x, g_wih, g_bih


def rhythm_table(cell: str, batch: int, record: bool) -> bool:
    """Whether ``SULayer.forward`` should ask a rhythmic gate for its table
    (``plan(..., table=True)``) instead of its (T, H) rows: B = 1 RNN/GRU inference streams
    without a record, where the split kernel evaluates the gate itself (no plan: at H = 512,
    T = 10,000 the plan is 7 ms and a 20 MB array of a ~60 ms run). Wherever another kernel
    runs after all, ops makes the rows from the table (the same bits)."""
    return cell in ("rnn", "gru") and batch == 1 and not record and not torch.is_grad_enabled()


def ragged(cell: str, gate_kind: str, batch: int, hidden: int) -> bool:
    """Whether :func:`recurrence` / :func:`recurrence_input` run a padded batch (``lengths``)
    in one call, one kernel call each way instead of one per distinct length, a padded step
    costing nothing:

    * LIF (every gate) and RNN/GRU with the event gate: these kernels run one sample at a
      time, each for its own length;
    * RNN/GRU with a rhythmic or dense gate on the GEMM path (thread chunks of at least
      ``choose.use_gemm``'s least size). Each thread chunk runs its samples longest first (an
      index array; the lengths dealt round robin over the chunks, so that they carry similar
      work, nothing copied), and step t runs as GEMMs over the prefix of samples still running.

    Elsewhere (the rows and split kernels: small batches) the layer runs segments."""
    if cell == "lif" or (cell in ("rnn", "gru") and gate_kind == "event"):
        return True
    if cell not in ("rnn", "gru") or gate_kind not in ("rhythmic", "dense"):
        return False
    return choose.use_gemm(gate_kind, batch, choose.nchunks(batch, threads()), _blas_ready(), cell=cell, hidden=hidden)


def _ragged_order(lens: np.ndarray, chunks: int) -> np.ndarray:
    """The order (position -> sample) in which ``gemm`` with ``chunks`` thread chunks runs a
    padded batch of lengths ``lens`` (B,): the samples dealt round robin, longest first, to
    the chunks (``_common.chunk`` bounds), so that each chunk holds its samples longest first
    (the samples still running at step t are a prefix) and the chunks similar lengths."""
    B = lens.shape[0]
    sizes = [((c + 1) * B) // chunks - (c * B) // chunks for c in range(chunks)]
    slots: list[list[int]] = [[] for _ in range(chunks)]
    c = 0
    for b in np.argsort(-lens, kind="stable"):
        while len(slots[c]) == sizes[c]:
            c = (c + 1) % chunks
        slots[c].append(int(b))
        c = (c + 1) % chunks
    return np.asarray([b for slot in slots for b in slot], np.int64)


def recurrence_input(cell, x, w_ih, b_ih, h0, s0, w_hh, b_hh, gate, lif=None, record=False, lengths=None):
    """:func:`recurrence` of ``x @ w_ih.T + b_ih`` with the input projection done inside the
    kernels, for the neurons that compute only; or None where that path does not apply.

    RNN/GRU with a rhythmic or dense gate, float32, w_ih present. It applies

    * in inference (no tensor needs a gradient) with a rhythmic gate, or a dense one of at most
      ``choose.FUSED_MAX_INPUT`` (GEMM path) or ``choose.FUSED_STREAM_MAX_INPUT`` features (the
      row-block and split kernels, where a stream fed in chunks keeps one call's bits only
      with the projection inside). At B = 1, H = 512, T = 10,000, F = 16 the layer's projection writes a
      61 MB (B, T, G) array (25-28 ms of a 119 ms run at 10 % open) of which 90 % is never read;
    * in training on the batched GEMM path (thread chunks of at least ``choose.use_gemm``'s
      least size) within the width limits of ``choose.train_projection`` (rhythmic gate: up to
      256 features, e.g. an embedding in front of a suGRU; dense: up to 32). The forward then
      skips the (B, T, G) projection and the backward its (B, T, G) gradient and the two
      GEMMs over it: dW_ih, db_ih and dx gather the computed entries only (at B = 32,
      H = 128, T = 784, F = 1: 38 MB each way). ``choose.fused_dots`` says whether the
      kernels project by per-step GEMMs or by short dot products.

    ``lengths``: as in :func:`recurrence`. The caller (``SULayer.forward``) projects and calls
    :func:`recurrence` when this returns None.
    """
    start_threads()
    if x.dtype != torch.float32 or x.device.type != "cpu" or w_ih is None or x.dim() != 3:
        return None
    B, T, Fin = x.shape
    gvals = gate.values if gate.kind == "rhythmic" else None
    tensors = (x, w_ih, b_ih, h0, w_hh, b_hh, gvals)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if not choose.fuses_input(cell, gate.kind, B, Fin, grad, hidden=h0.shape[-1], threads=threads(),
                              blas=_blas_ready()):
        return None
    return _run(cell, torch.empty(B, T, 0), h0, s0, w_hh, b_hh, gate, lif, record, (x, w_ih, b_ih), lengths=lengths)


def recurrence(cell, xp, h0, s0, w_hh, b_hh, gate, lif=None, record=False, lengths=None):
    """Numba implementation of :func:`su_neuro.kernels.reference.recurrence`.

    Args and returns as the reference: xp (B, T, G), h0 (B, H), s0 (B, H) or None,
    w_hh (G, H) or None, b_hh (G,) or None, gate a GateInput, lif LIFParams or None.
    ``lengths`` (B,) long, each in [1, T] (only where :func:`ragged` says so; else None):
    sample b runs its first lengths[b] steps; its outputs (and record) after them are zero
    and h_T is its state after them.
    Returns (out (B, T, H), h_T (B, H), s_T (B, H) or None, StepRecord or None).

    Example:
        >>> from su_neuro.kernels.contract import GateInput
        >>> out, hT, _, _ = recurrence("rnn", torch.randn(2, 5, 4), torch.zeros(2, 4), None,
        ...                            torch.randn(4, 4) * 0.3, None, GateInput("dense"))
    """
    start_threads()
    problem = unsupported(cell, gate.kind, xp.dtype)
    if problem:
        raise ValueError(problem)
    if xp.device.type != "cpu":
        raise ValueError(f"backend 'numba' runs on CPU tensors, got {xp.device}")
    return _run(cell, xp, h0, s0, w_hh, b_hh, gate, lif, record, None, lengths=lengths)


def _run(cell, xp, h0, s0, w_hh, b_hh, gate, lif, record, proj, lengths=None):
    if record or cell == "lif":  # these read the gate rows
        gate = gate.materialized()
    kind = gate.kind
    gvals = gate.values if kind == "rhythmic" else None
    theta = gate.values if kind == "event" else None
    support = getattr(gate, "support", None)
    x, w_ih, b_ih = proj if proj is not None else (None, None, None)
    # Numba reads no bounds: a tensor of the wrong shape is refused here, not read past its end
    check_shapes(cell, xp, h0, s0=s0, w_hh=w_hh, b_hh=b_hh, rows=gvals, support=support, threshold=theta,
                 beta=lif.beta if cell == "lif" else None, lengths=lengths, x=x, w_ih=w_ih, b_ih=b_ih)
    beta = lif.beta.clamp(0, 1) if cell == "lif" else None
    if support is not None:
        support = support.detach().cpu().numpy().astype(bool)
    lens = None
    if lengths is not None:
        B = h0.shape[0]
        if not ragged(cell, kind, B, h0.shape[-1]):
            raise ValueError(f"numba runs lengths in one call for LIF, the event gate and the GEMM path of "
                             f"RNN/GRU only (ops.ragged), not {cell} / {kind} at B = {B}, H = {h0.shape[-1]}")
        lens = lengths.detach().cpu().numpy().astype(np.int64)
    cfg = {
        "cell": cell,
        "kind": kind,
        "record": bool(record),
        "lif": lif,
        "gate_surrogate": gate.surrogate if kind == "event" else None,
        "support": support,
        "grad": torch.is_grad_enabled(),
        "rhythm": gate.rhythm if kind == "rhythmic" else None,
        "lengths": lens,
    }
    if cell != "lif":
        s0 = None
    out, hT, sT, hseq, gsave = _Recurrence.apply(cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, x, w_ih, b_ih)
    rec = None
    if record:
        # RNN / GRU: the outputs are the states, so rec.delta keeps their gradient; LIF: the
        # membranes are the kernel's (detached), the spikes are the output (differentiable)
        states = hseq if cell == "lif" else out
        rec = make_record(gate, h0.detach() if cell == "lif" else h0, states, gsave, out if cell == "lif" else None)
        if lengths is not None:
            rec = mask_record(rec, lengths)
    return out, hT, (sT if cell == "lif" else None), rec
