"""One registry of the backends that run a population's time loop.

``"torch"``  the plain PyTorch loop (``su_neuro.kernels.reference``), any device.
``"numba"``  fused CPU kernels (``su_neuro.kernels.numba``), CPU tensors.
``"triton"`` fused GPU kernels (``su_neuro.kernels.triton``), CUDA tensors (or any
             tensor under ``TRITON_INTERPRET=1``, Triton's CPU interpreter).
``"nn"``     dense RNN / GRU stacks only: the op behind ``torch.nn.RNN`` / ``torch.nn.GRU``
             (cuDNN on CUDA, ATen on a CPU), ``su_neuro.kernels.torch_rnn``.
``"auto"``   the fastest available backend for the device and sizes (see :func:`resolve`).

Asking for a backend whose package is missing, or that cannot run on the tensors'
device, raises :class:`BackendUnavailableError`. There is no silent fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from .kernels.contract import BackendImpl

__all__ = ["BACKENDS", "BackendImpl", "BackendUnavailableError", "available", "check_backend", "get_impl", "resolve"]

# name -> (module implementing ``recurrence``, package it needs or None)
_REGISTRY = {
    "torch": ("su_neuro.kernels.reference", None),
    "numba": ("su_neuro.kernels.numba.ops", "numba"),
    "triton": ("su_neuro.kernels.triton.ops", "triton"),
    "nn": ("su_neuro.kernels.torch_rnn", None),
}
# what "auto" tries on each device, in order; the reference ("torch") runs anything else
_AUTO_ORDER = {"cuda": ("nn", "triton"), "cpu": ("numba", "nn")}
BACKENDS = ("auto", *_REGISTRY)


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (missing package or wrong device)."""


def _package_missing(name: str) -> str | None:
    pkg = _REGISTRY[name][1]
    if pkg is not None and importlib.util.find_spec(pkg) is None:
        return f"backend {name!r} needs the package {pkg!r}, which is not installed (pip install {pkg})"
    return None


def check_backend(name: str) -> str:
    """Validate a backend name at construction time; returns it.

    Raises ``ValueError`` for an unknown name (listing the valid ones) and
    :class:`BackendUnavailableError` when the named backend's package is missing.
    """
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    if name != "auto":
        missing = _package_missing(name)
        if missing:
            raise BackendUnavailableError(missing)
    return name


def _device_problem(name: str, device) -> str | None:
    if name == "numba" and device.type != "cpu":
        return f"backend 'numba' runs on CPU tensors, got a tensor on {device}"
    if name == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"backend 'triton' needs CUDA tensors, got a tensor on {device} "
            "(set TRITON_INTERPRET=1 before importing triton to run its interpreter on a CPU)"
        )
    return None


def available(name: str, device) -> bool:
    """Whether ``name`` can run on ``device`` here (package present, device right)."""
    return _package_missing(name) is None and _device_problem(name, device) is None


def _supports(impl: BackendImpl, cell: str, gate_kind, dtype) -> str | None:
    """Why backend ``impl`` cannot run the cell with every gate kind given (one kind, or a
    stack's kinds), or None."""
    check = impl.unsupported
    if check is None:
        return None
    for kind in (gate_kind,) if isinstance(gate_kind, str) else gate_kind:
        problem = check(cell, kind, dtype)
        if problem:
            return problem
    return None


def resolve(name: str, device, cell: str, gate_kind, dtype, *, batch: int, hidden: int,
            rate: float | None = None, training: bool = False) -> BackendImpl:
    """The backend that runs a call: ``name`` itself, or the choice of ``"auto"``, as its
    :class:`BackendImpl` (``.name`` and the hooks of the ``kernels.contract.Backend``
    protocol, looked up once).

    Rule for ``"auto"`` (from the measured tables in docs/triton.md and docs/benchmarks.md):
    on CUDA tensors a dense RNN / GRU stack runs ``"nn"`` (cuDNN), everything else
    ``"triton"`` where it is installed, supports the cell, gate and dtype and its
    ``auto_pays`` rule says it was measured faster than the reference for this batch,
    width, update rate (``rate``: the open fraction of a rhythmic gate, None if unknown)
    and mode (``training``: a backward follows); on CPU tensors ``"numba"`` then ``"nn"``;
    anything else runs ``"torch"``. ``gate_kind`` is the stack's gate kind, or a tuple of
    its kinds where its sub-layers differ (a backend must run each). An explicit backend
    that cannot run raises :class:`BackendUnavailableError`.
    """
    check_backend(name)  # a name set on a layer after it was built was never checked
    if name == "auto":
        one = gate_kind if isinstance(gate_kind, str) else "mixed"
        ctx = {"gate_kind": one, "rate": rate, "training": training, "device": device}
        for preferred in _AUTO_ORDER.get(device.type, ()):
            if not available(preferred, device):
                continue
            try:
                impl = get_impl(preferred)
                if _supports(impl, cell, gate_kind, dtype) is None and _auto_pays(impl, cell, batch, hidden, **ctx):
                    return impl
            except (ImportError, BackendUnavailableError):
                continue
        return get_impl("torch")
    problem = _package_missing(name) or _device_problem(name, device)
    if problem:
        raise BackendUnavailableError(problem)
    impl = get_impl(name)
    problem = _supports(impl, cell, gate_kind, dtype)
    if problem:
        raise BackendUnavailableError(problem)
    return impl


def _auto_pays(impl: BackendImpl, cell: str, batch: int, hidden: int, **ctx) -> bool:
    """Sizes where the fused backend was measured faster than the alternatives
    (docs/benchmarks.md, docs/triton.md): the backend's ``auto_pays(cell, batch, hidden,
    gate_kind=, rate=, training=, device=)`` rule."""
    rule = impl.auto_pays
    return True if rule is None else bool(rule(cell, batch, hidden, **ctx))


def get_impl(name: str) -> BackendImpl:
    """The hooks of backend ``name`` (its module imported on first use)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    module = _REGISTRY[name][0]
    try:
        return BackendImpl.of(name, importlib.import_module(module))
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            raise BackendUnavailableError(f"backend {name!r} is not built in this installation") from err
        raise
