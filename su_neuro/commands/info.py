"""``su-neuro info``: versions and backends available on this machine."""

from __future__ import annotations

import importlib.metadata as md

HELP = "versions and the backends available here"


def add_arguments(parser) -> None:
    parser.add_argument("--compile", nargs="?", const="all", default=None, metavar="CELL/GATE,...",
                        help="compile the Numba CPU kernels now (cached on disk), so that the first "
                             "training or simulation run does not wait for them: all cells and gates "
                             "(several minutes on 2 cores), or only those named, e.g. gru/rhythmic,lif")


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
    if getattr(args, "compile", None) is not None:
        from ..warmup import compile_numba, parse_selection

        cells, gates = parse_selection(args.compile)
        print(f"compiling the Numba kernels of cells {', '.join(cells)} x gates {', '.join(gates)} "
              "(cached variants load in seconds):", flush=True)
        count, seconds = compile_numba(progress=lambda line: print(line, flush=True), cells=cells, gates=gates)
        print(f"done: {count} kernel variant(s) compiled in {seconds:.0f} s; later runs load them from the cache")
    return 0
