"""Compile the Triton backend's kernels for a GPU without one, and report what the compiler made.

    python tools/triton_aot.py                  # sm_90 (H100 / H200), the benchmark's shapes
    python tools/triton_aot.py --quick          # a few shapes (the test suite's run)
    python tools/triton_aot.py --arch 100 --sms 148 --json aot.json

Triton compiles for a target given by name; only loading and launching need the card. The
tool runs the backend's real launchers (``kernels/triton``) on CPU tensors of the
benchmark's shapes with a stand-in driver that names the target, so every launch compiles
the kernel the GPU would get (the same constexprs, warps, stages and argument
specialisation) and returns before loading it. The grid kernels get the shapes of a card
with ``--sms`` SMs (132: H100 / H200) and their single-launch, barrier-on path. Triton's
own ptxas builds the cubin; ``cuobjdump`` from the same wheel reads its resources and
machine code. Printed per distinct kernel: grid, warps, registers, stack frame per thread
(where spilled registers go: 0 is wanted), shared memory (Triton's figure plus the
cubin's static shared memory), and static counts of SASS instructions: tensor-core MMAs,
FFMAs, global loads and how many are 64 / 128-bit (LDG, and LDGSTS: the cp.async copies
of pipelined loops), global stores, local (spill) loads and stores, CTA barriers,
atomics, and whether the GPU-scope release / acquire pattern of a grid barrier is there
(``sync_pattern``). Static
counts are not executed counts; the ones that matter are yes/no questions (does a TF32
dot run on tensor cores, does anything spill, are loads vectorised).

Exit status: 0 when every kernel compiled, 1 when one failed (its error is printed), 2
when the tool cannot run (no Triton, no cuobjdump, ``TRITON_INTERPRET`` set).
Nothing here needs or touches a GPU; the timings remain the benchmark's
(``tools/bench_triton.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_triton, also when imported

#: SASS mnemonics counted, by class (a mnemonic's first dot-separated part)
SASS_CLASSES = {
    "mma": ("HMMA", "HGMMA", "IMMA", "DMMA", "QMMA", "UTCHMMA", "UTCQMMA"),
    "ffma": ("FFMA",),
    "ldg": ("LDG",),
    "ldgsts": ("LDGSTS",),
    "stg": ("STG",),
    "ldl_stl": ("LDL", "STL"),
    "bar": ("BAR",),
    "atom": ("ATOM", "ATOMG", "RED", "REDG"),
}


def _tool(name: str) -> str:
    """A CUDA binary from Triton's wheel (``backends/nvidia/bin``), else from PATH."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (neither in Triton's wheel at {path.parent} nor on PATH)")
    return found


#: the device key the stand-in driver gives: no real device's (Triton caches compiled
#: kernels per device, and a GPU's device 0 must not be handed the stand-in's kernels)
STAND_IN_DEVICE = -1


