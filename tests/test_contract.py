"""The contract between the library and its backends (kernels/contract.py)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch

from su_neuro import backends
from su_neuro.kernels import contract
from su_neuro.kernels.contract import GateInput, make_record

KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def _imports(path: Path):
    """(line, absolute module name) of every import in a kernels/ file, relative ones resolved
    against the installed package name su_neuro.kernels.<...>."""
    package = ["su_neuro", "kernels", *path.parent.relative_to(KERNELS).parts]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield node.lineno, name


def test_kernels_import_only_the_contract_and_the_reference_from_the_library():
    bad = []
    for path in sorted(KERNELS.rglob("*.py")):
        for line, name in _imports(path):
            inside = name == "su_neuro" or name.startswith("su_neuro.")
            if inside and not name.startswith("su_neuro.kernels"):
                bad.append(f"{path.relative_to(KERNELS.parent)}:{line} imports {name}")
    assert not bad, "kernels/ depends on the library: " + "; ".join(bad)


def test_one_code_table():
    assert contract.GATE_CODES == {"dense": contract.DENSE, "rhythmic": contract.RHYTHMIC, "event": contract.EVENT}
    assert contract.CELL_CODES == {"rnn": contract.RNN, "gru": contract.GRU, "lif": contract.LIF}
    assert sorted(contract.GATE_CODES.values()) == [0, 1, 2] and sorted(contract.CELL_CODES.values()) == [0, 1, 2]
    from su_neuro.surrogate import SURROGATES, get_surrogate

    assert set(contract.SURROGATE_CODES) == set(SURROGATES)
    assert len(set(contract.SURROGATE_CODES.values())) == len(SURROGATES)
    assert all(get_surrogate(n).code == contract.SURROGATE_CODES[n] for n in SURROGATES)


@pytest.mark.parametrize("name", ["torch", "numba", "nn", "triton"])
def test_every_registered_backend_meets_the_protocol(name):
    module = backends._REGISTRY[name][0]
    if importlib.util.find_spec(backends._REGISTRY[name][1] or "torch") is None:
        pytest.skip(f"{name}'s package is not installed")
    impl = backends.get_impl(name)
    assert impl.name == name
    assert impl.recurrence is not None or impl.stack is not None, module
    for hook in contract.HOOKS:
        assert getattr(impl, hook) is getattr(importlib.import_module(module), hook, None)


def test_a_module_without_recurrence_or_stack_is_refused():
    import types

    with pytest.raises(TypeError, match="neither recurrence"):
        contract.BackendImpl.of("x", types.ModuleType("nothing_here"))


def test_make_record_per_gate():
    B, T, H = 2, 4, 3
    h0 = torch.randn(B, H)
    states = torch.randn(B, T, H)
    rows = (torch.rand(T, H) > 0.5).float().requires_grad_()
    rec = make_record(GateInput("rhythmic", rows), h0, states)
    assert rec.gate.shape == (B, T, H) and torch.equal(rec.gate[1], rows.detach())
    rec.gate.sum().backward()
    assert torch.equal(rows.grad, torch.full((T, H), float(B)))  # differentiable to the plan
    assert torch.equal(rec.delta[:, 0], states[:, 0] - h0)
    assert torch.equal(rec.delta[:, 1:], states[:, 1:] - states[:, :-1])
    assert rec.spike is None and rec.lengths is None
    dense = make_record(GateInput("dense"), h0, states, spikes=states > 0)
    assert torch.equal(dense.gate, torch.ones(B, T, H)) and torch.equal(dense.spike, states > 0)
    opened = (torch.rand(B, T, H) > 0.5).float()
    assert make_record(GateInput("event", torch.zeros(H)), h0, states, opened).gate is opened
    with pytest.raises(ValueError, match="opened"):
        make_record(GateInput("event", torch.zeros(H)), h0, states)
