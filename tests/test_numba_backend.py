"""backend="numba" equals the torch reference: outputs, states, records and every gradient.

Float32 tolerances (error <= atol + rtol * max|ref|): forward 1e-5 / 1e-5, gradients
1e-4 / 1e-4 (BPTT sums over T steps in another order). LIF spikes must match exactly.
The first test compiles the kernels (about a minute cold; cached on disk afterwards).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import assert_close, gemm_forced

pytest.importorskip("numba")

from su_neuro import SULIF, SUState  # noqa: E402
from su_neuro.gates import GateInput  # noqa: E402
from su_neuro.models import build_layer  # noqa: E402
from su_neuro.surrogate import SURROGATES, get_surrogate  # noqa: E402

CELLS = ("rnn", "gru", "lif")
GATES = ("rhythmic", "event", "dense")
FWD_TOL = (1e-5, 1e-5)
GRAD_TOL = (1e-4, 1e-4)


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

    gemm_forced(monkeypatch)
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


@pytest.mark.parametrize("cell", CELLS)
def test_surrogate_gain(cell):
    """A damped surrogate on the event gate (gain 0.3) and the LIF spike (gain 0.6, so that
    swapped gains fail too): the kernels scale the same derivative the reference does."""
    layer = _layer(cell, "event", F=4, H=11)
    layer.gates[0].surrogate = get_surrogate("triangle", width=0.5, gain=0.3)
    if cell == "lif":
        layer.spike_grad = get_surrogate("triangle", width=0.5, gain=0.6)
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


def test_inplace_edit_of_an_input_the_backward_reads_is_caught():
    """The fused projection read x again in the backward, and the event gate its threshold:
    an edit between forward and backward gave a wrong dW_ih (or dW_hh) without an error."""
    from su_neuro import SUGRU
    from su_neuro.kernels.numba import _common, choose

    layer = SUGRU(2, 5, gate={"kind": "rhythmic", "init_rate": 0.5}, backend="numba")
    x = torch.randn(32, 6, 2)
    assert choose.fuses_input("gru", "rhythmic", 32, 2, True, hidden=5, threads=_common.threads())
    out, _ = layer(x)
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    event = SUGRU(2, 5, gate="event", backend="numba")
    out, _ = event(torch.randn(3, 6, 2))
    with torch.no_grad():
        event.gates[0].threshold.add_(0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": torch.ones(1, 4)}, r"gate rows must be \(20, 4\), got \(1, 4\)"),
        ({"w_hh": torch.zeros(12, 2)}, r"w_hh must be \(12, 4\)"),
        ({"xp": torch.zeros(2, 20, 4)}, r"xp must be \(2, 20, 12\)"),
        ({"b_hh": torch.zeros(4)}, r"b_hh must be \(12,\)"),
        ({"lengths": torch.tensor([0, 20])}, r"lengths must lie in \[1, T=20\], got values from 0 to 20"),
        ({"xp": torch.zeros(2, 12)}, r"xp \(B, T, ·\), got \(2, 4\) and \(2, 12\)"),
        ({"support": torch.ones(3, 4, dtype=torch.bool)}, r"gate support must be \(20, 4\), got \(3, 4\)"),
    ],
)
def test_recurrence_refuses_shapes_it_would_read_past(change, message):
    """Numba reads without bounds checks: gate rows of 1 step for 20 read past their end."""
    from su_neuro.kernels.numba import ops

    args = {"xp": torch.randn(2, 20, 12), "w_hh": torch.randn(12, 4), "b_hh": torch.zeros(12),
            "rows": (torch.rand(20, 4) < 0.5).float(), "lengths": None, "support": None} | change
    gate = GateInput("rhythmic", args["rows"])
    if args["support"] is not None:
        gate = type("WithSupport", (GateInput,), {"support": args["support"]})("rhythmic", args["rows"])
    with pytest.raises(ValueError, match=message):
        ops.recurrence("gru", args["xp"], torch.zeros(2, 4), None, args["w_hh"], args["b_hh"], gate,
                       lengths=args["lengths"])


# ------------------------------------------- B = 1 streaming forward split over neurons
def test_huge_copy_is_an_aligned_reused_copy():
    from su_neuro.kernels import buffers as _buffers

    a = np.random.default_rng(0).standard_normal((300, 37)).astype(np.float32)
    c = _buffers.huge_copy(a)
    assert c.ctypes.data % _buffers.HUGE_PAGE == 0 and c.flags.c_contiguous
    assert c.dtype == a.dtype and c.shape == a.shape and np.array_equal(c, a)
    assert not np.shares_memory(c, a)
    b = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # not contiguous, another dtype
    d = _buffers.huge_copy(b)
    assert d.ctypes.data == c.ctypes.data  # the thread's buffer is reused
    assert np.array_equal(d, b) and d.flags.c_contiguous
    big = np.ones((_buffers.LARGE // 4 + 5,), np.float32)  # more than the buffer holds: it grows
    assert np.array_equal(_buffers.huge_copy(big), big)


def test_pooled_buffers_are_reused_only_when_nothing_holds_them(monkeypatch):
    """su_neuro.kernels.buffers.pooled: a large buffer comes back once no tensor, view or array of
    it is alive, never while one is; small ones are never pooled; the pool is bounded and
    kept per thread."""
    import threading

    import torch

    from su_neuro.kernels import buffers as _buffers

    _buffers.release()
    shape = (_buffers.LARGE // 4 // 100 + 1, 100)  # just over LARGE bytes of float32
    if not _buffers._EXACT_REFCOUNTS:  # no exact reference counts: nothing is pooled
        _buffers.pooled(shape, np.float32)
        assert getattr(_buffers._pool, "bufs", []) == []
        return
    a = _buffers.pooled(shape, np.float32)
    pa = a.ctypes.data
    del a
    b = _buffers.pooled(shape, np.float32)
    assert b.ctypes.data == pa  # nothing held it: the same buffer again
    t = torch.from_numpy(b)
    del b
    c = _buffers.pooled(shape, np.float32)
    assert c.ctypes.data != pa  # the tensor holds the first
    v = t[::2]
    del t
    d = _buffers.pooled(shape, np.float32)
    assert d.ctypes.data not in (pa, c.ctypes.data)  # a view of it holds the first; c is alive
    del v
    e = _buffers.pooled(shape, np.float32)
    assert e.ctypes.data == pa  # free again
    assert _buffers.pooled(shape, np.float64).ctypes.data not in (pa, c.ctypes.data, d.ctypes.data)
    n = len(_buffers._pool.bufs)
    assert _buffers.pooled((10, 10), np.float32).shape == (10, 10)
    assert len(_buffers._pool.bufs) == n  # small buffers are not pooled
    other = {}
    th = threading.Thread(target=lambda: other.setdefault("p", _buffers.pooled(shape, np.float32).ctypes.data))
    del e
    th.start()
    th.join()
    assert other["p"] != pa  # another thread has its own pool
    monkeypatch.setattr(_buffers, "POOL_BYTES", 3 * _buffers.LARGE)
    held = [_buffers.pooled(shape, np.float32) for _ in range(4)]
    assert sum(buf.nbytes for buf in _buffers._pool.bufs) <= 3 * _buffers.LARGE  # bounded
    assert len({h.ctypes.data for h in held}) == 4  # all in use at once: four buffers
    _buffers.release()
    assert _buffers._pool.bufs == []


def _split_forced(monkeypatch):
    """Forces kernels/numba/split.py at any H; returns a list that counts its calls."""
    import numba

    from su_neuro.kernels.numba import choose, split

    if numba.get_num_threads() < 2:
        pytest.skip("the split path needs >= 2 Numba threads")
    monkeypatch.setattr(choose, "SPLIT_MIN_BLOCK", 1)
    monkeypatch.setattr(choose, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(choose, "SPLIT_WORK_PER_NEURON", 0)
    monkeypatch.setattr(choose, "SPLIT_HUGE_STEPS", 16)  # T >= 16 reads W_hh from its huge-page copy
    calls = []
    kernel = split.forward

    def counted(*args):
        calls.append(args[6][0])  # workers = (ntasks, nworkers, spin)
        return kernel(*args)

    monkeypatch.setattr(split, "forward", counted)
    return calls


@pytest.mark.parametrize(
    "cell,gate,H,T",
    [
        (c, g, H, T)
        for c, g in itertools.product(("rnn", "gru"), ("rhythmic", "dense"))
        for H, T in ((37, 1), (37, 15), (300, 300))
    ],
)
def test_split_forward_matches(monkeypatch, cell, gate, H, T):
    """B = 1, no gradient: the neuron-block split equals the batch-chunk kernel bit for bit
    and the torch reference to float32 round-off (output sequence and final state)."""
    from su_neuro.kernels.numba import choose

    calls = _split_forced(monkeypatch)
    layer = _layer(cell, gate, F=4, H=H)
    x = torch.randn(1, T, 4, generator=torch.Generator().manual_seed(H + T))
    h0 = SUState((0.3 * torch.randn(1, 1, H, generator=torch.Generator().manual_seed(5))), 0, None)
    res = {}
    with torch.no_grad():
        for name, backend, min_block in (("split", "numba", 1), ("chunk", "numba", 10**9), ("ref", "torch", 1)):
            monkeypatch.setattr(choose, "SPLIT_MIN_BLOCK", min_block)
            layer.backend = backend
            res[name] = layer(x, h0)
    assert calls == [2], calls  # the split ran once, in 2 blocks; the other numba call did not
    out, st = res["split"]
    assert torch.equal(out, res["chunk"][0]) and torch.equal(st.h, res["chunk"][1].h)
    assert_close("split out", res["ref"][0], out, *FWD_TOL)
    assert_close("split h_T", res["ref"][1].h, st.h, *FWD_TOL)


@pytest.mark.parametrize("cell,gate", [("gru", "rhythmic"), ("rnn", "dense")])
def test_split_stream_equals_one_call(monkeypatch, cell, gate):
    from su_neuro.simulate import stream

    calls = _split_forced(monkeypatch)
    layer = _layer(cell, gate, F=3, H=45)
    layer.backend = "numba"
    x = torch.randn(1, 120, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole, st = layer(x)
    chunks = list(stream(layer, x, chunk=25))
    assert len(calls) == 1 + len(chunks) == 6
    assert torch.equal(whole, torch.cat([c.output for c in chunks], 1))
    assert torch.equal(st.h, chunks[-1].state.h)
    assert chunks[-1].state.t == 120


@pytest.mark.parametrize("cell,gate,F", [("gru", "rhythmic", 100), ("rnn", "dense", 17)])
def test_step_by_step_stream_equals_one_call(cell, gate, F):
    """Chunks of 1 and 7 steps on the kernel the rule picks: the input projection stays inside
    the kernels (a GEMM beforehand would round differently for each chunk length)."""
    from su_neuro.simulate import stream

    layer = _layer(cell, gate, F=F, H=24)
    layer.backend = "numba"
    x = torch.randn(1, 40, F, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole, st = layer(x)
    for chunk in (1, 7):
        chunks = list(stream(layer, x, chunk=chunk))
        assert torch.equal(whole, torch.cat([c.output for c in chunks], 1)), chunk
        assert torch.equal(st.h, chunks[-1].state.h), chunk


@pytest.mark.parametrize(
    "is_gru,dense,fused", list(itertools.product((False, True), (False, True), (False, True)))
)
def test_split_kernel_serial_and_absent_workers(is_gru, dense, fused):
    """The claim protocol: 2 tasks done by 1 worker (the other absent), by 2 workers on one
    Numba thread (prange runs them one after the other), 3 tasks by 2 or 3 workers on 2
    threads: no deadlock, and the same result as the batch-chunk kernel; with the input
    projected beforehand (xp) and inside the kernels (fused, F = 7: not a multiple of 4);
    for the GRU also with W_hh, and (fused) W_ih, packed per neuron."""
    import numba
    import numpy as np

    from su_neuro.kernels.contract import DENSE, RHYTHMIC
    from su_neuro.kernels.numba import ops, rows, split
    from su_neuro.kernels.numba._common import Gate, Saved, Source, Weights
    from su_neuro.kernels.numba.compact import compact

    rng = np.random.default_rng(3)
    H, T = 70, 40
    G = 3 * H if is_gru else H
    f32 = np.float32
    xp = rng.standard_normal((1, T, G)).astype(f32)
    h0 = (0.3 * rng.standard_normal((1, H))).astype(f32)
    W = (rng.standard_normal((G, H)) / np.sqrt(H)).astype(f32)
    b = rng.standard_normal(G).astype(f32)
    gv = ((rng.random((T, H)) < 0.3) * rng.random((T, H))).astype(f32)
    gv[3] = 0  # a step with no open neuron
    gk = DENSE if dense else RHYTHMIC
    off, idx = compact(gv)
    want, want_h = np.empty((1, T, H), f32), np.empty((1, H), f32)
    d = np.zeros((1, 1, 1), f32)
    x = rng.standard_normal((1, T, 7)).astype(f32)
    w_ih = rng.standard_normal((G, 7)).astype(f32)
    src = Source(1, d, x, w_ih, b[::-1].copy()) if fused else Source(0, xp, d, d[0], d[0, 0])
    gate = Gate(gk, gv, off, idx, np.zeros(1, f32), 0, 0.0, 1)
    nothing = Saved(False, d, d, d, d, d, d, d)
    rows.forward(is_gru, src, h0, Weights(W, d[0], b), gate, 1, want, want_h, nothing)
    if fused:  # the kernels' own projection is x W_ih^T + b_ih up to float32 round-off
        ref = np.empty_like(want)
        xp_src = Source(0, (x @ w_ih.T + b[::-1]).astype(f32), d, d[0], d[0, 0])
        rows.forward(is_gru, xp_src, h0, Weights(W, d[0], b), gate, 1, ref, np.empty_like(want_h), nothing)
        np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-5)

    def run(ntasks, nworkers, weights=W, source=src):
        out, hT = np.full((1, T, H), np.nan, f32), np.full((1, H), np.nan, f32)
        split.forward(is_gru, source, h0, Weights(weights, d[0], b), gate, split.rhythm_args(), (ntasks, nworkers, 10),
                      out, hT)  # fmt: skip
        return out, hT

    results = {"1 worker": run(2, 1), "3 on 3": run(3, 3), "3 tasks, 2 workers": run(3, 2)}
    if is_gru:  # W_hh packed per neuron, (H, 3H), as ops passes it on long streams
        results["packed"] = run(2, 2, np.ascontiguousarray(W.reshape(3, H, H).transpose(1, 0, 2)).reshape(H, 3 * H))
    if is_gru and fused:  # W_ih packed per neuron, (H, 3F), as ops passes it to the B = 1 kernels
        packed_ih = ops._pack_rows(w_ih, H)
        assert packed_ih.shape == (H, 21) and np.array_equal(packed_ih[5, 7:14], w_ih[H + 5])
        results["packed w_ih"] = run(2, 2, source=src._replace(w_ih=packed_ih))
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        results["2 workers, 1 thread"] = run(2, 2)
    finally:
        numba.set_num_threads(old)
    for bad in ((2, 3), (0, 0), (2, 0)):  # more workers than tasks, no task, no worker
        with pytest.raises(ValueError, match="nworkers <= ntasks"):
            run(*bad)
    for name, (out, hT) in results.items():
        assert np.array_equal(out, want), name
        assert np.array_equal(hT, want_h), name


def test_packed_weights_same_bits_and_single_samples_only():
    """The one-thread kernel reads a GRU W_hh packed per neuron ((H, 3H), as ops passes it
    on B = 1 streams) with the same bits as the (3H, H) layout, for the rhythmic gate
    (scanning its rows) and the dense gate. Where 4-sample dots (a chunk of >= 4 samples)
    or the event gate's kernel would read it with the (3H, H) layout, it is refused."""
    import numpy as np

    from su_neuro.kernels.contract import DENSE, EVENT, RHYTHMIC
    from su_neuro.kernels.numba import event, rows
    from su_neuro.kernels.numba._common import Gate, Saved, Source, Weights

    f32 = np.float32
    rng = np.random.default_rng(4)
    d = np.zeros((1, 1, 1), f32)
    no_off, no_idx = np.zeros(1, np.int64), np.zeros(1, np.int32)

    def run(gk, B, T, H, W, gv, xp):
        out, hT = np.empty((B, T, H), f32), np.empty((B, H), f32)
        h0 = (0.3 * np.ones((B, H))).astype(f32)
        weights = Weights(W, d[0], np.full(3 * H, 0.1, f32))
        gate = Gate(gk, gv, no_off, no_idx, np.full(H, 0.05, f32), 0, 0.0, 1)
        nothing = Saved(False, d, d, d, d, d, d, d)
        if gk == EVENT:
            event.forward(True, xp, h0, weights, gate, np.full(B, T, np.int64), 1, out, hT, nothing)
        else:
            rows.forward(True, Source(0, xp, d, d[0], d[0, 0]), h0, weights, gate, 1, out, hT, nothing)
        return out, hT

    T, H = 40, 300
    W = (rng.standard_normal((3 * H, H)) / np.sqrt(H)).astype(f32)
    packed = np.ascontiguousarray(W.reshape(3, H, H).transpose(1, 0, 2)).reshape(H, 3 * H)
    xp = rng.standard_normal((1, T, 3 * H)).astype(f32)
    gv = (rng.random((T, H)) < 0.2).astype(f32)
    for gk in (RHYTHMIC, DENSE):
        want, got = run(gk, 1, T, H, W, gv, xp), run(gk, 1, T, H, packed, gv, xp)
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    small = np.zeros((16, 48), f32)
    for gk, B in ((RHYTHMIC, 4), (EVENT, 1)):
        with pytest.raises(ValueError, match="single-sample"):
            run(gk, B, 3, 16, small, np.ones((3, 16), f32), np.zeros((B, 3, 48), f32))


