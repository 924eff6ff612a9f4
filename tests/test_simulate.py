"""Streaming simulation: chunked runs equal one call; the callback sees every step."""

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


def test_poisson_chunks_are_deterministic_and_bounded():
    a = list(poisson_chunks(1, 250, 5, 0.3, chunk=100, seed=3))
    b = list(poisson_chunks(1, 250, 5, 0.3, chunk=100, seed=3))
    assert [c.shape[1] for c in a] == [100, 100, 50]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert 0.2 < torch.cat(a, 1).mean().item() < 0.4
    with pytest.raises(ValueError, match="rate"):
        next(poisson_chunks(1, 10, 2, 1.5))
    with pytest.raises(ValueError, match="chunk"):
        next(split_chunks(torch.zeros(1, 4, 1), 0))
    with pytest.raises(ValueError, match="no chunk"):
        simulate(SUGRU(2, 3, backend="torch"), iter([]))
