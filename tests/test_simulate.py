"""Streaming simulation: chunked runs equal one call; the callback sees every step."""

import math

import pytest
import torch

from su_neuro import SUGRU, SULIF
from su_neuro.simulate import poisson_chunks, simulate, split_chunks, stream


@pytest.mark.parametrize("gate", ["rhythmic", "event", "dense"])
def test_stream_equals_one_call_and_callback_sees_every_step(gate):
    torch.manual_seed(0)
    layer = SULIF(4, 9, num_layers=2, recurrent=True, threshold=0.5, gate=gate, backend="torch")
    x = (torch.rand(2, 203, 4) < 0.3).float()
    with torch.no_grad():
        y, st, rec = layer(x, record=True)
    seen = []
    outs = [c.output for c in stream(layer, x, chunk=50, callback=seen.append)]
    assert [c.t0 for c in seen] == [0, 50, 100, 150, 200]
    assert torch.equal(torch.cat(outs, 1), y)  # LIF spikes: exact
    assert torch.equal(torch.cat([c.records[1].gate for c in seen], 1), rec[1].gate)
    assert seen[-1].state.t == 203


def test_simulate_reports_throughput_and_rate():
    layer = SUGRU(3, 20, gate={"kind": "rhythmic", "init_rate": 0.1, "period": 10.0}, backend="torch")
    src = poisson_chunks(batch=2, steps=300, features=3, rate=0.2, chunk=64, seed=1)
    res = simulate(layer, src)
    assert res.steps == 300 and res.batch == 2 and res.state.t == 300
    assert res.update_rate == pytest.approx(0.1, abs=1e-6)  # P * r = 1: exactly one open step per 10
    assert res.neuron_steps_per_second > 0
    # the first chunk (64 steps) timed apart: the steady rate counts the other 236 steps
    assert res.first_steps == 64 and 0 < res.first_seconds <= res.seconds
    expected = 2 * 236 * 20 / (res.seconds - res.first_seconds)
    assert res.steady_neuron_steps_per_second == pytest.approx(expected)
    one = simulate(layer, torch.zeros(1, 10, 3), chunk=64)
    assert one.first_steps == 10 and math.isnan(one.steady_neuron_steps_per_second)


def test_poisson_chunks_are_deterministic_and_bounded():
    a = list(poisson_chunks(1, 250, 5, 0.3, chunk=100, seed=3))
    b = list(poisson_chunks(1, 250, 5, 0.3, chunk=100, seed=3))
    assert [c.shape[1] for c in a] == [100, 100, 50]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert 0.2 < torch.cat(a, 1).mean().item() < 0.4
    with pytest.raises(ValueError, match="rate"):
        next(poisson_chunks(1, 10, 2, 1.5))
    with pytest.raises(ValueError, match="chunk"):
        next(split_chunks(torch.zeros(1, 4, 1), 0))
    with pytest.raises(ValueError, match="no chunk"):
        simulate(SUGRU(2, 3, backend="torch"), iter([]))
    layer = SUGRU(2, 3, backend="torch")
    _, state = layer(torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="no chunk"):  # with a state too (it reported a rate of 0)
        simulate(layer, iter([]), state)


