"""Files of the repository that tools read: .gitignore covers what the commands write."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder", ["su_neuro_demo", "su_neuro_out", "runs"])
def test_default_output_folders_are_ignored_by_git(folder):
    """`su-neuro demo`, `analyze` and `train` write these folders into the working directory."""
    patterns = {line.strip() for line in (REPO / ".gitignore").read_text().splitlines()}
    assert f"{folder}/" in patterns or folder in patterns, f"{folder}/ is missing from .gitignore"



def _collect(shard: str | None):
    """``pytest --collect-only`` of this module in a subprocess, with SU_NEURO_SHARD=shard."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SU_NEURO_SHARD"}
    if shard is not None:
        env["SU_NEURO_SHARD"] = shard
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           __file__], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _ids(proc) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_shards_split_the_selected_tests_without_overlap():
    """tools/gpu_check.sh runs SU_NEURO_SHARD=i/n shards side by side: together they must
    collect every test once, each about 1/n of them."""
    every = _ids(_collect(None))
    assert len(every) >= 4, every
    parts = [_ids(_collect(f"{i}/3")) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(every)
    assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("value, why", [("x", "expected 'i/n'"), ("3/3", "needs 0 <= i < n"),
                                        ("-1/2", "needs 0 <= i < n")])
def test_a_malformed_shard_is_refused_by_name(value, why):
    proc = _collect(value)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"SU_NEURO_SHARD={value!r}" in text and why in text, text


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="on a CUDA machine the script would run the whole GPU check")
def test_gpu_check_keeps_its_output_within_what_the_device_tool_returns(tmp_path):
    """tools/gpu_check.sh on a machine without CUDA (the tests skip, the benchmark exits 2):
    it still writes each part's output, and at most 8 plainly named files (the device tool
    brings back no more than 8 files from $OUT, named in letters, digits, '.', '_', '-')."""
    import os
    import re
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("SU_NEURO_SHARD", "OUT")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               GRID_SHARDS="2", TEST_SHARDS="0")  # the other tests' shards are the same mechanics
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_gpu.txt", "bench_warmup.txt", "device.txt", "test_triton.txt", "test_triton_grid.txt",
                     "tests_summary.txt"], (files, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    summary = (out / "tests_summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["test_triton_grid.0", "test_triton_grid.1", "bench warm-up"]
    assert all(": exit 0 (" in line and " skipped" in line for line in summary[:2]), summary  # no CUDA: skipped
    assert summary[2].startswith("bench warm-up: exit 2 (") and "needs a CUDA GPU" in summary[2]
    grid = (out / "test_triton_grid.txt").read_text()
    assert grid.count("== test_triton_grid.") == 2 and grid.count(" skipped, ") == 2, grid
    assert "needs a CUDA GPU" in (out / "bench_gpu.txt").read_text()
    device = (out / "device.txt").read_text()
    assert "barrier_stress.py needs a CUDA GPU" in device
    assert "barrier stress exit 2, grid tests exit 0, tests exit 0, bench exit 2" in device
    assert proc.returncode != 0  # a check whose benchmark did not run fails


@pytest.mark.parametrize("var, value, why", [("TOTAL_TIMEOUT", "5m", "expected a whole number"),
                                             ("GRID_SHARDS", "x", "expected a whole number"),
                                             ("BENCH_TIMEOUT", "10", "must exceed BENCH_MARGIN=15")])
def test_gpu_check_refuses_a_malformed_limit_before_it_starts(tmp_path, var, value, why):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env[var] = value
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{var}={value}: {why}" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
