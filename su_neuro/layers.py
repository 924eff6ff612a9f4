r"""Multi-step selective-update layers: :class:`SURNN`, :class:`SUGRU`, :class:`SULIF`.

Each layer owns its parameters, its gates (one per stacked sub-layer) and nothing else:
the time loop is the backend's :func:`recurrence` (see ``su_neuro.kernels.reference``
for the equations). Input is batch first, (B, T, F); ``forward(x, state=None)`` returns
``(output, state)`` and, with ``record=True``, ``(output, state, records)``.

The state carries the absolute step index ``t``: the rhythmic gate of step t depends on
t, so running a sequence in chunks and passing the state on gives exactly the result
of running it whole.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from . import backends
from ._checks import number, whole
from .gates import Gate, _gate_terms, make_gate, valid_entries
from .kernels import buffers as _buffers
from .kernels.contract import GATE_ROWS, LIFParams, StepRecord
from .surrogate import get_surrogate

__all__ = ["SUGRU", "SULIF", "SURNN", "SULayer", "SUState", "check_lengths", "valid_mask"]


#: the largest absolute step index (``SUState.t`` plus a call's steps) a layer accepts
MAX_STEP = 2**53


class SUState(NamedTuple):
    """State of a stacked layer between calls.

    h: (num_layers, B, H) hidden state (RNN/GRU) or membrane potential (LIF).
    t: absolute index of the next step (0 for a fresh state).
    s: (num_layers, B, H) last spikes (LIF), else None.
    """

    h: torch.Tensor
    t: int = 0
    s: torch.Tensor | None = None


def _check_input(x, input_size: int, dtype: torch.dtype, check_finite: bool, device=None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"input x must have shape (batch, time, features) = (B, T, {input_size}); got {tuple(x.shape)}"
        )
    B, T, Fin = x.shape
    if T == 0:
        raise ValueError("input x has T = 0 steps: an empty sequence cannot be run")
    if B == 0:
        raise ValueError("input x has batch size B = 0")
    if Fin != input_size:
        raise ValueError(f"input x has {Fin} features but the layer expects input_size = {input_size}")
    if not x.is_floating_point():
        raise TypeError(f"input x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dtype != dtype:
        raise TypeError(
            f"input x has dtype {x.dtype} but the layer's parameters are {dtype}; "
            f"convert one of them (x.to({dtype}) or layer.to({x.dtype}))"
        )
    if device is not None and x.device != device:
        raise ValueError(f"input x is on {x.device} but the layer's parameters are on {device}; "
                         f"move one of them (x.to({str(device)!r}) or layer.to({str(x.device)!r}))")
    if check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError("input x contains NaN or inf")


def check_lengths(lengths, B: int, T: int) -> torch.Tensor:
    """``lengths`` as a CPU long tensor (B,), or an error naming the problem: not 1-D of B
    integers, or a length outside [1, T]."""
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"lengths must be a 1-D tensor of B = {B} integers: {err}") from None
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    lens = lengths.detach().to("cpu", torch.long)
    if B and (int(lens.min()) < 1 or int(lens.max()) > T):
        raise ValueError(
            f"lengths must lie in [1, T] = [1, {T}] (a sequence needs a step, and the batch has {T}); "
            f"got min {int(lens.min())}, max {int(lens.max())}"
        )
    return lens


def valid_mask(lengths: torch.Tensor, T: int, device=None) -> torch.Tensor:
    """(B, T) bool, True on the steps t < lengths[b]."""
    return torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]


class SULayer(nn.Module):
    """Shared machinery of the selective-update layers (not used directly)."""

    cell: str = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        gate: str | dict | Gate | Sequence[Gate] = "rhythmic",
        dropout: float = 0.0,
        backend: str = "auto",
        check_finite: bool = True,
        recurrent: bool = True,
    ):
        super().__init__()
        input_size = whole("input_size", input_size)
        hidden_size = whole("hidden_size", hidden_size)
        num_layers = whole("num_layers", num_layers)
        dropout = number("dropout", dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if not recurrent and self.cell != "lif":
            raise ValueError(f"recurrent=False is for SULIF (a feed-forward LIF population); the {self.cell} "
                             "cell needs its recurrent weights")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.dropout = dropout
        self.check_finite = bool(check_finite)
        self.recurrent = bool(recurrent)
        self.backend = backends.check_backend(backend)

        if isinstance(gate, (list, tuple, nn.ModuleList)):
            if len(gate) != num_layers:
                raise ValueError(f"got {len(gate)} gates for num_layers = {num_layers}")
            gates = [make_gate(g, hidden_size) for g in gate]
        elif isinstance(gate, Gate):
            if num_layers != 1:
                raise ValueError("a single Gate instance serves one layer; pass a list of gates or a gate name")
            gates = [make_gate(gate, hidden_size)]
        else:
            gates = [make_gate(gate, hidden_size) for _ in range(num_layers)]
        self.gates = nn.ModuleList(gates)

        G = GATE_ROWS[self.cell] * hidden_size
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(G, fan_in)))
            if self.recurrent:
                self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(G, hidden_size)))
            if self.bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(G)))
                if self.recurrent:
                    self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(G)))
        self.reset_parameters()

    # torch.nn.RNN / GRU initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every weight.
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)

    def _layer_weights(self, k: int):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, f"{n}_l{k}", None) for n in names)

    def _lif(self, k: int) -> LIFParams | None:
        return None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> SUState:
        """A fresh state: zeros, t = 0."""
        p = self.weight_ih_l0
        shape = (self.num_layers, batch_size, self.hidden_size)
        h = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
        return SUState(h, 0, h.clone() if self.cell == "lif" else None)

    def _check_state(self, state, B: int, x: torch.Tensor) -> SUState:
        if state is None:
            return self.initial_state(B, device=x.device, dtype=x.dtype)
        if isinstance(state, torch.Tensor):
            state = SUState(state, 0, torch.zeros_like(state) if self.cell == "lif" else None)
        if not isinstance(state, SUState):
            raise TypeError(
                f"state must be an SUState, a tensor (num_layers, B, H) or None; got {type(state).__name__}"
            )
        want = (self.num_layers, B, self.hidden_size)
        if not isinstance(state.h, torch.Tensor) or tuple(state.h.shape) != want:
            got = tuple(state.h.shape) if isinstance(state.h, torch.Tensor) else type(state.h).__name__
            raise ValueError(
                f"state.h has shape {got} but this layer needs (num_layers, B, hidden_size) = {want}; "
                "was the state made by another layer or batch?"
            )
        if state.h.dtype != x.dtype or state.h.device != x.device:
            raise TypeError(f"state.h is {state.h.dtype} on {state.h.device} but the input is {x.dtype} on {x.device}")
        if isinstance(state.t, bool) or not isinstance(state.t, numbers.Integral) or state.t < 0:
            raise ValueError(f"state.t must be a non-negative integer step index, got {state.t!r}")
        state = state._replace(t=int(state.t))
        if state.t + x.shape[1] > MAX_STEP:
            # a rhythmic gate forms its phase from the step index in float64: whole steps are exact
            # only up to 2^53 (beyond it, arange over the call's steps comes out empty)
            raise ValueError(f"state.t = {state.t}: the call's steps [t, t + T) would end past 2^53 = {MAX_STEP}, "
                             "beyond which a gate cannot place whole steps exactly")
        if self.cell == "lif":
            if state.s is None:  # no spikes at the step before, as for a bare tensor h
                state = state._replace(s=torch.zeros_like(state.h))
            if not isinstance(state.s, torch.Tensor) or tuple(state.s.shape) != want:
                raise ValueError(f"state.s (spikes) must have shape {want} for a LIF layer")
            if state.s.dtype != x.dtype or state.s.device != x.device:
                raise TypeError(f"state.s is {state.s.dtype} on {state.s.device} but the input is "
                                f"{x.dtype} on {x.device}")
            if self.check_finite and not bool(torch.isfinite(state.s).all()):
                raise ValueError("state.s contains NaN or inf")
        elif state.s is not None:  # an RNN / GRU has no spikes: never handed to a backend
            state = state._replace(s=None)
        if self.check_finite and not bool(torch.isfinite(state.h).all()):
            raise ValueError("state.h contains NaN or inf")
        return state

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        state: SUState | torch.Tensor | None = None,
        record: bool = False,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ):
        """Run the stack over a sequence.

        Args:
            x: (B, T, input_size) input, same dtype as the parameters.
            state: an :class:`SUState` from a previous call, an initial hidden tensor
                (num_layers, B, H) (then t = 0), or None (zeros, t = 0).
            record: also return a list of :class:`StepRecord` (one per sub-layer).
            lengths: (B,) valid steps of each sequence of a right-padded batch, each in
                [1, T] (None: every sequence has T steps). Sequence b runs exactly its
                first ``lengths[b]`` steps: the padded steps are never computed; its
                outputs and records are zero there, and the returned state is its state
                after its own last step. The returned ``state.t`` is ``state.t + T``.
                A backend that takes lengths itself (its ``ragged`` hook: numba's GEMM
                path, LIF and event-gate kernels) runs the batch in one call, skipping each
                sample's padded steps;
                elsewhere the batch runs in segments between the distinct lengths, each
                segment on the rows still running, the state carried over.

        Returns:
            ``(output, state)`` or ``(output, state, records)``; output is (B, T, H):
            the last sub-layer's states (RNN/GRU) or spikes (LIF).

        Example:
            >>> gru = SUGRU(3, 16)
            >>> x = torch.randn(2, 10, 3)
            >>> y, st = gru(x, lengths=torch.tensor([10, 4]))   # y[1, 4:] == 0, st.h[:, 1] = state after step 3
        """
        _check_input(x, self.input_size, self.weight_ih_l0.dtype, self.check_finite, self.weight_ih_l0.device)
        B, T, _ = x.shape
        state = self._check_state(state, B, x)
        lens = ragged = None
        if lengths is not None:
            lens = check_lengths(lengths, B, T)
            if bool((lens < T).any()):
                ragged = lens
        out, new_state, records = self._forward_full(x, state, record, ragged)
        if record:
            if lengths is not None:
                records = [r._replace(lengths=lens.to(x.device)) for r in records]
            return out, new_state, records
        return out, new_state

    def _forward_full(self, x, state: SUState, record: bool, lens: torch.Tensor | None = None):
        """Every row over every step, or with ``lens`` each row over its own steps: (out,
        new state, records or [])."""
        B, T, _ = x.shape
        kinds = tuple(sorted({g.kind for g in self.gates}))
        # whether a backward may follow: the input, the initial state or a parameter needs a gradient
        training = torch.is_grad_enabled() and (
            x.requires_grad or state.h.requires_grad or (state.s is not None and state.s.requires_grad)
            or any(p.requires_grad for p in self.parameters()))
        plan0, rate = None, None
        if (self.backend == "auto" and x.device.type == "cuda" and self.cell in ("rnn", "gru")
                and kinds == ("rhythmic",) and backends.available("triton", x.device)):
            # the fraction of rows the kernels compute decides between the reference and them
            # (docs/triton.md, "The auto rule"); the plan is reused for sub-layer 0 below
            plan0 = self.gates[0].plan(state.t, T, device=x.device, dtype=x.dtype)
            with torch.no_grad():
                rows = plan0.values.detach() != 0
                if training and plan0.support is not None:
                    rows = rows | plan0.support
                rate = float(rows.float().mean())
        impl = backends.resolve(
            self.backend, x.device, self.cell, kinds[0] if len(kinds) == 1 else kinds, x.dtype,
            batch=B, hidden=self.hidden_size, rate=rate, training=training,
        )
        whole = impl.ragged is not None and all(impl.ragged(self.cell, k, B, self.hidden_size) for k in kinds)
        if lens is not None and not whole:
            return self._forward_ragged(x, state, record, lens)
        if impl.stack is not None:  # a whole dense stack in one library call ("nn")
            weights = [self._layer_weights(k) for k in range(self.num_layers)]
            out, hT, records = impl.stack(self.cell, x, state.h, weights, dropout=self.dropout,
                                         training=self.training, needs_grad=training, record=record)
            return out, SUState(hT, state.t + T, None), records or []
        # a backend may project the input inside its kernel, for the neurons that update only
        fused = impl.recurrence_input
        # a backend may evaluate a rhythmic gate itself from a table (no (T, H) plan)
        table = impl.rhythm_table is not None and impl.rhythm_table(self.cell, B, record)
        inp = x
        hs, ss, records = [], [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(k)
            if k == 0 and plan0 is not None and not table:
                gate = plan0
            else:
                gate = self.gates[k].plan(state.t, T, device=x.device, dtype=x.dtype, table=table)
            s0 = state.s[k] if state.s is not None else None
            args = (state.h[k], s0, w_hh, b_hh, gate, self._lif(k), record)
            kw = {} if lens is None else {"lengths": lens}
            res = fused(self.cell, inp, w_ih, b_ih, *args, **kw) if fused is not None else None
            if res is None:
                with _outside_autocast(inp.device.type, impl.name != "torch"):
                    xp = _buffers.linear(inp, w_ih, b_ih)
                res = impl.recurrence(self.cell, xp, *args, **kw)
            out, hT, sT, rec = res
            hs.append(hT)
            if sT is not None:
                ss.append(sT)
            records.append(rec)
            inp = out
            if self.dropout and self.training and k < self.num_layers - 1:
                inp = F.dropout(inp, self.dropout, training=True)
        new_state = SUState(torch.stack(hs), state.t + T, torch.stack(ss) if ss else None)
        return out, new_state, records

    def _forward_ragged(self, x, state: SUState, record: bool, lens: torch.Tensor):
        """Padded batch: run the segments [l_{i-1}, l_i) between the sorted distinct lengths,
        each on the rows that are still running, the state carried from segment to segment."""
        B, T, _ = x.shape
        dev = x.device
        bounds = torch.unique(lens).tolist()  # sorted ascending
        rows = torch.arange(B)  # rows running in the current segment, ascending
        h, s = state.h, state.s
        seg_rows, pieces = [], []  # per segment: the running rows and their (n, L, H) outputs
        rec_pieces: list[list] = [[] for _ in range(self.num_layers)]
        fin_rows, fin_h, fin_s = [], [], []
        start = 0
        for end in bounds:
            idx = rows.to(dev)
            xs = x[:, start:end] if len(rows) == B else x[idx, start:end]
            out, st, recs = self._forward_full(xs, SUState(h, state.t + start, s), record)
            seg_rows.append(None if len(rows) == B else idx)
            pieces.append(out)
            for k, rec in enumerate(recs):
                rec_pieces[k].append(rec)
            going = lens[rows] > end
            done = ~going
            fin_rows.append(rows[done])
            fin_h.append(st.h[:, done.to(dev)])
            if st.s is not None:
                fin_s.append(st.s[:, done.to(dev)])
            rows = rows[going]
            keep = going.to(dev)
            h = st.h[:, keep]
            s = st.s[:, keep] if st.s is not None else None
            start = end
        tail = T - start  # steps after the longest sequence

        def assemble(parts):
            # each segment widened to all B rows (zeros for the finished ones), then joined in time
            cols = [p if r is None else p.new_zeros(B, *p.shape[1:]).index_copy(0, r, p)
                    for p, r in zip(parts, seg_rows, strict=True)]
            if tail:
                cols.append(parts[0].new_zeros(B, tail, parts[0].shape[-1]))
            return torch.cat(cols, dim=1)

        out = assemble(pieces)
        order = torch.argsort(torch.cat(fin_rows)).to(dev)
        h_fin = torch.cat(fin_h, dim=1)[:, order]
        s_fin = torch.cat(fin_s, dim=1)[:, order] if fin_s else None
        new_state = SUState(h_fin, state.t + T, s_fin)
        if not record:
            return out, new_state, []
        records = []
        for parts in rec_pieces:
            spike = assemble([r.spike for r in parts]) if parts[0].spike is not None else None
            records.append(
                StepRecord(
                    assemble([r.gate.expand_as(r.delta) for r in parts]),
                    assemble([r.delta for r in parts]),
                    spike,
                    lens.to(dev),
                )
            )
        return out, new_state, records

    # --------------------------------------------------------------- metadata
    def layer_meta(self, k: int = 0) -> dict:
        """Description of sub-layer k for traces and operation counts."""
        return {
            "cell": self.cell,
            "gate": self.gates[k].kind,
            "gate_config": self.gates[k].config(),
            "input_size": self.input_size if k == 0 else self.hidden_size,
            "hidden_size": self.hidden_size,
            "recurrent": self.recurrent,
            "input_kind": "spike" if (self.cell == "lif" and k > 0) else "dense",
        }

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, backend={self.backend!r}"
        )


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _outside_autocast(device_type: str, kernels: bool):
    """Where ``kernels`` (a fused backend) run the recurrence, the input projection runs
    outside ``torch.autocast``: the kernels compute in the parameters' dtype, as they do where
    they project the input themselves. The reference (``torch``) follows autocast op by op."""
    if kernels and _autocast_on(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class _TorchCompatible(SULayer):
    """SURNN / SUGRU: parameters laid out as in torch.nn.RNN / torch.nn.GRU."""

    _torch_type: type = nn.Module

    @classmethod
    def from_torch(cls, module: nn.Module, gate: str | dict | Gate | Sequence[Gate] = "dense", **kwargs):
        """Build a layer with the same weights as a ``torch.nn.RNN`` / ``torch.nn.GRU``.

        The torch module must be batch_first, unidirectional, without projections (and,
        for RNN, with tanh). With ``gate="dense"`` the result computes what ``module`` does.

        Example:
            >>> gru = torch.nn.GRU(4, 16, batch_first=True)
            >>> su = SUGRU.from_torch(gru)                     # dense: same outputs
            >>> sparse = SUGRU.from_torch(gru, gate={"kind": "rhythmic", "init_rate": 0.1})
        """
        if not isinstance(module, cls._torch_type):
            raise TypeError(
                f"{cls.__name__}.from_torch takes a {cls._torch_type.__name__}, got {type(module).__name__}"
            )
        if not module.batch_first:
            raise ValueError("from_torch needs a batch_first=True module (su_neuro layers are batch first)")
        if module.bidirectional:
            raise ValueError("from_torch: bidirectional modules are not supported")
        if getattr(module, "proj_size", 0):
            raise ValueError("from_torch: modules with proj_size are not supported")
        if getattr(module, "nonlinearity", "tanh") != "tanh":
            raise ValueError("from_torch: SURNN uses tanh; this torch.nn.RNN uses relu")
        fixed = sorted(key for key in ("input_size", "hidden_size", "num_layers", "bias") if key in kwargs)
        if fixed:
            raise TypeError(f"from_torch takes {fixed} from the module, which has "
                            + ", ".join(f"{key}={getattr(module, key)}" for key in fixed))
        options = {"dropout": module.dropout, **kwargs}  # dropout may be changed
        ref = next(module.parameters())
        # moved first, then copied: a float64 module keeps every bit of its weights
        layer = cls(
            module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias, gate=gate, **options
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, p in layer.named_parameters(recurse=False):
                p.copy_(getattr(module, name))
        return layer

    def _apply(self, fn, recurse=True):
        # as torch.nn.RNN does after a move: parameters on CUDA become views into one buffer
        # that cuDNN reads in place (backend "nn"); a no-op elsewhere
        out = super()._apply(fn, recurse)
        self.flatten_parameters()
        return out

    def flatten_parameters(self) -> None:
        """Lay the parameters out as one buffer in cuDNN's order (CUDA only; see
        ``torch.nn.RNN.flatten_parameters``). Done after every move of the layer."""
        if self.weight_ih_l0.is_cuda:
            from .kernels.torch_rnn import flatten_for_cudnn

            weights = [self._layer_weights(k) for k in range(self.num_layers)]
            flatten_for_cudnn(self.cell, weights, self.input_size, self.hidden_size)


class SURNN(_TorchCompatible):
    r"""Selective-update Elman RNN: :math:`f = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h + b_{hh})`.

    Parameters follow ``torch.nn.RNN``: ``weight_ih_l{k}`` (H, F), ``weight_hh_l{k}`` (H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H).

    Example:
        >>> rnn = SURNN(3, 32, gate={"kind": "rhythmic", "init_rate": 0.2})
        >>> y, state = rnn(torch.randn(4, 50, 3))     # y: (4, 50, 32)
    """

    cell = "rnn"
    _torch_type = nn.RNN


class SUGRU(_TorchCompatible):
    r"""Selective-update GRU; the candidate is ``torch.nn.GRU``'s update (gates r, z, n).

    Parameters follow ``torch.nn.GRU``: ``weight_ih_l{k}`` (3H, F), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H).

    Example:
        >>> gru = SUGRU(1, 64, num_layers=2, gate="rhythmic")
        >>> y, state = gru(torch.randn(8, 784, 1))
        >>> y2, _ = gru(torch.randn(8, 100, 1), state)   # continues at t = 784
    """

    cell = "gru"
    _torch_type = nn.GRU


class SULIF(SULayer):
    r"""Selective-update leaky integrate-and-fire population.

    Membrane v and spikes s; the input current is :math:`W_{ih} x_t + b_{ih}`, plus
    :math:`W_{hh} s_{t-1} + b_{hh}` when ``recurrent``. With the gate open, one step is
    snnTorch's ``Leaky`` / ``RLeaky`` (reset by the previous step's spike, detached):

    * subtract: :math:`v' = \beta v + I - [v > \vartheta]\,\vartheta`
    * zero:     :math:`v' = \beta (1 - [v > \vartheta])\, v + I`

    and :math:`s = H(v' - \vartheta)` with a surrogate gradient. A closed neuron keeps v
    (no leak) and does not spike. Note: snnTorch's ``RLeaky`` with ``reset_mechanism="zero"``
    also drops the step's input current after a spike; SULIF resets the membrane the
    same way with or without recurrence (as ``Leaky`` does).

    Args:
        beta: membrane decay in [0, 1], a float or a (H,) tensor.
        threshold: firing threshold :math:`\vartheta` (> 0).
        reset: "subtract" or "zero".
        spike_grad: surrogate name of the spike (default "atan", as in snnTorch).
        recurrent: add recurrent weights on spikes (default False).
        learn_beta: make beta a trainable parameter.

    Example:
        >>> lif = SULIF(700, 128, beta=0.9, recurrent=True, gate={"kind": "rhythmic", "init_rate": 0.1})
        >>> spikes, state = lif(torch.rand(2, 100, 700))
    """

    cell = "lif"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        gate="rhythmic",
        beta: float | torch.Tensor = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        spike_grad: str = "atan",
        spike_grad_params: dict | None = None,
        recurrent: bool = False,
        learn_beta: bool = False,
        dropout: float = 0.0,
        backend: str = "auto",
        check_finite: bool = True,
    ):
        if reset not in ("subtract", "zero"):
            raise ValueError(f"unknown reset {reset!r}; valid resets: subtract, zero")
        threshold = number("threshold", threshold)
        if not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive number, got {threshold}")
        self.threshold = threshold
        self.reset = reset
        self.spike_grad = get_surrogate(spike_grad, **(spike_grad_params or {}))
        super().__init__(input_size, hidden_size, num_layers, bias, gate, dropout, backend, check_finite, recurrent)
        beta_t = torch.as_tensor(beta, dtype=torch.float32).flatten()
        if beta_t.numel() == 1:
            beta_t = beta_t.expand(hidden_size).clone()
        if beta_t.numel() != hidden_size:
            raise ValueError(f"beta must be a float or have hidden_size = {hidden_size} values, got {beta_t.numel()}")
        if not bool(((beta_t >= 0) & (beta_t <= 1)).all()):
            raise ValueError("beta must lie in [0, 1]")
        if learn_beta:
            self.beta = nn.Parameter(beta_t)
        else:
            self.register_buffer("beta", beta_t)

    # nn.Linear-style initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    def reset_parameters(self) -> None:
        for name, p in self.named_parameters(recurse=False):
            if name == "beta":
                continue
            k = int(name.rsplit("_l", 1)[1])
            fan_in = (self.input_size if k == 0 else self.hidden_size) if "_ih_" in name else self.hidden_size
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(p, -bound, bound)

    def _lif(self, k: int) -> LIFParams:
        return LIFParams(self.beta, self.threshold, self.reset, self.spike_grad)

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project a learned ``beta`` back into [0, 1] (outside it the decay's clamp passes
        no gradient, so an optimiser step beyond the bound would freeze it there);
        :func:`su_neuro.gates.constrain_gates` calls it after each optimiser step."""
        if isinstance(self.beta, nn.Parameter):
            self.beta.clamp_(0.0, 1.0)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", threshold={self.threshold}, reset={self.reset!r}, recurrent={self.recurrent}, "
            f"spike_grad={self.spike_grad.name!r}"
        )


def update_rate(records: Sequence[StepRecord] | dict) -> float:
    """Fraction of neuron-steps that updated, over all records given (a dict name ->
    StepRecord, as a model's ``record=True`` returns, a sequence of StepRecords, or one).

    Only the valid steps of a padded batch count (a record's ``lengths``): its padded
    steps never ran, so counting them as closed gates would understate the rate, and a
    dense gate would no longer read 1.0 (docs/analysis.md: valid steps only).
    """
    opened, total = 0.0, 0.0
    for g, lengths in _gate_terms(records, "update_rate"):
        total += valid_entries(g, lengths)
        g = g.detach()
        if lengths is not None:  # an event recorded on a padded step did not happen
            g = g[valid_mask(lengths.reshape(-1), g.shape[1], g.device)]
        opened += float(g.sum())
    if total == 0:
        raise ValueError("no records given")
    return opened / total