def test_simulate_command_writes_a_segmented_trace(tmp_path, capsys):
    from su_neuro import traces
    from su_neuro.cli import main

    path = tmp_path / "sim.h5"
    argv = [
        "simulate",
        "--cell",
        "lif",
        "--recurrent",
        "--hidden",
        "24",
        "--input-size",
        "5",
        "--steps",
        "300",
        "--chunk",
        "100",
        "--batch",
        "2",
        "--rate",
        "0.2",
        "--backend",
        "torch",
        "--trace",
        str(path),
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "update rate      0.2000" in out and "neuron-steps/s" in out
    r = traces.read(path)
    assert r.num_samples == 6 and r.num_steps == 100 and r.stream_steps == 300
    assert r.run_meta["layout"] == "segments" and r.run_meta["stream_batch"] == 2
    g = r.gates("layers.0")
    assert g.shape == (6, 100, 24) and abs(g.mean() - 0.2) < 1e-6
    # rows 0 and 1 are the two stream rows of the first chunk: the rhythmic gate is batch
    # uniform; with period 1 / 0.2 = 5 steps, the next chunk repeats the rhythm exactly
    assert (g[0] == g[1]).all() and (g[0] == g[2]).all()
    assert (g.sum(1) == 20).all()  # each neuron opens once per 5 steps


def test_simulate_command_rejects_bad_arguments(tmp_path, capsys):
    from su_neuro.cli import main

    assert main(["simulate", "--gate", "bogus", "--hidden", "8", "--no-progress"]) == 2
    assert "unknown gate 'bogus'" in capsys.readouterr().err
    assert main(["simulate", "--hidden", "0", "--no-progress"]) == 2
    assert "--hidden must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["text", "hdf5"])
def test_simulate_trace_refuses_to_overwrite(tmp_path, cli, content):
    import h5py
    import numpy as np
    from conftest import one_line_error

    path = tmp_path / "existing.h5"
    if content == "text":
        path.write_text("notes I want to keep\n")
    else:
        with h5py.File(path, "w") as f:
            f["mine"] = np.arange(5)
    before = path.read_bytes()
    args = ["simulate", "--hidden", "8", "--steps", "20", "--chunk", "10", "--backend", "torch",
            "--trace", path, "--no-progress"]
    line = one_line_error(cli(*args), "simulate")
    assert "already exists" in line and "--overwrite" in line
    assert path.read_bytes() == before  # untouched
    ok = cli(*args, "--overwrite")
    assert ok.returncode == 0, ok.stderr
    from su_neuro import traces

    with traces.read(path) as r:
        assert r.stream_steps == 20


def test_stream_trace_is_one_sequence_with_input_counts(tmp_path, cli):
    """--steps not a multiple of --chunk; the analysis sees one 250-step sequence per stream
    row (intervals cross the chunk edges) and counts the real Poisson input."""
    import numpy as np

    from su_neuro import traces
    from su_neuro.analysis import analyze

    path = tmp_path / "s.h5"
    h, f, rate = 12, 6, 0.2
    proc = cli("simulate", "--cell", "lif", "--gate", "rhythmic", "--rate", "0.2", "--hidden", h,
               "--input-size", f, "--poisson-rate", rate, "--steps", 250, "--chunk", 100, "--batch", 2,
               "--backend", "torch", "--seed", 3, "--trace", path, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    with traces.read(path) as r:
        assert r.layout == "segments" and r.stream_steps == 250 and r.stream_segments == 3
        pieces = list(r.iter_stream())
        assert [t0 for t0, _ in pieces] == [0, 100, 200]
        assert [c.gates["layers.0"].shape for _, c in pieces] == [(2, 100, h), (2, 100, h), (2, 50, h)]
        g = np.concatenate([c.gates["layers.0"] for _, c in pieces], axis=1)  # (2, 250, h)
        nnz = np.concatenate([c.input_nnz for _, c in pieces], axis=1)
        assert all(c.input_binary.all() for _, c in pieces)
    # the input the command drew, regenerated
    x = torch.cat(list(poisson_chunks(2, 250, f, rate, 100, seed=3)), 1)
    np.testing.assert_array_equal(nnz, (x != 0).sum(2).numpy())

    rep = analyze(path, tmp_path / "report", plots=False)
    assert rep.num_samples == 2 and rep.num_steps == 250
    act = rep.layers["layers.0"].activity
    # period 5: every neuron opens once per 5 steps, 50 times in 250 steps -> 49 gaps of 5 per row;
    # cutting at the chunk edges would lose 2 gaps per row and neuron
    assert act.interval_hist[5] == 2 * 49 * h and act.interval_hist.sum() == 2 * 49 * h
    np.testing.assert_allclose(act.mean_interval, 5.0)
    # feed-forward LIF: effective ACs = sum_t open rows(t) * nonzero inputs(t), no MACs
    ops = rep.layers["layers.0"].ops
    assert ops.effective_macs == 0 and ops.dense_macs == 0
    assert ops.effective_acs == int((g.sum(2) * nnz).sum())
    assert ops.dense_acs == 2 * 250 * h * f


def test_simulate_refuses_token_and_ragged_tasks_with_the_way_out(monkeypatch, capsys):
    """A token task (listops) once ended in torch.stack's size error, or named its sequence
    length as an input count; ragged samples cannot share one stream."""
    import su_neuro.datasets as datasets
    from su_neuro.cli import main
    from su_neuro.datasets import Task

    real = datasets.get_task
    small = real("listops_short", n_train=4, n_valid=0, n_test=4)
    monkeypatch.setattr(datasets, "get_task", lambda name, **kw: small)
    assert main(["simulate", "--task", "listops_short", "--samples", "3", "--hidden", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "token task" in err and "su-neuro train --task listops_short --trace" in err

    ragged = [(torch.ones(3, 2), torch.zeros(1)), (torch.ones(5, 2), torch.zeros(1))]
    task = Task("ragged", "regress", ragged, ragged, input_size=2, output_size=1, seq_len=5)
    monkeypatch.setattr(datasets, "get_task", lambda name, **kw: task)
    assert main(["simulate", "--task", "ragged", "--samples", "2", "--hidden", "8", "--input-size", "2",
                 "--backend", "torch", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "differ in length (3 to 5 steps)" in err and "--samples 1" in err


def test_simulate_names_the_flags_it_refuses(capsys):
    from su_neuro.cli import main

    assert main(["simulate", "--task", "adding", "--samples", "1", "--hidden", "8", "--no-progress"]) == 2
    assert "population takes 16; build the population with --input-size 2" in capsys.readouterr().err
    assert main(["simulate", "--poisson-rate", "1.5", "--hidden", "8", "--no-progress"]) == 2
    assert "--poisson-rate must lie in [0, 1]" in capsys.readouterr().err


def test_stream_keeps_the_callers_grad_mode():
    # the layer runs without gradients, but the loop body between chunks (a readout trained on
    # each chunk) and the rest of the process after an abandoned stream keep theirs
    layer = SUGRU(3, 5, backend="torch")
    head = torch.nn.Linear(5, 1)
    gen = stream(layer, torch.randn(2, 30, 3), chunk=10)
    for item in gen:
        assert torch.is_grad_enabled()
        assert not item.output.requires_grad
        head(item.output).sum().backward()  # would raise without a graph
        break
    assert torch.is_grad_enabled() and head(torch.zeros(1, 5)).requires_grad


def test_poisson_stream_does_not_depend_on_the_chunk():
    # drawn step by step, so cutting it differently gives the same spikes (B > 1 too)
    whole = torch.cat(list(poisson_chunks(3, 250, 4, 0.3, chunk=250, seed=5)), 1)
    for chunk in (1, 7, 100):
        assert torch.equal(torch.cat(list(poisson_chunks(3, 250, 4, 0.3, chunk=chunk, seed=5)), 1), whole)


def test_stream_trace_refuses_other_rows_and_marks_an_interrupted_run(tmp_path):
    from su_neuro import traces
    from su_neuro.analysis import analyze

    layer = SULIF(3, 5, backend="torch")
    meta = {"layers.0": layer.layer_meta(0)}
    x = (torch.rand(2, 30, 3, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    with pytest.raises(ValueError, match="a chunk of 2 stream rows, but the trace was opened with batch=1"):
        with traces.StreamTraceWriter(tmp_path / "rows.h5", layers=meta, batch=1) as w:
            simulate(layer, x, chunk=10, callback=w.append_chunk)
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append_chunk(next(stream(layer, x, chunk=10, record=True)))

    # Ctrl-C after two chunks: the trace is whole (two segments) but marked interrupted
    path = tmp_path / "cut.h5"

    def stop_after_two(item):
        w.append_chunk(item)
        if item.t0 == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with traces.StreamTraceWriter(path, layers=meta, batch=2) as w:
            simulate(layer, x, chunk=10, callback=stop_after_two)
    with traces.read(path) as r:
        assert r.stream_steps == 20 and r.interrupted and not r.complete
    import h5py

    with h5py.File(path, "r") as f:
        assert f["closed"][0] == 1, "closed by the writer, not killed"
    rep = analyze(path)
    assert any("interrupted" in n and "20 steps" in n for n in rep.notes), rep.notes
    with traces.StreamTraceWriter(tmp_path / "whole.h5", layers=meta, batch=2) as w:
        simulate(layer, x, chunk=10, callback=w.append_chunk)
    with traces.read(tmp_path / "whole.h5") as r:
        assert r.complete and not r.interrupted and r.stream_steps == 30
