r"""Update gates: which neurons of a population update at each step.

A selective-update population keeps its state where the gate is closed and takes its
normal update where it is open:

.. math::

    \Delta h_t = f(h_{t-1}, x_t) - h_{t-1}, \qquad
    h_t = h_{t-1} + g_t \odot \Delta h_t, \qquad g_t \in \{0, 1\}^H

Three gates share one interface:

* :class:`RhythmicGate` (the paper's gate): a learned per-neuron rhythm that does not
  look at the data, :math:`a_{t,i} = b_i + \sum_k \alpha_{i,k}\sin(\omega_k t + \phi_{i,k})`,
  :math:`g_{t,i} = H(a_{t,i})`. The open set is the same for every sample of a batch and
  is known before the data arrives.
* :class:`EventGate`: data dependent, :math:`g_{t,i} = H(|\Delta h_{t,i}| - \theta_i)`
  with a learnable per-neuron threshold (delta-network style).
* :class:`DenseGate`: always open, i.e. the ordinary RNN / GRU / LIF.

The Heaviside step's gradient is a surrogate chosen by name (:mod:`su_neuro.surrogate`).
A gate hands the time loop a :class:`GateInput`; the loop (and every fast kernel)
only reads that.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ._checks import number, whole
from .kernels import buffers as _buffers
from .kernels.contract import GateInput
from .kernels.rhythm import RhythmTable, build, shared_phase
from .surrogate import get_surrogate

__all__ = [
    "GATES",
    "DenseGate",
    "EventGate",
    "Gate",
    "GateInput",
    "RhythmicGate",
    "constrain_gates",
    "make_gate",
    "neuron_rates",
    "rate_floor_penalty",
    "rate_penalty",
    "valid_entries",
]


#: default width of a compact surrogate on the rhythmic gate (amplitude alpha = 1)
RHYTHMIC_WIDTH = 0.25

#: the rhythmic gate's initial rates lie in {0} ∪ [MIN_INIT_RATE, 1 - MIN_INIT_RATE] ∪ {1}.
#: Nearer 0 (or 1) the float32 bias sin(π (r - ½)) lies within a few ulps of -1 (+1): at
#: r = 3e-4 it opened the neurons 7 % less often than asked, from 3e-5 on never (1 - r: never
#: closed); at 1e-3 the rate is within 1 %.
MIN_INIT_RATE = 1e-3


class Gate(nn.Module):
    """Base class of the update gates. ``kind`` names the gate."""

    kind: str = ""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = whole("hidden_size", hidden_size)

    def plan(self, t0: int, steps: int, *, device=None, dtype=None, table: bool = False) -> GateInput:
        """The gate's input to a time loop over steps ``t0 .. t0 + steps - 1``. ``table``:
        the caller's kernel can evaluate a rhythm itself (``GateInput.rhythm``); gates
        that have none ignore it."""
        raise NotImplementedError

    def config(self) -> dict:
        """A JSON-able description (stored in checkpoints and traces)."""
        return {"kind": self.kind}

    def constrain_(self) -> "Gate":
        """Project the gate's parameters back onto their valid set, in place; call it after
        each optimiser step (``su_neuro.train`` does). A no-op for gates without constraints."""
        return self


class DenseGate(Gate):
    """Always open: every neuron updates at every step (the baseline)."""

    kind = "dense"

    def plan(self, t0: int, steps: int, *, device=None, dtype=None, table: bool = False) -> GateInput:
        return GateInput("dense")


class RhythmicGate(Gate):
    r"""The paper's learned per-neuron rhythm.

    .. math::

        a_{t,i} = b_i + \sum_{k=1}^{K} \alpha_{i,k} \sin(\omega_k t + \phi_{i,k}),
        \qquad g_{t,i} = H(a_{t,i})

    ``t`` is the absolute step index of the state (0 at the first step of a fresh state).

    Initialisation (``init_rate`` = r, ``period`` = P, default ``P = 1 / r``):
    :math:`\omega_k = 2\pi k / P`, :math:`\alpha_{i,1} = 1`, :math:`\alpha_{i,k>1} = 0`,
    :math:`\phi_{i,1} \sim U[0, 2\pi)`, :math:`b_i = \sin(\pi (r - \tfrac12))`.
    With one active harmonic :math:`a > 0` exactly on the fraction
    :math:`\tfrac12 + \arcsin(b)/\pi = r` of each period, so every neuron starts open
    for a fraction r of the steps, once per period, with phases spread uniformly so
    that about r·H neurons are open at any step. When P·r is an integer, each neuron
    opens P·r steps per period (up to float32 rounding of ω and b: 2 of 4 million
    ten-step windows held 2 opens at P = 10, r = 0.1). P·r must be at least 1 (one
    step per period); r lies in {0} ∪ [``MIN_INIT_RATE``, 1 - ``MIN_INIT_RATE``] ∪ {1},
    where the float32 bias still gives the rate. The higher harmonics start silent so the
    initial rate holds; training can use them to shape the rhythm.
    r = 1 gives :math:`b = 2` (always open), r = 0 gives :math:`b = -2` (always closed).

    Args:
        hidden_size: H, neurons in the population.
        harmonics: K, sinusoids per neuron (default 1).
        init_rate: initial fraction of steps each neuron is open, in [0, 1].
        period: base period P in steps (default ``1 / init_rate``).
        surrogate: name of the Heaviside's surrogate (see :mod:`su_neuro.surrogate`).
        surrogate_params: shape parameter(s) of the surrogate, e.g. ``{"width": 0.5}``.
            The compact surrogates default to width ``RHYTHMIC_WIDTH`` = 0.25 here (see
            docs/core.md: the support, where training needs a candidate, is about 25 % of
            the steps at a 10 % rate; width 1 would make it half of every period).

    Parameters: ``bias`` (H), ``alpha`` (H, K), ``phi`` (H, K), ``omega`` (K), all trainable.

    Example:
        >>> gate = RhythmicGate(64, init_rate=0.1)
        >>> g = gate.plan(0, 100).values          # (100, 64) in {0, 1}
        >>> round(g.mean().item(), 2)
        0.1
    """

    kind = "rhythmic"

    def __init__(
        self,
        hidden_size: int,
        harmonics: int = 1,
        init_rate: float = 0.5,
        period: float | None = None,
        surrogate: str = "triangle",
        surrogate_params: dict | None = None,
    ):
        super().__init__(hidden_size)
        harmonics = whole("harmonics", harmonics)
        init_rate = number("init_rate", init_rate)
        if not 0.0 <= init_rate <= 1.0:
            raise ValueError(f"init_rate must lie in [0, 1], got {init_rate}")
        if 0.0 < min(init_rate, 1.0 - init_rate) < MIN_INIT_RATE:
            raise ValueError(
                f"init_rate {init_rate:g} is too close to {round(init_rate)} for the gate's float32 bias "
                f"sin(pi (r - 1/2)), which lies within a few ulps of {2 * round(init_rate) - 1} there: the neurons "
                f"would open at another rate, or {'never' if init_rate < 0.5 else 'always'}; use {round(init_rate)} "
                f"or a rate in [{MIN_INIT_RATE:g}, {1 - MIN_INIT_RATE:g}]"
            )
        if period is None:
            period = 1.0 / init_rate if 0.0 < init_rate < 1.0 else 1.0
        period = number("period", period)
        if not math.isfinite(period) or period <= 0:
            raise ValueError(f"period must be a positive number of steps, got {period}")
        if 0.0 < init_rate < 1.0 and period * init_rate < 1.0 - 1e-9:
            raise ValueError(
                f"period {period:g} with init_rate {init_rate:g} opens a neuron for {period * init_rate:.3g} of a "
                "step per period: a neuron whose open window falls between two steps would never open, while "
                f"the population's mean rate still reads {init_rate:g}; use a period of at least "
                f"1 / init_rate = {1 / init_rate:g} steps"
            )
        self.harmonics = harmonics
        self.init_rate = init_rate
        self.period = period
        params = {"width": RHYTHMIC_WIDTH} if surrogate in ("triangle", "rectangle") else {}
        params.update(surrogate_params or {})
        self.surrogate = get_surrogate(surrogate, **params)

        H, K = hidden_size, harmonics
        alpha = torch.zeros(H, K)
        alpha[:, 0] = 1.0
        if init_rate >= 1.0:
            b = 2.0
        elif init_rate <= 0.0:
            b = -2.0
        else:
            b = math.sin(math.pi * (init_rate - 0.5))
        self.bias = nn.Parameter(torch.full((H,), b))
        self.alpha = nn.Parameter(alpha)
        self.phi = nn.Parameter(torch.rand(H, K) * (2 * math.pi))
        self.omega = nn.Parameter(2 * math.pi * torch.arange(1, K + 1, dtype=torch.float32) / period)

    def preactivation(self, t0: int, steps: int) -> torch.Tensor:
        r""":math:`a_{t,i}` for t = t0 .. t0+steps-1, shape (steps, H).

        The shared phase :math:`\omega_k t` is formed in float64 and reduced modulo
        :math:`2\pi` (a (steps, K) tensor), so step 100,000 is gated as exactly as step 0
        (float32 would lose ~1e-2 rad there); the per-neuron part
        :math:`\sin(\cdot + \phi_{i,k})` is then computed in the parameters' dtype.
        Each step's value depends on t alone, so chunked and whole runs agree exactly.
        The float64 product itself rounds by up to :math:`|\omega t| \cdot 2^{-53}` rad:
        below float32's rounding of the phase up to t ≈ 4e9 steps at P = 10, about 1e-3 rad
        at t = 2^44, up to 0.5 rad near the step limit 2^53. Every backend and chunking forms
        the same float64 phase, so they agree at any t; far out, only the steps where a
        neuron's window opens or closes can differ from the exact rhythm's.
        """
        base = shared_phase(t0, steps, self.omega, self.phi.dtype, self.bias.device)
        wave = torch.sin(base[:, None, :] + self.phi[None])  # (steps, H, K)
        if self.harmonics == 1:
            return self.bias[None] + self.alpha[:, 0][None] * wave[..., 0]
        return self.bias[None] + (self.alpha[None] * wave).sum(-1)

    def plan(self, t0: int, steps: int, *, device=None, dtype=None, table: bool = False) -> GateInput:
        if self.harmonics == 1 and not (torch.is_grad_enabled() and self._trains()):
            if table and dtype in (None, torch.float32) and self.phi.dtype == torch.float32:
                tab = self._table()
                if tab is not None:
                    base = shared_phase(t0, steps, self.omega[:1], torch.float32, self.bias.device)[:, 0]
                    rows = functools.partial(self._open_rows, t0, steps)
                    return GateInput("rhythmic", rhythm=RhythmTable(base, tab, rows))
            g = self._open_rows(t0, steps)
            return GateInput("rhythmic", g if dtype is None else g.to(dtype))
        a = self.preactivation(t0, steps)
        g = self.surrogate(a)
        if dtype is not None and g.dtype != dtype:
            g = g.to(dtype)
        support = None
        if g.requires_grad:
            a = a.detach()
            support = (a > 0) | (self.surrogate.derivative(a) != 0)
        return GateInput("rhythmic", g, support=support)

    def _table(self) -> torch.Tensor | None:
        """The points of ``su_neuro.kernels.rhythm.build`` for the current parameter values, or None;
        cached on a copy of those values (3·H floats, compared on each call: version counters
        miss fused optimisers, edits through ``.data`` or numpy, and do not exist under
        ``torch.inference_mode``). CPU parameters only."""
        with torch.no_grad():
            now = tuple(p.detach()[:, 0] if p.dim() == 2 else p.detach() for p in (self.phi, self.alpha, self.bias))
            cached = getattr(self, "_table_cache", None)
            same = lambda a, b: a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)  # noqa: E731
            if cached is not None and all(same(a, b) for a, b in zip(cached[0], now, strict=True)):
                return cached[1]
            tab = None
            if all(p.device.type == "cpu" for p in now):
                tab = build(*now)
            self._table_cache = ((*(p.clone() for p in now),), tab)
        return tab

    def _trains(self) -> bool:
        return any(p.requires_grad for p in (self.bias, self.alpha, self.phi, self.omega))

    def _open_rows(self, t0: int, steps: int) -> torch.Tensor:
        """``H(a)`` without autograd, for one harmonic: the same float32 operations as
        :meth:`preactivation` followed by the surrogate's forward (so the same 0/1 values),
        done in place in one (steps, H) buffer. Inference runs over long streams spend
        most of their gate time here (five passes instead of seven, no temporaries)."""
        with torch.no_grad():
            base = shared_phase(t0, steps, self.omega[:1], self.phi.dtype, self.bias.device)
            x = _buffers.empty((steps, self.hidden_size), self.phi.dtype, self.phi.device)
            torch.add(base, self.phi[:, 0][None], out=x)
            return x.sin_().mul_(self.alpha[:, 0][None]).add_(self.bias[None]).gt_(0)

    def expected_rate(self, steps: int, t0: int = 0) -> torch.Tensor:
        """Mean open fraction over ``steps`` steps (differentiable through the surrogate)."""
        return self.plan(t0, steps).values.mean()

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "harmonics": self.harmonics,
            "init_rate": self.init_rate,
            "period": self.period,
            "surrogate": self.surrogate.name,
            "surrogate_params": dict(self.surrogate.params),
        }

    def extra_repr(self) -> str:
        return (
            f"{self.hidden_size}, harmonics={self.harmonics}, init_rate={self.init_rate}, "
            f"period={self.period:g}, surrogate={self.surrogate.name!r}"
        )


class EventGate(Gate):
    r"""Data-dependent gate: a neuron updates where its candidate change is large.

    .. math:: g_{t,i} = H(|\Delta h_{t,i}| - \theta_i)

    ``threshold`` (:math:`\theta`, shape (H,)) is learnable, initialised to
    ``init_threshold``. Unlike the rhythmic gate the open set differs between samples.
    :meth:`constrain_` keeps :math:`\theta \ge 0` (call it after each optimiser step, or
    :func:`constrain_gates` on the model; ``su_neuro.train`` does): from zero down the
    neuron opens wherever its candidate moves at all, so the state no longer depends on
    :math:`\theta`, but a negative one moves the surrogate's window away from the small
    changes, and the rate regulariser then has less gradient to close the neuron again.

    Example:
        >>> gate = EventGate(32, init_threshold=0.05)
        >>> gate.plan(0, 10).kind
        'event'
    """

    kind = "event"

    def __init__(
        self,
        hidden_size: int,
        init_threshold: float = 0.1,
        surrogate: str = "triangle",
        surrogate_params: dict | None = None,
    ):
        super().__init__(hidden_size)
        init_threshold = number("init_threshold", init_threshold)
        if not math.isfinite(init_threshold) or init_threshold < 0:
            raise ValueError(f"init_threshold must be a non-negative number, got {init_threshold}")
        self.init_threshold = init_threshold
        params = {"width": 0.1} if surrogate in ("triangle", "rectangle") else {}
        params.update(surrogate_params or {})
        self.surrogate = get_surrogate(surrogate, **params)
        self.threshold = nn.Parameter(torch.full((hidden_size,), init_threshold))

    def plan(self, t0: int, steps: int, *, device=None, dtype=None, table: bool = False) -> GateInput:
        theta = self.threshold if dtype is None else self.threshold.to(dtype)
        return GateInput("event", theta, self.surrogate)

    def constrain_(self) -> "EventGate":
        with torch.no_grad():
            self.threshold.clamp_(min=0.0)
        return self

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "init_threshold": self.init_threshold,
            "surrogate": self.surrogate.name,
            "surrogate_params": dict(self.surrogate.params),
        }

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, init_threshold={self.init_threshold}, surrogate={self.surrogate.name!r}"


GATES = {"rhythmic": RhythmicGate, "event": EventGate, "dense": DenseGate}


def make_gate(spec: str | dict | Gate, hidden_size: int) -> Gate:
    """Build a gate from a name, a config dict ``{"kind": name, **kwargs}`` or a Gate.

    Raises ``ValueError`` listing the valid names for an unknown kind, and for a Gate
    instance whose size differs from ``hidden_size``.
    """
    if isinstance(spec, Gate):
        if spec.hidden_size != hidden_size:
            raise ValueError(f"gate has hidden_size {spec.hidden_size} but the layer has {hidden_size}")
        return spec
    kwargs: dict = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        spec = kwargs.pop("kind", None)
    if not isinstance(spec, str) or spec not in GATES:
        raise ValueError(f"unknown gate {spec!r}; valid gates: {', '.join(GATES)}")
    try:
        return GATES[spec](hidden_size, **kwargs)
    except TypeError as err:
        raise TypeError(f"gate {spec!r}: {err}") from None


def constrain_gates(module: nn.Module) -> nn.Module:
    """Call :meth:`Gate.constrain_` on every gate inside ``module`` (a model, a layer or a
    gate), and ``SULIF.constrain_`` (a learned ``beta`` into [0, 1]) on every LIF layer;
    ``su_neuro.train`` does this after each optimiser step, a hand-written training loop
    should too. Returns ``module``.

    Example:
        >>> layer = EventGate(3)
        >>> with torch.no_grad():
        ...     _ = layer.threshold.fill_(-1.0)
        >>> constrain_gates(layer).threshold.tolist()
        [0.0, 0.0, 0.0]
    """
    for sub in module.modules():
        if callable(getattr(sub, "constrain_", None)):  # the gates, SULIF
            sub.constrain_()
    return module


def valid_entries(gate: torch.Tensor, lengths: torch.Tensor | None = None) -> float:
    """Entries of a gate record (B, T, ..., H) that belong to a sequence: all of them, or,
    with a padded batch's ``lengths`` (B,), those of its valid steps."""
    return float(gate.numel()) if lengths is None else float(lengths.sum()) * math.prod(gate.shape[2:])


