"""Analysis: rates, intervals, operation counts (hand-computed and NeuroBench), energy,
plots and the ``analyze`` command."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from su_neuro import traces
from su_neuro.analysis import (
    DEFAULT_TABLE,
    ActivityAccumulator,
    EnergyTable,
    OpCounts,
    analyze,
    analyze_records,
    count_layer_ops,
    estimate_energy,
    load_table,
    memory_bytes,
    plots,
)
from su_neuro.commands import analyze as analyze_cmd


def meta(cell="rnn", gate="rhythmic", f=3, h=2, recurrent=True, input_kind="dense"):
    return {"cell": cell, "gate": gate, "input_size": f, "hidden_size": h,
            "recurrent": recurrent, "input_kind": input_kind}


# ----------------------------------------------------------------------------- stats
def test_rates_and_intervals_by_hand():
    # 1 sample, T=6, H=3; neuron 0 updates at 0, 2, 5 (gaps 2, 3); neuron 1 never;
    # neuron 2 at 1 only (no gap)
    g = np.zeros((1, 6, 3), bool)
    g[0, [0, 2, 5], 0] = True
    g[0, 1, 2] = True
    acc = ActivityAccumulator(6, 3, lif=False, time_bins=3)
    acc.update(g[:, :, :])
    acc.update(g[:, :, :])  # a second identical sample, in a second chunk
    a = acc.result()
    assert a.num_samples == 2
    assert a.update_rate == pytest.approx(4 / 18)
    np.testing.assert_allclose(a.neuron_update_rate, [3 / 6, 0, 1 / 6])
    np.testing.assert_allclose(a.step_update_rate, [1 / 3, 1 / 3, 1 / 3, 0, 0, 1 / 3])
    np.testing.assert_allclose(a.mean_interval[[0]], [2.5])
    assert np.isnan(a.mean_interval[1]) and np.isnan(a.mean_interval[2])
    np.testing.assert_array_equal(a.interval_hist[:5], [0, 0, 2, 2, 0])
    assert a.mean_timescale == pytest.approx(2.5)
    # time bins of 2 steps: bin0 = steps 0,1 ; bin1 = 2,3 ; bin2 = 4,5
    np.testing.assert_allclose(a.time_neuron_rate, [[0.5, 0, 0.5], [0.5, 0, 0], [0.5, 0, 0]])
    assert a.activation_sparsity == pytest.approx(1 - 4 / 18)
    assert a.firing_rate is None


def test_firing_rate_lif():
    g = np.ones((2, 4, 2), bool)
    s = np.zeros((2, 4, 2), bool)
    s[0, 1, 0] = s[1, 3, 1] = s[1, 2, 1] = True
    acc = ActivityAccumulator(4, 2, lif=True)
    acc.update(g, s)
    a = acc.result()
    assert a.firing_rate == pytest.approx(3 / 16)
    np.testing.assert_allclose(a.neuron_firing_rate, [1 / 8, 2 / 8])
    assert a.activation_sparsity == pytest.approx(1 - 3 / 16)  # NeuroBench, on spikes


# ----------------------------------------------------------------------------- ops
G = np.array([[[1, 0], [1, 1], [0, 1]]], bool)  # (1, T=3, H=2): k = 1, 2, 1


def test_rnn_rhythmic_ops_by_hand():
    ops = count_layer_ops(meta("rnn", f=3, h=2), G)
    # input: k_t * F = (1 + 2 + 1) * 3 = 12 ; recurrent: k_t * (neurons updated before t)
    # = 1*0 + 2*1 + 1*2 = 4
    assert (ops.effective_macs, ops.effective_acs) == (16, 0)
    assert (ops.dense_macs, ops.dense_acs) == (3 * 2 * (3 + 2), 0)
    assert ops.neuron_updates == 4 and ops.dense_neuron_updates == 6
    assert ops.elementwise == 0


def test_gru_ops_by_hand():
    ops = count_layer_ops(meta("gru", f=3, h=2), G)
    assert ops.effective_macs == 3 * 16 and ops.dense_macs == 3 * 30
    assert ops.elementwise == 3 * 4 and ops.dense_elementwise == 3 * 6


def test_event_gate_ops_by_hand():
    ops = count_layer_ops(meta("rnn", gate="event", f=3, h=2), G)
    # every row: H * F per step = 2*3*3 = 18 ; recurrent columns = changed at t-1: 0, 1, 2
    # -> H * (0 + 1 + 2) = 6
    assert ops.effective_macs == 18 + 6
    # every state is read every step (the gate compares each candidate with it), only the
    # open ones are written; a GRU computes its 3 products for every row
    assert ops.state_reads == 3 * 2 and ops.neuron_updates == 4
    gru = count_layer_ops(meta("gru", gate="event", f=3, h=2), G)
    assert gru.elementwise == 3 * 3 * 2 and gru.dense_elementwise == 3 * 3 * 2
    dense_bytes, eff_bytes = memory_bytes(ops)
    assert eff_bytes == 24 * 4 + (6 + 4) * 4 and dense_bytes == 30 * 4 + (6 + 6) * 4


def test_lif_spike_input_ops_by_hand():
    s = np.array([[[0, 1], [1, 1], [0, 0]]], bool)  # own spikes per step: 1, 2, 0
    nnz = np.array([[2, 0, 3]])                       # nonzero input spikes per step
    ops = count_layer_ops(meta("lif", f=4, h=2, input_kind="spike"), G, input_nnz=nnz,
                          spikes=s)
    # input ACs: k_t * nnz_t = 1*2 + 2*0 + 1*3 = 5 ; recurrent ACs: k_t * spikes_{t-1}
    # = 1*0 + 2*1 + 1*2 = 4
    assert (ops.effective_macs, ops.effective_acs) == (0, 9)
    assert (ops.dense_macs, ops.dense_acs) == (0, 3 * 2 * (4 + 2))
    ff = count_layer_ops(meta("lif", f=4, h=2, recurrent=False, input_kind="dense"), G)
    assert (ff.effective_macs, ff.effective_acs) == (4 * 4, 0)
    assert (ff.dense_macs, ff.dense_acs) == (3 * 2 * 4, 0)


def _neurobench_synops(w_ih, w_hh, xs, hs_prev, total):
    """NeuroBench's procedure, by hand: binarize weights and activations (all ones for
    Dense), multiply, sum; bias excluded."""
    def b(a):
        return np.ones_like(a) if total else (a != 0).astype(float)
    return sum(float((b(w_ih) @ b(x)).sum() + (b(w_hh) @ b(h)).sum())
               for x, h in zip(xs, hs_prev, strict=True))


def test_dense_rnn_matches_neurobench_definitions():
    rng = np.random.default_rng(0)
    t, f, h = 7, 5, 4
    w_ih, w_hh = rng.standard_normal((h, f)), rng.standard_normal((h, h))
    xs = [rng.standard_normal(f) for _ in range(t)]
    hs_prev, hcur = [], np.zeros(h)     # zero initial state, as NeuroBench / PyTorch
    for x in xs:
        hs_prev.append(hcur)
        hcur = np.tanh(w_ih @ x + w_hh @ hcur)
    dense_nb = _neurobench_synops(w_ih, w_hh, xs, hs_prev, total=True)
    eff_nb = _neurobench_synops(w_ih, w_hh, xs, hs_prev, total=False)
    gates = np.ones((1, t, h), bool)    # DenseGate: every neuron updates every step
    ops = count_layer_ops(meta("rnn", gate="dense", f=f, h=h), gates,
                          input_nnz=np.full((1, t), f))
    assert ops.dense == dense_nb == t * h * (f + h)
    assert ops.effective_macs == eff_nb == t * h * f + (t - 1) * h * h
    assert ops.effective_acs == 0


def test_dense_lif_matches_neurobench_acs():
    rng = np.random.default_rng(1)
    t, f, h = 6, 5, 3
    x = rng.random((1, t, f)) < 0.3
    s = rng.random((1, t, h)) < 0.4
    ops = count_layer_ops(meta("lif", gate="dense", f=f, h=h, input_kind="spike"),
                          np.ones((1, t, h), bool), input_nnz=x.sum(2), spikes=s)
    s_prev = np.concatenate([np.zeros((1, 1, h), bool), s[:, :-1]], axis=1)
    w_ih, w_hh = np.ones((h, f)), np.ones((h, h))
    eff = _neurobench_synops(w_ih, w_hh, list(x[0]), list(s_prev[0]), total=False)
    assert ops.effective_acs == eff and ops.effective_macs == 0
    assert ops.dense == t * h * (f + h)


def test_memory_and_energy_by_hand():
    ops = OpCounts(dense_macs=100, dense_acs=20, effective_macs=10, effective_acs=6,
                   neuron_updates=3, dense_neuron_updates=12, state_reads=3,
                   dense_state_reads=12, samples=1)
    assert memory_bytes(ops) == (120 * 4 + 2 * 12 * 4, 16 * 4 + 2 * 3 * 4)
    assert count_layer_ops(meta("rnn", f=3, h=2), G).state_reads == 4  # the updates
    e = estimate_energy(ops)
    assert e.dense_pj == pytest.approx(100 * 4.6 + 20 * 0.9)
    assert e.effective_pj == pytest.approx(10 * 4.6 + 6 * 0.9)
    assert e.ratio == pytest.approx((46 + 5.4) / (460 + 18))
    assert e.dense_memory_pj == pytest.approx((480 + 96) * 2.5)
    assert DEFAULT_TABLE.mac_pj == 4.6 and DEFAULT_TABLE.ac_pj == 0.9
    assert "Horowitz" in DEFAULT_TABLE.source


def test_energy_table_file(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"name": "int8", "mac_pj": 0.2, "ac_pj": 0.03}))
    t = load_table(p)
    assert t.mac_pj == 0.2 and t.ac_pj == 0.03 and t.bytes_per_weight == 4
    p.write_text(json.dumps({"mac": 1}))
    with pytest.raises(ValueError, match="unknown energy table fields"):
        load_table(p)
    p.write_text(json.dumps({"mac_pj": -1}))
    with pytest.raises(ValueError, match=">= 0"):
        load_table(p)
    with pytest.raises(ValueError, match="unknown"):
        EnergyTable.from_dict({"foo": 1})
    # JSON true, NaN and Infinity are numbers to a plain isinstance / `< 0` check
    p.write_text('{"mac_pj": NaN}')
    with pytest.raises(ValueError, match="'mac_pj' must be a finite number >= 0, got nan"):
        load_table(p)
    for bad in ({"ac_pj": float("inf")}, {"mac_pj": True}):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            EnergyTable.from_dict(bad)
    with pytest.raises(ValueError, match="'name' must be a string"):
        EnergyTable.from_dict({"name": 5})


# ----------------------------------------------------------------------------- driver
TWO = {"layers.0": meta("lif", f=4, h=3, input_kind="spike"),
       "layers.1": meta("lif", f=3, h=2, recurrent=False, input_kind="spike")}


def two_layer_records():
    g0 = np.ones((1, 3, 3), bool)
    s0 = np.array([[[1, 0, 0], [1, 1, 0], [0, 0, 0]]], bool)  # 1, 2, 0 spikes
    g1 = G.copy()                                               # k = 1, 2, 1
    s1 = np.zeros((1, 3, 2), bool)
    return {"layers.0": SimpleNamespace(gate=g0, spike=s0, delta=None),
            "layers.1": SimpleNamespace(gate=g1, spike=s1, delta=None)}


def test_stacked_layers_take_spikes_from_below():
    x = np.zeros((1, 3, 4))
    x[0, 0, :2] = 1.0   # nnz per step: 2, 0, 4
    x[0, 2, :] = 1.0
    rep = analyze_records(two_layer_records(), TWO, inputs=x)
    l0, l1 = rep.layers["layers.0"].ops, rep.layers["layers.1"].ops
    # layer 0: rows 3 each step; input ACs 3*(2+0+4) = 18; recurrent ACs 3*(0+1+2) = 9
    assert l0.effective_acs == 27
    # layer 1: inputs = layer-0 spikes (1, 2, 0): 1*1 + 2*2 + 1*0 = 5, feed-forward
    assert l1.effective_acs == 5 and l1.effective_macs == 0
    assert rep.ops.effective == 32 and rep.ops.dense == 3 * 3 * 7 + 3 * 2 * 3
    assert rep.update_rate == pytest.approx((9 + 4) / (9 + 6))
    assert rep.activation_sparsity == pytest.approx(1 - 3 / 15)


def test_layer_below_decides_mac_or_ac():
    """A deeper layer's input synapses are ACs when the layer below is a LIF (spikes) and MACs
    when it is an RNN / GRU (states), whatever the layer's own ``input_kind`` says."""
    z = np.array([[[1, 0], [0, 0], [1, 1]]], bool)  # LIF spikes 1, 0, 2
    layers = {"lif": meta("lif", "dense", f=1, h=2, recurrent=False),
              "rnn": meta("rnn", "dense", f=2, h=1)}
    rec = {"lif": SimpleNamespace(gate=np.ones((1, 3, 2), bool), spike=z),
           "rnn": SimpleNamespace(gate=np.ones((1, 3, 1), bool), spike=None)}
    o = analyze_records(rec, layers, inputs=np.full((1, 3, 1), 0.5)).layers["rnn"].ops
    # input ACs 1 + 0 + 2; recurrent MACs over the state entering t = 0, 1, 1
    assert (o.effective_acs, o.effective_macs, o.dense_acs, o.dense_macs) == (3, 2, 6, 3)
    layers = {"rnn": meta("rnn", "dense", f=1, h=2),
              "lif": meta("lif", "dense", f=2, h=1, recurrent=False, input_kind="spike")}
    rec = {"rnn": SimpleNamespace(gate=np.ones((1, 3, 2), bool), spike=None),
           "lif": SimpleNamespace(gate=np.ones((1, 3, 1), bool), spike=np.zeros((1, 3, 1), bool))}
    o = analyze_records(rec, layers, inputs=np.full((1, 3, 1), 0.5)).layers["lif"].ops
    assert (o.effective_acs, o.effective_macs, o.dense_acs, o.dense_macs) == (0, 6, 0, 6)


