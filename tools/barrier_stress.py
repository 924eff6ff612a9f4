"""Native stress test of the grid kernels' spin barrier (``grid._grid_sync``), a few seconds.

Run by ``tools/gpu_check.sh`` before the kernel tests: a broken barrier then costs seconds,
not a test shard. Each program of a batch block writes its N slots with the step number,
meets the others at the barrier, then reads every program's slots of its block with plain
loads (which may be served from L1) and with ``.cg`` loads (L2), and counts values that are
not this step's; a second barrier keeps the next step's writes away from slow readers.
Programs get unequal busy work each step, so they arrive in a different order every step.
Expected: 0 errors, and every counter equal to the arrivals.

The positive control (``ONE_BARRIER``) leaves out the second barrier: a fast program then
overwrites slots a slow one has not read yet. Errors there show that the check can see a
race; 0 there proves nothing (a quiet machine may not show it).

Under ``TRITON_INTERPRET=1`` (no GPU) only one program per block can run (the interpreter
runs programs one after another, so a second one would wait forever): that checks the
logic only. Exit status: 0 when every barrier run is clean, 1 otherwise, 2 without a GPU
(and without the interpreter).
"""

from __future__ import annotations

import os
import sys
import time

import torch
import triton
import triton.language as tl

from su_neuro.kernels.triton.grid import _grid_sync


@triton.jit
def _stress(slots_ptr, err_ptr, sync_ptr, T, N: tl.constexpr, ONE_BARRIER: tl.constexpr, SYNC: tl.constexpr):
    p = tl.program_id(0)
    q = tl.program_id(1)
    nh = tl.num_programs(0)
    NS: tl.constexpr = 1 if ONE_BARRIER else 2
    base = (q * nh).to(tl.int64) * N
    o = tl.arange(0, N)
    bad_plain = tl.zeros([N], tl.int32)
    bad_cg = tl.zeros([N], tl.int32)
    for t in range(0, T):
        # unequal work: a dependent chain of a program- and step-dependent length
        x = (p * 7 + t * 13) % 97 + 0.0
        for _ in range(0, (p * 37 + t * 11) % 200):
            x = x * 1.0000001 + 0.5
        val = (t + 1) + (x < -1.0).to(tl.int32)  # always t + 1, but the compiler cannot know
        tl.store(slots_ptr + base + p * N + o, tl.zeros([N], tl.int32) + val)
        _grid_sync(sync_ptr, q, (t * NS + 1) * nh, SYNC)
        for k in range(0, nh):
            a = tl.load(slots_ptr + base + k * N + o)
            b = tl.load(slots_ptr + base + k * N + o, cache_modifier=".cg")
            bad_plain += (a != t + 1).to(tl.int32)
            bad_cg += (b != t + 1).to(tl.int32)
        if not ONE_BARRIER:
            _grid_sync(sync_ptr, q, (t * NS + 2) * nh, SYNC)
    tl.atomic_add(err_ptr + 0, tl.sum(bad_plain, 0))
    tl.atomic_add(err_ptr + 1, tl.sum(bad_cg, 0))


def run(nh: int, nb: int, steps: int, one_barrier: bool, n: int = 32) -> tuple[list[int], bool]:
    """One launch of ``nh`` x ``nb`` programs for ``steps`` steps: ([wrong plain reads, wrong
    .cg reads], whether every counter holds the arrivals)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    slots = torch.zeros(nb * nh * n, dtype=torch.int32, device=dev)
    err = torch.zeros(2, dtype=torch.int32, device=dev)
    sync = torch.zeros(nb, dtype=torch.int32, device=dev)
    kw = {"launch_cooperative_grid": True} if dev == "cuda" else {}
    t0 = time.perf_counter()
    _stress[(nh, nb)](slots, err, sync, steps, N=n, ONE_BARRIER=one_barrier, SYNC=True, **kw)
    if dev == "cuda":
        torch.cuda.synchronize()
    arrivals = steps * (1 if one_barrier else 2) * nh
    ok = sync.tolist() == [arrivals] * nb
    errors = err.tolist()
    print(f"nh={nh:4d} nb={nb} T={steps} one_barrier={one_barrier}: errors plain={errors[0]} cg={errors[1]} "
          f"counters={'ok' if ok else sync.tolist()} ({time.perf_counter() - t0:.2f} s)", flush=True)
    return errors, ok


def main() -> int:
    if not torch.cuda.is_available():
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("barrier_stress.py needs a CUDA GPU (or TRITON_INTERPRET=1: the logic alone)", flush=True)
            return 2
        (errors, ok), _ = run(1, 2, 5, False), run(1, 2, 5, True)
        return 0 if errors == [0, 0] and ok else 1
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    steps = int(os.environ.get("STRESS_T", "2000"))
    bad = False
    for nh, nb in ((sms, 1), (max(sms // 4, 1), 4), (2 * sms, 1)):
        try:
            errors, ok = run(nh, nb, steps, False)
            bad |= errors != [0, 0] or not ok
        except Exception as exc:  # 2 x SMs: refused where two programs do not fit one SM
            print(f"nh={nh} nb={nb}: launch refused: {str(exc).splitlines()[0]}", flush=True)
    run(sms, 1, steps, True)  # the positive control
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
