"""Shared test fixtures and helpers (`one_line_error`, `assert_close`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Triton decides at import whether its kernels are interpreted: set the default (the
# interpreter; tools/gpu_check.sh exports 0 on a GPU) before any test module can import
# triton, whatever order the modules are collected in
os.environ.setdefault("TRITON_INTERPRET", "1")

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SHARD_ENV = "SU_NEURO_SHARD"


def shard_of(value: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) as (i, n); a clear error for anything else."""
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise pytest.UsageError(f"{SHARD_ENV}={value!r}: expected 'i/n' with integers, e.g. '0/4'") from None
    if not 0 <= i < n:
        raise pytest.UsageError(f"{SHARD_ENV}={value!r}: needs 0 <= i < n")
    return i, n


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    """``SU_NEURO_SHARD=i/n`` keeps the selected tests i, i + n, i + 2n, ... (in collection
    order): tools/gpu_check.sh runs the shards side by side, so that the kernels they compile
    use several cores."""
    value = os.environ.get(SHARD_ENV)
    if not value:
        return
    i, n = shard_of(value)
    keep = items[i::n]
    config.hook.pytest_deselected(items=[item for k, item in enumerate(items) if k % n != i])
    items[:] = keep


@pytest.fixture
def load_tool():
    """Imports a script of tools/ as a module by name (``load_tool("repro_copy")``)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def run_cli(*args: str, cwd=None, env: dict | None = None, timeout: float = 300):
    """Runs the installed ``su-neuro`` command in a subprocess; returns the CompletedProcess."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("su-neuro")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "su_neuro.cli"]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli():
    """``cli("train", "--task", ...)`` runs the real command in a subprocess."""
    return run_cli


def one_line_error(proc, command: str) -> str:
    """The stderr of a failed command, checked to be one ``su-neuro CMD: error:`` line, exit 2."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"su-neuro {command}: error: "), err
    return lines[0]


def assert_close(name: str, ref, out, atol: float, rtol: float | None = None) -> None:
    """Asserts that tensor ``out`` equals ``ref`` within a tolerance; both are compared as
    float64 on the CPU, and ``name`` labels the failure.

    ``rtol`` None: ``max|ref - out| <= atol * max(1, max|ref|)`` (absolute below 1, relative above).
    ``rtol`` a number: ``max|ref - out| <= atol + rtol * max|ref|``.
    ``ref`` None (the reference has no such gradient): ``out`` must be None or all zero.
    """
    if ref is None:
        assert out is None or float(out.abs().max()) == 0.0, f"{name}: reference has no gradient"
        return
    assert out is not None, f"{name}: missing"
    ref, out = ref.detach().double().cpu(), out.detach().double().cpu()
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = (ref - out).abs().max().item() if ref.numel() else 0.0
    peak = ref.abs().max().item() if ref.numel() else 0.0
    bound = atol * max(1.0, peak) if rtol is None else atol + rtol * peak
    assert err <= bound, f"{name}: max abs error {err:.3e} > {bound:.3e} (max|ref| {peak:.3g})"


def count_launches(monkeypatch, module, calls: dict | None = None, on_call=None) -> dict:
    """Replaces ``module.launch_fwd`` and ``launch_bwd`` by spies that count their calls in
    ``calls`` (returned; a new dict by default) and then run the real launchers;
    ``on_call(name, result)`` sees each call's result."""
    calls = {"fwd": 0, "bwd": 0} if calls is None else calls
    for name in ("fwd", "bwd"):
        real = getattr(module, f"launch_{name}")

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            out = _real(*a, **k)
            if on_call is not None:
                on_call(_name, out)
            return out

        monkeypatch.setattr(module, f"launch_{name}", spy)
    return calls


def gemm_forced(monkeypatch) -> None:
    """Every RNN/GRU chunk of a rhythmic or dense gate on numba's GEMM path, whatever its size,
    cell or H (each least chunk of ``choose.use_gemm`` set to 1)."""
    from su_neuro.kernels.numba import choose

    for name in ("GEMM_MIN_BATCH", "GEMM_MIN_BATCH_DENSE_GRU", "GEMM_MIN_BATCH_DENSE_RNN"):
        monkeypatch.setattr(choose, name, 1)
