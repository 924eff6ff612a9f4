"""Energy estimate: operation counts times a per-operation cost table.

Default table: 45 nm CMOS, 32-bit floating point, from M. Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014: fp32 multiply 3.7 pJ + fp32 add
0.9 pJ = 4.6 pJ per MAC, 0.9 pJ per AC (an add). Memory: 20 pJ per 64-bit read of a 32 KB
SRAM in the same table = 2.5 pJ per byte (optional, reported separately).

A table is a JSON object with any of the fields of :class:`EnergyTable`, e.g.::

    {"name": "int8-45nm", "mac_pj": 0.23, "ac_pj": 0.03, "bytes_per_weight": 1}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .ops import OpCounts, memory_bytes

__all__ = ["DEFAULT_TABLE", "EnergyEstimate", "EnergyTable", "estimate_energy", "load_table"]


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energy costs (picojoules) and storage widths (bytes)."""

    name: str = "45nm-fp32"
    source: str = ("M. Horowitz, Computing's energy problem (and what we can do about it), "
                   "ISSCC 2014: fp32 mult 3.7 pJ + add 0.9 pJ; 32 KB SRAM 20 pJ / 64 bit")
    mac_pj: float = 4.6
    ac_pj: float = 0.9
    mem_pj_per_byte: float = 2.5
    bytes_per_weight: float = 4
    bytes_per_state: float = 4

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnergyTable:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown energy table fields {sorted(unknown)}; "
                             f"valid: {sorted(known)}")
        for k, v in d.items():
            if k in ("name", "source"):
                if not isinstance(v, str):
                    raise ValueError(f"energy table field {k!r} must be a string, got {v!r}")
            elif (isinstance(v, bool) or not isinstance(v, (int, float))
                  or not math.isfinite(v) or v < 0):
                # JSON's true and Python's json NaN / Infinity would pass a plain isinstance check
                raise ValueError(f"energy table field {k!r} must be a finite number >= 0, got {v!r}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_TABLE = EnergyTable()


def load_table(path: str | os.PathLike) -> EnergyTable:
    """Read an :class:`EnergyTable` from a JSON file (missing fields take the defaults)."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"energy table {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, not text
        raise ValueError(f"energy table {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"energy table {path}: invalid JSON ({e})") from None
    if not isinstance(d, dict):
        raise TypeError(f"energy table {path}: must be a JSON object")
    return EnergyTable.from_dict(d)


@dataclass
class EnergyEstimate:
    """Energy in picojoules, dense baseline beside the effective (event-driven) count."""

    dense_pj: float
    effective_pj: float
    dense_memory_pj: float
    effective_memory_pj: float
    dense_memory_bytes: float
    effective_memory_bytes: float

    @property
    def ratio(self) -> float:
        """effective / dense, compute only (lower is better)."""
        return self.effective_pj / self.dense_pj if self.dense_pj else float("nan")

    @property
    def ratio_with_memory(self) -> float:
        d = self.dense_pj + self.dense_memory_pj
        return (self.effective_pj + self.effective_memory_pj) / d if d else float("nan")

    def to_dict(self) -> dict[str, float]:
        """Totals (pJ, bytes) and the two ratios."""
        d = asdict(self)
        d["ratio"] = self.ratio
        d["ratio_with_memory"] = self.ratio_with_memory
        return d

    def per_sample(self, samples: int) -> dict[str, float]:
        """:meth:`to_dict` with the totals divided by ``samples`` (at least 1)."""
        n = max(samples, 1)
        return {k: v if k.startswith("ratio") else v / n for k, v in self.to_dict().items()}


def estimate_energy(ops: OpCounts, table: EnergyTable = DEFAULT_TABLE) -> EnergyEstimate:
    """``E = MACs·mac_pj + ACs·ac_pj`` for the dense and the effective counts, plus the
    memory traffic of :func:`~su_neuro.analysis.ops.memory_bytes` times ``mem_pj_per_byte``."""
    dmem, emem = memory_bytes(ops, bytes_per_weight=table.bytes_per_weight,
                              bytes_per_state=table.bytes_per_state)
    return EnergyEstimate(
        dense_pj=ops.dense_macs * table.mac_pj + ops.dense_acs * table.ac_pj,
        effective_pj=ops.effective_macs * table.mac_pj + ops.effective_acs * table.ac_pj,
        dense_memory_pj=dmem * table.mem_pj_per_byte,
        effective_memory_pj=emem * table.mem_pj_per_byte,
        dense_memory_bytes=dmem,
        effective_memory_bytes=emem,
    )
