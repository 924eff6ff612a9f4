r"""Surrogate gradients of the Heaviside step, chosen by name.

Every binary decision in su_neuro (a rhythmic or event gate opening, a LIF neuron
spiking) is a Heaviside step :math:`H(x) = [x > 0]` in the forward pass. Its backward
pass uses a surrogate derivative :math:`\sigma'(x)`. The functions come from
snnTorch's ``snntorch.surrogate`` module; the two compact-support shapes that snnTorch
does not ship ("triangle", "rectangle"), and "sigmoid" (snnTorch's backward overflows to
NaN in float32 for x < -3.5), are built with snnTorch's own ``custom_surrogate``
wrapper. Each entry also carries its derivative as a closed formula, which the tests
check against the autograd backward and which the fused kernels evaluate inline. snnTorch's
Functions compute in float32; for any other dtype (float64, half) the step and its backward
are that formula in the input's own dtype, so a float64 gradient keeps its bits.

=====================  ===============================================  ==============
name                   surrogate derivative :math:`\sigma'(x)`          support
=====================  ===============================================  ==============
``atan``               :math:`(\alpha/2) / (1 + (\pi \alpha x / 2)^2)`     everywhere
``fast_sigmoid``       :math:`1 / (s|x| + 1)^2`                          everywhere
``sigmoid``            :math:`s e^{-s|x|} / (1 + e^{-s|x|})^2`           everywhere
``straight_through``   :math:`1`                                         everywhere
``triangle``           :math:`\max(0, 1 - |x|/w) / w`                    :math:`|x| < w`
``rectangle``          :math:`[|x| < w/2] / w`                           :math:`|x| < w/2`
=====================  ===============================================  ==============

A compact-support surrogate makes training work sparse: a closed gate needs its
candidate only where :math:`\sigma'(a) \neq 0`.

Every surrogate also takes a ``gain`` :math:`\gamma` (default 1), which multiplies its
derivative: :math:`\gamma\,\sigma'(x)`. The forward step is unchanged. A gain below 1
is the "dampening factor" of recurrent spiking networks trained through time (Bellec et al.,
2018, used :math:`\gamma = 0.3`): through a recurrent gate the adjoint of the state is
multiplied at every step by up to :math:`1 + \gamma |\Delta h| \sigma'`, and over thousands of
steps an undamped product can overflow (docs/training.md, "NaN and inf gradients").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ._checks import number
from .kernels.contract import SURROGATE_CODES

__all__ = ["SURROGATES", "Surrogate", "get_surrogate"]

# the kernels' integer code of each formula (one table: kernels/contract.py)
_CODES = SURROGATE_CODES

_DEFAULTS: dict[str, dict[str, float]] = {
    "atan": {"alpha": 2.0},
    "fast_sigmoid": {"slope": 25.0},
    "sigmoid": {"slope": 25.0},
    "straight_through": {},
    "triangle": {"width": 1.0},
    "rectangle": {"width": 1.0},
}

SURROGATES = tuple(_DEFAULTS)


def _snntorch_fn(name: str, p: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    from snntorch import surrogate as sn

    if name == "atan":
        return sn.atan(alpha=p["alpha"])
    if name == "fast_sigmoid":
        return sn.fast_sigmoid(slope=p["slope"])
    if name == "sigmoid":
        # snnTorch's Sigmoid backward forms exp(-slope * x), which overflows in float32 for
        # x < -3.5 at slope 25 and returns NaN; the derivative is even, so exp(-slope * |x|)
        # gives the same values without overflow.
        slope = p["slope"]

        def sigmoid_grad(x, grad, _spikes):
            e = torch.exp(-slope * x.abs())
            return grad * slope * e / (1 + e) ** 2

        return sn.custom_surrogate(sigmoid_grad)
    if name == "straight_through":
        return sn.straight_through_estimator()
    width = p["width"]
    if name == "triangle":

        def triangle_grad(x, grad, _spikes):
            return grad * torch.clamp(1.0 - x.abs() / width, min=0.0) / width

        return sn.custom_surrogate(triangle_grad)

    def rectangle_grad(x, grad, _spikes):
        return grad * (x.abs() < 0.5 * width).to(grad.dtype) / width

    return sn.custom_surrogate(rectangle_grad)


class _ReadOnly(dict):
    """A dict whose entries cannot change (still a dict: JSON, ``asdict``, copies work)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a surrogate's parameters are read-only; make a new one with get_surrogate")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):  # rebuilt from a plain dict (pickle would set the items one by one)
        return type(self), (dict(self),)

    def __deepcopy__(self, memo):
        return self


