"""Streaming forward of the RNN and GRU with rhythmic and dense gates, B = 1, split over
neuron blocks (forward only: nothing saved, nothing recorded).

The batch-chunk kernels (``rows``) parallelise over batch chunks; with one
sample one thread does everything, and for H >= 256 (GRU: W_hh = 3H x H float32, 3 MiB at
H = 512) the recurrent weights no longer fit one core's L2. Here the H neurons are split
into ``ntasks`` contiguous blocks (boundaries rounded to 16 neurons, one cache line of
float32); task k of step t computes the candidates of block k's open neurons from h_{t-1}
and writes block k of h_t, so each thread keeps its own slice of W_hh in its own L2.
A GRU's W_hh may come packed per neuron, (H, 3H) instead of (3H, H) (``_common.packed_gru``):
then an open neuron's three rows are one contiguous run for the hardware prefetcher.

The outputs are the state: step t reads h_{t-1} from out[0, t - 1] (h0 at t = 0) and
writes block k of out[0, t], so no task of step t overwrites what another task of step t
reads and no state buffer is copied. A task copies its block's closed neurons forward,
blends the open ones (h + g (f - h), g != 0, exactly as ``rows``).

Synchronisation (no plain barrier: a barrier deadlocks when the threading layer runs two
prange iterations on one thread, and stalls while the OS has a thread descheduled). Each
task has a claim word (the last step claimed) and a done word (the last step completed),
int64, on their own cache lines. Worker p at step t:

1. tries CAS(claim[p], t - 1 -> t); on success runs task p and stores done[p] = t (release);
2. waits until done[k] >= t for every other k (acquire loads). After ``STEAL`` polls it
   also tries CAS(claim[k], t - 1 -> t) and on success runs task k itself, so a worker that
   is absent or late has its task done for it (with one thread, or one worker, everything
   runs serially and correctly). In the common case the owner claimed its task long before,
   and nobody but the owner touches a claim word: one cache line fewer moves between cores
   per task and step. After ``SPIN`` polls each poll also yields the CPU with sched_yield,
   so a descheduled owner of a claimed task can run on a shared or oversubscribed machine
   (with a busy process on the other of 2 cores, never yielding made H = 512 GRU 1.2-1.4x
   slower than SPIN = 2000);
3. if task p was taken by another worker, waits until it is done; then goes on to t + 1.

A task of step t is claimed only by a worker that saw every task of step t - 1 done, so
it reads a complete h_{t-1}. Numba has no CPU atomics: the acquire load, release store and
compare-and-swap are llvmlite intrinsics on an element of an int64 array.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..contract import DENSE
from ._common import dots1, dots_packed, gru_candidates, packed_gru, rnn_candidates, step_input

__all__ = ["forward", "rhythm_args", "SPIN"]

#: polls of a done word before each further poll also yields the CPU
SPIN = 2000
#: polls of another task's done word before its claim word is read (and the task taken if
#: its owner has not started it): in the common case the owner has claimed it long before,
#: and a claim word nobody else reads stays in its owner's cache
STEAL = 256
_STRIDE = 16  # int64 words between two sync words (128 bytes: own cache line, and its pair)

# ------------------------------------------------------------------ atomics and yield


def _yield_address() -> int:
    """Address of a no-argument function that yields the CPU (sched_yield / SwitchToThread)."""
    if sys.platform == "win32":
        return ctypes.cast(ctypes.windll.kernel32.SwitchToThread, ctypes.c_void_p).value
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    return ctypes.cast(libc.sched_yield, ctypes.c_void_p).value


# Registered under our own name so that the cached machine code refers to a symbol, not to
# an address of this process.
_YIELD = "su_neuro_sched_yield"
llvm.add_symbol(_YIELD, _yield_address())


def _element(context, builder, sig, args):
    aryty, idxty = sig.args[0], sig.args[1]
    ary = context.make_array(aryty)(context, builder, args[0])
    i = context.cast(builder, args[1], idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [i], wraparound=False)


def _int64_vector(a, i):
    return isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1 and isinstance(i, types.Integer)


@intrinsic
def load_acquire(typingctx, a, i):
    """a[i] (int64) with acquire ordering."""
    if not _int64_vector(a, i):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_element(context, builder, sig, args), "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def store_release(typingctx, a, i, v):
    """a[i] = v (int64) with release ordering."""
    if not (_int64_vector(a, i) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, _element(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(a, i, v), codegen


@intrinsic
def cas(typingctx, a, i, expected, new):
    """Atomically: if a[i] == expected, a[i] = new; returns whether it did (acq_rel)."""
    if not (_int64_vector(a, i) and isinstance(expected, types.Integer) and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        cmp = context.cast(builder, args[2], sig.args[2], types.int64)
        val = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(_element(context, builder, sig, args), cmp, val, "acq_rel", "acquire")
        return builder.extract_value(res, 1)

    return types.boolean(a, i, expected, new), codegen


@intrinsic
def cpu_yield(typingctx):
    """sched_yield() (SwitchToThread() on Windows)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), _YIELD)
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


