"""Benchmark of the Numba CPU backend against the torch reference and dense baselines.

Prints one table of ratios measured side by side in one run (issue 3's four targets):

1. streaming inference, suGRU rhythmic ~10%, B=1, H=512, T=10,000, F=16: numba vs torch
2. work follows activity: the same run at rates 100/50/20/10/5/1 %
3. training step (forward + backward, all gradients, from fixed random gradients of the
   output and final state), suGRU rhythmic ~20%, triangle surrogate, B=32, H=128, T=784,
   F=1: numba vs torch.nn.GRU and vs torch reference; 100% too
4. suLIF recurrent, B=1, H=1024, T=10,000, dense and rhythmic 10%, vs snnTorch RLeaky (dense)
5. the backend="auto" rule at small sizes: numba vs the reference, dense gate, fwd+bwd
6. the rule past B*H = 4096, per gate: numba vs what auto runs otherwise (the reference;
   torch's RNN op for a dense stack), RNN/GRU, rhythmic 10/50/100 %, event, dense, and two
   stacks of mixed gates, forward + backward and inference
7. choose.use_gemm: per thread chunk of 2-16 samples, the row-block kernel (``rows``)
   against the per-step GEMM kernel (``gemm``) on the same layer and input, RNN/GRU,
   rhythmic 20 % and dense, H = 128-512, forward + backward and inference

Usage: python tools/bench_numba.py [--quick] [--repeats N] [--only 1,2,...]
Every time is the median over repeats (after one warm-up call that also compiles); the
calls of a group (the reference and numba at 10 % for 1; the six rates of 2; nn.GRU,
numba at 20 % and 100 % and the reference of 3; RLeaky and numba dense and rhythmic of 4)
alternate, round after round, so that both sides of a ratio see the same states of a
shared host, and each timed call follows an untimed one of the same function. The
machine's load average is printed before and after (the 2 cores may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "2")  # before numba is imported

import torch  # noqa: E402

from su_neuro import SUGRU, SULIF  # noqa: E402

torch.set_num_threads(2)


RATES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.01)


def timeit(fn, repeats):
    return alternated([fn], repeats)[0]


def alternated(fns, repeats):
    """Median time of each function over `repeats` rounds that call them in turn (after one
    warm-up call each that also compiles): every side of a ratio sees the same states of a
    shared host, whose speed drifts by tens of percent within a minute. With more than one
    function, each timed call follows an untimed call of the same function, so that every
    sample is a call in steady state (caches, TLB and branch predictors as a repeated call
    leaves them), as a long simulation sees it, not the first call after the other side."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            if len(fns) > 1:
                fn()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def gru_layer(F, H, rate, backend):
    # triangle surrogate of width 0.25 (RhythmicGate's default for compact surrogates, stated
    # explicitly: its support is ~31% of the steps at a 20% rate, width 1 would give ~56%)
    gate = "dense"
    if rate < 1:
        gate = {"kind": "rhythmic", "init_rate": rate, "surrogate": "triangle", "surrogate_params": {"width": 0.25}}
    torch.manual_seed(0)
    return SUGRU(F, H, gate=gate, backend=backend)


def streaming(F, H, T, rate, backend):
    layer = gru_layer(F, H, rate, backend)
    x = torch.randn(1, T, F)

    def run():
        with torch.no_grad():
            layer(x)

    return run