@dataclass(frozen=True)
class Surrogate:
    """A Heaviside step with a named surrogate derivative.

    Call it on a tensor to get ``(x > 0)`` as a float tensor whose backward is the
    surrogate. ``derivative(x)`` gives :math:`\\gamma \\sigma'(x)` as a tensor. ``params``
    holds the shape parameter (given or default) and ``gain`` where one was given.

    Example:
        >>> s = get_surrogate("triangle", width=0.5)
        >>> x = torch.tensor([-1.0, 0.1], requires_grad=True)
        >>> s(x).sum().backward(); x.grad
        tensor([0.0000, 1.6000])
    """

    name: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        # read-only: a frozen surrogate whose shape could be edited after validation would
        # reach the kernels unchecked
        object.__setattr__(self, "params", _ReadOnly(self.params))

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))

    @property
    def code(self) -> int:
        return _CODES[self.name]

    @property
    def scale(self) -> float:
        """The single shape parameter (alpha, slope or width); 0.0 if none."""
        return float(next((v for k, v in self.params.items() if k != "gain"), 0.0))

    @property
    def gain(self) -> float:
        """The factor gamma on the derivative (1.0 unless given)."""
        return float(self.params.get("gain", 1.0))

    @property
    def compact(self) -> bool:
        """True if the derivative is zero outside a bounded interval."""
        return self.name in ("triangle", "rectangle")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            # snnTorch's Functions compute in float32 (``.float()``), which would round a
            # float64 gradient; the closed formula in the input's dtype instead
            return _Step.apply(x, self)
        fn = _FN_CACHE.get((self.name, tuple(self.params.items())))
        if fn is None:
            fn = _snntorch_fn(self.name, self.params)
            _FN_CACHE[(self.name, tuple(self.params.items()))] = fn
        out = fn(x)
        if self.gain != 1.0:
            # the same 0/1 values (out - out.detach() is exactly 0), gamma times the gradient
            step = out.detach()
            out = step + self.gain * (out - step)
        return out

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        d = surrogate_derivative(self.name, self.scale, x)
        return d if self.gain == 1.0 else self.gain * d


def surrogate_derivative(name: str, scale: float, x: torch.Tensor) -> torch.Tensor:
    """Closed formula of each surrogate derivative (the specification kernels follow)."""
    if name == "atan":
        return (scale / 2) / (1 + (math.pi / 2 * scale * x) ** 2)
    if name == "fast_sigmoid":
        return 1.0 / (scale * x.abs() + 1.0) ** 2
    if name == "sigmoid":
        e = torch.exp(-scale * x.abs())
        return scale * e / (1 + e) ** 2
    if name == "straight_through":
        return torch.ones_like(x)
    if name == "triangle":
        return torch.clamp(1.0 - x.abs() / scale, min=0.0) / scale
    if name == "rectangle":
        return (x.abs() < 0.5 * scale).to(x.dtype) / scale
    raise ValueError(_unknown(name))


_FN_CACHE: dict = {}


class _Step(torch.autograd.Function):
    """``(x > 0)`` in ``x``'s dtype, backward ``grad * derivative(x)`` in that dtype."""

    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x).to(grad.dtype), None


def _unknown(name: object) -> str:
    return f"unknown surrogate {name!r}; valid names: {', '.join(SURROGATES)}"


def get_surrogate(name: str | Surrogate = "fast_sigmoid", **params: float) -> Surrogate:
    """Look a surrogate up by name; keyword arguments override its shape parameter, and
    ``gain`` (any surrogate) multiplies its derivative.

    Raises ``ValueError`` listing the valid names for an unknown name, and
    ``TypeError`` for a parameter the surrogate does not take.
    """
    if isinstance(name, Surrogate):
        if params:
            raise TypeError("parameters cannot be given with a Surrogate instance")
        return name
    if not isinstance(name, str) or name not in _DEFAULTS:
        raise ValueError(_unknown(name))
    merged = dict(_DEFAULTS[name])
    for key, value in params.items():
        if key not in merged and key != "gain":
            valid = ", ".join([*_DEFAULTS[name], "gain"])
            raise TypeError(f"surrogate {name!r} takes no parameter {key!r} (takes: {valid})")
        value = number(f"surrogate {name!r}: {key}", value)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"surrogate {name!r}: {key} must be a positive number, got {value}")
        merged[key] = value
    return Surrogate(name, merged)
