"""su_neuro: selective-update recurrent networks as event-driven neuron populations.

Importing su_neuro is cheap: torch and the core modules only. Numba, Triton, h5py and
matplotlib load when a backend, the trace writer or a plot first needs them.
"""

from __future__ import annotations

import importlib

from .backends import BackendUnavailableError
from .denormal import flush_denormal
from .gates import DenseGate, EventGate, RhythmicGate, rate_floor_penalty, rate_penalty
from .kernels.contract import StepRecord
from .layers import SUGRU, SULIF, SURNN, SUState, update_rate
from .models import Seq2Seq, SequenceClassifier
from .surrogate import get_surrogate

__version__ = "0.1.0"

__all__ = [
    "SUGRU",
    "SULIF",
    "SURNN",
    "BackendUnavailableError",
    "DenseGate",
    "EventGate",
    "RhythmicGate",
    "SUState",
    "Seq2Seq",
    "SequenceClassifier",
    "StepRecord",
    "__version__",
    "analysis",
    "datasets",
    "flush_denormal",
    "get_surrogate",
    "rate_floor_penalty",
    "rate_penalty",
    "traces",
    "update_rate",
]

_LAZY = {"traces", "analysis", "datasets", "train", "kernels"}


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'su_neuro' has no attribute {name!r}")