def test_split_rule():
    """Where the split pays (choose.split_tasks; measurements in its docstring)."""
    import functools

    import numba

    from su_neuro.kernels.numba import choose

    DENSE, EVENT, RHYTHMIC = "dense", "event", "rhythmic"
    n = numba.get_num_threads()
    split_tasks = functools.partial(choose.split_tasks, threads=n)
    two = 2 if n >= 2 else 0
    T = 100
    # GRU H=512, 10 % open: 51 * (3 * 512 + 64) units per step, blocks of >= 15 * 512 units:
    # <= 10 blocks by work, 16 by size
    assert split_tasks(RHYTHMIC, False, 1, 512, 3, T * 51, T) == (min(n, 10) if n >= 2 else 0)
    # RNN H=128, dense: 24 blocks of SPLIT_MIN_WORK = 1024 by work (7.5 * 128 is less), 4 by size
    assert split_tasks(DENSE, False, 1, 128, 1, T * 128, T) == (min(n, 4) if n >= 2 else 0)
    assert split_tasks(RHYTHMIC, False, 1, 512, 3, T * 2, T) == 0  # GRU H=512, 0.4 %: 3.2k units
    assert split_tasks(RHYTHMIC, False, 1, 512, 3, T * 5, T) == 0  # GRU H=512, 1 %: 8k < 2 * 7.7k
    assert split_tasks(RHYTHMIC, False, 1, 256, 3, T * 5, T) == 0  # GRU H=256, 2 %: 4.2k < 2 * 3.8k
    assert split_tasks(RHYTHMIC, False, 1, 256, 3, T * 13, T) == two  # GRU H=256, 5 %: 10.8k units
    assert split_tasks(RHYTHMIC, False, 1, 1024, 3, T * 10, T) == two  # GRU H=1024, 1 %: 31.4k units
    assert split_tasks(RHYTHMIC, False, 1, 1024, 1, T * 10, T) == 0  # RNN H=1024, 1 %: 10.9k < 15.4k
    # RNN H=1024, 2 %: 21.8k units, 2 blocks of 7680
    assert split_tasks(RHYTHMIC, False, 1, 1024, 1, T * 20, T) == (min(n, 2) if n >= 2 else 0)
    assert split_tasks(RHYTHMIC, False, 1, 128, 3, T * 1, T) == 0  # GRU H=128, 1 %: under the floor
    assert split_tasks(RHYTHMIC, True, 1, 512, 3, T * 51, T) == 0  # saves for backward / records
    assert split_tasks(EVENT, False, 1, 512, 3, T * 512, T) == 0
    assert split_tasks(DENSE, False, 2, 512, 3, T * 512, T) == 0
    assert split_tasks(DENSE, False, 1, 37, 3, T * 37, T) == 0  # blocks under SPLIT_MIN_BLOCK
    assert split_tasks(RHYTHMIC, False, 1, 512, 1, 0, 0) == 0