def test_events_on_padded_steps_are_ignored():
    """Records made by other code may hold open gates or spikes after a sample's length: they
    count in no rate and cost nothing, as ``update_rate`` already had it."""
    import torch

    import su_neuro

    g = np.ones((2, 4, 3), bool)
    s = np.ones((2, 4, 3), bool)
    lengths = np.array([4, 2])
    rep = analyze_records({"l": SimpleNamespace(gate=g, spike=None, lengths=lengths)},
                          {"l": meta("rnn", "dense", f=2, h=3)})
    assert su_neuro.update_rate({"l": SimpleNamespace(gate=torch.as_tensor(g),
                                                      lengths=torch.as_tensor(lengths))}) == 1.0
    assert rep.update_rate == 1.0 and rep.ops.neuron_updates == rep.ops.dense_neuron_updates == 18
    # input 6 valid steps * 3 rows * 2; recurrent 3 * 3 for (4 - 1) + (2 - 1) steps after the first
    assert rep.ops.effective_macs == 36 + 9 * 4 and rep.ops.dense_macs == 6 * 3 * (2 + 3)
    lif = analyze_records({"l": SimpleNamespace(gate=g, spike=s, lengths=lengths)},
                          {"l": meta("lif", "dense", f=2, h=3)}).layers["l"]
    # input MACs as the RNN's; recurrent ACs: 3 rows * 3 spikes at t - 1 on 4 steps
    assert lif.activity.firing_rate == 1.0
    assert lif.ops.effective_macs == 36 and lif.ops.effective_acs == 9 * 4


