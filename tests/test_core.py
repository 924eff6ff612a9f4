"""Core: gates, cells, layers and the torch reference backend."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_close
from torch.func import functional_call

import su_neuro
from su_neuro import SUGRU, SULIF, SURNN, DenseGate, EventGate, RhythmicGate, SUState
from su_neuro.gates import GateInput, make_gate, neuron_rates, rate_floor_penalty, rate_penalty
from su_neuro.kernels.reference import LIFParams, recurrence
from su_neuro.models import Seq2Seq, SequenceClassifier, build_layer
from su_neuro.surrogate import SURROGATES, get_surrogate

CELLS = ("rnn", "gru", "lif")
GATES = ("rhythmic", "event", "dense")


@pytest.fixture(autouse=True)
def _reference_backend(monkeypatch):
    """These tests specify the model, so "auto" runs the torch reference here; the fast
    backends are checked against it in their own test files."""
    from su_neuro import backends

    monkeypatch.setattr(backends, "_auto_pays", lambda *a, **k: False)


def _gate_spec(gate, exact_surrogate=False):
    """Gate config; exact_surrogate picks a vanishing-width surrogate so that the data
    dependent gate is locally constant, as finite differences see it."""
    if gate == "rhythmic":
        return {"kind": "rhythmic", "init_rate": 0.4}
    if gate == "event":
        spec = {"kind": "event", "init_threshold": 0.05}
        if exact_surrogate:
            spec.update(surrogate="rectangle", surrogate_params={"width": 1e-12})
        return spec
    return "dense"


def _layer(cell, gate, F=2, H=3, exact_surrogate=False, **kw):
    extra = {}
    if cell == "lif":
        extra = dict(beta=0.8, threshold=0.5, recurrent=True)
        if exact_surrogate:
            extra.update(spike_grad="rectangle", spike_grad_params={"width": 1e-12})
    extra.update(kw)
    return build_layer(cell, F, H, gate=_gate_spec(gate, exact_surrogate), **extra)


# --------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("cell,gate", list(itertools.product(CELLS, GATES)))
def test_gradcheck_inputs_weights_initial_state(cell, gate):
    torch.manual_seed(0)
    layer = _layer(cell, gate, exact_surrogate=True, num_layers=2).double()
    if cell == "lif":  # larger weights so that spikes and resets happen
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if name.startswith("weight"):
                    p.mul_(3.0)
    weights = {n: p.detach().clone().requires_grad_() for n, p in layer.named_parameters() if not n.startswith("gates")}
    names = list(weights)
    x = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    h0 = (0.3 * torch.randn(2, 2, 3, dtype=torch.float64)).requires_grad_()

    def f(x, h0, *ws):
        params = dict(zip(names, ws, strict=True))
        state = SUState(h0, 0, torch.zeros_like(h0) if cell == "lif" else None)
        out, st = functional_call(layer, params, (x, state))
        return out, st.h

    assert torch.autograd.gradcheck(f, (x, h0, *weights.values()), eps=1e-6, atol=1e-5)


def test_gradcheck_lif_initial_spikes():
    torch.manual_seed(1)
    layer = _layer("lif", "rhythmic", exact_surrogate=True).double()
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    s0 = torch.bernoulli(torch.full((1, 2, 3), 0.5, dtype=torch.float64)).requires_grad_()
    h0 = torch.zeros(1, 2, 3, dtype=torch.float64)
    # spikes enter through W_hh s0 into the membrane (a smooth function of s0)
    assert torch.autograd.gradcheck(lambda s: layer(x, SUState(h0, 0, s))[1].h, (s0,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------- surrogate (gate parameters)
def test_rhythmic_gate_parameter_gradients_follow_surrogate_formula():
    torch.manual_seed(2)
    H, K, T, t0 = 5, 2, 40, 7
    gate = RhythmicGate(H, harmonics=K, init_rate=0.3, surrogate="triangle", surrogate_params={"width": 1.0}).double()
    with torch.no_grad():
        gate.alpha[:, 1] = 0.4  # exercise the second harmonic too
    layer = SUGRU(3, H, gate=gate).double()
    x = torch.randn(2, T, 3, dtype=torch.float64)
    state = SUState(torch.zeros(1, 2, H, dtype=torch.float64), t0)
    out, st = layer(x, state)
    w = torch.randn_like(out)
    (out * w).sum().backward()

    # dL/dg from the same loop with the gate sequence as a leaf
    g_leaf = gate.plan(t0, T).values.detach().requires_grad_()
    xp = torch.nn.functional.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)
    out2, *_ = recurrence(
        "gru", xp, state.h[0], None, layer.weight_hh_l0, layer.bias_hh_l0, GateInput("rhythmic", g_leaf)
    )
    (dg,) = torch.autograd.grad((out2 * w).sum(), g_leaf)

    with torch.no_grad():
        t = torch.arange(t0, t0 + T, dtype=torch.float64)
        ang = t[:, None, None] * gate.omega[None, None] + gate.phi[None]
        a = gate.bias[None] + (gate.alpha[None] * torch.sin(ang)).sum(-1)
        sd = torch.clamp(1 - a.abs(), min=0)  # triangle, width 1
        da = dg * sd
        exp_bias = da.sum(0)
        exp_alpha = (da[..., None] * torch.sin(ang)).sum(0)
        exp_phi = (da[..., None] * gate.alpha[None] * torch.cos(ang)).sum(0)
        exp_omega = (da[..., None] * gate.alpha[None] * torch.cos(ang) * t[:, None, None]).sum((0, 1))
    assert exp_bias.abs().sum() > 0, "the test should exercise the surrogate's support"
    assert_close("bias", exp_bias, gate.bias.grad, 1e-10, rtol=1e-10)
    assert_close("alpha", exp_alpha, gate.alpha.grad, 1e-10, rtol=1e-10)
    assert_close("phi", exp_phi, gate.phi.grad, 1e-10, rtol=1e-10)
    assert_close("omega", exp_omega, gate.omega.grad, 1e-9, rtol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_event_gate_gradients_follow_surrogate_formula(cell):
    """One step: h1 = h0 + g d, g = H(|d| - theta); d depends on x."""
    torch.manual_seed(3)
    H = 6
    kw = dict(beta=0.9, threshold=1.0, recurrent=True) if cell == "lif" else {}
    layer = build_layer(
        cell,
        4,
        H,
        gate={"kind": "event", "init_threshold": 0.3, "surrogate": "triangle", "surrogate_params": {"width": 0.5}},
        **kw,
    ).double()
    x = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    h0 = 0.5 * torch.randn(1, 3, H, dtype=torch.float64)
    state = SUState(h0, 0, torch.zeros_like(h0) if cell == "lif" else None)
    _, st = layer(x, state)
    w = torch.randn(3, H, dtype=torch.float64)
    (st.h[0] * w).sum().backward()
    theta = layer.gates[0].threshold

    # the same step by hand: f has no gate inside, so autograd of f alone is exact
    xd = x.detach().requires_grad_()
    xp = torch.nn.functional.linear(xd, layer.weight_ih_l0, layer.bias_ih_l0)[:, 0]
    lif = LIFParams(layer.beta, 1.0, "subtract", get_surrogate("atan")) if cell == "lif" else None
    from su_neuro.kernels.reference import candidate

    f = candidate(cell, xp, h0[0], torch.zeros_like(h0[0]), layer.weight_hh_l0, layer.bias_hh_l0, lif)
    d = f - h0[0]
    u = d.abs() - theta.detach()
    g = (u > 0).double()
    sd = torch.clamp(1 - u.abs() / 0.5, min=0) / 0.5
    exp_theta = -(w * d * sd).sum(0)
    # dh1/dd = g + d * sd * sign(d)
    (dx,) = torch.autograd.grad(d, xd, grad_outputs=(w * (g + d.detach() * sd * d.detach().sign())).detach())
    assert sd.sum() > 0, "the test should exercise the surrogate's support"
    assert_close("theta", exp_theta.detach(), theta.grad, 1e-10, rtol=1e-10)
    assert_close("x", dx, x.grad, 1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # snnTorch's Functions / su_neuro's
@pytest.mark.parametrize("name", SURROGATES)
def test_each_surrogate_backward_matches_its_formula(name, dtype):
    s = get_surrogate(name)
    x = torch.linspace(-2, 2, 101, dtype=dtype, requires_grad=True)
    y = s(x)
    assert y.dtype == dtype and torch.equal(y.detach(), (x.detach() > 0).to(dtype))
    y.backward(torch.ones_like(y))
    tol = 1e-5 if dtype == torch.float32 else 1e-15
    assert_close(name, s.derivative(x.detach()), x.grad, tol * 1e-2, rtol=tol)


@pytest.mark.parametrize("gain", [1.0, 0.3])
def test_float64_surrogate_gradients_keep_their_bits(gain):
    """snnTorch's Functions rounded a float64 gradient to float32 in their backward."""
    s = get_surrogate("atan", gain=gain)
    x = torch.linspace(-1, 1, 21, dtype=torch.float64, requires_grad=True)
    upstream = torch.full_like(x, 1 + 1e-12)  # 1e-12 is lost in float32
    s(x).backward(upstream)
    assert torch.equal(x.grad, upstream * s.derivative(x.detach()))


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogate_gain_scales_the_gradient_and_keeps_the_step(name):
    plain, damped = get_surrogate(name), get_surrogate(name, gain=0.3)
    assert damped.gain == 0.3 and plain.gain == 1.0 and damped.scale == plain.scale
    x = torch.linspace(-2, 2, 101, dtype=torch.float64)
    grads = []
    for s in (plain, damped):
        xs = x.clone().requires_grad_()
        y = s(xs)
        assert torch.equal(y.detach(), (x > 0).double())  # the step is exact, not 0.3 + 0.7
        y.backward(torch.ones_like(y))
        assert_close(name, s.derivative(x), xs.grad, 1e-12, rtol=1e-5)
        grads.append(xs.grad)
    assert grads[0].abs().sum() > 0
    assert_close(name, 0.3 * grads[0], grads[1], 1e-15, rtol=1e-15)


