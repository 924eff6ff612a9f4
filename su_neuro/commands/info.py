"""``su-neuro info``: versions and backends available on this machine."""

from __future__ import annotations

import importlib.metadata as md

HELP = "versions and the backends available here"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    import torch

    from .. import __version__
    from ..backends import BACKENDS, available

    print(f"su-neuro  {__version__}")
    for pkg in ("torch", "numba", "triton", "snntorch", "tonic", "h5py", "matplotlib"):
        try:
            print(f"{pkg:<9} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"{pkg:<9} not installed")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        names = [b for b in BACKENDS[1:] if available(b, dev)]
        print(f"backends on {dev.type}: {', '.join(names)}")
    return 0