def test_inputs_and_layers_that_do_not_fit_the_records_are_refused():
    """inputs with more features than the layer takes made the effective count exceed the dense
    one (ratio 1.67); other T, an empty batch or no layers failed with numpy's or Python's errors."""
    g = np.ones((1, 3, 2), bool)
    rec = {"l": SimpleNamespace(gate=g, spike=None)}
    layers = {"l": meta("rnn", f=3, h=2)}
    for x in (np.ones((1, 3, 7)), np.ones((1, 4, 3)), np.ones((3, 3))):
        with pytest.raises(ValueError, match=r"inputs must be \(B, T, F\) = \(1, 3, 3\)"):
            analyze_records(rec, layers, inputs=x)
    rep = analyze_records(rec, layers, inputs=np.ones((1, 3, 3)))
    assert rep.ops.effective_macs <= rep.ops.dense_macs
    empty = analyze_records({"l": SimpleNamespace(gate=np.ones((0, 3, 2), bool), spike=None)}, layers,
                            inputs=np.ones((0, 3, 3)))
    assert empty.ops.dense_macs == 0
    with pytest.raises(ValueError, match="no layers to analyse"):
        analyze_records(rec, {})
    with pytest.raises(ValueError, match=r"input_nnz must be \(n, T\) = \(1, 3\) counts in \[0, F = 3\]"):
        count_layer_ops(meta("rnn", f=3, h=2), g, input_nnz=np.full((1, 3), 4))


