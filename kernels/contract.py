"""The contract between the library and its backends.

Everything a backend reads from the library, and everything it hands back, is defined
here: the gate's input to a time loop (:class:`GateInput`), the LIF constants
(:class:`LIFParams`), what a recording run returns (:class:`StepRecord`, built by
:func:`make_record` only), one table of the integer codes the kernels use, and the
:class:`Backend` protocol with its required and optional hooks.

``kernels/`` imports nothing from ``su_neuro`` except this module and
``kernels/reference.py``; the library imports the backends only through
``su_neuro.backends``, which returns a :class:`BackendImpl` (the hooks looked up once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

if TYPE_CHECKING:  # the table type only; importing kernels.rhythm costs nothing at run time here
    from .rhythm import RhythmTable

__all__ = [
    "CELLS",
    "CELL_CODES",
    "DENSE",
    "EVENT",
    "GATE_CODES",
    "GATE_ROWS",
    "GRU",
    "HOOKS",
    "LIF",
    "RHYTHMIC",
    "RNN",
    "SURROGATE_CODES",
    "Backend",
    "check_shapes",
    "BackendImpl",
    "GateInput",
    "LIFParams",
    "StepRecord",
    "make_record",
    "mask_record",
]

# ------------------------------------------------------------------------------ codes
# One table for every backend (Numba and Triton kernels take these integers; no kernel
# writes a literal code).
CELLS = ("rnn", "gru", "lif")
RNN, GRU, LIF = 0, 1, 2
CELL_CODES = {"rnn": RNN, "gru": GRU, "lif": LIF}
GATE_ROWS = {"rnn": 1, "gru": 3, "lif": 1}  # G = GATE_ROWS[cell] * H input rows per neuron

DENSE, RHYTHMIC, EVENT = 0, 1, 2
GATE_CODES = {"dense": DENSE, "rhythmic": RHYTHMIC, "event": EVENT}

# surrogate derivative formulas (su_neuro.surrogate.surrogate_derivative states each)
SURROGATE_CODES = {
    "atan": 0,
    "fast_sigmoid": 1,
    "sigmoid": 2,
    "straight_through": 3,
    "triangle": 4,
    "rectangle": 5,
}


# ------------------------------------------------------------------------------ inputs
class GateInput(NamedTuple):
    """What a time loop needs from a gate for one sequence.

    kind:      "rhythmic", "event" or "dense".
    values:    rhythmic: the gate sequence g, (T, H) floats in {0, 1} carrying the
               surrogate gradient to the gate's parameters; event: the threshold
               theta, (H,); dense: None.
    surrogate: the surrogate of the event gate's step (None otherwise); it has ``code``
               (a value of :data:`SURROGATE_CODES`), ``scale`` and ``gain`` (the factor
               on its derivative).
    support:   rhythmic, when the gate's parameters need a gradient: (T, H) bool, True
               where the loop needs the candidate f for the gradient, i.e. where g = 1 or
               the surrogate derivative is nonzero (dL/dg_{t,i} needs f - h there). With a
               compact surrogate this is sparse, so training work stays sparse. None when
               no gate gradient is needed (then the candidate is needed only where g = 1).
    rhythm:    rhythmic, only from ``plan(..., table=True)``: the gate as exact
               per-neuron points on the shared phase (:class:`su_neuro.kernels.rhythm.RhythmTable`)
               for a kernel that evaluates it itself; ``values`` is then None
               (``rhythm.values()`` gives the rows the plan would).
    """

    kind: str
    values: torch.Tensor | None = None
    surrogate: object | None = None
    support: torch.Tensor | None = None
    rhythm: RhythmTable | None = None

    def materialized(self) -> GateInput:
        """This input with ``values`` filled in from ``rhythm`` where only the table was
        given (for a time loop that reads the gate rows); else itself."""
        if self.values is None and self.rhythm is not None:
            return self._replace(values=self.rhythm.values(), rhythm=None)
        return self


class LIFParams(NamedTuple):
    """LIF constants. beta: (H,) decay, clamped to [0, 1]; threshold: float;
    reset: "subtract" | "zero"; spike: the spike's Surrogate."""

    beta: torch.Tensor
    threshold: float
    reset: str
    spike: object


