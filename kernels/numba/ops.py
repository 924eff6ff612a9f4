r"""The Numba CPU backend: ``recurrence`` with the signature and semantics of
:func:`su_neuro.kernels.reference.recurrence`, forward and every gradient.

How the work follows activity
-----------------------------
* **Rhythmic gate, RNN/GRU** — the open set of step t is batch uniform and known before
  the data: it is compacted once per sequence (``_common.compact``: per-step index lists
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
* **Streaming, B = 1, RNN/GRU, rhythmic or dense gate** (``split.forward``): with one
  sample the batch-chunk kernels run on one thread, and the GRU's W_hh (3H x H float32,
  3 MiB at H = 512) outgrows one core's L2 (1-2 MiB). When nothing is saved (no gradient
  needed; a record of an RNN/GRU with these gates needs no saves), B == 1, Numba has >= 2
  threads and each step has enough work (``_split_tasks``), the neurons are split into
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
  chunks, the kernels compute W_ih x_t + b_ih themselves (``cell.step_input``) for the
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

Batched training (rhythmic / dense RNN and GRU, every thread chunk >= GEMM_MIN_BATCH
samples): each step runs as BLAS GEMMs over the step's gathered compute rows
(``cell.forward_gemm`` / ``backward_gemm``, scipy's OpenBLAS through Numba's ``np.dot``,
held to one thread per Numba thread with threadpoolctl; without scipy or threadpoolctl
the block kernels run), and saves only the computed entries, compact (nnz, B).

Saved for backward: the state sequence (it is the output), d, the gate (event), GRU
r, z, n, hn; dense (B, T, H) arrays of which only the computed entries are written
(compact (nnz, B) arrays on the GEMM path; no d for the dense gate there).

Records: ``StepRecord.gate`` carries the rhythmic gate's gradient (it is the gate row
expanded); the event gate's record, ``delta`` and ``spike`` are returned detached.
Supported dtype: float32 (float64 / float16: use backend="torch").
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch

from ..buffers import huge_copy, pooled
from ..contract import make_record
from . import cell as _cell
from . import lif as _lif
from . import split as _split
from ._common import DENSE, EVENT, GATE_CODES, RHYTHMIC, compact, nchunks

__all__ = [
    "recurrence", "recurrence_input", "rhythm_table", "unsupported", "auto_pays",
    "REFRESH", "GEMM_MIN_BATCH", "FUSED_MAX_INPUT", "FUSED_TRAIN_MAX_INPUT",
    "SPLIT_MIN_BLOCK", "SPLIT_MIN_WORK", "SPLIT_WORK_PER_NEURON", "SPLIT_HUGE_STEPS", "SPLIT_HUGE_MAX_BYTES",
]  # fmt: skip

REFRESH = 4096  # exact recompute of the delta-accumulated U h every REFRESH steps
#: RNN/GRU rhythmic and dense gates: a thread's chunk of at least this many samples runs
#: each step as BLAS GEMMs (cell._forward_chunk_gemm / _backward_chunk_gemm); smaller
#: chunks (streaming, B = 1) take the 4-sample-block dot products
GEMM_MIN_BATCH = 8
#: B = 1 streaming forward of RNN/GRU, rhythmic / dense gate, split over neuron blocks
#: (kernels/numba/split.py): blocks of at least SPLIT_MIN_BLOCK neurons, each with at least
#: max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * H) work units per step on average
#: (rows = 3 GRU, 1 RNN; see ``_split_tasks``)
SPLIT_MIN_BLOCK = 32
SPLIT_MIN_WORK = 1024
SPLIT_WORK_PER_NEURON = 3.75
_SPLIT_SAMPLE = 1024  # steps whose open counts estimate a rhythmic gate's work for the rule
#: the B = 1 inference kernels (split and one-thread) read W_hh from a copy in huge pages
#: (``kernels.buffers.huge_copy``, ``_stream_weights``)
#: on streams of at least this many steps, where the copy costs under ~5 % of the run, and
#: for weights of at most SPLIT_HUGE_MAX_BYTES (the copy's buffer stays with the thread).
#: A GRU's copy is packed per neuron (cell.packed_gru: the r, z, n rows of a neuron in
#: one 12·H-byte run; x0.92-0.95 at H = 512, 10 %, same bits)
SPLIT_HUGE_STEPS = 1024
SPLIT_HUGE_MAX_BYTES = 16 << 20
#: inference with a dense gate: the kernels project the input themselves (``recurrence_input``)
#: up to this many input features; training (GEMM path, any gate): up to FUSED_TRAIN_MAX_INPUT
FUSED_MAX_INPUT = 64
FUSED_TRAIN_MAX_INPUT = 8

_F32 = np.float32

_BLAS = None  # threadpoolctl controller of the loaded OpenBLAS libraries; False: no GEMM path


def _gemm_min() -> int:
    """GEMM_MIN_BATCH when the BLAS path can run, else a size no chunk reaches.

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
    return GEMM_MIN_BATCH if _BLAS is not False else 1 << 62


