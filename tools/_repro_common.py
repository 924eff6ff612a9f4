"""Pieces shared by the paper-reproduction scripts (tools/repro_*.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def apply_mode(args: argparse.Namespace, quick: dict, full: dict) -> argparse.Namespace:
    """Fill every option left unset (None) from the --quick or the full settings."""
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as a PNG and release it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
