"""Triton backend vs the torch reference: forward, final state, records, every gradient.

On a machine without CUDA the kernels run under Triton's interpreter. Triton decides at
``@triton.jit`` time whether a kernel is interpreted, so TRITON_INTERPRET must be set
before ``su_neuro.kernels.triton`` is imported; this module sets it first thing and
skips (with the reason) if the kernels were already compiled for a GPU-less native run.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import assert_close, count_launches  # noqa: E402

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tri():
    from su_neuro.kernels.triton import ops, rows

    if DEVICE == "cpu" and type(rows._fwd_kernel).__name__ != "InterpretedFunction":
        pytest.skip("su_neuro.kernels.triton was imported before TRITON_INTERPRET=1 was set")
    return ops


def _make(cell, kind, B, H, *, recurrent=True, bias=True, reset="subtract", seed=0,
          event_surrogate="triangle", spike="atan", threshold=0.2, gain=1.0, spike_gain=1.0,
          dtype=torch.float32):
    from su_neuro.gates import DenseGate, EventGate, RhythmicGate
    from su_neuro.kernels.reference import LIFParams
    from su_neuro.surrogate import get_surrogate

    g = torch.Generator().manual_seed(seed)
    G = 3 * H if cell == "gru" else H
    damp = {"gain": gain} if gain != 1.0 else {}
    rnd = lambda *s, sc=1.0: (torch.randn(*s, generator=g) * sc).to(DEVICE, dtype)  # noqa: E731
    p = {
        "h0": rnd(B, H, sc=0.5),
        "w": rnd(G, H, sc=0.6) if (recurrent or cell != "lif") else None,
        "b": rnd(G, sc=0.3) if bias and (recurrent or cell != "lif") else None,
        "s0": (torch.rand(B, H, generator=g) > 0.5).to(DEVICE, dtype) if cell == "lif" else None,
    }
    lif = None
    if cell == "lif":
        beta = torch.rand(H, generator=g) * 0.9 + 0.05
        beta[0] = 1.0  # clamp edge: the gradient still passes at beta = 1
        lif = LIFParams(beta.to(DEVICE, dtype), 1.0, reset,
                        get_surrogate(spike, **({"gain": spike_gain} if spike_gain != 1.0 else {})))
    if kind == "rhythmic":
        # narrow compact surrogate: the support (g = 1 or sigma'(a) != 0) is a strict
        # superset of the open rows and a strict subset of all rows (asserted in check)
        gate = RhythmicGate(H, init_rate=0.4, period=5.0, surrogate="triangle",
                            surrogate_params={"width": RHYTHM_WIDTH})
        jitter = torch.rand(H, generator=torch.Generator().manual_seed(seed + 7))
        with torch.no_grad():  # phases spread over the period (same for every cell)
            gate.phi[:, 0] = 2 * torch.pi * (torch.arange(H) + 0.5 * jitter) / H
    elif kind == "event":
        gate = EventGate(H, init_threshold=threshold, surrogate=event_surrogate,
                         surrogate_params={"width": 0.5, **damp} if event_surrogate in ("triangle", "rectangle")
                         else damp)
    else:
        gate = DenseGate(H)
    gate = gate.to(DEVICE, dtype)
    return p, lif, gate, G


RHYTHM_WIDTH = 0.5


def _run(fn, cell, T, p, lif, gate, xp, weights, gate_grad=True, support=True):
    leaves = {k: v.clone().requires_grad_() for k, v in p.items() if v is not None}
    xpl = xp.clone().requires_grad_()
    beta = lif.beta.clone().requires_grad_() if lif is not None else None
    lifp = lif._replace(beta=beta) if lif is not None else None
    for q in gate.parameters():
        q.grad = None
        q.requires_grad_(gate_grad)
    gi = gate.plan(0, T, device=xp.device, dtype=xp.dtype)
    if not support:  # a hand-built GateInput: no support, the backend must stay exact
        gi = gi._replace(support=None)
    out, hT, sT, rec = fn(cell, xpl, leaves["h0"], leaves.get("s0"), leaves.get("w"), leaves.get("b"),
                          gi, lifp, True)
    loss = (out * weights[0]).sum() + (hT * weights[1]).sum()
    if sT is not None:
        loss = loss + (sT * weights[2]).sum()
    if len(weights) > 3 and rec.gate.requires_grad:  # a penalty on the recorded gate values
        loss = loss + (rec.gate * weights[3]).sum()
    named = {"xp": xpl, **leaves}
    if beta is not None:
        named["beta"] = beta
    if gate_grad:
        named.update({f"gate.{n}": q for n, q in gate.named_parameters()})
    grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
    return out, hT, sT, rec, dict(zip(named, grads, strict=True))


def _assert_strict_support(gate, T):
    gi = gate.plan(0, T)
    open_, sup = gi.values.detach() != 0, gi.support
    assert sup is not None and sup.dtype == torch.bool
    assert bool((sup | open_).eq(sup).all()), "support misses open rows"
    assert int(sup.sum()) > int(open_.sum()), "support adds no closed row"
    assert int(sup.sum()) < sup.numel(), "support covers every row"


def check(tri, cell, kind, B, H, T, tol=2e-4, seed=0, gate_grad=True, support=True, **kw):
    from su_neuro.kernels.reference import recurrence as ref

    p, lif, gate, G = _make(cell, kind, B, H, seed=seed, **kw)
    if kind == "rhythmic" and gate_grad:
        _assert_strict_support(gate, T)
    g = torch.Generator().manual_seed(seed + 1)
    xp = (torch.randn(B, T, G, generator=g) * 1.2).to(DEVICE)
    if cell == "lif":
        xp = xp.abs() * 0.8
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE),
               torch.randn(B, H, generator=g).to(DEVICE), torch.randn(B, T, H, generator=g).to(DEVICE)]
    r = _run(ref, cell, T, p, lif, gate, xp, weights, gate_grad)
    o = _run(tri.recurrence, cell, T, p, lif, gate, xp, weights, gate_grad, support)
    assert_close("out", r[0], o[0], tol)
    assert_close("h_T", r[1], o[1], tol)
    if cell == "lif":
        assert_close("s_T", r[2], o[2], tol)
        assert_close("rec.spike", r[3].spike, o[3].spike, tol)
    else:
        assert o[2] is None and o[3].spike is None
    assert_close("rec.gate", r[3].gate, o[3].gate, tol)
    assert_close("rec.delta", r[3].delta, o[3].delta, tol)
    assert set(r[4]) == set(o[4])
    for name in r[4]:
        assert_close(f"d{name}", r[4][name], o[4][name], tol)
    return r, o


CELLS = ["rnn", "gru", "lif"]
GATES = ["dense", "rhythmic", "event"]
SIZES = [(1, 5, 1), (3, 12, 7), (3, 5, 15)]


@pytest.mark.parametrize("B,H,T", SIZES, ids=[f"B{b}H{h}T{t}" for b, h, t in SIZES])
@pytest.mark.parametrize("kind", GATES)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference(tri, cell, kind, B, H, T):
    check(tri, cell, kind, B, H, T)


@pytest.mark.parametrize("cell", CELLS)
def test_frozen_rhythmic_gate_compacts(tri, cell):
    # gate without gradient: the forward computes only the open rows
    check(tri, cell, "rhythmic", 2, 12, 9, gate_grad=False)


def _spy_masks(monkeypatch):
    from su_neuro.kernels.triton import ops

    seen = []
    real = ops._open_lists

    def spy(mask):
        seen.append((mask != 0).detach().cpu().clone())
        return real(mask)

    monkeypatch.setattr(ops, "_open_lists", spy)
    return seen


@pytest.mark.parametrize("cell", CELLS)
def test_trainable_rhythmic_gate_computes_support_only(tri, cell, monkeypatch):
    # forward compacts on g | support (closed rows with sigma' != 0 are computed but keep
    # their state); backward's U^T dgh compacts on g; all results match the reference
    B, H, T = 2, 12, 9
    _, _, gate, _ = _make(cell, "rhythmic", B, H)
    gi = gate.plan(0, T)
    want = (gi.values.detach() != 0) | gi.support
    seen = _spy_masks(monkeypatch)
    check(tri, cell, "rhythmic", B, H, T)
    assert len(seen) == 2
    assert torch.equal(seen[0], want.cpu()), "forward mask is not g | support"
    assert torch.equal(seen[1], (gi.values.detach() != 0).cpu()), "backward mask is not g"
    assert 0 < int(seen[0].sum()) < T * H


@pytest.mark.parametrize("cell", CELLS)
def test_rhythmic_gate_without_support_is_dense_and_exact(tri, cell, monkeypatch):
    # a user-built GateInput (values require grad, support None): every row is computed
    seen = _spy_masks(monkeypatch)
    check(tri, cell, "rhythmic", 2, 12, 9, support=False)
    assert len(seen) == 2 and bool(seen[0].all())


def test_rhythmic_support_checked(tri):
    from su_neuro.gates import GateInput

    gi = GateInput("rhythmic", torch.ones(3, 4), support=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="support must be"):
        tri.recurrence("rnn", torch.zeros(1, 3, 4), torch.zeros(1, 4), None, torch.zeros(4, 4), None, gi)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("recurrent", [True, False])
def test_lif_variants(tri, reset, recurrent):
    check(tri, "lif", "event", 2, 6, 9, reset=reset, recurrent=recurrent, spike="fast_sigmoid")
    check(tri, "lif", "dense", 2, 6, 9, reset=reset, recurrent=recurrent, spike="triangle")


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "sigmoid", "straight_through", "rectangle"])
def test_event_surrogates(tri, surrogate):
    check(tri, "rnn", "event", 2, 5, 7, event_surrogate=surrogate, threshold=0.3)


def test_sigmoid_surrogate_keeps_its_positive_tail(tri):
    """sigma'(sx) far above the threshold: computed as s sig (1 - sig) it lost its digits for
    x > 0 (1 - sig cancels) and was exactly 0 from s x ~ 17, while the reference keeps the
    tail. One open neuron 0.76 above an event gate's threshold, one spike 0.5 above a LIF's
    (slope 25: s x = 19 and 12.5)."""
    import su_neuro

    grads = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(0)
        rnn = su_neuro.SURNN(1, 1, gate={"kind": "event", "surrogate": "sigmoid", "init_threshold": 0.0},
                             backend=backend).to(DEVICE)
        lif = su_neuro.SULIF(1, 1, gate="dense", spike_grad="sigmoid", bias=False, backend=backend).to(DEVICE)
        with torch.no_grad():
            rnn.weight_ih_l0.fill_(1.0)
            rnn.weight_hh_l0.zero_()
            rnn.bias_ih_l0.zero_()
            rnn.bias_hh_l0.zero_()
            lif.weight_ih_l0.fill_(1.0)
        _, _, rec = rnn(torch.ones(1, 1, 1, device=DEVICE), record=True)
        rec[0].gate.sum().backward()
        x = torch.full((1, 1, 1), 1.5, device=DEVICE, requires_grad=True)
        lif(x)[0].sum().backward()
        grads[backend] = (rnn.gates[0].threshold.grad, x.grad)
    for ref, got in zip(grads["torch"], grads["triton"], strict=True):
        assert ref.abs().item() > 0
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("cell", ["gru", "lif"])
def test_surrogate_gain(tri, cell):
    """A damped surrogate on the event gate (gain 0.3) and the LIF spike (gain 0.6: swapped
    gains fail too)."""
    check(tri, cell, "event", 2, 6, 9, gain=0.3, spike_gain=0.6)


def test_feedforward_lif_split_grid(tri, monkeypatch):
    from su_neuro.kernels.triton import lif_feedforward, rows

    monkeypatch.setattr(rows, "SPLIT", 4)  # backward: 3 programs per batch row at H = 10
    # forward (kernels/triton/lif_feedforward.py, dense and event gates): 3 programs per batch
    # row, the input current in tiles of 4 steps, the last one partial (T = 6)
    monkeypatch.setattr(lif_feedforward, "BLOCK", 4)
    monkeypatch.setattr(lif_feedforward, "T_TILE", 4)
    for kind in GATES:
        check(tri, "lif", kind, 2, 10, 6, recurrent=False)


@pytest.mark.parametrize("kind", ["dense", "event"])
def test_feedforward_lif_streaming_kernel_tiles(tri, kind):
    """Default tile sizes: H = 130 is two full blocks of 64 neurons and a partial one, T = 37
    four full tiles of 8 steps and a partial one; both resets."""
    check(tri, "lif", kind, 2, 130, 37, recurrent=False, spike="triangle")
    check(tri, "lif", kind, 1, 130, 37, recurrent=False, reset="zero", seed=3)


def _lif_fp32_rounded_state(xp, v0, beta, threshold, theta):
    """The kernels' low-precision contract for a feed-forward LIF (subtract reset): fp32
    arithmetic, the membrane rounded to the input dtype after every step."""
    v, beta = v0.float(), beta.float().clamp(0, 1)
    spikes = []
    for t in range(xp.shape[1]):
        f = beta * v + xp[:, t].float() - (v > threshold).float() * threshold
        g = torch.ones_like(f) if theta is None else (((f - v).abs() - theta.float()) > 0).float()
        hn = v + g * (f - v)
        spikes.append(g * (hn > threshold).float())
        v = _round_to(hn, xp.dtype)
    return torch.stack(spikes, 1), v


def _round_to(x, dtype):
    """x (fp32) rounded to dtype as the kernel's store does: to nearest on a GPU; Triton's
    interpreter converts fp32 to bf16 by truncation (toward zero), so on the CPU the
    contract is checked with that rounding."""
    if DEVICE == "cpu" and dtype == torch.bfloat16:
        return (x.view(torch.int32) & -65536).view(torch.float32)
    return x.to(dtype).float()


def test_feedforward_lif_low_precision(tri):
    """fp16 / bf16 input current: fp32 arithmetic with the membrane rounded to the input
    dtype after each step. Against that contract spikes and final membrane agree (up to
    fused multiply-adds on a GPU); against the reference, which computes in the low
    precision itself, only a few spikes near the threshold differ."""
    from su_neuro.kernels.reference import recurrence as ref

    for dtype in (torch.bfloat16, torch.float16):
        for kind in ("dense", "event"):
            p, lif, gate, G = _make("lif", kind, 2, 40, recurrent=False, dtype=dtype)
            xp = (torch.randn(2, 21, G, generator=torch.Generator().manual_seed(4)).abs() * 0.8).to(DEVICE, dtype)
            gi = gate.plan(0, 21, dtype=dtype)
            with torch.no_grad():
                r = ref("lif", xp, p["h0"], p["s0"], None, None, gi, lif)
                o = tri.recurrence("lif", xp, p["h0"], p["s0"], None, None, gi, lif)
                theta = gate.threshold if kind == "event" else None
                s_c, v_c = _lif_fp32_rounded_state(xp, p["h0"], lif.beta, 1.0, theta)
            assert o[0].dtype == dtype and o[1].dtype == dtype
            assert 0.05 < o[0].float().mean().item() < 0.95  # spikes and silence both occur
            if DEVICE == "cpu":  # the interpreter: numpy fp32, no fused multiply-adds
                assert torch.equal(o[0].float(), s_c) and torch.equal(o[1].float(), v_c)
            assert (o[0].float() != s_c).float().mean().item() <= 0.01, f"{dtype} {kind}: spikes"
            close = (o[1].float() - v_c).abs() <= 2 * torch.finfo(dtype).eps * v_c.abs().clamp(min=1)
            assert close.float().mean().item() >= 0.95, f"{dtype} {kind}: final membrane"
            flips = (r[0] != o[0]).float().mean().item()
            assert flips < 0.03, f"{dtype} {kind}: {flips:.1%} of the spikes differ from the reference"


def test_no_bias(tri):
    check(tri, "gru", "rhythmic", 2, 5, 7, bias=False)
    check(tri, "rnn", "event", 2, 5, 7, bias=False)


def test_event_delta_accumulation_refresh(tri, monkeypatch):
    from su_neuro.kernels.triton import rows

    monkeypatch.setattr(rows, "REFRESH", 3)  # exact U h at t = 0, 3, 6, ...
    for threshold in (0.0, 0.3, 10.0):  # everything / some / nothing changes
        check(tri, "gru", "event", 2, 12, 8, threshold=threshold)
        check(tri, "rnn", "event", 2, 12, 8, threshold=threshold)


def check_low_precision_forward(tri):
    """A bf16 and an fp16 GRU forward against the reference (fp32 arithmetic, the state
    rounded to the input dtype)."""
    from su_neuro.kernels.reference import recurrence as ref

    for dtype in (torch.bfloat16, torch.float16):
        p, lif, gate, G = _make("gru", "rhythmic", 2, 6, dtype=dtype)
        xp = torch.randn(2, 5, G).to(DEVICE, dtype)
        gi = gate.plan(0, 5, dtype=dtype)
        with torch.no_grad():
            r = ref("gru", xp, p["h0"], None, p["w"], p["b"], gi, None)
            o = tri.recurrence("gru", xp, p["h0"], None, p["w"], p["b"], gi, None)
        assert o[0].dtype == dtype
        assert_close(f"out {dtype}", r[0].float(), o[0].float(), 5e-2)


def test_low_precision_forward(tri):
    check_low_precision_forward(tri)


def test_layers_through_backend(tri):
    import su_neuro

    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, device=DEVICE)
    rg = {"kind": "rhythmic", "init_rate": 0.3, "surrogate_params": {"width": RHYTHM_WIDTH}}
    for cls, kw in ((su_neuro.SUGRU, {}), (su_neuro.SULIF, {"recurrent": True, "beta": 0.8})):
        a = cls(3, 7, num_layers=2, gate=rg, backend="torch", **kw).to(DEVICE)
        b = cls(3, 7, num_layers=2, gate=rg, backend="triton", **kw).to(DEVICE)
        b.load_state_dict(a.state_dict())
        ya, sa = a(x[:, :4])
        ya2, sa2 = a(x[:, 4:], sa)
        yb, sb = b(x[:, :4])
        yb2, sb2 = b(x[:, 4:], sb)
        assert_close("chunk 1", ya, yb, 2e-4)
        assert_close("chunk 2", ya2, yb2, 2e-4)
        assert_close("state", sa2.h, sb2.h, 2e-4)
        (ya2.sum() + ya.sum()).backward()
        (yb2.sum() + yb.sum()).backward()
        for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert_close(f"{cls.__name__}.{n}.grad", pa.grad, pb.grad, 2e-4)


def test_unsupported_and_checks(tri):
    from su_neuro.gates import GateInput

    assert tri.unsupported("gru", "rhythmic", torch.float32) is None
    assert "float64" in tri.unsupported("gru", "dense", torch.float64)
    assert "lstm" in tri.unsupported("lstm", "dense", torch.float32)
    with pytest.raises(ValueError, match="expected 3 \\* H"):
        tri.recurrence("gru", torch.zeros(1, 2, 5), torch.zeros(1, 5), None, torch.zeros(15, 5), None,
                       GateInput("dense"))


# ---------------------------------------------------------------- multi-program kernels
@pytest.fixture
def grid_on(tri, monkeypatch):
    """Turns the multi-program kernels (kernels/triton/grid.py) on and counts their launchers."""
    from su_neuro.kernels.triton import grid

    calls = {"fwd": 0, "bwd": 0, "dw": 0}  # dw: backward launches that formed dL/dU themselves
    monkeypatch.setattr(grid, "ENABLED", True)

    def formed_dw(name, out):
        calls["dw"] += out is not None

    return grid, count_launches(monkeypatch, grid, calls, formed_dw)


def _tiles(bb, bh, bk, fma, split=False, dw=False, bwd=None):
    from su_neuro.kernels.triton.grid_tiles import Tiles

    return Tiles(bb, bh, bk, 4, 2, fma, split, dw=dw, bwd=bwd)


# (B, H, T, overrides): one program (the default for B = 1: FMA, one row); round robin of 3
# chunks over 2 programs with 3 column tiles, on tl.dot and on the FMA units (chunks of 8
# rows, a batch block of 4 rows for 3); batch blocks of 16 rows (tl.dot) and of 8 rows (FMA),
# the last one partial. Split steps (tiles' ``split``): 3 chunks x 3 column tiles = 9 units
# cut 4 + 5 over 2 programs, so a chunk's partials come from both; 5 chunks x 5 tiles over 2
# programs on the FMA units (phase 2 loads the partials of 4 tiles, then of 1; under the
# dense gate program 0 finishes three chunks, each loading the next one's rows); two batch
# blocks, the second partial (programs without a unit and steps without an open row:
# test_grid_kernels_split_idle_programs). dU in the backward kernel (tiles' ``dw``): two
# batch blocks, the second partial (their sums added), 3 column slices over 2 programs, row
# tiles of 16 (tl.dot); with the backward's own tiles (``bwd``) as well: slices of 32 columns
# where the forward's chunks have 16 rows (one slice per program, a partial second one) and
# row tiles of 32. The backward's own tiles alone: slices of 16 and row tiles of 16 where the
# forward has 8 and 8 (FMA, blocks of 4 rows, 2 warps). dU on the FMA units: the long run
# and the fallback test
GRID_CASES = [
    (1, 5, 1, {}),
    (3, 40, 7, {"TILES": _tiles(16, 16, 16, False), "MAX_NH": 2}),
    (3, 40, 7, {"TILES": _tiles(4, 8, 16, True), "MAX_NH": 2}),
    (17, 33, 4, {"TILES": _tiles(16, 16, 64, False)}),
    (17, 33, 4, {"TILES": _tiles(8, 16, 32, True)}),
    (3, 40, 7, {"TILES": _tiles(16, 16, 16, False, split=True), "MAX_NH": 2}),
    (3, 40, 7, {"TILES": _tiles(4, 8, 8, True, split=True), "MAX_NH": 2}),
    (17, 33, 4, {"TILES": _tiles(16, 16, 16, False, split=True), "MAX_NH": 2}),
    (17, 33, 4, {"TILES": _tiles(16, 16, 16, False, dw=True), "MAX_NH": 2}),
    (17, 33, 4, {"TILES": _tiles(16, 16, 16, False, dw=True, bwd=(32, 32, 4)), "MAX_NH": 2}),
    (5, 40, 7, {"TILES": _tiles(4, 8, 8, True, bwd=(16, 16, 2)), "MAX_NH": 3}),
]


GRID_IDS = ["one", "round_robin", "round_robin_fma", "blocks", "blocks_fma", "split", "split_fma", "split_blocks",
            "dw_blocks", "dw_bwd_tiles", "bwd_tiles_fma"]
# every case for the dense and rhythmic gates; the event gate's forward has no split steps
# (its split cases would repeat the others)
GRID_PARAMS = [(cell, kind, case) for cell in ("rnn", "gru") for kind in ("dense", "rhythmic", "event")
               for case in range(len(GRID_CASES)) if not (kind == "event" and GRID_IDS[case].startswith("split"))]


@pytest.mark.parametrize(("cell", "kind", "case"), GRID_PARAMS,
                         ids=[f"{c}-{k}-{GRID_IDS[i]}" for c, k, i in GRID_PARAMS])
def test_grid_kernels_match_reference(tri, grid_on, monkeypatch, cell, kind, case):
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    B, H, T, over = GRID_CASES[case]
    for k, v in over.items():
        monkeypatch.setattr(grid_tiles, k, v)
    phases = _spy_phases(grid, monkeypatch)
    runs = [{}] if kind != "rhythmic" else [{}, {"gate_grad": False}, {"support": False}]
    for kw in runs:
        check(tri, cell, kind, B, H, T, **kw)
    dw = grid_tiles.TILES is not None and grid_tiles.TILES.dw
    assert calls == {"fwd": len(runs), "bwd": len(runs), "dw": len(runs) if dw else 0}, calls
    # the event gate's forward is never split and reduces over gathered rows of U^T: it takes
    # the backward's own tiles
    split = grid_tiles.TILES is not None and grid_tiles.TILES.split and kind != "event"
    assert phases["fwd"] == [split] * len(runs), "a split forward runs its steps in two phases"
    if grid_tiles.TILES is not None:  # the backward's own tiles where set, else the forward's
        t = grid_tiles.TILES
        own = t.bwd or (t.bh, t.bk, t.warps)
        assert phases["fwd_tiles"] == [own if kind == "event" else (t.bh, t.bk, t.warps)] * len(runs)
        assert phases["bwd_tiles"] == [own] * len(runs)


def _spy_phases(grid, monkeypatch):
    # per launch of each kernel: whether its steps ran in two phases, its (BH, BK, warps),
    # and its kernel and dot precision
    seen = {"fwd": [], "bwd": [], "fwd_tiles": [], "bwd_tiles": [], "fwd_prec": [], "bwd_prec": []}
    real = grid._launch

    def spy(kernel, name, *a):
        seen[name].append(a[-2])
        seen[f"{name}_tiles"].append((a[-1]["BH"], a[-1]["BK"], a[-1]["num_warps"]))
        seen[f"{name}_prec"].append((kernel, a[-1]["PREC"]))
        return real(kernel, name, *a)

    monkeypatch.setattr(grid, "_launch", spy)
    return seen


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_grid_kernels_split_idle_programs(tri, grid_on, monkeypatch, cell):
    # split steps where programs get no unit: one column tile (NK = 1), 5 programs, and a
    # frozen rhythmic gate whose steps open 3 rows (one unit), none, 17 rows (3 units) and
    # every row (5 units); forward, final state and every gradient against the reference
    from su_neuro.gates import GateInput
    from su_neuro.kernels.reference import recurrence as ref
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    B, H, T = 2, 40, 4
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(2, 8, 64, True, split=True))
    monkeypatch.setattr(grid_tiles, "MAX_NH", 8)
    assert grid_tiles.shape(B, H, torch.device(DEVICE))[1] == 5  # one program per chunk of all rows
    gen = torch.Generator().manual_seed(11)
    g = torch.zeros(T, H)
    g[0, [3, 17, 38]] = 1.0
    g[2, torch.randperm(H, generator=gen)[:17]] = torch.rand(17, generator=gen) * 0.5 + 0.5
    g[3] = 1.0
    gate = GateInput("rhythmic", g.to(DEVICE))
    p, _, _, G = _make(cell, "dense", B, H, seed=5)
    xp = (torch.randn(B, T, G, generator=gen) * 1.2).to(DEVICE)
    wo, wh = torch.randn(B, T, H, generator=gen).to(DEVICE), torch.randn(B, H, generator=gen).to(DEVICE)
    phases = _spy_phases(grid, monkeypatch)
    res = []
    for fn in (ref, tri.recurrence):
        leaves = {k: v.clone().requires_grad_() for k, v in p.items() if v is not None}
        x = xp.clone().requires_grad_()
        out, hT, _, _ = fn(cell, x, leaves["h0"], None, leaves["w"], leaves["b"], gate, None)
        grads = torch.autograd.grad((out * wo).sum() + (hT * wh).sum(), [x, leaves["h0"], leaves["w"], leaves["b"]])
        res.append((out, hT, *grads))
    for name, a, b in zip(("out", "h_T", "dxp", "dh0", "dw", "db"), *res, strict=True):
        assert_close(name, a, b, 2e-4)
    assert torch.equal(res[1][0][:, 1], res[1][0][:, 0]), "a step with no open row keeps every state"
    assert phases["fwd"] == [True] and calls["fwd"] == 1


# each cell once, and dU from the GEMM and from the kernel once each (the event cases of
# GRID_PARAMS run both cells with and without dw)
@pytest.mark.parametrize(("cell", "dw"), [("rnn", True), ("gru", False)], ids=["rnn-dw", "gru-gemm"])
def test_grid_kernels_event_reduce_over_the_changed_neurons(tri, grid_on, monkeypatch, cell, dw):
    # the event gate over T = 70 steps (an exact refresh of U h at t = 64), two batch blocks
    # (16 + 1 rows), 2 programs: forward, record and every gradient against the reference,
    # then the work: at step t the forward reduces over the neurons whose state changed at
    # step t - 1 in any row of the block (every neuron at t = 0 and 64), and the backward
    # over those whose pre-activations got a gradient (g = 1, or the surrogate's derivative
    # non-zero), exactly; some steps of each must leave neurons out. With dw the backward
    # forms dU over those rows only
    from su_neuro.gates import EventGate
    from su_neuro.kernels.reference import candidate
    from su_neuro.kernels.reference import recurrence as ref
    from su_neuro.kernels.triton import grid_tiles
    from su_neuro.surrogate import surrogate_derivative

    grid, calls = grid_on
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 16, 16, False, dw=dw))
    monkeypatch.setattr(grid_tiles, "MAX_NH", 2)
    monkeypatch.setattr(grid, "_BC", 16)  # the flags compacted in 3 tiles (40 = 16 + 16 + 8)
    B, H, T = 17, 40, 70
    p, _, _, G = _make(cell, "event", B, H)
    # about half the neurons open per row, and a narrow surrogate: the backward's rows are
    # about half of them too
    gate = EventGate(H, init_threshold=0.5, surrogate="triangle", surrogate_params={"width": 0.2}).to(DEVICE)
    g = torch.Generator().manual_seed(1)
    xp = (torch.randn(B, T, G, generator=g) * 1.2).to(DEVICE)
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE), None,
               torch.randn(B, T, H, generator=g).to(DEVICE)]  # the last: a penalty on the recorded gate
    with torch.no_grad():
        p["w"] /= H**0.5  # a recurrence whose gates do not flip on rounding over 70 steps
    r = _run(ref, cell, T, p, None, gate, xp, weights)
    o = _run(tri.recurrence, cell, T, p, None, gate, xp, weights)
    assert calls == {"fwd": 1, "bwd": 1, "dw": int(dw)}
    for i, name in enumerate(("out", "h_T")):
        assert_close(name, r[i], o[i], 2e-4)
    assert_close("rec.gate", r[3].gate, o[3].gate, 0)
    for name in r[4]:
        assert_close(f"d{name}", r[4][name], o[4][name], 2e-4)
    with torch.no_grad():
        hs = torch.cat([p["h0"][:, None], o[0]], 1)  # the kernel's states, h0 first
        moved = hs[:, 1:] != hs[:, :-1]  # (B, T, H): step t changed the state
        f = torch.stack([candidate(cell, xp[:, t], hs[:, t], None, p["w"], p["b"], None) for t in range(T)], 1)
        d = f - hs[:, :-1]
        theta = gate.threshold.detach()
        sg = surrogate_derivative(gate.surrogate.name, gate.surrogate.scale, d.abs() - theta)
        graded = (o[3].gate != 0) | ((sg != 0) & (d != 0))
    blocks = [slice(0, 16), slice(16, 17)]
    fwd, bwd = grid.WORK["fwd"].cpu(), grid.WORK["bwd"].cpu()
    assert fwd.shape == bwd.shape == (T, 2)
    for q, rows in enumerate(blocks):
        for t in range(T):
            want = H if t % 64 == 0 else int(moved[rows, t - 1].any(0).sum())
            assert int(fwd[t, q]) == want, (t, q)
            assert int(bwd[t, q]) == int(graded[rows, t].any(0).sum()), (t, q)
    # the one-row block (the 16-row block's union holds almost every neuron at every step)
    assert 0 < int(fwd[1:64, 1].min()) and int(fwd[1:64, 1].max()) < H, "the forward skips unchanged neurons"
    assert int(bwd[:, 1].max()) < H, "the backward skips neurons without a gradient"


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_grid_kernels_event_steps_without_a_change_and_nan(tri, grid_on, monkeypatch, cell):
    # thresholds no candidate reaches: every step after the first reduces over no column
    # (forward) and no row (backward), every state stays h0, and outputs and every gradient
    # (dL/dtheta: 0) match the reference. Then a NaN in one row's input at step 2: that
    # neuron's state becomes NaN, the one change in its row, and at step 3 it reaches every
    # neuron of the row through U, as in the reference; the other rows stay finite. Batch
    # blocks of one row, so that only the NaN lists its column. The per-row kernels too: a
    # column tile whose one non-zero is a NaN is not skipped
    from su_neuro.gates import EventGate
    from su_neuro.kernels.reference import recurrence as ref
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(1, 8, 16, True))
    monkeypatch.setattr(grid_tiles, "MAX_NH", 2)
    B, H, T = 3, 20, 6
    p, _, _, G = _make(cell, "event", B, H)
    gate = EventGate(H, init_threshold=1e6, surrogate="triangle", surrogate_params={"width": 0.5}).to(DEVICE)
    g = torch.Generator().manual_seed(2)
    xp = torch.randn(B, T, G, generator=g).to(DEVICE)
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE), None]
    r = _run(ref, cell, T, p, None, gate, xp, weights)
    o = _run(tri.recurrence, cell, T, p, None, gate, xp, weights)
    assert calls["fwd"] == 1 and calls["bwd"] == 1
    assert torch.equal(o[0], p["h0"][:, None].expand(B, T, H)), "no neuron opens: every state stays h0"
    assert grid.WORK["fwd"].tolist() == [[H] * B] + [[0] * B] * (T - 1)
    assert grid.WORK["bwd"].abs().sum() == 0
    for i, name in enumerate(("out", "h_T")):
        assert_close(name, r[i], o[i], 2e-4)
    for name in r[4]:
        assert_close(f"d{name}", r[4][name], o[4][name], 2e-4)
    assert o[4]["gate.threshold"].abs().sum() == 0
    xp[0, 2, 1] = float("nan")
    gi = gate.plan(0, T, device=xp.device, dtype=xp.dtype)
    with torch.no_grad():
        want = ref(cell, xp, p["h0"], None, p["w"], p["b"], gi, None, True)[0]
        for on in (True, False):
            grid.ENABLED = on
            out = tri.recurrence(cell, xp, p["h0"], None, p["w"], p["b"], gi, None, True)[0]
            assert torch.equal(out.isnan(), want.isnan()), on
            assert out[0, 2].isnan().tolist() == [j == 1 for j in range(H)] and bool(out[0, 3:].isnan().all())
            assert_close("out (rows without NaN)", want[1:], out[1:], 2e-4)
    assert calls["fwd"] == 2


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_grid_kernels_event_long_run_is_independent_of_the_programs(tri, monkeypatch, cell):
    # the event kernels reduce a chunk over its list in list order whatever the number of
    # programs, so many programs sharing each step (on a GPU: T = 2000, 32 programs, one
    # barrier per step forward, one between the backward's phases, flags double-buffered by
    # step parity) must give bit for bit what one program per batch block gives: outputs,
    # final state, every gradient and the work per step. A lost or early barrier, or flags
    # overwritten while another program still compacts them, shows here
    from su_neuro.gates import EventGate
    from su_neuro.kernels.triton import grid, grid_tiles

    B, H, T = (5, 256, 2000) if DEVICE == "cuda" else (3, 48, 24)
    if DEVICE != "cuda":
        monkeypatch.setattr(grid_tiles, "TILES", _tiles(4, 8, 16, True))
    monkeypatch.setattr(grid, "ENABLED", True)
    p, _, _, G = _make(cell, "event", B, H, seed=5)
    # a narrow surrogate: the backward's flags must vary (a width of 0.5 set every one of them
    # at every step, and a backward race over the flags could not show)
    gate = EventGate(H, init_threshold=0.6, surrogate="triangle", surrogate_params={"width": 0.1}).to(DEVICE)
    g = torch.Generator().manual_seed(6)
    xp = (torch.randn(B, T, G, generator=g) * 0.8).to(DEVICE)
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE), None]
    with torch.no_grad():
        p["w"] /= H**0.5
    runs, work = [], []
    for nh in (None, 1):
        monkeypatch.setattr(grid_tiles, "MAX_NH", nh)
        if nh is None:
            assert grid_tiles.shape(B, H, torch.device(DEVICE))[1] >= (16 if DEVICE == "cuda" else 6)
        runs.append(_run(tri.recurrence, cell, T, p, None, gate, xp, weights))
        work.append((grid.WORK["fwd"].clone(), grid.WORK["bwd"].clone()))
    (o_many, h_many, _, rec_many, d_many), (o_one, h_one, _, rec_one, d_one) = runs
    assert torch.equal(o_many, o_one) and torch.equal(h_many, h_one)
    assert torch.equal(rec_many.gate, rec_one.gate)
    for name in d_one:
        assert torch.equal(d_many[name], d_one[name]), name
    assert all(torch.equal(a, b) for a, b in zip(*work, strict=True))
    opened = rec_one.gate.float().mean().item()
    assert 0.02 < opened < 0.9, f"a run that exercises the gate ({opened:.2f} open)"
    bwd_rows = work[1][1].float()
    assert bwd_rows.max() > 0 and (bwd_rows < H).float().mean() > 0.5, f"backward rows per step {bwd_rows.tolist()}"


def test_grid_kernels_split_and_dw_fall_back(tri, grid_on, monkeypatch):
    # a split forward whose scratch of partials would pass SPLIT_MAX_BYTES runs whole chunks;
    # a backward whose per-block dU sums would pass DW_MAX_BYTES leaves dU to the GEMM
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(4, 8, 16, True, split=True, dw=True))
    monkeypatch.setattr(grid_tiles, "MAX_NH", 2)
    B, H = 3, 40
    assert grid_tiles.split_bytes(B, H, "gru", 16) == 3 * B * 3 * H * 4  # (cdiv(40, 16), B, 3H) fp32
    # phase 2 loads at most PARTIAL_TILES tiles' partials at once, a power of two
    assert [grid_tiles.partial_tiles(40, 16, p) for p in ("ieee", "tf32x3")] == [4, 4]
    assert [grid_tiles.partial_tiles(1024, bk, p) for bk, p in ((64, "ieee"), (32, "tf32x3"), (128, "tf32"))] \
        == [4, 8, 4]
    assert grid_tiles.dw_bytes(1, H, "gru") == 3 * H * H * 4  # one batch block: (1, 3H, H) fp32
    monkeypatch.setattr(grid_tiles, "SPLIT_MAX_BYTES", grid_tiles.split_bytes(B, H, "gru", 16) - 1)
    monkeypatch.setattr(grid_tiles, "DW_MAX_BYTES", grid_tiles.dw_bytes(1, H, "gru") - 1)
    phases = _spy_phases(grid, monkeypatch)
    check(tri, "gru", "rhythmic", B, H, 5)
    assert calls["dw"] == 0, "dU from the GEMM"
    monkeypatch.setattr(grid_tiles, "SPLIT_MAX_BYTES", grid_tiles.split_bytes(B, H, "gru", 16))
    monkeypatch.setattr(grid_tiles, "DW_MAX_BYTES", grid_tiles.dw_bytes(1, H, "gru"))
    check(tri, "gru", "rhythmic", B, H, 5)
    assert phases["fwd"] == [False, True] and calls["fwd"] == 2 and calls["dw"] == 1


def test_grid_kernels_dw_per_block_sums(tri, grid_on, monkeypatch):
    # the kernel's dU is one sum per batch block: each equals the reference's dU on that
    # block's rows alone (batch rows are independent), and w's gradient is exactly their
    # sum, i.e. the kernel's and not a GEMM's. With U frozen no dU is formed, and b's
    # gradient is still right; past DW_MAX_BYTES (two blocks' sums) the GEMM forms dU
    from su_neuro.kernels.reference import recurrence as ref
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 16, 16, False, dw=True))
    monkeypatch.setattr(grid_tiles, "MAX_NH", 2)
    sums = []
    real = grid.launch_bwd

    def spy(*a, **k):
        sums.append(real(*a, **k))
        return sums[-1]

    monkeypatch.setattr(grid, "launch_bwd", spy)
    B, H, T = 19, 33, 5
    p, _, gate, G = _make("gru", "rhythmic", B, H)
    g = torch.Generator().manual_seed(5)
    xp = torch.randn(B, T, G, generator=g).to(DEVICE)
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE), None]
    o = _run(tri.recurrence, "gru", T, p, None, gate, xp, weights)
    (du,) = sums
    assert du.shape == (2, G, H) and torch.equal(o[4]["w"], du.sum(0))
    for q, rows in enumerate((slice(0, 16), slice(16, B))):
        sub = {k: (v[rows] if k == "h0" else v) for k, v in p.items() if v is not None}
        r = _run(ref, "gru", T, sub, None, gate, xp[rows], [w[rows] if w is not None else None for w in weights])
        assert_close(f"dU of block {q}", r[4]["w"], du[q], 2e-4)
    # U frozen, b trained: nothing to form
    r = _run(ref, "gru", T, p, None, gate, xp, weights)
    leaves = {k: v.clone().requires_grad_(k != "w") for k, v in p.items() if v is not None}
    out, hT, _, _ = tri.recurrence("gru", xp, leaves["h0"], None, leaves["w"], leaves["b"], gate.plan(0, T), None)
    ((out * weights[0]).sum() + (hT * weights[1]).sum()).backward()
    assert sums[-1] is None and leaves["w"].grad is None
    assert_close("db, U frozen", r[4]["b"], leaves["b"].grad, 2e-4)
    monkeypatch.setattr(grid_tiles, "DW_MAX_BYTES", grid_tiles.dw_bytes(2, H, "gru") - 1)
    o = _run(tri.recurrence, "gru", T, p, None, gate, xp, weights)
    assert sums[-1] is None, "past DW_MAX_BYTES: the GEMM"
    assert_close("dU from the GEMM", r[4]["w"], o[4]["w"], 2e-4)
    assert calls["dw"] == 1


def test_grid_kernels_one_launch_with_the_barrier(tri, grid_on, monkeypatch):
    # the GPU path: all T steps in one launch, both backward phases in it, the barrier on
    # (one program per batch block, so the interpreter's serial programs cannot wait for
    # each other; the counter must reach one arrival per step and program)
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    monkeypatch.setattr(grid, "_native", lambda device: True)
    monkeypatch.setattr(grid_tiles, "MAX_NH", 1)
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 16, 64, False))
    counters = []
    real = grid._counters

    def spy(nb, device):
        counters.append(real(nb, device))
        return counters[-1]

    monkeypatch.setattr(grid, "_counters", spy)
    B, H, T = 20, 40, 6
    check(tri, "gru", "rhythmic", B, H, T)
    check(tri, "rnn", "dense", B, H, T)
    check(tri, "gru", "event", B, H, T)
    # split steps: two arrivals per step in the forward (the backward ignores split). With
    # one program per block a target set too low cannot show here (nobody is waited for);
    # the native long run (T = 2000, 32 programs) is where it would
    # and a backward with dU and its own tiles: one arrival per step (two slices of 32)
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 16, 16, False, split=True, dw=True, bwd=(32, 16, 4)))
    check(tri, "gru", "rhythmic", B, H, T)
    assert calls == {"fwd": 4, "bwd": 4, "dw": 1}
    assert len(counters) == 8
    for z in counters[:6] + counters[7:]:
        assert z.tolist() == [T, T], "one arrival per step and batch block"
    assert counters[6].tolist() == [2 * T, 2 * T], "the split forward: two per step"


@pytest.mark.parametrize("split", [False, True], ids=["chunks", "split"])
@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_grid_kernels_long_run_match_the_per_row_kernels(tri, monkeypatch, cell, split):
    # many steps with several programs per batch block: on a GPU the place where a wrong
    # barrier shows (T = 2000, 32 programs; split steps: two barriers per step, and a
    # backward that forms dU in slices of 16, read and written at every step by the 16
    # programs that own one); under the interpreter a shorter run of the same comparison
    # (forward, final state and every gradient)
    from su_neuro.kernels.triton import grid, grid_tiles

    B, H, T = (5, 256, 2000) if DEVICE == "cuda" else (3, 48, 40)
    if split:  # several column tiles per chunk (4 on a GPU, 3 here), so partials are summed
        bk = H // 4 if DEVICE == "cuda" else 16
        monkeypatch.setattr(grid_tiles, "TILES", _tiles(8, 8, bk, True, split=True, dw=True, bwd=(16, 16, 4)))
    phases = _spy_phases(grid, monkeypatch)
    p, _, gate, G = _make(cell, "rhythmic", B, H, seed=3)
    g = torch.Generator().manual_seed(4)
    xp = (torch.randn(B, T, G, generator=g) * 0.5).to(DEVICE)
    weights = [torch.randn(B, T, H, generator=g).to(DEVICE), torch.randn(B, H, generator=g).to(DEVICE),
               None]
    with torch.no_grad():
        p["w"] /= H**0.5  # a stable recurrence over many steps
    runs = []
    for on in (False, True):
        monkeypatch.setattr(grid, "ENABLED", on)
        runs.append(_run(tri.recurrence, cell, T, p, None, gate, xp, weights))
    (o_row, h_row, _, _, d_row), (o_grid, h_grid, _, _, d_grid) = runs
    assert grid_tiles.shape(B, H, torch.device(DEVICE))[1] >= 3
    assert phases["fwd"] == [split]
    assert_close("out", o_row, o_grid, 1e-4)
    assert_close("h_T", h_row, h_grid, 1e-4)
    for name in d_row:
        assert_close(f"d{name}", d_row[name], d_grid[name], 1e-4)


def test_grid_kernels_no_bias_and_low_precision(tri, grid_on, monkeypatch):
    from su_neuro.kernels.triton import grid_tiles

    grid, calls = grid_on
    check(tri, "gru", "rhythmic", 2, 5, 7, bias=False)
    check(tri, "rnn", "dense", 2, 5, 7, bias=False)
    check_low_precision_forward(tri)
    assert calls["fwd"] == 4
    # 16-bit training: the same gradients as the per-row kernels (fp32 arithmetic in both),
    # with dU from the GEMM and from the kernel; the rhythmic gate frozen, the event gate's
    # thresholds trained. The rhythmic forward multiplies 16-bit states, which TF32 holds
    # exactly; the event forward multiplies differences of them, which it does not, so it
    # takes fp32's precision (the interpreter ignores it: the launch's argument is checked)
    phases = _spy_phases(grid, monkeypatch)
    for kind in ("rhythmic", "event"):
        for dtype in (torch.bfloat16, torch.float16):
            p, _, gate, G = _make("gru", kind, 3, 20, dtype=dtype)
            xp = torch.randn(3, 6, G).to(DEVICE, dtype)
            grads = []
            for on, dw in ((False, None), (True, None), (True, True)):
                grid.ENABLED = on
                monkeypatch.setattr(grid_tiles, "DW", dw)
                leaves = {k: v.clone().requires_grad_() for k, v in p.items() if v is not None}
                x = xp.clone().requires_grad_()
                for q in gate.parameters():
                    q.grad = None
                    q.requires_grad_(kind == "event")
                out, hT, _, _ = tri.recurrence("gru", x, leaves["h0"], None, leaves["w"], leaves["b"],
                                               gate.plan(0, 6, dtype=dtype), None)
                (out.float().sum() + hT.float().sum()).backward()
                grads.append({"out": out, "dxp": x.grad, "dw": leaves["w"].grad, "db": leaves["b"].grad,
                              "dh0": leaves["h0"].grad,
                              **{f"d{n}": q.grad for n, q in gate.named_parameters() if kind == "event"}})
            for name in grads[0]:
                for other in grads[1:]:
                    assert_close(f"{kind} {dtype} {name}", grads[0][name].float(), other[name].float(), 1e-2)
    assert calls["bwd"] == 10 and calls["dw"] == 4
    fwd = phases["fwd_prec"]
    assert {p for k, p in fwd if k is grid._fwd_grid_kernel} == {"tf32"}
    assert {p for k, p in fwd if k is grid._fwd_event_grid_kernel} == {grid_tiles.dot_precision(torch.float32)}
    assert len(fwd) == 8 and grid_tiles.dot_precision(torch.float32) != "tf32"


def test_grid_kernels_eligibility(tri, monkeypatch):
    from su_neuro.kernels.triton import grid, grid_tiles

    w = torch.zeros(3, 1)
    cpu = torch.device("cpu")
    assert grid.ENABLED is None
    assert not grid.eligible("gru", "rhythmic", w, 4, cpu), "the measured choice is for GPUs only"
    monkeypatch.setattr(grid, "ENABLED", True)
    assert grid.eligible("gru", "rhythmic", w, 4, cpu) and grid.eligible("rnn", "dense", w, 4, cpu)
    assert grid.eligible("gru", "event", w, 4, cpu) and grid.eligible("rnn", "event", w, 4, cpu)
    assert not grid.eligible("lif", "rhythmic", w, 4, cpu)
    assert not grid.eligible("lif", "dense", None, 4, cpu)
    # the default tiles: a batch of <= 8 rows is one FMA block of next_pow2(B) rows, chunks of
    # 8 rows, a reduction tile of 2048 / BB (at most the width); larger batches take tl.dot
    # blocks, their reduction tile set by the precision
    assert grid_tiles.tiles(1, 100, cpu) == grid_tiles.Tiles(1, 8, 128, 8, 3, True)
    assert grid_tiles.tiles(1, 8192, cpu) == grid_tiles.Tiles(1, 8, 2048, 8, 3, True)
    assert grid_tiles.tiles(5, 8192, cpu).bb == 8 and grid_tiles.tiles(5, 8192, cpu).bk == 256
    assert grid_tiles.shape(1, 100, cpu) == (1, 13, 1)
    assert grid_tiles.shape(200, 100, cpu) == (64, 7, 4)
    assert [grid_tiles.tiles(16, 100, cpu, p).bk for p in ("ieee", "tf32x3", "tf32")] == [64, 32, 128]
    monkeypatch.setattr(grid_tiles, "MAX_NH", 3)
    assert grid_tiles.shape(200, 1000, cpu) == (64, 3, 4)
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 32, 64, False))
    assert grid_tiles.shape(200, 1000, cpu) == (16, 3, 13)
    # on a GPU (132 SMs here): blocks of 16 rows while each keeps 16 programs, every program
    # resident or not eligible
    monkeypatch.setattr(grid_tiles, "MAX_NH", None)
    monkeypatch.setattr(grid_tiles, "TILES", None)
    monkeypatch.setattr(grid_tiles, "sm_count", lambda device: 132)
    gpu = torch.device("cuda")
    assert grid_tiles.shape(64, 1024, gpu) == (16, 33, 4)  # four blocks of 16 rows, 33 programs each
    monkeypatch.setattr(grid_tiles, "TILES", _tiles(16, 16, 64, False)._replace(per_sm=2))
    assert grid_tiles.shape(64, 1024, gpu) == (16, 64, 4)  # two per SM allow one per chunk: 64, not 33
    assert grid.eligible("gru", "rhythmic", torch.zeros(3 * 1024, 1024), 64, gpu)
    monkeypatch.setattr(grid_tiles, "TILES", None)
    assert grid_tiles.shape(1, 1024, gpu) == (1, 128, 1)
    assert grid_tiles.shape(1, 8192, gpu) == (1, 132, 1)  # more chunks than SMs: round robin
    assert grid_tiles.shape(64, 256, gpu) == (16, 16, 4)
    assert grid_tiles.shape(256, 1024, gpu) == (32, 16, 8)
    # the measured choice (choose.MEASURED) decides where both are eligible
    monkeypatch.setattr(grid, "ENABLED", None)
    w1 = torch.zeros(3 * 1024, 1024)
    assert grid.eligible("gru", "rhythmic", w1, 1, gpu, 0.1, False)  # B = 1: 2.0 against 8.9 ms
    assert not grid.eligible("gru", "rhythmic", w1, 64, gpu, 0.1, False)  # per-row 10.3 against 17.6
    assert grid.eligible("gru", "rhythmic", w1, 64, gpu, 0.1, True)  # training: 26.4 against 53.6
    assert not grid.eligible("gru", "event", w1, 1, gpu), "the event gate's kernels are not timed yet"
    monkeypatch.setattr(grid, "ENABLED", True)
    w = torch.zeros(3 * 1024, 1024)
    assert grid.eligible("gru", "dense", w, 200, gpu)
    assert not grid.eligible("gru", "dense", w, 16 * 133 * 16, gpu), "more blocks than SMs"
    # what a native launch records for the benchmark
    from types import SimpleNamespace

    monkeypatch.setattr(grid, "LAUNCHED", {})
    grid._note("fwd", SimpleNamespace(n_regs=96, n_spills=0, metadata=SimpleNamespace(shared=4096, num_warps=8)), 64, 1)
    assert grid.LAUNCHED == {"fwd": {"programs": "64x1", "regs": 96, "spills": 0, "shared": 4096, "warps": 8}}
    # the backward's own tiles: three powers of two, at least 16 on tl.dot
    grid_tiles.check_bwd(_tiles(16, 16, 32, False, bwd=(32, 16, 4)))
    grid_tiles.check_bwd(_tiles(4, 8, 8, True, bwd=(8, 8, 2)))
    for bad in ((24, 16, 4), (32, 16), (32, 16, 0)):
        with pytest.raises(ValueError, match="three powers of two"):
            grid_tiles.check_bwd(_tiles(16, 16, 32, False, bwd=bad))
    with pytest.raises(ValueError, match="at least 16"):
        grid_tiles.check_bwd(_tiles(16, 16, 32, False, bwd=(8, 16, 4)))


@pytest.mark.skipif(DEVICE == "cuda", reason="the tiny interpreter run is for GPU-less machines")
def test_benchmark_tiny_runs_end_to_end():
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_triton.py"), "--quick", "--tiny"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "backend" in res.stdout and "triton" in res.stdout


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the message of a GPU-less machine")
def test_benchmark_needs_cuda_message():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_triton.py"), "--quick"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 2
    assert "CUDA" in res.stderr


AOT = ROOT / "tools" / "triton_aot.py"


def test_aot_compiles_for_sm90_without_a_gpu(tmp_path):
    """tools/triton_aot.py compiles the backend's real launches for an H100 / H200: every
    kernel builds, the grid kernels take their single-launch path (the spin barrier's
    atomics are in the machine code), a TF32 dot runs on tensor cores and an exact one does
    not, and the feed-forward LIF forward streams without spilling."""
    import json

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # compiled here, not taken from a cache
    out = tmp_path / "aot.json"
    res = subprocess.run([sys.executable, str(AOT), "--quick", "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["arch"] == 90
    rows = report["rows"]
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    kernels = {r["kernel"] for r in rows}
    assert {"_fwd_kernel", "_bwd_kernel", "_fwd_grid_kernel", "_fwd_event_grid_kernel", "_bwd_grid_kernel",
            "_lif_ff_fwd_kernel"} <= kernels
    for r in rows:
        assert r["regs"] > 0 and r["stg"] > 0, r
    grid_rows = [r for r in rows if "grid" in r["kernel"]]
    assert {r["meta"]["PREC"] for r in grid_rows} == {"ieee", "tf32"}
    assert {(r["meta"]["BB"], r["meta"]["FMA"]) for r in grid_rows} == {(16, False), (1, True)}
    for r in grid_rows:
        assert r["atom"] > 0, f"{r['case']}: not the single-launch barrier path"
        # the spin barrier compiles to a GPU-scope release (MEMBAR, then the arrival) and an
        # acquire (strong GPU load, then the L1 invalidated): the memory-model pattern
        assert r["sync"] == "rel+acq", r
        if r["meta"]["PREC"] == "tf32" and not r["meta"]["FMA"]:
            assert r["mma"] > 0, r
        else:
            assert r["mma"] == 0 and r["ffma"] > 0, r
    assert all(r["sync"] == "-" for r in rows if "grid" not in r["kernel"])
    # a split forward arrives at two barriers per step, every other grid kernel at one
    assert [r["case"] for r in grid_rows if r["meta"].get("SPLIT")] == ["grid gru rhythmic B=1 H=1024 split dw"]
    # ... whose backward forms dU itself (a load and a store of the dU tile per row tile)
    assert [r["case"] for r in grid_rows if r["meta"].get("DW")] == ["grid gru rhythmic B=1 H=1024 split dw"]
    assert all(r["atom"] == (2 if r["meta"].get("SPLIT") else 1) for r in grid_rows), grid_rows
    # the event gate's backward with a penalty on its record (the record's gradient read in phase 1)
    assert [r["case"] for r in grid_rows if r["meta"].get("DGREC")] == ["grid gru event B=64 H=256 record"]
    lif = next(r for r in rows if r["kernel"] == "_lif_ff_fwd_kernel")
    assert lif["local"] == 0 and lif["warps"] == 1, lif
    assert "sm_90" in res.stdout


@pytest.mark.parametrize("value", ["1", "true"])
def test_aot_refuses_the_interpreter(value):
    env = dict(os.environ, TRITON_INTERPRET=value)
    res = subprocess.run([sys.executable, str(AOT), "--quick"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 2
    assert "TRITON_INTERPRET" in res.stderr


def test_aot_sync_pattern_reads_instruction_order(load_tool):
    """The barrier detector of tools/triton_aot.py on hand-written SASS sequences: a fence
    must precede the arrival, and the L1 must be dropped after the strong load."""
    aot = load_tool("triton_aot")
    # as sm_90 has it (Triton 3.6 - 3.9): one thread arrives, one polls
    release = [("MEMBAR", ".ALL.GPU", "@P2"), ("ERRBAR", "", "@P2"), ("CGAERRBAR", "", "@P2"),
               ("REDG", ".E.ADD.STRONG.GPU", "@P2")]
    acquire = [("LDG", ".E.STRONG.GPU"), ("CCTL", ".IVALL")]
    assert aot.sync_pattern(release + [("BSYNC", ".B0"), ("BAR", ".SYNC")] + acquire) == "rel+acq"
    fence_elsewhere = [("MEMBAR", ".ALL.GPU", "@!P2")] + release[1:]
    assert aot.sync_pattern(fence_elsewhere) == "-", "the fence and the arrival on different threads"
    assert aot.sync_pattern(release) == "rel"
    assert aot.sync_pattern(acquire) == "acq"
    assert aot.sync_pattern([("REDG", ".E.ADD.STRONG.GPU"), ("MEMBAR", ".ALL.GPU")]) == "-", "fence after"
    assert aot.sync_pattern([("MEMBAR", ".ALL.CTA"), ("REDG", ".E.ADD.STRONG.GPU")]) == "-", "CTA scope"
    assert aot.sync_pattern([("CCTL", ".IVALL"), ("LDG", ".E.STRONG.GPU")]) == "-", "invalidate before"
    assert aot.sync_pattern([("LDG", ".E"), ("CCTL", ".IVALL")]) == "-", "weak load"
    far = [("MEMBAR", ".ALL.GPU")] + [("IADD3", ""), ("STG", ".E")] + [("REDG", ".E.ADD.STRONG.GPU")]
    assert aot.sync_pattern(far) == "-"


def test_measured_choice_picks_the_fastest_at_the_nearest_point():
    from su_neuro.kernels.triton import choose

    for (B, H, rate), times in choose.MEASURED.items():
        for col, training in ((0, False), (1, True)):
            valid = [(t[col], name) for name, t in zip(("torch", "rows", "grid"), times, strict=True)
                     if t[col] is not None]
            assert choose.fastest(B, H, rate, training) == min(valid)[1]
            kernels = [v for v in valid if v[1] != "torch"]
            assert choose.fastest(B, H, rate, training, ("rows", "grid")) == min(kernels)[1]
    # read off the table by hand (run 4): a wrong entry or a wrong column fails here
    assert choose.fastest(64, 1024, 0.1, False) == "rows"  # 10.27 against 17.55 and 65.54 ms
    assert choose.fastest(64, 1024, 0.1, True) == "grid"  # 26.36 against 53.59 and 221.50 ms
    assert choose.fastest(256, 1024, 1.0, False) == "torch"  # 68.86 against 91.01 and 123.62 ms
    assert choose.fastest(1, 256, 0.1, False) == "rows" and choose.fastest(1, 256, 0.1, True) == "grid"
    # between measured points: the nearest on log scales (rates split at 32 %), ties to the
    # larger batch, then width
    assert choose.fastest(2, 1000, 0.05, False) == choose.fastest(1, 1024, 0.1, False) == "grid"
    assert choose.fastest(48, 300, 0.2, False) == "rows"
    assert choose._nearest(64, 1024, 0.29) == (64, 1024, 0.1) and choose._nearest(64, 1024, 0.35) == (64, 1024, 1.0)
    assert choose._nearest(256, 4096, 0.1) == (256, 1024, 0.1)  # tied with (64, 4096): the larger batch
    assert choose.fastest(64, 5000, 0.9, True) == "torch"  # cuBLAS wins dense-ish wide steps
    assert choose.fastest(16, 4096, 1.0, True, ("rows", "grid")) == "grid"  # rows not timed there
    with pytest.raises(ValueError, match="none of"):
        choose.fastest(16, 4096, 1.0, True, ("rows",))



def test_kernel_choice():
    from su_neuro.kernels.triton import choose

    # a LIF without recurrent weights streams its forward (dense or event gate); a rhythmic
    # one keeps the generic row loop (its open lists)
    assert choose.kernels("lif", "dense", False, False) == "lif_feedforward"
    assert choose.kernels("lif", "event", False, True) == "lif_feedforward"
    assert choose.kernels("lif", "rhythmic", False, False) == "rows"
    assert choose.kernels("lif", "dense", True, False) == "rows"
    assert choose.kernels("gru", "rhythmic", True, True) == "grid"
    assert choose.kernels("rnn", "dense", True, False) == "rows"

def test_auto_on_cuda_follows_the_measured_table():
    from su_neuro import backends

    cuda = torch.device("cuda")
    pick = lambda **kw: backends.resolve("auto", cuda, "gru", kw.pop("gate", "rhythmic"), torch.float32, **kw).name  # noqa: E731
    assert pick(batch=64, hidden=1024, gate="dense") == "nn"  # cuDNN for a dense stack
    assert pick(batch=64, hidden=4096, rate=0.1, training=True) == "triton"  # 159.6 against 203.2 ms
    assert pick(batch=64, hidden=4096, rate=1.0, training=True) == "torch"  # 203.2 against 1072.7 ms
    assert pick(batch=1, hidden=8192, rate=0.1) == "triton"
    assert pick(batch=8, hidden=64, gate="event") == "triton" and pick(batch=8, hidden=1024, gate="event") == "torch"


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the message of a GPU-less machine")
def test_bench_gpu_needs_cuda_and_reads_its_labels(load_tool):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_gpu.py")],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr
    bench = load_tool("bench_gpu")
    from su_neuro.kernels.triton.grid_tiles import Tiles

    assert bench._parse("bb16 bh16 bk32 w4 s3 dot-tf32x3") == (Tiles(16, 16, 32, 4, 3, False), "tf32x3")
    assert bench._parse("bb1 bh8 bk2048 w8 s3 fma") == (Tiles(1, 8, 2048, 8, 3, True), None)
    for tiles, prec in [t for sweep in bench._sweeps() for t in sweep]:  # every swept label reads back
        assert bench._parse(bench._label(tiles, prec)) == (tiles, None if tiles.fma else prec)
    assert bench._parse("bb1 bh8 bk512 w8 s3 fma split") == (Tiles(1, 8, 512, 8, 3, True, True), None)
    assert bench._parse("bb16 bh16 bk64 w4 s2 dot-ieee split x2") == (Tiles(16, 16, 64, 4, 2, False, True, 2),
                                                                     "ieee")
    assert bench._parse("bb16 bh16 bk32 w4 s3 dot-tf32x3 split dw") == (
        Tiles(16, 16, 32, 4, 3, False, True, dw=True), "tf32x3")
    assert bench._parse("bb16 bh16 bk32 w4 s3 dot-tf32x3 split dw bwd32x128w8") == (
        Tiles(16, 16, 32, 4, 3, False, True, dw=True, bwd=(32, 128, 8)), "tf32x3")
    assert any(t.dw for sweep in bench._sweeps() for t, _ in sweep)
    assert any(t.bwd for sweep in bench._sweeps() for t, _ in sweep)
    rows = [{"config": "per-row", "fwd_ms": 1.0, "max_diff": 0.0},
            {"config": "a", "fwd_ms": 5.0, "max_diff": 0.0},
            {"config": "b", "fwd_ms": 2.0, "max_diff": 7e-4},  # TF32: not fp32-accurate
            {"config": "c", "fwd_ms": 3.0, "max_diff": 8e-7},
            {"config": "d", "error": "OutOfResources"}]
    assert bench._best(rows, "fwd_ms") == "c"
    # training: the gradients must be fp32-accurate too (a wrong backward is never picked)
    rows = [{"config": "a", "fwd_ms": 5.0, "fwd_bwd_ms": 9.0, "max_diff": 0.0, "grad_diff": 0.0},
            {"config": "c", "fwd_ms": 3.0, "fwd_bwd_ms": 6.0, "max_diff": 8e-7, "grad_diff": 3e-6},
            {"config": "e", "fwd_ms": 3.0, "fwd_bwd_ms": 4.0, "max_diff": 8e-7, "grad_diff": 0.2}]
    assert bench._best(rows, "fwd_bwd_ms") == "c" and bench._best(rows, "fwd_ms") in ("c", "e")


def test_bench_gpu_budget_cuts_the_sweeps_and_keeps_the_targets_time(tri, load_tool, monkeypatch):
    """--budget: each sweep gets its share of the time left before the targets' reserve, and
    runs a config only while one more fits (the first needs FIRST_ROW_S, each later one as
    long as the longest so far); the rest are recorded as skipped, and nothing skipped is
    picked. Where the first config (every other's reference) does not fit, nothing runs."""
    import math
    import time

    bench = load_tool("bench_gpu")
    assert bench.shares([1, 1, 2]) == [0.25, 1 / 3, 1.0]  # what a part leaves goes to the next
    now = time.monotonic()
    assert bench.Budget().until(0.5) == math.inf and bench.Budget(reserve=math.inf).until() == math.inf
    assert now + 2.5 < bench.Budget(10, reserve=4).until(0.5) <= time.monotonic() + 3
    assert bench.Budget(1, reserve=5).until() <= time.monotonic()  # no time before the reserve
    assert bench.Budget(10, start=now - 4).left() <= 6  # counted from the start given (the imports)
    configs = [(None, None), (bench._sweeps()[0][1][0], "tf32x3"), (None, None)]
    labels = ["per-row", bench._label(*configs[1]), "per-row"]
    # the first config does not fit: nothing is built (without CUDA, DEV is still "cuda" here,
    # so a tensor made for the sweep would fail)
    full = bench.Pace(now + 5, first=10)
    rows, opened = bench.sweep_grid("gru", 2, 8, 3, 0.5, configs, train=True, pace=full)
    assert opened is None and rows == [{"config": c, "skipped": "time budget"} for c in labels]
    assert bench.sweep_event([("gru", 1, 8, 3, False)], lambda: None, bench.Pace(now - 1)) == [
        {"cell": "gru", "B": 1, "H": 8, "T": 3, "skipped": "time budget"}]
    table = bench.auto_table(tiny=True, save=lambda: None, pace=bench.Pace(now - 1))
    assert table and all(r["skipped"] == "time budget" for r in table)
    clock = {"t": 0.0}
    pace = bench.Pace(until=100.0, first=10.0, clock=lambda: clock["t"])
    assert pace.fits() and pace.row(lambda: clock.update(t=20.0)) is None and pace.longest == 20.0
    assert pace.fits()  # 20 + 20 < 100
    clock["t"] = 85.0
    assert not pace.fits()  # 85 + 20 >= 100
    clock["t"] = 0.0
    assert not pace.fits()  # a part's rows are cut at one point: none after it runs
    assert not bench.Pace(until=100.0, first=10.0, clock=lambda: 95.0).fits()
    # each forward call moves the clock by 30 s: after the first row the next would need as
    # long again, past the deadline, so it is skipped, and every one after it
    clock = {"t": 0.0}
    pace = bench.Pace(until=50.0, first=10.0, clock=lambda: clock["t"])
    fwd0 = bench._call

    def slow_call(*args, **kw):
        fwd, fb, opened, grads = fwd0(*args, **kw)

        def timed_fwd():
            clock["t"] += 30.0
            return fwd()
        return timed_fwd, fb, opened, grads

    monkeypatch.setattr(bench, "DEV", DEVICE)
    monkeypatch.setattr(bench, "_call", slow_call)
    rows, opened = bench.sweep_grid("gru", 2, 8, 3, 0.5, configs, train=True, pace=pace)
    assert rows[0]["config"] == "per-row" and rows[0]["fwd_ms"] > 0 and rows[0]["max_diff"] == 0.0
    assert rows[1:] == [{"config": c, "skipped": "time budget"} for c in labels[1:]] and opened > 0
    assert pace.longest >= 30.0
    assert bench._best([{**rows[0], "config": "a"}, *rows[1:]], "fwd_ms") == "a"


@pytest.mark.skipif(DEVICE == "cuda", reason="runs the CPU smoke run (--tiny)")
def test_bench_gpu_with_no_time_for_the_sweeps_still_gives_every_target(tmp_path):
    """The whole run under a budget that leaves the sweeps nothing (each row recorded as
    skipped, nothing picked): every target is measured at the default tiles, the event sweep
    after the table is skipped, and the JSON says how long each part took."""
    import json

    out = tmp_path / "b.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_gpu.py"), "--tiny", "--budget", "30",
                          "--reserve", "29", "--json", str(out)], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    b64, b1, rnn = (data[k]["rows"] for k in ("sweep_gru_b64", "sweep_gru_b1", "sweep_rnn_b64"))
    assert all(r.get("skipped") == "time budget" for r in b64 + b1 + rnn + data["sweep_lif"])
    assert set(data["best"].values()) == {None}
    names = [t["target"] for t in data["targets"]]
    assert len(names) == 15 and sum("[grid default tiles]" in n for n in names) == 6, names
    assert all(c.get("skipped") == "time budget" for c in data["sweep_event"])
    assert set(data["part_seconds"]) == {"sweep_gru_b64", "sweep_gru_b1", "sweep_lif", "sweep_rnn_b64", "targets",
                                         "sweep_event"}
    assert "\n# targets on CPU" in res.stdout and res.stdout.count("MISSED") + res.stdout.count("met ") >= 30