# ------------------------------------- inference: the input projection inside the kernel
@pytest.mark.parametrize(
    "cell,gate,B,F,T,bias",
    [
        ("gru", "rhythmic", 1, 5, 63, True),
        ("gru", "dense", 3, 4, 15, True),
        ("rnn", "rhythmic", 3, 9, 15, False),
        ("rnn", "dense", 1, 1, 1, True),
        ("gru", "rhythmic", 2, 3, 300, False),
        # batches on the GEMM path, F >= FUSED_DOT_MIN_INPUT: the projection as per-step GEMMs
        ("gru", "dense", 20, 12, 9, True),
        ("rnn", "dense", 16, 40, 6, False),
    ],
)
def test_fused_input_projection(monkeypatch, cell, gate, B, F, T, bias):
    """Inference of RNN/GRU (rhythmic, dense) projects the input inside the kernel, for the
    updating neurons only (ops.recurrence_input): outputs, final state and records equal the
    torch reference; 2-layer stack (layer 2 reads layer 1's output); with autograd on, the
    layer projects beforehand except on the GEMM path within the training width limits."""
    from su_neuro.kernels.numba import choose, ops

    if B > 3:  # the GEMM path on any number of threads
        gemm_forced(monkeypatch)
    rule = choose.fuses_input  # in inference every width fused (the rule's widths are measured elsewhere)
    monkeypatch.setattr(choose, "fuses_input", lambda *a, **k: not a[4] or rule(*a, **k))
    calls = []
    real = ops._run
    monkeypatch.setattr(ops, "_run", lambda *a, **k: calls.append(a[-1] is not None) or real(*a, **k))
    layer = _layer(cell, gate, F=F, H=37, num_layers=2, bias=bias)
    x = torch.randn(B, T, F, generator=torch.Generator().manual_seed(T))
    h0 = SUState(0.3 * torch.randn(2, B, 37, generator=torch.Generator().manual_seed(1)), 7, None)
    res = {}
    with torch.no_grad():
        for backend in ("torch", "numba"):
            layer.backend = backend
            res[backend] = layer(x, h0, record=True)
    assert calls == [True, True], calls  # both sub-layers took the fused path
    ref, got = res["torch"], res["numba"]
    assert_close("out", ref[0], got[0], *FWD_TOL)
    assert_close("h_T", ref[1].h, got[1].h, *FWD_TOL)
    assert got[1].t == 7 + T
    for k in range(2):
        assert torch.equal(ref[2][k].gate, got[2][k].gate)
        assert_close(f"rec{k}.delta", ref[2][k].delta, got[2][k].delta, *FWD_TOL)
    calls.clear()
    layer.backend = "numba"
    out, _ = layer(x, h0)
    # training: fused on the GEMM path within the width limits only, else projected by the layer
    assert calls == [B > 3 and choose.train_projection(gate, f) != "unfused" for f in (F, 37)] and out.requires_grad
    assert_close("out with grad", ref[0], out.detach(), *FWD_TOL)


