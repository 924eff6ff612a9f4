"""Padded batches with lengths: the same outputs, final states, records and every parameter's
gradient as each sequence run alone, on every backend (Triton under its interpreter on a CPU).

TRITON_INTERPRET is set before anything imports the Triton kernels (as in test_triton_backend).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import assert_close, count_launches  # noqa: E402

from su_neuro import SUGRU, SULIF, SURNN  # noqa: E402
from su_neuro.models import Seq2Seq, SequenceClassifier  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "numba", pytest.param("triton", marks=pytest.mark.triton)]
PAD_VALUE = 7.5  # garbage in the padded steps: it must not reach anything


def _backend_ready(backend):
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            pytest.skip("triton not installed")
        from su_neuro.kernels.triton import rows

        if DEVICE == "cpu" and type(rows._fwd_kernel).__name__ != "InterpretedFunction":
            pytest.skip("su_neuro.kernels.triton was imported before TRITON_INTERPRET=1 was set")


def _padded(xs, lengths, T):
    x = torch.full((len(xs), T, xs[0].shape[-1]), PAD_VALUE)
    for b, seq in enumerate(xs):
        x[b, : len(seq)] = seq
    return x


def _gate(kind, H):
    if kind == "rhythmic":
        return {"kind": "rhythmic", "init_rate": 0.35}
    if kind == "event":
        return {"kind": "event", "surrogate": "triangle"}
    return "dense"


CASES = [
    ("gru", "rhythmic", "last"),
    ("gru", "dense", "mean"),
    ("gru", "rhythmic", "last_mean"),
    ("rnn", "event", "last"),
    ("rnn", "rhythmic", "mean"),
    ("lif", "rhythmic", "spike_count"),
    ("lif", "dense", "mean"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,gate,readout", CASES)
def test_padded_batch_equals_each_sequence_alone(backend, cell, gate, readout):
    _backend_ready(backend)
    _check_padded_batch(backend, cell, gate, readout)


@pytest.mark.triton
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_padded_batch_on_the_multi_program_event_kernels(monkeypatch, cell):
    """The event gate on the multi-program kernels (kernels/triton/grid.py, on where
    ``grid.ENABLED = True``): a padded batch runs as segments of sub-batches, each a
    launch that starts with an exact refresh, and must still equal each sequence alone."""
    _backend_ready("triton")
    from su_neuro.kernels.triton import grid

    monkeypatch.setattr(grid, "ENABLED", True)
    calls = count_launches(monkeypatch, grid)
    _check_padded_batch("triton", cell, "event", "last")
    assert calls["fwd"] > 0 and calls["bwd"] > 0, calls


def _check_padded_batch(backend, cell, gate, readout):
    torch.manual_seed(1)
    F, H, T = 3, 9, 13
    lengths = [13, 4, 9, 1, 13, 4]
    kw = {"beta": 0.8, "recurrent": True, "threshold": 0.3} if cell == "lif" else {}
    model = SequenceClassifier(
        cell, F, H, 5, readout=readout, num_layers=2, gate=_gate(gate, H), backend=backend, **kw
    ).to(DEVICE)
    xs = [torch.randn(n, F) for n in lengths]
    x = _padded(xs, lengths, T).to(DEVICE)
    lens = torch.tensor(lengths)
    w = torch.randn(len(lengths), 5).to(DEVICE)  # a random gradient on each logit

    out, recs = model(x, lengths=lens, record=True)
    (out * w).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for b, seq in enumerate(xs):
        o, r = model(seq.unsqueeze(0).to(DEVICE), record=True)
        (o * w[b]).sum().backward()
        assert_close(f"logits[{b}]", o[0], out[b], 2e-5)
        for name, rec in r.items():
            n = lengths[b]
            assert_close(f"{name}.gate[{b}]", rec.gate[0], recs[name].gate[b, :n], 1e-6)
            assert_close(f"{name}.delta[{b}]", rec.delta[0], recs[name].delta[b, :n], 2e-5)
            assert float(recs[name].gate[b, n:].detach().abs().sum()) == 0.0
            assert float(recs[name].delta[b, n:].detach().abs().sum()) == 0.0
            assert torch.equal(recs[name].lengths.cpu(), lens)
    named = dict(model.named_parameters())
    assert set(grads) == {n for n, p in named.items() if p.grad is not None}
    for name, p in named.items():
        assert p.grad is not None, f"{name}: no gradient alone"
        assert_close(f"grad {name}", p.grad, grads[name], 5e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [SUGRU, SURNN, SULIF])
def test_layer_final_state_and_state_gradient(backend, cls):
    """The returned state is each row's state after its own last step; gradients reach h0."""
    _backend_ready(backend)
    torch.manual_seed(2)
    F, H, T = 4, 7, 12
    lengths = [5, 11, 2]  # no sequence reaches the last padded step
    layer = cls(F, H, num_layers=2, gate={"kind": "rhythmic", "init_rate": 0.4}, backend=backend).to(DEVICE)
    xs = [torch.randn(n, F) for n in lengths]
    x = _padded(xs, lengths, T).to(DEVICE)
    h0 = torch.randn(2, 3, H, device=DEVICE, requires_grad=True)
    state = h0 if cls is not SULIF else None
    out, st = layer(x, state, lengths=torch.tensor(lengths))
    gh = torch.randn_like(st.h)
    go = torch.randn_like(out)
    loss = (st.h * gh).sum() + (out * go).sum()
    loss.backward()
    assert st.t == T
    for b, seq in enumerate(xs):
        n = lengths[b]
        s0 = h0[:, b:b + 1].detach().clone().requires_grad_(True) if cls is not SULIF else None
        o, sb = layer(seq.unsqueeze(0).to(DEVICE), s0)
        assert_close(f"out[{b}]", o[0], out[b, :n], 2e-5)
        assert float(out[b, n:].detach().abs().sum()) == 0.0
        assert_close(f"h[{b}]", sb.h[:, 0], st.h[:, b], 2e-5)
        if cls is SULIF:
            assert_close(f"s[{b}]", sb.s[:, 0], st.s[:, b], 0)
        else:
            ((sb.h * gh[:, b:b + 1]).sum() + (o * go[b:b + 1, :n]).sum()).backward()
            assert_close(f"dh0[{b}]", s0.grad[:, 0], h0.grad[:, b], 5e-5)


