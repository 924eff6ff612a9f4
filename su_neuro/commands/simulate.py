"""``su-neuro simulate``: run a population over a long input and record what it did.

The population is a trained checkpoint's recurrent stack (``--checkpoint``) or a freshly
initialised layer of a given cell, gate, size and update rate. The input is a generated
Poisson spike stream of length ``--steps`` or a dataset split (``--task``). It runs chunk by
chunk with the state carried on (memory bounded by the chunk), shows progress and
throughput, and with ``--trace`` writes every step's gates / spikes to an HDF5 trace.
"""

from __future__ import annotations

import argparse

HELP = "run a population over a long input and record what it did"


def add_arguments(parser) -> None:
    src = parser.add_argument_group("population")
    src.add_argument("--checkpoint", default=None, help="a checkpoint written by su-neuro train")
    # defaults filled in by _check_arguments (None: not given, which --checkpoint needs)
    src.add_argument("--cell", default=None, help="rnn, gru or lif (default lif)")
    src.add_argument("--gate", default=None, help="rhythmic, event or dense (default rhythmic)")
    src.add_argument("--rate", type=float, default=None, help="rhythmic gate's update rate (default 0.1)")
    src.add_argument("--hidden", type=int, default=None, help="neurons (default 1024)")
    src.add_argument("--layers", type=int, default=None, help="stacked layers (default 1)")
    src.add_argument("--recurrent", action="store_true", default=None, help="LIF: recurrent weights on spikes")
    inp = parser.add_argument_group("input")
    inp.add_argument("--task", default=None, help="run over a dataset split instead of a Poisson stream")
    inp.add_argument("--split", default=None, choices=("train", "test"),
                     help="with --task: the split to run over (default test)")
    inp.add_argument("--samples", type=int, default=None, help="with --task: samples to run (default 16)")
    inp.add_argument("--steps", type=int, default=None, help="Poisson stream length T (default 10,000)")
    inp.add_argument("--input-size", type=int, default=None, help="Poisson stream inputs F (default 16)")
    inp.add_argument("--poisson-rate", type=float, default=None, help="per-step firing probability (default 0.05)")
    inp.add_argument("--batch", type=int, default=None,
                     help="independent Poisson streams run side by side (default 1)")
    run_ = parser.add_argument_group("run")
    run_.add_argument("--backend", default="auto", help="auto, torch, numba, triton or nn (default auto)")
    run_.add_argument("--chunk", type=int, default=None,
                      help="Poisson stream: steps per chunk (default 1000; a task's sample is one chunk)")
    run_.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
                      help="flush denormal floats to zero on the CPU (default on)")
    run_.add_argument("--seed", type=int, default=0, help="seed of the weights and the Poisson input (default 0)")
    run_.add_argument("--trace", default=None, metavar="FILE.h5",
                      help="write gates, spikes and input counts to this HDF5 file (refused if it exists)")
    run_.add_argument("--overwrite", action="store_true", help="with --trace: replace an existing file")
    run_.add_argument("--no-progress", action="store_true", help="no progress bar")


POPULATION_DEFAULTS = {"cell": "lif", "gate": "rhythmic", "rate": 0.1, "hidden": 1024, "layers": 1,
                       "recurrent": False, "input_size": 16}
"""The population flags and their defaults; a checkpoint's population is the trained one."""
STREAM_DEFAULTS = {"steps": 10_000, "poisson_rate": 0.05, "batch": 1, "chunk": 1000}
"""The Poisson stream's flags and their defaults (not for --task, whose samples are the input)."""
TASK_DEFAULTS = {"samples": 16, "split": "test"}
"""The flags of --task's input and their defaults."""


def _given(args, flags: dict) -> list[str]:
    """The flags of ``flags`` that the command line set."""
    return [f"--{key.replace('_', '-')}" for key in flags if getattr(args, key, None) is not None]


