"""Argument checks shared by the layers and gates: each error names the argument."""

from __future__ import annotations

import numbers


def whole(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int (any integral type, numpy's included, but not a bool), at least
    ``minimum``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def number(name: str, value) -> float:
    """``value`` as a float; a ValueError naming ``name`` where it is not a number."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