def test_full_lengths_change_nothing():
    torch.manual_seed(3)
    model = SequenceClassifier("gru", 2, 6, 3, gate={"kind": "rhythmic", "init_rate": 0.3}, backend="torch")
    x = torch.randn(4, 10, 2)
    assert torch.equal(model(x), model(x, lengths=torch.full((4,), 10)))
    _, recs = model(x, record=True)
    assert recs["layers.0"].lengths is None


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("readout", ["last", "last_mean"])
def test_settle_steps_run_zero_inputs_after_each_sequence(backend, readout):
    """settle_steps S: the logits of x are those of the stack run on x followed by S zero steps,
    for a padded batch each sequence's own S steps right after its own end; gradients too."""
    torch.manual_seed(6)
    S, lengths = 3, [7, 4, 2]
    model = SequenceClassifier(
        "gru", 6, 8, 3, readout=readout, settle_steps=S, vocab_size=11, padding_idx=0,
        gate={"kind": "rhythmic", "init_rate": 0.4}, backend=backend,
    )
    plain = SequenceClassifier("gru", 6, 8, 3, readout=readout, vocab_size=11, padding_idx=0, backend=backend)
    plain.load_state_dict(model.state_dict())
    seqs = [torch.randint(1, 11, (n,)) for n in lengths]
    x = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    for b, seq in enumerate(seqs):
        x[b, : len(seq)] = seq
    x[2, 2:] = 5  # garbage after a sequence must not reach its settle steps
    logits, recs = model(x, record=True, lengths=torch.tensor(lengths))
    rec = recs["layers.0"]
    assert rec.lengths.tolist() == [n + S for n in lengths]
    assert rec.gate.shape[1] == max(lengths) + S
    logits.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    for b, seq in enumerate(seqs):
        model.zero_grad()
        emb = model.embed(seq.unsqueeze(0))
        out, _ = model.rnn(torch.cat([emb, emb.new_zeros(1, S, emb.shape[-1])], dim=1))
        feat = out[:, -1] if readout == "last" else torch.cat([out[:, -1], out.mean(1)], dim=-1)
        by_hand = model.head(feat)
        assert_close(f"logits[{b}]", by_hand[0], logits[b], 2e-5)
        alone = model(seq.unsqueeze(0))  # without lengths: the same S steps after its end
        assert_close(f"alone[{b}]", alone[0], logits[b], 2e-5)
        alone.square().sum().backward()
        grads = {k: g - p.grad for (k, g), p in zip(grads.items(), model.parameters(), strict=True)}
    for k, g in grads.items():  # the batch's gradient is the sum of the sequences' gradients
        assert float(g.abs().max()) < 5e-5, k
    assert not torch.allclose(plain(x, lengths=torch.tensor(lengths)), logits)
    inputs, lens = model.stack_inputs(x, torch.tensor(lengths))
    assert inputs.shape == (3, max(lengths) + S, 6) and lens.tolist() == [n + S for n in lengths]
    assert float(inputs[2, 2:].detach().abs().sum()) == 0.0


