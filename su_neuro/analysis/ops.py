r"""Synaptic operation counts: dense baseline vs the work an event-driven engine does.

Terms follow NeuroBench's synaptic operations: **Dense** counts every weight times every
input, zero or not (hardware without sparsity support); **effective** operations drop
zero inputs and skipped rows; an effective operation on a binary (spike) input is an
accumulate (**AC**), on a real-valued input a multiply-accumulate (**MAC**). Biases are
not synaptic operations.

For a layer with input size F, H neurons, candidate multiplicity m (RNN 1, GRU 3 — the
r, z, n rows —, LIF 1), per sample and step t:

Dense:      m·H·F  (+ m·H·H for RNN/GRU and recurrent LIF)
Effective:  m·rows_t·(nnz(x_t) + rec_t)

* rows_t — rows whose candidate is computed. Rhythmic / dense gates: the open neurons
  k_t (closed rows are skipped). Event gate: all H (the gate needs every candidate to
  decide), but then the recurrent product is carried by delta accumulation (below).
* nnz(x_t) — nonzero inputs: spikes of the layer below (LIF), neurons of an RNN/GRU layer
  below that have updated at least once (their state is nonzero), or the stored count of
  nonzero model inputs; F when unknown (an upper bound, flagged in the notes).
* rec_t — recurrent columns. RNN/GRU with rhythmic/dense gate: neurons with a nonzero
  state entering t (updated at least once before t; zero initial state), which is H once
  every neuron has updated. RNN/GRU with event gate: neurons that changed at t-1 (delta
  accumulation U·h_t = U·h_{t-1} + U[:, changed]·Δh). Recurrent LIF: spikes at t-1 (ACs).

MAC or AC is decided from the data where it is known, as NeuroBench decides it: a sample
whose model inputs take only the values 0 and ±1 (``input_binary``, recorded by the trace
writers) has its input synapses counted as ACs, any other as MACs. Without that record the
layer metadata decides (``input_kind == "spike"``: ACs). Inputs from a LIF layer below and
LIF recurrent spikes are ACs; RNN/GRU states are MACs. The dense baseline splits the same
way (binary inputs need no multiply even on dense hardware).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .stats import ever_updated

__all__ = ["CELL_ROWS", "LayerCarry", "OpCounts", "count_layer_ops", "memory_bytes"]

#: candidate rows per neuron (GRU: r, z, n)
CELL_ROWS = {"rnn": 1, "gru": 3, "lif": 1}


@dataclass
class OpCounts:
    """Operation totals (Python ints) over all analysed samples and steps."""

    dense_macs: int = 0
    dense_acs: int = 0
    effective_macs: int = 0
    effective_acs: int = 0
    neuron_updates: int = 0           # open (neuron, step) pairs: state writes
    dense_neuron_updates: int = 0     # N·T·H
    state_reads: int = 0              # states read: the updates; event gate: all H every step
    dense_state_reads: int = 0        # N·T·H
    elementwise: int = 0              # GRU's 3 products per computed row (r⊙Uh, (1-z)⊙n, z⊙h)
    dense_elementwise: int = 0
    samples: int = 0

    @property
    def dense(self) -> int:
        """NeuroBench ``Dense`` synaptic operations."""
        return self.dense_macs + self.dense_acs

    @property
    def effective(self) -> int:
        """Effective synaptic operations (MACs + ACs)."""
        return self.effective_macs + self.effective_acs

    def __add__(self, other: OpCounts) -> OpCounts:
        return OpCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                           for f in fields(self) if f.name != "samples"},
                        samples=max(self.samples, other.samples))

    def per_sample(self) -> dict[str, float]:
        """Averages per sample (NeuroBench reports per model execution)."""
        n = max(self.samples, 1)
        d = {k: v / n for k, v in asdict(self).items() if k != "samples"}
        d["dense"] = self.dense / n
        d["effective"] = self.effective / n
        return d

    def to_dict(self) -> dict[str, int]:
        d = asdict(self)
        d["dense"] = self.dense
        d["effective"] = self.effective
        return d


@dataclass
class LayerCarry:
    """What counting a piece of a stream needs from the steps before it (one layer).

    ``ever``: bool ``(n, H)`` neurons that updated before the piece; ``open_last`` / ``spikes_last``:
    ``(n,)`` open neurons / spikes at the step before it. :func:`count_layer_ops` updates it.
    """

    ever: np.ndarray | None = None
    open_last: np.ndarray | None = None
    spikes_last: np.ndarray | None = None


def memory_bytes(ops: OpCounts, *, bytes_per_weight: float = 4,
                 bytes_per_state: float = 4) -> tuple[float, float]:
    """Estimated memory traffic ``(dense, effective)`` in bytes.

    Every synaptic operation reads one weight (no reuse across steps, batch-1 streaming
    inference), every computed row reads its state and every update writes it:
    ``bytes = ops·bytes_per_weight + (state_reads + updates)·bytes_per_state`` (the state
    reads are the updates, except for the event gate, which reads all H states every step).
    """
    dense = (ops.dense * bytes_per_weight
             + (ops.dense_state_reads + ops.dense_neuron_updates) * bytes_per_state)
    eff = ops.effective * bytes_per_weight + (ops.state_reads + ops.neuron_updates) * bytes_per_state
    return float(dense), float(eff)


def count_layer_ops(meta: Mapping[str, Any], gates: np.ndarray, *,
                    input_nnz: np.ndarray | None = None,
                    spikes: np.ndarray | None = None,
                    input_binary: np.ndarray | None = None,
                    carry: LayerCarry | None = None,
                    lengths: np.ndarray | None = None) -> OpCounts:
    """Count operations of one layer for a chunk of samples.

    Args:
        meta: layer metadata (``cell``, ``gate``, ``input_size``, ``hidden_size``,
            ``recurrent``, ``input_kind``).
        gates: bool ``(n, T, H)``.
        input_nnz: nonzero inputs per step ``(n, T)``; None means all F inputs nonzero.
        spikes: the layer's own spikes ``(n, T, H)`` (recurrent LIF needs them).
        input_binary: bool ``(n,)``: whether each sample's inputs are only 0 / ±1 (its input
            synapses are then ACs, else MACs); None: ``meta["input_kind"]`` decides.
        carry: for a piece of a stream, the state left by the previous piece
            (:class:`LayerCarry`, updated in place); None: every sample starts at step 0.
        lengths: valid steps per sample ``(n,)`` of padded samples (padded steps cost
            nothing, dense or effective); None: all T steps.
    Returns:
        :class:`OpCounts` for the chunk.
    """
    cell = meta["cell"]
    m = CELL_ROWS[cell]
    f, h = int(meta["input_size"]), int(meta["hidden_size"])
    n, t, hh = gates.shape
    if hh != h:
        raise ValueError(f"gates have {hh} neurons, metadata says {h}")
    recurrent = bool(meta.get("recurrent", True)) or cell != "lif"
    if input_binary is None:
        spike_in = np.full(n, meta["input_kind"] == "spike")
    else:
        spike_in = np.asarray(input_binary, bool).reshape(n)
    event = meta["gate"] == "event"
    carry_in = carry is not None and carry.ever is not None

    valid = (np.ones((n, t), np.int64) if lengths is None
             else (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64))
    k = gates.sum(axis=2, dtype=np.int64) * valid                # (n, T) open rows; none when padded
    steps = valid.sum(axis=1)                                     # (n,) steps without padding
    rows = valid * h if event else k
    x = (np.full((n, t), f, np.int64) if input_nnz is None
         else np.asarray(input_nnz, dtype=np.int64))
    if x.shape != (n, t) or (x.size and (x.min() < 0 or x.max() > f)):
        raise ValueError(f"input_nnz must be (n, T) = {(n, t)} counts in [0, F = {f}], got shape {x.shape}"
                         + (f", values {x.min()}..{x.max()}" if x.size else ""))
    in_ops = m * (rows * x).sum(axis=1)                          # (n,) per sample

    rec_mac = rec_ac = 0
    s = None
    if cell == "lif":
        if recurrent:
            if spikes is None:
                raise ValueError("a recurrent LIF layer needs its spikes to count operations")
            s = spikes.sum(axis=2, dtype=np.int64) * valid
            prev = np.zeros_like(s)
            prev[:, 1:] = s[:, :-1]
            if carry_in and t:
                prev[:, 0] = carry.spikes_last
            rec_ac = int((rows * prev).sum())
    else:
        if event:
            prev = np.zeros_like(k)
            prev[:, 1:] = k[:, :-1]
            if carry_in and t:
                prev[:, 0] = carry.open_last
        else:
            prev = ever_updated(gates, before=True, initial=carry.ever if carry_in else None)
        rec_mac = int(m * (rows * prev).sum())
    if carry is not None and t:
        ever = gates.any(axis=1)
        carry.ever = ever | carry.ever if carry_in else ever
        carry.open_last = k[:, -1].copy()
        carry.spikes_last = s[:, -1].copy() if s is not None else np.zeros(n, np.int64)

    all_steps = int(steps.sum())
    spike_steps = int(steps[spike_in].sum())
    dense_in_per_step = m * h * f
    dense_rec = all_steps * m * h * h if recurrent else 0
    upd = int(k.sum())
    computed = int(rows.sum())                                     # rows whose candidate is computed
    return OpCounts(
        dense_macs=(all_steps - spike_steps) * dense_in_per_step + (0 if cell == "lif" else dense_rec),
        dense_acs=spike_steps * dense_in_per_step + (dense_rec if cell == "lif" else 0),
        effective_macs=int(in_ops[~spike_in].sum()) + rec_mac,
        effective_acs=int(in_ops[spike_in].sum()) + rec_ac,
        neuron_updates=upd,
        dense_neuron_updates=all_steps * h,
        state_reads=computed,
        dense_state_reads=all_steps * h,
        elementwise=3 * computed if cell == "gru" else 0,
        dense_elementwise=3 * all_steps * h if cell == "gru" else 0,
        samples=n,
    )
