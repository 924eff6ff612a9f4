"""``su-neuro bench``: time the available backends side by side on this machine.

One layer, one set of sizes, every backend that can run here; forward and (optionally)
forward + backward, median of repeats, and the ratio to the torch reference. The full
benchmark suites with the issue targets are the scripts under tools/ (their tables are
in docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import time

HELP = "time the backends against each other"


def add_arguments(parser) -> None:
    parser.add_argument("--cell", default="gru", help="rnn, gru or lif (default gru)")
    parser.add_argument("--gate", default="rhythmic", help="rhythmic, event or dense (default rhythmic)")
    parser.add_argument("--rate", type=float, default=None, help="rhythmic gate's update rate (default 0.1)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per call (default 1)")
    parser.add_argument("--hidden", type=int, default=256, help="neurons (default 256)")
    parser.add_argument("--input-size", type=int, default=16, help="inputs per step (default 16)")
    parser.add_argument("--steps", type=int, default=1000, help="time steps per call (default 1000)")
    parser.add_argument("--backends", default=None, help="comma-separated (default: all available here)")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed calls per backend after one warm-up call; the median is shown (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and of the Numba kernels (default: leave as they are)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def _numba_threads(n: int | None = None) -> str:
    """Set the Numba kernels' threads to ``n`` (at most the NUMBA_NUM_THREADS it started with);
    without ``n``: ``", numba threads N"`` where Numba is installed, for the table's header."""
    try:
        import numba

        from ..kernels.numba._common import start_threads
    except ImportError:
        return ""
    start_threads()  # before Numba's own calls: its pool, when it starts, sets the count torch shares
    if n is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return f", numba threads {numba.get_num_threads()}"


def _time(fn, repeat: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(args) -> int:
    import torch

    from ..backends import BACKENDS, available, check_backend
    from ..models import build_layer

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        _numba_threads(args.threads)  # first: starting Numba's pool sets the count torch shares
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"unknown --device {args.device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch build sees no CUDA device; use --device cpu "
                         "or install a CUDA build of torch on a machine with a GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device!r}: bench runs on cpu or cuda")
    for key in ("batch", "hidden", "input_size", "steps"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(args, key)}")
    explicit = args.backends.split(",") if args.backends else None
    names = explicit or [b for b in BACKENDS[1:] if available(b, device)]
    for name in names:
        check_backend(name)
    if args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    gate = {"kind": args.gate}
    if args.rate is not None and args.gate != "rhythmic":
        raise ValueError(f"--rate is the rhythmic gate's update rate; --gate {args.gate} has none")
    if args.gate == "rhythmic":
        args.rate = 0.1 if args.rate is None else args.rate
        if not 0.0 <= args.rate <= 1.0:  # NaN fails too
            raise ValueError(f"--rate must lie in [0, 1] (the rhythmic gate's update rate), got {args.rate}")
        gate["init_rate"] = args.rate
    torch.manual_seed(0)
    layer = build_layer(args.cell, args.input_size, args.hidden, gate=gate, backend="torch").to(device)
    names, left_out = _runnable(names, explicit is not None, device, args, next(layer.parameters()).dtype)
    x = torch.randn(args.batch, args.steps, args.input_size, device=device)
    if args.cell == "lif":
        x = (x > 1.0).float()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for name in names:
        layer.backend = name

        def fwd():
            with torch.no_grad():
                layer(x)
            sync()

        def fwd_bwd():
            out, _ = layer(x)
            out.float().square().mean().backward()
            sync()

        f = _time(fwd, args.repeat)
        fb = _time(fwd_bwd, args.repeat) if args.backward else float("nan")
        rows.append((name, f, fb))

    ref = {r[0]: r for r in rows}.get("torch")
    print(
        f"{args.cell} / {args.gate} gate, B={args.batch} H={args.hidden} T={args.steps} F={args.input_size}, "
        f"device {device}, torch threads {torch.get_num_threads()}{_numba_threads()}"
    )
    if args.backward:
        print(f"{'backend':<8} {'fwd ms':>10} {'x torch':>8} {'fwd+bwd ms':>11} {'x torch':>8}")
    else:
        print(f"{'backend':<8} {'fwd ms':>10} {'x torch':>8}   (forward only; --backward adds fwd+bwd)")
    for name, f, fb in rows:
        rf = f"{ref[1] / f:8.1f}" if ref else f"{'-':>8}"
        line = f"{name:<8} {f * 1e3:10.2f} {rf}"
        if args.backward:
            rb = f"{ref[2] / fb:8.1f}" if ref else f"{'-':>8}"
            line += f" {fb * 1e3:11.2f} {rb}"
        print(line)
    for name, why in left_out:
        print(f"note: left out backend {name!r}: {why}")
    return 0


def _runnable(names: list[str], explicit: bool, device, args, dtype) -> tuple[list[str], list[tuple[str, str]]]:
    """The backends of ``names`` that can run this cell and gate, and (name, reason) for
    the others.

    Checked before anything is timed, so that a backend that cannot run the chosen cell or
    gate (``nn`` runs dense RNN / GRU stacks only) does not end the run halfway. The
    default list ("all available here") leaves such backends out and says so; a backend
    the user named explicitly raises its own clear error instead.
    """
    from ..backends import BackendUnavailableError, resolve

    keep, left_out = [], []
    for name in names:
        try:
            resolve(name, device, args.cell, args.gate, dtype, batch=args.batch, hidden=args.hidden)
        except BackendUnavailableError as err:
            if explicit:
                raise BackendUnavailableError(f"--backends {name}: {err}") from None
            left_out.append((name, str(err)))
            continue
        keep.append(name)
    return keep, left_out
