"""Flush-to-zero for denormal floats on the CPU (on by default in training and simulation).

Gradients that decay through long recurrences end up as denormal (subnormal) floats, below
1.2e-38 in float32. x86 CPUs handle them in microcode, tens to hundreds of times slower than
normal numbers, so a backward pass can slow down several-fold as its gradients fade (see
docs/benchmarks.md, "Flush-to-zero"). ``torch.set_flush_denormal(True)`` sets the FTZ / DAZ
bits of the calling thread's floating-point control register (x86 with SSE3): denormal
results become 0 and denormal inputs are read as 0. The change in results is below
1.2e-38 per value.

The bits belong to each thread. Threads inherit them from the thread that starts them, so
set them before the first parallel call of the process (Numba's and torch's thread pools
start then): ``su-neuro train`` and :func:`su_neuro.simulate.simulate` enable it on entry
and restore the previous mode on exit. Threads started inside keep the mode they started
with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["flush_denormal", "flush_denormal_enabled"]

_MODE = False  # what this module last set (torch has no getter)


def flush_denormal_enabled() -> bool:
    """The mode last set through :func:`flush_denormal` (False before any call)."""
    return _MODE


@contextlib.contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[bool]:
    """Run a block with flush-to-zero on (``enabled=True``) or off; yields whether the CPU
    supports it. The previous mode (as last set here) is restored on exit.

    Example:
        >>> with flush_denormal():
        ...     loss.backward()
    """
    global _MODE
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous = _MODE
    supported = torch.set_flush_denormal(enabled)
    _MODE = enabled and supported
    try:
        yield supported
    finally:
        torch.set_flush_denormal(previous)
        _MODE = previous