@pytest.mark.skipif(DEVICE == "cuda", reason="runs the CPU smoke run (--tiny)")
def test_bench_gpu_term_before_the_table_saves_and_exits_124(tmp_path):
    """TERM (gpu_check.sh's time limit) ends the run with a whole JSON of what it measured and
    status 124 while the targets' table is incomplete (0 once it is complete: the event sweep
    after it is cut, checked by hand in the smoke run, too slow for the suite)."""
    import signal
    import time

    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    out = tmp_path / "b.json"
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "bench_gpu.py"), "--tiny", "--json", str(out)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while "sweep: gru B=" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 124, log.read_text()
    import json

    data = json.loads(out.read_text())
    assert data["stopped"] == "TERM (time limit)" and "copy_GBs" in data and "targets" not in data
    assert "the targets' table is incomplete; exit 124" in log.read_text()
    assert not (tmp_path / "b.json.partial").exists()


def test_bench_gpu_compile_only_runs_every_swept_config_once(load_tool, monkeypatch, capsys):
    """--compile-only (gpu_check.sh runs it beside the tests to fill Triton's cache): every
    config of the sweeps and of the event sweep runs once, forward and, in training sweeps,
    forward+backward, in the timed run's order; a config that fails is passed over."""
    bench = load_tool("bench_gpu")
    monkeypatch.setattr(bench, "DEV", DEVICE)
    calls, current = [], {}

    def fake_call(cell, B, H, T, rate, *, train, kind="rhythmic", **kw):
        case = (cell, B, H, T, train, kind)

        def fwd():
            calls.append((case, current.get("cfg"), "fwd"))
            if current.get("cfg") == bad:
                raise RuntimeError("out of resources")

        def fb():
            calls.append((case, current.get("cfg"), "fwd_bwd"))
        return fwd, (fb if train else None), 1.0, None

    def fake_grid(tiles, prec, fn):
        current["cfg"] = (tiles, prec)
        try:
            return fn()
        finally:
            current.pop("cfg")

    b64, b1, rnn = bench._sweeps()
    bad = b64[1]
    monkeypatch.setattr(bench, "_call", fake_call)
    monkeypatch.setattr(bench, "_with_grid", fake_grid)
    sizes = bench.SIZES
    n = bench.compile_only(sizes)
    B, H, T = sizes["target"]
    B1, H1, T1 = sizes["b1"]
    want = []
    for case, configs in [(("gru", B, H, T, True, "rhythmic"), b64), (("gru", B1, H1, T1, False, "rhythmic"), b1),
                          (("rnn", B, H, T, True, "rhythmic"), rnn)] + [
            ((c, b, h, t, tr, "event"), bench._event_configs(b, h)) for c, b, h, t, tr in sizes["event"]]:
        for cfg in configs:
            key = None if cfg[0] is None else cfg
            want.append((case, key, "fwd"))
            if case[4] and cfg != bad:  # training: the backward too, unless the forward failed
                want.append((case, key, "fwd_bwd"))
    assert calls == want and n == len(b64) + len(b1) + len(rnn) + sum(
        len(bench._event_configs(b, h)) for _, b, h, _, _ in sizes["event"])
    assert any(cfg[0] is None for cfg in bench._event_configs(1, 1024))  # the per-row kernels too
    failed = [line for line in capsys.readouterr().out.splitlines() if "RuntimeError" in line]
    assert len(failed) == 1 and f"[{bench._label(*bad)}]" in failed[0] and "out of resources" in failed[0]


