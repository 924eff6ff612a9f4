"""Benchmark of the Triton recurrence kernels (issue 7): one command, one table.

    python tools/bench_triton.py            # full grid, < 5 min on one H100 (target)
    python tools/bench_triton.py --quick    # B = 64 only, rates 100 / 10 %
    TRITON_INTERPRET=1 python tools/bench_triton.py --quick --tiny   # CPU smoke run

Rows: backend (triton, triton-grid: the multi-program RNN / GRU kernels of
kernels/triton/grid.py, exact fp32, and triton-grid-tf32 for the GRU: the same with TF32
dot products, the regime of cuDNN's GRU by default; torch reference; torch.nn.GRU /
cuDNN), cell, B, H, T, update
rate of a batch-uniform rhythmic gate (frozen: no gate gradient, so the forward
compacts the open rows), forward and forward+backward milliseconds, and for the
non-recurrent LIF kernel the achieved bandwidth of its compulsory traffic (read the
input current, write membrane and spikes) in GB/s. Imports only torch, triton, numpy
(and su_neuro's kernels, which import no snnTorch / tonic).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Spike(torch.autograd.Function):
    """Heaviside with the atan surrogate (alpha = 2), so the reference needs no snnTorch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1.0 / (1 + (math.pi / 2 * 2.0 * x) ** 2))


class _AtanSpike:
    name, code, scale, gain, compact = "atan", 0, 2.0, 1.0, False

    def __call__(self, x):
        return _Spike.apply(x)


def rhythm(T: int, H: int, rate: float, device, generator=None) -> torch.Tensor:
    """(T, H) batch-uniform gate: each neuron open for a fraction `rate` of a period."""
    if rate >= 1.0:
        return torch.ones(T, H, device=device)
    period = max(1, round(1.0 / rate))
    phase = torch.randint(0, period, (H,), generator=generator).to(device)
    t = torch.arange(T, device=device)[:, None]
    return (((t + phase[None]) % period) < max(1, round(rate * period))).float()


def _cudnn(gru, x, backward: bool) -> None:
    with torch.set_grad_enabled(backward):
        y, _ = gru(x)
    if backward:
        y.sum().backward()


def _step(call, backward: bool) -> None:
    fn, *args = call
    with torch.set_grad_enabled(backward):
        out, hT, _, _ = fn(*args)
    if backward:
        (out.sum() + hT.sum()).backward()


def _with_grid(fused, *args, tf32=False, split=None, precision=None, dw=None, bwd=None):
    """The Triton backend with the multi-program kernels on (kernels/triton/grid.py); with
    ``tf32`` their fp32 dot products use TF32 tensor cores (torch's matmul switch), the
    regime cuDNN's GRU runs in by default (``torch.backends.cudnn.allow_tf32``); ``split``
    and ``dw`` (True / False) set the forward's split steps and the backward's dU, ``bwd``
    the backward's own (bh, bk, warps), instead of the tiles' choice, and ``precision``
    ("ieee", "tf32", "tf32x3") the dot precision instead of torch's flags."""
    from su_neuro.kernels.triton import grid, grid_tiles

    matmul = torch.backends.cuda.matmul
    knobs = (grid, "ENABLED", True), (grid_tiles, "SPLIT", split), (grid_tiles, "DW", dw), (grid_tiles, "BWD", bwd), \
        (grid_tiles, "PRECISION", precision), (matmul, "allow_tf32", tf32)
    saved = [getattr(m, name) for m, name, _ in knobs]
    for m, name, value in knobs:
        setattr(m, name, value)
    try:
        return fused(*args)
    finally:
        for (m, name, _), value in zip(knobs, saved, strict=True):
            setattr(m, name, value)


def _max_diff(a, b, call) -> str:
    """Largest |difference| of two backends' forward outputs (a race shows up here)."""
    with torch.no_grad():
        oa = a(*call)[0].float()
        ob = b(*call)[0].float()
    return f"{(oa - ob).abs().max().item():.1e}"


def _grid_resources() -> str:
    """Programs, registers, spills and shared memory of the last native grid launches."""
    from su_neuro.kernels.triton import grid

    out = []
    for name, r in sorted(grid.LAUNCHED.items()):
        out.append(f"{name} {r['programs']} r{r['regs']} s{r['spills']} sh{r['shared']} w{r['warps']}")
    return (" " + "; ".join(out)) if out else ""