def unsupported(cell: str, gate_kind: str, dtype) -> str | None:
    """Why the numba backend cannot run this combination, or None."""
    if cell not in ("rnn", "gru", "lif"):
        return f"backend 'numba' has no kernel for cell {cell!r}"
    if gate_kind not in GATE_CODES:
        return f"backend 'numba' has no kernel for gate {gate_kind!r}"
    if dtype != torch.float32:
        return f"backend 'numba' runs float32 only, got {dtype} (use backend='torch')"
    return None


def auto_pays(cell: str, batch: int, hidden: int, **_) -> bool:
    """Rule of backend="auto" on CPU, from tools/bench_numba.py (docs/benchmarks.md,
    "Numba CPU backend"; forward + backward, 2 threads).

    LIF: numba won at every measured size (B 1-32, H 8-1024) except one-step calls at
    tiny sizes (fixed call cost). RNN/GRU: numba won up to B·H = 4096 (B=32, H=128
    training: 5.9x the reference with the per-step GEMM path) and lost at B·H = 8192
    (B=32, H=256, T=20: 0.43-0.62x in two runs), where per-call costs and the reference's
    batched GEMMs win.
    """
    if cell == "lif":
        return True
    return batch * hidden <= 4096


def _use_gemm(gk: int, batch: int, nchunk: int) -> bool:
    """Rhythmic/dense RNN/GRU whose smallest thread chunk has >= GEMM_MIN_BATCH samples."""
    return gk != EVENT and batch // nchunk >= _gemm_min()