def test_surrogate_gain_is_checked_and_kept_in_the_gate_config():
    with pytest.raises(ValueError, match="gain must be a positive number"):
        get_surrogate("atan", gain=0.0)
    with pytest.raises(ValueError, match="gain must be a positive number"):
        get_surrogate("triangle", gain=float("nan"))
    with pytest.raises(TypeError, match=r"takes: width, gain"):
        get_surrogate("triangle", alpha=2.0)
    for bad in ("abc", None):
        with pytest.raises(ValueError, match=f"surrogate 'triangle': width must be a number, got {bad!r}"):
            get_surrogate("triangle", width=bad)
    gate = make_gate({"kind": "event", "surrogate_params": {"gain": 0.3}}, 4)
    assert gate.surrogate.params == {"width": 0.1, "gain": 0.3}
    again = make_gate(gate.config(), 4)
    assert again.surrogate.gain == 0.3 and again.surrogate.scale == 0.1


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates_stay_finite_in_float32(name):
    x = torch.tensor([-50.0, -4.0, -1e-3, 0.0, 1e-3, 4.0, 50.0], requires_grad=True)
    get_surrogate(name)(x).sum().backward()
    assert torch.isfinite(x.grad).all(), x.grad


def test_surrogate_errors_and_compact_support():
    with pytest.raises(ValueError, match="valid names: atan"):
        get_surrogate("nope")
    with pytest.raises(TypeError, match="takes no parameter 'slope'"):
        get_surrogate("triangle", slope=3)
    with pytest.raises(ValueError, match="positive"):
        get_surrogate("triangle", width=0)
    tri = get_surrogate("triangle", width=0.5)
    assert tri.compact and not get_surrogate("atan").compact
    assert tri.derivative(torch.tensor([0.6, -0.5, 0.0])).tolist() == [0.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="unknown surrogate"):
        RhythmicGate(4, surrogate="bogus")