def test_raster_draws_no_event_of_a_padded_step(tmp_path, monkeypatch):
    """Records made by other code may hold events after a sample's length; every number ignored
    them, the raster drew them."""
    g = np.ones((2, 6, 3), bool)
    path = tmp_path / "pad.h5"
    traces.write(path, {"l": SimpleNamespace(gate=g, spike=None, delta=None, lengths=np.array([6, 2]))},
                 layers={"l": meta("rnn", "dense", f=2, h=3)})
    drawn = {}

    def raster(gates, out, **kwargs):
        drawn.update(gates)
        return out

    monkeypatch.setattr(plots, "plot_raster", raster)
    analyze(path, tmp_path / "report", raster_sample=1)
    assert drawn["l"].shape == (6, 3) and drawn["l"][:2].all() and not drawn["l"][2:].any()


def test_unknown_inputs_are_flagged():
    rep = analyze_records(two_layer_records(), TWO)
    assert any("upper bound" in n for n in rep.layers["layers.0"].notes)
    assert any("analyze_records called without inputs=" in n for n in rep.layers["layers.0"].notes)
    assert rep.layers["layers.0"].ops.effective_acs == 3 * 3 * 4 + 9


def _trace(tmp_path, t=16):
    rng = np.random.default_rng(0)
    layers = {"layers.0": meta("lif", f=4, h=6, input_kind="spike"),
              "layers.1": meta("gru", gate="event", f=6, h=5, input_kind="spike")}
    path = tmp_path / "run.h5"
    with traces.TraceWriter(path, layers=layers, config={"demo": True}) as w:
        for _ in range(3):
            g0 = rng.random((4, t, 6)) < 0.4
            s0 = (rng.random((4, t, 6)) < 0.2) & g0
            g1 = rng.random((4, t, 5)) < 0.1
            w.append({"layers.0": SimpleNamespace(gate=g0, spike=s0, delta=None),
                      "layers.1": SimpleNamespace(gate=g1, spike=None, delta=None)},
                     labels=rng.integers(0, 3, 4), inputs=rng.random((4, t, 4)) < 0.3)
    return path, layers


