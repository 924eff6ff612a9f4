r"""Backend ``"nn"``: a dense RNN / GRU stack run by the op behind ``torch.nn.RNN`` / ``torch.nn.GRU``.

With a :class:`~su_neuro.DenseGate` on every sub-layer an SURNN / SUGRU computes exactly what
``torch.nn.RNN`` (tanh) / ``torch.nn.GRU`` compute, so the library's own fused op serves it:
cuDNN's persistent RNN kernels on CUDA tensors, ATen's CPU kernels (oneDNN where torch was built
with it) on CPU tensors. The layer's own parameters are passed in ``torch.nn.GRU``'s order
(``weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, weight_ih_l1, ...``), so outputs and every
gradient are the module's, and precision follows torch's switches as the module's does (on CUDA
``torch.backends.cudnn.allow_tf32``, on by default).

Without records, the whole stack is one call, dropout between sub-layers included, exactly as
``torch.nn.GRU.forward`` makes it (the same random numbers for the same seed). With records, a
call per sub-layer (the records need each sub-layer's state sequence) and dropout between them
by ``torch.nn.functional.dropout``, as the other backends do.

There is no selective update here: a rhythmic or event gate is refused (:func:`unsupported`).
"""

from __future__ import annotations

import warnings

import torch
from torch import _VF
from torch.nn import functional as F

from .contract import GateInput, make_record

__all__ = ["stack", "unsupported", "auto_pays", "flatten_for_cudnn"]

_OPS = {"rnn": _VF.rnn_tanh, "gru": _VF.gru}
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def unsupported(cell: str, gate_kind: str, dtype) -> str | None:
    """Why the ``nn`` backend cannot run this combination, or None if it can."""
    if cell not in _OPS:
        return f"backend 'nn' runs RNN and GRU stacks only, not cell {cell!r}"
    if gate_kind != "dense":
        return (f"backend 'nn' runs dense stacks only (every gate a DenseGate); got gate {gate_kind!r}: "
                "use backend 'auto', 'torch', 'numba' or 'triton' for selective updates")
    if dtype not in _DTYPES:
        return f"backend 'nn' supports float32, float64, float16 and bfloat16, not {dtype}"
    return None


def auto_pays(cell: str, batch: int, hidden: int, *, device=None, **_) -> bool:
    """Whether ``backend="auto"`` picks ``nn`` for a dense stack.

    On CUDA always: it is ``torch.nn.GRU`` itself (cuDNN), as fast as the module and faster
    than the Triton kernels for dense stacks (docs/triton.md). On a CPU ``auto`` asks the
    Numba backend first (``tools/bench_dense_cpu.py``, docs/benchmarks.md: the dense Numba
    kernels were faster in every alternated row), so ``nn`` runs what Numba does not take
    (float64, 16-bit, sizes past Numba's rule, Numba not installed) instead of the
    reference's per-step Python loop: one native call for the whole stack. That it is the
    faster of the two there is expected, not yet a row of a tools/ benchmark.
    """
    return True


def stack(cell, x, h0, weights, *, dropout: float, training: bool, needs_grad: bool = False, record: bool):
    """Run a dense stack. x (B, T, F); h0 (L, B, H); weights: per sub-layer the tuple
    ``(weight_ih, weight_hh, bias_ih, bias_hh)`` (biases None together, as in torch.nn).
    ``training``: the module's mode (dropout between sub-layers); ``needs_grad``: a backward
    follows (cuDNN keeps what its backward needs only when told it trains, so a module in
    eval mode that is differentiated still runs the op in its training mode, without dropout).

    Returns ``(out (B, T, H), hT (L, B, H), records)``; records is a list of
    :class:`StepRecord` (gate all ones, delta h_t - h_{t-1}) when ``record``, else None.
    """
    op = _OPS[cell]
    flat, has_b = _flat(weights)
    L = len(weights)
    train = bool(training or needs_grad)
    p = float(dropout) if training else 0.0
    if not record:
        out, hT = _call(op, x, h0, flat, has_b, L, p, train)
        return out, hT, None
    n = 4 if has_b else 2
    inp, hs, records = x, [], []
    for k in range(L):
        out, hk = _call(op, inp, h0[k : k + 1], flat[k * n : (k + 1) * n], has_b, 1, 0.0, train)
        hs.append(hk[0])
        records.append(make_record(GateInput("dense"), h0[k], out))
        inp = F.dropout(out, p, training=True) if (p and k < L - 1) else out
    return out, torch.stack(hs), records


def flatten_for_cudnn(cell: str, weights, input_size: int, hidden: int) -> None:
    """Make a stack's parameters views into one buffer in cuDNN's layout, as
    ``torch.nn.RNN.flatten_parameters`` does for its own: cuDNN then reads them in place
    (else it copies them into such a buffer at every call and scatters the gradient back).
    Called by the layers after a move (``_apply``: ``.cuda()``, ``.to()``), never inside a
    forward; a no-op off CUDA, for aliased or mixed-dtype parameters, or without cuDNN.
    ``weights``: per sub-layer ``(weight_ih, weight_hh, bias_ih, bias_hh)``."""
    flat, has_b = _flat(weights)
    if not all(isinstance(w, torch.Tensor) and w.is_cuda for w in flat):
        return
    if len({w.data_ptr() for w in flat}) != len(flat) or len({w.dtype for w in flat}) != 1:
        return  # aliased or mixed parameters: cuDNN's copying path
    if not all(torch.backends.cudnn.is_acceptable(w) for w in flat) or not torch._use_cudnn_rnn_flatten_weight():
        return
    from torch.backends.cudnn import rnn as cudnn_rnn

    mode = cudnn_rnn.get_cudnn_mode("GRU" if cell == "gru" else "RNN_TANH")
    with torch.no_grad(), torch.cuda.device_of(flat[0]):
        torch._cudnn_rnn_flatten_weight(flat, 4 if has_b else 2, input_size, mode, hidden, 0, len(weights),
                                        True, False)


def _flat(weights):
    """The parameters in torch.nn's flat order (``w_ih, w_hh, b_ih, b_hh`` per sub-layer;
    without biases the first two) and whether biases are there."""
    has_b = weights[0][2] is not None
    return [w for layer in weights for w in (layer if has_b else layer[:2])], has_b


def _call(op, x, h0, flat, has_b, layers, dropout, training):
    with warnings.catch_warnings():
        # parameters cuDNN could not take in place (see flatten_for_cudnn) are copied into
        # one buffer at each call, with a warning meant for torch.nn modules
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        return op(x, h0.contiguous(), flat, has_b, layers, float(dropout), bool(training), False, True)
