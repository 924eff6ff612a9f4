"""backend="numba" equals the torch reference: outputs, states, records and every gradient.

Float32 tolerances (error <= atol + rtol * max|ref|): forward 1e-5 / 1e-5, gradients
1e-4 / 1e-4 (BPTT sums over T steps in another order). LIF spikes must match exactly.
The first test compiles the kernels (about a minute cold; cached on disk afterwards).
"""

from __future__ import annotations

import itertools

import pytest
import torch

pytest.importorskip("numba")

from su_neuro import SUState  # noqa: E402
from su_neuro.gates import GateInput  # noqa: E402
from su_neuro.models import build_layer  # noqa: E402
from su_neuro.surrogate import SURROGATES, get_surrogate  # noqa: E402

CELLS = ("rnn", "gru", "lif")
GATES = ("rhythmic", "event", "dense")
FWD_TOL = (1e-5, 1e-5)
GRAD_TOL = (1e-4, 1e-4)


def assert_close(name, ref, out, atol, rtol):
    assert out is not None, f"{name}: missing"
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = (ref - out).abs().max().item() if ref.numel() else 0.0
    tol = atol + rtol * (ref.abs().max().item() if ref.numel() else 0.0)
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e}"


def _layer(cell, gate, F, H, surrogate="triangle", **kw):
    if gate == "rhythmic":
        spec = {"kind": "rhythmic", "init_rate": 0.4, "surrogate": surrogate}
    elif gate == "event":
        spec = {"kind": "event", "init_threshold": 0.05, "surrogate": surrogate}
    else:
        spec = "dense"
    extra = {}
    if cell == "lif":
        extra = dict(beta=0.8, threshold=0.5, recurrent=True, spike_grad=surrogate)
    extra.update(kw)
    torch.manual_seed(0)
    layer = build_layer(cell, F, H, gate=spec, **extra)
    if cell == "lif":  # larger weights so that spikes and resets happen
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if name.startswith("weight"):
                    p.mul_(3.0)
    return layer


def _run(layer, backend, x, seed=1):
    """Forward with record, random gradients on outputs and final state; returns tensors."""
    layer.backend = backend
    layer.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(seed)
    L, B, H = layer.num_layers, x.shape[0], layer.hidden_size
    h0 = (0.3 * torch.randn(L, B, H, generator=g)).requires_grad_()
    s0 = None
    if layer.cell == "lif":
        s0 = (torch.rand(L, B, H, generator=g) < 0.3).float().requires_grad_()
    out, state, recs = layer(x, SUState(h0, 0, s0), record=True)
    loss = (out * torch.randn(out.shape, generator=g)).sum()
    loss = loss + (state.h * torch.randn(state.h.shape, generator=g)).sum()
    if state.s is not None:
        loss = loss + (state.s * torch.randn(state.s.shape, generator=g)).sum()
    loss.backward()
    res = {"out": out.detach(), "h_T": state.h.detach()}
    if state.s is not None:
        res["s_T"] = state.s.detach()
    for k, rec in enumerate(recs):
        res[f"rec{k}.gate"] = rec.gate.detach()
        res[f"rec{k}.delta"] = rec.delta.detach()
        if rec.spike is not None:
            res[f"rec{k}.spike"] = rec.spike.detach()
    for name, p in layer.named_parameters():
        res[f"grad {name}"] = p.grad
    res["grad h0"] = h0.grad
    if s0 is not None and layer.recurrent:
        res["grad s0"] = s0.grad
    return res


def _compare(layer, x):
    ref = _run(layer, "torch", x)
    out = _run(layer, "numba", x)
    assert set(ref) == set(out)
    for name in ref:
        if ref[name] is None:
            assert out[name] is None or not out[name].any(), name
            continue
        tol = GRAD_TOL if name.startswith("grad") else FWD_TOL
        assert_close(name, ref[name], out[name], *tol)
    if layer.cell == "lif":
        assert torch.equal(ref["out"], out["out"]), "LIF spikes differ"
        assert ref["out"].sum() > 0, "test needs spikes"
    return ref


# ------------------------------------------------------------------------ cross product
@pytest.mark.parametrize(
    "cell,gate,T,B",
    [(c, g, T, B) for (c, g), (T, B) in itertools.product(itertools.product(CELLS, GATES), [(1, 3), (15, 1), (63, 3)])],
)
def test_matches_reference(cell, gate, T, B):
    layer = _layer(cell, gate, F=5, H=13)
    x = torch.randn(B, T, 5, generator=torch.Generator().manual_seed(T))
    _compare(layer, x)


@pytest.mark.parametrize("cell,gate", [("gru", "rhythmic"), ("rnn", "event"), ("lif", "dense"), ("lif", "rhythmic")])
def test_matches_reference_t300(cell, gate):
    layer = _layer(cell, gate, F=3, H=29)
    x = torch.randn(3, 300, 3, generator=torch.Generator().manual_seed(300))
    _compare(layer, x)


@pytest.mark.parametrize("cell,gate", list(itertools.product(("rnn", "gru"), ("rhythmic", "dense"))))
def test_sample_blocks(cell, gate):
    """B = 11: chunks of 5 and 6 samples take the 4-sample blocks and the remainder path."""
    layer = _layer(cell, gate, F=3, H=13)
    x = torch.randn(11, 15, 3, generator=torch.Generator().manual_seed(11))
    _compare(layer, x)


