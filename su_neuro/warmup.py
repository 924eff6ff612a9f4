"""Compiling the Numba CPU kernels ahead of time, and saying so when a run compiles them.

Numba compiles a kernel the first time it is called with new argument types and caches the
machine code on disk (``cache=True``), so only the first run after an install or an upgrade
pays it: about 15-20 s for one training configuration on a 2-core CPU, minutes for all of
them. :func:`compile_numba` (``su-neuro info --compile``) runs every cell and gate through
the calls that training, evaluation and streaming make, so that later runs load the cached
code. :class:`FirstStepNotice` says, once, when a first step is slow because of it.

Example::

    from su_neuro.warmup import compile_numba
    compile_numba(progress=print)     # once after installing
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

__all__ = ["COMPILE_NOTICE", "FirstStepNotice", "compile_numba", "numba_dispatchers", "parse_selection",
           "restart_eta", "uses_numba"]

COMPILE_NOTICE = (
    "compiling the Numba CPU kernels: this happens on the first run after installing (or "
    "upgrading) su_neuro and is cached for later runs; `su-neuro info --compile` does it ahead of time"
)

# (cell, gate): every combination the numba backend runs
_CELLS = ("rnn", "gru", "lif")
_GATES = ("rhythmic", "event", "dense")


def uses_numba(backend: str, device, cell: str, gate: str, *, batch: int, hidden: int) -> bool:
    """Whether a layer with these settings runs the Numba kernels (``backend="auto"`` resolved)."""
    import torch

    from .backends import BackendUnavailableError, resolve

    try:
        return resolve(backend, device, cell, gate, torch.float32, batch=batch, hidden=hidden).name == "numba"
    except (BackendUnavailableError, ImportError, ValueError):
        return False


def parse_selection(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"all"`` or ``"gru/rhythmic,lif"`` -> (cells, gates) for :func:`compile_numba`
    (a cell without a gate takes every gate; the selection is the product of both lists)."""
    if text == "all":
        return _CELLS, _GATES
    cells: list[str] = []
    gates: list[str] = []
    for item in text.split(","):
        cell, _, gate = item.strip().partition("/")
        if cell not in _CELLS or (gate and gate not in _GATES):
            raise ValueError(f"--compile {text!r}: use all, or CELL[/GATE] items separated by commas "
                             f"(cells {', '.join(_CELLS)}; gates {', '.join(_GATES)})")
        cells += [cell] if cell not in cells else []
        for g in [gate] if gate else _GATES:
            gates += [g] if g not in gates else []
    return tuple(cells), tuple(gates)


def numba_dispatchers() -> list:
    """Every Numba-compiled function of the CPU backend (imports it)."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    package = importlib.import_module("su_neuro.kernels.numba")
    found = []
    for info in pkgutil.iter_modules(package.__path__):  # every kernel variant's module
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [v for v in vars(module).values() if isinstance(v, CPUDispatcher) and v not in found]
    return found


def _workloads(cells, gates):
    """(label, function) pairs: the calls a training step, an evaluation and a stream make."""
    import torch

    from .models import build_layer

    def run(cell, gate, batch, steps, hidden, train):
        def call():
            torch.manual_seed(0)
            spec = {"kind": gate, **({"init_rate": 0.2} if gate == "rhythmic" else {})}
            kwargs = {"recurrent": True} if cell == "lif" else {}
            layer = build_layer(cell, 4, hidden, gate=spec, backend="numba", **kwargs)
            x = torch.randn(batch, steps, 4)
            if cell == "lif":
                x = (x > 0.5).float()
            if train:
                out, _, records = layer(x, record=True)
                loss = out.float().square().mean() + sum(r.gate.float().mean() for r in records)
                loss.backward()
            else:
                with torch.no_grad():
                    layer(x, record=True)
                    layer(x)

        return call

    for cell in cells:
        for gate in gates:
            # a one-sample training batch (the row-block kernels at any thread count: a dense
            # RNN runs GEMMs from chunks of 2), a batch for the GEMM path, a one-row stream
            yield f"{cell}/{gate} training", run(cell, gate, 1, 12, 16, True)
            yield f"{cell}/{gate} training, batch 32", run(cell, gate, 32, 12, 16, True)
            yield f"{cell}/{gate} streaming", run(cell, gate, 1, 1100, 256, False)


def compile_numba(progress: Callable[[str], None] | None = None, *, cells=_CELLS,
                  gates=_GATES) -> tuple[int, float]:
    """Compile (or load from Numba's cache) the kernel variants of the Numba backend that
    ``cells`` x ``gates`` use (default: all) in training steps (batch 1 and 32) and in a
    one-row stream; ``progress`` gets a line per workload.

    Returns ``(variants compiled in this call, seconds)``; a second call compiles 0.
    Raises :class:`su_neuro.backends.BackendUnavailableError` when numba is missing.
    """
    from .backends import check_backend

    check_backend("numba")
    dispatchers = numba_dispatchers()

    def compiled() -> int:
        return sum(sum(d.stats.cache_misses.values()) for d in dispatchers)

    before = compiled()
    start = time.perf_counter()
    for label, call in _workloads(cells, gates):
        t0 = time.perf_counter()
        n0 = compiled()
        call()
        if progress is not None:
            new = compiled() - n0
            what = f"compiled {new} kernel variant(s)" if new else "cached"
            progress(f"  {label:<32} {what:<28} {time.perf_counter() - t0:6.1f} s")
    return compiled() - before, time.perf_counter() - start


def restart_eta(bar) -> None:
    """Restart a tqdm bar's clock and rate estimate, keeping its count: after a slow first
    step (compilation), the ETA then follows the steps that come after it."""
    if bar is None or getattr(bar, "disable", False):
        return
    n = bar.n
    bar.reset(total=bar.total)
    bar.initial = bar.n = bar.last_print_n = n
    bar.refresh()


def _compiled_so_far() -> Callable[[], int]:
    """A function returning how many kernel variants the Numba backend compiled so far in
    this process (Numba counts a cache miss when it starts compiling)."""
    dispatchers = numba_dispatchers()
    return lambda: sum(sum(d.stats.cache_misses.values()) for d in dispatchers)


class FirstStepNotice:
    """Around the first step of a run: says once (``write``, default stderr) that the Numba
    kernels are being compiled when, ``after`` seconds into that step, Numba is compiling
    (it counts a cache miss when it starts), and restarts the ETA of ``bar`` when the step
    ends. Nothing is printed when the kernels come from the cache, however slow the step.
    Later uses as a context manager do nothing.

    ``active``: whether the run uses the Numba kernels; ``write``: how to print (a tqdm
    bar's ``write`` keeps the bar intact).
    """

    def __init__(self, active: bool, *, bar=None, after: float = 2.0, poll: float = 0.5,
                 write: Callable[[str], None] | None = None):
        self.active = active
        self.bar = bar
        self.after = after
        self.poll = poll
        self.write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.shown = False
        self._done = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self, compiled: Callable[[], int], before: int) -> None:
        if self._stop.wait(self.after):
            return
        while True:
            if compiled() > before:
                self.shown = True
                self.write(f"note: {COMPILE_NOTICE} ...")
                return
            if self._stop.wait(self.poll):
                return

    def __enter__(self) -> FirstStepNotice:
        if self.active and not self._done and self._thread is None:
            try:
                compiled = _compiled_so_far()
            except ImportError:  # no numba: nothing will compile
                return self
            self._thread = threading.Thread(target=self._watch, args=(compiled, compiled()), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._done:
            return
        self._done = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        restart_eta(self.bar)
