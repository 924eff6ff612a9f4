"""Dense RNN / GRU stacks on a CPU: the Numba kernels against torch's own RNN op (backend "nn").

    python tools/bench_dense_cpu.py [--repeats 5] [--only float32|float64]

One table of ratios measured side by side in one run: for each cell, batch, width and mode
(forward without autograd; forward + backward of every gradient), the median time of an
SUGRU / SURNN with a DenseGate on ``backend="numba"`` and on ``backend="nn"`` (the op behind
``torch.nn.GRU``), their calls alternated round after round (tools/bench_numba.py's
``alternated``: both sides see the same states of a shared host). ``nn_pays`` marks where
``nn`` was faster; ``kernels/torch_rnn.py``'s CPU rule for ``backend="auto"`` comes from this
table (docs/benchmarks.md). The float64 rows compare ``nn`` with the reference's per-step
loop (``backend="torch"``): Numba runs float32 only, so in float64 ``auto`` chooses between
those two.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "2")  # before numba is imported

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_numba import alternated  # noqa: E402

import su_neuro  # noqa: E402

torch.set_num_threads(2)
torch.set_flush_denormal(True)

CASES = [(1, 32, 1000), (1, 128, 1000), (1, 512, 1000), (32, 32, 200), (32, 128, 200), (32, 512, 200)]
# float64: "auto" runs nn there instead of the reference; a few sizes show whether that pays
CASES_F64 = [(1, 128, 1000), (32, 128, 200)]
GROUPS = {"float32": (torch.float32, "numba", CASES), "float64": (torch.float64, "torch", CASES_F64)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--F", type=int, default=16, help="input features")
    ap.add_argument("--only", choices=tuple(GROUPS), help="one dtype's rows only")
    args = ap.parse_args(argv)
    rows = []
    torch.manual_seed(0)
    cases = [(dt, other, cell, cls, B, H, T)
             for name, (dt, other, sizes) in GROUPS.items() if args.only in (None, name)
             for cell, cls in (("gru", su_neuro.SUGRU), ("rnn", su_neuro.SURNN))
             for B, H, T in sizes]
    for dt, other, cell, cls, B, H, T in cases:
        base = cls(args.F, H, gate="dense", backend=other).to(dt)
        nn = cls(args.F, H, gate="dense", backend="nn").to(dt)
        nn.load_state_dict(base.state_dict())
        x = torch.randn(B, T, args.F, dtype=dt, requires_grad=True)

        def fwd(m, x=x):
            with torch.no_grad():
                m(x)

        def fwd_bwd(m, x=x):
            m(x)[0].sum().backward()

        for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            t_base, t_nn = alternated([lambda m=base, f=fn: f(m), lambda m=nn, f=fn: f(m)], args.repeats)
            rows.append((str(dt)[6:], other, cell, B, H, T, mode, 1e3 * t_base, 1e3 * t_nn, t_base / t_nn))
            print(*rows[-1][:7], f"{other} {1e3 * t_base:.1f} ms  nn {1e3 * t_nn:.1f} ms", flush=True)
    print(f"\n# bench_dense_cpu  {platform.processor() or platform.machine()}  torch {torch.__version__}  "
          f"threads {torch.get_num_threads()}  load {os.getloadavg()[0]:.1f}")
    print(f"{'dtype':7} {'other':6} {'cell':5} {'B':>3} {'H':>4} {'T':>5} {'mode':8} {'other ms':>9} {'nn ms':>9} "
          f"{'other/nn':>9}  nn_pays")
    for dt, other, cell, B, H, T, mode, a, b, r in rows:
        print(f"{dt:7} {other:6} {cell:5} {B:3d} {H:4d} {T:5d} {mode:8} {a:9.1f} {b:9.1f} {r:9.2f}  "
              f"{'yes' if r > 1 else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