@pytest.mark.parametrize(
    "cell,gate,B,T",
    [("rnn", "rhythmic", 3, 63), ("gru", "rhythmic", 11, 15), ("rnn", "dense", 11, 15), ("gru", "dense", 3, 63)],
)
def test_gemm_path(monkeypatch, cell, gate, B, T):
    """The per-step BLAS GEMM kernels (chunks of >= GEMM_MIN_BATCH samples), forced here
    for every chunk; a rhythmic gate at rate 1 takes the no-gather (every row) branch."""
    from su_neuro.kernels.numba import ops

    monkeypatch.setattr(ops, "GEMM_MIN_BATCH", 1)
    layer = _layer(cell, gate, F=3, H=13)
    x = torch.randn(B, T, 3, generator=torch.Generator().manual_seed(B))
    _compare(layer, x)
    if gate == "rhythmic":
        torch.manual_seed(0)
        full = build_layer(cell, 3, 13, gate={"kind": "rhythmic", "init_rate": 1.0})
        _compare(full, x)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates_event_gate_and_spike(name):
    """Every surrogate code as the event gate's and the LIF spike's derivative."""
    # sigmoid: a small slope, since the reference's exp(-slope x) overflows to NaN in float32
    kw = {"triangle": {"width": 0.5}, "rectangle": {"width": 0.5}, "sigmoid": {"slope": 2.0}}
    kw = kw.get(name, {})
    for cell in ("rnn", "lif"):
        layer = _layer(cell, "event", F=4, H=11, surrogate=name)
        layer.gates[0].surrogate = get_surrogate(name, **kw)
        if cell == "lif":
            layer.spike_grad = get_surrogate(name, **kw)
        x = torch.randn(3, 15, 4, generator=torch.Generator().manual_seed(7))
        _compare(layer, x)


@pytest.mark.parametrize("gate", GATES)
def test_lif_variants(gate):
    """Zero reset with learnable beta; non-recurrent LIF; two stacked layers."""
    x = torch.randn(3, 40, 4, generator=torch.Generator().manual_seed(3))
    _compare(_layer("lif", gate, F=4, H=10, reset="zero", learn_beta=True, beta=0.7), x)
    _compare(_layer("lif", gate, F=4, H=10, recurrent=False, learn_beta=True), x)
    _compare(_layer("gru", gate, F=4, H=10, num_layers=2), x)


def test_chunked_equals_whole():
    layer = _layer("gru", "rhythmic", F=3, H=17)
    layer.backend = "numba"
    x = torch.randn(2, 50, 3)
    with torch.no_grad():
        whole, st = layer(x)
        a, s1 = layer(x[:, :20])
        b, s2 = layer(x[:, 20:], s1)
    assert_close("chunked out", whole, torch.cat([a, b], 1), *FWD_TOL)
    assert_close("chunked h_T", st.h, s2.h, *FWD_TOL)
    assert s2.t == st.t == 50


def test_rhythmic_support_limits_work_not_result():
    """A GateInput carrying the surrogate's support gives the same gradients."""
    from su_neuro.kernels.numba import ops

    torch.manual_seed(0)
    H, T = 9, 30
    a = torch.randn(T, H, requires_grad=True)
    sur = get_surrogate("triangle", width=0.5)
    xp, h0 = torch.randn(2, T, 3 * H), torch.randn(2, H)
    w, b = 0.3 * torch.randn(3 * H, H), torch.randn(3 * H)

    class WithSupport(GateInput):
        support = a.detach().abs() < 0.5

    grads = []
    for gate in (GateInput("rhythmic", sur(a)), WithSupport("rhythmic", sur(a))):
        out, hT, _, _ = ops.recurrence("gru", xp, h0, None, w, b, gate)
        (out.sum() + hT.sum()).backward()
        grads.append(a.grad.clone())
        a.grad = None
    assert_close("grad a", grads[0], grads[1], *GRAD_TOL)


def test_unsupported_and_auto():
    from su_neuro.kernels.numba import ops

    assert ops.unsupported("gru", "rhythmic", torch.float32) is None
    assert "float32" in ops.unsupported("gru", "rhythmic", torch.float16)
    assert ops.unsupported("lstm", "dense", torch.float32)
    layer = _layer("rnn", "dense", F=2, H=5).half()
    layer.backend = "numba"
    with pytest.raises(Exception, match="float32"):
        layer(torch.randn(1, 3, 2).half())


@pytest.mark.slow
def test_delta_accumulation_drift_t100k():
    """Event gate, T = 100,000: the delta-accumulated U h (float64, refreshed every
    REFRESH steps, or never) gives the same float32 states as an exact U h every step."""
    from su_neuro.kernels.numba import ops

    torch.manual_seed(0)
    H, T = 12, 100_000
    layer = _layer("rnn", "event", F=2, H=H)
    layer.backend = "numba"
    x = torch.randn(1, T, 2)
    outs = {}
    old = ops.REFRESH
    try:
        for refresh in (1, old, 10**9):
            ops.REFRESH = refresh
            with torch.no_grad():
                outs[refresh] = layer(x)[0]
    finally:
        ops.REFRESH = old
    for refresh in (old, 10**9):
        assert_close(f"drift refresh={refresh}", outs[1], outs[refresh], 1e-6, 0.0)
    # the event gate was sparse and data dependent over the whole run
    rate = (outs[1].diff(dim=1) != 0).float().mean().item()
    assert 0.01 < rate < 0.99


def test_inplace_edit_of_an_output_is_caught_before_backward():
    from su_neuro import SUGRU

    layer = SUGRU(2, 5, gate={"kind": "rhythmic", "init_rate": 0.5}, backend="numba")
    out, _ = layer(torch.randn(3, 6, 2))
    out.mul_(2.0)  # the kernel's saved state shares this memory
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