def _check_arguments(args) -> None:
    """Everything that can be checked before a population is built or a file written."""
    import math
    from pathlib import Path

    given = _given(args, POPULATION_DEFAULTS)
    if args.checkpoint and given:
        raise ValueError(f"--checkpoint runs the trained population, which {', '.join(given)} cannot change; leave "
                         f"{'it' if len(given) == 1 else 'them'} out")
    if getattr(args, "rate", None) is not None and getattr(args, "gate", None) not in (None, "rhythmic"):
        raise ValueError(f"--rate is the rhythmic gate's update rate; --gate {args.gate} has none")
    if getattr(args, "recurrent", None) and getattr(args, "cell", None) not in (None, "lif"):
        raise ValueError(f"--recurrent is a LIF option (recurrent weights on spikes); --cell {args.cell} is "
                         "recurrent always")
    given_input = _given(args, TASK_DEFAULTS if not args.task else STREAM_DEFAULTS)
    if given_input:
        raise ValueError(f"{', '.join(given_input)} {'apply' if len(given_input) > 1 else 'applies'} to "
                         + ("--task only; without it the input is a Poisson stream" if not args.task else
                            "the Poisson stream; with --task the input is the task's samples, each one chunk"))
    for key, default in (POPULATION_DEFAULTS | STREAM_DEFAULTS | TASK_DEFAULTS).items():
        if getattr(args, key, None) is None:
            setattr(args, key, default)
    for key in ("hidden", "layers", "steps", "input_size", "batch", "chunk"):
        value = getattr(args, key)
        if value < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
    for key, what in (("poisson_rate", "a per-step firing probability"), ("rate", "the rhythmic gate's update rate")):
        value = getattr(args, key)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"--{key.replace('_', '-')} must lie in [0, 1] ({what}), got {value}")
    if args.trace:
        path = Path(args.trace)
        if path.is_dir():
            raise ValueError(f"--trace {args.trace!r} is a folder; give a file name such as {args.trace}/sim.h5")
        if path.exists() and not args.overwrite:
            raise ValueError(f"--trace {args.trace!r} already exists; pass --overwrite to replace it "
                             "or choose another file name")


def _population(args):
    import torch

    from ..models import build_layer

    if args.checkpoint:
        from ..train import load_model

        model, cfg = load_model(args.checkpoint)
        layer = model.rnn
        layer.backend = args.backend
        if args.task == cfg.task:  # the checkpoint's own task: use its options (delay, sizes, ...)
            args.task_options = dict(cfg.task_options)
        return layer
    gate = {"kind": args.gate}
    if args.gate == "rhythmic":
        gate["init_rate"] = args.rate
    torch.manual_seed(args.seed)
    kwargs = {"num_layers": args.layers, "gate": gate, "backend": args.backend}
    if args.cell == "lif":
        kwargs["recurrent"] = args.recurrent
    return build_layer(args.cell, args.input_size, args.hidden, **kwargs)


