"""A/B of the two B = 1 streaming forward kernels of the Numba backend: the neuron-split
kernel (kernels/numba/split.py, one block of neurons per thread) against the one-thread
batch-chunk kernel (kernels/numba/rows.py), on the same inputs. The rule that picks one
(``choose.split_tasks``, constants ``SPLIT_MIN_WORK`` and ``SPLIT_WORK_PER_NEURON``) was set
from this table.

Usage: python tools/bench_numba_split.py [--steps T] [--repeats N]
Prints one row per cell x hidden size x open fraction: work units per step (computed
neurons x (rows·H + 64)), both times (medians of N interleaved runs) and the speed-up. Both
kernels find a rhythmic gate's open neurons by scanning its rows (B = 1 inference: no
compaction of the plan into index lists) and read W_hh as ops passes it on streams of
T >= choose.SPLIT_HUGE_STEPS (``ops._stream_weights``: a huge-page copy, a GRU's packed per
neuron).
The input projection runs inside the kernels (as in inference), F = 16.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")  # before numba is imported

import numpy as np  # noqa: E402

from su_neuro.kernels.contract import DENSE, RHYTHMIC  # noqa: E402
from su_neuro.kernels.numba import ops, rows, split  # noqa: E402
from su_neuro.kernels.numba._common import Gate, Saved, Source, Weights  # noqa: E402

F32 = np.float32
_D3, _D2, _D1 = np.zeros((1, 1, 1), F32), np.zeros((1, 1), F32), np.zeros(1, F32)  # unused kernel arguments
_NO_LISTS = (np.zeros(1, np.int64), np.zeros(1, np.int32), _D1, 0, 0.0, 4096)  # off, idx, theta, ...: unused
_NOTHING = Saved(False, *(_D3,) * 7)


def periodic_gate(T, H, rate, rng):
    """Each neuron open one step in round(1 / rate), at its own phase (rate 1: dense)."""
    period = max(1, int(round(1 / rate)))
    phase = rng.integers(0, period, H)
    return (phase[None, :] == (np.arange(T)[:, None] % period)).astype(F32)


def one_thread(is_gru, src, h0, weights, gate, out, hT):
    """The batch-chunk kernel on one sample, scanning the gate rows (no index lists)."""
    rows.forward(is_gru, src, h0, weights, gate, 1, out, hT, _NOTHING)


def median_pair(f1, f2, repeats):
    f1()
    f2()
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f1()
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        f2()
        b.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", default="64,128,256,512,1024")
    args = ap.parse_args(argv)
    T, F = args.steps, 16
    rng = np.random.default_rng(0)
    print(f"| cell | H | open | units/step | one thread ms | split ms | speed-up |  (T = {T}, F = {F})")
    print("|---|---|---|---|---|---|---|")
    for is_gru in (True, False):
        for H in (int(h) for h in args.hidden.split(",")):
            G = 3 * H if is_gru else H
            W = (rng.standard_normal((G, H)) / np.sqrt(H)).astype(F32)
            W = ops._stream_weights(W, is_gru, T)  # as ops passes it to both kernels
            b = np.zeros(G, F32)
            src = Source(1, _D3, rng.standard_normal((1, T, F)).astype(F32), rng.standard_normal((G, F)).astype(F32),
                         b)  # fmt: skip
            weights = Weights(W, _D2, b)
            h0, out, hT = np.zeros((1, H), F32), np.empty((1, T, H), F32), np.empty((1, H), F32)
            for rate in (0.01, 0.02, 0.05, 0.1, 0.2, 1.0):
                gk = DENSE if rate == 1.0 else RHYTHMIC
                gv = periodic_gate(T, H, rate, rng)
                gate = Gate(gk, gv, *_NO_LISTS)
                units = (np.count_nonzero(gv) / T if gk == RHYTHMIC else H) * (G + 64)

                sargs = (is_gru, src, h0, weights, gate, split.rhythm_args(), (2, 2, split.SPIN), out, hT)

                one = functools.partial(one_thread, is_gru, src, h0, weights, gate, out, hT)
                two = functools.partial(split.forward, *sargs)
                a, c = median_pair(one, two, args.repeats)
                name = "gru" if is_gru else "rnn"
                row = f"| {name} | {H} | {rate:.0%} | {units:.0f} | {a * 1e3:.1f} | {c * 1e3:.1f} | {a / c:.2f} |"
                print(row, flush=True)


if __name__ == "__main__":
    main()