def test_fused_input_projection_not_taken():
    """Where the kernels do not project the input themselves, recurrence_input says so (None)."""
    from su_neuro.gates import DenseGate, EventGate, RhythmicGate
    from su_neuro.kernels.numba import choose, ops

    H = 6
    gate = DenseGate(H).plan(0, 4)
    x, w_ih = torch.randn(1, 4, 3), torch.randn(3 * H, 3)
    h0, w_hh = torch.zeros(1, H), torch.randn(3 * H, H)
    batch, h0_batch = torch.randn(64, 4, 3), torch.zeros(64, H)  # thread chunks >= GEMM_MIN_BATCH
    with torch.no_grad():
        assert ops.recurrence_input("gru", x, w_ih, None, h0, None, w_hh, None, gate) is not None
        assert ops.recurrence_input("gru", batch, w_ih, None, h0_batch, None, w_hh, None, gate) is not None
        wide_x = torch.randn(1, 4, choose.FUSED_STREAM_MAX_INPUT + 1)  # a B = 1 stream, dense, wide
        wide_w = torch.randn(3 * H, wide_x.shape[2])
        assert ops.recurrence_input("gru", wide_x, wide_w, None, h0, None, w_hh, None, gate) is None
        stream = RhythmicGate(H, init_rate=0.2).plan(0, 4)  # a rhythmic gate streams fused at any width
        assert ops.recurrence_input("gru", wide_x, wide_w, None, h0, None, w_hh, None, stream) is not None
        assert ops.recurrence_input("lif", x[..., :H], w_ih[:H], None, h0, None, None, None, gate) is None
        event = EventGate(H).plan(0, 4)
        assert ops.recurrence_input("gru", x, w_ih, None, h0, None, w_hh, None, event) is None
        wide = torch.randn(64, 4, choose.FUSED_MAX_INPUT + 1)  # dense gate, wide input: one GEMM
        w_wide = torch.randn(3 * H, wide.shape[2])
        assert ops.recurrence_input("gru", wide, w_wide, None, h0_batch, None, w_hh, None, gate) is None
    w_ih.requires_grad_()
    # training: only on the GEMM path, with few input features
    assert ops.recurrence_input("gru", x, w_ih, None, h0, None, w_hh, None, gate) is None
    assert ops.recurrence_input("gru", batch, w_ih, None, h0_batch, None, w_hh, None, gate) is not None
    F = choose.FUSED_TRAIN_MAX_INPUT_DENSE + 1  # dense gate: one GEMM over the sequence
    w_f = torch.randn(3 * H, F, requires_grad=True)
    assert ops.recurrence_input("gru", torch.randn(64, 4, F), w_f, None, h0_batch, None, w_hh, None, gate) is None

    rhythmic = RhythmicGate(H, init_rate=0.2).plan(0, 4)  # a rhythmic gate trains fused at that width
    x_f = torch.randn(64, 4, F)
    assert ops.recurrence_input("gru", x_f, w_f, None, h0_batch, None, w_hh, None, rhythmic) is not None
    F = choose.FUSED_TRAIN_MAX_INPUT + 1
    w_f = torch.randn(3 * H, F, requires_grad=True)
    assert ops.recurrence_input("gru", torch.randn(64, 4, F), w_f, None, h0_batch, None, w_hh, None, rhythmic) is None