def test_trace_analysis_equals_in_memory_and_chunking(tmp_path):
    path, layers = _trace(tmp_path)
    a = analyze(path, batch_size=5)
    b = analyze(path, batch_size=1000)
    assert a.num_samples == 12 and a.ops == b.ops
    r = traces.read(path)
    rec = {n: SimpleNamespace(gate=r.gates(n), spike=r.spikes(n) if n == "layers.0" else None)
           for n in layers}
    nnz = r.input_nnz()
    r.close()
    x = np.zeros((12, 16, 4))
    for i in range(12):
        for t in range(16):
            x[i, t, : nnz[i, t]] = 1
    c = analyze_records(rec, layers, inputs=x)
    assert c.ops == a.ops
    np.testing.assert_allclose(c.layers["layers.0"].activity.mean_interval,
                               a.layers["layers.0"].activity.mean_interval)


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.random((784, 7)) < 0.2
    paths = [
        plots.plot_raster({"a": g, "b": g[:, :3]}, tmp_path / "r.png",
                          spikes={"a": g & (rng.random(g.shape) < 0.1), "b": None}),
        plots.plot_update_heatmap({"a": g.mean(1)}, tmp_path / "h.png", reshape=(28, 28)),
        plots.plot_update_heatmap({"a": rng.random((64, 7))}, tmp_path / "h2.png"),
        plots.plot_timescales({"a": rng.random(7) * 30, "b": np.full(3, np.nan)},
                              tmp_path / "ts.png"),
        plots.plot_ops(["a", "total"], [100, 200], [10, 30], tmp_path / "o.png",
                       dense_energy=[460, 920], effective_energy=[46, 92]),
    ]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="reshape"):
        plots.plot_update_heatmap({"a": g.mean(1)}, tmp_path / "x.png", reshape=(28, 27))


def test_training_curves(tmp_path):
    """Curves from metrics.jsonl files: each run's smoothed loss and accuracy are the lines
    drawn; a missing, corrupt or step-less log is named in the error."""
    logs = {}
    for name, slope in (("a", 0.01), ("b", 0.02)):
        recs = [{"event": "start", "step": 0}]
        recs += [{"event": "train", "step": 10 * k, "loss": 2.0 - slope * k, "acc": 0.1 + slope * k} for k in range(30)]
        recs.append({"event": "eval", "step": 300, "test_acc": 0.5})
        logs[name] = tmp_path / f"{name}.jsonl"
        logs[name].write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    fig = plots.figure_training_curves(logs, smooth=5, chance=0.17)
    loss_ax, acc_ax = fig.axes
    lines = [ln for ln in loss_ax.get_lines() if ln.get_label() in logs]
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    x, y = lines[1].get_data()
    np.testing.assert_allclose(x, 10 * np.arange(4, 30))  # a moving average of 5 starts at the 5th step
    np.testing.assert_allclose(y, 2.0 - 0.02 * (np.arange(4, 30) - 2))
    assert any(ln.get_label() == "chance" and ln.get_ydata()[0] == 0.17 for ln in acc_ax.get_lines())
    png = plots.plot_training_curves(logs, tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="no training log at .*missing"):
        plots.plot_training_curves({"x": tmp_path / "missing.jsonl"}, tmp_path / "x.png")
    (tmp_path / "bad.jsonl").write_text('{"event": "train", "step": 1, "loss": 1, "acc": 0}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2: not JSON"):
        plots.plot_training_curves({"x": tmp_path / "bad.jsonl"}, tmp_path / "x.png")
    # a resumed run logged steps 30 and 40 again after its checkpoint at 20: drawn once
    lines = [{"event": "train", "step": k, "loss": 1.0, "acc": 0.0} for k in (10, 20, 30, 40)]
    lines += [{"event": "resume", "step": 20}]
    lines += [{"event": "train", "step": k, "loss": 0.5, "acc": 0.0} for k in (30, 40, 50)]
    (tmp_path / "resumed.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    fig = plots.figure_training_curves({"r": tmp_path / "resumed.jsonl"}, smooth=1)
    x, y = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "r").get_data()
    assert list(x) == [10, 20, 30, 40, 50] and list(y) == [1.0, 1.0, 0.5, 0.5, 0.5]
    (tmp_path / "empty.jsonl").write_text('{"event": "start", "step": 0}\n')
    with pytest.raises(ValueError, match="holds no training steps"):
        plots.plot_training_curves({"x": tmp_path / "empty.jsonl"}, tmp_path / "x.png")


def test_cli_writes_report(tmp_path, capsys):
    path, layers = _trace(tmp_path, t=16)
    table = tmp_path / "e.json"
    table.write_text(json.dumps({"name": "test-table", "mac_pj": 1.0, "ac_pj": 0.5}))
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    out = tmp_path / "rep"
    args = parser.parse_args([str(path), "--out", str(out), "--reshape", "4x4",
                              "--energy-table", str(table)])
    assert analyze_cmd.run(args) == 0
    printed = capsys.readouterr().out
    assert "layers.0" in printed and "total" in printed and "test-table" in printed
    for name in ("report.md", "report.json", "raster.png", "update_heatmap.png",
                 "timescales.png", "ops.png"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "report.json").read_text())
    assert rep["num_samples"] == 12 and rep["energy_table"]["mac_pj"] == 1.0
    assert set(rep["layers"]) == set(layers)
    assert rep["ops"]["dense"] == sum(v["ops"]["dense"] for v in rep["layers"].values())
    # energy: totals in pJ, and the same per sample (the ratios are not divided)
    per = rep["energy_per_sample"]
    assert per["dense_pj"] == pytest.approx(rep["energy"]["dense_pj"] / 12)
    assert per["effective_memory_bytes"] == pytest.approx(rep["energy"]["effective_memory_bytes"] / 12)
    assert per["ratio"] == rep["energy"]["ratio"]
    assert rep["energy"]["dense_pj"] == pytest.approx(rep["ops"]["dense_macs"] * 1.0 + rep["ops"]["dense_acs"] * 0.5)
    assert "## Per layer" in (out / "report.md").read_text()
    # bad inputs: a clear message and exit status 2, no traceback
    bad = parser.parse_args([str(tmp_path / "missing.h5"), "--out", str(out)])
    assert analyze_cmd.run(bad) == 2
    assert "no such trace file" in capsys.readouterr().err
    bad = parser.parse_args([str(path), "--out", str(out), "--reshape", "5x5"])
    assert analyze_cmd.run(bad) == 2


