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
