"""Which implementation runs a call: measured, not guessed (pure functions of the call's sizes).

Three ways to run the same rhythmic RNN / GRU call on CUDA: the torch reference (cuBLAS
GEMMs, a launch or ten per step), the per-row kernels (``rows.py``: one program per batch
row, U streamed per row) and the multi-program kernels (``grid.py``: a step shared by the SMs, U shared by a
batch block). Which is fastest depends on the batch, the width, the update rate and whether
a backward follows. :data:`MEASURED` is the table that decides, from one H200
(``tools/bench_gpu.py --table``, 2026-12-04, raw output in
``docs/gpu/h200-2026-12-04-issue20/run4``; GRU, T = 256, exact fp32, frozen rhythmic gate):
milliseconds of (forward without autograd, forward + backward) for each implementation.
A call takes the measured point nearest to it (batch, width and rate on log scales, ties to
the larger batch, then width) and runs the fastest implementation there. The RNN uses the GRU's
table: its one measured point (B = 64, H = 1024, 10 %: per-row 19.0 / 64.7 ms, multi-program
27.5 / 44.0 ms) has the same winners. The torch reference's times do not depend on the rate
(it computes every row); those at 100 % serve both rates.

:func:`kernels` names the Triton kernels that run a call once the backend runs it.
"""

from __future__ import annotations

import math

__all__ = ["MEASURED", "fastest", "kernels"]

#: (B, H, rate): ((torch fwd, fwd+bwd), (per-row fwd, fwd+bwd), (multi-program fwd, fwd+bwd)) ms;
#: None: left out of the measurement (estimated over 2 s)
MEASURED = {
    (1, 256, 1.0): ((56.09, 199.16), (7.50, 22.79), (1.81, 3.32)),
    (1, 256, 0.1): ((56.09, 199.16), (1.25, 3.90), (1.60, 3.19)),
    (1, 1024, 1.0): ((58.52, 195.74), (67.98, 281.36), (2.17, 4.95)),
    (1, 1024, 0.1): ((58.52, 195.74), (8.90, 34.33), (2.01, 4.18)),
    (1, 4096, 1.0): ((57.20, 210.88), (1296.91, 7817.53), (17.39, 43.27)),
    (1, 4096, 0.1): ((57.20, 210.88), (136.50, 861.61), (5.55, 14.94)),
    (16, 256, 1.0): ((54.89, 184.64), (7.17, 23.42), (5.47, 10.62)),
    (16, 256, 0.1): ((54.89, 184.64), (1.26, 3.93), (5.40, 7.81)),
    (16, 1024, 1.0): ((50.58, 238.83), (69.44, 289.43), (16.79, 34.53)),
    (16, 1024, 0.1): ((50.58, 238.83), (9.06, 36.91), (17.22, 21.58)),
    (16, 4096, 1.0): ((67.24, 381.52), (1252.93, None), (133.03, 271.88)),
    (16, 4096, 0.1): ((67.24, 381.52), (132.10, 768.59), (68.01, 93.29)),
    (64, 256, 1.0): ((45.74, 208.72), (7.51, 24.05), (5.12, 10.98)),
    (64, 256, 0.1): ((45.74, 208.72), (1.34, 4.16), (5.19, 8.06)),
    (64, 1024, 1.0): ((65.54, 221.50), (69.58, 295.54), (32.43, 65.34)),
    (64, 1024, 0.1): ((65.54, 221.50), (10.27, 53.59), (17.55, 26.36)),
    (64, 4096, 1.0): ((67.01, 203.24), (1256.30, None), (518.83, 1072.65)),
    (64, 4096, 0.1): ((67.01, 203.24), (132.91, 793.24), (68.31, 159.57)),
    (256, 256, 1.0): ((54.82, 210.66), (9.40, 32.16), (10.43, 21.17)),
    (256, 256, 0.1): ((54.82, 210.66), (1.42, 5.80), (10.46, 14.03)),
    (256, 1024, 1.0): ((68.86, 198.71), (91.01, None), (123.62, 260.90)),
    (256, 1024, 0.1): ((68.86, 198.71), (11.87, 65.18), (36.05, 64.02)),
}
_NAMES = ("torch", "rows", "grid")


def _nearest(B: int, H: int, rate: float):
    """The measured point nearest to a call: the sum of the distances of batch, width and
    rate on log2 scales (the two measured rates, 100 % and 10 %, split at 32 %); of equally
    near points the one measured with the larger batch, then the larger width (the table is
    searched in that order), as a larger call is the costlier one to misjudge."""

    def dist(key):
        b, h, r = key
        return (abs(math.log2(max(B, 1) / b)) + abs(math.log2(max(H, 1) / h))
                + abs(math.log2(max(rate, 1e-6) / r)), -b, -h)

    return min(MEASURED, key=dist)


def fastest(B: int, H: int, rate: float, training: bool, among=_NAMES) -> str:
    """The implementation ("torch", "rows" or "grid") measured fastest at the point nearest
    to a call of batch B, width H and update rate ``rate``, forward only or with a backward
    (``training``); only those named in ``among`` compete. An implementation left out of the
    measurement (too slow to time) never wins."""
    times = MEASURED[_nearest(B, H, rate)]
    col = 1 if training else 0
    best = None
    for name, t in zip(_NAMES, times, strict=True):
        if name in among and t[col] is not None and (best is None or t[col] < best[1]):
            best = (name, t[col])
    if best is None:
        raise ValueError(f"none of {among} was measured at B={B}, H={H}, rate={rate}")
    return best[0]


def kernels(cell: str, gate: str, recurrent: bool, grid: bool) -> str:
    """The Triton kernels that run a call's forward: "lif_feedforward" (the streaming kernel of
    ``lif_feedforward.py``) for a LIF without recurrent weights and a dense or event gate;
    "grid" (``grid.py``) where the multi-program kernels are eligible (``grid``:
    ``grid.eligible``'s answer); "rows" (``rows.py``) otherwise. A backward runs "grid" where
    eligible, else "rows" (the feed-forward LIF's included)."""
    if cell == "lif" and not recurrent and gate != "rhythmic":
        return "lif_feedforward"
    return "grid" if grid else "rows"
