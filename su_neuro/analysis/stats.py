r"""Activity statistics of gate and spike events, accumulated chunk by chunk.

For a layer with gates :math:`g_{s,t,i} \in \{0,1\}` over N samples, T steps, H neurons:

* update rate of neuron i: :math:`u_i = \frac{1}{NT}\sum_{s,t} g_{s,t,i}`; layer rate
  :math:`u = \frac{1}{NTH}\sum g`; rate per step :math:`u_t = \frac{1}{NH}\sum_{s,i} g_{s,t,i}`.
* sparsity over time: :math:`1 - u_t`.
* firing rate (LIF): the same with spikes instead of gates.
* inter-update interval: the gap :math:`t_{k+1} - t_k` between consecutive updates of one
  neuron in one sample; the neuron's effective timescale is its mean interval (NaN when no
  sample holds two updates).
* activation sparsity (NeuroBench): :math:`1 - \frac{\text{nonzero activations}}{\text{all
  activations}}`, where a layer's activations are the events it emits: spikes for LIF, state
  changes (open gates) for RNN / GRU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ActivityAccumulator", "LayerActivity", "ever_updated", "inter_update_intervals"]


def inter_update_intervals(gates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intervals between consecutive updates, per sample and neuron.

    Args:
        gates: bool ``(n, T, H)``.
    Returns:
        ``(neuron, interval)``: two int64 arrays of equal length, one entry per gap.
    """
    s, h, t = np.nonzero(np.ascontiguousarray(gates.transpose(0, 2, 1)))  # sorted by s, h, t
    same = (s[1:] == s[:-1]) & (h[1:] == h[:-1])
    return h[1:][same].astype(np.int64), (t[1:] - t[:-1])[same].astype(np.int64)


def ever_updated(gates: np.ndarray, *, before: bool, initial: np.ndarray | None = None) -> np.ndarray:
    """Number of neurons that updated at least once up to step t, ``(n, T)`` int64.

    With a zero initial state these are exactly the neurons whose state is nonzero:
    after step t (``before=False``) or entering step t (``before=True``, i.e. up to t-1).
    ``initial`` (bool ``(n, H)``): neurons that updated before this chunk (a stream read in
    pieces); None: none did.
    """
    acc = np.logical_or.accumulate(gates, axis=1)
    if initial is not None:
        acc = acc | initial[:, None, :]
    ever = acc.sum(axis=2, dtype=np.int64)
    if not before:
        return ever
    out = np.zeros_like(ever)
    out[:, 1:] = ever[:, :-1]
    if initial is not None and out.shape[1]:
        out[:, 0] = initial.sum(axis=1)
    return out


