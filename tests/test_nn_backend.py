"""backend="nn": a dense SURNN / SUGRU stack runs the op behind torch.nn.RNN / torch.nn.GRU.

It must give the torch module's outputs, final states and every gradient (the same op on the
same weights: equal to the last bit on a CPU), with several layers, no bias, dropout drawn as
torch.nn draws it, records and chunked state; refuse selective gates and other cells; and
``auto`` must choose it only where the measured rule says so.
"""

from __future__ import annotations

import pytest
import torch

import su_neuro
from su_neuro import SUGRU, SURNN, SUState, backends
from su_neuro.backends import BackendUnavailableError
from su_neuro.kernels import torch_rnn

PAIRS = [(SUGRU, torch.nn.GRU), (SURNN, torch.nn.RNN)]


def _resolved(*args, **kw) -> str:
    """The name of the backend ``backends.resolve`` picks."""
    return backends.resolve(*args, **kw).name


def _grads(out, hT, params, g, gh):
    return torch.autograd.grad((out * g).sum() + (hT * gh).sum(), params)


@pytest.mark.parametrize("cls,module", PAIRS)
@pytest.mark.parametrize("layers,bias,T", [(1, True, 1), (2, False, 15), (3, True, 63)])
def test_nn_backend_equals_torch_module(cls, module, layers, bias, T):
    torch.manual_seed(layers * 10 + T)
    ref = module(5, 13, num_layers=layers, bias=bias, batch_first=True).double()
    su = cls.from_torch(ref, gate="dense", backend="nn")
    x = torch.randn(3, T, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, 3, 13, dtype=torch.float64, requires_grad=True)
    y_ref, h_ref = ref(x, h0)
    y, state = su(x, h0)
    assert torch.equal(y, y_ref) and torch.equal(state.h, h_ref)
    assert state.t == T
    g, gh = torch.randn_like(y), torch.randn_like(h_ref)
    want = _grads(y_ref, h_ref, [x, h0, *ref.parameters()], g, gh)
    got = _grads(y, state.h, [x, h0, *su.parameters()], g, gh)
    names = ["x", "h0", *(n for n, _ in ref.named_parameters())]
    for name, a, b in zip(names, want, got, strict=True):
        assert torch.equal(a, b), f"{name}: max |d| {(a - b).abs().max().item():.3e}"


@pytest.mark.parametrize("cls,module", PAIRS)
def test_nn_backend_dropout_draws_as_torch_nn(cls, module):
    ref = module(4, 8, num_layers=3, dropout=0.4, batch_first=True)
    su = cls.from_torch(ref, gate="dense", backend="nn")
    x = torch.randn(2, 6, 4)
    torch.manual_seed(3)
    y_ref, _ = ref(x)
    torch.manual_seed(3)
    y, _ = su(x)
    assert torch.equal(y, y_ref)
    torch.manual_seed(4)
    y_other, _ = su(x)
    assert not torch.equal(y_other, y)  # dropout is on in training
    su.eval(), ref.eval()
    assert torch.equal(su(x)[0], ref(x)[0])


@pytest.mark.parametrize("cls,module", PAIRS)
def test_nn_backend_records_and_chunks_match_the_reference(cls, module):
    torch.manual_seed(1)
    ref = module(3, 9, num_layers=2, batch_first=True)
    su = cls.from_torch(ref, gate="dense", backend="nn")
    spec = cls.from_torch(ref, gate="dense", backend="torch")
    x = torch.randn(2, 20, 3)
    y, state, recs = su(x, record=True)
    y_spec, state_spec, recs_spec = spec(x, record=True)
    torch.testing.assert_close(y, y_spec, atol=1e-6, rtol=1e-5)
    assert len(recs) == 2
    for rec, rec_spec in zip(recs, recs_spec, strict=True):
        assert torch.equal(rec.gate, rec_spec.gate)  # all ones
        torch.testing.assert_close(rec.delta, rec_spec.delta, atol=1e-6, rtol=1e-5)
        assert rec.spike is None
    y1, s1 = su(x[:, :7])
    y2, s2 = su(x[:, 7:], s1)
    assert s2.t == 20
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s2.h, state.h, atol=1e-6, rtol=1e-5)
    assert isinstance(s2, SUState) and s2.s is None