@pytest.mark.parametrize("how", ["loops", "gemm"])
@pytest.mark.parametrize(
    "cell,gate,B,F,T,bias",
    [
        ("gru", "rhythmic", 11, 1, 63, True),
        ("gru", "dense", 3, 3, 15, False),
        ("rnn", "rhythmic", 3, 2, 15, True),
        ("rnn", "dense", 11, 1, 1, True),
        ("gru", "rhythmic", 11, 33, 40, True),
        ("gru", "dense", 9, 64, 5, False),
        ("rnn", "rhythmic", 10, 9, 23, True),
        ("rnn", "dense", 9, 12, 7, True),
    ],
)
def test_fused_input_projection_training(monkeypatch, cell, gate, B, F, T, bias, how):
    """Training on the GEMM path with the input projected inside the kernels
    (ops.recurrence_input), by short dot products (``loops``) and by per-step GEMMs
    (``gemm``), each forced whatever the width: every gradient equals the reference, the
    input's too; both layers of a 2-layer stack of H = 6 take the fused path (the width
    limits raised to F), so layer 2's input gradient (the kernel's dx) feeds layer 1's
    backward."""
    from su_neuro.kernels.numba import choose, ops

    gemm_forced(monkeypatch)
    for limit in ("FUSED_TRAIN_MAX_INPUT", "FUSED_TRAIN_MAX_INPUT_DENSE"):  # the kernels at any width
        monkeypatch.setattr(choose, limit, max(F, 6))
    for least in ("FUSED_DOT_MIN_INPUT", "FUSED_DOT_MIN_INPUT_DENSE"):
        monkeypatch.setattr(choose, least, 1 if how == "gemm" else 1 << 30)
    assert all(choose.train_projection(gate, f) == how for f in (F, 6))
    calls = []
    real = ops._run
    monkeypatch.setattr(ops, "_run", lambda *a, **k: calls.append(a[-1] is not None) or real(*a, **k))
    layer = _layer(cell, gate, F=F, H=6, num_layers=2, bias=bias)
    x0 = torch.randn(B, T, F, generator=torch.Generator().manual_seed(B + T))
    res = {}
    for backend in ("torch", "numba"):
        x = x0.clone().requires_grad_()
        res[backend] = _run(layer, backend, x)
        res[backend]["grad x"] = x.grad
    assert calls == [True, True], calls
    ref, got = res["torch"], res["numba"]
    assert set(ref) == set(got)
    for name in ref:
        if ref[name] is None:
            assert got[name] is None, name
            continue
        assert_close(name, ref[name], got[name], *(GRAD_TOL if name.startswith("grad") else FWD_TOL))


