"""A/B/C of the input projection in the Numba training path (GEMM path, issue 23).

One training step (forward + backward, the input needing its gradient, as behind an
embedding) of a one-layer RNN / GRU on the numba backend, for three ways to project the input
x_t W_ih^T + b_ih:

* ``unfused``  torch projects the whole (B, T, F) input to a (B, T, G) array beforehand; the
               backward gets its full (B, T, G) gradient and runs two GEMMs over it;
* ``loops``    the kernels project the computed rows themselves, one short dot product per
               row and sample (forward) and per nonzero entry (backward);
* ``gemm``     the kernels project the computed rows themselves as per-step GEMMs against the
               step's gathered W_ih rows (forward, dW_ih, dx).

The rules that pick one (``choose.FUSED_TRAIN_MAX_INPUT(_DENSE)``,
``FUSED_DOT_MIN_INPUT(_DENSE)``) were set from this table. Times are medians of ``--repeats`` rounds;
each round runs the three in a rotated order, so that none is always first or last.

``--inference``: a forward without gradients instead (B = 1 streams by default), ``unfused``
against ``fused`` (the kernels project the computed rows), behind ``choose.FUSED_MAX_INPUT``
and ``FUSED_STREAM_MAX_INPUT``.

Usage: python tools/bench_fused_input.py [--threads 2] [--steps 1000] [--features 8,16,32,64]
       python tools/bench_fused_input.py --inference [--batch 1] [--rate 0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="32 (training), 1 (--inference)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=0.1, help="the rhythmic gate's update rate")
    ap.add_argument("--features", default="4,8,16,32,64,128,256")
    ap.add_argument("--cells", default="gru,rnn")
    ap.add_argument("--gates", default="rhythmic,dense")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--inference", action="store_true", help="time a forward without gradients (default batch 1)")
    args = ap.parse_args(argv)
    if args.batch is None:
        args.batch = 1 if args.inference else 32
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))  # before numba is imported

    import numba
    import torch

    from su_neuro.kernels.numba import _common, choose
    from su_neuro.models import build_layer

    _common.start_threads()  # Numba's pool, started by get_num_threads, would reset torch's count
    before = (torch.get_num_threads(), numba.get_num_threads())
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_flush_denormal(True)
    try:
        return _bench(args, choose, build_layer)
    finally:  # the caller's thread counts (a test calls main inside its own process)
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def _bench(args, choose, build_layer) -> list[dict]:
    import torch

    B, H, T = args.batch, args.hidden, args.steps
    # each variant as values of choose's rules
    variants = {
        "unfused": dict(FUSED_TRAIN_MAX_INPUT=0, FUSED_TRAIN_MAX_INPUT_DENSE=0),
        "loops": dict(FUSED_TRAIN_MAX_INPUT=1 << 30, FUSED_TRAIN_MAX_INPUT_DENSE=1 << 30,
                      FUSED_DOT_MIN_INPUT=1 << 30, FUSED_DOT_MIN_INPUT_DENSE=1 << 30),
        "gemm": dict(FUSED_TRAIN_MAX_INPUT=1 << 30, FUSED_TRAIN_MAX_INPUT_DENSE=1 << 30,
                     FUSED_DOT_MIN_INPUT=1, FUSED_DOT_MIN_INPUT_DENSE=1),
    }
    if args.inference:
        variants = {"unfused": {"fuses_input": lambda *a, **k: False},
                    "fused": {"fuses_input": lambda cell, gate, *a, **k: gate in ("rhythmic", "dense")}}
    names = list(variants)

    @contextlib.contextmanager
    def rules(values):
        """choose's rules set to ``values`` for the duration, then as they were."""
        saved = {k: getattr(choose, k) for k in values}
        try:
            for key, value in values.items():
                setattr(choose, key, value)
            yield
        finally:
            for key, value in saved.items():
                setattr(choose, key, value)

    def step(layer, x, up):
        if args.inference:
            with torch.no_grad():
                layer(x)
            return
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = layer(x)
        (out * up).sum().backward()

    sizes = (f"  (B = {B}, H = {H}, T = {T}, rhythmic rate {args.rate}, {args.threads} threads, median of "
             f"{args.repeats}{', inference' if args.inference else ''})")
    if args.inference:
        print("| cell | gate | F | unfused ms | fused ms | unfused / fused | rule picks |" + sizes)
        print("|---|---|---|---|---|---|---|")
    else:
        print("| cell | gate | F | unfused ms | loops ms | gemm ms | unfused / gemm | loops / gemm | rule picks |"
              + sizes)
        print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for cell in args.cells.split(","):
        for gate in args.gates.split(","):
            for F in (int(f) for f in args.features.split(",")):
                torch.manual_seed(0)
                spec = {"kind": "rhythmic", "init_rate": args.rate} if gate == "rhythmic" else "dense"
                layer = build_layer(cell, F, H, gate=spec, backend="numba")
                x = torch.randn(B, T, F).requires_grad_(not args.inference)
                up = torch.randn(B, T, H)
                times = {n: [] for n in names}
                for r in range(args.repeats + 1):  # round 0: compile and warm up, not timed
                    for k in range(len(names)):
                        name = names[(r + k) % len(names)]
                        with rules(variants[name]):
                            t0 = time.perf_counter()
                            step(layer, x, up)
                            if r:
                                times[name].append(time.perf_counter() - t0)
                ms = {n: 1e3 * statistics.median(v) for n, v in times.items()}
                if args.inference:
                    fused = choose.fuses_input(cell, gate, B, F, False, hidden=H, threads=args.threads)
                    row = {"cell": cell, "gate": gate, "F": F, **ms, "picks": "fused" if fused else "unfused"}
                    rows.append(row)
                    print(f"| {cell} | {gate} | {F} | {ms['unfused']:.1f} | {ms['fused']:.1f} | "
                          f"{ms['unfused'] / ms['fused']:.2f} | {row['picks']} |", flush=True)
                    continue
                row = {"cell": cell, "gate": gate, "F": F, **ms, "picks": choose.train_projection(gate, F)}
                rows.append(row)
                print(f"| {cell} | {gate} | {F} | {ms['unfused']:.1f} | {ms['loops']:.1f} | {ms['gemm']:.1f} | "
                      f"{ms['unfused'] / ms['gemm']:.2f} | {ms['loops'] / ms['gemm']:.2f} | {row['picks']} |",
                      flush=True)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