def test_nn_backend_refuses_what_it_cannot_run():
    with pytest.raises(BackendUnavailableError, match="dense stacks only.*'rhythmic'"):
        SUGRU(2, 4, gate="rhythmic", backend="nn")(torch.randn(1, 3, 2))
    with pytest.raises(BackendUnavailableError, match="RNN and GRU stacks only, not cell 'lif'"):
        su_neuro.SULIF(2, 4, gate="dense", backend="nn")(torch.randn(1, 3, 2))
    mixed = SUGRU(2, 4, num_layers=2, gate=[su_neuro.DenseGate(4), su_neuro.RhythmicGate(4)], backend="nn")
    with pytest.raises(BackendUnavailableError, match="dense stacks only.*'rhythmic'"):
        mixed(torch.randn(1, 3, 2))
    assert torch_rnn.unsupported("gru", "dense", torch.int32) is not None


def test_mixed_gate_stacks_still_run_on_the_per_layer_backends():
    # a stack mixing gate kinds runs a sub-layer at a time: every per-layer backend takes it
    torch.manual_seed(0)
    gates = [su_neuro.DenseGate(6), su_neuro.RhythmicGate(6, init_rate=0.5)]
    x = torch.randn(2, 9, 3)
    ref = SUGRU(3, 6, num_layers=2, gate=gates, backend="torch")
    out_ref, _ = ref(x)
    for name in ("numba", "auto"):
        layer = SUGRU(3, 6, num_layers=2, gate=[su_neuro.DenseGate(6), su_neuro.RhythmicGate(6, init_rate=0.5)],
                      backend=name)
        layer.load_state_dict(ref.state_dict())
        torch.testing.assert_close(layer(x)[0], out_ref, atol=1e-5, rtol=1e-5)
    cpu = torch.device("cpu")
    assert _resolved("numba", cpu, "gru", ("dense", "rhythmic"), torch.float32, batch=2, hidden=6) == "numba"
    assert _resolved("auto", cpu, "gru", ("dense", "rhythmic"), torch.float32, batch=2, hidden=6) == "numba"


@pytest.mark.parametrize("cls,module", PAIRS)
def test_nn_backend_differentiates_in_eval_mode(cls, module):
    # cuDNN keeps what its backward needs only in its training mode: a module in eval mode
    # that is differentiated (attribution, fine-tuning with frozen dropout) must still work,
    # without dropout, as torch.nn's module in eval mode
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(2)
    ref = module(4, 8, num_layers=2, dropout=0.5, batch_first=True).to(device).eval()
    su = cls.from_torch(ref, gate="dense", backend="nn").eval()
    x = torch.randn(3, 7, 4, device=device, requires_grad=True)
    y_ref, y = ref(x)[0], su(x)[0]
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-5)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's weight buffer exists on CUDA only")
def test_nn_backend_flattens_parameters_after_a_move_not_in_forward():
    ref = torch.nn.GRU(5, 16, num_layers=2, batch_first=True)
    su = SUGRU.from_torch(ref, gate="dense", backend="nn").cuda()
    storages = lambda m: {p.untyped_storage().data_ptr() for n, p in m.named_parameters() if "gates" not in n}  # noqa: E731
    assert len(storages(su)) == 1, "one buffer after the move"
    before = [p.data_ptr() for p in su.parameters()]
    x = torch.randn(2, 6, 5, device="cuda")
    opt = torch.optim.SGD(su.parameters(), lr=0.1)
    su(x)[0].sum().backward()
    opt.step()
    assert [p.data_ptr() for p in su.parameters()] == before, "forward and the step keep the storage"
    state = su.state_dict()
    again = SUGRU(5, 16, num_layers=2, gate="dense", backend="nn").cuda()
    again.load_state_dict(state)
    torch.testing.assert_close(again(x)[0], su(x)[0])
    assert len(storages(su.double())) == 1, "a dtype change flattens again"


def test_auto_picks_nn_only_where_measured():
    cpu = torch.device("cpu")
    cuda = torch.device("cuda")
    assert backends._auto_pays(backends.get_impl("nn"), "gru", 1, 8, device=cuda)  # CUDA: cuDNN for every dense stack
    assert _resolved("auto", cuda, "rnn", "dense", torch.float32, batch=64, hidden=1024) == "nn"
    assert _resolved("auto", cuda, "gru", ("dense", "rhythmic"), torch.float32, batch=64, hidden=1024) != "nn"
    # CPU: Numba where its rule says it was measured faster, nn for the dense stacks it does not take
    assert _resolved("auto", cpu, "gru", "dense", torch.float32, batch=1, hidden=32) == "numba"
    assert _resolved("auto", cpu, "gru", "dense", torch.float32, batch=32, hidden=512) == "nn"
    assert _resolved("auto", cpu, "gru", "dense", torch.float64, batch=1, hidden=32) == "nn"
    assert _resolved("auto", cpu, "gru", "rhythmic", torch.float32, batch=32, hidden=512) == "numba"
    assert _resolved("auto", cpu, "gru", "event", torch.float32, batch=32, hidden=512, training=True) == "torch"