class _TargetDriver:
    """Stands in for Triton's CUDA driver: names the target, has no device to load onto."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return STAND_IN_DEVICE

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


class Capture:
    """Turns every ``kernel[grid](...)`` into a compile for the target (``warmup``: no load,
    no launch) and keeps what was compiled; restores Triton and the backend on exit."""

    def __init__(self, arch: int, sms: int):
        self.arch, self.sms = arch, sms
        self.launches: list[dict] = []
        self.label = ""

    def __enter__(self):
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction

        from su_neuro.kernels.triton import grid, grid_tiles

        self._driver, self._jit, self._grid, self._tiles = driver, JITFunction, grid, grid_tiles
        self._saved = (JITFunction.run, grid._native, grid_tiles.sm_count, grid.ENABLED)
        self._launched = dict(grid.LAUNCHED)
        self._fns = []
        self._active = driver._active  # None until something asked for the driver
        driver.set_active(_TargetDriver(self.arch))
        run = JITFunction.run
        cap = self

        def compile_only(fn, *args, grid, warmup, **kwargs):
            t0 = time.perf_counter()
            cap._fns.append(fn)
            constexprs = {p.name for p in fn.params if p.is_constexpr}  # the launches name every argument
            try:
                kernel = run(fn, *args, grid=grid, warmup=True, **kwargs)
                error = text = None
            except Exception as exc:  # noqa: BLE001 (reported per kernel, the rest go on)
                text = str(exc).strip()
                # a CompilationError's first line is only its position; its last names the error
                lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
                kernel, error = None, f"{type(exc).__name__}: {(lines[-1] if lines else '')[:300]}"
            cap.launches.append({
                "label": cap.label, "kernel": fn.__name__, "grid": tuple(grid),
                "meta": {k: v for k, v in kwargs.items() if k in constexprs or k in ("num_warps", "num_stages")},
                "compiled": kernel, "seconds": time.perf_counter() - t0, "error": error, "error_text": text,
            })
            if error is not None:
                raise RuntimeError(error)
            return kernel

        JITFunction.run = compile_only
        grid.ENABLED = False  # the per-row kernels unless a case asks for the grid (run_case)
        grid._native = lambda device: True  # the single launch with the barrier on
        grid_tiles.sm_count = lambda device: self.sms
        return self

    def __exit__(self, *exc):
        self._jit.run, self._grid._native, self._tiles.sm_count, self._grid.ENABLED = self._saved
        self._grid.LAUNCHED.clear()
        self._grid.LAUNCHED.update(self._launched)  # what bench_triton prints as native launches
        for fn in self._fns:  # the stand-in's compiled kernels leave Triton's per-device cache
            fn.device_caches.pop(STAND_IN_DEVICE, None)
        self._driver._active = self._active
        return False


#: the backward's own tiles (``Tiles.bwd``) in tools/bench_gpu.py's sweeps, B = 64, H = 1024
BWD_CASES = {
    "gru": [dict(tf32x3=True, dw=True, bwd=(32, 32, 4)), dict(tf32x3=True, bwd=(32, 32, 4)),
            dict(tf32=True, dw=True, bwd=(32, 128, 8)), dict(bwd=(32, 128, 8)),
            dict(tf32x3=True)],  # the 3xTF32 backward at the forward's tiles, without dU
    "rnn": [dict(tf32x3=True, dw=True, bwd=(32, 64, 4))],
}


def cases(quick: bool) -> list[dict]:
    """The shapes to compile: the benchmark's suGRU / suRNN rows for the per-row and the
    grid kernels (fp32 exact and TF32, bf16 inputs; split steps, also with 3xTF32 products;
    backwards that form dU or take their own tiles; the event gate), a trainable rhythmic
    gate, the event gate, recurrent and feed-forward LIF. Every case runs forward and
    backward."""
    out = []
    base = {"dtype": "float32", "grid": False, "tf32": False, "train_gate": False, "B": 64, "split": False,
            "tf32x3": False, "dw": False, "bwd": None, "record": False}
    add = lambda **kw: out.append(dict(base, **kw))  # noqa: E731
    if quick:
        add(cell="gru", gate="rhythmic", H=256, grid=True)  # BB = 16, exact fp32 dot
        add(cell="gru", gate="rhythmic", H=1024, grid=True, tf32=True)  # BB = 16, TF32
        add(cell="gru", gate="rhythmic", H=1024, B=1, grid=True)  # BB = 1, FMA products
        add(cell="gru", gate="rhythmic", H=1024, B=1, grid=True, split=True, dw=True)  # split, dU in the kernel
        add(cell="gru", gate="event", H=256, grid=True)  # the event gate's forward, its compacted lists
        add(cell="gru", gate="event", H=256, grid=True, record=True)  # a penalty on its record (DGREC)
        add(cell="gru", gate="rhythmic", H=256)
        add(cell="lif", gate="dense", H=256)
        return out
    for cell in ("gru", "rnn"):
        for H in (256, 1024):
            add(cell=cell, gate="dense", H=H)
            add(cell=cell, gate="rhythmic", H=H)
            for B in (1, 64):
                for gate in ("dense", "rhythmic"):
                    add(cell=cell, gate=gate, H=H, B=B, grid=True)
                    if cell == "gru":
                        add(cell=cell, gate=gate, H=H, B=B, grid=True, tf32=True)
            for B in (1, 64):  # split forwards and dU-forming backwards, the rhythmic targets' shapes
                add(cell=cell, gate="rhythmic", H=H, B=B, grid=True, split=True, dw=True)
                if B == 64:  # 3xTF32 products (the sweep's fp32-accurate candidates)
                    add(cell=cell, gate="rhythmic", H=H, B=B, grid=True, tf32x3=True, split=True, dw=True)
                if cell == "gru" and B == 64:
                    add(cell=cell, gate="rhythmic", H=H, B=B, grid=True, tf32=True, split=True, dw=True)
        for kw in BWD_CASES[cell]:  # the backward's own tiles, as the sweep has them (split forwards)
            add(cell=cell, gate="rhythmic", H=1024, B=64, grid=True, split=True, **kw)
        add(cell=cell, gate="rhythmic", H=1024, B=64, grid=True, tf32x3=True)  # whole chunks at 3xTF32
        add(cell=cell, gate="rhythmic", H=1024, B=256, grid=True)  # 64-row blocks, 8 warps
        add(cell=cell, gate="rhythmic", H=1024, grid=True, dtype="bfloat16")
        add(cell=cell, gate="rhythmic", H=1024, grid=True, train_gate=True)
        add(cell=cell, gate="rhythmic", H=1024, train_gate=True)
        add(cell=cell, gate="event", H=1024)
        for B in (1, 64):  # the event gate's multi-program kernels
            add(cell=cell, gate="event", H=1024, B=B, grid=True)
        add(cell=cell, gate="event", H=2048, B=1, grid=True)  # B = 1's longest tile (2048), as at H = 8192
        add(cell=cell, gate="event", H=1024, grid=True, tf32x3=True)
        for grid in (False, True):  # a penalty on the event gate's record: its gradient in the backward
            add(cell=cell, gate="event", H=1024, grid=grid, record=True)
        add(cell=cell, gate="event", H=1024, grid=True, tf32x3=True, record=True)
    for gate in ("dense", "event"):
        add(cell="lif", gate=gate, H=1024)  # feed-forward: the streaming forward
    add(cell="rlif", gate="rhythmic", H=1024)
    return out


def label(c: dict) -> str:
    kind = ("grid-tf32" if c["tf32"] else "grid-tf32x3" if c["tf32x3"] else "grid") if c["grid"] else "rows"
    extra = ((" bf16" if c["dtype"] == "bfloat16" else "") + (" gate-trained" if c["train_gate"] else "")
             + (" split" if c["split"] else "") + (" dw" if c["dw"] else "")
             + (" bwd{}x{}w{}".format(*c["bwd"]) if c["bwd"] else "") + (" record" if c.get("record") else ""))
    return f"{kind} {c['cell']} {c['gate']} B={c['B']} H={c['H']}{extra}"


def run_case(cap: Capture, c: dict, T: int) -> None:
    """One forward and backward of the backend on CPU tensors (contents never computed)."""
    import torch
    from bench_triton import _step, _with_grid, rhythm  # the benchmark's gate and calls

    from su_neuro.gates import GateInput
    from su_neuro.kernels.reference import LIFParams
    from su_neuro.kernels.triton.ops import recurrence
    from su_neuro.surrogate import get_surrogate

    cap.label = label(c)
    dt = getattr(torch, c["dtype"])
    B, H = c["B"], c["H"]
    base = "lif" if c["cell"] == "rlif" else c["cell"]
    G = 3 * H if base == "gru" else H
    has_w = c["cell"] != "lif"
    xp = torch.zeros(B, T, G, dtype=dt, requires_grad=True)
    h0 = torch.zeros(B, H, dtype=dt, requires_grad=True)
    s0 = torch.zeros(B, H, dtype=dt) if base == "lif" else None
    w = (torch.randn(G, H) / math.sqrt(H)).to(dt).requires_grad_() if has_w else None
    b = torch.zeros(G, dtype=dt, requires_grad=True) if has_w else None
    lif = LIFParams(torch.full((H,), 0.9, dtype=dt), 1.0, "subtract", get_surrogate("atan")) \
        if base == "lif" else None
    if c["gate"] == "rhythmic":
        g = rhythm(T, H, 0.1, "cpu").to(dt).requires_grad_(c["train_gate"])
        gi = GateInput("rhythmic", g, support=(g.detach() != 0) | (torch.rand(T, H) < 0.1)
                       if c["train_gate"] else None)
    elif c["gate"] == "event":
        gi = GateInput("event", torch.full((H,), 0.05, dtype=dt, requires_grad=True),
                       surrogate=get_surrogate("triangle"))
    else:
        gi = GateInput("dense")
    call = (recurrence, base, xp, h0, s0, w, b, gi, lif)
    step = _record_step if c.get("record") else _step
    if c["grid"]:
        _with_grid(step, call, True, tf32=c["tf32"], split=c["split"], dw=c["dw"], bwd=c["bwd"],
                   precision="tf32x3" if c["tf32x3"] else None)
    else:
        step(call, True)


def _record_step(call, backward: bool) -> None:
    """One forward with the record and a backward through the outputs and the recorded gate
    values (a rate penalty on them: the backward's DGREC kernels)."""
    fn, *args = call
    out, hT, _, rec = fn(*args, True)
    (out.sum() + hT.sum() + rec.gate.float().sum()).backward()


def inspect(kernel) -> dict:
    """Resources (cuobjdump -res-usage) and SASS instruction counts of a compiled kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True,
                              check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))
    ops = Counter()
    vec = Counter()
    seq = []
    for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Z0-9_]+)*)", sass):
        pred, op, mods = (m.group(1) or "").strip(), m.group(2), m.group(3)
        if pred == "@!PT":  # never executed (scheduling filler)
            continue
        ops[op] += 1
        seq.append((op, mods, pred))
        if op in ("LDG", "LDGSTS") and (".64" in mods or ".128" in mods):
            vec[op, ".128" if ".128" in mods else ".64"] += 1
    counts = {cls: sum(ops[o] for o in names) for cls, names in SASS_CLASSES.items()}
    md = kernel.metadata
    return {
        # ptxas puts spilled registers on the stack frame (STACK); LOCAL is other local arrays
        "regs": int(usage.get("REG", 0)), "local": int(usage.get("STACK", 0)) + int(usage.get("LOCAL", 0)),
        "shared": int(getattr(md, "shared", 0)) + int(usage.get("SHARED", 0)),
        "warps": int(md.num_warps), "stages": int(md.num_stages),
        "ldg_vec": f"{vec['LDG', '.64']}/{vec['LDG', '.128']}",
        "ldgsts_vec": f"{vec['LDGSTS', '.64']}/{vec['LDGSTS', '.128']}", **counts, "sync": sync_pattern(seq),
        "mma_ops": sorted({o for o in ops if o in SASS_CLASSES["mma"]}),
    }


#: instructions that may sit inside a fence / arrival or load / invalidate pair
SYNC_FILLERS = ("ERRBAR", "CGAERRBAR", "NOP")


def sync_pattern(seq: list[tuple]) -> str:
    """Which halves of a GPU-scope barrier the machine code holds, in instruction order:
    "rel" a release (a GPU- or system-scope MEMBAR, then within two instructions, not
    counting error barriers and NOPs, a GPU-scope atomic or reduction: the arrival), "acq"
    an acquire (a strong GPU-scope load or atomic, then CCTL.IVALL: the SM's L1 dropped, so
    later loads see other SMs' stores). ``seq`` holds (opcode, modifiers[, predicate]); the
    two halves of a pair must be unpredicated or share the predicate. "rel+acq" is the
    pattern the grid kernels' spin barrier needs; "-" neither."""
    atomic = set(SASS_CLASSES["atom"])
    ins = [(t[0], t[1], t[2] if len(t) > 2 else "") for t in seq if t[0] not in SYNC_FILLERS]
    rel = acq = False
    for i, (op, mods, pred) in enumerate(ins):
        before = [(o, m) for o, m, p in ins[max(0, i - 2):i] if p in ("", pred)]
        if op in atomic and ".GPU" in mods:
            rel |= any(o == "MEMBAR" and (".GPU" in m or ".SYS" in m) for o, m in before)
        if op == "CCTL" and ".IVALL" in mods:
            acq |= any((o == "LDG" and ".STRONG.GPU" in m) or (o in atomic and ".GPU" in m) for o, m in before)
    return "+".join(name for name, ok in (("rel", rel), ("acq", acq)) if ok) or "-"


def report(cap: Capture) -> list[dict]:
    rows, seen = [], {}
    for launch in cap.launches:
        k = launch["compiled"]
        if k is not None and id(k) in seen:
            seen[id(k)]["also"] += 1
            continue
        row = {"case": launch["label"], "kernel": launch["kernel"], "grid": "x".join(map(str, launch["grid"])),
               "meta": launch["meta"], "seconds": round(launch["seconds"], 1), "error": launch["error"],
               "error_text": launch["error_text"], "also": 0}
        if k is not None:
            row.update(inspect(k))
            seen[id(k)] = row
        rows.append(row)
    return rows


def _meta_text(meta: dict) -> str:
    keys = ("BB", "BH", "BK", "BI", "BJ", "BLOCK", "T_TILE", "PREC", "SPLIT")
    return " ".join(f"{k}={meta[k]}" for k in keys if k in meta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: H100 / H200)")
    ap.add_argument("--sms", type=int, default=132, help="SM count for the grid kernels' shapes (default 132)")
    ap.add_argument("--quick", action="store_true", help="a few shapes only")
    ap.add_argument("--T", type=int, default=16, help="sequence length of the stand-in tensors (default 16)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on"):
        print("triton_aot: unset TRITON_INTERPRET (it makes Triton interpret kernels, not compile them)",
              file=sys.stderr)
        return 2
    try:
        import torch
        import triton

        _tool("cuobjdump")
    except (ImportError, FileNotFoundError) as exc:
        print(f"triton_aot: cannot compile here: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    with Capture(args.arch, args.sms) as cap:
        for c in cases(args.quick):
            first = len(cap.launches)
            try:
                run_case(cap, c, args.T)
            except RuntimeError as exc:
                if not any(launch["error"] for launch in cap.launches[first:]):
                    raise
                # the case's later kernels (its backward after a failed forward) are not compiled
                print(f"# {label(c)}: compile failed, the rest of the case skipped: {exc}", file=sys.stderr)
    rows = report(cap)
    wall = time.perf_counter() - t0

    head = ("case (first that compiled it)", "kernel", "grid", "tiles", "warps", "regs", "stack B", "shared B",
            "mma", "ffma", "ldg", "ldg v64/v128", "ldgsts v64/v128", "stg", "ldl+stl", "bar", "atom", "gpu sync")
    table = []
    for r in rows:
        if r["error"]:
            table.append((r["case"], r["kernel"], r["grid"], _meta_text(r["meta"]), "FAILED: " + r["error"]))
            continue
        mma = f"{r['mma']} ({','.join(r['mma_ops'])})" if r["mma"] else "0"
        table.append((r["case"] + (f" (+{r['also']})" if r["also"] else ""), r["kernel"], r["grid"],
                      _meta_text(r["meta"]), r["warps"], r["regs"], r["local"], r["shared"], mma, r["ffma"],
                      r["ldg"], r["ldg_vec"], r["ldgsts_vec"], r["stg"], r["ldl_stl"], r["bar"], r["atom"], r["sync"]))
    width = [max(len(str(t[i])) for t in [head, *table] if i < len(t) and not str(t[-1]).startswith("FAILED"))
             for i in range(len(head))]
    print(f"# triton_aot  target sm_{args.arch} ({args.sms} SMs for the grid shapes)  "
          f"triton {triton.__version__}  torch {torch.__version__}  {len(rows)} kernels in {wall:.0f} s")
    print("  ".join(h.ljust(w) for h, w in zip(head, width, strict=True)))
    for t in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(t, width, strict=False)))
    print("stack B: stack frame and local memory per thread (spilled registers; 0 is wanted); "
          "counts are static SASS instructions; gpu sync: rel / acq halves of a GPU-scope barrier "
          "(sync_pattern); (+n): launches of other cases that compiled to the same kernel")
    if args.json:
        args.json.write_text(json.dumps({"arch": args.arch, "sms": args.sms, "triton": triton.__version__,
                                         "rows": [{k: v for k, v in r.items()} for r in rows]}, indent=1,
                                        default=str))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
