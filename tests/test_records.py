"""Which fields of a StepRecord carry a gradient, the same on every backend.

docs/core.md states the rule: the rhythmic and event gates' records (their surrogate
gradients: a rate penalty trains the gate on every backend), RNN / GRU ``delta`` (the outputs'
differences) and LIF ``spike`` (the output) are differentiable everywhere; LIF ``delta`` (the
membrane) is differentiable on the torch reference and detached on the fused backends. A
detached field must say so (``requires_grad`` False): a field that claims a gradient must
give the reference's, never a silent zero.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import assert_close

from su_neuro import SUGRU, SULIF, SURNN

CELLS = {"rnn": SURNN, "gru": SUGRU, "lif": SULIF}
GATES = ("rhythmic", "event", "dense")
BACKENDS = [
    pytest.param("numba", marks=pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                                   reason="numba not installed")),
    pytest.param("triton", marks=[pytest.mark.triton,
                                  pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                                     reason="triton not installed")]),
]


def differentiable(field: str, cell: str, gate: str, backend: str) -> bool:
    """The documented rule (docs/core.md, "records")."""
    if field == "gate":
        return gate != "dense"
    if field == "delta":
        return cell != "lif" or backend == "torch"
    return True  # spike: the LIF's output


def _layer(cell: str, gate: str):
    torch.manual_seed(3)
    kw = {"recurrent": True, "threshold": 0.5} if cell == "lif" else {}
    spec = {"kind": "rhythmic", "init_rate": 0.5} if gate == "rhythmic" else gate
    return CELLS[cell](4, 6, gate=spec, **kw)


def _grads(layer, backend: str, x: torch.Tensor, lengths=None):
    """Each record field's gradient with respect to the input and every parameter, as one
    flat vector (None where the field is detached)."""
    layer.backend = backend
    x = x.clone().requires_grad_()
    _, _, recs = layer(x, record=True, lengths=lengths)
    rec = recs[0]
    result = {}
    for k, field in enumerate(("gate", "delta", "spike")):
        value = getattr(rec, field)
        if value is None:
            continue
        if not value.requires_grad:
            result[field] = None
            continue
        weight = torch.randn(value.shape, generator=torch.Generator().manual_seed(5 + k)).to(value.device)
        leaves = [x, *layer.parameters()]
        grads = torch.autograd.grad((value * weight).sum(), leaves, retain_graph=True, allow_unused=True)
        result[field] = torch.cat([(torch.zeros_like(q) if g is None else g).flatten()
                                   for q, g in zip(leaves, grads, strict=True)])
    return result


def _device(backend: str) -> str:
    """Where ``backend`` runs the test: CUDA for triton where there is one (tools/gpu_check.sh),
    else the CPU (triton under its interpreter)."""
    if backend == "triton":
        from su_neuro.kernels.triton import rows

        if not torch.cuda.is_available() and type(rows._fwd_kernel).__name__ != "InterpretedFunction":
            pytest.skip("su_neuro.kernels.triton was imported before TRITON_INTERPRET=1 was set")
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


CASES = [(cell, gate, None) for cell in CELLS for gate in GATES]
CASES += [(cell, "event", (5, 3)) for cell in CELLS]  # a padded batch: numba's ragged kernels


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cell", "gate", "lengths"), CASES,
                         ids=[f"{c}-{g}" + ("-padded" if n else "") for c, g, n in CASES])
def test_record_gradients_follow_the_rule(cell, gate, lengths, backend):
    device = _device(backend)
    layer = _layer(cell, gate).to(device)
    x = (torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(7)) * 2.0).to(device)
    if lengths is not None:
        lengths = torch.tensor(lengths)
    ref = _grads(layer, "torch", x, lengths)
    got = _grads(layer, backend, x, lengths)
    assert set(ref) == set(got)
    for field in ref:
        assert (ref[field] is not None) == differentiable(field, cell, gate, "torch"), field
        if not differentiable(field, cell, gate, backend):
            assert got[field] is None, f"{backend} {cell}/{gate}: rec.{field} claims a gradient it does not have"
            continue
        assert got[field] is not None, f"{backend} {cell}/{gate}: rec.{field} is detached"
        assert_close(f"{backend} {cell}/{gate} d rec.{field} / d(x, parameters)", ref[field], got[field], 1e-4)
        if field != "gate" or gate != "dense":
            assert ref[field].abs().sum() > 0, f"rec.{field}: the test needs a non-zero gradient"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["gru", "lif"])
def test_an_edited_gate_record_never_changes_the_gradients(cell, backend):
    # rec.gate of the event gate is the kernel's own output: a backend that reads it again in
    # its backward must refuse an in-place edit (autograd's version check), one that does not
    # must give the unedited gradients
    device = _device(backend)
    layer = _layer(cell, "event").to(device)
    layer.backend = backend
    x = (torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(7)) * 2.0).to(device)

    def grads(edit: bool):
        layer.zero_grad(set_to_none=True)
        out, _, recs = layer(x, record=True)
        if edit:
            with torch.no_grad():
                recs[0].gate.zero_()
        out.sum().backward()
        return torch.cat([q.grad.flatten() for q in layer.parameters() if q.grad is not None])

    want = grads(False)
    try:
        got = grads(True)
    except RuntimeError as err:
        assert "inplace" in str(err)
        return
    assert torch.equal(want, got)