def upstream(B, T, H):
    """Fixed random gradients for the output sequence and the final state: a training step
    is timed as forward + backward of the layer alone. A loss such as out.square().mean()
    would add the same 17-28 ms of torch elementwise work (on the (B, T, H) output and its
    gradient) to both sides of the comparison."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, T, H, generator=g), torch.randn(B, H, generator=g)


def training(F, H, T, B, rate, backend):
    layer = gru_layer(F, H, rate, backend)
    x = torch.randn(B, T, F)
    g_out, g_h = upstream(B, T, H)

    def run():
        layer.zero_grad()
        out, state = layer(x)
        torch.autograd.backward((out, state.h), (g_out, g_h.view_as(state.h)))

    return run


def nn_gru_training(F, H, T, B):
    torch.manual_seed(0)
    gru = torch.nn.GRU(F, H, batch_first=True)
    x = torch.randn(B, T, F)
    g_out, g_h = upstream(B, T, H)

    def run():
        gru.zero_grad()
        out, h = gru(x)
        torch.autograd.backward((out, h), (g_out, g_h.view_as(h)))

    return run


def lif_input(F, T):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, T, F, generator=g) < 0.05).float()


def lif_numba(F, H, T, gate):
    torch.manual_seed(0)
    layer = SULIF(F, H, beta=0.9, recurrent=True, gate=gate, backend="numba")
    x = lif_input(F, T)

    def run():
        with torch.no_grad():
            return layer(x, record=False)[0]

    return run, float(run().mean())


def lif_snntorch(F, H, T):
    import snntorch as snn

    torch.manual_seed(0)
    fc = torch.nn.Linear(F, H)
    rlif = snn.RLeaky(beta=0.9, linear_features=H)
    x = lif_input(F, T)

    def run():
        with torch.no_grad():
            spk, mem = rlif.init_rleaky()
            cur = fc(x[0])
            for t in range(T):
                spk, mem = rlif(cur[t : t + 1], spk, mem)

    return run


def small_step(cell, B, H, T, backend, repeats):
    """Group 5: a dense-gate layer's forward + backward (:func:`gated_call`)."""
    return timeit(gated_call(cell, B, H, T, "dense", backend, True), repeats * 5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="1,2,3,4,5,6,7",
                    help="comma-separated measurement groups to run (default: all)")
    args = ap.parse_args(argv)
    only = {int(k) for k in args.only.split(",")}
    q = args.quick
    R = args.repeats
    rows = []
    load0 = os.getloadavg()

    def row(name, value, target, ok):
        status = "" if target in ("info", "") else ("met" if ok else "MISSED")
        rows.append((name, value, "" if target == "info" else target, status))

    # 1. streaming inference
    F, H, T = 16, (128 if q else 512), (1000 if q else 10_000)
    if only & {1, 2}:
        streaming_rows(row, F, H, T, R, only)
    if 3 in only:
        training_rows(row, q, R)
    if 4 in only:
        lif_rows(row, q, R)
    if 5 in only:
        auto_rows(row, R)
    if 6 in only:
        auto_gate_rows(row, q, R)
    if 7 in only:
        gemm_rows(row, q, R)
    print_table(rows, load0, R)


@contextlib.contextmanager
def rows_forced(on):
    """With ``on``, the numba layer plans (T, H) gate rows instead of asking for the table."""
    from su_neuro.kernels.numba import ops

    keep = ops.rhythm_table
    if on:
        ops.rhythm_table = lambda *args: False
    try:
        yield
    finally:
        ops.rhythm_table = keep


def streaming_rows(row, F, H, T, R, only):
    """Targets 1 and 2: streaming suGRU, B = 1, over the update rates."""
    # target 2: the six rates alternated; target 1: the reference alternated with the 10 %
    # layer, a pair of its own (the ratio of two calls, not of a call and a curve's point)
    t_nb = dict(zip(RATES, alternated([streaming(F, H, T, rate, "numba") for rate in RATES], R),
                    strict=True))
    t_ref = t_one = float("nan")
    if 1 in only:
        t_ref, t_one = alternated([streaming(F, H, T, 0.1, "torch"), streaming(F, H, T, 0.1, "numba")], R)
    layer = gru_layer(F, H, 0.1, "numba")

    def plan(table):
        with torch.no_grad():  # as the streaming run sees it
            layer.gates[0].plan(0, T, dtype=torch.float32, table=table)

    if 1 in only:  # the rhythm table against the (T, H) rows, same layer, calls alternated
        x = torch.randn(1, T, F)
        ab = {}
        for _ in range(R + 1):
            for table in (False, True):
                tic = time.perf_counter()
                with torch.no_grad(), rows_forced(not table):
                    layer(x)
                ab.setdefault(table, []).append(time.perf_counter() - tic)
        t_tab, t_row = (statistics.median(ab[k][1:]) for k in (True, False))
        row(f"1c numba 10% gate evaluated from its table {t_tab * 1e3:.1f} ms / from (T, H) rows {t_row * 1e3:.1f} ms",
            t_tab / t_row, "info", True)  # fmt: skip
    t_rows = timeit(lambda: plan(False), R)
    t_table = timeit(lambda: plan(True), R)  # what the numba layer asks for (docs/core.md)
    row(f"1b RhythmicGate.plan as a table (numba) {t_table * 1e3:.2f} ms; as (T, H) rows {t_rows * 1e3:.1f} ms: "
        "rows / numba 10% (curve)", t_rows / t_nb[0.1], "info", True)  # fmt: skip
    if 1 in only:
        row(f"1 stream suGRU 10% B=1 H={H} T={T}: torch ref {t_ref * 1e3:.0f} ms / numba {t_one * 1e3:.1f} ms",
            t_ref / t_one, ">= 25x", t_ref / t_one >= 25)  # fmt: skip
        row(f"1d the same with numba's time of the rate curve below ({t_nb[0.1] * 1e3:.1f} ms): ref / numba",
            t_ref / t_nb[0.1], "info", True)  # fmt: skip
    for rate in RATES:
        r = t_nb[rate] / t_nb[1.0]
        target = {0.1: "<= 0.25", 0.01: "<= 0.10"}.get(rate, "")
        ok = {0.1: r <= 0.25, 0.01: r <= 0.10}.get(rate, True)
        name = "100% (DenseGate, no plan)" if rate == 1.0 else f"{rate:.0%}"
        row(f"2 numba time at {name} ({t_nb[rate] * 1e3:.1f} ms) / at 100%", r, target, ok)