def test_kernels_launch_with_the_inputs_device_current(tri, monkeypatch):
    """Triton launches on the current CUDA device: the forward and the backward make the
    input's device current first (a model on cuda:1 while cuda:0 is current)."""
    seen = []
    real = torch.cuda.device_of

    def spy(obj):
        seen.append(obj)
        return real(obj)

    monkeypatch.setattr(torch.cuda, "device_of", spy)
    B, H, T = 2, 8, 3
    p, lif, gate, G = _make("gru", "rhythmic", B, H, seed=1)
    xp = torch.randn(B, T, G, device=DEVICE)
    weights = [torch.randn(B, T, H, device=DEVICE), torch.randn(B, H, device=DEVICE), None]
    _run(tri.recurrence, "gru", T, p, lif, gate, xp, weights)
    assert len(seen) == 2 and all(t.shape == (B, T, G) and t.device == xp.device for t in seen)


def test_grid_kernels_refuse_a_sequence_that_overflows_their_barrier_counters(tri, grid_on, monkeypatch):
    from su_neuro.kernels.triton import grid

    monkeypatch.setattr(grid, "COUNTER_LIMIT", 64)
    B, H, T = 2, 16, 40
    p, lif, gate, G = _make("rnn", "dense", B, H, seed=2)
    xp = torch.randn(B, T, G, device=DEVICE)
    with pytest.raises(ValueError, match="a sequence of 40 steps overflows the grid kernels' barrier counters"):
        tri.recurrence("rnn", xp, p["h0"], None, p["w"], p["b"], gate.plan(0, T, device=xp.device), None, False)


