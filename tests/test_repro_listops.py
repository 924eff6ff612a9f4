"""tools/repro_listops.py --quick: both models train, the report holds every figure it promises."""

import json
import math
from pathlib import Path

import numpy as np
import pytest


def test_repro_listops_quick(tmp_path, load_tool):
    tool = load_tool("repro_listops")
    result = tool.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    on_disk = json.loads((tmp_path / "listops_quick.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert (tmp_path / "listops_quick.md").read_text().count("|") > 20
    assert (tmp_path / "listops_quick_curves.png").read_bytes()[:4] == b"\x89PNG"
    # the curves of finished runs, redrawn without training; a malformed pair is refused
    runs = tmp_path / "listops_quick_runs"
    redrawn = tool.main(["--curves", f"su={runs / 'gru-rhythmic'}", f"gru={runs / 'gru-dense'}",
                         "--out", str(tmp_path / "again"), "--name", "both"])
    assert Path(redrawn["curves"]) == tmp_path / "again" / "both_curves.png" and Path(redrawn["curves"]).is_file()
    with pytest.raises(SystemExit, match="LABEL=RUN_DIR"):
        tool.main(["--curves", str(runs), "--out", str(tmp_path / "again")])
    assert [r["model"] for r in result["runs"]] == ["gru-rhythmic", "gru-dense"]
    assert result["references"] == {"lra_transformer": 0.3637, "paper_sugru": 0.4493}
    assert result["sizes"] == {"train": 256, "valid": 32, "test": 64}
    assert 10 < result["train_lengths"]["min"] <= result["train_lengths"]["max"] < 500
    # the majority baseline is the most frequent test label's share, recomputed here
    from su_neuro.datasets import get_task

    task = get_task("listops_short", n_train=256, n_valid=32, n_test=64)
    labels = np.array([task.test[i][1] for i in range(64)])
    assert result["majority"]["test_acc"] == pytest.approx(np.bincount(labels).max() / 64)
    for run in result["runs"]:
        assert run["steps"] == 8 and run["epochs"] == 1
        assert 0.0 <= run["test_acc"] <= 1.0 and math.isfinite(run["test_loss"])
        assert run["trace_samples"] == 32 and run["config"]["readout"] == "last"
        assert 0 < run["effective_macs_per_sample"] <= run["dense_macs_per_sample"]
        if run["gate"] == "dense":
            assert run["update_rate"] == 1.0
        else:
            assert 0.1 < run["update_rate"] < 0.4  # init_rate 0.25 after 8 steps
            assert run["ops_ratio"] < 0.5
        # silent neurons and the per-neuron rate spread, recounted from the trace's raw gates
        # over each sample's valid steps
        from su_neuro.traces import TraceReader

        opened, steps = 0, 0
        with TraceReader(runs / run["model"] / "trace.h5") as reader:
            for ch in reader.iter_chunks():
                (g,) = ch.gates.values()
                valid = np.arange(g.shape[1])[None, :] < ch.lengths[:, None]
                opened = opened + (g & valid[..., None]).sum(axis=(0, 1))
                steps += int(valid.sum())
        rates = opened / steps
        assert run["silent_neurons"] == pytest.approx(np.mean(rates == 0))
        assert run["neuron_rate_q10_q50_q90"] == pytest.approx(np.quantile(rates, [0.1, 0.5, 0.9]).tolist())
        assert run["neuron_rate_q10_q50_q90"] == sorted(run["neuron_rate_q10_q50_q90"])


def test_majority_baseline(load_tool):
    tool = load_tool("repro_listops")
    assert tool.majority_baseline([3, 3, 1, 9, 3]) == (3, 0.6)


def test_thread_counts_are_restored_and_readout_period_layers_harmonics_settle_passed(tmp_path, load_tool):
    import numba
    import torch

    before = (torch.get_num_threads(), numba.get_num_threads())
    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--models", "gru-rhythmic", "--readout", "mean",
            "--period", "16", "--layers", "2", "--harmonics", "3", "--rate-floor", "0.2", "--settle", "3"]  # fmt: skip
    result = load_tool("repro_listops").main(argv)
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    cfg = result["runs"][0]["config"]
    assert cfg["readout"] == "mean" and cfg["period"] == 16.0
    assert cfg["num_layers"] == 2 and cfg["gate_options"] == {"harmonics": 3}
    assert cfg["rate_floor"] == 0.2 and cfg["rate_floor_weight"] == 100.0 and cfg["settle_steps"] == 3
    # the trained model is built from them: two recurrent layers, each gate with 3 sinusoids
    from su_neuro import RhythmicGate
    from su_neuro.train import load_model

    model, _ = load_model(tmp_path / "listops_quick_runs" / "gru-rhythmic")
    gates = [m for m in model.modules() if isinstance(m, RhythmicGate)]
    assert len(gates) == 2 and all(g.harmonics == 3 and g.period == 16.0 for g in gates)
    assert model.settle_steps == 3
    # dense-to-sparse: the gate starts at --rate-start with the period of --rate
    argv = ["--quick", "--out", str(tmp_path / "anneal"), "--threads", "1", "--models", "gru-rhythmic",
            "--rate-start", "0.9", "--rate-anneal", "6"]  # fmt: skip
    cfg = load_tool("repro_listops").main(argv)["runs"][0]["config"]
    assert (cfg["init_rate"], cfg["period"], cfg["rate_target_start"], cfg["rate_anneal_steps"]) == (0.9, 4.0, 0.9, 6)
    assert cfg["rate_target"] == 0.25
    with pytest.raises(SystemExit, match="go together"):
        load_tool("repro_listops").main(["--quick", "--out", str(tmp_path), "--rate-start", "0.9"])
    # the trace holds each sample's settle steps: lengths + 3, inputs zero on them
    from su_neuro.datasets import get_task
    from su_neuro.traces import TraceReader

    task = get_task("listops_short", n_train=256, n_valid=32, n_test=64)
    with TraceReader(tmp_path / "listops_quick_runs" / "gru-rhythmic" / "trace.h5") as reader:
        chunks = list(reader.iter_chunks())
    lengths = np.concatenate([ch.lengths for ch in chunks])
    want = [len(task.test[i][0]) + 3 for i in reader.run_meta["test_indices"]]
    assert lengths.tolist() == want and reader.num_steps == max(want)
    for ch in chunks:
        for b, n in enumerate(ch.lengths):
            assert np.all(ch.input_nnz[b, : n - 3] > 0) and not np.any(ch.input_nnz[b, n - 3:])


def test_event_gate_gets_its_threshold_rate_target_and_weight(tmp_path, load_tool):
    from su_neuro import EventGate
    from su_neuro.train import load_model

    argv = ["--quick", "--out", str(tmp_path), "--threads", "1", "--models", "gru-event,gru-dense",
            "--threshold", "0.03", "--rate-weight", "4", "--rate", "0.3", "--nonfinite-grads", "skip",
            "--surrogate-gain", "0.3"]  # fmt: skip
    result = load_tool("repro_listops").main(argv)
    event, dense = result["runs"]
    cfg = event["config"]
    assert cfg["gate"] == "event"
    assert cfg["gate_options"] == {"init_threshold": 0.03, "surrogate_params": {"gain": 0.3}}
    assert (cfg["rate_target"], cfg["rate_weight"], cfg["init_rate"]) == (0.3, 4.0, None)
    assert cfg["nonfinite_grads"] == "skip"
    # the dense model stays unregularised whatever the gate flags say
    assert dense["config"]["rate_weight"] == 0.0 and dense["update_rate"] == 1.0
    assert 0.0 < event["update_rate"] < 1.0
    model, _ = load_model(tmp_path / "listops_quick_runs" / "gru-event")
    (gate,) = [m for m in model.modules() if isinstance(m, EventGate)]
    assert gate.init_threshold == 0.03 and gate.surrogate.gain == 0.3 and gate.surrogate.scale == 0.1
    # the threshold trained away from its start: the regulariser reaches it through the surrogate
    theta = gate.threshold.detach().numpy()
    assert not np.allclose(theta, 0.03)
    assert event["threshold_q10_q50_q90"] == pytest.approx(np.quantile(theta, [0.1, 0.5, 0.9]))
    assert "threshold_q10_q50_q90" not in dense


def test_event_thresholds_joins_the_layers(load_tool):
    import torch

    from su_neuro import SequenceClassifier

    tool = load_tool("repro_listops")
    model = SequenceClassifier("gru", 3, 4, 2, num_layers=2, gate="event", backend="torch")
    with torch.no_grad():
        model.rnn.gates[0].threshold.copy_(torch.tensor([0.0, -0.5, 0.1, 0.2]))
        model.rnn.gates[1].threshold.copy_(torch.tensor([0.3, 0.4, 0.5, 0.6]))
    stats = tool.event_thresholds(model)
    both = [0.0, -0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert stats["threshold_q10_q50_q90"] == pytest.approx(np.quantile(both, [0.1, 0.5, 0.9]))
    assert stats["nonpositive_thresholds"] == 0.25  # 0 and -0.5 of eight
    assert tool.event_thresholds(SequenceClassifier("gru", 3, 4, 2, gate="dense", backend="torch")) == {}


def test_resume_continues_an_interrupted_run_to_the_uninterrupted_result(tmp_path, load_tool, monkeypatch):
    """--checkpoint-every N saves checkpoints; --resume continues the run folder of an
    interrupted run from its last one, and ends where the uninterrupted run did."""
    import su_neuro.train as train_mod

    argv = ["--quick", "--threads", "1", "--models", "gru-rhythmic", "--checkpoint-every", "2"]  # fmt: skip
    whole = load_tool("repro_listops").main([*argv, "--out", str(tmp_path / "whole")])["runs"][0]
    real_train = train_mod.train

    def interrupted(*args, **kwargs):  # stops the quick run (8 steps) at step 5
        def on_step(step, _):
            if step == 5:
                raise KeyboardInterrupt

        return real_train(*args, **kwargs, on_step=on_step)

    monkeypatch.setattr(train_mod, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_tool("repro_listops").main([*argv, "--out", str(tmp_path)])
    monkeypatch.setattr(train_mod, "train", real_train)
    run_dir = tmp_path / "listops_quick_runs" / "gru-rhythmic"
    again = load_tool("repro_listops").main([*argv, "--out", str(tmp_path), "--resume"])["runs"][0]
    assert again["resumed"] and not whole["resumed"] and again["config"]["checkpoint_every"] == 2
    assert again["steps"] == whole["steps"] == 8
    assert again["test_loss"] == pytest.approx(whole["test_loss"], rel=1e-6)
    assert again["test_acc"] == whole["test_acc"]
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (resume,) = [e for e in events if e.get("event") == "resume"]
    assert 2 <= resume["step"] <= 5  # from a checkpoint of the interrupted run, not from 0 or 8
