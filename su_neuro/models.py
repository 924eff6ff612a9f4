"""Models built from a selective-update stack and a linear readout.

:class:`SequenceClassifier`  one label per sequence (readout: last step, mean over
                             steps, or spike count for LIF).
:class:`Seq2Seq`             one prediction per step (copy task, language modelling).

Both return ``output`` or, with ``record=True``, ``(output, records)`` where
``records`` maps ``"layers.<k>"`` to the :class:`StepRecord` of sub-layer k; this is
what :mod:`su_neuro.traces` writes.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import SUGRU, SULIF, SURNN, SULayer

__all__ = ["CELL_TYPES", "READOUTS", "Seq2Seq", "SequenceClassifier", "build_layer"]

CELL_TYPES = {"rnn": SURNN, "gru": SUGRU, "lif": SULIF}
READOUTS = ("last", "mean", "spike_count")


def build_layer(cell: str, input_size: int, hidden_size: int, **kwargs) -> SULayer:
    """``SURNN`` / ``SUGRU`` / ``SULIF`` by name; ValueError lists the valid names."""
    if cell not in CELL_TYPES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(CELL_TYPES)}")
    return CELL_TYPES[cell](input_size, hidden_size, **kwargs)


class _StackModel(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, **layer_kwargs):
        super().__init__()
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
            raise ValueError(f"output size must be a positive integer, got {output_size!r}")
        self.cell = cell
        self.rnn = build_layer(cell, input_size, hidden_size, **layer_kwargs)
        self.head = nn.Linear(hidden_size, output_size)

    def _run(self, x, state, record):
        if record:
            out, state, recs = self.rnn(x, state, record=True)
            return out, state, {f"layers.{k}": r for k, r in enumerate(recs)}
        out, state = self.rnn(x, state)
        return out, state, None

    def layer_meta(self) -> dict:
        """Per recorded layer: cell, gate, sizes (the trace writer's metadata)."""
        return {f"layers.{k}": self.rnn.layer_meta(k) for k in range(self.rnn.num_layers)}


class SequenceClassifier(_StackModel):
    """A selective-update stack with a linear readout of one label per sequence.

    Args:
        cell: "rnn", "gru" or "lif".
        input_size, hidden_size, num_classes: sizes.
        readout: "last" (state at the last step), "mean" (mean over steps) or
            "spike_count" (LIF: spikes summed over steps).
        **layer_kwargs: passed to the layer (num_layers, gate, backend, beta, ...).

    Example:
        >>> model = SequenceClassifier("gru", 1, 64, 10, gate={"kind": "rhythmic", "init_rate": 0.2})
        >>> logits = model(torch.randn(4, 784, 1))                 # (4, 10)
        >>> logits, records = model(torch.randn(4, 784, 1), record=True)
    """

    def __init__(
        self, cell: str, input_size: int, hidden_size: int, num_classes: int, readout: str = "last", **layer_kwargs
    ):
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid readouts: {', '.join(READOUTS)}")
        if readout == "spike_count" and cell != "lif":
            raise ValueError("readout 'spike_count' needs cell='lif'")
        super().__init__(cell, input_size, hidden_size, num_classes, **layer_kwargs)
        self.readout = readout

    def forward(self, x: torch.Tensor, state=None, record: bool = False):
        out, _, recs = self._run(x, state, record)
        if self.readout == "last":
            feat = out[:, -1]
        elif self.readout == "mean":
            feat = out.mean(1)
        else:
            feat = out.sum(1)
        logits = self.head(feat)
        return (logits, recs) if record else logits


class Seq2Seq(_StackModel):
    """A selective-update stack with a per-step linear readout: (B, T, F) -> (B, T, C).

    Example:
        >>> model = Seq2Seq("gru", 10, 128, 10, gate="rhythmic")
        >>> logits = model(torch.randn(2, 120, 10))                # (2, 120, 10)
    """

    def forward(self, x: torch.Tensor, state=None, record: bool = False):
        out, _, recs = self._run(x, state, record)
        logits = self.head(out)
        return (logits, recs) if record else logits
