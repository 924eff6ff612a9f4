"""Backend entry point of ``backend="triton"`` (see ``su_neuro.backends``).

Exposes :func:`recurrence` (same signature and results as
``su_neuro.kernels.reference.recurrence``), :func:`unsupported` and :func:`auto_pays`.
The kernels and their design are in ``recurrence.py``; docs/triton.md has the limits.
"""

from __future__ import annotations

import torch

from . import choice
from .recurrence import recurrence_triton

__all__ = ["recurrence", "unsupported", "auto_pays"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def recurrence(cell, xp, h0, s0, w_hh, b_hh, gate, lif=None, record=False):
    """See :func:`su_neuro.kernels.reference.recurrence`; runs the fused Triton kernels."""
    return recurrence_triton(cell, xp, h0, s0, w_hh, b_hh, gate, lif, record)


def unsupported(cell: str, gate_kind: str, dtype) -> str | None:
    """Why the Triton backend cannot run this combination, or None if it can."""
    if cell not in ("rnn", "gru", "lif"):
        return f"backend 'triton' has no kernel for cell {cell!r}"
    if gate_kind not in ("dense", "rhythmic", "event"):
        return f"backend 'triton' has no kernel for gate {gate_kind!r}"
    if dtype not in _DTYPES:
        return f"backend 'triton' supports float32, float16 and bfloat16, not {dtype}"
    return None


def auto_pays(cell: str, batch: int, hidden: int, *, gate_kind: str | None = None, rate: float | None = None,
              training: bool = False, **_) -> bool:
    """Whether ``backend="auto"`` picks Triton over the torch reference on CUDA tensors (one
    H200, docs/triton.md): LIF always; RNN / GRU with a rhythmic or dense gate where
    :data:`choice.MEASURED` has a Triton kernel faster than the reference at the nearest
    measured (batch, width, update rate, mode) — ``rate`` is the call's open fraction,
    1.0 when unknown; with the event gate (or a stack mixing gate kinds) up to H = 512
    (the 2026-11-28 table)."""
    if cell == "lif":
        return True
    if gate_kind not in ("rhythmic", "dense", None):  # event gate, or a stack of mixed kinds
        return hidden <= 512
    r = 1.0 if rate is None else rate
    return choice.fastest(batch, hidden, r, training) != "torch"