def _split_tasks(gk: int, save: bool, batch: int, hidden: int, rows: int, computed: int, steps: int) -> int:
    """Neuron blocks for the split B = 1 forward (``split.forward``), or 0: batch-chunk kernel.

    Only where nothing is saved (no gradient needed), for the rhythmic and dense gates (the
    caller is RNN/GRU) and B == 1. Work per step: the mean number of computed neurons
    (``computed`` over ``steps``: the rhythmic gate's open entries, counted on the first
    ``_SPLIT_SAMPLE`` steps and scaled to T, or H) times
    rows·H + 64 (rows = 3 GRU, 1 RNN: the multiply-adds; 64: the nonlinearities and blend,
    fitted). Blocks: one per Numba thread, at most H // SPLIT_MIN_BLOCK, and at most
    work // max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * H); split only if that
    gives >= 2. The per-block minimum grows with H because each task scans its block's gate
    row, copies the block's state forward and writes its outputs every step, and the state
    it reads was written by the other cores: that cost follows H, not the open count; and a
    GRU needs more work per block than an RNN (15·H against 7.5·H units) before the split
    pays, as measured.

    Measured with tools/bench_numba_split.py (A/B of the two kernels on the same inputs, both
    scanning the gate rows and reading W_hh as ops passes it (huge pages, a GRU's packed per
    neuron), input projected inside the kernels, 2 Numba threads on 2 otherwise idle cores,
    AMD EPYC with 1 MiB L2 per core, T = 5,000, periodic open sets of 1-100 %, H = 128-1024,
    medians of 5; the table is in docs/cpu/bench_numba_split.txt). Re-measured after both
    kernels changed (vectorised candidates in the split kernel, no compaction and packed
    weights in the one-thread kernel): the rule picks the faster kernel in 45 of the 48
    configurations; the three it gets wrong lose x0.95-0.96 (GRU H = 128 10 %, GRU H = 512
    2 %, RNN H = 256 5 %). With another process busy on one of the 2 cores the split ran at
    x0.93-1.05 (the running thread does the other's tasks; an earlier session's measurement).
    """
    if save or gk == EVENT or batch != 1 or steps == 0:
        return 0
    work = computed / steps * (rows * hidden + 64)
    tasks = min(nb.get_num_threads(), hidden // max(SPLIT_MIN_BLOCK, 1))
    per_block = max(SPLIT_MIN_WORK, SPLIT_WORK_PER_NEURON * (rows + 1) * hidden)
    if per_block > 0:
        tasks = min(tasks, int(work // per_block))
    return tasks if tasks >= 2 else 0


def _stream_weights(W: np.ndarray, is_gru: bool, steps: int) -> np.ndarray:
    """W_hh as the B = 1 inference kernels read it: on streams of at least SPLIT_HUGE_STEPS
    a copy in huge pages, a GRU's packed per neuron ((H, 3H): a neuron's r, z, n rows in one
    run; ``cell.packed_gru``, same bits); else W itself."""
    if steps < SPLIT_HUGE_STEPS or W.nbytes > SPLIT_HUGE_MAX_BYTES or W.size == 0:
        return W
    H = W.shape[1]
    return huge_copy(W.reshape(3, H, H).transpose(1, 0, 2) if is_gru else W).reshape(H, -1)


def _pack_rows(w_ih: np.ndarray, H: int) -> np.ndarray:
    """A GRU's W_ih (3H, F) packed per neuron, (H, 3F): neuron i's r, z and n rows in one
    run (``cell.step_input`` reads either layout, same bits). One 3-line run instead of
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


class _Recurrence(torch.autograd.Function):
    """Forward/backward launchers around the jit kernels (see module docstring)."""

    @staticmethod
    def forward(ctx, cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, x, w_ih, b_ih):
        cell, kind = cfg["cell"], cfg["kind"]
        need = ctx.needs_input_grad
        # the backward's state; a record needs the kernel's own saves only where the kernel
        # decides what is recorded (event gate) or holds it (LIF membrane)
        save = (cfg["grad"] and any(need[1:])) or (cfg["record"] and (cell == "lif" or kind == "event"))
        fused = x is not None  # the kernels project x with w_ih, b_ih themselves (xp is empty)
        B, T, G = (x.shape[0], x.shape[1], w_ih.shape[0]) if fused else xp.shape
        H = h0.shape[1]
        C = nchunks(B)
        gk = GATE_CODES[kind]
        xp_n, h0_n = _np(xp), _np(h0)
        # a rhythm table (``plan(..., table=True)``, no gate rows): the split kernel evaluates
        # it; every other kernel reads the rows it gives
        table = cfg["rhythm"] if kind == "rhythmic" and gvals is None else None
        gv = _np(gvals) if kind == "rhythmic" and table is None else _dummy(2)
        th = _np(theta) if kind == "event" else _dummy(1)
        off, idx = np.zeros(1, np.int64), np.zeros(1, np.int32)
        # B = 1 streaming RNN/GRU with nothing to save may run split over neurons; its tasks
        # scan the gate rows (or the table) themselves, so the compaction is skipped (the
        # split rule's work estimate then comes from the first steps' open counts, or from
        # 128 steps of the table spread over the sequence)
        tasks = 0
        if cell != "lif" and not save and B == 1 and gk != EVENT and T > 0:
            if gk == DENSE:
                computed = T * H
            elif table is not None:
                computed = table.open_count()
            else:
                head = gv[: min(T, _SPLIT_SAMPLE)]
                computed = int(np.count_nonzero(head)) * T // head.shape[0]
            tasks = _split_tasks(gk, save, B, H, G // H, computed, T)
        if table is not None and not tasks:
            gv, table = table.values().numpy(), None
        # B = 1 RNN/GRU inference on one thread: the kernel scans the gate rows itself
        scans = cell != "lif" and not save and B == 1 and not _use_gemm(gk, B, C)
        if kind == "rhythmic" and not tasks and not scans:
            support = None
            if cfg["grad"] and need[6]:
                support = cfg["support"]
                if support is None:  # the gate's support is unknown: every closed entry
                    support = np.ones(gv.shape, np.bool_)
            off, idx = compact(gv, support)
        ctx.cfg = cfg
        ctx.C = C
        ctx.comp = (off, idx)
        ctx.fused = None
        if cell == "lif":
            lif = cfg["lif"]
            recurrent = w_hh is not None
            V = _np(w_hh) if recurrent else _dummy(2)
            # V^T (the column pass over the previous step's spikes) is read only at steps
            # whose compute set has >= H/4 neurons (lif.py: "rowwise" otherwise): a sparse
            # rhythmic gate never needs the (H, H) transposed copy (4 ms at H = 1024)
            rowwise = kind == "rhythmic" and T > 0 and int(np.diff(off).max()) * 4 < H
            VT = np.ascontiguousarray(V.T) if recurrent and not rowwise else V
            bias = _np(b_hh, (H,)) if recurrent else np.zeros(H, _F32)
            s0_n = _np(s0, (B, H))
            beta_n = _np(beta)
            out = np.zeros((B, T, H), _F32)
            hT = np.empty((B, H), _F32)
            hseq = np.empty((B, T, H), _F32) if save else _dummy(3)
            gated = save and kind != "dense"
            dsave = np.empty((B, T, H), _F32) if gated else _dummy(3)
            gsave = np.empty((B, T, H), _F32) if gated else _dummy(3)
            _lif.forward(
                gk,
                recurrent,
                lif.reset == "zero",
                xp_n,
                h0_n,
                s0_n,
                V,
                VT,
                bias,
                beta_n,
                float(lif.threshold),
                gv,
                off,
                idx,
                th,
                bool(save),
                C,
                out,
                hT,
                hseq,
                dsave,
                gsave,
            )
            saved = (V, bias, beta_n, s0_n, gv, th, hseq, dsave, gsave)
            ctx.recurrent = recurrent
            out_t = torch.from_numpy(out)
            sT = out_t[:, -1].clone()
            extra = (
                torch.from_numpy(hseq) if save else torch.empty(0),
                torch.from_numpy(gsave) if gated else torch.empty(0),
            )
        else:
            is_gru = cell == "gru"
            W = _np(w_hh)
            WT = np.ascontiguousarray(W.T) if gk == EVENT else _dummy(2)
            bias = _np(b_hh, (G,))
            out = pooled((B, T, H), _F32)  # returned to the caller as a tensor
            hT = np.empty((B, H), _F32)
            gemm = _use_gemm(gk, B, C)
            if gemm:  # compact saves: one row per computed (step, neuron), one column per sample
                nnz = T * H if gk == DENSE else int(off[-1])
                full = lambda on: np.empty((nnz, B), _F32) if (save and on) else _dummy(2)  # noqa: E731
            else:
                full = lambda on: np.empty((B, T, H), _F32) if (save and on) else _dummy(3)  # noqa: E731
            dsave = full(gk != DENSE or not gemm)  # d (dense, block kernels: read but unused)
            fsave = full(not is_gru)
            rsave, zsave, nsave, hnsave = (full(is_gru) for _ in range(4))
            gsave = full(gk == EVENT)
            if fused:
                assert gemm or not save, "a fused input projection trains on the GEMM path only"
                x_n, wih_n = _np(x), _np(w_ih)
                # the B = 1 inference kernels read a GRU's W_ih packed per neuron
                wih_k = _pack_rows(wih_n, H) if is_gru and (tasks or scans) else wih_n
                src = (True, _dummy(3), x_n, wih_k, _np(b_ih, (G,)))
                ctx.fused = (x_n, wih_n)
            else:
                src = (False, xp_n, _dummy(3), _dummy(2), _dummy(1))
                ctx.fused = None
            if tasks:
                _split.forward(is_gru, gk, src, h0_n, _stream_weights(W, is_gru, T), bias, gv,
                               _split.rhythm_args(table), tasks, tasks, _split.SPIN, out, hT)  # fmt: skip
            elif gemm:
                with _BLAS.limit(limits=1):
                    _cell.forward_gemm(
                        is_gru, gk, src, h0_n, W, bias, gv, off, idx, bool(save), C,
                        out, hT, dsave, fsave, rsave, zsave, nsave, hnsave,
                    )  # fmt: skip
            else:
                Wc = _stream_weights(W, is_gru, T) if scans and gk != EVENT else W
                _cell.forward(
                    is_gru, gk, src, h0_n, Wc, WT, bias, gv, off, idx, th, 0, 0.0, REFRESH,
                    bool(save), C, out, hT, dsave, fsave, rsave, zsave, nsave, hnsave, gsave,
                )  # fmt: skip
            ctx.gemm = gemm
            saved = (W, gv, th, dsave, fsave, rsave, zsave, nsave, hnsave, gsave)
            out_t = torch.from_numpy(out)
            sT = torch.empty(0)
            extra = (torch.empty(0), torch.from_numpy(gsave) if (save and gk == EVENT) else torch.empty(0))
        ctx.np_saved = (h0_n, out) + saved
        # The numpy arrays above share memory with these tensors: saving the tensors makes
        # autograd's version counters catch an in-place edit before backward reads them.
        ctx.save_for_backward(out_t, h0, *(t for t in (w_hh, b_hh) if t is not None))
        ctx.mark_non_differentiable(*extra)
        return out_t, torch.from_numpy(hT), sT, *extra

    @staticmethod
    def backward(ctx, dout, dhT, dsT, *_):
        cfg = ctx.cfg
        cell, kind = cfg["cell"], cfg["kind"]
        gk = GATE_CODES[kind]
        off, idx = ctx.comp
        C = ctx.C
        ctx.saved_tensors  # noqa: B018  (raises if an output or input was modified in place)
        h0_n, out = ctx.np_saved[:2]
        B, T, H = out.shape
        dout_n = _np(dout) if dout is not None else np.zeros((B, T, H), _F32)
        dhT_n = _np(dhT) if dhT is not None else np.zeros((B, H), _F32)
        gsur = cfg["gate_surrogate"]
        gcode, gscale = (gsur.code, gsur.scale) if gsur is not None else (0, 0.0)
        dg = np.zeros((C, T, H), _F32) if gk == RHYTHMIC else _dummy(3)
        dth = np.zeros((C, H), _F32)
        dh0 = np.empty((B, H), _F32)
        need = ctx.needs_input_grad
        g_xp = g_h0 = g_s0 = g_w = g_b = g_g = g_th = g_beta = g_x = g_wih = g_bih = None
        if cell == "lif":
            V, bias, beta_n, s0_n, gv, th, hseq, dsave, gsave = ctx.np_saved[2:]
            lif = cfg["lif"]
            dsT_n = _np(dsT) if dsT is not None else np.zeros((B, H), _F32)
            dxp = np.zeros((B, T, H), _F32)
            ds0 = np.empty((B, H), _F32)
            dVT = np.zeros((C, H, H), _F32) if ctx.recurrent else _dummy(3)
            db = np.zeros((C, H), _F32)
            dbeta = np.zeros((C, H), _F32)
            _lif.backward(
                gk,
                ctx.recurrent,
                lif.reset == "zero",
                h0_n,
                s0_n,
                V,
                beta_n,
                float(lif.threshold),
                gv,
                off,
                idx,
                th,
                gcode,
                gscale,
                lif.spike.code,
                lif.spike.scale,
                C,
                out,
                hseq,
                dsave,
                gsave,
                dout_n,
                dhT_n,
                dsT_n,
                dxp,
                dh0,
                ds0,
                dVT,
                db,
                dbeta,
                dg,
                dth,
            )
            if need[3] and ctx.recurrent:
                g_s0 = torch.from_numpy(ds0)
            if need[4]:
                g_w = torch.from_numpy(np.ascontiguousarray(dVT.sum(0).T))
            if need[5]:
                g_b = torch.from_numpy(db.sum(0))
            if need[8]:
                g_beta = torch.from_numpy(dbeta.sum(0))
            G = H
        else:
            W, gv, th, dsave, fsave, rsave, zsave, nsave, hnsave, gsave = ctx.np_saved[2:]
            G = W.shape[0]
            fused = ctx.fused is not None
            dxp = _dummy(3) if fused else np.zeros((B, T, G), _F32)
            dW = np.zeros((C, G, H), _F32)
            db = np.zeros((C, G), _F32)
            if fused:
                x_n, wih_n = ctx.fused
                Fin = x_n.shape[2]
                dx = np.zeros((B, T, Fin), _F32)
                dwih, dbih = np.zeros((C, G, Fin), _F32), np.zeros((C, G), _F32)
            else:
                x_n, wih_n, dx, dwih, dbih = _dummy(3), _dummy(2), _dummy(3), _dummy(3), _dummy(2)
            if ctx.gemm:
                with _BLAS.limit(limits=1):
                    _cell.backward_gemm(
                        cell == "gru", gk, h0_n, W, gv, off, idx, C, out, dsave, fsave, rsave,
                        zsave, nsave, hnsave, dout_n, dhT_n, dxp, dh0, dW, db, dg,
                        fused, x_n, wih_n, dx, dwih, dbih,
                    )  # fmt: skip
                if fused:
                    g_x = torch.from_numpy(dx) if need[9] else None
                    g_wih = torch.from_numpy(dwih.sum(0)) if need[10] else None
                    g_bih = torch.from_numpy(dbih.sum(0)) if need[11] else None
            else:
                _cell.backward(
                    cell == "gru", gk, h0_n, W, gv, off, idx, th, gcode, gscale, C, out, dsave,
                    fsave, rsave, zsave, nsave, hnsave, gsave, dout_n, dhT_n, dxp, dh0, dW, db,
                    dg, dth,
                )  # fmt: skip
            if need[4]:
                g_w = torch.from_numpy(dW.sum(0))
            if need[5]:
                g_b = torch.from_numpy(db.sum(0))
        if need[1] and ctx.fused is None:
            g_xp = torch.from_numpy(dxp)
        if need[2]:
            g_h0 = torch.from_numpy(dh0)
        if need[6] and gk == RHYTHMIC:
            g_g = torch.from_numpy(dg.sum(0))
        if need[7] and gk == EVENT:
            g_th = torch.from_numpy(dth.sum(0))
        del G
        return None, g_xp, g_h0, g_s0, g_w, g_b, g_g, g_th, g_beta, g_x, g_wih, g_bih


def rhythm_table(cell: str, batch: int, record: bool) -> bool:
    """Whether ``SULayer.forward`` should ask a rhythmic gate for its table
    (``plan(..., table=True)``) instead of its (T, H) rows: B = 1 RNN/GRU inference streams
    without a record, where the split kernel evaluates the gate itself (no plan: at H = 512,
    T = 10,000 the plan is 7 ms and a 20 MB array of a ~60 ms run). Wherever another kernel
    runs after all, ops makes the rows from the table (the same bits)."""
    return cell in ("rnn", "gru") and batch == 1 and not record and not torch.is_grad_enabled()


def recurrence_input(cell, x, w_ih, b_ih, h0, s0, w_hh, b_hh, gate, lif=None, record=False):
    """:func:`recurrence` of ``x @ w_ih.T + b_ih`` with the input projection done inside the
    kernels, for the neurons that compute only; or None where that path does not apply.

    RNN/GRU with a rhythmic or dense gate, float32, w_ih present. It applies

    * in inference (no tensor needs a gradient), except for a dense gate with more than
      ``FUSED_MAX_INPUT`` input features (one GEMM beats per-step dot products when every
      row is needed). At B = 1, H = 512, T = 10,000, F = 16 the layer's projection writes a
      61 MB (B, T, G) array (25-28 ms of a 119 ms run at 10 % open) of which 90 % is never read;
    * in training on the batched GEMM path (thread chunks of >= ``GEMM_MIN_BATCH`` samples)
      with at most ``FUSED_TRAIN_MAX_INPUT`` features: sequential MNIST pixel by pixel (F = 1),
      the copy and adding tasks. The forward then skips the (B, T, G) projection and the
      backward its (B, T, G) gradient and the two GEMMs over it: dW_ih, db_ih and dx gather
      the computed entries only (at B = 32, H = 128, T = 784, F = 1: 38 MB each way).

    The caller (``SULayer.forward``) projects and calls :func:`recurrence` when this returns None.
    """
    if cell not in ("rnn", "gru") or gate.kind not in ("rhythmic", "dense") or x.dtype != torch.float32:
        return None
    if x.device.type != "cpu" or w_ih is None or x.dim() != 3:
        return None
    B, T, Fin = x.shape
    gvals = gate.values if gate.kind == "rhythmic" else None
    tensors = (x, w_ih, b_ih, h0, w_hh, b_hh, gvals)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    gemm = _use_gemm(GATE_CODES[gate.kind], B, nchunks(B))
    if grad and not (gemm and Fin <= FUSED_TRAIN_MAX_INPUT):
        return None
    if not grad and gate.kind == "dense" and Fin > FUSED_MAX_INPUT:
        return None
    return _run(cell, torch.empty(B, T, 0), h0, s0, w_hh, b_hh, gate, lif, record, (x, w_ih, b_ih))


def recurrence(cell, xp, h0, s0, w_hh, b_hh, gate, lif=None, record=False):
    """Numba implementation of :func:`su_neuro.kernels.reference.recurrence`.

    Args and returns as the reference: xp (B, T, G), h0 (B, H), s0 (B, H) or None,
    w_hh (G, H) or None, b_hh (G,) or None, gate a GateInput, lif LIFParams or None.
    Returns (out (B, T, H), h_T (B, H), s_T (B, H) or None, StepRecord or None).

    Example:
        >>> from su_neuro.gates import GateInput
        >>> out, hT, _, _ = recurrence("rnn", torch.randn(2, 5, 4), torch.zeros(2, 4), None,
        ...                            torch.randn(4, 4) * 0.3, None, GateInput("dense"))
    """
    problem = unsupported(cell, gate.kind, xp.dtype)
    if problem:
        raise ValueError(problem)
    if xp.device.type != "cpu":
        raise ValueError(f"backend 'numba' runs on CPU tensors, got {xp.device}")
    return _run(cell, xp, h0, s0, w_hh, b_hh, gate, lif, record, None)


def _run(cell, xp, h0, s0, w_hh, b_hh, gate, lif, record, proj):
    if record or cell == "lif":  # these read the gate rows
        gate = gate.materialized()
    kind = gate.kind
    gvals = gate.values if kind == "rhythmic" else None
    theta = gate.values if kind == "event" else None
    beta = lif.beta.clamp(0, 1) if cell == "lif" else None
    support = getattr(gate, "support", None)
    if support is not None:
        support = support.detach().cpu().numpy().astype(bool)
    cfg = {
        "cell": cell,
        "kind": kind,
        "record": bool(record),
        "lif": lif,
        "gate_surrogate": gate.surrogate if kind == "event" else None,
        "support": support,
        "grad": torch.is_grad_enabled(),
        "rhythm": gate.rhythm if kind == "rhythmic" else None,
    }
    if cell != "lif":
        s0 = None
    x, w_ih, b_ih = proj if proj is not None else (None, None, None)
    out, hT, sT, hseq, gsave = _Recurrence.apply(cfg, xp, h0, s0, w_hh, b_hh, gvals, theta, beta, x, w_ih, b_ih)
    rec = None
    if record:
        states = hseq if cell == "lif" else out.detach()
        rec = make_record(gate, h0.detach(), states, gsave, out.detach() if cell == "lif" else None)
    return out, hT, (sT if cell == "lif" else None), rec