def test_split_benchmark_runs(capsys, monkeypatch, load_tool):
    """tools/bench_numba_split.py (the A/B behind the split rule) at a tiny size: one row per
    cell x rate, both kernels timed."""
    import math
    import os

    import numba

    # the tool sets NUMBA_NUM_THREADS if unset: keep that from leaking into this process
    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS)))
    mod = load_tool("bench_numba_split")
    mod.main(["--steps", "40", "--repeats", "1", "--hidden", "48"])
    rows = [r.strip("|").split("|") for r in capsys.readouterr().out.splitlines() if r.startswith(("| gru", "| rnn"))]
    assert [(c[0].strip(), c[2].strip()) for c in rows] == [
        (cell, rate) for cell in ("gru", "rnn") for rate in ("1%", "2%", "5%", "10%", "20%", "100%")
    ]
    for c in rows:
        assert int(c[1]) == 48
        one, two, speed = (float(v) for v in c[4:7])  # ms to one decimal: a tiny run may print 0.0
        assert all(math.isfinite(v) and v >= 0 for v in (one, two, speed))


def test_auto_rule_benchmark_names_each_pick(capsys, monkeypatch, load_tool):
    """tools/bench_numba.py group 6 (the rows behind choose.auto_pays past B*H = 4096) at its
    quick size: numba against what auto runs otherwise, per cell, gate and mode, with auto's
    pick named and judged against the two times."""
    import math
    import os

    import numba

    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS)))
    threads = torch.get_num_threads()
    try:
        load_tool("bench_numba").main(["--quick", "--only", "6", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    rows = [r.strip("|").split("|") for r in capsys.readouterr().out.splitlines() if r.startswith("| 6 ")]
    gates = ("rhythmic 10%", "rhythmic 50%", "rhythmic 100%", "event", "dense", "rhythmic 10% + event",
             "dense + rhythmic 10%")
    assert [r[0].split(" B=")[0].strip() for r in rows] == [f"6 {c} {g}" for c in ("rnn", "gru") for g in gates
                                                            for _ in range(2)]
    for r in rows:
        name, ratio, target, status = (c.strip() for c in r)
        other = "nn" if " dense B=" in name else "torch"
        pick = target.removeprefix("auto=")
        assert f": {other} " in name and math.isfinite(float(ratio)) and float(ratio) > 0
        assert pick == ("nn" if " rnn dense B=" in name else "numba")  # B=32, H=256: past the RNN's dense limit only
        edge = 1 / 1.1 if pick == "numba" else 1.1
        if abs(float(ratio) - edge) > 5e-4:  # the tool decides on the unrounded ratio
            met = float(ratio) >= edge if pick == "numba" else float(ratio) <= edge
            assert status == ("met" if met else "MISSED")


def test_rows_or_gemm_benchmark_names_the_rule(capsys, monkeypatch, load_tool):
    """tools/bench_numba.py group 7 (the rows behind choose.use_gemm) at its quick size: both
    kernels forced on the same layer, each row naming the kernel the rule runs there, and the
    rule's constants restored afterwards."""
    import math
    import os

    import numba

    from su_neuro.kernels.numba import choose

    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS)))
    threads, before = torch.get_num_threads(), (choose.GEMM_MIN_BATCH, choose.GEMM_MIN_BATCH_DENSE_GRU,
                                                choose.GEMM_MIN_BATCH_DENSE_RNN)
    try:
        load_tool("bench_numba").main(["--quick", "--only", "7", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert (choose.GEMM_MIN_BATCH, choose.GEMM_MIN_BATCH_DENSE_GRU, choose.GEMM_MIN_BATCH_DENSE_RNN) == before
    rows = [r.strip("|").split("|") for r in capsys.readouterr().out.splitlines() if r.startswith("| 7 ")]
    assert len(rows) == 16  # 2 cells x 2 gates x 2 modes x chunks of 4 and 8, H = 128
    nb = int(os.environ["NUMBA_NUM_THREADS"])
    for r in rows:
        name, ratio, target, _ = (c.strip() for c in r)
        cell, B = name.split()[1], int(name.split(" B=")[1].split()[0])
        gate = "dense" if " dense " in name else "rhythmic"
        assert math.isfinite(float(ratio)) and float(ratio) > 0
        want = choose.use_gemm(gate, B, nb, cell=cell, hidden=128)
        assert target == ("rule=gemm" if want else "rule=rows"), name


def test_fused_input_benchmark_runs(capsys, monkeypatch, load_tool):
    """tools/bench_fused_input.py (the A/B/C behind the fused-projection rules) at a tiny size:
    one row per cell x gate x width, all three projections timed, the rule's pick named; the
    rules and the thread counts as they were afterwards."""
    import math
    import os

    import numba

    from su_neuro.kernels.numba import choose

    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS)))
    import torch

    rules = ("FUSED_TRAIN_MAX_INPUT", "FUSED_TRAIN_MAX_INPUT_DENSE", "FUSED_DOT_MIN_INPUT", "FUSED_DOT_MIN_INPUT_DENSE")
    before = [getattr(choose, k) for k in rules], torch.get_num_threads(), numba.get_num_threads()
    rows = load_tool("bench_fused_input").main(
        ["--steps", "6", "--batch", "16", "--hidden", "8", "--features", "3,40", "--repeats", "1", "--threads", "1"]
    )
    assert ([getattr(choose, k) for k in rules], torch.get_num_threads(), numba.get_num_threads()) == before
    assert [(r["cell"], r["gate"], r["F"]) for r in rows] == [
        (c, g, f) for c in ("gru", "rnn") for g in ("rhythmic", "dense") for f in (3, 40)
    ]
    for r in rows:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("unfused", "loops", "gemm"))
        assert r["picks"] == choose.train_projection(r["gate"], r["F"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| gru", "| rnn"))]
    assert len(printed) == len(rows)
    # --inference: unfused against fused, B = 1, with the inference rule's pick
    fuses = choose.fuses_input
    rows = load_tool("bench_fused_input").main(
        ["--inference", "--steps", "6", "--hidden", "8", "--features", "3,100", "--repeats", "1", "--threads", "1"]
    )
    assert choose.fuses_input is fuses and torch.get_num_threads() == before[1]
    assert [(r["cell"], r["gate"], r["F"], r["picks"]) for r in rows] == [
        (c, g, f, "fused" if g == "rhythmic" or f <= choose.FUSED_STREAM_MAX_INPUT else "unfused")
        for c in ("gru", "rnn") for g in ("rhythmic", "dense") for f in (3, 100)
    ]
    assert all(math.isfinite(r[k]) and r[k] > 0 for r in rows for k in ("unfused", "fused"))


@pytest.mark.parametrize("gate", ["dense", "event"])
def test_a_step_that_overflows_compares_as_ieee(gate):
    # a finite input of 3e38 through weights of 1 overflows the membrane (inf, then NaN after
    # the reset): the spike and event comparisons must give IEEE's answer (no spike, gate
    # closed), as torch does; under fastmath's "no NaN" flags a NaN membrane fired at every step
    torch.manual_seed(0)
    layer = SULIF(2, 3, gate=gate, reset="zero")
    with torch.no_grad():
        layer.weight_ih_l0.fill_(1.0)
    x = torch.zeros(1, 3, 2)
    x[0, 0] = 3e38
    spikes = {}
    for backend in ("torch", "numba"):
        layer.backend = backend
        spikes[backend] = layer(x)[0]
    assert spikes["torch"][0, 0].eq(1).all() and spikes["torch"][0, 1:].eq(0).all()
    assert torch.equal(spikes["numba"], spikes["torch"])


def test_a_numba_call_keeps_torchs_thread_count():
    """Numba's OpenMP layer, started by the first parallel kernel, set the process's OpenMP
    thread count (which torch shares) to Numba's: torch.set_num_threads(1) became 2. Run in
    a fresh process, where the layer has not started yet; its pool starts at the first call,
    not at import (a process that has started it cannot run the kernels in a forked child)."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch
        (torch.randn(64, 64) @ torch.randn(64, 64)).sum()  # torch's pool started: it keeps no count of its own
        torch.set_num_threads(1)
        from su_neuro.kernels.numba import _common, ops  # noqa: F401
        assert not _common._THREADS_STARTED  # not at import: a forked child could not run the kernels
        from su_neuro.models import build_layer
        layer = build_layer("gru", 4, 64, gate={"kind": "rhythmic", "init_rate": 0.3}, backend="numba")
        x = torch.randn(8, 40, 4)
        layer(x, lengths=torch.tensor([40, 30, 20, 10, 40, 40, 40, 5]))  # a padded batch first (its own checks)
        layer(x)[0].sum().backward()
        print(torch.get_num_threads())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    env["NUMBA_NUM_THREADS"] = "2"  # a parallel layer, even on a one-core runner
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1", done.stdout