# ------------------------------------------------------------------------------ records
class StepRecord(NamedTuple):
    """What a sub-layer did at each step, batch first.

    gate:  (B, T, H) 1.0 where the neuron updated (carries the surrogate gradient).
    delta: (B, T, H) h_t - h_{t-1} (zero where the gate was closed).
    spike: (B, T, H) LIF spikes, else None.
    lengths: (B,) long valid steps per sequence of a padded batch (every entry at and after
        step ``lengths[b]`` is zero and not part of the run), else None (all T steps valid).
    """

    gate: torch.Tensor
    delta: torch.Tensor
    spike: torch.Tensor | None = None
    lengths: torch.Tensor | None = None


def make_record(gate: GateInput, h0: torch.Tensor, states: torch.Tensor,
                opened: torch.Tensor | None = None, spikes: torch.Tensor | None = None) -> StepRecord:
    """The :class:`StepRecord` of one run: every backend builds its records here.

    gate: the run's :class:`GateInput`; h0 (B, H) the initial state; states (B, T, H) the
    state after each step (LIF: the membrane); opened (B, T, H) the event gate's values as
    the backend computed them (they carry the surrogate's gradient where the backend is
    differentiable through them; unused for the other gates); spikes (B, T, H) LIF spikes.

    The rhythmic gate's record is its plan's rows, batch uniform (differentiable to the
    gate's parameters whatever the backend), the dense gate's all ones.
    """
    B, T, H = states.shape
    if gate.kind == "rhythmic":
        g = gate.materialized().values.to(states.dtype).unsqueeze(0).expand(B, T, H)
    elif gate.kind == "event":
        if opened is None:
            raise ValueError("make_record: the event gate's record needs the opened values")
        g = opened
    else:
        g = states.new_ones(B, T, H)
    prev = torch.cat([h0.unsqueeze(1), states[:, :-1]], dim=1) if T else states
    return StepRecord(g, states - prev, spikes)


def mask_record(rec: StepRecord, lengths: torch.Tensor) -> StepRecord:
    """``rec`` of a padded batch run in one call: every entry at and after step
    ``lengths[b]`` zeroed (the gate's gradient flows through the valid entries only), and
    ``lengths`` attached: the record the layer's segment by segment run gives."""
    B, T = rec.delta.shape[:2]
    lens = lengths.to(rec.delta.device)
    valid = (torch.arange(T, device=lens.device)[None, :] < lens[:, None]).unsqueeze(-1)
    keep = lambda a: None if a is None else a * valid.to(a.dtype)  # noqa: E731
    return StepRecord(keep(rec.gate), keep(rec.delta), keep(rec.spike), lens)


# ------------------------------------------------------------------------------ backends
def check_shapes(cell: str, xp: torch.Tensor, h0: torch.Tensor, *, s0=None, w_hh=None, b_hh=None, rows=None,
                 support=None, threshold=None, beta=None, lengths=None, x=None, w_ih=None, b_ih=None) -> None:
    """The shapes of a ``recurrence`` call, checked once for every backend (a compiled kernel
    reads past the end of a tensor that is too short): ``xp`` (B, T, G), or ``x`` (B, T, F)
    with ``w_ih`` (G, F), ``b_ih`` (G,) and an empty ``xp`` (B, T, 0) where a backend projects
    the input itself; ``h0`` and ``s0`` (B, H); ``w_hh`` (G, H); ``b_hh`` (G,); a rhythmic
    gate's ``rows`` and ``support`` (T, H); an event gate's ``threshold`` and LIF's ``beta``
    (H,); ``lengths`` (B,) in [1, T]. G = GATE_ROWS[cell] * H. Raises ValueError naming the
    tensor; None skips a tensor."""
    first, name = (x, "x") if x is not None else (xp, "xp")
    if h0.dim() != 2 or first.dim() != 3:
        raise ValueError(f"{cell} recurrence: h0 must be (B, H) and {name} (B, T, ·), got {tuple(h0.shape)} "
                         f"and {tuple(first.shape)}")
    B, H = h0.shape
    G = GATE_ROWS[cell] * H
    T = first.shape[1]
    want = {"xp": (xp, (B, T, G if x is None else 0)), "s0": (s0, (B, H)), "w_hh": (w_hh, (G, H)),
            "b_hh": (b_hh, (G,)), "gate rows": (rows, (T, H)), "gate support": (support, (T, H)),
            "threshold": (threshold, (H,)), "beta": (beta, (H,)), "lengths": (lengths, (B,))}
    if x is not None:
        want |= {"x": (x, (B, T, x.shape[-1])), "w_ih": (w_ih, (G, x.shape[-1])), "b_ih": (b_ih, (G,))}
    for key, (tensor, shape) in want.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            rows = f" (G features: expected {GATE_ROWS[cell]} * H = {G})" if key == "xp" and x is None else ""
            raise ValueError(f"{cell} recurrence (B={B}, T={T}, H={H}): {key} must be {shape}, "
                             f"got {tuple(tensor.shape)}{rows}")
    if lengths is not None and T > 0 and not bool(((lengths >= 1) & (lengths <= T)).all()):
        raise ValueError(f"{cell} recurrence: lengths must lie in [1, T={T}], got values from "
                         f"{int(lengths.min())} to {int(lengths.max())}")