def timed(fn, reps: int, cuda: bool) -> float:
    fn()  # warm-up (compilation)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (with TRITON_INTERPRET=1 on a CPU)")
    ap.add_argument("--T", type=int, default=None, help="sequence length (default 1024)")
    ap.add_argument("--no-grid", action="store_true",
                    help="leave out the multi-program kernels (triton-grid rows)")
    args = ap.parse_args(argv)

    interp = os.environ.get("TRITON_INTERPRET") == "1"
    cuda = torch.cuda.is_available()
    if not cuda and not (interp and args.tiny):
        print(
            "bench_triton: needs a CUDA GPU (torch.cuda.is_available() is False). "
            "On a CPU only the smoke run works: TRITON_INTERPRET=1 python tools/bench_triton.py --quick --tiny",
            file=sys.stderr,
        )
        return 2
    import triton  # noqa: F401  (fail here, clearly, if it is missing)

    from su_neuro.gates import GateInput
    from su_neuro.kernels.reference import LIFParams
    from su_neuro.kernels.reference import recurrence as reference
    from su_neuro.kernels.triton.ops import recurrence as fused

    device = torch.device("cuda" if cuda else "cpu")
    T = args.T or (4 if args.tiny else 1024)
    batches = [2] if args.tiny else ([64] if args.quick else [1, 64])
    hiddens = [8] if args.tiny else [256, 1024]
    rates = [1.0, 0.1] if (args.quick or args.tiny) else [1.0, 0.5, 0.1, 0.01]
    cells = ["gru", "rnn", "lif", "rlif"]
    reps = 1 if args.tiny else (2 if args.quick else 3)
    torch.manual_seed(0)

    rows = []

    def add(backend, cell, B, H, rate, fwd, fb, bw=""):
        rows.append((backend, cell, B, H, T, f"{100 * rate:g}%", f"{fwd:.2f}", f"{fb:.2f}", bw))

    for B in batches:
        for H in hiddens:
            # cuDNN GRU (dense): the best dense alternative
            gru = torch.nn.GRU(H, H, batch_first=True).to(device)
            x = torch.randn(B, T, H, device=device, requires_grad=True)

            add("cudnn", "gru", B, H, 1.0, timed(partial(_cudnn, gru, x, False), reps, cuda),
                timed(partial(_cudnn, gru, x, True), reps, cuda))
            for cell in cells:
                base = "lif" if cell == "rlif" else cell
                G = 3 * H if base == "gru" else H
                has_w = cell != "lif"
                xp = torch.randn(B, T, G, device=device, requires_grad=True)
                h0 = torch.zeros(B, H, device=device, requires_grad=True)
                s0 = torch.zeros(B, H, device=device) if base == "lif" else None
                w = (torch.randn(G, H, device=device) / math.sqrt(H)).requires_grad_() if has_w else None
                b = torch.zeros(G, device=device, requires_grad=True) if has_w else None
                lif = LIFParams(torch.full((H,), 0.9, device=device), 1.0, "subtract", _AtanSpike()) \
                    if base == "lif" else None
                for rate in rates:
                    gi = GateInput("rhythmic", rhythm(T, H, rate, device))
                    impls = [("triton", fused)]
                    if base != "lif" and not args.no_grid:
                        impls.append(("triton-grid", partial(_with_grid, fused)))
                        if base == "gru":
                            impls.append(("triton-grid-tf32", partial(_with_grid, fused, tf32=True)))
                    if rate == rates[0]:
                        impls.append(("torch", reference))  # its cost does not depend on the rate

                    for name, fn in impls:
                        call = (fn, base, xp, h0, s0, w, b, gi, lif)
                        tf = timed(partial(_step, call, False), reps, cuda)
                        tfb = timed(partial(_step, call, True), reps, cuda)
                        extra = ""
                        if name == "triton" and cell == "lif" and rate == 1.0:
                            nbytes = 3 * B * T * H * xp.element_size()
                            extra = f"{nbytes / (tf * 1e-3) / 1e9:.1f}"
                        if name.startswith("triton-grid"):
                            extra = _max_diff(fused, fn, (base, xp, h0, s0, w, b, gi, lif))
                            extra += _grid_resources()
                        add(name, cell, B, H, rate, tf, tfb, extra)

    head = ("backend", "cell", "B", "H", "T", "rate", "fwd ms", "fwd+bwd ms",
            "LIF GB/s | grid max|d|")
    width = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    card = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter: timings meaningless)"
    print(f"# bench_triton  device: {card}  torch {torch.__version__}  triton {triton.__version__}")
    print("  ".join(h.ljust(w) for h, w in zip(head, width, strict=True)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, width, strict=True)))
    print("rlif = recurrent LIF (spike-driven U s); lif = feed-forward LIF (bandwidth row);"
          " rhythmic gate frozen (no gate gradient); triton-grid = the multi-program kernels"
          " (-tf32: their fp32 dot products on TF32 tensor cores, as cuDNN's GRU by default)"
          " (kernels/triton/grid.py), last column: largest |difference| of its forward output"
          " from the per-row kernel's, then for its last GPU launches: programs (NH x NB),"
          " registers, spills, shared bytes, warps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