def training_rows(row, q, R):
    """Target 3: a training step of suGRU against torch.nn.GRU and the reference."""
    F, H, T, B = 1, 128, (196 if q else 784), (8 if q else 32)
    t_gru, t_n20, t_n100, t_r20 = alternated(
        [nn_gru_training(F, H, T, B), training(F, H, T, B, 0.2, "numba"),
         training(F, H, T, B, 1.0, "numba"), training(F, H, T, B, 0.2, "torch")], R)
    row(f"3 train suGRU 20% (triangle w=0.25) B={B} H={H} T={T}: nn.GRU {t_gru * 1e3:.0f} ms / numba "
        f"{t_n20 * 1e3:.0f} ms", t_gru / t_n20, ">= 4x", t_gru / t_n20 >= 4)  # fmt: skip
    row(f"3 train 20%: torch ref {t_r20 * 1e3:.0f} ms / numba", t_r20 / t_n20, ">= 5x", t_r20 / t_n20 >= 5)
    row(f"3 train 100%: nn.GRU / numba dense {t_n100 * 1e3:.0f} ms", t_gru / t_n100, ">= 1x", t_gru / t_n100 >= 1)


def lif_rows(row, q, R):
    """Target 4: recurrent suLIF against snnTorch RLeaky doing the dense work."""
    F, H, T = 100, (256 if q else 1024), (2000 if q else 10_000)
    dense, rate_d = lif_numba(F, H, T, "dense")
    rhythmic, rate_r = lif_numba(F, H, T, {"kind": "rhythmic", "init_rate": 0.1})
    try:
        t_snn, t_ld, t_lr = alternated([lif_snntorch(F, H, T), dense, rhythmic], R)
    except ImportError:  # snntorch missing: no baseline
        t_snn = float("nan")
        t_ld, t_lr = alternated([dense, rhythmic], R)
    row(f"4 suLIF dense H={H} T={T} (spike rate {rate_d:.3f}): RLeaky {t_snn * 1e3:.0f} ms / numba {t_ld * 1e3:.1f} ms",
        t_snn / t_ld, ">= 30x", t_snn / t_ld >= 30)  # fmt: skip
    row(f"4 suLIF rhythmic 10% (spike rate {rate_r:.3f}): RLeaky / numba {t_lr * 1e3:.1f} ms",
        t_snn / t_lr, ">= 30x", t_snn / t_lr >= 30)  # fmt: skip


def auto_rows(row, R):
    """The backend="auto" rule: small sizes, forward + backward, every cell, dense gate."""
    for cell in ("rnn", "gru", "lif"):
        for B, H, T in ((1, 8, 1), (1, 8, 20), (4, 64, 20), (32, 256, 20)):
            tt = {be: small_step(cell, B, H, T, be, R) for be in ("torch", "numba")}
            row(f"5 auto: {cell} B={B} H={H} T={T} fwd+bwd: torch {tt['torch'] * 1e3:.2f} ms / "
                f"numba {tt['numba'] * 1e3:.2f} ms", tt["torch"] / tt["numba"], "info", True)  # fmt: skip


def rule_met(ratio: float, picks_second: bool) -> bool:
    """A rule's pick is met where it is the faster side, or within 10 % of it; ``ratio`` is the
    first side's time over the second's, ``picks_second`` whether the rule runs the second."""
    return ratio >= 1 / 1.1 if picks_second else ratio <= 1.1


AUTO_GATES = {
    "rhythmic 10%": {"kind": "rhythmic", "init_rate": 0.1},
    "rhythmic 50%": {"kind": "rhythmic", "init_rate": 0.5},
    "rhythmic 100%": {"kind": "rhythmic", "init_rate": 1.0},
    "event": {"kind": "event"},
    "dense": "dense",
    # two-layer stacks of mixed gates (``nn`` cannot run them: the reference is the other side)
    "rhythmic 10% + event": [{"kind": "rhythmic", "init_rate": 0.1}, {"kind": "event"}],
    "dense + rhythmic 10%": ["dense", {"kind": "rhythmic", "init_rate": 0.1}],
}


def gated_call(cell, B, H, T, gate, backend, grad):
    """One call of a layer with ``gate`` on ``backend``: forward + backward of every parameter,
    or inference (no gradient)."""
    from su_neuro.models import build_layer

    torch.manual_seed(0)
    layer = build_layer(cell, 4, H, gate=gate, backend=backend, num_layers=len(gate) if isinstance(gate, list) else 1)
    x = torch.randn(B, T, 4)

    def run():
        if not grad:
            with torch.no_grad():
                layer(x)
            return
        layer.zero_grad()
        out, state = layer(x)
        (out.sum() + state.h.sum()).backward()

    return run