class Backend(Protocol):
    """What a backend module provides. Required: :meth:`recurrence` (a backend of whole
    dense stacks only, ``"nn"``, has ``stack`` instead). Optional hooks (a module may leave
    any out; :data:`HOOKS` lists them):

    - ``unsupported(cell, gate_kind, dtype) -> str | None``: why it cannot run this, or None.
    - ``auto_pays(cell, batch, hidden, *, gate_kind, rate, training, device) -> bool``: whether
      ``backend="auto"`` should pick it (measured faster for these sizes).
    - ``recurrence_input(cell, x, w_ih, b_ih, h0, s0, w_hh, b_hh, gate, lif, record)``: the
      recurrence with the input projection fused in (the rows of neurons that update only);
      returns :meth:`recurrence`'s result, or None where it does not apply.
    - ``rhythm_table(cell, batch, record) -> bool``: whether the kernels evaluate a rhythmic
      gate from its table (``GateInput.rhythm``) instead of (T, H) rows.
    - ``stack(cell, x, h0, weights, *, dropout, training, needs_grad, record)``: a whole
      dense stack in one library call; returns (out, h_T (L, B, H), records or None).
    - ``ragged(cell, gate_kind, batch, hidden) -> bool``: whether ``recurrence`` and
      ``recurrence_input`` take ``lengths=`` (a right-padded batch run in one call, padded
      steps skipped) for this call; elsewhere the layer runs the batch segment by segment.
    """

    def recurrence(self, cell: str, xp: torch.Tensor, h0: torch.Tensor, s0: torch.Tensor | None,
                   w_hh: torch.Tensor | None, b_hh: torch.Tensor | None, gate: GateInput,
                   lif: LIFParams | None = None, record: bool = False):
        """One population over a sequence: ``(out (B, T, H), h_T, s_T or None, StepRecord or None)``
        (``kernels.reference.recurrence`` is the specification)."""
        ...


HOOKS = ("unsupported", "auto_pays", "recurrence_input", "rhythm_table", "stack", "ragged")


class BackendImpl(NamedTuple):
    """A backend's hooks, looked up once (None where the module has no such hook)."""

    name: str
    recurrence: Callable | None
    unsupported: Callable | None = None
    auto_pays: Callable | None = None
    recurrence_input: Callable | None = None
    rhythm_table: Callable | None = None
    stack: Callable | None = None
    ragged: Callable | None = None

    @classmethod
    def of(cls, name: str, module: Backend) -> BackendImpl:
        """The hooks of ``module``; raises TypeError if it has neither ``recurrence`` nor ``stack``."""
        impl = cls(name, *(getattr(module, hook, None) for hook in ("recurrence", *HOOKS)))
        if impl.recurrence is None and impl.stack is None:
            raise TypeError(f"backend {name!r} ({module.__name__}) has neither recurrence() nor stack()")
        return impl