# ------------------------------------------------------------------ closed neurons
@pytest.mark.parametrize("cell", CELLS)
def test_closed_neuron_jacobian_row_is_identity(cell):
    torch.manual_seed(4)
    H = 5
    layer = _layer(cell, "rhythmic", F=3, H=H).double()
    lif = layer._lif(0)
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    xp = torch.nn.functional.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)
    g = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    s0 = torch.zeros(2, H, dtype=torch.float64) if cell == "lif" else None

    def step(h0):
        return recurrence(cell, xp, h0, s0, layer.weight_hh_l0, layer.bias_hh_l0, GateInput("rhythmic", g), lif)[1]

    h0 = torch.randn(2, H, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(step, h0)  # (2, H, 2, H)
    for b in range(2):
        for i in (0, 2):
            row = J[b, i]
            expected = torch.zeros_like(row)
            expected[b, i] = 1.0
            assert torch.equal(row, expected)
    assert J[0, 1].abs().sum() > 0  # an open neuron does depend on the others


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_reaches_t0_undiminished_through_closed_steps(cell):
    torch.manual_seed(5)
    H, T = 4, 500
    layer = _layer(cell, "rhythmic", F=2, H=H).double()
    g = torch.zeros(T, H, dtype=torch.float64)
    g[:, 1:] = 1.0  # neuron 0 never opens
    x = torch.randn(1, T, 2, dtype=torch.float64)
    xp = torch.nn.functional.linear(x, layer.weight_ih_l0, layer.bias_ih_l0)
    h0 = torch.randn(1, H, dtype=torch.float64, requires_grad=True)
    s0 = torch.zeros(1, H, dtype=torch.float64) if cell == "lif" else None
    _, hT, _, _ = recurrence(
        cell, xp, h0, s0, layer.weight_hh_l0, layer.bias_hh_l0, GateInput("rhythmic", g), layer._lif(0)
    )
    hT[0, 0].backward()
    assert hT[0, 0].item() == h0[0, 0].item()
    assert h0.grad[0, 0].item() == 1.0
    assert torch.equal(h0.grad[0, 1:], torch.zeros(H - 1, dtype=torch.float64))


# ---------------------------------------------------------------- dense equivalence
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_dense_gate_reproduces_torch_rnn_gru(kind, num_layers):
    torch.manual_seed(6)
    tm = (torch.nn.RNN if kind == "rnn" else torch.nn.GRU)(5, 11, num_layers=num_layers, batch_first=True)
    su = (SURNN if kind == "rnn" else SUGRU).from_torch(tm)
    assert [n for n, _ in su.named_parameters() if not n.startswith("gates")] == [n for n, _ in tm.named_parameters()]
    x = torch.randn(3, 37, 5, requires_grad=True)
    h0 = torch.randn(num_layers, 3, 11)
    y_ref, h_ref = tm(x, h0)
    y, st = su(x, h0)
    assert_close("output", y_ref, y, 1e-5, rtol=1e-5)
    assert_close("h_T", h_ref, st.h, 1e-5, rtol=1e-5)
    gy = torch.randn_like(y)
    grads_ref = torch.autograd.grad((y_ref * gy).sum(), [x, *tm.parameters()])
    grads = torch.autograd.grad(
        (y * gy).sum(), [x, *[p for n, p in su.named_parameters() if not n.startswith("gates")]]
    )
    for a, b in zip(grads_ref, grads, strict=True):
        assert_close("grad", a, b, 1e-5, rtol=1e-5)


def test_from_torch_keeps_weights_with_a_sparse_gate():
    gru = torch.nn.GRU(2, 8, batch_first=True)
    su = SUGRU.from_torch(gru, gate={"kind": "rhythmic", "init_rate": 0.25})
    assert isinstance(su.gates[0], RhythmicGate)
    assert torch.equal(su.weight_hh_l0, gru.weight_hh_l0)
    with pytest.raises(ValueError, match="batch_first"):
        SUGRU.from_torch(torch.nn.GRU(2, 8))
    with pytest.raises(TypeError, match="takes a GRU"):
        SUGRU.from_torch(torch.nn.RNN(2, 8, batch_first=True))
    with pytest.raises(ValueError, match="relu"):
        SURNN.from_torch(torch.nn.RNN(2, 8, batch_first=True, nonlinearity="relu"))
    with pytest.raises(TypeError, match=r"takes \['num_layers'\] from the module, which has num_layers=1"):
        SUGRU.from_torch(gru, num_layers=2)
    assert SUGRU.from_torch(torch.nn.GRU(2, 8, num_layers=2, dropout=0.5, batch_first=True), dropout=0.0).dropout == 0


def test_from_torch_keeps_every_bit_of_float64_weights():
    """The layer was filled in float32 and then converted: a float64 module lost its low bits."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 6, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p in gru.parameters():
            p.add_(torch.randn_like(p) * 1e-12)  # bits a float32 cannot hold
    su = SUGRU.from_torch(gru, backend="nn")
    for name, p in gru.named_parameters():
        assert getattr(su, name).dtype == torch.float64 and torch.equal(getattr(su, name), p), name
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    assert torch.equal(su(x)[0], gru(x)[0])


def _snn_reference(recurrent, reset, x, layer):
    import snntorch as snn

    H = layer.hidden_size
    fc = torch.nn.Linear(layer.input_size, H)
    fc.load_state_dict({"weight": layer.weight_ih_l0, "bias": layer.bias_ih_l0})
    if recurrent:
        lif = snn.RLeaky(beta=0.85, threshold=0.7, linear_features=H, reset_mechanism=reset)
        lif.recurrent.load_state_dict({"weight": layer.weight_hh_l0, "bias": layer.bias_hh_l0})
        spk, mem = lif.init_rleaky()
    else:
        lif = snn.Leaky(beta=0.85, threshold=0.7, reset_mechanism=reset)
        mem = lif.init_leaky()
    spikes, mems = [], []
    for t in range(x.shape[1]):
        cur = fc(x[:, t])
        if recurrent:
            spk, mem = lif(cur, spk, mem)
        else:
            spk, mem = lif(cur, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes, 1), mems[-1]


@pytest.mark.parametrize("recurrent,reset", [(False, "subtract"), (False, "zero"), (True, "subtract")])
def test_dense_lif_reproduces_snntorch(recurrent, reset):
    torch.manual_seed(7)
    layer = SULIF(6, 13, beta=0.85, threshold=0.7, reset=reset, recurrent=recurrent, gate="dense")
    x = 2 * torch.rand(4, 60, 6)
    spk_ref, mem_ref = _snn_reference(recurrent, reset, x, layer)
    spk, st = layer(x)
    assert spk_ref.sum() > 20 and (spk_ref == 0).sum() > 20, "the test should see spikes and silence"
    assert torch.equal(spk_ref, spk), "spikes differ"
    assert_close("membrane", mem_ref, st.h[0], 1e-5, rtol=1e-5)


def test_closed_lif_neuron_holds_and_does_not_spike():
    layer = SULIF(2, 3, beta=0.5, threshold=0.1, gate={"kind": "rhythmic", "init_rate": 0.0})
    h0 = torch.full((1, 1, 3), 5.0)
    spk, st = layer(torch.ones(1, 20, 2), SUState(h0, 0, torch.zeros_like(h0)))
    assert spk.sum() == 0 and torch.equal(st.h, h0)


# ------------------------------------------------------------------------- chunks
@pytest.mark.parametrize("cell,gate", list(itertools.product(CELLS, GATES)))
def test_chunked_equals_whole(cell, gate):
    torch.manual_seed(8)
    layer = _layer(cell, gate, F=3, H=7, num_layers=2)
    x = torch.randn(2, 41, 3)
    y, st, rec = layer(x, record=True)
    pieces, recs, state = [], [], None
    for a, b in [(0, 1), (1, 14), (14, 40), (40, 41)]:
        yk, state, rk = layer(x[:, a:b], state, record=True)
        pieces.append(yk)
        recs.append(rk)
    assert state.t == 41
    # gate decisions (and LIF spikes) are exact; float states agree to the round-off of
    # the input projection, whose GEMM blocking depends on the chunk length
    for k in range(2):
        assert torch.equal(torch.cat([r[k].gate for r in recs], 1), rec[k].gate)
    if cell == "lif":
        assert torch.equal(torch.cat(pieces, 1), y)
    assert_close("output", y, torch.cat(pieces, 1), 1e-6, rtol=1e-5)
    assert_close("h_T", st.h, state.h, 1e-6, rtol=1e-5)


# ------------------------------------------------------------------------- gates
def test_rhythmic_gate_init_rate_and_parameters():
    torch.manual_seed(9)
    for rate in (0.05, 0.1, 0.25, 0.5, 1.0, 0.0):
        gate = RhythmicGate(200, init_rate=rate)
        assert abs(gate.plan(0, 400).values.mean().item() - rate) < 0.01
    gate = RhythmicGate(10, harmonics=3)
    assert dict((n, tuple(p.shape)) for n, p in gate.named_parameters()) == {
        "bias": (10,),
        "alpha": (10, 3),
        "phi": (10, 3),
        "omega": (3,),
    }
    with pytest.raises(ValueError, match="init_rate"):
        RhythmicGate(4, init_rate=1.5)
    with pytest.raises(ValueError, match="harmonics"):
        RhythmicGate(4, harmonics=0)


def test_rhythmic_gate_refuses_rates_and_periods_whose_neurons_would_never_open():
    """P·r < 1 leaves neurons whose open window misses every whole step silent for good, and
    a rate within MIN_INIT_RATE of 0 or 1 gives a float32 bias of ∓1 (never / always open);
    the population's mean rate hides both."""
    from su_neuro.gates import MIN_INIT_RATE

    torch.manual_seed(0)
    # what the refusals prevent: half the neurons never open at P = 10, r = 0.05
    with pytest.raises(ValueError, match=r"period 10 with init_rate 0.05 .* at least 1 / init_rate = 20"):
        RhythmicGate(1000, init_rate=0.05, period=10.0)
    for rate, period in ((0.5, 1.0), (0.3, 2.0), (0.1, 4.0)):
        with pytest.raises(ValueError, match="never open"):
            RhythmicGate(8, init_rate=rate, period=period)
    for rate in (3e-5, 3e-4, 0.9999):
        with pytest.raises(ValueError, match=rf"init_rate {rate:g} is too close to {round(rate)}"):
            RhythmicGate(8, init_rate=rate)
    # the bounds themselves, P·r = 1 and the ends 0 and 1 stay allowed; every neuron opens
    for rate, period in ((MIN_INIT_RATE, None), (1 - MIN_INIT_RATE, None), (0.1, 10.0), (0.3, 1 / 0.3), (0.0, 1.0),
                         (1.0, 0.5)):
        gate = RhythmicGate(64, init_rate=rate, period=period)
        steps = round(2 * gate.period) + 1
        opens = gate.plan(0, steps).values.sum(0)
        assert bool((opens > 0).all()) == (rate > 0), (rate, period)
        rate_seen = gate.plan(0, 20 * steps).values.mean().item()
        assert abs(rate_seen - rate) <= 0.01 * max(rate, 1e-3) + 1 / (20 * steps), (rate, rate_seen)


def test_rhythmic_gate_is_batch_uniform_and_exact_far_from_zero():
    gate = RhythmicGate(16, init_rate=0.1, period=10.0)
    g = gate.plan(100_000, 50).values
    # with P * r = 1, each neuron opens exactly once in every 10 steps
    assert torch.equal(g.view(5, 10, 16).sum(1), torch.ones(5, 16))
    layer = SURNN(2, 16, gate=gate)
    _, _, rec = layer(torch.randn(3, 10, 2), record=True)
    assert torch.equal(rec[0].gate[0], rec[0].gate[2])


def test_rhythmic_inference_plan_equals_surrogate_of_preactivation():
    # without autograd the plan takes an in-place path; it must give the very same 0/1 rows
    torch.manual_seed(3)
    for H, rate in ((37, 0.1), (300, 0.5), (64, 0.03)):
        gate = RhythmicGate(H, init_rate=rate)
        with torch.no_grad():
            gate.alpha.normal_(1.0, 0.5)  # some negative amplitudes too
            gate.bias.normal_(0.0, 0.5)
            fast = gate.plan(77_777, 500).values
            slow = gate.surrogate(gate.preactivation(77_777, 500))
        assert not fast.requires_grad and fast.dtype == torch.float32
        assert torch.equal(fast, slow) and 0 < fast.mean() < 1
        assert gate.plan(0, 10).values.requires_grad  # with autograd: the differentiable path
        assert gate.plan(0, 10, dtype=torch.float64).values.dtype == torch.float64


def test_rate_penalty_pushes_towards_target():
    gate = RhythmicGate(20, init_rate=0.5)
    loss = rate_penalty(gate.plan(0, 100).values, target=0.1)
    loss.backward()
    assert loss.item() > 0.1 and gate.bias.grad.sum() > 0  # gradient descent lowers the bias
    layer = SUGRU(2, 8, gate="event")
    _, _, recs = layer(torch.randn(2, 10, 2), record=True)
    rate_penalty([r.gate for r in recs], 0.2).backward()
    assert layer.gates[0].threshold.grad is not None
    with pytest.raises(ValueError, match="target"):
        rate_penalty(gate.plan(0, 5).values, 2.0)


def test_rate_floor_penalty_pushes_up_only_the_neurons_below_the_floor():
    """mean_i max(0, floor - r_i)^2 per layer, r_i each neuron's rate over ``count`` entries;
    its gradient on every gate entry of neuron i is -2 max(0, floor - r_i) / (H count): zero
    for the neurons at or above the floor. Layers sum; bad floors and shapes are refused."""
    torch.manual_seed(0)
    B, T, H, n = 3, 10, 6, 24.0  # 24 valid steps of 30 (a padded batch's record is zero after)
    g = (torch.rand(B, T, H) < torch.linspace(0.05, 0.9, H)).float()
    g[:, 8:] = 0
    g.requires_grad_(True)
    r = g.detach().sum((0, 1)) / n
    short = (0.4 - r).clamp(min=0)
    assert 0 < int((short > 0).sum()) < H  # some neurons below the floor, some above
    loss = rate_floor_penalty(g, 0.4, [n])
    assert loss.item() == pytest.approx(float((short**2).mean()), rel=1e-6)
    loss.backward()
    want = (-2 * short / (H * n)).expand(B, T, H)
    assert torch.allclose(g.grad, want, atol=1e-7)
    assert torch.equal(neuron_rates(g.detach(), n), r)
    assert neuron_rates(torch.ones(2, 5, 3)).tolist() == [1.0, 1.0, 1.0]  # default count: all entries
    # a rhythmic gate: gradient descent raises the biases of the neurons under the floor
    # (where the surrogate reaches them: its support is |a| < 0.25) and leaves the others
    gate = RhythmicGate(16, init_rate=0.25)
    rates = neuron_rates(gate.plan(0, 64).values.detach())
    rate_floor_penalty([gate.plan(0, 64).values, gate.plan(0, 64).values], 0.26).backward()
    below = gate.bias.grad[rates < 0.26]
    assert (below <= 0).all() and int((below < 0).sum()) >= len(below) // 2
    assert (gate.bias.grad[rates >= 0.26] == 0).all()
    with pytest.raises(ValueError, match="floor"):
        rate_floor_penalty(g, -0.1)
    with pytest.raises(ValueError, match="at least one"):
        rate_floor_penalty([], 0.1)
    with pytest.raises(ValueError, match=r"\(\.\.\., H\)"):
        neuron_rates(torch.zeros(4, 0))


def test_constrain_keeps_event_thresholds_non_negative_and_leaves_other_gates_alone():
    gate = EventGate(4, init_threshold=0.2)
    with torch.no_grad():
        gate.threshold.copy_(torch.tensor([-0.3, 0.2, -1e-8, 1e-8]))
    assert gate.constrain_() is gate
    assert torch.equal(gate.threshold.detach(), torch.tensor([0.0, 0.2, 0.0, 1e-8]))
    # the rhythm has no constraint: constrain_ leaves any values as they are
    rhythm = RhythmicGate(4, init_rate=0.3)
    with torch.no_grad():
        for p in rhythm.parameters():
            p.sub_(1.0)
    before = [p.clone() for p in rhythm.parameters()]
    rhythm.constrain_()
    assert all(torch.equal(a, b) for a, b in zip(before, rhythm.parameters(), strict=True))
    assert DenseGate(4).constrain_().kind == "dense"
    # constrain_gates reaches gates nested in a model, layer by layer
    model = su_neuro.SequenceClassifier("gru", 2, 3, 2, num_layers=2, gate="event", backend="torch")
    with torch.no_grad():
        for g in model.rnn.gates:
            g.threshold.fill_(-1.0)
    assert su_neuro.gates.constrain_gates(model) is model
    assert all(torch.equal(g.threshold.detach(), torch.zeros(3)) for g in model.rnn.gates)


def test_make_gate():
    assert isinstance(make_gate("event", 4), EventGate)
    assert isinstance(make_gate({"kind": "dense"}, 4), DenseGate)
    with pytest.raises(ValueError, match="valid gates: rhythmic, event, dense"):
        make_gate("sometimes", 4)
    with pytest.raises(ValueError, match="hidden_size 4"):
        make_gate(RhythmicGate(4), 5)
    with pytest.raises(TypeError, match="gate 'event'"):
        make_gate({"kind": "event", "init_rate": 0.1}, 4)


# --------------------------------------------------------------------- bad input
def test_bad_inputs_are_named():
    layer = SUGRU(3, 5, num_layers=2)
    with pytest.raises(ValueError, match=r"\(batch, time, features\)"):
        layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match="3 features"):
        SUGRU(4, 5)(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match="T = 0"):
        layer(torch.randn(2, 0, 3))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="float64"):
        layer(torch.randn(2, 4, 3, dtype=torch.float64))
    x = torch.randn(2, 4, 3)
    x[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        layer(x)
    x[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        layer(x)
    with pytest.raises(ValueError, match="another layer"):
        layer(torch.randn(2, 4, 3), SUGRU(3, 6, num_layers=2)(torch.randn(2, 4, 3))[1])
    with pytest.raises(ValueError, match="another layer or batch"):
        layer(torch.randn(2, 4, 3), torch.zeros(1, 2, 5))
    with pytest.raises(TypeError, match="SUState"):
        layer(torch.randn(2, 4, 3), [1, 2])
    with pytest.raises(ValueError, match="state.t"):
        layer(torch.randn(2, 4, 3), SUState(torch.zeros(2, 2, 5), -1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[1.0]])
    with pytest.raises(ValueError, match="hidden_size"):
        SURNN(3, 0)
    with pytest.raises(ValueError, match="unknown backend 'cuda'.*auto, torch, numba, triton"):
        SURNN(3, 4, backend="cuda")
    late = SURNN(3, 4)
    late.backend = "cuda"  # set after the layer was built: was a KeyError from deep inside
    with pytest.raises(ValueError, match="unknown backend 'cuda'.*auto, torch, numba, triton"):
        late(torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="unknown cell"):
        build_layer("lstm", 3, 4)
    with pytest.raises(ValueError, match="unknown reset"):
        SULIF(3, 4, reset="sometimes")
    with pytest.raises(ValueError, match="beta"):
        SULIF(3, 4, beta=1.5)
    with pytest.raises(ValueError, match="readout"):
        SequenceClassifier("gru", 3, 4, 2, readout="spike_count")


def test_constructor_errors_name_the_argument_and_take_numpy_integers():
    import numpy as np

    for make, name in ((lambda: SURNN(3, 5, dropout="a"), "dropout"), (lambda: SULIF(3, 4, threshold="a"), "threshold"),
                       (lambda: RhythmicGate(5, period="abc"), "period"),
                       (lambda: RhythmicGate(5, init_rate=None), "init_rate"),
                       (lambda: EventGate(5, init_threshold="x"), "init_threshold"),
                       (lambda: SURNN(3, True), "hidden_size"), (lambda: RhythmicGate(2.0), "hidden_size")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            make()
    for cls in (SURNN, SUGRU):  # no recurrent weights: only a feed-forward LIF population
        with pytest.raises(ValueError, match="recurrent=False is for SULIF"):
            cls(2, 3, recurrent=False)
    layer = SURNN(np.int64(3), np.int64(5), num_layers=np.int32(2))
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (3, 5, 2)
    assert type(layer.hidden_size) is int and RhythmicGate(np.int64(4)).hidden_size == 4
    _, state = layer(torch.randn(1, 2, 3), SUState(torch.zeros(2, 1, 5), np.int64(7)))
    assert state.t == 9 and type(state.t) is int


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_state_spikes_and_step_index_are_checked(backend):
    x = torch.randn(2, 4, 3)
    lif = SULIF(3, 5, recurrent=True, backend=backend)
    h = torch.zeros(1, 2, 5)
    with pytest.raises(TypeError, match="state.s is torch.float64"):
        lif(x, SUState(h, 0, torch.zeros(1, 2, 5, dtype=torch.float64)))
    with pytest.raises(ValueError, match="state.s contains NaN"):
        lif(x, SUState(h, 0, torch.full((1, 2, 5), float("nan"))))
    with pytest.raises(ValueError, match=r"state.s \(spikes\) must have shape"):
        lif(x, SUState(h, 0, torch.zeros(1, 2, 4)))
    # a rhythmic gate places steps exactly up to 2^53 only
    rnn = SURNN(3, 5, gate="rhythmic", backend=backend)
    with pytest.raises(ValueError, match="2\\^53"):
        rnn(x, SUState(h, 2**53 - 3))
    assert rnn(x, SUState(h, 2**53 - 4))[1].t == 2**53
    # an RNN has no spikes: a state's s is ignored, whatever it holds
    want = rnn(x, SUState(h, 5))[0]
    got = rnn(x, SUState(h, 5, torch.zeros(1, 2, 5, dtype=torch.float64)))[0]
    assert torch.equal(want, got)


def test_a_state_that_needs_a_gradient_makes_a_training_call(monkeypatch):
    # eval mode, frozen parameters, only h0 needs a gradient: the dense stack still runs its
    # library op in training mode (cuDNN refuses a backward through an inference call)
    from su_neuro.kernels import torch_rnn

    seen = []
    real = torch_rnn.stack

    def spy(*args, needs_grad, **kw):
        seen.append(needs_grad)
        return real(*args, needs_grad=needs_grad, **kw)

    monkeypatch.setattr(torch_rnn, "stack", spy)
    layer = SUGRU(3, 4, gate="dense", backend="nn").eval().requires_grad_(False)
    h0 = torch.zeros(1, 2, 4, requires_grad=True)
    out, _ = layer(torch.randn(2, 5, 3), h0)
    out.sum().backward()
    assert seen == [True] and h0.grad is not None and h0.grad.abs().sum() > 0


def test_unavailable_backend_is_an_error_not_a_fallback(monkeypatch):
    import importlib.util

    from su_neuro import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "numba" else real(n, *a))
    with pytest.raises(su_neuro.BackendUnavailableError, match="needs the package 'numba'"):
        SUGRU(2, 4, backend="numba")
    layer = SUGRU(2, 4, backend="auto")
    layer(torch.randn(1, 3, 2))  # auto still runs, on torch
    cpu = torch.device("cpu")
    assert backends.resolve("auto", cpu, "gru", "rhythmic", torch.float32, batch=1, hidden=4).name == "torch"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if importlib.util.find_spec("triton") is not None:
        with pytest.raises(su_neuro.BackendUnavailableError, match="needs CUDA tensors"):
            backends.resolve("triton", torch.device("cpu"), "gru", "dense", torch.float32, batch=1, hidden=4)


@pytest.mark.parametrize("cell", CELLS)
def test_kernels_under_autocast_compute_in_the_parameters_dtype(cell):
    """Under torch.autocast the layer's input projection came out in bfloat16, which numba then
    refused ("runs float32 only") although the layer's input and parameters were float32. The
    kernels now get a float32 projection, as where they project the input themselves: the same
    bits as outside autocast, forward and backward. The reference follows autocast."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3)
    layer = build_layer(cell, 3, 8, gate={"kind": "rhythmic", "init_rate": 0.5}, backend="numba")
    plain, plain_state = layer(x)
    (g_plain,) = torch.autograd.grad(plain.sum(), layer.weight_ih_l0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(x)
    (g,) = torch.autograd.grad(y.sum(), layer.weight_ih_l0)  # backward outside autocast, as torch advises
    assert y.dtype == torch.float32 and torch.equal(y, plain) and torch.equal(g, g_plain)
    layer.backend = "torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ref_state = layer(x)
    assert torch.isfinite(ref_state.h).all() and not torch.equal(ref_state.h, plain_state.h)  # bfloat16 matmuls


def test_import_is_cheap():
    code = (
        "import sys, su_neuro; heavy = [m for m in ('numba', 'triton', 'matplotlib', 'h5py', 'tonic') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------- models
@pytest.mark.parametrize("readout", ["last", "mean", "last_mean", "spike_count"])
def test_classifier_trains_a_step(readout):
    torch.manual_seed(10)
    cell = "lif" if readout == "spike_count" else "gru"
    model = SequenceClassifier(
        cell, 3, 12, 4, readout=readout, num_layers=2, gate={"kind": "rhythmic", "init_rate": 0.3}
    )
    x, y = torch.randn(5, 20, 3), torch.randint(0, 4, (5,))
    logits, recs = model(x, record=True)
    assert logits.shape == (5, 4) and list(recs) == ["layers.0", "layers.1"]
    assert 0.0 < su_neuro.update_rate(recs) < 1.0
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["rnn.gates.0.bias"].abs().sum() > 0
    meta = model.layer_meta()
    assert meta["layers.1"]["input_size"] == 12 and meta["layers.0"]["gate"] == "rhythmic"


def test_last_mean_readout_is_the_last_state_beside_the_valid_mean():
    torch.manual_seed(11)
    H = 6
    model = SequenceClassifier("gru", 3, H, 4, readout="last_mean", gate={"kind": "rhythmic", "init_rate": 0.5})
    assert model.head.in_features == 2 * H
    x, lens = torch.randn(3, 9, 3), torch.tensor([9, 4, 1])
    out, _ = model.rnn(x, lengths=lens)
    W, b = model.head.weight, model.head.bias
    for k, n in enumerate(lens.tolist()):
        want = W[:, :H] @ out[k, n - 1] + W[:, H:] @ out[k, :n].mean(0) + b
        assert_close(f"logits[{k}] with lengths", model(x, lengths=lens)[k], want, 1e-6)
    out_full, _ = model.rnn(x)
    want = out_full[:, -1] @ W[:, :H].T + out_full.mean(1) @ W[:, H:].T + b
    assert_close("logits without lengths", model(x), want, 1e-6)


def test_seq2seq_shapes():
    model = Seq2Seq("rnn", 10, 16, 9, gate="event")
    assert model(torch.randn(2, 30, 10)).shape == (2, 30, 9)


def test_readme_example_trains_a_sugru():
    """The README's twenty-line example, run as written: the loss falls and the rate holds."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    # well below chance (ln 2 = 0.69 plus the rate penalty); how far below depends on the
    # summation order (0.02-0.42 over backends, thread counts and BLAS kernels), not on a bug
    assert namespace["loss"].item() < 0.6
    assert 0.15 < su_neuro.update_rate(namespace["records"]) < 0.4
    out, out2 = namespace["out"], namespace["out2"]
    assert out.shape == (128, 50, 64) and out2.shape == (128, 50, 64) and namespace["state"].t == 100



def test_rhythmic_default_support_follows_the_rate():
    """With the default surrogate, training needs candidates on ~25 % of steps at a 10 % rate."""
    gate = RhythmicGate(400, init_rate=0.1)
    assert gate.surrogate.name == "triangle" and gate.surrogate.params == {"width": 0.25}
    frac = gate.plan(0, 100).support.float().mean().item()
    assert 0.2 < frac < 0.3, frac


def test_rhythmic_support_marks_open_steps_and_surrogate_support():
    gate = RhythmicGate(30, init_rate=0.1, surrogate="triangle", surrogate_params={"width": 0.2})
    plan = gate.plan(0, 200)
    a = gate.preactivation(0, 200).detach()
    assert torch.equal(plan.support, (a > 0) | (a.abs() < 0.2))
    assert plan.support.float().mean() < 0.5  # compact surrogate: sparse training work
    with torch.no_grad():
        assert gate.plan(0, 200).support is None


# ------------------------------------------------ model-level API (review of 2026-12-07)
def test_rate_penalties_count_the_valid_steps_of_records():
    """A padded batch's records are zero on the padded steps: the gate tensors alone biased
    the mean low (a dense model read 0.09 from its target 1.0); the records say which steps ran."""
    torch.manual_seed(0)
    m = SequenceClassifier("gru", 2, 4, 2, gate="dense", backend="torch")
    _, recs = m(torch.randn(3, 10, 2), lengths=[10, 4, 7], record=True)
    assert su_neuro.update_rate(recs) == su_neuro.update_rate(recs["layers.0"]) == 1.0  # a dict or one record
    for given in (recs, list(recs.values()), recs["layers.0"]):
        assert float(rate_penalty(given, 1.0)) == 0.0
        assert float(rate_floor_penalty(given, 1.0)) == 0.0
    assert float(rate_penalty([r.gate for r in recs.values()], 1.0)) == pytest.approx((1 - 21 / 30) ** 2)
    m = SequenceClassifier("gru", 2, 4, 2, gate={"kind": "rhythmic", "init_rate": 0.3}, backend="torch")
    _, recs = m(torch.randn(3, 10, 2), lengths=[10, 4, 7], record=True)
    assert float(rate_penalty(recs, 0.0).detach()) == pytest.approx(su_neuro.update_rate(recs) ** 2, rel=1e-5)
    with pytest.raises(TypeError, match="rate_penalty takes a gate tensor, a StepRecord, a dict of them"):
        rate_penalty("layers.0", 0.1)
    with pytest.raises(TypeError, match="rate_floor_penalty takes gate tensors or StepRecords, got str"):
        rate_floor_penalty(["layers.0"], 0.1)


def test_model_inputs_are_checked_before_settle_steps_and_devices():
    m = SequenceClassifier("gru", 3, 4, 2, settle_steps=3, backend="torch")
    with pytest.raises(ValueError, match="T = 0 steps"):
        m(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match=r"shape \(batch, time, features\)"):
        m(torch.randn(4, 3))
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        SequenceClassifier("gru", 3, 4, 0)
    assert SequenceClassifier("gru", 3, 4, 2, settle_steps=np.int64(2)).settle_steps == 2
    with pytest.warns(FutureWarning, match="embed_dim = 8 is used and input_size = 4 ignored"):
        assert SequenceClassifier("gru", 4, 4, 2, vocab_size=10, embed_dim=8).rnn.input_size == 8
    for backend in ("torch", "numba"):
        layer = SUGRU(3, 4, backend=backend).to("meta")
        with pytest.raises(ValueError, match="input x is on cpu but the layer's parameters are on meta"):
            layer(torch.randn(2, 5, 3))


def test_stream_takes_a_population_in_eval_mode():
    from su_neuro.simulate import simulate, stream

    with pytest.raises(TypeError, match=r"got SequenceClassifier \(a model: pass its recurrent stack, model.rnn\)"):
        simulate(SequenceClassifier("lif", 4, 16, 2), torch.rand(1, 10, 4))
    with pytest.raises(TypeError, match="got Linear"):
        stream(torch.nn.Linear(2, 2), torch.rand(1, 10, 2))  # at the call, not at the first chunk
    torch.manual_seed(0)
    layer = SUGRU(4, 8, num_layers=2, dropout=0.5, gate="dense", backend="torch")
    x = torch.randn(2, 30, 4)
    runs = [torch.cat([c.output for c in stream(layer, x, chunk=7)], dim=1) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and layer.training  # no dropout; the mode is restored
    layer.gates[0].eval()  # a submodule in its own mode keeps it
    list(stream(layer, x, chunk=10))
    assert layer.training and not layer.gates[0].training
    torch.testing.assert_close(runs[0], layer.eval()(x)[0])


def test_constrain_gates_projects_a_learned_beta():
    lif = SULIF(3, 4, learn_beta=True, gate="dense", backend="torch")
    with torch.no_grad():
        lif.beta.copy_(torch.tensor([1.3, -0.2, 0.5, 1.0]))
    su_neuro.gates.constrain_gates(lif)
    assert lif.beta.tolist() == [1.0, 0.0, 0.5, 1.0]
    assert "constrain_gates" in su_neuro.gates.__all__
    fixed = SULIF(3, 4, beta=0.9, gate="dense")
    su_neuro.gates.constrain_gates(fixed)  # a buffer: nothing to project
    assert torch.all(fixed.beta == 0.9)


def test_surrogate_is_immutable_hashable_and_pickles():
    import pickle

    s = get_surrogate("triangle", width=0.5)
    with pytest.raises(TypeError):
        s.params["width"] = -1.0
    assert hash(s) == hash(get_surrogate("triangle", width=0.5)) and len({s, get_surrogate("triangle", width=0.5)}) == 1
    assert pickle.loads(pickle.dumps(s)) == s
    gate = EventGate(4, surrogate="triangle", surrogate_params={"width": 0.5})
    assert pickle.loads(pickle.dumps(gate)).surrogate == gate.surrogate


def test_lif_state_without_spikes_starts_with_none():
    torch.manual_seed(0)
    lif = SULIF(3, 4, recurrent=True, gate="dense", backend="torch")
    x, h0 = torch.randn(2, 6, 3), torch.randn(1, 2, 4)
    a, _ = lif(x, SUState(h0, 0, None))
    b, _ = lif(x, h0)
    assert torch.equal(a, b)