# ------------------------------------------------------------------------- the kernel


def rhythm_args(table=None) -> tuple:
    """The kernels' ``rh`` argument: (tabled, base (T,), points (M, H), one (1,)) of a
    ``su_neuro.kernels.rhythm.RhythmTable``, or the placeholder (tabled False: the gate rows
    ``gvals`` are read). ``one`` is the gate value of an open neuron, read from memory so
    that the blend stays h + 1 (f - h) as in every other kernel."""
    one = np.ones(1, np.float32)
    if table is None:
        return (False, np.zeros(1, np.float32), np.zeros((2, 1), np.float32), one)
    base, points = (t.detach().cpu().contiguous().numpy() for t in (table.base, table.points))
    return (True, base, points, one)


@nb.njit(cache=True, inline="always")
def _bound(k, ntasks, H):
    """Start of block k: k*H/ntasks rounded to a multiple of 16 neurons (0 and H exact)."""
    if k <= 0:
        return 0
    if k >= ntasks:
        return H
    return min(H, ((k * H) // ntasks + 8) // 16 * 16)


@nb.njit(cache=True)
def events(rh, ntasks, H):
    """The table's points of each task's block as events sorted by phase: ``ev = (value
    (ntasks, E), neuron (ntasks, E), count (ntasks,), open list (ntasks, H), list position
    (ntasks, H), -1 closed, state (ntasks * _STRIDE,): [events passed, open count])``.
    Without a table (rh[0] False) the arrays are empty. Every point is an event, the
    padding too (at FLT_MAX: never passed by a finite phase, passed exactly where the
    comparison would say so)."""
    tabled, P = rh[0], rh[2]
    M = P.shape[0] if tabled else 0
    width = 0
    for k in range(ntasks):
        width = max(width, M * (_bound(k + 1, ntasks, H) - _bound(k, ntasks, H)))
    val = np.empty((ntasks, width), np.float32)
    who = np.empty((ntasks, width), np.int32)
    cnt = np.zeros(ntasks, np.int64)
    for k in range(ntasks):
        lo, hi = _bound(k, ntasks, H), _bound(k + 1, ntasks, H)
        e = M * (hi - lo)
        v = np.empty(e, np.float32)
        w = np.empty(e, np.int32)
        c = 0
        for m in range(M):
            for j in range(lo, hi):
                v[c] = P[m, j]
                w[c] = j
                c += 1
        order = np.argsort(v, kind="mergesort")  # a NaN point (never <= anything) sorts last
        for c in range(e):
            val[k, c] = v[order[c]]
            who[k, c] = w[order[c]]
        cnt[k] = e
    ol = np.empty((ntasks, max(H, 1)), np.int32)
    pos = np.full((ntasks, max(H, 1)), -1, np.int32)
    state = np.zeros(ntasks * _STRIDE, np.int64)
    return (val, who, cnt, ol, pos, state)


@nb.njit(cache=True, inline="always")
def _open_from_events(k, t, base, ev, loc):
    """Task k's open neurons at step t into loc[:n], n returned. The task keeps its open
    list (``events``) from step t - 1: when the phase did not fall (beta_t >= beta_{t-1})
    the neurons of the points in (beta_{t-1}, beta_t] toggle, otherwise (a new period, the
    call's first step, or a NaN phase) the list restarts empty and the points <= beta_t
    toggle. A neuron is then open where an odd number of its points are <= beta_t, as
    the scan of the table decides, with work per step proportional to the points passed
    (at a 10 % rate ~0.2 instead of ~1 us for 256 neurons). Only the worker running task
    k at step t touches its state; a worker claims task k of step t only after seeing
    every task of step t - 1 done, so it sees the list as the last step left it."""
    val, who, cnt, ol, pos, state = ev
    c = k * _STRIDE
    e = state[c]
    n = state[c + 1]
    bt = base[t]
    if t == 0 or not bt >= base[t - 1]:
        for p in range(n):
            pos[k, ol[k, p]] = -1
        n = 0
        e = 0
    E = cnt[k]
    while e < E and val[k, e] <= bt:
        j = who[k, e]
        e += 1
        p = pos[k, j]
        if p < 0:  # opens: appended
            pos[k, j] = n
            ol[k, n] = j
            n += 1
        else:  # closes: the last open neuron takes its place
            n -= 1
            last = ol[k, n]
            ol[k, p] = last
            pos[k, last] = p
            pos[k, j] = -1
    state[c] = e
    state[c + 1] = n
    for p in range(n):
        loc[p] = ol[k, p]
    return n


@nb.njit(cache=True, fastmath=True)
def _task(k, t, job, hp, q, seq, scratch):
    """Block k of step t: seq[t, block] = h_t from h_{t-1} = hp[q] (h0, or seq[t - 1]: the
    outputs are the state, no separate buffer). A rhythmic gate's open
    neurons come from its table (``rh``, ``rhythm_args``: no (T, H) rows at all) as the
    task's list kept up to date by the points the phase passed since the last step
    (``_open_from_events``), or else by scanning the block's gate row, with no compacted
    lists (the (T, H) compaction would cost more than this scan). The scan is branchless (a
    random 10 % open set mispredicts every branch on it) and copies the state of the whole
    block forward in the same pass; the open neurons are overwritten afterwards.

    Three passes over the open neurons: the recurrent dot products (streaming W_hh rows,
    nothing else in the loop), the candidates as one vectorised loop over the block
    (``_common.gru_candidates``: the bits of ``gru_candidate``; n rounded up to 16 lanes
    over padding, scratch ``sc`` has H + 16 columns), then the blend into seq[t]. At H = 512,
    10 % open, the candidates took ~16 ns a neuron in the dot loop and take ~2.5 here.

    ``job`` = (ntasks, is_gru, gkind, src, W, bias, gvals, rh, ev): the run's constants
    (``forward``); ``scratch`` = (acc, xb, loc, sc): the worker's own buffers."""
    ntasks, is_gru, gkind, src, W, bias, gvals, rh, ev = job
    acc, xb, loc, sc = scratch
    H = seq.shape[1]
    lo = _bound(k, ntasks, H)
    hi = _bound(k + 1, ntasks, H)
    n = 0
    tabled = rh[0]
    if gkind == DENSE:
        for j in range(lo, hi):
            loc[n] = j
            n += 1
    elif tabled:
        # the gate from its table (``kernels/rhythm.py``): open where an odd number of the
        # neuron's points are <= the step's shared phase, the task's open list updated by
        # the points passed since the last step (comparisons of stored values only: the bits
        # of the plan under fastmath too); the block's state copied forward in a plain loop
        n = _open_from_events(k, t, rh[1], ev, loc)
        for j in range(lo, hi):
            seq[t, j] = hp[q, j]
    else:
        # one pass copies the block's state forward and lists its open neurons (branchless,
        # as ``_common.scan_open``): x0.95 at 1 % open, x0.98-1.01 at 5-10 % against two passes
        for j in range(lo, hi):
            seq[t, j] = hp[q, j]
            loc[n] = j
            n += np.int64(gvals[t, j] != 0)
    nr = 3 if is_gru else 1
    step_input(src, 0, t, loc, 0, n, False, H, nr, xb[0])
    if n == 0:
        return
    packed = packed_gru(is_gru, W, H)
    for p in range(n):  # sc rows in: ur (or u), uz, hn, h; out: f (GRU also r, z, n)
        i = loc[p]
        if packed:
            dots_packed(W, i, H, hp, q, acc)
        else:
            dots1(is_gru, W, i, H, hp, q, acc)
        sc[0, p] = acc[0, 0] + bias[i]
        if is_gru:
            sc[1, p] = acc[1, 0] + bias[H + i]
            sc[2, p] = acc[2, 0] + bias[2 * H + i]
        sc[3, p] = hp[q, i]
    lanes = (n + 15) // 16 * 16
    if is_gru:
        gru_candidates(lanes, xb, 0, sc)
    else:
        rnn_candidates(lanes, xb, 0, sc)
    for p in range(n):
        i = loc[p]
        if gkind == DENSE:
            seq[t, i] = sc[4, p]
        else:
            g = rh[3][0] if tabled else gvals[t, i]  # 1 (open), as loaded: h + 1 (f - h)
            hi_ = sc[3, p]
            seq[t, i] = hi_ + g * (sc[4, p] - hi_)


@nb.njit(cache=True, inline="always")
def _claim(k, t, sync):
    """Claim task k of step t (test, then compare-and-swap)."""
    c = 2 * _STRIDE * k
    return load_acquire(sync, c) == t - 1 and cas(sync, c, t - 1, t)


@nb.njit(cache=True, inline="always")
def _run_claimed(k, t, job, hp, q, seq, scratch, sync):
    """Claim task k of step t and, if this worker got it, run it and mark it done."""
    if not _claim(k, t, sync):
        return False
    _task(k, t, job, hp, q, seq, scratch)
    store_release(sync, (2 * k + 1) * _STRIDE, t)
    return True


@nb.njit(cache=True, inline="always")
def _step(p, t, job, hp, q, seq, scratch, sync, spin):
    """Worker p at step t: its own task, then wait for the others (doing one whose owner is
    late), then wait for its own task if another worker took it."""
    ntasks = job[0]
    _run_claimed(p, t, job, hp, q, seq, scratch, sync)
    for k in range(1, ntasks):
        kk = (p + k) % ntasks
        d = (2 * kk + 1) * _STRIDE
        polls = 0
        while load_acquire(sync, d) < t:
            polls += 1
            if polls > STEAL and _run_claimed(kk, t, job, hp, q, seq, scratch, sync):
                break
            if polls > spin:
                cpu_yield()
    d = (2 * p + 1) * _STRIDE
    while load_acquire(sync, d) < t:
        cpu_yield()


@nb.njit(cache=True)
def _worker(p, job, h0, out, sync, spin):
    """Worker p over all steps. Step 0 reads h0, step t > 0 reads out[0, t - 1]: two call
    sites, so that no array variable is rebound and no row view is made inside the time
    loop over the shared output (each would be a reference-count update on memory that the
    other threads' views share: a cache line bouncing between the cores at every step; the
    tasks' views of their own scratch are private to the worker)."""
    T = out.shape[1]
    H = out.shape[2]
    acc = np.empty((3, 4), np.float32)
    xb = np.zeros((1, 3 * (H + 16)), np.float32)  # padding lanes of the candidate loop: finite
    sc = np.zeros((8, H + 16), np.float32)
    loc = np.empty(H, np.int32)
    scratch = (acc, xb, loc, sc)
    seq = out[0]
    if T > 0:
        _step(p, 0, job, h0, 0, seq, scratch, sync, spin)
    for t in range(1, T):
        _step(p, t, job, seq, t - 1, seq, scratch, sync, spin)


@nb.njit(cache=True, parallel=True)
def forward(is_gru, src, h0, weights, gate, rh, workers, out, hT):
    """B = 1 forward (input ``src``, a ``_common.Source``; h0 (1, H); ``weights`` W, bias;
    ``gate``: kind and gvals of a ``_common.Gate``; ``rh``: ``rhythm_args``) split into
    ``workers`` = (ntasks, nworkers, spin): ntasks neuron blocks run by prange(nworkers)
    workers (worker p owns task p; nworkers <= ntasks, any of them may be absent or run
    late; ``spin``: polls before a wait also yields). Writes out (1, T, H) and hT (1, H)."""
    ntasks, nworkers, spin = workers
    if not 1 <= nworkers <= ntasks:
        raise ValueError("split.forward needs 1 <= nworkers <= ntasks")
    T = out.shape[1]
    H = h0.shape[1]
    sync = np.empty(2 * _STRIDE * ntasks, np.int64)
    for j in range(sync.shape[0]):
        sync[j] = -1
    ev = events(rh, ntasks, H)
    # the run's constants travel to the workers as one flat tuple of what the tasks read (a
    # parallel loop takes tuples apart one level only, and every array passed on to a task
    # costs time at every step: measured x1.05 at H = 128 with the whole bundles passed)
    W, bias, gkind, gvals = weights.W, weights.bias, gate.kind, gate.gvals
    for p in nb.prange(nworkers):
        _worker(p, (ntasks, is_gru, gkind, src, W, bias, gvals, rh, ev), h0, out, sync, spin)
    for j in range(H):
        hT[0, j] = out[0, T - 1, j] if T > 0 else h0[0, j]