def _gate_terms(gates, name: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(gate tensor, lengths of a padded batch or None)`` per layer, from a gate tensor, a
    record (``.gate``, and ``.lengths`` of a padded batch), a dict name -> record (as a
    model's ``record=True`` returns) or a list of tensors / records."""
    if isinstance(gates, dict):
        gates = list(gates.values())
    elif isinstance(gates, torch.Tensor) or hasattr(gates, "gate"):
        gates = [gates]
    if not isinstance(gates, list | tuple):
        raise TypeError(f"{name} takes a gate tensor, a StepRecord, a dict of them or a list of them, got "
                        f"{type(gates).__name__}")
    if len(gates) == 0:
        raise ValueError(f"{name} needs at least one gate tensor")
    terms = []
    for g in gates:
        lengths = getattr(g, "lengths", None)
        tensor = getattr(g, "gate", g)
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} takes gate tensors or StepRecords, got {type(g).__name__}")
        terms.append((tensor, lengths))
    return terms


def rate_penalty(gates: torch.Tensor | list | dict, target: float) -> torch.Tensor:
    r"""Update-rate regulariser :math:`(\bar g - r^*)^2` to add to a training loss.

    ``gates`` is a gate tensor (any shape, values in [0, 1], carrying the surrogate
    gradient), a record of a forward pass with ``record=True`` (whose ``lengths`` keep the
    padded steps of a padded batch out of the mean), the dict of records the model
    returns, or a list of tensors / records (one per layer; the penalty is summed). For a
    rhythmic gate, ``gate.plan(0, T).values`` gives the tensor without a forward pass.

    Example:
        >>> gate = RhythmicGate(8, init_rate=0.5)
        >>> loss = rate_penalty(gate.plan(0, 50).values, target=0.1)
        >>> loss.backward()   # pushes the gate's bias down
    """
    if not 0.0 <= float(target) <= 1.0:
        raise ValueError(f"target rate must lie in [0, 1], got {target}")
    total = 0.0
    for g, lengths in _gate_terms(gates, "rate_penalty"):
        # a padded batch's record is zero on its padded steps: they are no closed gates
        mean = g.float().mean() if lengths is None else g.float().sum() / valid_entries(g, lengths)
        total = total + (mean - float(target)) ** 2
    return total


def neuron_rates(gate: torch.Tensor, count: float | None = None) -> torch.Tensor:
    """Each neuron's update rate, (H,), from a gate tensor (..., H) (values in [0, 1],
    carrying the surrogate gradient): its sum over every axis but the last, divided by
    ``count``, the valid entries per neuron (default: all of them; a padded batch's record
    is zero on its padded steps, so pass the number of valid steps there)."""
    if gate.dim() < 1 or gate.shape[-1] == 0:
        raise ValueError(f"neuron_rates needs a gate tensor of shape (..., H), got {tuple(gate.shape)}")
    n = gate[..., 0].numel() if count is None else float(count)
    if n <= 0:
        raise ValueError(f"neuron_rates needs a positive count of entries per neuron, got {n}")
    return gate.float().reshape(-1, gate.shape[-1]).sum(0) / n


def rate_floor_penalty(gates: torch.Tensor | list | dict, floor: float, counts: list | None = None) -> torch.Tensor:
    r"""Per-neuron lower bound on the update rate:
    :math:`\frac{1}{H}\sum_i \max(0, r_{\min} - r_i)^2` per layer, summed over layers.

    Where :func:`rate_penalty` holds the population's mean rate, a learned rhythm can still
    reach that mean by silencing some neurons (never open: they keep their initial state and
    carry nothing) and opening others more often. This term pushes up each neuron whose own
    rate ``r_i`` (:func:`neuron_rates`) falls below ``floor`` and leaves the others alone
    (the lower bound of the per-neuron activity regularisers common in spiking networks).
    ``gates``: as for :func:`rate_penalty` (records count their valid steps only);
    ``counts``: the valid entries per neuron of each (default: all, or a record's).

    It acts through the gate's surrogate gradient, so it holds a neuron up while some of its
    steps lie within the surrogate's width of opening; a neuron already silent far from
    that (every pre-activation beyond the width of a compact surrogate such as the default
    triangle) gets no gradient: the term prevents silencing, it does not revive.

    Example:
        >>> gate = RhythmicGate(8, init_rate=0.25)
        >>> loss = rate_floor_penalty(gate.plan(0, 64).values, floor=0.3)
        >>> loss.backward()   # pushes up the biases of the neurons open less than 30 % of the steps
    """
    if not 0.0 <= float(floor) <= 1.0:
        raise ValueError(f"floor rate must lie in [0, 1], got {floor}")
    terms = _gate_terms(gates, "rate_floor_penalty")
    if counts is None:
        counts = [None if lengths is None else valid_entries(g, lengths) / g.shape[-1] for g, lengths in terms]
    return sum(
        ((float(floor) - neuron_rates(g, n)).clamp(min=0) ** 2).mean()
        for (g, _), n in zip(terms, counts, strict=True)
    )