def test_analysis_import_is_cheap():
    code = ("import sys, su_neuro.analysis, su_neuro.commands.analyze; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib'; "
            "assert 'h5py' not in sys.modules, 'h5py'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------- NeuroBench: MAC or AC from data
def _neurobench_linear_synops(weight: np.ndarray, xs: np.ndarray) -> dict[str, float]:
    """NeuroBench 2.3's SynapticOperations of one linear connection, per sample, computed by
    hand from its definition (neurobench/metrics/workload/synaptic_operations.py): each
    forward call's input is binarised (x != 0) and multiplied by the binarised weights
    (W != 0); the call counts ACs if its input holds only 0 and +-1, else MACs; Dense uses
    all-ones copies of both. ``xs``: (samples, T, F), one call per step of the whole batch."""
    wb = (weight != 0).astype(np.int64)
    ac = mac = dense = 0
    for t in range(xs.shape[1]):
        x = xs[:, t]
        ops = int((wb @ (x != 0).T.astype(np.int64)).sum())
        if np.all((x == 0) | (x == 1) | (x == -1)):
            ac += ops
        else:
            mac += ops
        dense += weight.size * x.shape[0]
    n = xs.shape[0]
    return {"Effective_ACs": ac / n, "Effective_MACs": mac / n, "Dense": dense / n}


def test_sulif_fed_spikes_counts_acs_like_neurobench(tmp_path):
    """A SULIF's metadata says input_kind "dense"; its spike input makes its ops ACs."""
    import torch

    from su_neuro import SULIF

    torch.manual_seed(0)
    layer = SULIF(10, 16, gate="dense", recurrent=False, backend="torch")
    assert layer.layer_meta(0)["input_kind"] == "dense"
    x = (torch.rand(4, 30, 10) < 0.2).float()
    with torch.no_grad():
        _, _, recs = layer(x, record=True)
    layers = {"layers.0": layer.layer_meta(0)}
    path = traces.write(tmp_path / "lif.h5", {"layers.0": recs[0]}, layers=layers, inputs=x)
    nb = _neurobench_linear_synops(layer.weight_ih_l0.detach().numpy(), x.numpy())
    for rep in (analyze(path), analyze_records({"layers.0": recs[0]}, layers, inputs=x)):
        ps = rep.ops.per_sample()
        assert ps["effective_acs"] == nb["Effective_ACs"] > 0
        assert ps["effective_macs"] == nb["Effective_MACs"] == 0
        assert ps["dense"] == nb["Dense"]
        assert rep.energy.effective_pj == pytest.approx(rep.ops.effective_acs * DEFAULT_TABLE.ac_pj)
    # real-valued input: the same layer's synapses are MACs, as NeuroBench counts them
    xr = x * torch.rand(4, 30, 10)
    with torch.no_grad():
        _, _, recs = layer(xr, record=True)
    nb = _neurobench_linear_synops(layer.weight_ih_l0.detach().numpy(), xr.numpy())
    rep = analyze_records({"layers.0": recs[0]}, layers, inputs=xr)
    assert rep.ops.per_sample()["effective_macs"] == nb["Effective_MACs"] > 0
    assert rep.ops.effective_acs == nb["Effective_ACs"] == 0


def test_simulated_poisson_stream_counts_acs_like_neurobench(tmp_path, cli):
    """simulate --trace then analyze, dense feed-forward LIF, 5 % Poisson input."""
    import torch

    from su_neuro.models import build_layer
    from su_neuro.simulate import poisson_chunks

    path = tmp_path / "p.h5"
    t, f, h = 2000, 16, 64
    proc = cli("simulate", "--cell", "lif", "--gate", "dense", "--hidden", h, "--input-size", f,
               "--steps", t, "--chunk", 300, "--poisson-rate", 0.05, "--seed", 0, "--backend", "torch",
               "--trace", path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = cli("analyze", path, "--out", tmp_path / "rep", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    # the same weights (simulate seeds torch with --seed before building) and the same input
    torch.manual_seed(0)
    layer = build_layer("lif", f, h, gate={"kind": "dense"}, backend="torch", num_layers=1, recurrent=False)
    x = torch.cat(list(poisson_chunks(1, t, f, 0.05, 300, seed=0)), 1).numpy()
    nb = _neurobench_linear_synops(layer.weight_ih_l0.detach().numpy(), x)
    ps = report["ops_per_sample"]
    assert report["num_samples"] == 1 and report["num_steps"] == t  # one stream, one sequence
    assert ps["effective_acs"] == nb["Effective_ACs"]
    assert ps["effective_macs"] == nb["Effective_MACs"] == 0
    assert ps["dense"] == nb["Dense"] == t * f * h
    assert 0.03 < nb["Effective_ACs"] / nb["Dense"] < 0.07


# ----------------------------------------------------------------------------- figures
def test_ops_figure_draws_ratios_on_a_linear_axis_from_zero():
    # a dense GRU at 0.88 of its dense operations must not look like a suGRU at 0.12
    fig = plots.figure_ops(["dense GRU", "suGRU"], [1000.0, 1000.0], [880.0, 120.0],
                           dense_energy=[4600.0, 4600.0], effective_energy=[4048.0, 552.0])
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1
        heights = [p.get_height() for p in ax.patches]
        np.testing.assert_allclose(heights, [0.88, 0.12])
        assert ax.lines[0].get_ydata()[0] == 1.0  # the dense reference
        texts = [t.get_text() for t in ax.texts]
        assert texts[0].startswith("0.88") and texts[1].startswith("0.12")
    assert fig.axes[1].texts[0].get_text().endswith("4.6e+03 pJ")  # energies have a unit
    assert fig.axes[0].texts[0].get_text().endswith("880 / 1e+03")


def test_timescale_figure_says_how_many_neurons_and_reads_a_single_value():
    rng = np.random.default_rng(0)
    v = rng.random(64) * 30 + 2
    v[:13] = np.nan  # 13 neurons never updated twice
    fig = plots.figure_timescales({"layers.0": v})
    ax = fig.axes[0]
    label = ax.get_legend().get_texts()[0].get_text()
    assert "51 of 64 neurons" in label and "13 never updated twice" in label
    assert ax.get_xlim()[0] <= np.nanmin(v) and ax.get_xlim()[1] >= np.nanmax(v)
    # a dense gate: every interval is 1 step -> one bar, axis from 0, value said in words
    fig = plots.figure_timescales({"dense": np.ones(64)})
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 1
    assert [p.get_height() for p in ax.patches] == [64]
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert any("mean interval 1 steps" in t.get_text() for t in ax.texts)


def test_large_raster_and_heatmap_are_reduced_and_say_so():
    rng = np.random.default_rng(1)
    t, h = 3000, 1024
    g = rng.random((t, h)) < 0.1
    fig = plots.figure_raster({"layers.0": g}, spikes={"layers.0": g & (rng.random((t, h)) < 0.2)})
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert img.shape == (plots.MAX_RASTER_NEURONS, plots.MAX_RASTER_STEPS)
    every = h // plots.MAX_RASTER_NEURONS
    np.testing.assert_array_equal(img, g[:plots.MAX_RASTER_STEPS, ::every].T)
    assert f"every {every}th neuron (64 of 1024), steps 0-499 of 3000" in ax.get_title(loc="right")
    assert "every 2nd neuron (64 of 128)" in plots.figure_raster({"a": g[:10, :128]}).axes[0].get_title(loc="right")
    assert [plots._ordinal(k) for k in (1, 3, 11, 12, 13, 21, 22, 111)] == [
        "1st", "3rd", "11th", "12th", "13th", "21st", "22nd", "111th"]
    assert ax.get_xlim() == (0, plots.MAX_RASTER_STEPS)
    # a small raster is drawn whole, without a note
    fig = plots.figure_raster({"a": g[:100, :20]})
    assert fig.axes[0].images[0].get_array().shape == (20, 100) and fig.axes[0].get_title(loc="right") == ""

    rates = rng.random((256, h)) * 0.1
    fig = plots.figure_update_heatmap({"layers.0": rates})
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert img.shape == (plots.MAX_HEATMAP_ROWS, 256)
    assert "sorted by rate" in ax.get_ylabel() and "mean of 8" in ax.get_ylabel()
    assert ax.images[0].get_clim()[0] == 0
    order = np.argsort(rates.mean(0), kind="stable")
    np.testing.assert_allclose(img[0], rates[:, order[:8]].mean(1))
    np.testing.assert_allclose(img.mean(), rates.mean())


def test_padded_batch_counts_valid_steps_only(tmp_path):
    """A padded batch's records carry ``lengths``: its padded steps never ran, so a dense
    gate reads update rate 1.0, and the in-memory report equals the trace's."""
    import torch

    import su_neuro

    torch.manual_seed(0)
    m = su_neuro.SequenceClassifier("rnn", 3, 4, 2, gate="dense")
    x = torch.randn(2, 10, 3)
    _, rec = m(x, record=True, lengths=torch.tensor([10, 4]))
    assert su_neuro.update_rate(rec) == 1.0
    assert su_neuro.update_rate(list(rec.values())) == 1.0
    mem = analyze_records(rec, m.layer_meta(), inputs=x)
    assert mem.update_rate == 1.0 and mem.layers["layers.0"].activity.update_rate == 1.0
    assert mem.ops.dense_neuron_updates == 14 * 4  # 10 + 4 valid steps, 4 neurons
    traces.write(tmp_path / "t.h5", rec, layers=m.layer_meta(), inputs=x)
    assert mem.ops == analyze(tmp_path / "t.h5").ops
    with pytest.raises(TypeError, match="dict layer name -> StepRecord"):
        analyze_records(list(rec.values()), m.layer_meta())


def test_analyze_validates_max_samples_and_batch_size(tmp_path, capsys):
    """0 or a negative --max-samples / --batch-size once gave an empty report (exit 0) or a
    Python error; --max-samples on a streamed trace was silently ignored."""
    from su_neuro import SULIF
    from su_neuro.simulate import simulate

    path, _ = _trace(tmp_path)
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    for flag in ("--max-samples", "--batch-size"):
        for value in ("0", "-2"):
            args = parser.parse_args([str(path), "--out", str(tmp_path / "rep"), "--no-plots", flag, value])
            assert analyze_cmd.run(args) == 2
            assert f"{flag} must be a positive integer, got {value}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_samples must be a positive integer"):
        analyze(path, max_samples=0)
    assert analyze(path, batch_size=4, max_samples=4).num_samples == 4
    # exactly N samples, not rounded up to a read chunk: the same counts as a trace of those N
    five = analyze(path, batch_size=4, max_samples=5)
    whole = analyze(path, max_samples=5)
    assert five.num_samples == whole.num_samples == 5 and five.ops == whole.ops
    r = traces.read(path)
    rec = {n: SimpleNamespace(gate=r.gates(n, slice(0, 5)),
                              spike=r.spikes(n, slice(0, 5)) if n == "layers.0" else None)
           for n in r.layers}
    layers, x_nnz = r.layers, r.input_nnz(slice(0, 5))
    r.close()
    x = (np.arange(4)[None, None, :] < x_nnz[:, :, None]).astype(float)
    assert analyze_records(rec, layers, inputs=x).ops == five.ops
    stream = tmp_path / "stream.h5"
    layer = SULIF(3, 5, backend="torch")
    with traces.StreamTraceWriter(stream, layers={"layers.0": layer.layer_meta(0)}, batch=1) as w:
        simulate(layer, (torch_rand_spikes(1, 30, 3)), chunk=10, callback=w.append_chunk)
    args = parser.parse_args([str(stream), "--out", str(tmp_path / "rep2"), "--no-plots", "--max-samples", "1"])
    assert analyze_cmd.run(args) == 2
    assert "streamed simulation" in capsys.readouterr().err
    assert analyze(stream).num_steps == 30


def torch_rand_spikes(b, t, f):
    import torch

    return (torch.rand(b, t, f, generator=torch.Generator().manual_seed(0)) < 0.3).float()


def test_a_report_folder_of_another_trace_is_refused_and_old_figures_go(tmp_path, capsys, monkeypatch):
    """Every run's trace is trace.h5, and analyze's default folder is named after the trace:
    a second run's report silently replaced the first's, and with --no-plots the first run's
    figures stayed beside the second run's report."""
    parser = argparse.ArgumentParser()
    analyze_cmd.add_arguments(parser)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = _trace(tmp_path / "a")
    second, _ = _trace(tmp_path / "b")
    rep = tmp_path / "rep"
    assert analyze_cmd.run(parser.parse_args([str(first), "--out", str(rep)])) == 0
    assert (rep / "raster.png").exists()
    assert analyze_cmd.run(parser.parse_args([str(first), "--out", str(rep), "--no-plots"])) == 0  # the same trace
    assert not (rep / "raster.png").exists(), "a figure of the earlier report stayed"
    capsys.readouterr()
    assert analyze_cmd.run(parser.parse_args([str(second), "--out", str(rep), "--no-plots"])) == 2
    assert f"{rep} holds the report of {first}; pass --overwrite" in capsys.readouterr().err
    assert json.loads((rep / "report.json").read_text())["source"] == str(first)
    assert analyze_cmd.run(parser.parse_args([str(second), "--out", str(rep), "--no-plots", "--overwrite"])) == 0
    assert json.loads((rep / "report.json").read_text())["source"] == str(second)
    # the same trace by a relative path from another working directory is the same trace
    monkeypatch.chdir(tmp_path / "b")
    assert analyze_cmd.run(parser.parse_args([second.name, "--out", str(rep), "--no-plots"])) == 0
    assert analyze_cmd.run(parser.parse_args([second.name, "--out", "../rep", "--no-plots"])) == 0