def _stream_intervals(gates: np.ndarray, t0: int, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`inter_update_intervals` for a piece of a stream that starts at step ``t0``:
    the gap from each neuron's last update before the piece (``last``, ``(n, H)``, -1 for
    none) to its first update in it is included; ``last`` is updated in place."""
    s, h, t = np.nonzero(np.ascontiguousarray(gates.transpose(0, 2, 1)))
    if s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = t.astype(np.int64) + t0
    first = np.ones(s.size, bool)
    first[1:] = (s[1:] != s[:-1]) | (h[1:] != h[:-1])
    inner = ~first
    prev = last[s[first], h[first]]
    seen = prev >= 0
    nrn = np.concatenate([h[inner], h[first][seen]]).astype(np.int64)
    gap = np.concatenate([t[inner] - t[np.flatnonzero(inner) - 1], t[first][seen] - prev[seen]])
    end = np.append(first[1:], True)
    last[s[end], h[end]] = t[end]
    return nrn, gap.astype(np.int64)


@dataclass
class LayerActivity:
    """Activity of one layer over all analysed samples (arrays are numpy)."""

    num_samples: int
    num_steps: int
    hidden_size: int
    update_rate: float                   # mean of all gates
    neuron_update_rate: np.ndarray       # (H,)
    step_update_rate: np.ndarray         # (T,)
    time_neuron_rate: np.ndarray         # (bins, H): update rate per time bin and neuron
    mean_interval: np.ndarray            # (H,) mean inter-update interval, NaN if none
    interval_hist: np.ndarray            # (T,) count of intervals of each length (index)
    activation_sparsity: float           # NeuroBench: 1 - nonzero / all (spikes or updates)
    firing_rate: float | None = None     # LIF only
    neuron_firing_rate: np.ndarray | None = None
    step_firing_rate: np.ndarray | None = None

    @property
    def mean_timescale(self) -> float:
        """Mean inter-update interval over all gaps of the layer (steps)."""
        k = np.arange(len(self.interval_hist))
        c = self.interval_hist.sum()
        return float((k * self.interval_hist).sum() / c) if c else float("nan")


class ActivityAccumulator:
    """Accumulate :class:`LayerActivity` of one layer over chunks of samples.

    Example::

        acc = ActivityAccumulator(T, H, lif=False)
        for chunk in reader.iter_chunks():
            acc.update(chunk.gates["layers.0"])
        act = acc.result()
    """

    def __init__(self, num_steps: int, hidden_size: int, *, lif: bool, time_bins: int = 256):
        t, h = num_steps, hidden_size
        self.t, self.h, self.lif = t, h, lif
        self.n = 0
        self.valid_step = np.zeros(t, np.int64)  # samples whose sequence reaches step t
        self.gate_neuron = np.zeros(h, np.int64)
        self.gate_step = np.zeros(t, np.int64)
        self.int_sum = np.zeros(h, np.int64)
        self.int_cnt = np.zeros(h, np.int64)
        self.hist = np.zeros(max(t, 1), np.int64)
        nb = max(1, min(time_bins, t))
        self.bin_starts = (np.arange(nb) * t) // nb
        self.bin_len = np.diff(np.append(self.bin_starts, t))
        self.bin_of = np.searchsorted(self.bin_starts, np.arange(t), side="right") - 1
        self.tb = np.zeros((nb, h), np.int64)
        if lif:
            self.spike_neuron = np.zeros(h, np.int64)
            self.spike_step = np.zeros(t, np.int64)

    def update(self, gates: np.ndarray, spikes: np.ndarray | None = None,
               lengths: np.ndarray | None = None, *, t0: int | None = None) -> None:
        """Add a chunk: ``gates`` (and for LIF ``spikes``) bool ``(n, T, H)``; ``lengths``
        (n,) valid steps of padded samples (rates count only those steps, and an event on a
        padded step is ignored; None: all T).

        ``t0=None``: the chunk holds n further samples of T steps each. ``t0`` an int: the
        chunk holds steps ``t0 .. t0 + t - 1`` of the same n stream rows as the other chunks
        (pieces of one sequence per row, given in time order from ``t0 = 0``); intervals
        then cross the pieces' edges.
        """
        n, t, h = gates.shape
        a = 0 if t0 is None else t0
        if lengths is not None:
            # an event recorded on a padded step did not happen (the layers write none there)
            lengths = np.asarray(lengths, np.int64)
            keep = (np.arange(a, a + t)[None, :] < lengths[:, None])[:, :, None]
            gates = gates & keep
            spikes = None if spikes is None else spikes & keep
        if h != self.h or (t != self.t if t0 is None else a + t > self.t):
            raise ValueError(f"gates must be (n, {self.t}, {self.h}) or a piece of that many steps, "
                             f"got {gates.shape} at step {a}")
        if t0 is None:
            self.n += n
            nrn, gap = inter_update_intervals(gates)
        else:
            if a == 0:
                self.n = n
                self.last = np.full((n, h), -1, np.int64)
            nrn, gap = _stream_intervals(gates, a, self.last)
        if lengths is None:
            self.valid_step[a:a + t] += n
        else:
            self.valid_step[a:a + t] += (np.arange(a, a + t)[None, :] < lengths[:, None]).sum(axis=0)
        self.gate_neuron += gates.sum(axis=(0, 1), dtype=np.int64)
        per_t = gates.sum(axis=0, dtype=np.int64)  # (t, H)
        self.gate_step[a:a + t] += per_t.sum(axis=1)
        if t:
            bins = self.bin_of[a:a + t]
            starts = np.flatnonzero(np.diff(bins, prepend=-1))
            self.tb[bins[starts]] += np.add.reduceat(per_t, starts, axis=0)
        self.int_sum += np.bincount(nrn, weights=gap, minlength=self.h).astype(np.int64)
        self.int_cnt += np.bincount(nrn, minlength=self.h)
        self.hist += np.bincount(gap, minlength=len(self.hist))[: len(self.hist)]
        if self.lif:
            if spikes is None:
                raise ValueError("a LIF layer needs spikes")
            self.spike_neuron += spikes.sum(axis=(0, 1), dtype=np.int64)
            self.spike_step[a:a + t] += spikes.sum(axis=(0, 2), dtype=np.int64)

    def result(self) -> LayerActivity:
        n, t, h = self.n, self.t, self.h
        steps = int(self.valid_step.sum())  # valid sample-steps (n * t without padding)
        total = max(steps * h, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_int = np.where(self.int_cnt > 0, self.int_sum / np.maximum(self.int_cnt, 1),
                                np.nan)
        events = self.spike_neuron.sum() if self.lif else self.gate_neuron.sum()
        act = LayerActivity(
            num_samples=n, num_steps=t, hidden_size=h,
            update_rate=float(self.gate_neuron.sum() / total),
            neuron_update_rate=self.gate_neuron / max(steps, 1),
            step_update_rate=self.gate_step / np.maximum(self.valid_step * h, 1),
            time_neuron_rate=self.tb / np.maximum(self._bin_valid()[:, None], 1),
            mean_interval=mean_int,
            interval_hist=self.hist.copy(),
            activation_sparsity=float(1.0 - events / total),
        )
        if self.lif:
            act.firing_rate = float(self.spike_neuron.sum() / total)
            act.neuron_firing_rate = self.spike_neuron / max(steps, 1)
            act.step_firing_rate = self.spike_step / np.maximum(self.valid_step * h, 1)
        return act

    def _bin_valid(self) -> np.ndarray:
        """Valid sample-steps in each time bin."""
        if not self.t:
            return np.zeros(len(self.bin_starts), np.int64)
        return np.add.reduceat(self.valid_step, self.bin_starts)