def test_barrier_stress_logic_under_the_interpreter(tri):
    """tools/barrier_stress.py (run natively by gpu_check.sh before the tests): its counting,
    with one program per block, the most the interpreter can run at a barrier."""
    spec = importlib.util.spec_from_file_location("barrier_stress", ROOT / "tools" / "barrier_stress.py")
    stress = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stress)
    if DEVICE == "cuda":
        assert stress.main() == 0
        return
    assert stress.run(1, 3, 4, False) == ([0, 0], True)
    assert stress.run(1, 2, 3, True) == ([0, 0], True)


def test_a_refused_cooperative_grid_falls_back_to_the_per_row_kernels(tri, grid_on, monkeypatch):
    """CUDA refuses a cooperative grid larger than the device holds at once (other tiles than
    measured, MPS): the call runs on the per-row kernels, forward and backward, with one warning."""
    import warnings

    from su_neuro.kernels.triton import ops, rows

    grid, calls = grid_on

    tried = []

    def refused(*args, **kwargs):
        tried.append(1)
        raise RuntimeError("Triton Error [CUDA]: too many blocks in cooperative launch")

    monkeypatch.setattr(grid, "launch_fwd", refused)
    monkeypatch.setattr(grid, "launch_bwd", refused)
    monkeypatch.setattr(ops, "_REFUSED", False)
    per_row = count_launches(monkeypatch, rows)
    B, H, T = 3, 16, 6
    p, lif, gate, G = _make("gru", "rhythmic", B, H, seed=3)
    xp = torch.randn(B, T, G, device=DEVICE)
    weights = [torch.randn(B, T, H, device=DEVICE), torch.randn(B, H, device=DEVICE), None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _run(tri.recurrence, "gru", T, p, lif, gate, xp, weights)
        _run(tri.recurrence, "gru", T, p, lif, gate, xp, weights)
    refusals = [w for w in caught if "refused the multi-program kernels' grid" in str(w.message)]
    assert len(refusals) == 1 and per_row == {"fwd": 2, "bwd": 2} and len(tried) == 4
    from su_neuro.kernels import reference

    want = _run(reference.recurrence, "gru", T, p, lif, gate, xp, weights)
    assert_close("out", want[0], got[0], 2e-5)
    for name in want[4]:
        if want[4][name] is not None:
            assert_close(name, want[4][name], got[4][name], 1e-4)
    monkeypatch.setattr(grid, "launch_fwd", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("another error")))
    with pytest.raises(RuntimeError, match="another error"):
        _run(tri.recurrence, "gru", T, p, lif, gate, xp, weights)
