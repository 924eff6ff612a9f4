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