def _source(args, layer):
    import torch

    from ..simulate import poisson_chunks, split_chunks

    if args.task:
        from ..datasets import get_task

        if args.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {args.samples}")
        task = get_task(args.task, **getattr(args, "task_options", {}))
        if task.tokens:
            # the items are token ids that a trained model embeds in front of its stack, and the
            # sequences differ in length; the stream runs the bare stack on equal-length features
            raise ValueError(
                f"task {args.task!r} is a token task (variable-length token ids that a model embeds before its "
                "recurrent stack); simulate streams equal-length feature inputs into the bare stack. Record a "
                f"trained model on it with `su-neuro train --task {args.task} --trace` instead"
            )
        data = task.train if args.split == "train" else task.test
        n = min(args.samples, len(data))
        if n < 1:
            raise ValueError(f"task {args.task!r} has no {args.split} samples to run; choose another --split")
        items = [data[i][0] for i in range(n)]
        lengths = sorted({x.shape[0] for x in items})
        if len(lengths) > 1:
            raise ValueError(
                f"the first {n} {args.split} samples of task {args.task!r} differ in length ({lengths[0]} to "
                f"{lengths[-1]} steps); simulate runs samples side by side as one stream of one length: use "
                "--samples 1, or `su-neuro train --trace`, which pads the samples and records their lengths"
            )
        xs = torch.stack(items).to(layer.weight_ih_l0.dtype)
        if xs.shape[-1] != layer.input_size:
            fix = ("the checkpoint's model was trained on another input size" if args.checkpoint
                   else f"build the population with --input-size {xs.shape[-1]}")
            raise ValueError(
                f"task {args.task!r} has {xs.shape[-1]} inputs per step but the population takes "
                f"{layer.input_size}; {fix}"
            )
        # a dataset sample is one chunk: the trace holds whole samples
        return split_chunks(xs, xs.shape[1]), xs.shape[0], xs.shape[1]
    if args.checkpoint is None and args.input_size != layer.input_size:
        raise ValueError("--input-size does not match the population")
    src = poisson_chunks(args.batch, args.steps, layer.input_size, args.poisson_rate, args.chunk, seed=args.seed)
    return src, args.batch, args.steps


class _FirstChunk:
    """A progress bar for :func:`su_neuro.simulate.simulate` whose first chunk runs inside a
    :class:`su_neuro.warmup.FirstStepNotice` (compilation announced, ETA restarted after it)."""

    def __init__(self, bar, notice) -> None:
        self.bar, self.notice = bar, notice
        notice.__enter__()

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.notice.__exit__(None, None, None)


def run(args) -> int:
    import torch

    from .._progress import progress_bar
    from ..backends import check_backend
    from ..simulate import simulate
    from ..warmup import FirstStepNotice, uses_numba

    check_backend(args.backend)
    _check_arguments(args)
    layer = _population(args).eval()
    source, batch, steps = _source(args, layer)
    recorder = None
    if args.trace:
        from ..traces import StreamTraceWriter

        metas = {f"layers.{k}": layer.layer_meta(k) for k in range(layer.num_layers)}
        recorder = StreamTraceWriter(
            args.trace,
            layers=metas,
            batch=batch,
            config={"cell": layer.cell, "hidden_size": layer.hidden_size, "num_layers": layer.num_layers},
            run_meta={"backend": args.backend, "seed": args.seed, "command": "simulate"},
        )
    bar = progress_bar(total=steps, unit="step", disable=args.no_progress, desc="simulate")
    numba = uses_numba(args.backend, torch.device("cpu"), layer.cell, layer.layer_meta(0)["gate"],
                       batch=batch, hidden=layer.hidden_size)
    progress = _FirstChunk(bar, FirstStepNotice(numba, bar=bar, write=bar.write))
    try:
        if recorder is not None:
            with recorder:
                result = simulate(layer, source, chunk=args.chunk, callback=recorder.append_chunk, progress=progress,
                                  flush_denormal=args.flush_denormal)
        else:
            result = simulate(layer, source, chunk=args.chunk, progress=progress, flush_denormal=args.flush_denormal)
    finally:
        progress.notice.__exit__(None, None, None)
        bar.close()
    print(f"steps            {result.steps:,} x batch {result.batch} x {result.neurons:,} neurons")
    print(f"time             {result.seconds:.2f} s")
    steady = result.steady_neuron_steps_per_second
    if steady == steady:  # not NaN: more than one chunk
        print(f"throughput       {steady:,.0f} neuron-steps/s after the first chunk "
              f"({result.neuron_steps_per_second:,.0f} with it: {result.first_seconds:.2f} s, the first call's costs)")
    else:
        print(f"throughput       {result.neuron_steps_per_second:,.0f} neuron-steps/s (one chunk: the first call's "
              "costs included)")
    print(f"update rate      {result.update_rate:.4f}")
    if args.trace:
        print(f"trace            {args.trace}")
    return 0