def auto_gate_rows(row, q, R):
    """Group 6: past B*H = 4096, is numba faster than what auto runs otherwise, per gate? Each
    row names what auto picks there, met where that is the faster side or within 10 % of it."""
    from su_neuro.backends import resolve

    sizes = ((32, 256, 20),) if q else ((32, 256, 20), (32, 256, 100), (64, 128, 50), (32, 512, 20), (8, 1024, 50))
    for cell in ("rnn", "gru"):
        for B, H, T in sizes:
            for name, gate in AUTO_GATES.items():
                other = "nn" if gate == "dense" else "torch"
                for grad in (True, False):
                    t_other, t_nb = alternated([gated_call(cell, B, H, T, gate, be, grad) for be in (other, "numba")],
                                               R)
                    mode = "fwd+bwd" if grad else "inference"
                    kinds = tuple(sorted({g if isinstance(g, str) else g["kind"]
                                          for g in (gate if isinstance(gate, list) else [gate])}))
                    pick = resolve("auto", torch.device("cpu"), cell, kinds[0] if len(kinds) == 1 else kinds,
                                   torch.float32, batch=B, hidden=H, training=grad).name
                    ratio = t_other / t_nb
                    ok = rule_met(ratio, pick == "numba")
                    row(f"6 {cell} {name} B={B} H={H} T={T} {mode}: {other} {t_other * 1e3:.1f} ms / numba "
                        f"{t_nb * 1e3:.1f} ms", ratio, f"auto={pick}", ok)  # fmt: skip


@contextlib.contextmanager
def gemm_forced(on):
    """The numba layer runs every RNN/GRU call on the GEMM kernel (``on``) or on the row-block
    kernel (not ``on``), whatever the chunk size."""
    from su_neuro.kernels.numba import choose

    names = ("GEMM_MIN_BATCH", "GEMM_MIN_BATCH_DENSE_GRU", "GEMM_MIN_BATCH_DENSE_RNN")
    keep = [getattr(choose, n) for n in names]
    for n in names:
        setattr(choose, n, 1 if on else choose._NEVER)
    try:
        yield
    finally:
        for n, value in zip(names, keep, strict=True):
            setattr(choose, n, value)


def gemm_rows(row, q, R):
    """Group 7: where does the GEMM kernel beat the row-block kernel? The same layer and input
    on both, calls alternated; each row says which kernel the rule (choose.use_gemm) runs
    there, met where that is the faster one or within 10 % of it."""
    from su_neuro.kernels.numba import choose

    threads = int(os.environ["NUMBA_NUM_THREADS"])
    T = 50 if q else 100
    gates = {"rhythmic 20%": {"kind": "rhythmic", "init_rate": 0.2}, "dense": "dense"}
    for cell in ("rnn", "gru"):
        for H in ((128,) if q else (128, 256, 512)):
            for name, gate in gates.items():
                for grad in (True, False):
                    for chunk in ((4, 8) if q else (2, 4, 8, 16)):
                        B = chunk * threads
                        call = gated_call(cell, B, H, T, gate, "numba", grad)

                        def on(flag, call=call):
                            def run():
                                with gemm_forced(flag):
                                    call()
                            return run

                        t_rows, t_gemm = alternated([on(False), on(True)], R)
                        kind = "dense" if gate == "dense" else "rhythmic"
                        rule = "gemm" if choose.use_gemm(kind, B, threads, cell=cell, hidden=H) else "rows"
                        ratio = t_rows / t_gemm
                        ok = rule_met(ratio, rule == "gemm")
                        mode = "fwd+bwd" if grad else "inference"
                        row(f"7 {cell} {name} H={H} B={B} (chunks of {chunk}) T={T} {mode}: rows {t_rows * 1e3:.1f} ms"
                            f" / gemm {t_gemm * 1e3:.1f} ms", ratio, f"rule={rule}", ok)  # fmt: skip


def print_table(rows, load0, R):
    print(
        f"machine: {machine()}; torch threads {torch.get_num_threads()}, "
        f"NUMBA_NUM_THREADS {os.environ['NUMBA_NUM_THREADS']}; median of {R} runs; load average "
        f"(1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, after "
        "{:.2f}/{:.2f}/{:.2f}".format(*os.getloadavg())
    )
    print(f"| {'measurement':<86} | ratio   | {'target':<11} | status |")
    print(f"|{'-' * 88}|---------|{'-' * 13}|--------|")
    for name, value, target, status in rows:
        print(f"| {name:<86} | {value:7.3f} | {target:<11} | {status:<6} |")


if __name__ == "__main__":
    main()
