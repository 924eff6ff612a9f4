r"""The plain PyTorch recurrence: the executable specification of every backend.

One time loop, one gate blend, three candidates. For a population of H neurons with
state h (B, H) and projected input :math:`p_t = W_{ih} x_t + b_{ih}` (B, G):

RNN   :math:`f = \tanh(p_t + U h + b_{hh})`                                 (G = H)
GRU   :math:`r, z = \sigma(p^{r,z}_t + U^{r,z} h + b^{r,z}_{hh})`,
      :math:`n = \tanh(p^n_t + r \odot (U^n h + b^n_{hh}))`,
      :math:`f = (1 - z) \odot n + z \odot h`     (torch.nn.GRU, gate order r, z, n; G = 3H)
LIF   membrane v = h, spikes s:  :math:`\rho = [v > \vartheta]` (reset of the last spike,
      no gradient), :math:`I = p_t + V s_{t-1} + b_{hh}` (recurrent) or :math:`p_t`,
      subtract: :math:`f = \beta v + I - \rho\vartheta`;  zero: :math:`f = \beta(1-\rho) v + I`.

Gate blend: :math:`d = f - h`, :math:`h' = h + g \odot d` (dense: :math:`h' = f`), where
g is the rhythmic gate's row for this step (batch uniform), :math:`H(|d| - \theta)` for
the event gate, or 1. LIF spikes: :math:`s = g \odot H(v' - \vartheta)`; a closed neuron
neither leaks nor spikes.

Every backend (``kernels.numba``, ``kernels.triton``) implements :func:`recurrence`
with exactly this signature and must match it, forward and every gradient.
"""

from __future__ import annotations

import torch

from .contract import CELLS, GATE_ROWS, LIFParams, StepRecord, make_record

__all__ = ["CELLS", "GATE_ROWS", "LIFParams", "StepRecord", "candidate", "recurrence"]


def candidate(cell, p, h, s, w_hh, b_hh, lif: LIFParams | None):
    """The candidate f(h, x) of one step. p: (B, G); h, s: (B, H)."""
    if cell == "rnn":
        pre = p + h @ w_hh.t()
        if b_hh is not None:
            pre = pre + b_hh
        return torch.tanh(pre)
    if cell == "gru":
        gh = h @ w_hh.t()
        if b_hh is not None:
            gh = gh + b_hh
        pr, pz, pn = p.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(pr + hr)
        z = torch.sigmoid(pz + hz)
        n = torch.tanh(pn + r * hn)
        return (1 - z) * n + z * h
    # LIF
    current = p
    if w_hh is not None:
        current = current + s @ w_hh.t()
        if b_hh is not None:
            current = current + b_hh
    beta = lif.beta.clamp(0, 1)
    reset = (h > lif.threshold).to(h.dtype)
    if lif.reset == "subtract":
        return beta * h + current - reset * lif.threshold
    return beta * (1 - reset) * h + current


def recurrence(
    cell: str,
    xp: torch.Tensor,
    h0: torch.Tensor,
    s0: torch.Tensor | None,
    w_hh: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    gate,
    lif: LIFParams | None = None,
    record: bool = False,
):
    """Run one population over a sequence.

    Args:
        cell: "rnn", "gru" or "lif".
        xp: (B, T, G) projected input :math:`W_{ih} x_t + b_{ih}`.
        h0: (B, H) initial state (LIF: membrane).
        s0: (B, H) initial spikes (LIF), else None.
        w_hh: (G, H) recurrent weights (LIF: on spikes, None when not recurrent).
        b_hh: (G,) recurrent bias or None.
        gate: a :class:`su_neuro.gates.GateInput`.
        lif: :class:`LIFParams` for LIF, else None.
        record: also return a :class:`StepRecord`.

    Returns:
        (out, h_T, s_T, rec): out (B, T, H) is the state sequence (RNN/GRU) or the
        spikes (LIF); h_T (B, H); s_T (B, H) or None; rec a StepRecord or None.
    """
    gate = gate.materialized()  # a rhythm table (``plan(..., table=True)``): its rows
    kind = gate.kind
    rows = gate.values.unbind(0) if kind == "rhythmic" else None
    h, s = h0, s0
    outs, states, opened, spikes = [], [], [], []
    for t, p in enumerate(xp.unbind(1)):
        f = candidate(cell, p, h, s, w_hh, b_hh, lif)
        if kind == "dense":
            g = None
            h_new = f
        else:
            d = f - h
            g = rows[t] if kind == "rhythmic" else gate.surrogate(d.abs() - gate.values)
            h_new = h + g * d
        if cell == "lif":
            s = lif.spike(h_new - lif.threshold)
            if g is not None:
                s = g * s
        if record:
            states.append(h_new)
            if kind == "event":
                opened.append(g)
            if cell == "lif":
                spikes.append(s)
        h = h_new
        outs.append(s if cell == "lif" else h)
    out = torch.stack(outs, dim=1)
    rec = None
    if record:
        rec = make_record(gate, h0, torch.stack(states, 1), torch.stack(opened, 1) if opened else None,
                          torch.stack(spikes, 1) if cell == "lif" else None)
    return out, h, s, rec