def test_bad_settle_steps_are_refused():
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="settle_steps must be an integer >= 0"):
            SequenceClassifier("gru", 4, 4, 2, settle_steps=bad)


def test_seq2seq_and_tokens_with_lengths():
    torch.manual_seed(4)
    model = Seq2Seq("gru", 5, 8, 4, vocab_size=12, padding_idx=0, backend="numba")
    seqs = [torch.randint(1, 12, (n,)) for n in (6, 3)]
    x = torch.zeros(2, 6, dtype=torch.long)
    for b, s in enumerate(seqs):
        x[b, : len(s)] = s
    out = model(x, lengths=torch.tensor([6, 3]))
    alone = model(seqs[1].unsqueeze(0))
    assert_close("seq2seq tokens", alone[0], out[1, :3], 2e-5)


def test_bad_lengths_are_refused():
    layer = SUGRU(2, 4, backend="torch")
    x = torch.randn(3, 5, 2)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(3,\)"):
        layer(x, lengths=torch.tensor([5, 5]))
    with pytest.raises(ValueError, match=r"\[1, T\] = \[1, 5\]"):
        layer(x, lengths=torch.tensor([5, 6, 1]))
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        layer(x, lengths=torch.tensor([5, 0, 1]))
    with pytest.raises(TypeError, match="integers"):
        layer(x, lengths=torch.tensor([5.0, 2.0, 1.0]))
    model = SequenceClassifier("gru", 4, 4, 2, vocab_size=10, backend="torch")
    with pytest.raises(ValueError, match="vocab_size = 10"):
        model(torch.tensor([[1, 10]]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.randint(0, 9, (1, 3, 4)))
    with pytest.raises(ValueError, match="padding_idx"):
        SequenceClassifier("gru", 4, 4, 2, vocab_size=10, padding_idx=10)
    with pytest.raises(ValueError, match="need vocab_size"):
        SequenceClassifier("gru", 4, 4, 2, embed_dim=8)


# ---------------------------------------------------------------- numba: one call per batch
NATIVE = [  # cell, gate, F, projection the rules pick (FUSED_* in kernels/numba/choose.py)
    ("gru", "rhythmic", 2, "loops"),
    ("gru", "rhythmic", 40, "gemm"),
    ("gru", "dense", 3, "gemm"),
    ("gru", "dense", 300, "unfused"),
    ("rnn", "rhythmic", 300, "unfused"),
    ("rnn", "dense", 5, "gemm"),
]


ONE_SAMPLE = [  # the kernels that run one sample at a time (event, lif): any batch, no projection
    ("gru", "event", 3, None),
    ("rnn", "event", 4, None),
    ("lif", "rhythmic", 3, None),
    ("lif", "dense", 2, None),
    ("lif", "event", 3, None),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell,gate,F,projection", NATIVE + ONE_SAMPLE)
def test_numba_runs_a_padded_batch_in_one_call(monkeypatch, cell, gate, F, projection, threads):
    """Numba takes the lengths itself (``ops.ragged``): no segments, one kernel call per
    sub-layer. The GEMM path reorders the samples longest first within each thread chunk;
    the event and LIF kernels run each sample for its own length. Outputs, final states
    (LIF: membrane and spikes), records and every gradient (weights, gate, x, h0) equal the
    torch reference, which runs the batch segment by segment. Lengths unsorted, repeated,
    1 and T. (Numba's event-gate record carries no gradient, so the gate term of the loss is
    left out there.)"""
    import numba

    from su_neuro.kernels.numba import choose, ops
    from su_neuro.layers import SULayer

    if projection is not None:
        assert choose.train_projection(gate, F) == projection
    monkeypatch.setattr(SULayer, "_forward_ragged", _no_segments_for_numba(SULayer._forward_ragged))
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        B, T, H = 19, 17, 10
        lengths = torch.tensor([3, 17, 9, 1, 17, 9, 12, 5, 16, 2, 9, 14, 6, 11, 9, 8, 13, 4, 10])
        assert ops.ragged(cell, gate, B, H)
        torch.manual_seed(7)
        if cell == "lif":
            layer = SULIF(F, H, num_layers=2, gate=_gate(gate, H), backend="torch", beta=0.8, recurrent=True,
                          threshold=0.3)  # fmt: skip
        else:
            layer = (SUGRU if cell == "gru" else SURNN)(F, H, num_layers=2, gate=_gate(gate, H), backend="torch")
        xs = [torch.randn(int(n), F) for n in lengths]
        x0 = _padded(xs, lengths, T)
        h00 = torch.randn(2, B, H)
        res = {}
        for backend in ("torch", "numba"):
            layer.backend = backend
            layer.zero_grad()
            x, h0 = x0.clone().requires_grad_(), h00.clone().requires_grad_()
            out, st, recs = layer(x, h0 if cell != "lif" else None, record=True, lengths=lengths)
            w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
            gate_w = torch.linspace(0.5, -0.5, recs[0].gate.numel()).reshape(recs[0].gate.shape)
            loss = (out * w).sum() + (st.h**2).sum()
            if gate != "event":
                loss = loss + sum((r.gate * gate_w).sum() for r in recs)
            loss.backward()
            res[backend] = {"out": out, "h": st.h, "grad x": x.grad,
                            **({"grad h0": h0.grad} if cell != "lif" else {"s": st.s}),
                            **{f"gate {k}": r.gate for k, r in enumerate(recs)},
                            **{f"delta {k}": r.delta for k, r in enumerate(recs)},
                            **{f"grad {n}": p.grad for n, p in layer.named_parameters()}}  # fmt: skip
            assert all(torch.equal(r.lengths.cpu(), lengths) for r in recs)
        ref, got = res["torch"], res["numba"]
        assert set(ref) == set(got)
        for name in ref:
            assert_close(name, ref[name], got[name], 1e-4 if name.startswith("grad") else 2e-5)
        assert float(got["out"].detach()[3, 1:].abs().sum()) == 0.0  # length 1: zero after step 0
    finally:
        numba.set_num_threads(old)


def _no_segments_for_numba(segments):
    def guarded(self, *args, **kwargs):
        assert self.backend != "numba", "numba ran the padded batch in segments"
        return segments(self, *args, **kwargs)

    return guarded


@pytest.mark.parametrize("B,chunks", [(19, 1), (19, 2), (16, 3), (9, 4)])
def test_ragged_order_deals_lengths_to_chunks(B, chunks):
    """``ops._ragged_order``: a permutation; in each thread chunk (``_common.chunk`` bounds)
    the samples come longest first; dealt round robin, chunk c's longest sample is the
    c-th longest of the batch, so the chunks carry similar work."""
    import numpy as np

    from su_neuro.kernels.numba import ops

    lens = torch.randint(1, 50, (B,), generator=torch.Generator().manual_seed(B * chunks)).numpy()
    order = ops._ragged_order(lens, chunks)
    assert sorted(order.tolist()) == list(range(B))
    srt = np.sort(lens)[::-1]
    for c in range(chunks):
        lo, hi = (c * B) // chunks, ((c + 1) * B) // chunks
        part = lens[order[lo:hi]].tolist()
        assert part == sorted(part, reverse=True), (c, part)
        assert part[0] == srt[c], (c, part)


@pytest.mark.parametrize("cell,gate,readout", [("gru", "rhythmic", "last"), ("gru", "dense", "mean"),
                                               ("lif", "rhythmic", "spike_count"), ("rnn", "event", "mean")])
def test_lengths_benchmark_runs(load_tool, cell, gate, readout):
    """tools/bench_lengths.py at a tiny size: each order x mode timed, the ratios and the
    padding statistics consistent; numba's ``ragged`` hook and the thread counts restored."""
    import math

    import numba

    from su_neuro.kernels.numba import ops

    before = (ops.ragged, torch.get_num_threads(), numba.get_num_threads())
    mod = load_tool("bench_lengths")
    res = mod.main(["--task", "listops_short", "--n", "96", "--batches", "1", "--threads", "1", "--readout", readout,
                    "--cell", cell, "--gate", gate])
    assert set(res) == {f"{o}, {m}" for o in ("random", "bucketed") for m in mod.MODES}
    for key, r in res.items():
        assert math.isfinite(r["ms"]) and r["ms"] > 0, key
        assert 0 < r["valid"] <= 1 and r["distinct"] >= 1, key
    for o in ("random", "bucketed"):
        assert res[f"{o}, no lengths"]["ratio"] == 1.0
    assert res["bucketed, one call"]["valid"] >= res["random, one call"]["valid"]
    assert (ops.ragged, torch.get_num_threads(), numba.get_num_threads()) == before
